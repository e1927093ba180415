// Supervised training of a classifier on labelled images: Adam on cross entropy over shuffled
// batches of a Dataset, a progress bar, metrics.jsonl of the loss, and accuracy on held-out images.
// `reals classifier train` and the demo's two Fashion-MNIST classifiers run it.
import { join } from 'node:path';
import { mkdirSync } from 'node:fs';
import * as torch from '../torch/index.js';
import type { Device, Tensor } from '../torch/index.js';
import type * as nn from '../nn/index.js';
import * as optim from '../optim/index.js';
import { DataLoader, type DataLoaderOptions, type Dataset } from '../data/index.js';
import { MetricsLog } from '../runlog/metrics.js';
import { progress as makeProgress } from '../runlog/progress.js';

const F = torch.nnFunctional;

export interface CrossEntropyTrainingOptions {
  /** Trained parameters: the network and its classification layer. */
  model: nn.Module;
  /** Images [B, C, H, W] in [-1, 1] (on `device`) to logits [B, classes]. */
  logits: (images: Tensor) => Tensor;
  data: Dataset;
  /** DataLoader settings other than the batch size and seed (e.g. numWorkers, randomFlip). */
  loader?: Omit<DataLoaderOptions, 'batchSize' | 'seed'>;
  steps: number;
  batchSize: number;
  lr: number;
  seed: number;
  /** Gets metrics.jsonl (the mean loss every logEvery steps). */
  dir: string;
  /** The progress bar's label. */
  label: string;
  /** Default: 50 records over the run. */
  logEvery?: number;
  device?: Device;
}

/** Trains `model` for `steps` steps; returns the mean loss of the last logged window. The model is left in eval mode. */
export async function trainWithCrossEntropy(options: CrossEntropyTrainingOptions): Promise<{ steps: number; finalLoss: number }> {
  const { model, steps, batchSize, dir, device = 'cpu' } = options;
  const logEvery = options.logEvery ?? Math.max(1, Math.floor(steps / 50));
  mkdirSync(dir, { recursive: true });
  torch.manualSeed(options.seed);
  const loader = new DataLoader(options.data, { ...options.loader, batchSize, seed: options.seed });
  const opt = new optim.Adam(model.parameters(), { lr: options.lr });
  const metrics = new MetricsLog(join(dir, 'metrics.jsonl'));
  const bar = makeProgress({ total: steps, label: options.label, itemsPerStep: batchSize });
  model.train();
  let step = 0;
  let sum = 0;
  let count = 0;
  let finalLoss = NaN;
  try {
    for (let epoch = 0; step < steps; epoch++) {
      for await (const { images, labels } of loader.iterate(epoch)) {
        const loss = torch.scope(() => {
          const value = F.crossEntropy(options.logits(images.to(device)), labels.to(device));
          opt.zeroGrad();
          value.backward();
          opt.step();
          return value.item();
        });
        images.dispose();
        labels.dispose();
        step++;
        sum += loss;
        count++;
        bar.update(step, { loss });
        if (step % logEvery === 0 || step === steps) {
          finalLoss = sum / count;
          metrics.log(step, { loss: finalLoss });
          [sum, count] = [0, 0];
        }
        if (step >= steps) break;
      }
    }
  } finally {
    bar.stop();
    metrics.close();
    await loader.close();
  }
  model.eval();
  return { steps, finalLoss };
}

/** The share of `data`'s images whose argmax of `logits` is their label, `batchSize` at a time, in order, unflipped. */
export async function datasetAccuracy(logits: (images: Tensor) => Tensor, data: Dataset, options: { batchSize?: number; device?: Device; numWorkers?: number } = {}): Promise<number> {
  const { batchSize = 256, device = 'cpu' } = options;
  const loader = new DataLoader(data, { batchSize, shuffle: false, randomFlip: false, numWorkers: options.numWorkers });
  let correct = 0;
  try {
    for await (const { images, labels } of loader.iterate(0)) {
      correct += torch.noGrad(() => torch.scope(() => logits(images.to(device)).argmax(1).cpu().eq(labels).sum().item()));
      images.dispose();
      labels.dispose();
    }
  } finally {
    await loader.close();
  }
  return correct / data.length;
}
