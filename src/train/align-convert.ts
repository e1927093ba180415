// `reals align convert` (DESIGN.md section 1, "After training"): a checkpoint of trainAlignment
// becomes the files the rest of the pipeline reads, in one output folder:
// - config.json + diffusion_pytorch_model.safetensors: the VAE as a diffusers AutoencoderKL folder,
//   its config carrying the statistics below as latents_mean/latents_std (scaling_factor 1);
// - mean_std.json: the per-channel mean and std of its latents over N training images, with which
//   generator training normalizes latents, (z - mean) / std;
// - align.safetensors: the alignment heads with their config (saveAlignmentHeads), for the heads.
// The statistics are over posterior samples z = mean + std * eps, not the posterior means: the
// generator trains on samples (src/data/latents.ts draws them), and SD's scaling_factor was
// estimated on samples too. The std is the population one (divisor n; with n = N * h * w values per
// channel the n - 1 correction is immaterial). Each batch is reduced in float64 and the batches are
// combined with Chan et al.'s pairwise update, so neither float32 sums nor sum-of-squares
// cancellation cost precision however many images there are.
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import * as torch from '../torch/index.js';
import type { Tensor } from '../torch/index.js';
import { AutoencoderKL, configFromDiffusers, type LatentStats } from '../models/autoencoder-kl.js';
import { AlignmentHeads, parseAlignmentConfig, saveAlignmentHeads } from '../models/alignment.js';
import { DataLoader, type Dataset } from '../data/index.js';
import { checkWritableDir } from '../io/file.js';
import { loadCheckpoint } from './checkpoint.js';
import { progress as makeProgress } from '../runlog/progress.js';

/** The heads' file beside the diffusers folder's own. */
export const ALIGN_HEADS_NAME = 'align.safetensors';

export interface AlignedModels {
  vae: AutoencoderKL;
  heads: AlignmentHeads;
  /** The training step the checkpoint was written at. */
  step: number;
  /** The run's arguments as the checkpoint recorded them (align train's flags). */
  args: Record<string, unknown>;
}

/**
 * The VAE and the heads of a trainAlignment checkpoint, rebuilt from its `vae_config` and
 * `heads_config` metadata with its `model.*` weights, or the `ema.*` ones with `useEma`; both in
 * eval mode on the CPU. Errors name the file and what is missing.
 */
export function loadAlignedModels(ckpt: string, options: { useEma?: boolean } = {}): AlignedModels {
  if (!existsSync(ckpt) || !statSync(ckpt).isFile()) throw new Error(`${ckpt}: no such checkpoint file`);
  const group = options.useEma ? 'ema' : 'model';
  return torch.scope(() => {
    const { groups, metadata } = loadCheckpoint(ckpt);
    const fail = (message: string): never => { throw new Error(`${ckpt}: ${message}`); };
    for (const key of ['vae_config', 'heads_config']) {
      if (metadata[key] === undefined) fail(`no "${key}" metadata: not a checkpoint of \`reals align train\`, or one written before it recorded the model configs`);
    }
    const weights = groups[group] ?? fail(`no ${group}.* tensors (groups: ${Object.keys(groups).join(', ')})`);
    const vae = new AutoencoderKL(configFromDiffusers(metadata.vae_config, `${ckpt} metadata "vae_config"`));
    const heads = new AlignmentHeads(parseAlignmentConfig(metadata.heads_config, `${ckpt} metadata "heads_config"`));
    const headPrefixes = [...heads.namedChildren()].map(([name]) => `${name}.`);
    const isHead = (key: string) => headPrefixes.some((prefix) => key.startsWith(prefix));
    try {
      vae.loadDiffusersStateDict(Object.fromEntries(Object.entries(weights).filter(([key]) => !isHead(key))));
      heads.loadStateDict(Object.fromEntries(Object.entries(weights).filter(([key]) => isHead(key))));
    } catch (error) {
      fail(`${group}.*: ${(error as Error).message}`);
    }
    return { vae: vae.eval(), heads: heads.eval(), step: metadata.step, args: metadata.args };
  });
}

/**
 * Per-channel mean and population std of posterior samples `vae.encode(x).sample()` over the
 * first `numSamples` images of `batches` (a batch that passes the count is cut), over every
 * position; the noise comes from the default generator. Returns the statistics and the number of
 * images they cover (fewer than numSamples when the batches end first).
 */
export async function computeLatentStats(
  vae: AutoencoderKL, batches: AsyncIterable<{ images: Tensor }>, numSamples: number,
  options: { device?: torch.Device; onBatch?: (images: number) => void } = {},
): Promise<{ stats: LatentStats; images: number }> {
  const device = options.device ?? 'cpu';
  const channels = vae.config.latentChannels;
  let count = 0;
  let images = 0;
  const mean = new Array<number>(channels).fill(0);
  const m2 = new Array<number>(channels).fill(0);
  for await (const { images: batch } of batches) {
    const take = Math.min(batch.size(0), numSamples - images);
    const [batchMean, batchM2, batchCount] = torch.noGrad(() => torch.scope(() => {
      const z = vae.encode(batch.slice(0, 0, take).to(device)).sample().double();
      const m = z.mean([0, 2, 3], true);
      const toNumbers = (t: Tensor) => Array.from(t.flatten().cpu().toArray() as Float64Array);
      return [toNumbers(m), toNumbers(z.sub(m).square().sum([0, 2, 3])), z.numel() / channels] as const;
    }));
    // Chan, Golub and LeVeque's update of (count, mean, M2) by a batch's (count, mean, M2).
    const total = count + batchCount;
    for (let c = 0; c < channels; c++) {
      const delta = batchMean[c]! - mean[c]!;
      mean[c] = mean[c]! + (delta * batchCount) / total;
      m2[c] = m2[c]! + batchM2[c]! + (delta * delta * count * batchCount) / total;
    }
    count = total;
    images += take;
    batch.dispose();
    options.onBatch?.(images);
    if (images >= numSamples) break;
  }
  if (images === 0) throw new Error('computeLatentStats: no images');
  const std = m2.map((v) => Math.sqrt(v / count));
  const flat = std.findIndex((s) => !(s > 0));
  if (flat >= 0) throw new Error(`computeLatentStats: latent channel ${flat} has std ${std[flat]} over ${images} images; mean_std.json needs positive stds`);
  return { stats: { mean, std }, images };
}

export interface AlignConvertOptions {
  vae: AutoencoderKL;
  heads: AlignmentHeads;
  /** The training images, cropped as the run read them (same dataset, same image size). */
  dataset: Dataset;
  /** Images the latent statistics cover: the first of a permutation of the dataset seeded by `seed`. */
  numSamples: number;
  outputDir: string;
  /** Images per encoder call (default 32). */
  batchSize?: number;
  /** Seeds the permutation and the posterior noise (default 0). */
  seed?: number;
  numWorkers?: number;
  /** Where the VAE encodes (default: cuda when available, else cpu). */
  device?: torch.Device;
  /** Where the progress bar goes (default stderr). */
  progressStream?: NodeJS.WritableStream & { isTTY?: boolean };
}

export interface AlignConvertResult {
  stats: LatentStats;
  /** Images the statistics cover: numSamples less any unreadable files. */
  images: number;
  /** Unreadable image files skipped. */
  skipped: number;
}

/**
 * Computes mean_std.json's statistics (computeLatentStats over `numSamples` images, unflipped, in a
 * seeded random order: ImageFolder lists images class by class) and writes the output folder; see
 * the file comment. Sets `vae.latentStats` and leaves the VAE on `device`. Nothing is written
 * before the statistics are complete, and each file is written to a temporary name and renamed.
 */
export async function convertAlignment(options: AlignConvertOptions): Promise<AlignConvertResult> {
  const { vae, heads, dataset, numSamples } = options;
  const batchSize = options.batchSize ?? 32;
  const seed = options.seed ?? 0;
  const device = options.device ?? (torch.cuda.isAvailable() ? 'cuda' : 'cpu');
  if (!Number.isInteger(numSamples) || numSamples < 1) throw new RangeError(`--num-samples must be a positive integer, got ${numSamples}`);
  if (numSamples > dataset.length) throw new RangeError(`--num-samples ${numSamples} exceeds the ${dataset.length} images of --data-path`);
  if (heads.config.latentChannels !== vae.config.latentChannels) {
    throw new Error(`convertAlignment: the heads take ${heads.config.latentChannels} latent channels, the VAE has ${vae.config.latentChannels}`);
  }
  // Before the statistics run: an output folder that cannot be made fails now.
  checkWritableDir(options.outputDir, 'convertAlignment: outputDir');
  const data = new DataLoader(dataset, { batchSize, seed, randomFlip: false, numWorkers: options.numWorkers });
  const bar = makeProgress({
    total: Math.ceil(numSamples / batchSize), label: 'latent stats', stream: options.progressStream, itemsPerStep: batchSize,
  });
  vae.to(device).eval();
  torch.manualSeed(seed);
  let result: { stats: LatentStats; images: number };
  try {
    let batches = 0;
    result = await computeLatentStats(vae, data.iterate(0), numSamples, { device, onBatch: () => bar.update(++batches) });
  } finally {
    bar.stop();
    await data.close();
  }
  vae.latentStats = result.stats;
  // diffusers' SDXL-style pipelines normalize by (z - latents_mean) * scaling_factor / latents_std:
  // with scaling_factor 1 that is ReaLS's (z - mean) / std, so both read the folder alike.
  Object.assign(vae.config, { latentsMean: result.stats.mean, latentsStd: result.stats.std, scalingFactor: 1, shiftFactor: null });
  vae.savePretrained(options.outputDir);
  saveAlignmentHeads(join(options.outputDir, ALIGN_HEADS_NAME), heads);
  return { ...result, skipped: data.skipped };
}
