// A DataLoader in torch's sense over DistributedSampler: each rank reads its shard of a seeded,
// epoch-dependent permutation in batches. Image files are decoded, ADM center-cropped, flipped and
// scaled in worker threads straight into a shared batch buffer, `prefetch` batches ahead, so the
// training step (on the main thread) finds the next batch ready. Unreadable files are skipped and
// counted, with one warning per epoch that names a few; a folder where most files cannot be read
// stops the run with one error instead of training on what is left.
import { Worker } from 'node:worker_threads';
import { dirname, sep } from 'node:path';
import { performance } from 'node:perf_hooks';
import * as torch from '../torch/index.js';
import { hflip, loadImageInto, writeNormalized } from './image.js';
import type { RawImage } from './resample.js';
import { DistributedSampler } from './sampler.js';
import type { DecodeResult, DecodeTask } from './decode-worker.js';

/** Items decoded from image files (ADM center crop to `resolution`), in worker threads. */
export interface ImageFileDataset {
  readonly length: number;
  readonly resolution: number;
  path(index: number): string;
  label(index: number): number;
}

/** Items already in memory as 8-bit HWC images of `itemShape` = [channels, height, width]. */
export interface InMemoryDataset {
  readonly length: number;
  readonly itemShape: readonly [number, number, number];
  image(index: number): RawImage;
  label(index: number): number;
}

export type Dataset = ImageFileDataset | InMemoryDataset;

export interface DataLoaderOptions {
  /** Items per batch on this rank. */
  batchSize: number;
  /** Permute each epoch with seed + epoch (default true). */
  shuffle?: boolean;
  seed?: number;
  /** This process's rank and the number of ranks (default 0 of 1): DistributedSampler's sharding. */
  rank?: number;
  worldSize?: number;
  /** DistributedSampler's drop_last: drop the uneven tail instead of repeating items (default false). */
  dropLast?: boolean;
  /** Mirror each item left-right with probability 1/2, decided by (seed, epoch, index) (default true). */
  randomFlip?: boolean;
  /** Decoding threads for image files; 0 decodes on the calling thread (default: torch.cpuBudget.cpus - 1, 1 to 8). */
  numWorkers?: number;
  /** Batches decoded ahead of the one being consumed (default 2). */
  prefetch?: number;
}

export interface Batch {
  /** [B, C, H, W] float32 in [-1, 1]. */
  images: torch.Tensor;
  /** [B] int64. */
  labels: torch.Tensor;
  /** The dataset index of each item. */
  indices: number[];
  /**
   * The batch's number in its epoch, counting the batches left out: resuming at batchIndex + 1
   * reads what an uninterrupted run reads next.
   */
  batchIndex: number;
}

/** Time spent, in milliseconds: the consumer waiting for batches, and decoding (summed over workers). */
export interface LoaderStats { batches: number; waitMs: number; decodeMs: number }

function isFileDataset(dataset: Dataset): dataset is ImageFileDataset {
  return 'path' in dataset;
}

// murmur3's 32-bit finalizer: a fixed, well-mixed function of its input.
function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/** Whether item `index` is mirrored in `epoch`: a coin toss that depends on nothing else, so resuming and sharding keep it. */
export function flipFor(seed: number, epoch: number, index: number): boolean {
  return fmix32(fmix32(fmix32(seed) ^ epoch) ^ index) >= 0x80000000;
}

/** The share of unreadable files checked once this many files were read (or the first epoch ended with fewer). */
const SKIP_CHECK_FILES = 64;
/** Examples named in the epoch's warning and in the error. */
const SKIP_EXAMPLES = 3;

/** The deepest folder that holds every one of `paths`. */
function commonFolder(paths: readonly string[]): string {
  let common = dirname(paths[0]!).split(sep);
  for (const path of paths) {
    const parts = dirname(path).split(sep);
    let shared = 0;
    while (shared < common.length && common[shared] === parts[shared]) shared++;
    common = common.slice(0, shared);
  }
  return common.join(sep) || sep;
}

export class DataLoader implements AsyncIterable<Batch> {
  readonly sampler: DistributedSampler;
  readonly batchSize: number;
  readonly randomFlip: boolean;
  readonly numWorkers: number;
  readonly prefetch: number;
  /** Files that could not be decoded so far, and how many. */
  readonly skippedFiles: string[] = [];
  readonly stats: LoaderStats = { batches: 0, waitMs: 0, decodeMs: 0 };
  /** Image files whose decoding was tried, and whether their share of failures was checked yet. */
  private filesRead = 0;
  private skipShareChecked = false;
  /** The reasons of the files skipped in the epoch being read, for its one warning. */
  private epochSkips: string[] = [];
  private readonly itemShape: readonly [number, number, number];
  private epoch = 0;
  private pool: DecodePool | null = null;
  private readonly freeBuffers: SharedArrayBuffer[] = [];

  constructor(readonly dataset: Dataset, options: DataLoaderOptions) {
    if (!Number.isInteger(options.batchSize) || options.batchSize < 1) throw new RangeError(`DataLoader: batchSize ${options.batchSize} must be a positive integer`);
    this.batchSize = options.batchSize;
    this.sampler = new DistributedSampler(dataset.length, options);
    this.randomFlip = options.randomFlip ?? true;
    this.numWorkers = isFileDataset(dataset) ? options.numWorkers ?? Math.min(8, Math.max(1, torch.cpuBudget.cpus - 1)) : 0;
    this.prefetch = Math.max(1, options.prefetch ?? 2);
    this.itemShape = isFileDataset(dataset) ? [3, dataset.resolution, dataset.resolution] : dataset.itemShape;
  }

  get skipped(): number { return this.skippedFiles.length; }

  /** Batches per epoch on this rank (the last may be smaller). */
  get length(): number { return Math.ceil(this.sampler.numSamples / this.batchSize); }

  /** As DistributedSampler.set_epoch: the epoch the next plain iteration reads. */
  setEpoch(epoch: number): void { this.epoch = epoch; }

  [Symbol.asyncIterator](): AsyncGenerator<Batch> { return this.iterate(this.epoch); }

  /**
   * The batches of `epoch` from batch `startBatch` on: resuming at (epoch, startBatch) yields the
   * same batches as the uninterrupted epoch did from there. A batch whose every file is unreadable
   * is left out.
   */
  async *iterate(epoch: number, startBatch = 0): AsyncGenerator<Batch> {
    const indices = this.sampler.indices(epoch);
    const batches: number[][] = [];
    for (let i = startBatch * this.batchSize; i < indices.length; i += this.batchSize) batches.push(indices.slice(i, i + this.batchSize));
    const pending: Promise<Batch | null>[] = [];
    let next = 0;
    const fill = (): void => {
      while (next < batches.length && pending.length < this.prefetch) {
        pending.push(this.load(epoch, batches[next]!, startBatch + next));
        next++;
      }
    };
    this.epochSkips = [];
    let yielded = 0;
    try {
      fill();
      while (pending.length > 0) {
        const start = performance.now();
        const batch = await pending.shift()!;
        this.stats.waitMs += performance.now() - start;
        if (this.filesRead >= SKIP_CHECK_FILES) this.checkSkipShare();
        fill();
        if (batch !== null) {
          this.stats.batches++;
          yielded++;
          yield batch;
        }
      }
      if (this.filesRead > 0) this.checkSkipShare();
      // Later epochs too: a folder that became unreadable (unmounted, deleted) would otherwise
      // give empty epochs one after another, and a trainer waiting for a step would never get one.
      if (startBatch === 0 && batches.length > 0 && yielded === 0) {
        throw new Error(`DataLoader: no image file of epoch ${epoch} in ${commonFolder(this.skippedFiles)} could be read; e.g. ${this.epochSkips.slice(0, SKIP_EXAMPLES).join('; ')}`);
      }
      if (this.epochSkips.length > 0) {
        process.emitWarning(`DataLoader: skipped ${this.epochSkips.length} unreadable image files in epoch ${epoch} (${this.skipped} in all), e.g. ${this.epochSkips.slice(0, SKIP_EXAMPLES).join('; ')}`, { code: 'REALS_UNREADABLE_IMAGE' });
      }
    } finally {
      // Stopped early: let the workers finish writing before their buffers are reused.
      await Promise.allSettled(pending);
    }
  }

  /**
   * Once, over the first files read: more than half unreadable is a folder that is not what it
   * should be (wrong files, FIFOs, devices, a failing disk), not a few bad images to step over.
   */
  private checkSkipShare(): void {
    if (this.skipShareChecked) return;
    this.skipShareChecked = true;
    if (2 * this.skipped <= this.filesRead) return;
    throw new Error(`DataLoader: ${this.skipped} of the first ${this.filesRead} image files in ${commonFolder(this.skippedFiles)} could not be read, more than half; ` +
      `e.g. ${this.epochSkips.slice(0, SKIP_EXAMPLES).join('; ')}`);
  }

  /** Stops the worker threads; a later iteration starts new ones. */
  /**
   * The first `count` images of epoch 0 (all of them when the data holds fewer), batch by batch,
   * the last batch cut to what is still wanted: `visit` gets each batch's images and labels, which
   * are disposed once it returns. Closes the loader; returns how many images were visited.
   */
  async visitFirst(count: number, visit: (images: torch.Tensor, labels: torch.Tensor) => void | Promise<void>): Promise<number> {
    let n = 0;
    try {
      for await (const batch of this.iterate(0)) {
        const take = Math.min(batch.images.size(0), count - n);
        const [images, labels] = [batch.images.slice(0, 0, take), batch.labels.slice(0, 0, take)];
        try {
          await visit(images, labels);
        } finally {
          for (const t of [images, labels, batch.images, batch.labels]) t.dispose();
        }
        n += take;
        if (n >= count) break;
      }
    } finally {
      await this.close();
    }
    return n;
  }

  async close(): Promise<void> {
    const pool = this.pool;
    this.pool = null;
    await pool?.close();
  }

  private async load(epoch: number, indices: number[], batchIndex: number): Promise<Batch | null> {
    const [c, h, w] = this.itemShape;
    const itemSize = c * h * w;
    const flips = indices.map((index) => this.randomFlip && flipFor(this.sampler.seed, epoch, index));
    const buffer = this.freeBuffers.pop() ?? new SharedArrayBuffer(this.batchSize * itemSize * 4);
    const out = new Float32Array(buffer);
    const dataset = this.dataset;
    let ok = indices.map(() => true);
    if (isFileDataset(dataset)) {
      ok = await Promise.all(indices.map((index, i) => this.decode(dataset, index, flips[i]!, buffer, i * itemSize)));
    } else {
      indices.forEach((index, i) => {
        const image = dataset.image(index);
        writeNormalized(flips[i] ? hflip(image) : image, out, i * itemSize);
      });
    }
    // Items that decoded move up over the skipped ones.
    const kept: number[] = [];
    indices.forEach((index, i) => {
      if (!ok[i]) return;
      if (kept.length !== i) out.copyWithin(kept.length * itemSize, i * itemSize, (i + 1) * itemSize);
      kept.push(index);
    });
    const n = kept.length;
    const images = n === 0 ? null : torch.fromArray(out.subarray(0, n * itemSize), [n, c, h, w], 'float32');
    // fromArray copied the pixels. (A batch whose decoding threw keeps its buffer out of reuse:
    // workers may still be writing to it.)
    this.freeBuffers.push(buffer);
    if (images === null) return null;
    const labels = torch.tensor(BigInt64Array.from(kept, (index) => BigInt(dataset.label(index))));
    return { images, labels, indices: kept, batchIndex };
  }

  /** Decodes one file into the batch buffer; false (the file and the reason recorded) when it cannot be read. */
  private async decode(dataset: ImageFileDataset, index: number, flip: boolean, buffer: SharedArrayBuffer, offset: number): Promise<boolean> {
    const path = dataset.path(index);
    let error: string | null;
    if (this.numWorkers === 0) {
      const start = performance.now();
      error = await loadImageInto(path, dataset.resolution, flip, new Float32Array(buffer), offset).then(() => null, (e: Error) => e.message);
      this.stats.decodeMs += performance.now() - start;
    } else {
      this.pool ??= new DecodePool(this.numWorkers);
      const result = await this.pool.run({ path, resolution: dataset.resolution, flip, buffer, offset });
      this.stats.decodeMs += result.ms;
      error = result.error;
    }
    this.filesRead++;
    if (error === null) return true;
    this.skippedFiles.push(path);
    this.epochSkips.push(error);
    return false;
  }
}

/**
 * A decode worker: compiled (dist/, an installed package) the JavaScript file; from the TypeScript
 * sources through tsx's tsImport, which works whether or not this process was started with
 * `--import tsx`.
 */
function startDecodeWorker(): Worker {
  if (import.meta.url.endsWith('.js')) return new Worker(new URL('./decode-worker.js', import.meta.url));
  const source = `import(${JSON.stringify(import.meta.resolve('tsx/esm/api'))})
    .then((tsx) => tsx.tsImport(${JSON.stringify(new URL('./decode-worker.ts', import.meta.url).href)}, ${JSON.stringify(import.meta.url)}));`;
  return new Worker(source, { eval: true });
}

/** Worker threads that each take tasks as they come, the least busy first. */
class DecodePool {
  private readonly workers: Worker[] = [];
  private readonly busy: number[] = [];
  private readonly waiting = new Map<number, { worker: number; resolve: (r: DecodeResult) => void; reject: (e: Error) => void }>();
  private nextId = 0;
  private failure: Error | null = null;

  constructor(size: number) {
    for (let w = 0; w < size; w++) {
      const worker = startDecodeWorker();
      worker.unref();
      worker.on('message', (result: DecodeResult) => this.settle(result));
      worker.on('error', (error) => this.fail(w, error));
      worker.on('exit', (code) => this.fail(w, new Error(`decode worker ${w} exited with code ${code}`)));
      this.workers.push(worker);
      this.busy.push(0);
    }
  }

  run(task: Omit<DecodeTask, 'id'>): Promise<DecodeResult> {
    if (this.failure !== null) return Promise.reject(this.failure);
    let w = 0;
    for (let i = 1; i < this.workers.length; i++) if (this.busy[i]! < this.busy[w]!) w = i;
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { worker: w, resolve, reject });
      // A worker keeps the process alive only while it has work.
      if (this.busy[w]!++ === 0) this.workers[w]!.ref();
      this.workers[w]!.postMessage({ ...task, id } satisfies DecodeTask);
    });
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((worker) => worker.terminate()));
  }

  private settle(result: DecodeResult): void {
    const entry = this.waiting.get(result.id);
    if (entry === undefined) return;
    this.waiting.delete(result.id);
    if (--this.busy[entry.worker]! === 0) this.workers[entry.worker]!.unref();
    entry.resolve(result);
  }

  private fail(worker: number, error: Error): void {
    this.failure ??= error;
    for (const [id, entry] of this.waiting) {
      if (entry.worker !== worker) continue;
      this.waiting.delete(id);
      entry.reject(error);
    }
  }
}
