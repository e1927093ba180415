// Supervised training of a classifier on labelled images: Adam on cross entropy over shuffled
// batches of a Dataset, a progress bar, metrics.jsonl of the loss, and accuracy on held-out images.
// `reals classifier train` (with checkpoints, --resume and the stop signal) and the demo's two
// Fashion-MNIST classifiers run it.
import { join } from 'node:path';
import { mkdirSync } from 'node:fs';
import * as torch from '../torch/index.js';
import type { Device, Tensor } from '../torch/index.js';
import type * as nn from '../nn/index.js';
import * as optim from '../optim/index.js';
import { DataLoader, type DataLoaderOptions, type Dataset } from '../data/index.js';
import {
  checkpointPosition, loadOptimizer, optimizerToCheckpoint, overrideOptimizerSettings, restoreTrainingRng, trainingRngMetadata, type Checkpoint, type CheckpointManager,
} from './checkpoint.js';
import { MetricsLog } from '../runlog/metrics.js';
import { progress as makeProgress } from '../runlog/progress.js';
import { StopSignal } from './stop.js';
import type { SummaryWriter } from '../runlog/tensorboard.js';

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
  /** A run that saves checkpoints, resumes from one and saves on a stop signal; without it, none of these. */
  run?: CrossEntropyRun;
}

/** The outputs of a resumable run (openRunOutputs gives them, in run folder `runDir`). */
export interface CrossEntropyRun {
  runDir: string;
  checkpoints: CheckpointManager;
  /** Replaces the one `dir` would get (a resumed run's keeps its records up to the checkpoint). */
  metrics: MetricsLog;
  tensorboard: SummaryWriter;
  /** Steps between checkpoints; the last step is saved too. */
  ckptEvery: number;
  /** Recorded in every checkpoint (the network's config, the run's flags as `args`). */
  metadata: { args: Record<string, unknown> } & Record<string, unknown>;
  /** Continues this checkpoint of the run: its weights, optimizer, step, place in the data, loss window and RNG. */
  resume?: Checkpoint;
  log: (line: string) => void;
}

/** The loss summed over the steps since the last record, and the last record's mean, as a checkpoint keeps them. */
interface LossWindow { sum: number; count: number; last: number | null }

/** Trains `model` for `steps` steps; returns the mean loss of the last logged window. The model is left in eval mode. */
export async function trainWithCrossEntropy(options: CrossEntropyTrainingOptions): Promise<{ steps: number; finalLoss: number }> {
  const { model, steps, batchSize, dir, run, device = 'cpu' } = options;
  const logEvery = options.logEvery ?? Math.max(1, Math.floor(steps / 50));
  mkdirSync(dir, { recursive: true });
  torch.manualSeed(options.seed);
  const loader = new DataLoader(options.data, { ...options.loader, batchSize, seed: options.seed });
  const opt = new optim.Adam(model.parameters(), { lr: options.lr });
  const place = { distributed: false, rank: 0, worldSize: 1, device } as const;
  let step = 0;
  let epoch = 0;
  let batch = 0;
  let window: LossWindow = { sum: 0, count: 0, last: null };
  if (run?.resume !== undefined) {
    const checkpoint = run.resume;
    torch.scope(() => {
      try {
        model.loadStateDict(checkpoint.groups.model ?? {});
        loadOptimizer(opt, checkpoint);
      } catch (error) {
        throw new Error(`resume from ${checkpoint.path}: ${(error as Error).message}`);
      }
    });
    // An `lr` other than the checkpoint's replaces it, with a note.
    overrideOptimizerSettings(opt, { lr: options.lr }, run.log);
    ({ step, epoch, batch } = checkpointPosition(checkpoint));
    if (step > steps) throw new Error(`--steps ${steps}: ${checkpoint.path} is at step ${step} already; give at least ${step}`);
    window = lossWindow(checkpoint);
    restoreTrainingRng(checkpoint, place, options.seed, run.log);
  }
  const metrics = run?.metrics ?? new MetricsLog(join(dir, 'metrics.jsonl'));
  const bar = makeProgress({ total: steps, label: options.label, start: step, itemsPerStep: batchSize });
  let lastCheckpoint: string | null = null;
  let savedStep = run?.resume === undefined ? -1 : step;
  const save = (): void => {
    if (run === undefined) return;
    savedStep = step;
    const saved = optimizerToCheckpoint(opt);
    lastCheckpoint = run.checkpoints.save({
      tensors: { model: model.stateDict(), opt: saved.tensors },
      metadata: {
        ...run.metadata, step, epoch, batch, world_size: 1, batch_size: batchSize, ...trainingRngMetadata(place), optimizer: saved.metadata, loss_window: window,
      },
    });
  };
  const stop = run === undefined ? null : StopSignal.listen(place);
  model.train();
  try {
    training: for (; step < steps; epoch++, batch = 0) {
      for await (const { images, labels, batchIndex } of loader.iterate(epoch, batch)) {
        // Where to resume: the next batch of the epoch.
        batch = batchIndex + 1;
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
        window.sum += loss;
        window.count++;
        bar.update(step, { loss });
        if (step % logEvery === 0 || step === steps) {
          window = { sum: 0, count: 0, last: window.sum / window.count };
          metrics.log(step, { loss: window.last! });
          run?.tensorboard.addScalar('train/loss', window.last!, step);
        }
        if (run !== undefined && step % run.ckptEvery === 0) save();
        if (step >= steps) break training;
        if (await stop?.requested()) break training;
      }
    }
    if (run !== undefined && savedStep !== step) save();
    stop?.end({ step, checkpoint: lastCheckpoint, runDir: run!.runDir }, run!.log);
  } finally {
    stop?.dispose();
    bar.stop();
    if (run === undefined) metrics.close();
    await loader.close();
  }
  model.eval();
  return { steps, finalLoss: window.last ?? NaN };
}

/** The loss window a checkpoint of trainWithCrossEntropy holds (`loss_window`), checked. */
function lossWindow(checkpoint: Checkpoint): LossWindow {
  const saved = checkpoint.metadata.loss_window as Partial<LossWindow> | undefined;
  const valid = saved !== undefined && typeof saved.sum === 'number' && Number.isInteger(saved.count) && (saved.last === null || typeof saved.last === 'number');
  if (!valid) throw new Error(`resume from ${checkpoint.path}: metadata "loss_window" is ${JSON.stringify(saved)}, not {sum, count, last}`);
  return { sum: saved.sum!, count: saved.count!, last: saved.last! };
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
