// The pipelines behind `reals sit train` / `reals dit train` (SiT's and DiT's train.py) and `reals
// cache-latents`, from files and names as those scripts take them; `reals sample` is ./sample.ts. The latents come from a cache (latentsPath) or from images encoded on
// the fly (dataPath with vaePath); under `reals launch` each rank does its share.
import { existsSync } from 'node:fs';
import { basename } from 'node:path';
import * as torch from '../torch/index.js';
import { checkWritableDir, readJsonFile } from '../io/index.js';
import { SIT_CONFIGS, SIT_CONFIG_SIZES, type SiTConfig, type SiTName } from '../models/sit.js';
import { checkHeads, checkSizes, checkWeightsFit, sitParameters } from '../models/config-sizes.js';
import { DataLoader } from '../data/index.js';
import { TRANSPORT_DEFAULTS, type LossWeight, type PathType, type Prediction } from '../diffusion/index.js';
import { trainGenerator, type GeneratorKind, type GeneratorSpec, type GeneratorTrainResult } from '../train/sit.js';
import type { AutoencoderKL } from '../models/autoencoder-kl.js';
import { CachedLatents, EncodedImages, LatentCache, cacheLatents, type CacheLatentsResult, type LatentSource } from '../data/latents.js';
import { describeNormalization, latentNormalization } from '../data/latent-normalization.js';
import { withDefaults } from '../runlog/process.js';
import { datasetClassNames, latentSize, loadImageDataset, loadVaeFolder, resolveVaePath, type HubRunOptions } from '../data/inputs.js';
import { describeVae, sameVae, vaeIdentity, type VaeIdentity } from '../data/vae-identity.js';

const CONFIG_KEYS = ['depth', 'hiddenSize', 'patchSize', 'numHeads', 'mlpRatio', 'learnSigma'] as const;

/**
 * `--model`: a name of SIT_CONFIGS (`SiT-XL/2`), or a .json file of SiTConfig fields (depth,
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
      if (json[k] === undefined) throw new Error(`--model ${model}: "${k}" is missing`);
    }
    checkSizes(`--model ${model}`, json, SIT_CONFIG_SIZES);
    checkHeads(`--model ${model}`, json.hiddenSize as number, json.numHeads as number, 'hiddenSize');
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
  const config = {
    depth: base.depth, hiddenSize: base.hiddenSize, patchSize: base.patchSize, numHeads: base.numHeads, mlpRatio: base.mlpRatio ?? 4,
    learnSigma: base.learnSigma ?? true, ...fields,
  };
  checkWeightsFit(`--model ${model}`, sitParameters(config));
  return { name, kind, config };
}

// --- sit train / dit train ----------------------------------------------------------------------------

/** The settings of a generator run that have defaults (`reals sit train --help` shows them). */
export interface GeneratorTrainSettings {
  /** Runs go to <resultsDir>/NNN-<model>-... */
  resultsDir: string;
  /** Side of the ADM center crop (dataPath folders). */
  imageSize: number;
  epochs: number;
  /** Images per step over all ranks. */
  globalBatchSize: number;
  /** Rank r seeds with globalSeed * world + r. */
  globalSeed: number;
  logEvery: number;
  ckptEvery: number;
  /** Probability of training a label as the null class (classifier-free guidance). */
  cfgProb: number;
  /** Mirror each image with probability 1/2 (or use a cache's mirror images). */
  flip: boolean;
  /** The networks under bfloat16 autocast or not; auto (default): bf16 on CUDA and bfloat16-capable CPUs. */
  precision: torch.Precision;
}

export const GENERATOR_TRAIN_RUN_DEFAULTS: GeneratorTrainSettings = {
  resultsDir: 'results', imageSize: 256, epochs: 1400, globalBatchSize: 256, globalSeed: 0, logEvery: 100, ckptEvery: 50_000, cfgProb: 0.1, flip: true, precision: 'auto',
};

/** `reals sit train` / `reals dit train`'s flags, camelCased; the ones left out take GENERATOR_TRAIN_RUN_DEFAULTS. */
export interface GeneratorTrainRunOptions extends Partial<GeneratorTrainSettings>, HubRunOptions {
  /** A SIT_CONFIGS name of the kind, or a .json of SiTConfig fields. */
  model: string;
  /** An ImageNet-layout folder or `fashion-mnist`, encoded with vaePath at every step; or: */
  dataPath?: string;
  /** A latent cache written by `reals cache-latents`. */
  latentsPath?: string;
  /** A diffusers AutoencoderKL folder; its mean_std.json (else scaling_factor) normalizes the latents. */
  vaePath?: string;
  /** Default: one more than the largest label in the data. */
  numClasses?: number;
  maxSteps?: number;
  numWorkers?: number;
  keepLast?: number;
  /** Default 1e-4; on resume, unless given, the checkpoint's. */
  lr?: number;
  /** Default 0.9999; on resume, unless given, the checkpoint's. */
  emaDecay?: number;
  resume?: string;
  /** SiT only. */
  pathType?: PathType;
  prediction?: Prediction;
  lossWeight?: LossWeight;
  trainEps?: number;
  sampleEps?: number;
  device?: string;
  log?: (line: string) => void;
}

/** --num-classes, or the data's; refused when the data holds a label the embedding table would not have. */
function checkNumClasses(given: number | undefined, inData: number, source: string, release = () => {}): number {
  if (given === undefined || given >= inData) return given ?? inData;
  release();
  throw new Error(`--num-classes ${given}: ${source} has labels up to ${inData - 1} (${inData} classes)`);
}

/** Builds the data and the generator from the options and trains it; one rank of DDP under `reals launch`. */
export async function runGeneratorTrain(kind: GeneratorKind, options: GeneratorTrainRunOptions): Promise<GeneratorTrainResult> {
  const { log, ...given } = options;
  const o = { ...given, ...withDefaults(GENERATOR_TRAIN_RUN_DEFAULTS, given), ...(kind === 'SiT' ? withDefaults(TRANSPORT_DEFAULTS, given) : {}) };
  // Before any model or data loads: an output folder that cannot be made fails now, in a few system calls.
  if (o.resume === undefined) checkWritableDir(o.resultsDir, '--results-dir');
  if ((o.dataPath === undefined) === (o.latentsPath === undefined)) throw new Error('give exactly one of --data-path (with --vae-path) and --latents-path');
  if (o.dataPath !== undefined && o.vaePath === undefined) throw new Error('--data-path needs --vae-path (the VAE that encodes the images)');
  torch.checkDevice(o.device);
  const worldSize = torch.distributed.launchedWorldSize();
  if (o.globalBatchSize % worldSize !== 0) throw new Error(`--global-batch-size ${o.globalBatchSize} is not divisible by the ${worldSize} ranks`);
  const batchSize = o.globalBatchSize / worldSize;
  // Everything read from disk is checked before the process group starts or any step runs.
  if (o.vaePath !== undefined) o.vaePath = await resolveVaePath(o.vaePath, o);
  const vae = o.vaePath === undefined ? null : loadVaeFolder(o.vaePath);
  const normalization = vae === null ? null : latentNormalization(o.vaePath!, vae);
  let data: LatentSource;
  let numClasses: number;
  // Recorded in the checkpoints, so that samples, reports and the web page name the classes.
  let classNames: string[] | null;
  let rank = 0;
  // Recorded in the checkpoints, so that `reals sample` decodes with this VAE and no other.
  let vaeRecord: VaeIdentity | null = vae === null ? null : vaeIdentity(vae);
  if (o.latentsPath !== undefined) {
    const cache = LatentCache.open(o.latentsPath);
    if (normalization !== null && JSON.stringify(normalization) !== JSON.stringify(cache.normalization)) {
      cache.close();
      throw new Error(`--latents-path ${o.latentsPath} was cached with ${describeNormalization(cache.normalization)}, ` +
        `but --vae-path ${o.vaePath} gives ${describeNormalization(normalization)}`);
    }
    if (cache.vae !== null && vaeRecord !== null && !sameVae(cache.vae, vaeRecord)) {
      cache.close();
      throw new Error(`--latents-path ${o.latentsPath} holds the latents of another VAE (${describeVae(cache.vae)}) than --vae-path ${o.vaePath} (${describeVae(vaeRecord)})`);
    }
    vaeRecord ??= cache.vae;
    numClasses = checkNumClasses(o.numClasses, cache.numClasses, `--latents-path ${o.latentsPath}`, () => cache.close());
    classNames = cache.classNames;
    if (worldSize > 1) torch.distributed.initProcessGroup();
    rank = worldSize > 1 ? torch.distributed.getRank() : 0;
    data = new CachedLatents(cache, { batchSize, seed: o.globalSeed, rank, worldSize, randomFlip: o.flip });
  } else {
    // Before the generator is sized: an image side the VAE cannot divide is the flag at fault, not --model's patch size.
    if (o.dataPath !== 'fashion-mnist') latentSize(vae!, o.imageSize);
    const dataset = loadImageDataset(o.dataPath!, o.imageSize, vae!.config.inChannels);
    const labelsInData = Array.from({ length: dataset.length }, (_, i) => dataset.label(i)).reduce((m, l) => Math.max(m, l + 1), 0);
    numClasses = checkNumClasses(o.numClasses, labelsInData, `--data-path ${o.dataPath}`);
    classNames = datasetClassNames(o.dataPath!);
    if (worldSize > 1) torch.distributed.initProcessGroup();
    rank = worldSize > 1 ? torch.distributed.getRank() : 0;
    const loader = new DataLoader(dataset, { batchSize, seed: o.globalSeed, rank, worldSize, numWorkers: o.numWorkers, randomFlip: o.flip });
    data = new EncodedImages(loader, vae!, normalization!, o.device ?? (torch.cuda.isAvailable() ? `cuda:${worldSize > 1 ? torch.distributed.getLocalRank() : 0}` : 'cpu'), o.precision);
  }
  try {
    const [inChannels, inputSize] = data.latentShape as [number, number, number];
    const spec = resolveGeneratorSpec(o.model, kind, { inputSize, inChannels, numClasses, classDropoutProb: o.cfgProb });
    return await trainGenerator({
      spec, data, vae: vaeRecord, classNames: classNames ?? undefined, resultsDir: o.resultsDir, resume: o.resume, lr: o.lr, emaDecay: o.emaDecay,
      epochs: o.epochs, maxSteps: o.maxSteps, ckptEvery: o.ckptEvery, keepLast: o.keepLast, logEvery: o.logEvery,
      seed: o.globalSeed, device: o.device, precision: o.precision, args: o, log,
      transport: { pathType: o.pathType, prediction: o.prediction, lossWeight: o.lossWeight, trainEps: o.trainEps, sampleEps: o.sampleEps },
    });
  } finally {
    await data.close();
    if (worldSize > 1) torch.distributed.destroyProcessGroup();
  }
}

// --- cache-latents -------------------------------------------------------------------------------------

export interface CacheLatentsSettings {
  /** Side of the ADM center crop (folders). */
  imageSize: number;
  /** Also store the latents of every image mirrored left-right. */
  flip: boolean;
  /** Images per encoder call. */
  batchSize: number;
  /** Images per shard. */
  shardSize: number;
  /** The encoder under bfloat16 autocast or not; auto (default): bf16 on CUDA and bfloat16-capable CPUs. */
  precision: torch.Precision;
}

export const CACHE_LATENTS_RUN_DEFAULTS: CacheLatentsSettings = { imageSize: 256, flip: false, batchSize: 32, shardSize: 1000, precision: 'auto' };

/** `reals cache-latents`'s flags, camelCased. */
export interface CacheLatentsRunOptions extends Partial<CacheLatentsSettings>, HubRunOptions {
  dataPath: string;
  vaePath: string;
  /** The cache folder (index.json + shard-NNNNN.npz); rerunning continues an interrupted cache. */
  out: string;
  numWorkers?: number;
  device?: string;
}

/** Encodes the dataset into the cache; under `reals launch` the shards are shared out over the ranks. */
export async function runCacheLatents(options: CacheLatentsRunOptions): Promise<CacheLatentsResult> {
  const o = { ...options, ...withDefaults(CACHE_LATENTS_RUN_DEFAULTS, options) };
  torch.checkDevice(o.device);
  o.vaePath = await resolveVaePath(o.vaePath, o);
  const vae = loadVaeFolder(o.vaePath);
  if (o.dataPath !== 'fashion-mnist') latentSize(vae, o.imageSize);
  const dataset = loadImageDataset(o.dataPath, o.imageSize, vae.config.inChannels);
  const worldSize = torch.distributed.launchedWorldSize();
  // Ranks that finish their shards wait in a barrier for the others' last ones (on a resumed
  // cache, all of another rank's remaining shards): PyTorch's 30 minutes, not the 5 of training.
  if (worldSize > 1) torch.distributed.initProcessGroup({ timeoutMs: process.env.REALS_DIST_TIMEOUT_S ? torch.distributed.defaultTimeoutMs() : 30 * 60 * 1000 });
  try {
    return await cacheLatents({
      dataset, vae, vaePath: o.vaePath, out: o.out, classNames: datasetClassNames(o.dataPath), flip: o.flip, batchSize: o.batchSize,
      shardSize: o.shardSize, numWorkers: o.numWorkers, device: o.device, precision: o.precision,
    });
  } finally {
    if (worldSize > 1) torch.distributed.destroyProcessGroup();
  }
}
