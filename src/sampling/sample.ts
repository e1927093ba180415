// Sampling images from a trained generator as SiT's sample_ddp.py does: labels for each sample
// index, the latents of a batch from its seed (sampleLatents), and the whole run (sampleImages):
// the sample folder it claims with the settings that drew it, one PNG per sample, the ADM .npz and a
// grid; with `onnx`, the latents and the decoding run through onnxruntime (./onnx-backend.ts).
import { existsSync, readdirSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import * as torch from '../torch/index.js';
import type { Tensor } from '../torch/index.js';
import { stateDictHash } from '../nn/module.js';
import type { DiT, SiT } from '../models/sit.js';
import type { AutoencoderKL } from '../models/autoencoder-kl.js';
import { NpzWriter, readJsonFile, writeJsonFileAtomic } from '../io/index.js';
import { ensureWritableDir, removeDeadTemporaries, writeAll, writeFileAtomic } from '../io/file.js';
import { decodeImage } from '../data/index.js';
import { denormalizeLatents, describeNormalization, type LatentNormalization } from '../data/latent-normalization.js';
import { Sampler, createDiffusion, createTransport, generateLatents, type GenerateOptions } from '../diffusion/index.js';
import { processContext } from '../runlog/process.js';
import { progress as makeProgress } from '../runlog/progress.js';
import { encodePng, saveImageGrid } from '../runlog/images.js';
import type { OnnxSampler } from './onnx-backend.js';
import { batchSeed, sampleLabels, type LabelSampling } from './labels.js';

const dist = torch.distributed;

/** How latents are drawn: generateLatents' options other than the labels, shape and seed. */
export type SampleLatentsOptions = Omit<GenerateOptions, 'model' | 'labels' | 'shape' | 'seed'> & {
  model: SiT | DiT;
  /** How labels are chosen (default balanced). */
  labelSampling?: LabelSampling;
};

export interface SampleImagesOptions extends SampleLatentsOptions {
  vae: AutoencoderKL;
  normalization: LatentNormalization;
  /** --num-fid-samples: images in the .npz (the last global batch is cut there). */
  numSamples: number;
  /** --per-proc-batch-size. */
  batchSize: number;
  /** --global-seed. */
  seed: number;
  /** Where the PNGs go (`000000.png`, ...); the .npz is `<sampleDir>.npz`, the grid `<sampleDir>.png`. */
  sampleDir: string;
  /** Images in the grid (default 64). */
  gridSize?: number;
  /** Draw and decode through onnxruntime instead of libtorch (`--backend onnxruntime`). */
  onnx?: OnnxSampler;
  log?: (line: string) => void;
  progressStream?: NodeJS.WritableStream & { isTTY?: boolean };
}

export interface SampleImagesResult { sampleDir: string; npz: string | null; grid: string | null; numSamples: number }

/**
 * The latents of samples `indices` (labelled by sampleLabels) drawn from `seed`, normalized as the
 * model was trained: torch.manualSeed(seed), the noise torch.randn([n, C, H, W]), then the sampler.
 * With guidance over the whole time range, the state is the reference scripts' doubled batch
 * (the noise twice, the labels then the null class, forwardWithCfg): SiT's sample_ddp.py for
 * ODE/SDE, so that dopri5's step-size control and the SDE's noise equal the reference's draw for
 * draw, and DiT's sample.py for DDPM/DDIM, whose p_sample_loop draws noise for all 2B rows; with
 * a guidance interval (REPA's) generateLatents runs the guided batch alone.
 */
export function sampleLatents(options: SampleLatentsOptions, indices: readonly number[], seed: number): Tensor {
  const { model, method, cfgScale = 1, guidanceLow = 0, guidanceHigh = 1, device = 'cpu' } = options;
  const precision = torch.usePrecision(options.precision ?? 'fp32', device);
  const c = model.config;
  const shape = [c.inChannels, c.inputSize, c.inputSize];
  const labels = sampleLabels(indices, c.numClasses, options.labelSampling ?? 'balanced', seed, shape);
  if (cfgScale > 1 && guidanceLow <= 0 && guidanceHigh >= 1) {
    if (model.training) throw new Error('sampleLatents: the model is in training mode (labels would be dropped at random); call eval() first');
    return torch.noGrad(() => torch.scope(() => torch.withPrecision(precision, device, () => {
      const n = labels.length;
      torch.manualSeed(seed);
      const z = torch.randn([n, ...shape]).to(device);
      // sample_ddp.py draws its random labels here, between the noise and the sampler's own draws.
      if (options.labelSampling === 'random') torch.randint(0, c.numClasses, [n]).dispose();
      const y = torch.tensor([...labels, ...Array(n).fill(c.numClasses)], { dtype: 'int64' }).to(device);
      const guided = (x: Tensor, t: Tensor, kwargs: Record<string, unknown>): Tensor =>
        model.forwardWithCfg(x, t, kwargs.y as Tensor, cfgScale, { channels: options.cfgChannels });
      if (method === 'ddpm' || method === 'ddim') {
        const diffusion = createDiffusion({ ...options.diffusion, timestepRespacing: String(options.steps ?? 250) });
        const loop = { noise: torch.cat([z, z]), clipDenoised: false, modelKwargs: { y } };
        const samples = method === 'ddpm'
          ? diffusion.pSampleLoop(guided, loop.noise.shape, loop)
          : diffusion.ddimSampleLoop(guided, loop.noise.shape, { ...loop, eta: options.eta ?? 0 });
        return samples.slice(0, 0, n);
      }
      const sampler = new Sampler(createTransport(options.transport));
      const sample = method === 'ode'
        ? sampler.sampleOde({ ...options.ode, numSteps: options.steps ?? 250 })
        : sampler.sampleSde({ diffusionForm: 'sigma', ...options.sde, numSteps: options.steps ?? 250 });
      const { samples } = sample(torch.cat([z, z]), guided, { y });
      return samples[samples.length - 1]!.slice(0, 0, n);
    })));
  }
  return generateLatents({ ...options, precision, labels, shape, seed });
}

/** The file in a sample folder that records what its PNGs were drawn with. */
export const SAMPLING_SETTINGS = 'sampling.json';

/**
 * What decides the pixels of sample i, as JSON: the sampler's options, the seed and batch layout
 * (sample i's noise comes from its batch's seed), the latent normalization and the hashes of the
 * generator's and the VAE's weights. The samples count is not among them: more samples extend a folder.
 */
function samplingSettings(options: SampleImagesOptions, precision: torch.ResolvedPrecision, worldSize: number): Record<string, unknown> {
  const { method, steps, cfgScale, cfgChannels, guidanceLow, guidanceHigh, guidanceConvention, transport, ode, sde, diffusion, eta } = options;
  return JSON.parse(JSON.stringify({
    method, steps, cfgScale, cfgChannels, guidanceLow, guidanceHigh, guidanceConvention, transport, ode, sde, diffusion, eta,
    // Folders drawn before precision and backend were settings are fp32 and libtorch, which add no entry.
    precision: precision === 'fp32' || options.onnx !== undefined ? undefined : precision,
    backend: options.onnx === undefined ? undefined : 'onnxruntime',
    labelSampling: options.labelSampling ?? 'balanced',
    seed: options.seed, batchSize: options.batchSize, worldSize, normalization: options.normalization,
    model: stateDictHash(options.model), vae: stateDictHash(options.vae),
  })) as Record<string, unknown>;
}

/**
 * A sample folder is continued only with the settings its PNGs were drawn with: rank 0 records
 * them in a new folder, and a folder with other settings, or with PNGs and no record, is an error
 * naming what differs (reusing those PNGs would mix two models' or samplers' images in one score).
 */
function claimSampleDir(sampleDir: string, settings: Record<string, unknown>, rank: number, distributed: boolean, log: (line: string) => void): void {
  const path = join(sampleDir, SAMPLING_SETTINGS);
  const fail = (message: string): never => { throw new Error(`${sampleDir}: ${message}; use another sample folder, or delete this one`); };
  const compare = (): void => {
    // Folders drawn before labels were a setting cycled through the classes.
    const recorded: Record<string, unknown> = { labelSampling: 'balanced', ...(readJsonFile(path) as Record<string, unknown>) };
    const show = (v: unknown): string => (v === undefined ? 'unset' : JSON.stringify(v).slice(0, 80));
    const differing = [...new Set([...Object.keys(recorded), ...Object.keys(settings)])]
      .filter((k) => JSON.stringify(recorded[k]) !== JSON.stringify(settings[k]));
    if (differing.length > 0) {
      fail(`its samples were drawn with other settings (${differing.map((k) => `${k}: ${show(recorded[k])} there, ${show(settings[k])} now`).join('; ')})`);
    }
  };
  if (rank === 0) {
    ensureWritableDir(sampleDir, 'sample folder');
    // Before any rank writes (they wait at the barrier below): PNGs, and the .npz and grid beside
    // the folder, that a killed run left under temporary names.
    const prefix = `${basename(resolve(sampleDir))}.`;
    const stale = [...removeDeadTemporaries(sampleDir), ...removeDeadTemporaries(dirname(resolve(sampleDir)), (name) => name.startsWith(prefix))];
    if (stale.length > 0) log(`note: removed ${stale.length} temporary file(s) of an interrupted run (${stale.slice(0, 3).join(', ')}${stale.length > 3 ? ', ...' : ''})`);
    if (existsSync(path)) compare();
    else {
      const png = readdirSync(sampleDir).find((name) => name.endsWith('.png'));
      if (png !== undefined) fail(`it holds samples (${png}, ...) but no ${SAMPLING_SETTINGS} saying how they were drawn`);
      writeJsonFileAtomic(path, settings);
    }
  }
  if (distributed) {
    dist.barrier();
    if (rank !== 0) compare();
  }
}

/**
 * Samples as SiT's sample_ddp.py, as one rank of the process group: the global batch
 * (batchSize per rank) is repeated until numSamples are covered; sample i of a global batch goes
 * to rank i % worldSize, as `index = i * world_size + rank + total`. Batches whose PNGs all exist
 * are skipped, so an interrupted run continues: each PNG is written under a temporary name and
 * renamed, and the folder's `sampling.json` must match this run's settings. Rank 0 then streams
 * every PNG into one ADM .npz (`arr_0`, uint8 NHWC, ZIP64 when large) and writes a grid of the
 * first images.
 */
export async function sampleImages(options: SampleImagesOptions): Promise<SampleImagesResult> {
  const { model, vae, normalization, numSamples, batchSize, sampleDir } = options;
  const { distributed, rank, worldSize, device, log } = processContext(options);
  if (!(Number.isInteger(numSamples) && numSamples >= 1)) throw new Error(`--num-fid-samples must be a positive integer, got ${numSamples}`);
  if (!(Number.isInteger(batchSize) && batchSize >= 1)) throw new Error(`--per-proc-batch-size must be a positive integer, got ${batchSize}`);
  const c = model.config;
  if (normalization.mean.length !== c.inChannels) {
    throw new Error(`--vae-path: the latent normalization has ${normalization.mean.length} channels, the model (--ckpt) ${c.inChannels}`);
  }
  if (vae.config.latentChannels !== c.inChannels) throw new Error(`--vae-path: the VAE has ${vae.config.latentChannels} latent channels, the model (--ckpt) ${c.inChannels}`);
  const globalBatch = batchSize * worldSize;
  const iterations = Math.ceil(numSamples / globalBatch);
  const rankSeed = options.seed * worldSize + rank;
  const name = (index: number): string => join(sampleDir, `${String(index).padStart(6, '0')}.png`);
  const precision = torch.usePrecision(options.precision ?? 'fp32', device);
  model.to(device).eval();
  vae.to(device).eval();
  claimSampleDir(sampleDir, samplingSettings(options, precision, worldSize), rank, distributed, log);
  log(`sampling ${numSamples} images (${iterations} batches of ${batchSize} x ${worldSize} ranks) into ${sampleDir}; ` +
    `${options.method}, ${options.steps ?? 250} steps, cfg ${options.cfgScale ?? 1}, ${precision}; latents denormalized by ${describeNormalization(normalization)}`);
  const bar = rank === 0 ? makeProgress({ total: iterations, label: 'sample', unit: 'batch', stream: options.progressStream, itemsPerStep: globalBatch }) : null;
  try {
    for (let b = 0; b < iterations; b++) {
      const indices = Array.from({ length: batchSize }, (_, i) => i * worldSize + rank + b * globalBatch);
      if (!indices.every((index) => existsSync(name(index)))) {
        const seed = batchSeed(rankSeed, b);
        /** The PNG pixels of decoded images: sample_ddp.py's clamp(127.5 * x + 128, 0, 255) to uint8, NHWC. */
        const pixels = (decoded: Tensor): Tensor => torch.noGrad(() => torch.scope(() => {
          // Casting to uint8 would turn a NaN into a black pixel, and a diverged model into a score.
          const finite = decoded.isfinite().flatten(1).all(1).cpu().toArray() as Uint8Array;
          const bad = indices.filter((_, i) => !finite[i]);
          if (bad.length > 0) {
            throw new Error(`${sampleDir}: sample${bad.length > 1 ? 's' : ''} ${bad.join(', ')} (batch ${b}, seed ${seed}) ` +
              'decoded to NaN or infinite values: the generator (--ckpt) or the VAE (--vae-path) is broken (a diverged checkpoint?); no PNG written for the batch');
          }
          return decoded.mul(127.5).add(128).clamp(0, 255).to('uint8').permute(0, 2, 3, 1).contiguous().cpu();
        }));
        const images = options.onnx === undefined
          ? pixels(torch.noGrad(() => torch.scope(() => {
            const latents = sampleLatents({ ...options, precision, device }, indices, seed);
            return torch.withPrecision(precision, device, () => vae.decode(denormalizeLatents(latents, normalization))).float();
          })))
          : await options.onnx.latents(indices, seed).then((latents) => options.onnx!.decode(latents)).then((decoded) => {
            const out = pixels(decoded);
            decoded.dispose();
            return out;
          });
        for (const [i, index] of indices.entries()) {
          const image = images.select(0, i);
          const png = await encodePng(image);
          writeFileAtomic(name(index), (fd) => writeAll(fd, png));
          image.dispose();
        }
        images.dispose();
      }
      bar?.update(b + 1);
    }
  } finally {
    bar?.stop();
  }
  if (distributed) dist.barrier();
  let npz: string | null = null;
  let grid: string | null = null;
  if (rank === 0) {
    npz = `${sampleDir}.npz`;
    grid = `${sampleDir}.png`;
    await writeSampleNpz(sampleDir, name, numSamples, npz, grid, options.gridSize ?? 64);
    log(`wrote ${npz} (arr_0: ${numSamples} images) and the grid ${grid}`);
  }
  // No barrier after it: the other ranks would wait in a collective, past the group's timeout,
  // for as long as rank 0 takes to pack 50,000 PNGs; they need nothing from it.
  return { sampleDir, npz, grid, numSamples };
}

/** Streams PNGs 0..n-1 into `npz` as arr_0 [n, H, W, C] uint8, and the first gridSize as a grid image. */
async function writeSampleNpz(sampleDir: string, name: (index: number) => string, n: number, npz: string, grid: string, gridSize: number): Promise<void> {
  const writer = new NpzWriter(npz);
  const gridImages: Tensor[] = [];
  try {
    let shape: [number, number, number] | null = null;
    for (let i = 0; i < n; i++) {
      const image = await decodeImage(name(i));
      const hwc: [number, number, number] = [image.height, image.width, image.channels];
      if (shape === null) {
        shape = hwc;
        writer.begin('arr_0', 'uint8', [n, ...shape]);
      } else if (hwc.join() !== shape.join()) {
        throw new Error(`${sampleDir}: ${name(i)} is [${hwc}] (HWC), the first sample [${shape}]`);
      }
      writer.append(image.data);
      if (i < gridSize) gridImages.push(torch.fromArray(image.data, hwc, 'uint8').permute(2, 0, 1).unsqueeze(0));
    }
    writer.close();
  } catch (error) {
    writer.abort();
    throw error;
  }
  const images = torch.cat(gridImages);
  await saveImageGrid(grid, images, { nrow: Math.ceil(Math.sqrt(gridImages.length)) });
  for (const t of [images, ...gridImages]) t.dispose();
}

