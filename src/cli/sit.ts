// `reals sit train` and `reals dit train`: SiT's and DiT's train.py flags (src/train/sit.ts does
// the work). The latents come from a cache of `reals cache-latents` (--latents-path) or from
// images encoded on the fly (--data-path with --vae-path); under `reals launch` each rank trains
// its share of --global-batch-size.
import { existsSync } from 'node:fs';
import { basename } from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import * as torch from '../torch/index.js';
import { checkWritableDir, readJsonFile } from '../io/index.js';
import { AutoencoderKL } from '../models/autoencoder-kl.js';
import { SIT_CONFIGS, type SiTConfig, type SiTName } from '../models/sit.js';
import { DataLoader, FashionMNIST, ImageFolder, type Dataset } from '../data/index.js';
import { trainGenerator, type GeneratorKind, type GeneratorSpec } from '../train/sit.js';
import {
  CachedLatents, EncodedImages, LatentCache, describeNormalization, latentNormalization, type LatentSource,
} from '../train/latents.js';
import type { LossWeight, PathType, Prediction } from '../diffusion/index.js';

export function integer(min: number): (value: string) => number {
  return (value) => {
    const n = /^-?\d+$/.test(value) ? Number(value) : NaN;
    if (!Number.isSafeInteger(n) || n < min) throw new InvalidArgumentError(`expected an integer >= ${min}, got '${value}'`);
    return n;
  };
}

export function number(min: number, max = Infinity): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (value.trim() === '' || !Number.isFinite(n) || n < min || n > max) throw new InvalidArgumentError(`expected a number in [${min}, ${max}], got '${value}'`);
    return n;
  };
}

/**
 * `flags` with the options `names` unset where they hold commander's default, when resuming: a
 * resumed run continues with its checkpoint's optimizer settings unless one is given again
 * (then the trainer applies it and says so), and its metadata records what ran.
 */
export function resumeFlags<F extends { resume?: string }>(command: Command, flags: F, names: readonly (keyof F & string)[]): F {
  if (flags.resume === undefined) return flags;
  const out = { ...flags };
  for (const name of names) if (command.getOptionValueSource(name) === 'default') delete out[name];
  return out;
}

/** SiT's none_or_str: the word None is null. */
export function noneOr<T extends string>(choices: readonly T[]): (value: string) => T | null {
  return (value) => {
    if (value === 'None') return null;
    if (!choices.includes(value as T)) throw new InvalidArgumentError(`expected one of None, ${choices.join(', ')}, got '${value}'`);
    return value as T;
  };
}

const CONFIG_KEYS = ['depth', 'hiddenSize', 'patchSize', 'numHeads', 'mlpRatio', 'learnSigma'] as const;

/**
 * --model: a name of SIT_CONFIGS (`SiT-XL/2`), or a .json file of SiTConfig fields (depth,
 * hiddenSize, patchSize, numHeads, optionally mlpRatio, learnSigma) for a network of another
 * size, named after the file. The latent size, channels, classes and label dropout come from the
 * data and flags.
 */
export function resolveGeneratorSpec(
  model: string, kind: GeneratorKind,
  fields: { inputSize: number; inChannels: number; numClasses: number; classDropoutProb: number },
): GeneratorSpec {
  let name = model;
  let base: SiTConfig;
  if (model.endsWith('.json')) {
    if (!existsSync(model)) throw new Error(`--model ${model}: no such file`);
    const json = readJsonFile(model) as Record<string, unknown>;
    if (json === null || typeof json !== 'object' || Array.isArray(json)) throw new Error(`--model ${model}: expected a JSON object of SiTConfig fields`);
    const unknown = Object.keys(json).filter((k) => !(CONFIG_KEYS as readonly string[]).includes(k));
    if (unknown.length > 0) throw new Error(`--model ${model}: unknown fields [${unknown.join(', ')}] (known: ${CONFIG_KEYS.join(', ')})`);
    for (const k of ['depth', 'hiddenSize', 'patchSize', 'numHeads'] as const) {
      if (!Number.isInteger(json[k]) || (json[k] as number) < 1) throw new Error(`--model ${model}: "${k}" must be a positive integer, got ${JSON.stringify(json[k])}`);
    }
    base = json as unknown as SiTConfig;
    name = `${kind}-${basename(model, '.json')}`;
  } else {
    const named = SIT_CONFIGS[model as SiTName];
    const names = Object.keys(SIT_CONFIGS).filter((n) => n.startsWith(kind));
    if (named === undefined || !model.startsWith(kind)) throw new Error(`--model ${model}: not one of ${names.join(', ')}, nor a .json config`);
    base = named;
  }
  if (fields.inputSize % base.patchSize !== 0) {
    throw new Error(`--model ${model}: latents of ${fields.inputSize}x${fields.inputSize} do not split into patches of ${base.patchSize}`);
  }
  return {
    name, kind,
    config: {
      depth: base.depth, hiddenSize: base.hiddenSize, patchSize: base.patchSize, numHeads: base.numHeads, mlpRatio: base.mlpRatio ?? 4,
      learnSigma: base.learnSigma ?? true, ...fields,
    },
  };
}

/** The side of the VAE's latents for images of `imageSize` (SiT: image_size // 8). */
export function latentSize(vae: AutoencoderKL, imageSize: number): number {
  const factor = 2 ** (vae.config.blockOutChannels.length - 1);
  if (imageSize % factor !== 0) throw new Error(`--image-size ${imageSize} is not divisible by the VAE's downsampling factor ${factor}`);
  return imageSize / factor;
}

export function loadVae(vaePath: string): AutoencoderKL {
  if (!existsSync(vaePath)) throw new Error(`--vae-path ${vaePath}: no such folder (a diffusers AutoencoderKL folder: config.json + weights)`);
  return AutoencoderKL.fromPretrained(vaePath);
}

/** --data-path: an ImageNet-layout folder, or `fashion-mnist` (Debian's dataset-fashion-mnist, 32x32). */
export function loadImageDataset(dataPath: string, imageSize: number, channels: number): Dataset {
  if (dataPath === 'fashion-mnist') {
    if (channels !== 1 && channels !== 3) throw new Error(`--data-path fashion-mnist: the VAE takes ${channels} channels; Fashion-MNIST gives 1 or 3`);
    return new FashionMNIST({ channels });
  }
  if (channels !== 3) throw new Error(`--data-path ${dataPath}: folder images are RGB, the VAE takes ${channels} channels`);
  return new ImageFolder(dataPath, { resolution: imageSize });
}

export interface GeneratorTrainFlags {
  dataPath?: string;
  latentsPath?: string;
  vaePath?: string;
  resultsDir: string;
  model: string;
  imageSize: number;
  numClasses?: number;
  epochs: number;
  maxSteps?: number;
  globalBatchSize: number;
  globalSeed: number;
  numWorkers?: number;
  logEvery: number;
  ckptEvery: number;
  keepLast?: number;
  /** Unset on --resume when not given (resumeFlags). */
  lr?: number;
  emaDecay?: number;
  cfgProb: number;
  resume?: string;
  /** SiT only. */
  pathType?: PathType;
  prediction?: Prediction;
  lossWeight?: LossWeight;
  trainEps?: number;
  sampleEps?: number;
  flip: boolean;
  device?: string;
}

/** Builds the data and the generator from the flags and trains it; one rank of DDP under `reals launch`. */
export async function runGeneratorTrain(kind: GeneratorKind, flags: GeneratorTrainFlags, args: Record<string, unknown>): Promise<void> {
  // Before any model or data loads: an output folder that cannot be made fails now, in a few system calls.
  if (flags.resume === undefined) checkWritableDir(flags.resultsDir, '--results-dir');
  if ((flags.dataPath === undefined) === (flags.latentsPath === undefined)) throw new Error('give exactly one of --data-path (with --vae-path) and --latents-path');
  if (flags.dataPath !== undefined && flags.vaePath === undefined) throw new Error('--data-path needs --vae-path (the VAE that encodes the images)');
  if (flags.device?.startsWith('cuda') && !torch.cuda.isAvailable()) throw new Error(`--device ${flags.device}: this libtorch build has no CUDA device`);
  const worldSize = torch.distributed.launchedWorldSize();
  if (flags.globalBatchSize % worldSize !== 0) throw new Error(`--global-batch-size ${flags.globalBatchSize} is not divisible by the ${worldSize} ranks`);
  const batchSize = flags.globalBatchSize / worldSize;
  // Everything read from disk is checked before the process group starts or any step runs.
  const vae = flags.vaePath === undefined ? null : loadVae(flags.vaePath);
  const normalization = vae === null ? null : latentNormalization(flags.vaePath!, vae);
  let data: LatentSource;
  let numClasses: number;
  let rank = 0;
  if (flags.latentsPath !== undefined) {
    const cache = LatentCache.open(flags.latentsPath);
    if (normalization !== null && JSON.stringify(normalization) !== JSON.stringify(cache.normalization)) {
      cache.close();
      throw new Error(`--latents-path ${flags.latentsPath} was cached with ${describeNormalization(cache.normalization)}, ` +
        `but --vae-path ${flags.vaePath} gives ${describeNormalization(normalization)}`);
    }
    numClasses = flags.numClasses ?? cache.numClasses;
    if (worldSize > 1) torch.distributed.initProcessGroup();
    rank = worldSize > 1 ? torch.distributed.getRank() : 0;
    data = new CachedLatents(cache, { batchSize, seed: flags.globalSeed, rank, worldSize, randomFlip: flags.flip });
  } else {
    const dataset = loadImageDataset(flags.dataPath!, flags.imageSize, vae!.config.inChannels);
    numClasses = flags.numClasses ?? Array.from({ length: dataset.length }, (_, i) => dataset.label(i)).reduce((m, l) => Math.max(m, l + 1), 0);
    if (worldSize > 1) torch.distributed.initProcessGroup();
    rank = worldSize > 1 ? torch.distributed.getRank() : 0;
    const loader = new DataLoader(dataset, { batchSize, seed: flags.globalSeed, rank, worldSize, numWorkers: flags.numWorkers, randomFlip: flags.flip });
    data = new EncodedImages(loader, vae!, normalization!, flags.device ?? (torch.cuda.isAvailable() ? `cuda:${worldSize > 1 ? torch.distributed.getLocalRank() : 0}` : 'cpu'));
  }
  try {
    const [inChannels, inputSize] = data.latentShape as [number, number, number];
    const spec = resolveGeneratorSpec(flags.model, kind, { inputSize, inChannels, numClasses, classDropoutProb: flags.cfgProb });
    const result = await trainGenerator({
      spec, data, resultsDir: flags.resultsDir, resume: flags.resume, lr: flags.lr, emaDecay: flags.emaDecay,
      epochs: flags.epochs, maxSteps: flags.maxSteps, ckptEvery: flags.ckptEvery, keepLast: flags.keepLast, logEvery: flags.logEvery,
      seed: flags.globalSeed, device: flags.device, args,
      transport: { pathType: flags.pathType, prediction: flags.prediction, lossWeight: flags.lossWeight, trainEps: flags.trainEps, sampleEps: flags.sampleEps },
    });
    if (rank === 0) console.log(`done: step ${result.step}, checkpoint ${result.checkpoint}`);
  } finally {
    await data.close();
    if (worldSize > 1) torch.distributed.destroyProcessGroup();
  }
}

function trainCommand(kind: GeneratorKind): Command {
  const command = new Command('train')
    .description(`train a class-conditional ${kind} on VAE latents (${kind}'s train.py)`)
    .option('--data-path <path>', 'ImageNet-layout image folder, or `fashion-mnist`; encoded with --vae-path at every step')
    .option('--latents-path <dir>', 'a latent cache written by `reals cache-latents` (no VAE runs)')
    .option('--vae-path <dir>', 'diffusers AutoencoderKL folder; its mean_std.json (else config.json scaling_factor) normalizes the latents')
    .option('--results-dir <dir>', 'runs go to <results-dir>/NNN-<model>-...', 'results')
    .option('--model <name>', `${Object.keys(SIT_CONFIGS).filter((n) => n.startsWith(kind)).join(', ')}, or a .json of SiTConfig fields`, `${kind}-XL/2`)
    .option('--image-size <n>', 'side of the ADM center crop (--data-path folders)', integer(8), 256)
    .option('--num-classes <n>', 'classes (default: one more than the largest label in the data)', integer(1))
    .option('--epochs <n>', 'epochs to train', integer(1), 1400)
    .option('--max-steps <n>', 'stop after this many steps if earlier', integer(1))
    .option('--global-batch-size <n>', 'images per step over all ranks', integer(1), 256)
    .option('--global-seed <n>', 'rank r seeds with global-seed * world + r', integer(0), 0)
    .option('--num-workers <n>', 'image decoding threads (--data-path)', integer(0))
    .option('--log-every <n>', 'steps between loss records (metrics.jsonl, TensorBoard)', integer(1), 100)
    .option('--ckpt-every <n>', 'steps between checkpoints', integer(1), 50_000)
    .option('--keep-last <n>', 'keep only the newest n checkpoints', integer(1))
    .option('--lr <lr>', 'AdamW learning rate (weight decay 0)', number(0), 1e-4)
    .option('--ema-decay <d>', 'EMA decay', number(0, 1), 0.9999)
    .option('--cfg-prob <p>', 'probability of training a label as the null class (classifier-free guidance)', number(0, 1), 0.1)
    .option('--resume <path>', 'continue from a checkpoint file, a run folder or its checkpoints folder')
    .option('--no-flip', 'never mirror images (or use a cache\'s mirror images); default: each with probability 1/2')
    .option('--device <device>', 'cpu or cuda[:N] (default: cuda:LOCAL_RANK when available)');
  if (kind === 'SiT') {
    command
      .addOption(new Option('--path-type <type>', 'interpolant path').choices(['Linear', 'GVP', 'VP']).default('Linear'))
      .addOption(new Option('--prediction <p>', 'what the network predicts').choices(['velocity', 'score', 'noise']).default('velocity'))
      .option('--loss-weight <w>', 'None, velocity or likelihood', noneOr(['velocity', 'likelihood'] as const), null)
      .option('--train-eps <eps>', 'time cut-off for training (default by path)', number(0, 1))
      .option('--sample-eps <eps>', 'time cut-off for sampling (default by path)', number(0, 1));
  }
  return command.action(async (flags: GeneratorTrainFlags, self: Command) => {
    const given = resumeFlags(self, flags, ['lr', 'emaDecay']);
    await runGeneratorTrain(kind, given, { ...given });
  });
}

export function sitCommand(): Command {
  return new Command('sit').description('SiT: scalable interpolant transformers on latents').addCommand(trainCommand('SiT'));
}

export function ditCommand(): Command {
  return new Command('dit').description('DiT: diffusion transformers on latents').addCommand(trainCommand('DiT'));
}
