// iFID, interpolated FID (Xu et al., "Making Reconstruction FID Predictive of Diffusion Generation
// FID", arXiv 2603.05630): a VAE is scored by how its decoder renders the space between data
// latents, which ranks VAEs by the generation FID of a diffusion model trained on them (Pearson
// and Spearman ~0.85) where reconstruction FID does not. What is computed here, exactly:
//   1. N images drawn from the data (a seeded random subset), z_i = the posterior mean of each;
//   2. j(i) = argmin over j != i of |z_i - z_j|² (flattened latents, float64);
//   3. x̃_i = decode((1 - t) z_i + t z_j(i)), t = 0.5;
//      (or, with interpolation 'slerp', the authors' default: j(i) by the largest cosine
//      similarity, and the spherical interpolation of z_i and z_j(i));
//   4. iFID = the Fréchet distance between the feature statistics of {x̃_i} and of the N data
//      images, with rFID (decode(z_i) against the same images) beside it.
// Images become pixels as SiT's sample_ddp.py writes samples (clamp(127.5 x + 128, 0, 255) to
// uint8), which gives a data image back its own bytes. The authors' evaluation script differs in
// two ways, named in docs/alignment.md: query images from a validation set with neighbours from a
// training set, and one of the 10 nearest neighbours drawn with weights softmax(-mean squared
// distance).
import * as torch from '../torch/index.js';
import type { Device, Tensor } from '../torch/index.js';
import type { AutoencoderKL } from '../models/autoencoder-kl.js';
import { DataLoader, type Dataset } from '../data/index.js';
import { latentSize, loadImageDataset, loadVaeFolder, resolveVaePath, type HubRunOptions } from '../data/inputs.js';
import { withDefaults } from '../runlog/process.js';
import type { FeatureExtractor } from './activations.js';
import { featureNetworkReport, type FeatureNetworkReport } from './evaluate.js';
import { featureExtractor, type FeatureNetworkOptions } from './features.js';
import { computeStatistics, frechetDistance } from './fid.js';

/** The paper's midpoint. */
export const IFID_T = 0.5;

/** Rows of the distance matrix computed at once by nearestNeighbours. */
const NEIGHBOUR_CHUNK = 1024;

/** How a latent is moved towards its neighbour, and so which neighbour is nearest: Euclidean for 'linear', by angle for 'slerp' (as the authors' script pairs them). */
export type IfidInterpolation = 'linear' | 'slerp';

/**
 * The nearest other row of each row of `latents` [N, ...] (flattened), by squared Euclidean
 * distance ('l2') or by the largest cosine similarity ('cosine': the Euclidean distance of the rows
 * scaled to unit length), in float64 so that |a|² + |b|² - 2 a·b keeps the order of close
 * neighbours: `index` int64 [N] and the Euclidean `distance` float64 [N] between the latents
 * themselves, on the CPU.
 */
export function nearestNeighbours(latents: Tensor, options: { chunkSize?: number; metric?: 'l2' | 'cosine' } = {}): { index: Tensor; distance: Tensor } {
  const n = latents.size(0);
  if (latents.ndim < 2 || n < 2) throw new Error(`nearestNeighbours: expected at least 2 latents [N >= 2, ...], got [${latents.shape}]`);
  const chunkSize = options.chunkSize ?? NEIGHBOUR_CHUNK;
  return torch.noGrad(() => torch.scope(() => {
    const flat = latents.flatten(1).to('float64');
    const x = options.metric === 'cosine' ? torch.nnFunctional.normalize(flat, { dim: 1 }) : flat;
    const squaredNorms = x.mul(x).sum(1);
    const columns = torch.arange(n, undefined, 1, { device: x.device });
    const parts: Tensor[] = [];
    for (let start = 0; start < n; start += chunkSize) {
      parts.push(torch.scope(() => {
        const rows = x.narrow(0, start, Math.min(chunkSize, n - start));
        const squared = squaredNorms.narrow(0, start, rows.size(0)).unsqueeze(1).add(squaredNorms.unsqueeze(0)).sub(rows.matmul(x.t()).mul(2));
        const self = columns.narrow(0, start, rows.size(0)).unsqueeze(1).eq(columns.unsqueeze(0));
        return squared.maskedFill(self, Infinity).argmin(1);
      }));
    }
    const index = torch.cat(parts);
    const difference = flat.sub(flat.indexSelect(0, index));
    return { index: index.cpu(), distance: difference.mul(difference).sum(1).sqrt().cpu() };
  }));
}

/** (1 - t) a + t b: the point a fraction t of the way from latent a to latent b. */
export function interpolateLatents(a: Tensor, b: Tensor, t: number): Tensor {
  return a.mul(1 - t).add(b.mul(t));
}

/**
 * Spherical interpolation of latents a and b [B, ...] (each flattened), as the authors' script:
 * with θ the angle between a and b, (sin((1 - t) θ) a + sin(t θ) b) / sin θ; nearly parallel pairs
 * (sin θ < 1e-6) are interpolated linearly. The angles are computed in float64.
 */
export function slerpLatents(a: Tensor, b: Tensor, t: number): Tensor {
  return torch.noGrad(() => torch.scope(() => {
    const [x, y] = [a.flatten(1).to('float64'), b.flatten(1).to('float64')];
    const cosines = Array.from(x.mul(y).sum(1).div(x.norm(2, 1).mul(y.norm(2, 1))).cpu().toArray() as Float64Array);
    const weights = cosines.map((cosine) => {
      const angle = Math.acos(Math.min(1, Math.max(-1, cosine)));
      const sine = Math.sin(angle);
      return sine < 1e-6 ? [1 - t, t] : [Math.sin((1 - t) * angle) / sine, Math.sin(t * angle) / sine];
    });
    const column = (k: number): Tensor => torch.tensor(weights.map((w) => w[k]!), { dtype: 'float64', device: a.device }).view(-1, ...a.shape.slice(1).map(() => 1));
    return a.to('float64').mul(column(0)).add(b.to('float64').mul(column(1))).to(a.dtype);
  }));
}

/** uint8 RGB pixels [B, 3, H, W] of images in [-1, 1] (1 channel repeated), as sample_ddp.py's clamp(127.5 x + 128, 0, 255). */
function pixels(images: Tensor, what: string): Tensor {
  if (!images.isfinite().all().item()) throw new Error(`iFID: ${what} holds NaN or infinite values (a diverged VAE?)`);
  const bytes = images.float().mul(127.5).add(128).clamp(0, 255).to('uint8');
  return bytes.size(1) === 1 ? bytes.repeat(1, 3, 1, 1) : bytes;
}

export type IfidStage = 'encode' | 'interpolate';

export interface IfidOptions {
  /** Run as it is (float32, without gradients); eval mode for the call. */
  vae: AutoencoderKL;
  /** Images in [-1, 1] with the VAE's input channels. */
  dataset: Dataset;
  /** N: images drawn (a seeded random subset; all when larger than the dataset). */
  count: number;
  /** The FID network; its pool_3 features are compared (`reals evaluate`'s FID). */
  extractor: FeatureExtractor;
  /** Where on the segment (or arc) to the neighbour (default 0.5). */
  t?: number;
  /** 'linear' (default) or 'slerp'. */
  interpolation?: IfidInterpolation;
  /** Images per VAE call (default 32). */
  batchSize?: number;
  /** Seeds the subset (default 0). */
  seed?: number;
  /** The VAE's device (default cpu); the extractor keeps its own. */
  device?: Device;
  /** Image decoding threads for image files (default: the DataLoader's). */
  numWorkers?: number;
  /** After each batch: images done so far of the total, per stage (encode: data and reconstructions; interpolate: decoded midpoints). */
  onProgress?: (stage: IfidStage, done: number, total: number) => void;
}

export interface IfidResult {
  /** Fréchet distance of the decoded interpolations to the data images. */
  ifid: number;
  /** Fréchet distance of the reconstructions decode(z_i) to the data images. */
  rfid: number;
  /** N, images read. */
  images: number;
  t: number;
  interpolation: IfidInterpolation;
  /** Mean Euclidean distance from a latent to its nearest neighbour, and the latent shape [C, h, w]. */
  meanNeighbourDistance: number;
  latentShape: number[];
  /** The feature network's id (FeatureExtractor.id), as featureNetwork.id. */
  extractor: string;
  /** The network the distances are measured in, as `reals evaluate` reports it. */
  featureNetwork: FeatureNetworkReport;
}

/**
 * iFID and rFID of a VAE on `count` images of `dataset`.
 *
 * ```ts
 * const vae = AutoencoderKL.fromPretrained('reals-vae');
 * const extractor = await fidInceptionExtractor();
 * const { ifid, rfid } = await interpolatedFid({ vae, dataset: new ImageFolder('imagenet/train', { resolution: 256 }), count: 10000, extractor });
 * ```
 */
export async function interpolatedFid(options: IfidOptions): Promise<IfidResult> {
  const { vae, extractor, t = IFID_T, interpolation = 'linear', batchSize = 32, seed = 0, device = 'cpu', onProgress } = options;
  const count = Math.min(options.count, options.dataset.length);
  if (!Number.isInteger(count) || count < 2) throw new Error(`iFID: needs at least 2 images (a neighbour and a covariance), got ${count} (count ${options.count}, dataset ${options.dataset.length})`);
  if (!(t >= 0 && t <= 1)) throw new Error(`iFID: t must be in [0, 1], got ${t}`);
  if (interpolation !== 'linear' && interpolation !== 'slerp') throw new Error(`iFID: interpolation must be linear or slerp, got ${String(interpolation)}`);
  const interpolate = interpolation === 'slerp' ? slerpLatents : interpolateLatents;
  // The features are float32 (comparable scores), with float32's threads.
  torch.usePrecision('fp32', extractor.device);
  const featuresOf = (images: Tensor, what: string): Tensor => extractor.features(pixels(images, what).to(extractor.device)).pool3.flatten(1).float().cpu();
  const wasTraining = vae.training;
  vae.eval();
  const latents: Tensor[] = [];
  const dataFeatures: Tensor[] = [];
  const reconstructionFeatures: Tensor[] = [];
  const interpolationFeatures: Tensor[] = [];
  try {
    const loader = new DataLoader(options.dataset, { batchSize, seed, shuffle: true, randomFlip: false, numWorkers: options.numWorkers });
    let encoded = 0;
    const n = await loader.visitFirst(count, (images) => {
      torch.noGrad(() => torch.scope(() => {
        const x = images.to(device);
        const z = vae.encode(x).mode();
        latents.push(torch.keep(z.cpu()));
        dataFeatures.push(torch.keep(featuresOf(x, 'a data image')));
        reconstructionFeatures.push(torch.keep(featuresOf(vae.decode(z), 'a reconstruction')));
      }));
      encoded += images.size(0);
      onProgress?.('encode', encoded, count);
    });
    if (n < 2) throw new Error(`iFID: read ${n} images (${loader.skipped} unreadable); needs at least 2`);
    const z = torch.keep(torch.cat(latents));
    latents.push(z);
    const neighbours = nearestNeighbours(z, { metric: interpolation === 'slerp' ? 'cosine' : 'l2' });
    latents.push(neighbours.index, neighbours.distance);
    for (let start = 0; start < n; start += batchSize) {
      const size = Math.min(batchSize, n - start);
      interpolationFeatures.push(torch.noGrad(() => torch.scope(() => {
        const from = z.narrow(0, start, size).to(device);
        const to = z.indexSelect(0, neighbours.index.narrow(0, start, size)).to(device);
        return torch.keep(featuresOf(vae.decode(interpolate(from, to, t)), 'an interpolation'));
      })));
      onProgress?.('interpolate', start + size, n);
    }
    return torch.scope(() => {
      const data = computeStatistics(torch.cat(dataFeatures));
      return {
        ifid: frechetDistance(computeStatistics(torch.cat(interpolationFeatures)), data),
        rfid: frechetDistance(computeStatistics(torch.cat(reconstructionFeatures)), data),
        images: n,
        t,
        interpolation,
        meanNeighbourDistance: neighbours.distance.mean().item(),
        latentShape: z.shape.slice(1),
        extractor: extractor.id,
        featureNetwork: featureNetworkReport(extractor),
      };
    });
  } finally {
    vae.train(wasTraining);
    for (const tensor of [...latents, ...dataFeatures, ...reconstructionFeatures, ...interpolationFeatures]) tensor.dispose();
  }
}

/** The settings of `reals ifid` that have defaults. */
export interface IfidSettings {
  /** Side of the ADM center crop of folder images. */
  imageSize: number;
  /** N. */
  numImages: number;
  t: number;
  interpolation: IfidInterpolation;
  batchSize: number;
  seed: number;
}

export const IFID_RUN_DEFAULTS: IfidSettings = { imageSize: 256, numImages: 10000, t: IFID_T, interpolation: 'linear', batchSize: 32, seed: 0 };

/** `reals ifid`'s flags, camelCased. */
export interface IfidRunOptions extends Partial<IfidSettings>, HubRunOptions {
  /** A diffusers AutoencoderKL folder or a Hugging Face repo id. */
  vaePath: string;
  /** An ImageNet-layout folder (its train/ under an ImageNet root), or `fashion-mnist`. */
  dataPath: string;
  /** The feature network and its weights, as `reals evaluate --features` (default: the FID Inception). */
  features?: FeatureNetworkOptions['features'];
  inceptionWeights?: string;
  dinoModel?: string;
  dinoCkpt?: string;
  device?: string;
  numWorkers?: number;
  onProgress?: IfidOptions['onProgress'];
}

/** `reals ifid`: the VAE and the images from their paths, the feature network as `reals evaluate --features` loads it, then interpolatedFid. */
export async function runIfid(options: IfidRunOptions): Promise<IfidResult & { vaePath: string; dataPath: string }> {
  const o = { ...options, ...withDefaults(IFID_RUN_DEFAULTS, options) };
  torch.checkDevice(o.device);
  const vae = loadVaeFolder(await resolveVaePath(o.vaePath, o));
  const dataset = loadImageDataset(o.dataPath, o.imageSize, vae.config.inChannels);
  latentSize(vae, 'resolution' in dataset ? dataset.resolution : dataset.itemShape[1]);
  const device = o.device ?? (torch.cuda.isAvailable() ? 'cuda' : 'cpu');
  const extractor = await featureExtractor({
    features: o.features, inceptionWeights: o.inceptionWeights, dinoModel: o.dinoModel, dinoCkpt: o.dinoCkpt, device, offline: o.offline,
  });
  const result = await interpolatedFid({
    vae: vae.to(device), dataset, count: o.numImages, extractor, t: o.t, interpolation: o.interpolation, batchSize: o.batchSize, seed: o.seed, device, numWorkers: o.numWorkers, onProgress: o.onProgress,
  });
  return { ...result, vaePath: o.vaePath, dataPath: o.dataPath };
}
