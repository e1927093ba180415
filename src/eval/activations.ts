// Inception activations of image batches, as the ADM evaluator's Evaluator.compute_activations
// (guided-diffusion evaluations/evaluator.py): batches of 64 images, pool_3 (2048-d) and the
// spatial sFID features (2023-d) per image; cached next to a reference batch so a second
// evaluation against it skips the network.
import { existsSync } from 'node:fs';
import * as torch from '../torch/index.js';
import type { Device, Tensor } from '../torch/index.js';
import { stateDictHash } from '../nn/module.js';
import { FIDInceptionV3 } from '../models/inception.js';
import { NpzFile, saveNpz } from '../io/npz.js';
import type { ImageBatches } from './batches.js';

/** ADM's Evaluator batch_size. */
export const ACTIVATION_BATCH_SIZE = 64;
/** ADM's softmax_batch_size: pool_3 rows per classifier call for the Inception Score. */
const LOGITS_BATCH_SIZE = 512;

/**
 * What the evaluation needs from a network: FIDInceptionV3 through `inceptionExtractor`, the others
 * in features.ts. Scores of two networks are never compared: reports, activation caches and
 * statistics files carry the id.
 */
export interface FeatureExtractor {
  /** Names the network and hashes its weights (`inception-<16 hex>`), for reports and cache names. */
  readonly id: string;
  /** What the network is, for reports (default: the id). */
  readonly description?: string;
  readonly device: Device;
  /**
   * Pooled features [B, P] (Inception's pool_3, DINOv2's CLS token) of uint8 images [B, 3, H, W] on
   * `device`, and spatial ones [B, S] (sFID's) when the network has them.
   */
  features(images: Tensor): { pool3: Tensor; spatial?: Tensor };
  /** Class logits [B, C] of the pooled features, whose softmax the score over classes reads; absent without a class layer (no such score). */
  logits?: (pool3: Tensor) => Tensor;
  /**
   * The report's name for the score over the logits' classes (exp E KL(p(y|x) || p(y)), ADM's
   * splits): `inceptionScore` for the FID Inception alone, `classifierScore` (the default) for any
   * other classifier, whose score is not an Inception Score.
   */
  readonly classScore?: ClassScoreKey;
}

/** The keys a report gives the score over a network's classes (FeatureExtractor.classScore). */
export type ClassScoreKey = 'inceptionScore' | 'classifierScore';

/** The FID Inception as a FeatureExtractor on `device` (the model moves there); its id hashes the weights. */
export function inceptionExtractor(model: FIDInceptionV3, device: Device = 'cpu'): FeatureExtractor {
  const id = `inception-${stateDictHash(model).slice(0, 16)}`;
  const onDevice = model.to(device).eval();
  return {
    id,
    description: 'the FID Inception (pytorch-fid\'s pt_inception-2015-12-05 weights as the ADM evaluator: pool_3, spatial mixed_6/conv, logits)',
    device,
    features: (images) => {
      const { pool3, spatial } = onDevice.forward(images);
      return { pool3, spatial };
    },
    // ADM's softmax graph multiplies pool_3 by the weight of softmax/logits/MatMul, no bias.
    logits: (pool3) => pool3.matmul(onDevice.fc.weight.t()),
    classScore: 'inceptionScore',
  };
}

/** Per-image features of a batch, float32 on the CPU, in file order; spatial null for a network without them. */
export interface Activations {
  pool3: Tensor;
  spatial: Tensor | null;
}

export interface ActivationOptions {
  batchSize?: number;
  /** Called after each batch with the images done so far and the total. */
  onProgress?: (done: number, total: number) => void;
}

/** Runs `extractor` over every image of `images`, `batchSize` at a time (ADM: 64). */
export async function computeActivations(images: ImageBatches, extractor: FeatureExtractor, options: ActivationOptions = {}): Promise<Activations> {
  const { batchSize = ACTIVATION_BATCH_SIZE, onProgress } = options;
  // The features are float32 (comparable scores), with float32's threads after a bf16 run in this process.
  torch.usePrecision('fp32', extractor.device);
  const total = images.count;
  let pool3: Tensor | undefined;
  let spatial: Tensor | undefined;
  let done = 0;
  for await (const batch of images.batches(batchSize)) {
    torch.noGrad(() => torch.scope(() => {
      const nchw = batch.to(extractor.device).permute(0, 3, 1, 2);
      const f = extractor.features(nchw);
      const n = batch.size(0);
      pool3 ??= torch.keep(torch.empty([total, f.pool3.size(1)]));
      pool3.narrow(0, done, n).copy_(f.pool3.reshape(n, -1).cpu());
      if (f.spatial !== undefined) {
        spatial ??= torch.keep(torch.empty([total, f.spatial.size(1)]));
        spatial.narrow(0, done, n).copy_(f.spatial.reshape(n, -1).cpu());
      }
      done += n;
    }));
    batch.dispose();
    onProgress?.(done, total);
  }
  if (pool3 === undefined || done !== total) throw new Error(`${images.path}: read ${done} of ${total} images`);
  return { pool3, spatial: spatial ?? null };
}

/** Class logits of pool_3 features, ADM's 512 rows at a time, float32 on the CPU. */
export function computeLogits(pool3: Tensor, extractor: FeatureExtractor): Tensor {
  const { logits } = extractor;
  if (logits === undefined) throw new Error(`${extractor.id} has no class logits (no score over classes)`);
  return torch.noGrad(() => torch.scope(() => {
    const parts: Tensor[] = [];
    for (let start = 0; start < pool3.size(0); start += LOGITS_BATCH_SIZE) {
      const rows = pool3.narrow(0, start, Math.min(LOGITS_BATCH_SIZE, pool3.size(0) - start));
      parts.push(logits(rows.to(extractor.device)).to('float32').cpu());
    }
    return torch.cat(parts);
  }));
}

/** Where the activations of the batch at `path` with content hash `sha256` by `extractor` are cached. */
export function activationCachePath(path: string, sha256: string, extractor: FeatureExtractor): string {
  return `${path.replace(/\/+$/, '')}.acts-${sha256.slice(0, 16)}-${extractor.id}.npz`;
}

/** The cache's record of what its activations were computed from: the batch's sha256 and the extractor's id, as ASCII bytes. */
const SOURCE_KEY = 'source_sha256';
/** The key of the feature network's id in activation caches and statistics files. */
export const EXTRACTOR_KEY = 'extractor_id';

export const asciiTensor = (text: string): Tensor => torch.tensor(Array.from(Buffer.from(text, 'ascii')), { dtype: 'uint8' });
export const asciiOf = (file: NpzFile, key: string): string | null =>
  file.keys().includes(key) ? Buffer.from(file.get(key).toArray() as Uint8Array).toString('ascii') : null;

/**
 * The activations of `images` (whose content hashes to `sourceSha256`) from the cache file at
 * `cachePath` when it exists, was computed from that content by that extractor (both recorded
 * inside the file) and fits the image count; else computed and written there. A cache recording
 * other inputs, or none (written before reals recorded them), is recomputed with a warning.
 */
export async function cachedActivations(
  images: ImageBatches, extractor: FeatureExtractor, cachePath: string, sourceSha256: string, options: ActivationOptions = {},
): Promise<{ activations: Activations; cached: boolean }> {
  if (existsSync(cachePath)) {
    const file = NpzFile.open(cachePath);
    try {
      const source = asciiOf(file, SOURCE_KEY);
      const computedBy = asciiOf(file, EXTRACTOR_KEY);
      if (source === sourceSha256 && computedBy === extractor.id) {
        const activations = { pool3: file.get('pool3'), spatial: file.has('spatial') ? file.get('spatial') : null };
        for (const [name, t] of Object.entries(activations)) {
          if (t === null) continue;
          if (t.dtype !== 'float32' || t.ndim !== 2 || t.size(0) !== images.count) {
            throw new Error(`${cachePath}: cached ${name} is ${t.dtype} [${t.shape}], expected float32 [${images.count}, D]; delete the file to recompute it`);
          }
        }
        return { activations, cached: true };
      }
      process.emitWarning(`${cachePath}: the activation cache was computed from ${source === null ? 'unrecorded inputs' : `sha256 ${source.slice(0, 16)}… by ${computedBy}`}, ` +
        `not from ${images.path} (sha256 ${sourceSha256.slice(0, 16)}…) by ${extractor.id}: recomputing it`);
    } finally {
      file.close();
    }
  }
  const activations = await computeActivations(images, extractor, options);
  try {
    saveNpz(cachePath, {
      pool3: activations.pool3, ...(activations.spatial === null ? {} : { spatial: activations.spatial }),
      [SOURCE_KEY]: asciiTensor(sourceSha256), [EXTRACTOR_KEY]: asciiTensor(extractor.id),
    });
  } catch (error) {
    // The activations are computed and the evaluation can go on; only the next run loses.
    process.emitWarning(`${cachePath}: cannot write the activation cache (${(error as Error).message}); evaluating without it`);
  }
  return { activations, cached: false };
}

/**
 * Inception throughput: images per second through `extractor` (default: FIDInceptionV3 with its
 * initial weights on `device`) for `batches` batches of `batchSize` random uint8 images of
 * `imageSize`² pixels, after one warm-up batch. For `npm run bench`.
 */
export function inceptionThroughput(options: { batchSize?: number; batches?: number; imageSize?: number; device?: Device; extractor?: FeatureExtractor } = {}): { imagesPerSecond: number; images: number; seconds: number } {
  const { batchSize = ACTIVATION_BATCH_SIZE, batches = 3, imageSize = 256, device = 'cpu' } = options;
  const extractor = options.extractor ?? inceptionExtractor(new FIDInceptionV3().eval().requiresGrad_(false), device);
  const run = (): void => torch.noGrad(() => torch.scope(() => {
    const images = torch.randint(0, 256, [batchSize, 3, imageSize, imageSize], { dtype: 'uint8' }).to(extractor.device);
    extractor.features(images).pool3.cpu();
  }));
  run();
  const start = process.hrtime.bigint();
  for (let i = 0; i < batches; i++) run();
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  return { imagesPerSecond: (batches * batchSize) / seconds, images: batches * batchSize, seconds };
}
