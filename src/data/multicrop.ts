// The inputs of DINOv2's self-distillation, made on batched tensors: multi-crop augmentation
// (dinov2/data/augmentations.py, DataAugmentationDINO) and iBOT's block masks
// (dinov2/data/masking.py, MaskingGenerator, drawn per batch as dinov2/data/collate.py does).
//
// Every random draw comes from torch's CPU generator, so a run is reproducible from its seed and a
// checkpoint's generator state resumes it exactly. Differences from upstream, on purpose:
// - all crops of a batch come from one affine grid and one grid_sample (bilinear, as
//   torchvision's RandomResizedCrop but bilinear instead of bicubic); a crop whose drawn width or
//   height exceeds the image is clamped to it instead of redrawn (torchvision tries 10 times, then
//   falls back to a center crop);
// - colour jitter is brightness 0.4, contrast 0.4 and saturation 0.2 in this fixed order with
//   probability 0.8 (torchvision's ColorJitter also jitters hue by 0.1, in a random order), then
//   random grayscale 0.2 and, on the second global crop, solarization 0.2 as upstream; Gaussian
//   blur is left out: at 16-32 px a blur of sigma 0.1-2 removes most of the image;
// - on grey images (three equal channels) saturation and grayscale change nothing.
import * as torch from '../torch/index.js';
import type { Tensor } from '../torch/index.js';
import { MT19937 } from './sampler.js';

export interface MultiCropOptions {
  /** Side of the two global crops (crops.global_crops_size). */
  globalCropsSize: number;
  /** Fraction of the image area a global crop covers (crops.global_crops_scale, upstream (0.32, 1.0)). */
  globalCropsScale: [number, number];
  /** crops.local_crops_number (upstream 8). */
  localCropsNumber: number;
  localCropsSize: number;
  /** crops.local_crops_scale (upstream (0.05, 0.32)). */
  localCropsScale: [number, number];
}

export interface MultiCrops {
  /** [2B, C, g, g]: global crop 0 of every image, then global crop 1; in [-1, 1]. */
  global: Tensor;
  /** [nLocal * B, C, l, l]: local crop 0 of every image, then crop 1, ...; null without local crops. */
  local: Tensor | null;
}

const LOG_RATIO: [number, number] = [Math.log(3 / 4), Math.log(4 / 3)];

/** Uniform draws in [low, high) of shape [n], from the CPU generator. */
function uniform(n: number, low: number, high: number): Tensor {
  return torch.rand([n]).mul(high - low).add(low);
}

/**
 * One random resized crop of each image, mirrored left-right with probability 1/2: the crop covers
 * a fraction in `scale` of the image area with an aspect ratio in (3/4, 4/3), and is resampled to
 * size x size.
 */
export function randomResizedCrop(x: Tensor, size: number, scale: [number, number]): Tensor {
  const [B, C] = x.shape as [number, number];
  return torch.scope(() => {
    const area = uniform(B, scale[0], scale[1]);
    const ratio = uniform(B, LOG_RATIO[0], LOG_RATIO[1]).exp();
    // Width and height as fractions of the image's; the centre anywhere that keeps the crop inside.
    const w = area.mul(ratio).sqrt().clamp(null, 1);
    const h = area.div(ratio).sqrt().clamp(null, 1);
    const cx = uniform(B, -1, 1).mul(w.rsub(1));
    const cy = uniform(B, -1, 1).mul(h.rsub(1));
    const flip = torch.rand([B]).lt(0.5).float().mul(-2).add(1);
    const zero = torch.zeros([B]);
    const theta = torch.stack([w.mul(flip), zero, cx, zero, h, cy], 1).view(B, 2, 3).to(x.device);
    const grid = torch.callOp('aten::affine_grid_generator', theta, [B, C, size, size], false) as Tensor;
    // interpolation 0 = bilinear, padding 1 = border.
    return torch.callOp('aten::grid_sampler', x, grid, 0, 1, false) as Tensor;
  });
}

/** A per-image factor: drawn in [1 - strength, 1 + strength] where `apply` is set, else 1; shape [B, 1, 1, 1]. */
function jitterFactor(apply: Tensor, strength: number): Tensor {
  const B = apply.size(0);
  return torch.where(apply, uniform(B, 1 - strength, 1 + strength), torch.ones([B])).view(B, 1, 1, 1);
}

/** ITU-R 601-2 luma as torchvision's rgb_to_grayscale; [B, 1, H, W]. */
function grayscale(u: Tensor): Tensor {
  if (u.size(1) === 1) return u;
  const [r, g, b] = u.chunk(3, 1) as [Tensor, Tensor, Tensor];
  return r.mul(0.299).add(g.mul(0.587)).add(b.mul(0.114));
}

/** Colour augmentation of crops in [-1, 1] (see the file comment); `solarize` is the probability of solarization. */
export function colorAugment(x: Tensor, solarize: number): Tensor {
  const B = x.size(0);
  return torch.scope(() => {
    const device = x.device;
    const jitter = torch.rand([B]).lt(0.8);
    let u = x.add(1).div(2);
    u = u.mul(jitterFactor(jitter, 0.4).to(device)).clamp(0, 1);
    const mean = grayscale(u).mean([1, 2, 3], true);
    u = u.sub(mean).mul(jitterFactor(jitter, 0.4).to(device)).add(mean).clamp(0, 1);
    const saturation = jitterFactor(jitter, 0.2).to(device);
    if (u.size(1) === 3) {
      const gray = grayscale(u);
      u = u.sub(gray).mul(saturation).add(gray).clamp(0, 1);
    }
    const toGray = torch.rand([B]).lt(0.2).view(B, 1, 1, 1).to(device);
    u = torch.where(toGray, grayscale(u).expandAs(u), u);
    if (solarize > 0) {
      const apply = torch.rand([B]).lt(solarize).view(B, 1, 1, 1).to(device);
      u = torch.where(apply.logicalAnd(u.ge(128 / 255)), u.rsub(1), u);
    }
    return u.mul(2).sub(1);
  });
}

/** DataAugmentationDINO on a batch: two global crops (the second may be solarized) and N local crops of every image. */
export function multiCrop(x: Tensor, o: MultiCropOptions): MultiCrops {
  return torch.scope(() => {
    const global = torch.cat([
      colorAugment(randomResizedCrop(x, o.globalCropsSize, o.globalCropsScale), 0),
      colorAugment(randomResizedCrop(x, o.globalCropsSize, o.globalCropsScale), 0.2),
    ]);
    const locals: Tensor[] = [];
    for (let i = 0; i < o.localCropsNumber; i++) locals.push(colorAugment(randomResizedCrop(x, o.localCropsSize, o.localCropsScale), 0));
    return { global, local: locals.length > 0 ? torch.cat(locals) : null };
  });
}

// --- iBOT masks -------------------------------------------------------------------------------

/** Python's `random` calls that MaskingGenerator and collate make, over MT19937 words. */
export class MaskDraws {
  private readonly mt: MT19937;

  constructor(seed: number) { this.mt = new MT19937(seed); }

  /** [0, 1) with 53 random bits, as random.random(). */
  random(): number {
    const a = this.mt.next() >>> 5;
    const b = this.mt.next() >>> 6;
    return (a * 67108864 + b) / 9007199254740992;
  }

  uniform(a: number, b: number): number { return a + (b - a) * this.random(); }

  /** An integer in [a, b], both included (random.randint). */
  randint(a: number, b: number): number { return a + Math.min(b - a, Math.floor(this.random() * (b - a + 1))); }
}

/**
 * MaskingGenerator: rectangles of 4 to maxNumPatches patches with aspect ratio in (0.3, 1/0.3),
 * added until `count` patches of the height x width grid are masked (or no rectangle fits).
 */
export function blockMask(height: number, width: number, count: number, maxNumPatches: number, draws: MaskDraws): Uint8Array {
  const mask = new Uint8Array(height * width);
  const minNumPatches = 4;
  const logAspect = [Math.log(0.3), Math.log(1 / 0.3)] as const;
  const addBlock = (maxMaskPatches: number): number => {
    let delta = 0;
    for (let attempt = 0; attempt < 10; attempt++) {
      const targetArea = draws.uniform(minNumPatches, maxMaskPatches);
      const aspect = Math.exp(draws.uniform(logAspect[0], logAspect[1]));
      const h = Math.round(Math.sqrt(targetArea * aspect));
      const w = Math.round(Math.sqrt(targetArea / aspect));
      if (w < width && h < height) {
        const top = draws.randint(0, height - h);
        const left = draws.randint(0, width - w);
        let masked = 0;
        for (let i = top; i < top + h; i++) for (let j = left; j < left + w; j++) masked += mask[i * width + j]!;
        if (h * w - masked > 0 && h * w - masked <= maxMaskPatches) {
          for (let i = top; i < top + h; i++) {
            for (let j = left; j < left + w; j++) {
              if (mask[i * width + j] === 0) {
                mask[i * width + j] = 1;
                delta++;
              }
            }
          }
        }
        if (delta > 0) break;
      }
    }
    return delta;
  };
  let masked = 0;
  while (masked < count) {
    const delta = addBlock(Math.min(count - masked, maxNumPatches));
    if (delta === 0) break;
    masked += delta;
  }
  return mask;
}

export interface MaskOptions {
  /** ibot.mask_ratio_min_max (upstream (0.1, 0.5)). */
  maskRatioMinMax: [number, number];
  /** ibot.mask_sample_probability: the fraction of global crops that get masks (upstream 0.5). */
  maskSampleProbability: number;
}

/**
 * The masks of `n` global crops on a grid x grid patch grid, as collate_data_and_cast: the first
 * int(n * p) get block masks whose ratio is drawn from successive slices of the ratio range, the
 * others none, then their order is shuffled. Returns bool [n, grid * grid] (row-major patches).
 */
export function ibotMasks(n: number, grid: number, o: MaskOptions): Tensor {
  // One draw from torch's generator seeds the masks of this batch (so the checkpointed generator state covers them).
  const seed = Number(torch.scope(() => torch.randint(0, 2 ** 31 - 1, [1]).item()));
  const draws = new MaskDraws(seed);
  const N = grid * grid;
  const nMasked = Math.floor(n * o.maskSampleProbability);
  const [low, high] = o.maskRatioMinMax;
  const masks: Uint8Array[] = [];
  for (let i = 0; i < nMasked; i++) {
    const pMin = low + ((high - low) * i) / nMasked;
    const pMax = low + ((high - low) * (i + 1)) / nMasked;
    masks.push(blockMask(grid, grid, Math.floor(N * draws.uniform(pMin, pMax)), 0.5 * N, draws));
  }
  for (let i = nMasked; i < n; i++) masks.push(new Uint8Array(N));
  // random.shuffle: Fisher-Yates from the end.
  for (let i = masks.length - 1; i > 0; i--) {
    const j = draws.randint(0, i);
    [masks[i], masks[j]] = [masks[j]!, masks[i]!];
  }
  const flat = new Uint8Array(n * N);
  masks.forEach((m, i) => flat.set(m, i * N));
  return torch.scope(() => torch.fromArray(flat, [n, N], 'uint8').bool());
}
