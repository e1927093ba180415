// HOG, the training-free spatial teacher of `reals align train --dino-model hog`: histograms of
// oriented gradients (Dalal and Triggs 2005) on the cells of the latent grid, one descriptor per
// latent position, computed from the images with libtorch ops and no weights. iREPA (arXiv
// 2512.10794) found that a teacher helps generation through the spatial structure of its patch
// tokens, not its semantics, and that classical descriptors such as HOG help too; this is the
// teacher for domains and machines with no DINOv2 (`reals teacher train` is the learned one).
//
// The histograms are scikit-image's (`skimage.feature.hog`, feature/_hog.py and _hoghistogram.pyx),
// checked against it in test/models/hog.test.ts:
// - centred differences [-1, 0, 1] along rows and columns, zero on the border rows/columns;
// - in colour images, per pixel the channel with the largest gradient magnitude (the first on ties);
// - unsigned orientations over [0, 180) degrees in `orientations` equal bins; each pixel's
//   magnitude votes into its one bin (no interpolation between bins or cells);
// - a cell's histogram is the vote sum over its pixels divided by their count;
// - L2 normalisation h / sqrt(|h|^2 + 1e-10) (block_norm 'L2' on blocks of 1x1 cell).
// The teacher's token concatenates, per position, the normalised histogram of each level of
// `scales` (1: the position's own cell; 2: the 2x2-cell block holding it, shared by its 4 positions)
// and L2-normalises the concatenation. DINOv2's trainer also wants a CLS token; HOG has none, so its
// stand-in is the mean token over positions, L2-normalised: a global orientation histogram.
import * as torch from '../torch/index.js';
import type { Tensor } from '../torch/index.js';
import * as nn from '../nn/index.js';

const F = nn.F;

/** The `--dino-model` name that selects the HOG teacher. */
export const HOG_TEACHER_NAME = 'hog';

export interface HogConfig {
  /** Unsigned orientation bins over 0-180 degrees (default 9, Dalal and Triggs'). */
  orientations: number;
  /** Cell sides of the levels, in latent positions, concatenated in this order (default [1, 2]). */
  scales: number[];
}

/** Levels [1, 2]: of [1], [1, 2] and [1, 2, 4], the tokens with the most spatial structure (docs/alignment.md). */
export const HOG_DEFAULTS: HogConfig = { orientations: 9, scales: [1, 2] };

/** skimage's `eps` in block_norm 'L2'. */
const L2_EPS = 1e-5;

/**
 * skimage's orientation_histogram before block normalisation: images [B, C, H, W] (any range, any
 * float dtype) -> [B, orientations, floor(H / cellH), floor(W / cellW)]; pixels past the last
 * whole cell are left out, as skimage leaves them out.
 */
export function orientationHistograms(images: Tensor, cellSize: [number, number], orientations: number): Tensor {
  if (images.ndim !== 4) throw new Error(`orientationHistograms: expected images [B, C, H, W], got [${images.shape}]`);
  const [height, width] = [images.size(2), images.size(3)];
  let gRow = F.pad(images.slice(2, 2).sub(images.slice(2, 0, height - 2)), [0, 0, 1, 1]);
  let gCol = F.pad(images.slice(3, 2).sub(images.slice(3, 0, width - 2)), [1, 1, 0, 0]);
  if (images.size(1) > 1) {
    const strongest = hypot(gRow, gCol).argmax(1, true);
    gRow = gRow.gather(1, strongest);
    gCol = gCol.gather(1, strongest);
  }
  // skimage's atan2(g_row, g_col) mod 180 degrees, as the angle of the gradient turned into the
  // upper half plane: exact at 0, where a mod of a rounded pi could land on either end.
  const turn = gRow.lt(0).logicalOr(gRow.eq(0).logicalAnd(gCol.lt(0)));
  const angle = torch.callOp('aten::atan2', gRow.where(turn.logicalNot(), gRow.neg()), gCol.where(turn.logicalNot(), gCol.neg())) as Tensor;
  const bin = angle.mul(orientations / Math.PI).floor().clamp(null, orientations - 1);
  const bins = torch.arange(orientations, undefined, 1, { dtype: images.dtype, device: images.device }).view(1, orientations, 1, 1);
  const votes = bin.eq(bins).to(images.dtype).mul(hypot(gRow, gCol));
  return F.avgPool2d(votes, cellSize);
}

/**
 * skimage.feature.hog(image, orientations, pixels_per_cell, cells_per_block=(1, 1), block_norm='L2',
 * feature_vector=False) for a batch, as [B, orientations, cell rows, cell columns].
 */
export function hogCells(images: Tensor, cellSize: [number, number], orientations: number): Tensor {
  return normalizeCells(orientationHistograms(images, cellSize, orientations));
}

function normalizeCells(histograms: Tensor): Tensor {
  return histograms.div(histograms.square().sum(1, true).add(L2_EPS ** 2).sqrt());
}

function hypot(a: Tensor, b: Tensor): Tensor {
  return torch.callOp('aten::hypot', a, b) as Tensor;
}

/**
 * The HOG teacher: images in, DINOv2-like patch tokens (one per cell of the latent grid) and a CLS
 * stand-in out, in float32 whatever the images' dtype. No weights, nothing to train or load.
 *
 * ```ts
 * const teacher = new HogTeacher();                       // 9 orientations, scales [1, 2]: 18-wide tokens
 * const { patch, cls } = teacher.forward(images, [32, 32]); // 256 px images: 8 px cells
 * // patch [B, 1024, 18], cls [B, 18], each token of unit norm (or zero where the image is flat)
 * ```
 */
export class HogTeacher {
  readonly config: HogConfig;

  constructor(config: Partial<HogConfig> = {}) {
    const c = { ...HOG_DEFAULTS, ...config };
    if (!Number.isInteger(c.orientations) || c.orientations < 1) throw new RangeError(`HogTeacher: orientations must be a positive integer, got ${c.orientations}`);
    if (c.scales.length === 0 || !c.scales.every((k) => Number.isInteger(k) && k >= 1)) {
      throw new RangeError(`HogTeacher: scales must be positive integers, got [${c.scales}]`);
    }
    this.config = c;
  }

  /** The tokens' width, the alignment heads' featureDim: orientations per level. */
  get embedDim(): number { return this.config.orientations * this.config.scales.length; }

  /**
   * Images [B, C, H, W] and the latent grid [rows, cols], which must divide H and W into cells ->
   * patch tokens [B, rows * cols, embedDim] (row-major, as DINOv2's) and the CLS stand-in [B, embedDim].
   * A level k > 1 pools k x k cells; where k does not divide the grid, the last blocks hold fewer.
   */
  forward(images: Tensor, grid: [number, number]): { patch: Tensor; cls: Tensor } {
    if (images.ndim !== 4) throw new Error(`HogTeacher: expected images [B, C, H, W], got [${images.shape}]`);
    const [rows, cols] = grid;
    const [height, width] = [images.size(2), images.size(3)];
    if (!(rows >= 1 && cols >= 1 && height % rows === 0 && width % cols === 0)) {
      throw new Error(`HogTeacher: the latent grid ${rows}x${cols} does not divide the ${height}x${width} images into whole cells`);
    }
    const cells = orientationHistograms(images.float(), [height / rows, width / cols], this.config.orientations);
    const levels = this.config.scales.map((k) => {
      if (k === 1) return normalizeCells(cells);
      // The block histogram is the mean of its cells' (equal-sized cells), i.e. the histogram of
      // the k x k-cell region; ceil mode keeps the partial blocks at the grid's end.
      const blocks = normalizeCells(F.avgPool2d(cells, k, { ceilMode: true }));
      return blocks.repeatInterleave(k, 2).repeatInterleave(k, 3).slice(2, 0, rows).slice(3, 0, cols);
    });
    const patch = F.normalize(torch.cat(levels, 1).flatten(2).transpose(1, 2), { dim: 2 }).contiguous();
    return { patch, cls: F.normalize(patch.mean(1), { dim: 1 }) };
  }
}
