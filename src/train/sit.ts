// The latent generators: training SiT (willisma/SiT train.py) and DiT (facebookresearch/DiT
// train.py) on normalized latents, and loading their checkpoints (ours and the official .pt
// files). Sampling images from them is src/sampling/sample.ts.
//
// Training follows the reference scripts: AdamW (lr 1e-4, weight decay 0), an EMA copy (decay
// 0.9999) that starts as a copy of the model (`update_ema(ema, model.module, decay=0)`) and never
// requires grad, the global batch split evenly over DDP ranks, rank r seeded with
// `global_seed * world_size + r`, label dropout (the model's classDropoutProb, --cfg-prob) for
// classifier-free guidance. SiT minimizes the transport loss (path, prediction, weighting), DiT
// the DDPM loss at a uniformly drawn timestep. Checkpoints (src/train/checkpoint.ts) hold `model.*`,
// `ema.*`, `opt.*` and, in the metadata, the generator's name and config, the latent
// normalization, the transport, the position in the data and the RNG state, so that `--resume`
// continues exactly and `reals sample` needs no other flag to rebuild the network.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import * as torch from '../torch/index.js';
import type { Tensor } from '../torch/index.js';
import { DistributedDataParallel } from '../nn/parallel.js';
import * as optim from '../optim/index.js';
import { DiT, SiT, type SiTConfig } from '../models/sit.js';
import { load, SafetensorsFile } from '../io/index.js';
import { checkWritableDir } from '../io/file.js';
import { createDiffusion, createTransport, type TransportConfig } from '../diffusion/index.js';
import {
  batchPositionMetadata, checkResumeLayout, loadCheckpoint, overrideOptimizerSettings, resumeEmaDecay, optimizerToCheckpoint, restoreTrainingRng, resumeBatch, trainingRngMetadata, type Checkpoint,
} from './checkpoint.js';
import { createRunDir, resolveResume, checkFinite } from './run-dir.js';
import { openRunOutputs, lockstep, collectiveAt } from './context.js';
import { processContext } from '../runlog/process.js';
import { StopSignal } from './stop.js';
import { describeVae, sameVae, vaeIdentitySchema, type VaeIdentity } from '../data/vae-identity.js';
import { progress as makeProgress, type Progress } from '../runlog/progress.js';
import { type LatentSource } from '../data/latents.js';
import { describeNormalization, latentNormalizationSchema, type LatentNormalization } from '../data/latent-normalization.js';

const dist = torch.distributed;

// --- what a generator is ------------------------------------------------------------------------

export type GeneratorKind = 'SiT' | 'DiT';

/** A generator's identity, saved in its checkpoints: `SiT-XL/2` (or a custom name) and its full config. */
export interface GeneratorSpec {
  name: string;
  kind: GeneratorKind;
  config: Required<SiTConfig>;
}

const sitConfigSchema = z.object({
  depth: z.number().int().positive(), hiddenSize: z.number().int().positive(), patchSize: z.number().int().positive(),
  numHeads: z.number().int().positive(), inputSize: z.number().int().positive(), inChannels: z.number().int().positive(),
  mlpRatio: z.number().positive(), classDropoutProb: z.number().min(0).max(1), numClasses: z.number().int().positive(),
  learnSigma: z.boolean(),
});
const specSchema = z.object({ name: z.string(), kind: z.enum(['SiT', 'DiT']), config: sitConfigSchema });

/** Whether two specs name the same network (whatever the order of their config's keys). */
export function sameSpec(a: GeneratorSpec, b: GeneratorSpec): boolean {
  const keys = Object.keys(sitConfigSchema.shape) as (keyof GeneratorSpec['config'])[];
  return a.name === b.name && a.kind === b.kind && keys.every((k) => a.config[k] === b.config[k]);
}

export function buildGenerator(spec: GeneratorSpec): SiT | DiT {
  return spec.kind === 'SiT' ? new SiT(spec.config) : new DiT(spec.config);
}

/**
 * The warning for a generator narrower than its tokens, or null. RAE (Zheng et al., arXiv
 * 2510.11690, section 4) shows that a diffusion transformer whose width is below its token
 * dimension (patch^2 x latent channels) cannot fit the high-dimensional latents even of a single
 * image: the width must be at least the token dimension. A 16- or 32-channel VAE makes that
 * dimension 64 or 128 at patch 2.
 */
export function tokenWidthWarning(spec: GeneratorSpec): string | null {
  const { hiddenSize, patchSize, inChannels } = spec.config;
  const tokenDim = patchSize ** 2 * inChannels;
  if (hiddenSize >= tokenDim) return null;
  return `warning: ${spec.name}'s hidden size ${hiddenSize} is below its token dimension ${tokenDim} (patch ${patchSize}^2 x ${inChannels} latent channels); ` +
    'RAE (arXiv 2510.11690) finds that a diffusion transformer must be at least as wide as its tokens to fit its latents: widen it or take a smaller patch';
}

/** The run folder's name: SiT's `<model>-<path>-<prediction>-<weighting>` (None for no weighting), DiT's `<model>`. */
export function runName(spec: GeneratorSpec, transport: TransportConfig): string {
  if (spec.kind === 'DiT') return spec.name;
  return `${spec.name}-${transport.pathType}-${transport.prediction}-${transport.lossWeight ?? 'None'}`;
}

// --- training -----------------------------------------------------------------------------------

export interface GeneratorTrainOptions {
  spec: GeneratorSpec;
  data: LatentSource;
  /**
   * The VAE whose latents `data` holds (vaeIdentity), recorded in the checkpoints so that `reals
   * sample` refuses to decode with another; absent or null where it is not known.
   */
  vae?: VaeIdentity | null;
  /** The names of the classes in label order, recorded in the checkpoints (metadata `class_names`) for the samples' and the web page's labels. */
  classNames?: readonly string[];
  /** A new run goes to `<resultsDir>/NNN-<runName>`. */
  resultsDir: string;
  /** Continue a run: a checkpoint file, a run folder or its checkpoints folder. */
  resume?: string;
  /** SiT's transport (default Linear, velocity, no weighting). */
  transport?: Partial<TransportConfig>;
  /**
   * AdamW learning rate, default 1e-4; weight decay default 0; EMA decay default 0.9999. Given for
   * a resumed run, each replaces the checkpoint's (with a note); not given, the checkpoint's goes on.
   */
  lr?: number;
  weightDecay?: number;
  emaDecay?: number;
  /** Epochs (default 1400, as train.py) unless maxSteps stops earlier. */
  epochs?: number;
  maxSteps?: number;
  /** Steps between checkpoints (default 50,000); one is also written at the end. */
  ckptEvery?: number;
  keepLast?: number;
  /** Steps between metrics.jsonl/TensorBoard records of the mean loss and steps/s (default 100). */
  logEvery?: number;
  /** --global-seed (default 0): rank r seeds with seed * worldSize + r. */
  seed?: number;
  device?: torch.Device;
  /**
   * The forward and the loss under bfloat16 autocast ('bf16'), or not ('fp32', default); 'auto'
   * picks bf16 on CUDA and bfloat16-capable CPUs. Weights, gradients and AdamW state stay float32.
   * The checkpoints' metadata records the precision that ran.
   */
  precision?: torch.Precision;
  /** Saved in the checkpoints' metadata (the CLI's flags), with lr, weightDecay and emaDecay those that ran. */
  args?: Record<string, unknown>;
  log?: (line: string) => void;
  progressStream?: NodeJS.WritableStream & { isTTY?: boolean };
}

export interface GeneratorTrainResult {
  runDir: string;
  step: number;
  /** The last checkpoint written (rank 0), or null on other ranks. */
  checkpoint: string | null;
  model: SiT | DiT;
  ema: SiT | DiT;
}

export async function trainGenerator(options: GeneratorTrainOptions): Promise<GeneratorTrainResult> {
  const { spec, data } = options;
  const { distributed, rank, worldSize, device, log: contextLog } = processContext(options);
  // Rank 0's lines also go to the run's log.txt once its outputs are open.
  let log = contextLog;
  if (options.resume === undefined && rank === 0) checkWritableDir(options.resultsDir, 'trainGenerator: resultsDir');
  const ckptEvery = options.ckptEvery ?? 50_000;
  const logEvery = options.logEvery ?? 100;
  const epochs = options.epochs ?? 1400;
  const c = spec.config;
  const shape = [c.inChannels, c.inputSize, c.inputSize];
  if (data.latentShape.join() !== shape.join()) {
    throw new Error(`trainGenerator: the data's latents are [${data.latentShape}], ${spec.name} takes [${shape}] ` +
      `(inputSize ${c.inputSize} = image size / the VAE's downsampling; inChannels ${c.inChannels})`);
  }
  if (data.length < 1) {
    throw new Error(`--global-batch-size ${data.batchSize * worldSize}: the data gives no full batch of ${data.batchSize} on each of the ${worldSize} rank(s); lower it, or give more images`);
  }
  const transport = createTransport(options.transport);
  const precision = torch.usePrecision(options.precision ?? 'fp32', device);

  torch.manualSeed((options.seed ?? 0) * worldSize + rank);
  // Under DDP every rank starts from rank 0's initialisation (DistributedDataParallel copies it).
  const model = buildGenerator(spec).to(device).train();
  const ema = buildGenerator(spec).to(device).requiresGrad_(false).eval();
  const opt = new optim.AdamW(model.parameters().filter((p) => p.requiresGrad), { lr: options.lr ?? 1e-4, weightDecay: options.weightDecay ?? 0 });
  let emaDecay = options.emaDecay ?? 0.9999;
  const ddp = distributed ? new DistributedDataParallel(model) : null;
  const diffusion = spec.kind === 'DiT' ? createDiffusion({ timestepRespacing: '', learnSigma: c.learnSigma }) : null;

  let step = 0;
  let epoch = 0;
  let batch = 0;
  let runDir: string;
  if (options.resume !== undefined) {
    const resumed = resolveResume(options.resume);
    runDir = resumed.runDir;
    // In a scope: the checkpoint's tensors are freed once copied into the run's objects.
    ({ step, epoch, batch } = torch.scope(() => {
      const checkpoint = loadCheckpoint(resumed.checkpoint);
      checkResumeLayout(checkpoint, { worldSize, batchSize: data.batchSize });
      const position = restore(checkpoint, spec, data.normalization, options.vae ?? null, { model, ema, opt });
      log(`resuming ${resumed.checkpoint} at step ${position.step} (epoch ${position.epoch}, batch ${position.batch})`);
      restoreTrainingRng(checkpoint, { distributed, rank, worldSize, device }, options.seed ?? 0, log);
      emaDecay = resumeEmaDecay(checkpoint, options.emaDecay, log);
      return { ...position, batch: resumeBatch(checkpoint, position.batch, { distributed, rank, worldSize, device }) };
    }));
  } else {
    runDir = rank === 0 ? createRunDir(options.resultsDir, runName(spec, transport.config)).path : '';
  }
  // A setting given for a resumed run replaces the checkpoint's; the metadata records what runs.
  const settings = { ...overrideOptimizerSettings(opt, { lr: options.lr, weightDecay: options.weightDecay }, log), emaDecay };
  const emaUpdater = new optim.EMA(ema, model, { decay: emaDecay });
  if (options.resume === undefined) emaUpdater.copyFrom();
  const outputs = openRunOutputs(runDir, rank, {
    lock: true, log, args: { ...options.args, ...settings },
    keepLast: options.keepLast, resumeStep: options.resume !== undefined ? step : undefined,
  });
  const { lock, checkpoints, metrics, tensorboard } = outputs;
  log = outputs.log;
  log(`${spec.name}: ${model.parameters().reduce((n, p) => n + p.numel(), 0).toLocaleString('en-US')} parameters; ` +
    `latents [${shape}] normalized by ${describeNormalization(data.normalization)}; ` +
    `global batch ${data.batchSize * worldSize} (${data.batchSize} x ${worldSize} ranks); ${precision}; run folder ${runDir}`);
  const narrow = tokenWidthWarning(spec);
  if (narrow !== null) log(narrow);
  const maxSteps = Math.min(options.maxSteps ?? Infinity, epochs * data.length);
  const bar: Progress | null = rank === 0
    ? makeProgress({ total: maxSteps, label: spec.name, start: step, stream: options.progressStream, itemsPerStep: data.batchSize * worldSize })
    : null;

  // The losses take the network's output in float32 (bf16's log-variance terms of DiT would round).
  const network = (x: Tensor, t: Tensor, kwargs: Record<string, unknown>): Tensor => model.forward(x, t, kwargs.y as Tensor).float();
  /** Forward and backward of one batch; returns the loss averaged over ranks. */
  const trainStep = (latents: Tensor, labels: Tensor): number => torch.scope(() => {
    const x = latents.to(device);
    const y = labels.to(device);
    const loss = torch.withPrecision(precision, device, () => {
      if (diffusion === null) return transport.trainingLosses(network, x, { y }).loss.mean();
      const t = torch.randint(0, diffusion.numTimesteps, [x.size(0)]).to(device);
      return diffusion.trainingLosses(network, x, t, { y }).loss.mean();
    });
    loss.backward();
    ddp?.syncGradients();
    const value = loss.detach().float().reshape([1]);
    if (distributed) dist.allReduce(value, 'avg');
    return value.item();
  });

  let lastCheckpoint: string | null = null;
  let savedStep = -1;
  /** Writes a checkpoint (rank 0) holding every rank's RNG state; all ranks call it. */
  const save = (): void => {
    let rng: ReturnType<typeof trainingRngMetadata>;
    let position: ReturnType<typeof batchPositionMetadata>;
    try {
      rng = trainingRngMetadata({ distributed, rank, worldSize, device });
      position = batchPositionMetadata(batch, { distributed, rank, worldSize, device });
    } catch (error) {
      throw collectiveAt(error, `the checkpoint of step ${step}`);
    }
    savedStep = step;
    if (rank !== 0) return;
    const saved = optimizerToCheckpoint(opt);
    lastCheckpoint = checkpoints!.save({
      tensors: { model: model.stateDict(), ema: ema.stateDict(), opt: saved.tensors },
      metadata: {
        step, epoch, ...position, world_size: worldSize, batch_size: data.batchSize, ema_decay: emaDecay, args: { ...options.args, ...settings }, ...rng, optimizer: saved.metadata,
        precision, generator: spec, normalization: data.normalization, transport: spec.kind === 'SiT' ? transport.config : null,
        vae: options.vae ?? undefined, class_names: options.classNames,
      },
    });
  };

  // A position at or past an epoch's end needs no rollover here: that epoch then yields nothing
  // and the loop moves on, on every rank together (lockstep), where ranks whose shards lost
  // batches to unreadable images resume at different positions.
  let runningLoss = 0;
  let sinceLog = 0;
  let logStart = performance.now();
  const stop = StopSignal.listen({ distributed, device });
  try {
    training: for (; epoch < epochs && step < maxSteps; epoch++, batch = 0) {
      const discard = (b: { latents: Tensor; labels: Tensor }): void => { b.latents.dispose(); b.labels.dispose(); };
      for await (const { latents, labels, batchIndex } of lockstep(data.iterate(epoch, batch), { distributed, device, log }, { epoch, discard })) {
        const loss = trainStep(latents, labels);
        latents.dispose();
        labels.dispose();
        // Before the optimizer steps: a non-finite loss leaves the weights and the last checkpoint as they were.
        checkFinite({ loss }, step + 1, checkpoints);
        opt.step();
        opt.zeroGrad();
        emaUpdater.update();
        step++;
        // Where to resume: the next batch of the epoch, counting those the data left out.
        batch = batchIndex + 1;
        runningLoss += loss;
        sinceLog++;
        bar?.update(step, { loss });
        if (step % logEvery === 0 || step === maxSteps) {
          const stepsPerSec = sinceLog / ((performance.now() - logStart) / 1000);
          const mean = runningLoss / sinceLog;
          if (rank === 0) {
            metrics!.log(step, { loss: mean, steps_per_sec: stepsPerSec });
            tensorboard!.addScalar('train/loss', mean, step);
            tensorboard!.addScalar('train/steps_per_sec', stepsPerSec, step);
          }
          [runningLoss, sinceLog, logStart] = [0, 0, performance.now()];
        }
        if (step % ckptEvery === 0) {
          save();
          try {
            if (distributed) dist.barrier();
          } catch (error) {
            throw collectiveAt(error, `the checkpoint of step ${step} (waiting for rank 0 to write it)`);
          }
        }
        if (step >= maxSteps) break training;
        if (await stop.requested()) break training;
      }
    }
    if (savedStep !== step) save();
    stop.end({ step, checkpoint: lastCheckpoint, runDir }, log);
  } catch (error) {
    throw collectiveAt(error, `step ${step + 1} (epoch ${epoch})`);
  } finally {
    stop.dispose();
    bar?.stop();
    metrics?.close();
    tensorboard?.close();
    lock?.release();
  }
  return { runDir, step, checkpoint: lastCheckpoint, model, ema };
}

const generatorMetadataSchema = z.object({
  generator: specSchema,
  normalization: latentNormalizationSchema,
  transport: z.object({
    pathType: z.enum(['Linear', 'GVP', 'VP']), prediction: z.enum(['velocity', 'score', 'noise']),
    lossWeight: z.enum(['velocity', 'likelihood']).nullable(), trainEps: z.number(), sampleEps: z.number(),
  }).nullable(),
  batch: z.number().int().nonnegative(),
  /** The VAE of the training latents (absent from checkpoints written before it was recorded, or where it was not known). */
  vae: vaeIdentitySchema.optional(),
  /** The class names in label order (absent where they were not known or not yet recorded). */
  class_names: z.array(z.string()).optional(),
});

function generatorMetadata(checkpoint: Checkpoint): z.infer<typeof generatorMetadataSchema> {
  const parsed = generatorMetadataSchema.safeParse(checkpoint.metadata);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new Error(`${checkpoint.path}: not a generator checkpoint of reals (metadata "${issue.path.join('.')}": ${issue.message})`);
  }
  return parsed.data;
}

interface Restorable { model: SiT | DiT; ema: SiT | DiT; opt: optim.AdamW }

/** Loads a checkpoint of trainGenerator into the run's objects; returns the position. */
function restore(
  checkpoint: Checkpoint, spec: GeneratorSpec, normalization: LatentNormalization, vae: VaeIdentity | null, into: Restorable,
): { step: number; epoch: number; batch: number } {
  const fail = (message: string): never => { throw new Error(`resume from ${checkpoint.path}: ${message}`); };
  const meta = generatorMetadata(checkpoint);
  if (!sameSpec(meta.generator, spec)) fail(`it trains ${JSON.stringify(meta.generator)}, this run ${JSON.stringify(spec)}`);
  if (JSON.stringify(meta.normalization) !== JSON.stringify(normalization)) {
    fail(`its latents were normalized by ${describeNormalization(meta.normalization)}, this run's by ${describeNormalization(normalization)}`);
  }
  if (meta.vae !== undefined && vae !== null && !sameVae(meta.vae, vae)) fail(`its latents came from another VAE (${describeVae(meta.vae)}) than this run's (${describeVae(vae)})`);
  for (const group of ['model', 'ema']) if (checkpoint.groups[group] === undefined) fail(`no ${group}.* tensors`);
  try {
    into.model.loadStateDict(checkpoint.groups.model!);
    into.ema.loadStateDict(checkpoint.groups.ema!);
    into.opt.loadStateDict(optim.unflattenStateDict(checkpoint.groups.opt ?? {}, checkpoint.metadata.optimizer, ''));
  } catch (error) {
    fail((error as Error).message);
  }
  return { step: checkpoint.metadata.step, epoch: checkpoint.metadata.epoch, batch: meta.batch };
}

// --- loading a trained generator ----------------------------------------------------------------

/** The generator a reals checkpoint holds, read from its header alone; null for any other file (official .pt, state dicts). */
export function savedGeneratorSpec(path: string): GeneratorSpec | null {
  if (!path.endsWith('.safetensors')) return null;
  const file = SafetensorsFile.open(path);
  file.close();
  const saved = file.metadata.generator;
  if (saved === undefined) return null;
  let parsed: ReturnType<typeof specSchema.safeParse>;
  try {
    parsed = specSchema.safeParse(JSON.parse(saved));
  } catch (error) {
    throw new Error(`--ckpt ${path}: metadata "generator" is not JSON (${(error as Error).message})`);
  }
  if (!parsed.success) throw new Error(`--ckpt ${path}: metadata "generator" is not a generator spec ("${parsed.error.issues[0]!.path.join('.')}": ${parsed.error.issues[0]!.message})`);
  return parsed.data as GeneratorSpec;
}

export interface LoadedGenerator {
  model: SiT | DiT;
  spec: GeneratorSpec;
  /** How the training latents were normalized (our checkpoints), or null (official files: the VAE's). */
  normalization: LatentNormalization | null;
  /** The transport it was trained with (our SiT checkpoints), or null. */
  transport: TransportConfig | null;
  /** The VAE of its training latents (our checkpoints that record it), or null. */
  vae: VaeIdentity | null;
  /** The class names in label order (our checkpoints that record them), or null. */
  classNames: string[] | null;
}

export interface LoadGeneratorOptions {
  /** What the caller expects (--model): a checkpoint of another size is an error. */
  spec: GeneratorSpec;
  /** 'ema' (default) or the raw 'model' weights of a training checkpoint. */
  weights?: 'ema' | 'model';
}

function entriesOf(value: unknown): Map<string, unknown> | null {
  if (value instanceof Map) return value as Map<string, unknown>;
  if (value !== null && typeof value === 'object' && Object.getPrototypeOf(value) === Object.prototype) return new Map(Object.entries(value));
  return null;
}

/**
 * A generator in eval mode from `path`: a checkpoint of trainGenerator (.safetensors; its saved
 * spec must equal the expected one), or an official SiT/DiT file (torch.save of a state dict or
 * of train.py's {model, ema, opt, args}; whether it learns sigma is read off its final layer).
 * Either way the EMA weights unless `weights` is 'model'. A checkpoint of another model is an
 * error naming both before anything runs.
 */
export function loadGenerator(path: string, options: LoadGeneratorOptions): LoadedGenerator {
  if (!existsSync(path)) throw new Error(`--ckpt ${path}: no such file`);
  const expected = options.spec;
  const weights = options.weights ?? 'ema';
  if (savedGeneratorSpec(path) !== null) {
    const checkpoint = loadCheckpoint(path);
    try {
      const meta = generatorMetadata(checkpoint);
      const saved = meta.generator;
      if (saved.name !== expected.name || saved.kind !== expected.kind) {
        throw new Error(`--ckpt ${path} holds a ${saved.kind} ${saved.name}, not the ${expected.kind} ${expected.name} asked for (--model)`);
      }
      const group = checkpoint.groups[weights];
      if (group === undefined) throw new Error(`--ckpt ${path}: no ${weights}.* tensors`);
      const model = buildGenerator(saved);
      model.loadStateDict(group);
      return { model: model.eval(), spec: saved, normalization: meta.normalization, transport: meta.transport, vae: meta.vae ?? null, classNames: meta.class_names ?? null };
    } finally {
      for (const group of Object.values(checkpoint.groups)) for (const t of Object.values(group)) t.dispose();
    }
  }
  // Read in a scope: the file's tensors (model, EMA, optimizer state) are freed once copied.
  return torch.scope(() => {
    const loaded = load(path);
    const record = entriesOf(loaded);
    // A training checkpoint {model, ema, ...}: the asked-for weights, the raw ones where it has no EMA.
    const key = record === null ? undefined : record.has(weights) ? weights : weights === 'ema' && record.has('model') ? 'model' : undefined;
    const stateDict = key === undefined ? record : entriesOf(record!.get(key));
    if (stateDict === null || ![...stateDict.values()].every((v) => v instanceof torch.Tensor)) {
      throw new Error(`--ckpt ${path}: neither a state dict nor a training checkpoint with a '${weights}' state dict`);
    }
    const finalLayer = stateDict.get('final_layer.linear.weight');
    const c = expected.config;
    let spec = expected;
    if (finalLayer instanceof torch.Tensor) {
      const outChannels = finalLayer.size(0) / (c.patchSize * c.patchSize);
      if (outChannels === 2 * c.inChannels || outChannels === c.inChannels) spec = { ...expected, config: { ...c, learnSigma: outChannels === 2 * c.inChannels } };
    }
    const model = buildGenerator(spec);
    try {
      model.loadStateDict(stateDict as Map<string, Tensor>);
    } catch (error) {
      throw new Error(`--ckpt ${path} does not fit --model ${expected.name} (${JSON.stringify(spec.config)}): ${(error as Error).message}`, { cause: error });
    }
    return { model: model.eval(), spec, normalization: null, transport: null, vae: null, classNames: null };
  });
}
