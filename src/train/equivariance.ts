// EQ-VAE's equivariance regulariser (Kouzelis et al., arXiv 2502.09509; zelaki/eqvae,
// ldm/models/autoencoder.py): a transform T that acts the same way on a latent and on its image,
// a spatial downscale and a quarter turn, and the reconstruction terms between decode(T(z)) and
// T(x). The reference's choices, kept here: the scale s = k / 32 with k drawn uniformly from
// 8..31 (s in [0.25, 1)), the same for both axes (its default, anisotropic False); the turn
// k' in {1, 2, 3} as torch.rot90(x, k', dims=[-1, -2]); bilinear interpolation without
// antialiasing and align_corners False, for the latent and the image alike.
//
// One difference, to hold for any latent size: the reference calls interpolate with
// scale_factor s, so a latent of side h becomes floor(h s) and its image floor(h f s), which
// decode(T(z)) (side f floor(h s)) matches only when h s is whole, as for 256 px images with
// an f8 VAE (h = 32). Here the latent's side is floor(h s) and the image is resized to exactly
// f times it, the same calls as the reference's wherever those match. The latent keeps at least
// one position, and LPIPS's VGG its 16 px (its fourth 2x2 max pooling needs 2 positions).
import * as torch from '../torch/index.js';
import type { Tensor } from '../torch/index.js';
import * as nn from '../nn/index.js';

const F = nn.F;

/** The reference's scale factors are k / EQ_SCALE_DENOMINATOR for k in EQ_SCALE_NUMERATORS (both included). */
export const EQ_SCALE_DENOMINATOR = 32;
export const EQ_SCALE_NUMERATORS: readonly [number, number] = [8, 31];
/** The largest scale factor, 31 / 32. */
export const EQ_MAX_SCALE = EQ_SCALE_NUMERATORS[1] / EQ_SCALE_DENOMINATOR;

/** The smallest image side LPIPS's VGG16 takes: four 2x2 max poolings before its fifth stage. */
const LPIPS_MIN_IMAGE_SIDE = 16;

/** One draw of the transform, applied alike to a batch of latents and to their images. */
export interface EquivarianceTransform {
  /** [height, width] of the downscaled latent. */
  latentSize: [number, number];
  /** Quarter turns, as torch.rot90(x, quarterTurns, dims=[-1, -2]); 0 leaves the orientation. */
  quarterTurns: number;
}

/**
 * The side of a latent of side `side` scaled by numerator / 32 (floored, as F.interpolate's
 * output size), at least `minSide`.
 */
export function scaledLatentSide(side: number, numerator: number, minSide: number): number {
  return Math.max(minSide, Math.floor((side * numerator) / EQ_SCALE_DENOMINATOR));
}

/**
 * The smallest latent side the term accepts: 1, or with LPIPS the side whose image is 16 px.
 * `label` names the caller in the error for a latent smaller than that.
 */
export function minScaledLatentSide(latentSize: readonly number[], downsamplingFactor: number, lpips: boolean, label: string): number {
  const minSide = lpips ? Math.ceil(LPIPS_MIN_IMAGE_SIDE / downsamplingFactor) : 1;
  if (Math.min(...latentSize) <= minSide) {
    const why = lpips ? `LPIPS needs ${LPIPS_MIN_IMAGE_SIDE} px, ${minSide} latent positions at ${downsamplingFactor}x (use larger images or --lpips-weight 0)` : 'use larger images';
    throw new Error(`${label}: a ${latentSize.join('x')} latent leaves no room to downscale; ${why}`);
  }
  return minSide;
}

/**
 * Draws the scale numerator uniformly from 8..31 and, when `rotate`, the quarter turns from
 * {1, 2, 3}, from torch's CPU generator (so a resumed run draws what an uninterrupted one does).
 */
export function drawEquivarianceTransform(latentSize: readonly [number, number], o: { rotate: boolean; minSide: number }): EquivarianceTransform {
  const [low, high] = EQ_SCALE_NUMERATORS;
  const numerator = Number(torch.scope(() => torch.randint(low, high + 1, [1]).item()));
  const quarterTurns = o.rotate ? Number(torch.scope(() => torch.randint(1, 4, [1]).item())) : 0;
  return { latentSize: [scaledLatentSide(latentSize[0], numerator, o.minSide), scaledLatentSide(latentSize[1], numerator, o.minSide)], quarterTurns };
}

/** torch.rot90(x, k, dims=[-1, -2]): k quarter turns of the last two dimensions, from width towards height. */
export function rot90(x: Tensor, k: number): Tensor {
  switch (((k % 4) + 4) % 4) {
    case 0: return x;
    case 1: return x.flip(-2).transpose(-1, -2);
    case 2: return x.flip([-1, -2]);
    default: return x.flip(-1).transpose(-1, -2);
  }
}

/** T(z): bilinear resize to the transform's latent size, then its quarter turns. */
export function transformLatent(z: Tensor, t: EquivarianceTransform): Tensor {
  return rot90(F.interpolate(z, { size: t.latentSize, mode: 'bilinear', alignCorners: false }), t.quarterTurns);
}

/** T(x) for images `downsamplingFactor` times the latent's side: resized to that factor times the scaled latent. */
export function transformImage(x: Tensor, t: EquivarianceTransform, downsamplingFactor: number): Tensor {
  const size = t.latentSize.map((side) => side * downsamplingFactor);
  return rot90(F.interpolate(x, { size, mode: 'bilinear', alignCorners: false }), t.quarterTurns);
}

export interface EquivarianceLossInputs {
  /** The posterior sample [B, C, h, w] the step decodes. */
  z: Tensor;
  /** Its images [B, 3, h f, w f]. */
  x: Tensor;
  transform: EquivarianceTransform;
  downsamplingFactor: number;
  decode: (z: Tensor) => Tensor;
  /** The step's reconstruction terms between a target image and a decoded one (reconstruction + LPIPS, weighted). */
  reconstructionTerms: (target: Tensor, decoded: Tensor) => Tensor;
}

/** EQ-VAE's term: reconstructionTerms(T(x), decode(T(z))). */
export function equivarianceLoss(i: EquivarianceLossInputs): Tensor {
  return i.reconstructionTerms(transformImage(i.x, i.transform, i.downsamplingFactor), i.decode(transformLatent(i.z, i.transform)));
}
