// Linear probing of a frozen DINOv2-architecture backbone, after DINOv2's linear evaluation
// (dinov2/eval/linear.py): the feature of an image is its final-norm CLS token concatenated with
// the mean of its final-norm patch tokens (create_linear_input with n_last_blocks 1 and
// avgpool), and a single Linear layer trained on training-set features is scored by its accuracy
// on test-set features. Smaller than upstream, on purpose: one classifier instead of a grid of
// learning rates, Adam for a fixed number of epochs instead of SGD for 12,500 iterations, and
// features standardized with the training set's mean and std (an affine map, so what is linearly
// separable stays so; it only makes one learning rate fit every backbone, trained or random).
import * as torch from '../torch/index.js';
import type { Tensor } from '../torch/index.js';
import * as nn from '../nn/index.js';
import * as optim from '../optim/index.js';
import { DinoVisionTransformer, preprocessImages } from '../models/dinov2.js';
import type { HogTeacher } from '../models/hog.js';
import { DataLoader, randperm, type Dataset, type ImageFileDataset, type InMemoryDataset } from '../data/index.js';

const F = nn.F;

/**
 * A frozen teacher the probe and the LDS read: a DINOv2-architecture backbone (run in eval mode), or
 * the HOG teacher on cells of `patchSize` pixels, which reads the images in [-1, 1] at their own
 * size, as `reals align train --dino-model hog` does.
 */
export type ProbedTeacher = DinoVisionTransformer | { hog: HogTeacher; patchSize: number };

export interface LinearProbeOptions {
  /** Frozen; run in eval mode without gradients. */
  backbone: ProbedTeacher;
  /** Labelled images (label i = class i); the classifier trains on these... */
  train: Dataset;
  /** ...and is scored on these. */
  test: Dataset;
  /** Images drawn (a seeded random subset) from each split (default 2000; all when larger than the split). */
  trainImages?: number;
  testImages?: number;
  /** The side images are resized to for the backbone (default the backbone's imgSize), as preprocessImages; HOG's images must have this side. */
  inputSize?: number;
  /** Passes over the training features (default 100). */
  epochs?: number;
  /** Adam learning rate (default 1e-3) and batch size (default 256). */
  lr?: number;
  batchSize?: number;
  /** Seeds the subsets, the classifier's initialisation and its batches (default 0). */
  seed?: number;
  device?: torch.Device;
}

export interface LinearProbeResult {
  /** Fraction of test images whose class the classifier predicts. */
  accuracy: number;
  trainImages: number;
  testImages: number;
}

/** The items of `dataset` at `indices`, as a dataset of the same kind. */
export function subsetOf(dataset: Dataset, indices: readonly number[]): Dataset {
  const at = (i: number): number => {
    if (!Number.isInteger(i) || i < 0 || i >= indices.length) throw new RangeError(`subsetOf: index ${i} is outside [0, ${indices.length})`);
    return indices[i]!;
  };
  if ('path' in dataset) {
    const files = dataset as ImageFileDataset;
    return { length: indices.length, resolution: files.resolution, path: (i) => files.path(at(i)), label: (i) => files.label(at(i)) } satisfies ImageFileDataset;
  }
  const memory = dataset as InMemoryDataset;
  return { length: indices.length, itemShape: memory.itemShape, image: (i) => memory.image(at(i)), label: (i) => memory.label(at(i)) } satisfies InMemoryDataset;
}

/** A seeded random split of `dataset`: `testFraction` of its items (at least one) for testing, the others for training. */
export function holdOutSplit(dataset: Dataset, testFraction: number, seed: number): { train: Dataset; test: Dataset } {
  const n = dataset.length;
  const testCount = Math.max(1, Math.round(n * testFraction));
  if (!(testFraction > 0 && testFraction < 1) || testCount >= n) throw new Error(`holdOutSplit: cannot hold out ${testFraction} of ${n} items and keep some for training`);
  const order = randperm(n, seed);
  return { train: subsetOf(dataset, order.slice(testCount)), test: subsetOf(dataset, order.slice(0, testCount)) };
}

/** Pixels per token side. */
export function teacherPatchSize(teacher: ProbedTeacher): number {
  return teacher instanceof DinoVisionTransformer ? teacher.config.patchSize : teacher.patchSize;
}

/** The side of a teacher's input: `inputSize` when given, else the backbone's imgSize; a multiple of its patch size. */
export function teacherInputSize(teacher: ProbedTeacher, inputSize: number | undefined, caller: string): number {
  const size = inputSize ?? (teacher instanceof DinoVisionTransformer ? teacher.config.imgSize : undefined);
  if (size === undefined) throw new Error(`${caller}: the HOG teacher needs an inputSize (the images' side)`);
  const patchSize = teacherPatchSize(teacher);
  if (size % patchSize !== 0) throw new Error(`${caller}: inputSize ${size} is not a multiple of the patch size ${patchSize}`);
  return size;
}

/** Runs `fn` with a ViT teacher in eval mode, restoring its mode after. */
export async function inEvalMode<T>(teacher: ProbedTeacher, fn: () => Promise<T>): Promise<T> {
  if (!(teacher instanceof DinoVisionTransformer)) return fn();
  const wasTraining = teacher.training;
  teacher.eval();
  try {
    return await fn();
  } finally {
    teacher.train(wasTraining);
  }
}

/** The final-norm CLS [B, D] and patch tokens [B, T, D] (row-major on the grid) of images [B, 3, H, W] in [-1, 1]; HOG's CLS is its mean-token stand-in. */
export function teacherTokens(teacher: ProbedTeacher, images: Tensor, inputSize: number): { cls: Tensor; patch: Tensor } {
  if (teacher instanceof DinoVisionTransformer) {
    const features = teacher.forwardFeatures(preprocessImages(images, inputSize));
    return { cls: features.xNormClstoken, patch: features.xNormPatchtokens };
  }
  if (images.size(2) !== inputSize || images.size(3) !== inputSize) {
    throw new Error(`teacherTokens: the HOG teacher reads the images at their own size, [${images.shape.slice(2)}], not ${inputSize}x${inputSize}`);
  }
  const side = inputSize / teacher.patchSize;
  return teacher.hog.forward(images, [side, side]);
}

/** [B, 2D] features of images [B, 3, H, W] in [-1, 1]: final-norm CLS and mean patch token, side by side. */
export function probeFeatures(backbone: ProbedTeacher, images: Tensor, inputSize: number): Tensor {
  return torch.noGrad(() => torch.scope(() => {
    const { cls, patch } = teacherTokens(backbone, images, inputSize);
    return torch.cat([cls, patch.mean(1)], -1);
  }));
}

/** Features and labels of `count` images of `dataset` drawn in a seeded random order. */
async function featuresOf(
  backbone: ProbedTeacher, dataset: Dataset, count: number, inputSize: number, seed: number, device: torch.Device,
): Promise<{ features: Tensor; labels: Tensor }> {
  const loader = new DataLoader(dataset, { batchSize: 256, seed, shuffle: true, randomFlip: false });
  const features: Tensor[] = [];
  const labels: Tensor[] = [];
  const n = await loader.visitFirst(count, (images, batchLabels) => {
    features.push(torch.keep(probeFeatures(backbone, images.to(device), inputSize).cpu()));
    labels.push(torch.keep(batchLabels.clone()));
  });
  if (n === 0) throw new Error('linearProbe: a split has no images');
  const out = { features: torch.cat(features), labels: torch.cat(labels) };
  for (const t of [...features, ...labels]) t.dispose();
  return out;
}

/**
 * Trains a linear classifier on the frozen backbone's features of training images and returns its
 * test accuracy.
 *
 * ```ts
 * const backbone = new DinoVisionTransformer(config).loadCheckpoint('dino-teacher.safetensors');
 * const { accuracy } = await linearProbe({
 *   backbone, train: new FashionMNIST({ channels: 3 }), test: new FashionMNIST({ channels: 3, train: false }), trainImages: 500,
 * });
 * ```
 */
export async function linearProbe(options: LinearProbeOptions): Promise<LinearProbeResult> {
  const { backbone } = options;
  const seed = options.seed ?? 0;
  const epochs = options.epochs ?? 100;
  const batchSize = options.batchSize ?? 256;
  const inputSize = teacherInputSize(backbone, options.inputSize, 'linearProbe');
  const device = options.device ?? 'cpu';
  const trainCount = Math.min(options.trainImages ?? 2000, options.train.length);
  const testCount = Math.min(options.testImages ?? 2000, options.test.length);
  for (const [name, value] of Object.entries({ trainImages: trainCount, testImages: testCount, epochs, batchSize })) {
    if (!Number.isInteger(value) || value < 1) throw new Error(`linearProbe: ${name} must be a positive integer, got ${value}`);
  }
  const { train, test } = await inEvalMode(backbone, async () => ({
    train: await featuresOf(backbone, options.train, trainCount, inputSize, seed, device),
    test: await featuresOf(backbone, options.test, testCount, inputSize, seed + 1, device),
  }));
  try {
    return torch.scope(() => {
      const mean = train.features.mean(0, true);
      const std = train.features.std(0, { keepdim: true }).add(1e-6);
      const x = train.features.sub(mean).div(std);
      const xTest = test.features.sub(mean).div(std);
      const numClasses = Math.max(train.labels.max().item(), test.labels.max().item()) + 1;
      torch.manualSeed(seed);
      const classifier = new nn.Linear(x.size(1), numClasses);
      const opt = new optim.Adam(classifier.parameters(), { lr: options.lr ?? 1e-3 });
      const n = x.size(0);
      for (let epoch = 0; epoch < epochs; epoch++) {
        const order = torch.randperm(n);
        for (let start = 0; start < n; start += batchSize) {
          torch.scope(() => {
            const index = order.slice(0, start, start + batchSize);
            const loss = F.crossEntropy(classifier.forward(x.indexSelect(0, index)), train.labels.indexSelect(0, index));
            opt.zeroGrad();
            loss.backward();
            opt.step();
          });
        }
        order.dispose();
      }
      const predicted = torch.noGrad(() => classifier.forward(xTest).argmax(1));
      const accuracy = predicted.eq(test.labels).float().mean().item();
      return { accuracy, trainImages: n, testImages: xTest.size(0) };
    });
  } finally {
    for (const t of [train.features, train.labels, test.features, test.labels]) t.dispose();
  }
}
