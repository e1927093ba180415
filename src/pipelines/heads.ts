// The pipelines behind `reals segment`, `reals depth`, `reals heads compare` and `reals heads
// train-linear`: DINOv2's linear heads (src/models/heads.ts) read out of latents. A latent z (an image encoded by the VAE, or a
// latent file) becomes DINOv2-like features through the alignment MLPs (`--features mlp`, ReaLS's
// claim: no DINOv2 at inference), or the decoded image goes through DINOv2 itself (`--features
// dino`) as the reference. The DINOv2 route takes the blocks the released heads were trained on
// (segmentation: the last 1 or 4 blocks after the final norm; depth: the last block, or the hub's
// four, without the norm). The MLPs predict normalized last-block tokens, which is what the
// segmentation heads read; the depth heads read un-normalized tokens, so their MLP route is an
// approximation (heads fitted on MLP features by train-linear have no such gap). The feature
// sources, head checkpoints and inputs are ./readout.ts.
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { basename, extname, join } from 'node:path';
import sharp from 'sharp';
import * as torch from '../torch/index.js';
import type { Tensor } from '../torch/index.js';
import { saveNpy, makeDirs } from '../io/index.js';
import { AutoencoderKL } from '../models/autoencoder-kl.js';
import {
  LinearSegmentationHead, colorizeDepth, colorizeLabels, depthMap, depthRmse, fitSegmentationHead, saveHead, segmentationLogits, segmentationScores, type LayerFeatures, type LinearDepthHead,
} from '../models/heads.js';
import { FASHION_MNIST_CLASSES, FashionMNIST, IMAGE_EXTENSIONS, loadImageInto, writeNormalized } from '../data/index.js';
import { encodePng, makeGrid } from '../runlog/images.js';
import { withDefaults } from '../runlog/process.js';
import { encodePosterior } from '../data/latents.js';
import {
  type FeatureSource, latentSource, type DinoSourceSettings, DINO_SOURCE_DEFAULTS, DEVICE, layersIn, decodeIn, featureSource, type HeadFlags, loadHead, collectItems, encodeItems, toUint8,
} from './readout.js';

const F = torch.nnFunctional;

// --- reals segment / reals depth ---------------------------------------------------------------------------

export interface DenseSettings extends DinoSourceSettings {
  features: 'mlp' | 'dino';
  /** ADM center crop of input images. */
  imageSize: number;
  /** Images per batch. */
  batchSize: number;
  /** Also write the arrays (.npy: labels int64, depth float32 metres). */
  raw: boolean;
  /** Latent files hold diffusion-normalized latents (mean_std.json / scaling factor of the VAE folder). */
  latentsNormalized: boolean;
}

export const DENSE_RUN_DEFAULTS: DenseSettings = { ...DINO_SOURCE_DEFAULTS, features: 'mlp', imageSize: 256, batchSize: 8, raw: false, latentsNormalized: false };

/** `reals segment` / `reals depth`'s inputs and flags, camelCased; the ones left out take DENSE_RUN_DEFAULTS. */
export interface DenseOptions extends Partial<DenseSettings>, HeadFlags {
  /** Images, folders of images, or latent files (.npz / .safetensors). */
  inputs: string[];
  vaePath: string;
  segHead?: string;
  depthHead?: string;
  /** The output folder. */
  out: string;
  alignCkpt?: string;
  dinoCkpt?: string;
  /** The array of a latent file to read. */
  latentsKey?: string;
  log?: (line: string) => void;
}

export interface DenseResult { images: number; files: string[] }

/** Inputs side by side in grid.png: as many as make it near square, each `panels` square cells wide (50 inputs of 2 panels: 5 a row, 10 rows). */
export function gridInputsPerRow(inputs: number, panels: number): number {
  return Math.max(1, Math.ceil(Math.sqrt(inputs / panels)));
}

const GRID_INPUTS = 64;

/**
 * Per input: `<name>_mask.png` (palette colours) and/or `<name>_depth.png` (Turbo), with --raw
 * `<name>_labels.npy` (int64 [H, W]) and `<name>_depth.npy` (float32 [H, W], metres); and one
 * `grid.png` of the first GRID_INPUTS inputs, each as decoded image | mask | depth side by side,
 * gridInputsPerRow of them to a row.
 */
export async function runDense(denseOptions: DenseOptions): Promise<DenseResult> {
  const options = { ...denseOptions, ...withDefaults(DENSE_RUN_DEFAULTS, denseOptions) };
  if (options.segHead === undefined && options.depthHead === undefined) throw new Error('give a segmentation head, a depth head, or both');
  const vae = AutoencoderKL.fromPretrained(options.vaePath).eval();
  const source = featureSource(options);
  const seg = options.segHead === undefined ? null : loadHead(options.segHead, source, options);
  const depth = options.depthHead === undefined ? null : loadHead(options.depthHead, source, options);
  if (seg !== null && !(seg.head instanceof LinearSegmentationHead)) throw new Error(`${options.segHead}: a depth head, not a segmentation head`);
  if (depth !== null && depth.head instanceof LinearSegmentationHead) throw new Error(`${options.depthHead}: a segmentation head, not a depth head`);
  const items = collectItems(options.inputs, vae.config.latentChannels, options.latentsKey);
  const precision = torch.usePrecision(options.precision, DEVICE);
  makeDirs(options.out, '--out');
  const files: string[] = [];
  const cells: Tensor[] = [];
  const write = async (file: string, image: Tensor): Promise<void> => {
    const path = join(options.out, file);
    writeFileSync(path, await encodePng(image));
    files.push(path);
  };
  for (let start = 0; start < items.length; start += options.batchSize) {
    const batch = items.slice(start, start + options.batchSize);
    const z = await encodeItems(vae, batch, options.imageSize, options.latentsNormalized, precision);
    const { decoded, labels, depths } = torch.noGrad(() => torch.scope(() => {
      const decodedImages = decodeIn(precision, vae, z);
      const size: [number, number] = [decodedImages.size(2), decodedImages.size(3)];
      return {
        decoded: toUint8(decodedImages),
        labels: seg === null ? null : segmentationLogits(seg.head as LinearSegmentationHead, layersIn(precision, source, z, decodedImages, seg.head), size).argmax(1),
        depths: depth === null ? null : depthMap(depth.head as LinearDepthHead, layersIn(precision, source, z, decodedImages, depth.head), size).squeeze(1),
      };
    }));
    for (let i = 0; i < batch.length; i++) {
      const name = batch[i]!.name;
      const row: Tensor[] = [decoded.index(i)];
      if (labels !== null) {
        const mask = colorizeLabels(labels.index(i), seg!.palette);
        await write(`${name}_mask.png`, mask);
        row.push(mask.permute(2, 0, 1));
        if (options.raw) saveNpy(join(options.out, `${name}_labels.npy`), labels.index(i).contiguous());
      }
      if (depths !== null) {
        const { minDepth, maxDepth } = (depth!.head as LinearDepthHead).config;
        const picture = colorizeDepth(depths.index(i), [minDepth, maxDepth]);
        await write(`${name}_depth.png`, picture);
        row.push(picture.permute(2, 0, 1));
        if (options.raw) saveNpy(join(options.out, `${name}_depth.npy`), depths.index(i).contiguous());
      }
      if (start + i < GRID_INPUTS) cells.push(...row);
    }
    (options.log ?? console.log)(`${Math.min(start + options.batchSize, items.length)}/${items.length} images`);
  }
  const panels = 1 + (seg === null ? 0 : 1) + (depth === null ? 0 : 1);
  await write('grid.png', makeGrid(torch.stack(cells), { nrow: panels * gridInputsPerRow(cells.length / panels, panels) }));
  return { images: items.length, files };
}

// --- reals heads compare ------------------------------------------------------------------------------------

export interface CompareSettings extends DinoSourceSettings {
  /** ADM center crop of input images. */
  imageSize: number;
  /** Images per batch. */
  batchSize: number;
}

export const COMPARE_RUN_DEFAULTS: CompareSettings = { ...DINO_SOURCE_DEFAULTS, imageSize: 256, batchSize: 8 };

/** `reals heads compare`'s inputs and flags, camelCased. */
export interface CompareOptions extends Partial<CompareSettings>, HeadFlags {
  /** Images or folders of images. */
  inputs: string[];
  vaePath: string;
  segHead?: string;
  depthHead?: string;
  alignCkpt?: string;
  dinoCkpt?: string;
}

export interface CompareResult {
  images: number;
  /** The MLP route's labels scored against the DINOv2 route's. */
  segmentation?: { mIoU: number; pixelAgreement: number };
  /** RMSE between the two routes' depth maps (metres). */
  depth?: { rmse: number };
}

/** The same heads on the alignment MLPs' features of z and on DINOv2's features of the decoded image. */
export async function runCompare(compareOptions: CompareOptions): Promise<CompareResult> {
  const options = { ...compareOptions, ...withDefaults(COMPARE_RUN_DEFAULTS, compareOptions) };
  if (options.segHead === undefined && options.depthHead === undefined) throw new Error('give a segmentation head, a depth head, or both');
  const vae = AutoencoderKL.fromPretrained(options.vaePath).eval();
  const mlp = featureSource({ ...options, features: 'mlp' });
  const dino = featureSource({ ...options, features: 'dino' });
  if (mlp.featureDim !== dino.featureDim) {
    throw new Error(`the alignment MLPs output ${mlp.featureDim}-wide features, DINOv2 (--dino-model ${options.dinoModel}) ${dino.featureDim}-wide ones`);
  }
  const heads = ([['segmentation', options.segHead], ['depth', options.depthHead]] as const)
    .filter((entry): entry is readonly ['segmentation' | 'depth', string] => entry[1] !== undefined)
    .map(([task, path]) => ({ task, head: loadHead(path, mlp, options).head, path }));
  for (const { task, head, path } of heads) {
    if ((task === 'segmentation') !== head instanceof LinearSegmentationHead) throw new Error(`${path}: not a ${task} head`);
  }
  const items = collectItems(options.inputs, vae.config.latentChannels);
  const precision = torch.usePrecision(options.precision, DEVICE);
  const outputs = new Map<string, { mlp: Tensor[]; dino: Tensor[] }>(heads.map(({ task }) => [task, { mlp: [], dino: [] }]));
  for (let start = 0; start < items.length; start += options.batchSize) {
    const z = await encodeItems(vae, items.slice(start, start + options.batchSize), options.imageSize, false, precision);
    torch.noGrad(() => {
      const decoded = decodeIn(precision, vae, z);
      const size: [number, number] = [decoded.size(2), decoded.size(3)];
      for (const { task, head } of heads) {
        const run = (source: FeatureSource): Tensor => (head instanceof LinearSegmentationHead
          ? segmentationLogits(head, layersIn(precision, source, z, decoded, head), size).argmax(1)
          : depthMap(head, layersIn(precision, source, z, decoded, head), size));
        const o = outputs.get(task)!;
        o.mlp.push(run(mlp));
        o.dino.push(run(dino));
      }
    });
  }
  const result: CompareResult = { images: items.length };
  for (const { task, head } of heads) {
    const o = outputs.get(task)!;
    if (head instanceof LinearSegmentationHead) {
      const scores = segmentationScores(torch.cat(o.mlp), torch.cat(o.dino), head.config.numClasses, -1);
      result.segmentation = { mIoU: scores.mIoU, pixelAgreement: scores.pixelAccuracy };
    } else {
      result.depth = { rmse: depthRmse(torch.cat(o.mlp), torch.cat(o.dino)) };
    }
  }
  return result;
}

// --- reals heads train-linear ---------------------------------------------------------------------------------

export interface TrainLinearSettings extends DinoSourceSettings {
  features: 'mlp' | 'dino' | 'latent';
  /** ADM center crop of folder images. */
  imageSize: number;
  /** Images to use. */
  maxImages: number;
  /** Fraction held out for scoring. */
  holdout: number;
  /** Optimizer steps. */
  steps: number;
  /** Images per step. */
  batchSize: number;
  /** AdamW learning rate. */
  lr: number;
  /** Seeds the minibatches and the head init. */
  seed: number;
}

export const TRAIN_LINEAR_RUN_DEFAULTS: TrainLinearSettings = {
  ...DINO_SOURCE_DEFAULTS, features: 'mlp', imageSize: 256, maxImages: 2000, holdout: 0.2, steps: 500, batchSize: 32, lr: 1e-3, seed: 0,
};

/** `reals heads train-linear`'s flags, camelCased; the ones left out take TRAIN_LINEAR_RUN_DEFAULTS. */
export interface TrainLinearOptions extends Partial<TrainLinearSettings> {
  /** A folder with images/ and masks/ (same stems; masks 8-bit grey class indices, 255 ignored), or `fashion-mnist` / `fashion-mnist-test`. */
  dataPath: string;
  vaePath: string;
  /** The head (.safetensors). */
  out: string;
  alignCkpt?: string;
  dinoCkpt?: string;
  /** Default: the largest label + 1. */
  numClasses?: number;
  log?: (line: string) => void;
}

export interface TrainLinearResult { train: number; heldOut: number; mIoU: number; pixelAccuracy: number; head: string }

interface LabelledImages { images: Tensor; masks: Tensor; numClasses: number; classes: string[] | null }

/**
 * Fashion-MNIST (training or test images) with its class as the mask ("class-as-mask"): pixels
 * brighter than 25 of 255 get the image's class + 1, the rest background 0 (11 classes).
 */
function fashionMnistMasks(count: number, train: boolean): LabelledImages {
  const data = new FashionMNIST({ channels: 3, train });
  const n = Math.min(count, data.length);
  const size = data.itemShape[1];
  const pixels = new Float32Array(n * 3 * size * size);
  const masks = new BigInt64Array(n * size * size);
  for (let i = 0; i < n; i++) {
    const image = data.image(i);
    writeNormalized(image, pixels, i * 3 * size * size);
    const label = BigInt(data.label(i) + 1);
    for (let p = 0; p < size * size; p++) masks[i * size * size + p] = image.data[p * 3]! > 25 ? label : 0n;
  }
  return {
    images: torch.fromArray(pixels, [n, 3, size, size]), masks: torch.fromArray(masks, [n, size, size], 'int64'),
    numClasses: FASHION_MNIST_CLASSES.length + 1, classes: ['background', ...FASHION_MNIST_CLASSES],
  };
}

/**
 * images/<stem>.<ext> with masks/<stem>.png. Images are ADM-center-cropped; masks go through the
 * same geometry (scale the short side to `size`, central square) with nearest-neighbour sampling,
 * so labels are never blended.
 */
async function folderMasks(dir: string, size: number, count: number, numClasses?: number): Promise<LabelledImages> {
  const imageDir = join(dir, 'images');
  const maskDir = join(dir, 'masks');
  if (!existsSync(imageDir) || !existsSync(maskDir)) throw new Error(`--data-path ${dir}: expected images/ and masks/ folders in it`);
  const files = readdirSync(imageDir).filter((f) => IMAGE_EXTENSIONS.includes(extname(f).toLowerCase())).sort().slice(0, count);
  if (files.length === 0) throw new Error(`--data-path ${dir}: images/ holds no images`);
  const pixels = new Float32Array(files.length * 3 * size * size);
  const masks: Tensor[] = [];
  for (const [i, file] of files.entries()) {
    const maskPath = join(maskDir, `${basename(file, extname(file))}.png`);
    if (!existsSync(maskPath)) throw new Error(`--data-path ${dir}: ${file} has no mask ${maskPath}`);
    await loadImageInto(join(imageDir, file), size, false, pixels, i * 3 * size * size);
    const { data, info } = await sharp(maskPath).raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
    if (info.channels >= 3) {
      for (let p = 0; p < info.width * info.height; p++) {
        const at = p * info.channels;
        if (data[at] !== data[at + 1] || data[at] !== data[at + 2]) throw new Error(`${maskPath}: a colour PNG; masks are 8-bit grey class indices (255: ignore)`);
      }
    }
    const grey = Uint8Array.from({ length: info.width * info.height }, (_, p) => data[p * info.channels]!);
    const mask = torch.fromArray(grey, [1, 1, info.height, info.width], 'uint8').float();
    const scale = size / Math.min(info.width, info.height);
    const [h, w] = [Math.round(info.height * scale), Math.round(info.width * scale)];
    const resized = F.interpolate(mask, { size: [h, w], mode: 'nearest' });
    masks.push(resized.index(0, 0).slice(0, Math.floor((h - size) / 2), Math.floor((h - size) / 2) + size)
      .slice(1, Math.floor((w - size) / 2), Math.floor((w - size) / 2) + size).long());
  }
  const stacked = torch.stack(masks);
  const labelled = stacked.index(stacked.ne(255));
  const classes = numClasses ?? (labelled.numel() === 0 ? 1 : labelled.max().item() + 1);
  return { images: torch.fromArray(pixels, [files.length, 3, size, size]), masks: stacked, numClasses: classes, classes: null };
}

/** Fits a segmentation head on features of the labelled images, scores it on a held-out part, and saves it. */
export async function runTrainLinear(trainOptions: TrainLinearOptions): Promise<TrainLinearResult> {
  const options = { ...trainOptions, ...withDefaults(TRAIN_LINEAR_RUN_DEFAULTS, trainOptions) };
  torch.manualSeed(options.seed);
  const vae = AutoencoderKL.fromPretrained(options.vaePath).eval();
  const data = options.dataPath === 'fashion-mnist' || options.dataPath === 'fashion-mnist-test'
    ? fashionMnistMasks(options.maxImages, options.dataPath === 'fashion-mnist')
    : await folderMasks(options.dataPath, options.imageSize, options.maxImages, options.numClasses);
  const source = options.features === 'latent' ? latentSource(vae.config.latentChannels) : featureSource({ ...options, features: options.features });
  const n = data.images.size(0);
  const heldOut = Math.floor(n * options.holdout);
  if (heldOut < 1 || n - heldOut < 1) throw new Error(`--holdout ${options.holdout} of ${n} images leaves no training or no held-out image`);
  // A linear head on one layer with the CLS token where the source has one: what the alignment MLPs give (DINOv2's depth heads' layout).
  const head = new LinearSegmentationHead(source.clsToken
    ? { inChannels: [source.featureDim, source.featureDim], inIndex: [0, 1], clsToken: true, numClasses: data.numClasses }
    : { inChannels: [source.featureDim], inIndex: [0], clsToken: false, numClasses: data.numClasses });
  // The features in `precision`; the head is fitted on them in float32.
  const precision = torch.usePrecision(options.precision, DEVICE);
  const chunks = torch.noGrad(() => {
    const out: LayerFeatures[] = [];
    for (let start = 0; start < n; start += 64) {
      const z = encodePosterior(vae, data.images.slice(0, start, start + 64), precision).mode();
      out.push(layersIn(precision, source, z, source.readsImage ? decodeIn(precision, vae, z) : z, head)[0]!);
    }
    return out;
  });
  const layers = [{ patch: torch.cat(chunks.map((c) => c.patch)), cls: source.clsToken ? torch.cat(chunks.map((c) => c.cls!)) : null }];
  const split = (t: Tensor, from: number, to: number): Tensor => t.slice(0, from, to);
  const trainLayers = layers.map((l) => ({ patch: split(l.patch, heldOut, n), cls: l.cls === null ? null : split(l.cls, heldOut, n) }));
  const testLayers = layers.map((l) => ({ patch: split(l.patch, 0, heldOut), cls: l.cls === null ? null : split(l.cls, 0, heldOut) }));
  fitSegmentationHead(head, trainLayers, split(data.masks, heldOut, n), {
    steps: options.steps, batchSize: options.batchSize, lr: options.lr,
    onStep: (step, loss) => { if ((step + 1) % 50 === 0 || step + 1 === options.steps) (options.log ?? console.log)(`step ${step + 1}/${options.steps} loss ${loss.toFixed(4)}`); },
  });
  const size: [number, number] = [data.masks.size(1), data.masks.size(2)];
  const prediction = torch.noGrad(() => segmentationLogits(head, testLayers, size).argmax(1));
  const scores = segmentationScores(prediction, split(data.masks, 0, heldOut), data.numClasses);
  saveHead(options.out, head, data.classes === null ? {} : { CLASSES: data.classes });
  return { train: n - heldOut, heldOut, mIoU: scores.mIoU, pixelAccuracy: scores.pixelAccuracy, head: options.out };
}
