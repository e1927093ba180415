// How diffusion latents are scaled: (z - mean) / std per channel, with the numbers from a diffusers
// VAE folder (ReaLS's mean_std.json, else config.json's scaling_factor), and the two directions.
import { join } from 'node:path';
import { z } from 'zod';
import * as torch from '../torch/index.js';
import type { Tensor } from '../torch/index.js';
import { readJsonFile, CONFIG_NAME } from '../io/index.js';
import { MEAN_STD_NAME, type AutoencoderKL } from '../models/autoencoder-kl.js';

/** Diffusion latents are (z - mean) / std per channel; `source` says where the numbers came from. */
export interface LatentNormalization {
  source: 'mean_std.json' | 'scaling_factor' | 'latents_mean_std';
  mean: number[];
  std: number[];
}

export const latentNormalizationSchema = z.object({
  source: z.enum(['mean_std.json', 'scaling_factor', 'latents_mean_std']),
  mean: z.array(z.number()).min(1),
  std: z.array(z.number().positive()).min(1),
}).refine((n) => n.mean.length === n.std.length, { message: 'mean and std need one entry per channel each' });

/**
 * The normalization of a diffusers VAE folder, as AutoencoderKL.normalizeLatents applies it:
 * ReaLS's mean_std.json when present, otherwise config.json's scaling_factor (0.18215 for the
 * SD-VAE; with latents_mean/latents_std or shift_factor where the config has them). A folder
 * with neither is an error: silently assuming SD's 0.18215 would train on mis-scaled latents.
 */
export function latentNormalization(vaePath: string, vae: AutoencoderKL): LatentNormalization {
  const c = vae.config;
  const channels = c.latentChannels;
  if (vae.latentStats !== null) return { source: 'mean_std.json', mean: [...vae.latentStats.mean], std: [...vae.latentStats.std] };
  const raw = readJsonFile(join(vaePath, CONFIG_NAME)) as Record<string, unknown>;
  if (raw === null || typeof raw !== 'object' || raw.scaling_factor === undefined) {
    throw new Error(`--vae-path ${vaePath}: no ${MEAN_STD_NAME} and no scaling_factor in ${CONFIG_NAME}: cannot normalize its latents ` +
      `(run \`reals align convert\` to write ${MEAN_STD_NAME}, or add "scaling_factor", 0.18215 for the SD-VAE)`);
  }
  if (c.latentsMean !== null && c.latentsStd !== null) {
    return { source: 'latents_mean_std', mean: [...c.latentsMean], std: c.latentsStd.map((s) => s / c.scalingFactor) };
  }
  return { source: 'scaling_factor', mean: Array(channels).fill(c.shiftFactor ?? 0), std: Array(channels).fill(1 / c.scalingFactor) };
}

export function describeNormalization(n: LatentNormalization): string {
  return n.source === 'scaling_factor' ? `scaling_factor ${1 / n.std[0]!}` : `${n.source} (mean [${n.mean.map(round)}], std [${n.std.map(round)}])`;
}

const round = (v: number): number => Number(v.toPrecision(4));

function channelTensor(values: number[], z: Tensor, what: string): Tensor {
  if (z.ndim !== 4 || z.size(1) !== values.length) throw new Error(`${what}: latents [${z.shape}] do not have the normalization's ${values.length} channels`);
  return torch.tensor(values, { dtype: z.dtype, device: z.device }).view(1, values.length, 1, 1);
}

/** VAE latents → diffusion latents. */
export function normalizeLatents(z: Tensor, n: LatentNormalization): Tensor {
  return z.sub(channelTensor(n.mean, z, 'normalizeLatents')).div(channelTensor(n.std, z, 'normalizeLatents'));
}

/** Diffusion latents → VAE latents, ready to decode. */
export function denormalizeLatents(z: Tensor, n: LatentNormalization): Tensor {
  return z.mul(channelTensor(n.std, z, 'denormalizeLatents')).add(channelTensor(n.mean, z, 'denormalizeLatents'));
}
