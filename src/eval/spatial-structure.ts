// The spatial structure of a backbone's patch tokens, as iREPA (arXiv 2512.10794) measures a
// teacher: LDS, local-vs-distant similarity, the metric whose correlation with generation FID
// (|r| > 0.85 over 27 encoders) beat linear-probe accuracy's (|r| = 0.26). Defined as the LDS of
// the spatial-metrics code released with iREPA: per image, the mean cosine similarity of
// 4-neighbour token pairs minus the mean cosine similarity of the pairs at Manhattan distance
// >= farDistance (6) on the token grid; the mean over images. docs/alignment.md (## Diagnostics)
// says how to read it.
import * as torch from '../torch/index.js';
import type { Tensor } from '../torch/index.js';
import { DataLoader, type Dataset } from '../data/index.js';
import { inEvalMode, teacherInputSize, teacherPatchSize, teacherTokens, type ProbedTeacher } from './linear-probe.js';

/** iREPA's far threshold: pairs at Manhattan distance >= 6 tokens are "distant". */
export const LDS_FAR_DISTANCE = 6;

/** [T, T] Manhattan distances between the positions of a row-major [height, width] token grid. */
function gridDistances(height: number, width: number): Tensor {
  const rows = torch.arange(height * width).div(width, 'floor');
  const columns = torch.arange(height * width).remainder(width);
  const apart = (c: Tensor): Tensor => c.unsqueeze(1).sub(c.unsqueeze(0)).abs();
  return apart(rows).add(apart(columns));
}

/**
 * Per-image LDS [B] (float32) of patch tokens [B, height * width, D] laid out row-major on the
 * grid: mean cosine similarity over the pairs at Manhattan distance 1 minus the mean over the
 * pairs at distance >= farDistance. Tokens that are a smooth function of position score near
 * their local similarity; tokens unrelated to position score about 0.
 */
export function localDistantSimilarity(tokens: Tensor, grid: readonly [number, number], farDistance = LDS_FAR_DISTANCE): Tensor {
  const [height, width] = grid;
  if (tokens.ndim !== 3 || tokens.size(1) !== height * width) {
    throw new Error(`localDistantSimilarity: expected tokens [B, ${height}x${width} = ${height * width}, D], got [${tokens.shape}]`);
  }
  if (!Number.isInteger(farDistance) || farDistance < 2 || farDistance > height + width - 2) {
    throw new Error(`localDistantSimilarity: farDistance ${farDistance} must be an integer in [2, ${height + width - 2}] (the ${height}x${width} grid's largest distance)`);
  }
  return torch.noGrad(() => torch.scope(() => {
    const unit = torch.nnFunctional.normalize(tokens.float(), { dim: -1 });
    const cosine = unit.matmul(unit.transpose(1, 2));
    const distance = gridDistances(height, width).to(cosine.device);
    // Every pair appears twice in the symmetric matrix, so the means over ordered pairs are the means over pairs.
    const meanOver = (mask: Tensor): Tensor => cosine.mul(mask).sum([1, 2]).div(mask.sum().item());
    return meanOver(distance.eq(1).float()).sub(meanOver(distance.ge(farDistance).float()));
  }));
}

export interface SpatialStructureOptions {
  /** Frozen; run in eval mode without gradients. */
  backbone: ProbedTeacher;
  /** Images in [-1, 1] (labels are not read). */
  images: Dataset;
  /** Images drawn (a seeded random subset; all when larger than the dataset). */
  count: number;
  /** The side images are resized to for the backbone, as preprocessImages (default the backbone's imgSize). */
  inputSize?: number;
  farDistance?: number;
  /** Seeds the subset (default 0). */
  seed?: number;
  device?: torch.Device;
}

export interface SpatialStructure {
  /** Mean over the images of their LDS. */
  lds: number;
  /** Standard deviation over the images of their LDS (lds's standard error is ldsStd / sqrt(images)). */
  ldsStd: number;
  /** Each image's LDS, in the order read (the same images in the same order for the same seed and count, whatever the backbone: for paired differences). */
  perImage: number[];
  images: number;
  /** The token grid [height, width] the distances are counted on. */
  grid: [number, number];
  farDistance: number;
}

/** LDS of the backbone's final-norm patch tokens (what the alignment heads are trained towards) over `count` images. */
export async function spatialStructure(options: SpatialStructureOptions): Promise<SpatialStructure> {
  const { backbone, seed = 0, farDistance = LDS_FAR_DISTANCE, device = 'cpu' } = options;
  const inputSize = teacherInputSize(backbone, options.inputSize, 'spatialStructure');
  const count = Math.min(options.count, options.images.length);
  if (!Number.isInteger(count) || count < 1) throw new Error(`spatialStructure: count must be a positive integer, got ${options.count}`);
  const side = inputSize / teacherPatchSize(backbone);
  const grid: [number, number] = [side, side];
  const loader = new DataLoader(options.images, { batchSize: 64, seed, shuffle: true, randomFlip: false });
  const values: number[] = [];
  const n = await inEvalMode(backbone, () => loader.visitFirst(count, (images) => {
    values.push(...torch.noGrad(() => torch.scope(() => {
      const { patch } = teacherTokens(backbone, images.to(device), inputSize);
      return Array.from(localDistantSimilarity(patch, grid, farDistance).toArray() as Float32Array);
    })));
  }));
  const { mean, std } = meanAndStd(values);
  return { lds: mean, ldsStd: std, perImage: values, images: n, grid, farDistance };
}

/** Mean and population standard deviation of `values` (two passes, in float64). */
export function meanAndStd(values: readonly number[]): { mean: number; std: number } {
  const mean = values.reduce((a, b) => a + b, 0) / values.length;
  return { mean, std: Math.sqrt(values.reduce((a, b) => a + (b - mean) ** 2, 0) / values.length) };
}
