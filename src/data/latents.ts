// Latents for generator training (scaled as ./latent-normalization.ts says): the latent cache that
// `reals cache-latents` writes so that SiT/DiT training never runs the VAE encoder, and the two
// batch sources the trainer reads (cached latents, or images encoded on the fly as SiT's train.py).
//
// A cache folder holds `index.json` and shards `shard-00000.npz`, ...: shard k covers the dataset
// items [k * shardSize, (k + 1) * shardSize) in order and stores, per item that could be read, the
// posterior's `mean` and `std` (float32 [n, C, h, w]; with --flip also `mean_flip`, `std_flip` of
// the mirrored image), its `labels` and dataset `indices` (int64 [n]). Shards are written whole
// under a temporary name and renamed, so a rerun keeps every shard that exists and encodes the rest.
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import * as torch from '../torch/index.js';
import type { Tensor } from '../torch/index.js';
import { NpzFile, saveNpz, readJsonFile, writeJsonFileAtomic, makeDirs } from '../io/index.js';
import { removeDeadTemporaries } from '../io/file.js';
import { AutoencoderKL, DiagonalGaussianDistribution } from '../models/autoencoder-kl.js';
import { DataLoader, flipFor, type Dataset, type ImageFileDataset, type InMemoryDataset } from './loader.js';
import { DistributedSampler } from './sampler.js';
import { progress as makeProgress } from '../runlog/progress.js';
import { processContext } from '../runlog/process.js';
import { describeNormalization, latentNormalization, latentNormalizationSchema, normalizeLatents, type LatentNormalization } from './latent-normalization.js';
import { describeVae, sameVae, vaeIdentity, vaeIdentitySchema, type VaeIdentity } from './vae-identity.js';

const dist = torch.distributed;

// --- the cache ----------------------------------------------------------------------------------

/**
 * `vae.encode(x)` under `precision`, with the posterior built in float32 from the encoder's
 * moments: bfloat16 autocast leaves them bfloat16, and std = exp(logvar / 2), the sampling noise
 * (its random stream too) and the KL would otherwise be computed in bfloat16.
 */
export function encodePosterior(vae: AutoencoderKL, x: Tensor, precision: torch.ResolvedPrecision): DiagonalGaussianDistribution {
  const posterior = torch.withPrecision(precision, x.device, () => vae.encode(x));
  return posterior.parameters.dtype === 'float32' ? posterior : new DiagonalGaussianDistribution(posterior.parameters.float());
}

export const LATENT_INDEX = 'index.json';

const settingsSchema = z.object({
  items: z.number().int().nonnegative(),
  shardSize: z.number().int().positive(),
  flip: z.boolean(),
  imageShape: z.array(z.number().int().positive()).length(3),
  latentShape: z.array(z.number().int().positive()).length(3),
  normalization: latentNormalizationSchema,
  // Caches made before precision was a setting were encoded in float32.
  precision: z.enum(['fp32', 'bf16']).default('fp32'),
});

const indexSchema = z.object({
  format: z.literal('reals-latents'),
  version: z.literal(1),
  /** The VAE folder the latents came from (recorded; a rerun may spell it differently). */
  vaePath: z.string(),
  /** Its identity (absent from caches made before it was recorded). */
  vae: vaeIdentitySchema.optional(),
  settings: settingsSchema,
  complete: z.boolean(),
  shards: z.array(z.object({ file: z.string(), start: z.number().int().nonnegative(), count: z.number().int().nonnegative() })),
  skipped: z.array(z.string()),
  /** The class names in label order (the data's class folders, Fashion-MNIST's); absent from caches made before they were recorded. */
  classNames: z.array(z.string()).optional(),
});

export type LatentCacheSettings = z.infer<typeof settingsSchema>;
export type LatentIndex = z.infer<typeof indexSchema>;

export function shardName(k: number): string { return `shard-${String(k).padStart(5, '0')}.npz`; }

export interface CacheLatentsOptions {
  dataset: Dataset;
  vae: AutoencoderKL;
  /** The VAE folder (recorded, and where the normalization is read). */
  vaePath: string;
  /** The dataset's class names in label order, recorded in the index for the generators trained on it. */
  classNames?: readonly string[];
  out: string;
  /** Also store the latents of each image mirrored left-right (default false). */
  flip?: boolean;
  /** Images per encoder call (default 32). */
  batchSize?: number;
  /** Items per shard (default 1000). */
  shardSize?: number;
  /** Encode with the posterior of images in this device (default cuda when available). */
  device?: torch.Device;
  /**
   * The encoder under bfloat16 autocast ('bf16'), or not ('fp32', default); 'auto' picks bf16 on
   * CUDA and bfloat16-capable CPUs. The latents are stored in float32 either way; the index's
   * settings record the precision, so a cache is continued only in the precision it began with.
   */
  precision?: torch.Precision;
  /** Image decoding threads for folders (the DataLoader's default when absent). */
  numWorkers?: number;
  log?: (line: string) => void;
  progressStream?: NodeJS.WritableStream & { isTTY?: boolean };
}

export interface CacheLatentsResult { index: LatentIndex; encoded: number; reused: number }

/** The [C, H, W] of the images a dataset yields. */
function imageShapeOf(dataset: Dataset): [number, number, number] {
  return 'path' in dataset ? [3, dataset.resolution, dataset.resolution] : [...dataset.itemShape];
}

/** Items [start, end) of a dataset as a dataset of its own. */
function subset(dataset: Dataset, start: number, end: number): Dataset {
  const length = end - start;
  if ('path' in dataset) {
    const d: ImageFileDataset = dataset;
    return { length, resolution: d.resolution, path: (i) => d.path(start + i), label: (i) => d.label(start + i) };
  }
  const d: InMemoryDataset = dataset;
  return { length, itemShape: d.itemShape, image: (i) => d.image(start + i), label: (i) => d.label(start + i) };
}

/** Whether shard `path` was written (shards are renamed into place whole); a torn one is an error. */
function shardExists(path: string): boolean {
  if (!existsSync(path)) return false;
  openShard(path).close();
  return true;
}

/**
 * Encodes every item of `dataset` once into `out` (see the file comment), as one rank of
 * `worldSize` (shard k is rank k % worldSize's). Shards already in `out` are kept, so an
 * interrupted run continues where it stopped; settings that differ from the folder's are an error.
 * Unreadable images are skipped, named in the index, and counted.
 */
export async function cacheLatents(options: CacheLatentsOptions): Promise<CacheLatentsResult> {
  const { dataset, vae, out } = options;
  const { distributed, rank, worldSize, device, log } = processContext(options);
  const shardSize = options.shardSize ?? 1000;
  const batchSize = options.batchSize ?? 32;
  const flip = options.flip ?? false;
  const imageShape = imageShapeOf(dataset);
  if (imageShape[0] !== vae.config.inChannels) {
    throw new Error(`cacheLatents: the images have ${imageShape[0]} channels, the VAE takes ${vae.config.inChannels}`);
  }
  const factor = vae.downsamplingFactor;
  if (imageShape[1] % factor !== 0 || imageShape[2] % factor !== 0) {
    throw new Error(`cacheLatents: images of ${imageShape[1]}x${imageShape[2]} are not divisible by the VAE's downsampling factor ${factor}`);
  }
  const settings: LatentCacheSettings = {
    items: dataset.length, shardSize, flip, imageShape, latentShape: [vae.config.latentChannels, imageShape[1] / factor, imageShape[2] / factor],
    normalization: latentNormalization(options.vaePath, vae),
    precision: torch.usePrecision(options.precision ?? 'fp32', device),
  };
  const indexPath = join(out, LATENT_INDEX);
  const classNames = options.classNames === undefined ? undefined : [...options.classNames];
  let vaeRecord: VaeIdentity | undefined = vaeIdentity(vae);
  if (existsSync(indexPath)) {
    const previous = parseIndex(indexPath);
    if (previous.vae !== undefined && !sameVae(previous.vae, vaeRecord)) {
      throw new Error(`cacheLatents: ${out} holds the latents of another VAE (${describeVae(previous.vae)}) than --vae-path ${options.vaePath} (${describeVae(vaeRecord)}); use another --out folder`);
    }
    // Its shards so far came from a VAE it did not record.
    if (previous.vae === undefined) vaeRecord = undefined;
    const differing = (Object.keys(settings) as (keyof LatentCacheSettings)[])
      .filter((k) => JSON.stringify(previous.settings[k]) !== JSON.stringify(settings[k]));
    if (differing.length > 0) {
      throw new Error(`cacheLatents: ${out} holds a cache made with other settings (${differing.map((k) => `${k}: ${JSON.stringify(previous.settings[k])} there, ` +
        `${JSON.stringify(settings[k])} now`).join('; ')}); use another --out folder`);
    }
  } else if (rank === 0) {
    const stray = existsSync(out) ? readdirSync(out).filter((name) => /^shard-\d+\.npz$/.test(name)) : [];
    if (stray.length > 0) throw new Error(`cacheLatents: ${out} holds shards (${stray[0]}, ...) but no ${LATENT_INDEX}; use an empty --out folder`);
    makeDirs(out, 'cacheLatents: out');
    writeJsonFileAtomic(indexPath, {
      format: 'reals-latents', version: 1, vaePath: options.vaePath, vae: vaeRecord, settings, complete: false, shards: [], skipped: [], classNames,
    } satisfies LatentIndex);
  }
  // Shards (and the index) a killed run left under temporary names; no rank writes before the barrier.
  if (rank === 0) removeDeadTemporaries(out);
  if (distributed) dist.barrier();

  const numShards = Math.ceil(dataset.length / shardSize);
  const mine = Array.from({ length: numShards }, (_, k) => k).filter((k) => k % worldSize === rank);
  const todo = mine.filter((k) => !shardExists(join(out, shardName(k))));
  log(`caching ${dataset.length} images in ${numShards} shards of ${shardSize} into ${out}${flip ? ' (and their mirror images)' : ''}; ` +
    `normalization ${describeNormalization(settings.normalization)}; ${settings.precision}; ${mine.length - todo.length} shards already there`);
  // Counted in images (one shard can be the whole dataset); under DDP rank 0 shows its own shards.
  const shardItems = (k: number): number => Math.min(dataset.length, (k + 1) * shardSize) - k * shardSize;
  const bar = rank === 0 ? makeProgress({ total: todo.reduce((n, k) => n + shardItems(k), 0), label: 'cache-latents', unit: 'img', stream: options.progressStream }) : null;
  let imagesBefore = 0;
  vae.to(device).eval();
  try {
    for (const k of todo) {
      const start = k * shardSize;
      const loader = new DataLoader(subset(dataset, start, Math.min(dataset.length, start + shardSize)), {
        batchSize, shuffle: false, randomFlip: false, numWorkers: options.numWorkers,
      });
      const parts: Record<string, Tensor[]> = { mean: [], std: [], mean_flip: [], std_flip: [], labels: [], indices: [] };
      let shardImages = 0;
      try {
        for await (const batch of loader) {
          torch.noGrad(() => torch.scope(() => {
            const encode = (x: Tensor): [Tensor, Tensor] => {
              const posterior = encodePosterior(vae, x.to(device), settings.precision);
              return [posterior.mean.cpu(), posterior.std.cpu()];
            };
            const [mean, std] = encode(batch.images);
            parts.mean!.push(torch.keep(mean));
            parts.std!.push(torch.keep(std));
            if (flip) {
              const [meanFlip, stdFlip] = encode(batch.images.flip(3));
              parts.mean_flip!.push(torch.keep(meanFlip));
              parts.std_flip!.push(torch.keep(stdFlip));
            }
          }));
          parts.labels!.push(batch.labels);
          parts.indices!.push(torch.tensor(BigInt64Array.from(batch.indices, (i) => BigInt(start + i))));
          batch.images.dispose();
          shardImages += batch.indices.length;
          bar?.update(imagesBefore + shardImages);
        }
      } finally {
        await loader.close();
      }
      const [c, h, w] = settings.latentShape;
      const arrays: Record<string, Tensor> = {};
      for (const [name, list] of Object.entries(parts)) {
        if (name.endsWith('_flip') && !flip) continue;
        const empty = name === 'labels' || name === 'indices' ? torch.zeros([0], { dtype: 'int64' }) : torch.zeros([0, c!, h!, w!]);
        arrays[name] = list.length === 0 ? empty : torch.cat(list);
      }
      saveNpz(join(out, shardName(k)), arrays);
      for (const t of [...Object.values(parts).flat(), ...Object.values(arrays)]) t.dispose();
      // Unreadable images, left out of the batches, count as done with their shard.
      imagesBefore += shardItems(k);
      bar?.update(imagesBefore);
    }
  } finally {
    bar?.stop();
  }

  // Rank 0 lists every shard once all are written, and the items missing from them (unreadable images).
  if (distributed) dist.barrier();
  const shards: LatentIndex['shards'] = [];
  const skipped: string[] = [];
  for (let k = 0; k < numShards; k++) {
    const path = join(out, shardName(k));
    const start = k * shardSize;
    const end = Math.min(dataset.length, start + shardSize);
    const stored = shardIndices(path);
    shards.push({ file: shardName(k), start, count: stored.size });
    for (let i = start; i < end; i++) if (!stored.has(i)) skipped.push('path' in dataset ? dataset.path(i) : `item ${i}`);
  }
  const index: LatentIndex = { format: 'reals-latents', version: 1, vaePath: options.vaePath, vae: vaeRecord, settings, complete: true, shards, skipped, classNames };
  if (rank === 0) {
    writeJsonFileAtomic(indexPath, index);
    log(`cached ${dataset.length - skipped.length} of ${dataset.length} images in ${out}` +
      (skipped.length > 0 ? `; ${skipped.length} unreadable, skipped (listed in ${LATENT_INDEX})` : ''));
  }
  if (distributed) dist.barrier();
  return { index, encoded: todo.length, reused: mine.length - todo.length };
}

/** The dataset indices a written shard holds. */
function shardIndices(path: string): Set<number> {
  if (!existsSync(path)) throw new Error(`cacheLatents: ${path} is missing after every rank finished`);
  const file = openShard(path);
  try {
    const indices = file.get('indices');
    const values = indices.toArray() as BigInt64Array;
    indices.dispose();
    return new Set(Array.from(values, Number));
  } finally {
    file.close();
  }
}

function openShard(path: string): NpzFile {
  try {
    return NpzFile.open(path);
  } catch (error) {
    throw new Error(`latent cache shard ${path} is unreadable (torn or truncated?): ${(error as Error).message}`, { cause: error });
  }
}

function parseIndex(path: string): LatentIndex {
  const parsed = indexSchema.safeParse(readJsonFile(path));
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new Error(`${path}: not a latent cache index (${issue.path.join('.')}: ${issue.message})`);
  }
  return parsed.data;
}

/**
 * A cache folder, checked whole when opened: every shard listed must open as a complete .npz
 * whose arrays hold the listed number of rows of the listed latent shape and match their CRC-32,
 * so a torn, missing or corrupt shard is an error before any training step (training then reads
 * single rows in place, which no checksum covers).
 */
export class LatentCache {
  readonly index: LatentIndex;
  private readonly files: NpzFile[] = [];
  /** Item i is row rows[i] of shard shardOf[i]. */
  private readonly shardOf: Int32Array;
  private readonly rows: Int32Array;
  private readonly labelOf: Int32Array;

  private constructor(readonly dir: string) {
    const indexPath = join(dir, LATENT_INDEX);
    if (!existsSync(indexPath)) throw new Error(`--latents-path ${dir}: no ${LATENT_INDEX} (write the cache with \`reals cache-latents\`)`);
    this.index = parseIndex(indexPath);
    if (!this.index.complete) throw new Error(`--latents-path ${dir}: the cache is incomplete (its cache-latents run did not finish); rerun it to complete the cache`);
    const { latentShape, flip } = this.index.settings;
    const total = this.index.shards.reduce((n, s) => n + s.count, 0);
    this.shardOf = new Int32Array(total);
    this.rows = new Int32Array(total);
    this.labelOf = new Int32Array(total);
    let item = 0;
    try {
      for (const [k, shard] of this.index.shards.entries()) {
        const path = join(dir, shard.file);
        const file = openShard(path);
        this.files.push(file);
        const names = ['mean', 'std', 'labels', ...(flip ? ['mean_flip', 'std_flip'] : [])];
        for (const name of names) {
          if (!file.has(name)) throw new Error(`--latents-path ${dir}: shard ${shard.file} has no '${name}' array (arrays: ${file.keys().join(', ')})`);
          const shape = file.header(name).shape;
          const expected = name === 'labels' ? [shard.count] : [shard.count, ...latentShape];
          if (shape.join() !== expected.join()) {
            throw new Error(`--latents-path ${dir}: shard ${shard.file} '${name}' is [${shape}], the index says [${expected}]`);
          }
          try {
            file.verify(name);
          } catch (error) {
            throw new Error(`--latents-path ${dir}: shard ${shard.file} is corrupt (${(error as Error).message}); delete it and rerun cache-latents to encode it again`, { cause: error });
          }
        }
        const labels = file.get('labels');
        const values = labels.toArray() as BigInt64Array;
        labels.dispose();
        for (let r = 0; r < shard.count; r++, item++) {
          this.shardOf[item] = k;
          this.rows[item] = r;
          this.labelOf[item] = Number(values[r]);
        }
      }
    } catch (error) {
      this.close();
      throw error;
    }
  }

  static open(dir: string): LatentCache { return new LatentCache(dir); }

  get length(): number { return this.rows.length; }
  get latentShape(): number[] { return [...this.index.settings.latentShape]; }
  get normalization(): LatentNormalization { return this.index.settings.normalization; }

  /** The VAE the latents came from, or null where the cache does not record it. */
  get vae(): VaeIdentity | null { return this.index.vae ?? null; }
  /** One more than the largest label. */
  get numClasses(): number { return this.labelOf.reduce((m, l) => Math.max(m, l + 1), 0); }

  /** The class names the cache recorded, in label order, or null (caches made before they were). */
  get classNames(): string[] | null { return this.index.classNames ?? null; }

  label(item: number): number { return this.labelOf[item]!; }

  /** The posterior of item `item` (of its mirror image with `flipped`): mean and std, [1, C, h, w] each. */
  posterior(item: number, flipped = false): { mean: Tensor; std: Tensor } {
    if (!(Number.isInteger(item) && item >= 0 && item < this.length)) throw new RangeError(`LatentCache(${this.dir}): item ${item} is outside [0, ${this.length})`);
    if (flipped && !this.index.settings.flip) throw new Error(`LatentCache(${this.dir}): the cache holds no mirror images (cache-latents without --flip)`);
    const file = this.files[this.shardOf[item]!]!;
    const suffix = flipped ? '_flip' : '';
    return { mean: file.readRows(`mean${suffix}`, this.rows[item]!, 1), std: file.readRows(`std${suffix}`, this.rows[item]!, 1) };
  }

  close(): void {
    for (const file of this.files.splice(0)) file.close();
  }
}

// --- batch sources for the trainer ---------------------------------------------------------------

/**
 * Normalized latents and their labels, one batch of one rank, and the batch's number in its epoch
 * (counting any batch the source left out): the trainer saves batchIndex + 1 as where to resume.
 */
export interface LatentBatch { latents: Tensor; labels: Tensor; batchIndex: number }

/** One rank's batches, epoch by epoch, as the generator trainer reads them. */
export interface LatentSource {
  /** Items per batch on this rank. */
  readonly batchSize: number;
  /** Batches per epoch on this rank. */
  readonly length: number;
  /** Latent [C, h, w]. */
  readonly latentShape: readonly number[];
  readonly normalization: LatentNormalization;
  /** The batches of `epoch` from batch `startBatch` on, as an uninterrupted run reads them there. */
  iterate(epoch: number, startBatch: number): AsyncIterable<LatentBatch>;
  close(): Promise<void>;
}

export interface CachedLatentsOptions {
  batchSize: number;
  seed?: number;
  rank?: number;
  worldSize?: number;
  /** Read each item's mirror image with probability 1/2 when the cache holds them (default true). */
  randomFlip?: boolean;
}

/**
 * Batches of a latent cache: each rank reads its DistributedSampler shard of a seeded permutation
 * in full batches (the tail is dropped, as train.py's drop_last=True), takes each item or its
 * mirror image by a coin toss of (seed, epoch, item), and draws z = mean + std * noise from the
 * CPU generator, so that a resumed run (which restores it) draws the same latents.
 */
export class CachedLatents implements LatentSource {
  readonly batchSize: number;
  readonly sampler: DistributedSampler;
  private readonly randomFlip: boolean;

  constructor(readonly cache: LatentCache, options: CachedLatentsOptions) {
    this.batchSize = options.batchSize;
    this.sampler = new DistributedSampler(cache.length, { seed: options.seed ?? 0, rank: options.rank, worldSize: options.worldSize, dropLast: false });
    this.randomFlip = (options.randomFlip ?? true) && cache.index.settings.flip;
  }

  get length(): number { return Math.floor(this.sampler.numSamples / this.batchSize); }
  get latentShape(): number[] { return this.cache.latentShape; }
  get normalization(): LatentNormalization { return this.cache.normalization; }

  async *iterate(epoch: number, startBatch: number): AsyncGenerator<LatentBatch> {
    const indices = this.sampler.indices(epoch);
    for (let b = startBatch; b < this.length; b++) {
      const items = indices.slice(b * this.batchSize, (b + 1) * this.batchSize);
      yield torch.scope(() => {
        const posteriors = items.map((i) => this.cache.posterior(i, this.randomFlip && flipFor(this.sampler.seed, epoch, i)));
        const mean = torch.cat(posteriors.map((p) => p.mean));
        const std = torch.cat(posteriors.map((p) => p.std));
        const latents = normalizeLatents(mean.add(std.mul(torch.randnLike(mean))), this.cache.normalization);
        return { latents, labels: torch.tensor(BigInt64Array.from(items, (i) => BigInt(this.cache.label(i)))), batchIndex: b };
      });
    }
  }

  async close(): Promise<void> { this.cache.close(); }
}

/**
 * Batches of images encoded on the fly, as SiT's train.py: z = vae.encode(x).sample(), normalized.
 * The loader should drop nothing: the last, smaller batch of an epoch is skipped here instead.
 */
export class EncodedImages implements LatentSource {
  readonly latentShape: number[];
  /** The encoder's precision ('auto' resolved): bf16 runs it under bfloat16 autocast; the latents come out float32. */
  readonly precision: torch.ResolvedPrecision;

  constructor(
    readonly loader: DataLoader,
    readonly vae: AutoencoderKL,
    readonly normalization: LatentNormalization,
    readonly device: torch.Device = 'cpu',
    precision: torch.Precision = 'fp32',
  ) {
    this.precision = torch.usePrecision(precision, device);
    const [, h, w] = imageShapeOf(loader.dataset);
    const factor = vae.downsamplingFactor;
    this.latentShape = [vae.config.latentChannels, h / factor, w / factor];
    vae.to(device).eval().requiresGrad_(false);
  }

  get batchSize(): number { return this.loader.batchSize; }
  get length(): number { return Math.floor(this.loader.sampler.numSamples / this.loader.batchSize); }

  async *iterate(epoch: number, startBatch: number): AsyncGenerator<LatentBatch> {
    for await (const { images, labels, batchIndex } of this.loader.iterate(epoch, startBatch)) {
      // By position: the loader's last, smaller batch (a batch it left out shifts no other).
      if (batchIndex >= this.length) {
        images.dispose();
        labels.dispose();
        break;
      }
      yield torch.noGrad(() => torch.scope(() => {
        const latents = normalizeLatents(encodePosterior(this.vae, images.to(this.device), this.precision).sample(), this.normalization);
        images.dispose();
        return { latents, labels, batchIndex };
      }));
    }
  }

  async close(): Promise<void> { await this.loader.close(); }
}
