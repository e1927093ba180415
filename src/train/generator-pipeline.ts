// The pipelines behind `reals sit train` / `reals dit train` (SiT's and DiT's train.py), `reals
// sample ode|sde|ddpm|ddim` (their sample_ddp.py) and `reals cache-latents`, from files and names
// as those scripts take them. The latents come from a cache (latentsPath) or from images encoded on
// the fly (dataPath with vaePath); under `reals launch` each rank does its share.
import { existsSync } from 'node:fs';
import { basename } from 'node:path';
import * as torch from '../torch/index.js';
import { checkWritableDir, readJsonFile } from '../io/index.js';
import { SIT_CONFIGS, SIT_CONFIG_SIZES, type SiTConfig, type SiTName } from '../models/sit.js';
import { checkHeads, checkSizes, checkWeightsFit, sitParameters } from '../models/config-sizes.js';
import { DataLoader } from '../data/index.js';
import {
  TRANSPORT_DEFAULTS, type DiffusionForm, type LastStep, type LossWeight, type OdeMethod, type PathType, type Prediction, type SdeMethod, type TransportConfig,
} from '../diffusion/index.js';
import { loadGenerator, savedGeneratorSpec, trainGenerator, type GeneratorKind, type GeneratorSpec, type GeneratorTrainResult, type LoadedGenerator } from './sit.js';
import { sampleImages, type LabelSampling, type SampleImagesResult } from '../sampling/sample.js';
import type { AutoencoderKL } from '../models/autoencoder-kl.js';
import {
  CachedLatents, EncodedImages, LatentCache, cacheLatents, describeNormalization, latentNormalization, type CacheLatentsResult, type LatentNormalization, type LatentSource,
} from '../data/latents.js';
import { withDefaults } from '../runlog/process.js';
import { createOnnxSampler } from '../sampling/onnx-backend.js';
import { datasetClassNames, latentSize, loadImageDataset, loadVaeFolder, resolveVaePath, type HubRunOptions } from '../data/inputs.js';
import { resolveGeneratorCheckpoint } from '../hub/index.js';
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

// --- sample --------------------------------------------------------------------------------------------

export type SampleMode = 'ode' | 'sde' | 'ddpm' | 'ddim';

/** Which generator each sampler draws from. */
export const SAMPLE_MODE_KIND = { ode: 'SiT', sde: 'SiT', ddpm: 'DiT', ddim: 'DiT' } as const satisfies Record<SampleMode, GeneratorKind>;

/** The settings of a sampling run that have defaults (`reals sample ode --help` shows them). */
export interface SampleSettings {
  /** Samples go to <sampleDir>/<run name>/, with <run name>.npz and .png beside it. */
  sampleDir: string;
  perProcBatchSize: number;
  numFidSamples: number;
  cfgScale: number;
  guidanceLow: number;
  guidanceHigh: number;
  numSamplingSteps: number;
  globalSeed: number;
  weights: 'ema' | 'model';
  /** ODE */
  atol: number;
  rtol: number;
  reverse: boolean;
  /** SDE */
  diffusionForm: DiffusionForm;
  diffusionNorm: number;
  lastStep: LastStep;
  lastStepSize: number;
  /** The networks under bfloat16 autocast or not; auto (default): bf16 on CUDA and bfloat16-capable CPUs. */
  precision: torch.Precision;
  /** Labels cycle through the classes (balanced) or are drawn as SiT's sample_ddp.py (random). */
  labelSampling: LabelSampling;
}

export const SAMPLE_RUN_DEFAULTS: SampleSettings = {
  sampleDir: 'samples', perProcBatchSize: 4, numFidSamples: 50_000, cfgScale: 1.0, guidanceLow: 0, guidanceHigh: 1,
  numSamplingSteps: 250, globalSeed: 0, weights: 'ema', atol: 1e-6, rtol: 1e-3, reverse: false, diffusionForm: 'sigma', diffusionNorm: 1.0,
  lastStep: 'Mean', lastStepSize: 0.04, precision: 'auto', labelSampling: 'balanced',
};

/** What an official checkpoint (no metadata) is taken to be when the flags do not say: sample_ddp.py's defaults. */
export const OFFICIAL_CHECKPOINT_DEFAULTS = { imageSize: 256, numClasses: 1000, model: { SiT: 'SiT-XL/2', DiT: 'DiT-XL/2' } } as const;

/** The default sampling method of each sampler (sample_ddp.py's). */
export const SAMPLE_METHOD_DEFAULTS: Record<SampleMode, string> = { ode: 'dopri5', sde: 'Euler', ddpm: 'ddpm', ddim: 'ddim' };

/** `reals sample <mode>`'s flags, camelCased; the ones left out take SAMPLE_RUN_DEFAULTS. */
export interface SampleRunOptions extends Partial<SampleSettings>, HubRunOptions {
  /**
   * A SIT_CONFIGS name of the sampler's kind, or a .json of SiTConfig fields. Default: the
   * network a reals checkpoint records; for an official file OFFICIAL_CHECKPOINT_DEFAULTS.
   */
  model?: string;
  /** Image side; the latent side is this / the VAE's factor. Default: the checkpoint's, else 256. */
  imageSize?: number;
  /** Default: the checkpoint's, else 1000. */
  numClasses?: number;
  /** A reals checkpoint (.safetensors) or an official .pt. */
  ckpt: string;
  /** The diffusers AutoencoderKL folder that decodes the latents. */
  vaePath: string;
  /** Leading channels to guide, or 'all' (REPA); default the official 3 for 4 latent channels, all for other widths. */
  cfgChannels?: number | 'all';
  /** SiT: default the checkpoint's transport. */
  pathType?: PathType;
  prediction?: Prediction;
  lossWeight?: LossWeight;
  trainEps?: number;
  sampleEps?: number;
  /** Default SAMPLE_METHOD_DEFAULTS[mode]. */
  samplingMethod?: string;
  /** 'onnxruntime': the ODE sampler (euler, heun2) through onnxruntime-node on the CPU; default 'libtorch'. */
  backend?: SampleBackend;
  /** Decode with vaePath even where the checkpoint records another VAE (default: refuse). */
  allowVaeMismatch?: boolean;
  device?: string;
  log?: (line: string) => void;
}

export const SAMPLE_BACKENDS = ['libtorch', 'onnxruntime'] as const;
export type SampleBackend = (typeof SAMPLE_BACKENDS)[number];

/** Python's str(float): 4.0 → "4.0", as sample_ddp.py's folder names print the flags. */
function pyFloat(value: number): string { return Number.isInteger(value) ? value.toFixed(1) : String(value); }

/**
 * sample_ddp.py's folder name for the samples, then the guidance interval and the seed (and a
 * backend other than libtorch, random labels, a --cfg-channels given), so that runs differing only
 * in those do not share a folder.
 */
export function sampleFolderName(mode: SampleMode, options: SampleRunOptions & SampleSettings & { model: string }, method: string): string {
  const model = options.model.endsWith('.json') ? basename(options.model, '.json') : options.model.replaceAll('/', '-');
  const ckpt = basename(options.ckpt).replace('.pt', '').replace('.safetensors', '');
  const head = `${model}-${ckpt}-cfg-${pyFloat(options.cfgScale)}-${options.perProcBatchSize}-${mode.toUpperCase()}-${options.numSamplingSteps}`;
  const tail = `interval-${pyFloat(options.guidanceLow)}-${pyFloat(options.guidanceHigh)}-seed-${options.globalSeed}` +
    (options.backend === undefined || options.backend === 'libtorch' ? '' : `-${options.backend}`) +
    (options.labelSampling === 'random' ? '-random-labels' : '') +
    (options.cfgChannels === undefined ? '' : `-cfg-channels-${options.cfgChannels}`);
  if (mode === 'ddpm' || mode === 'ddim') return `${head}-${tail}`;
  return mode === 'ode' ? `${head}-${method}-${tail}` : `${head}-${method}-${options.diffusionForm}-${options.lastStep ?? 'None'}-${pyFloat(options.lastStepSize)}-${tail}`;
}

/** The flags that say which generator a checkpoint holds (a reals checkpoint says it itself). */
export interface GeneratorFlags {
  ckpt: string; model?: string; imageSize?: number; numClasses?: number; weights?: 'ema' | 'model'; log?: (line: string) => void;
  /** --allow-vae-mismatch: decode with a VAE other than the one the checkpoint records (checkDecoder). */
  allowVaeMismatch?: boolean;
}

/**
 * Loads the generator of `--ckpt` for the VAE at `vaePath`: a reals checkpoint's own network (flags
 * that contradict it are refused), or an official file read as `--model` (default
 * OFFICIAL_CHECKPOINT_DEFAULTS) at `--image-size` with `--num-classes`. `kind` null takes the kind
 * the checkpoint or `--model` names. The normalization is the checkpoint's, else the VAE folder's.
 * A VAE other than the one the checkpoint was trained on is refused (checkDecoder), for sampling
 * and for the web page alike.
 */
export function loadGeneratorFor(
  o: GeneratorFlags, kind: GeneratorKind | null, vae: AutoencoderKL, vaePath: string,
): { loaded: LoadedGenerator; model: string; normalization: LatentNormalization } {
  const recorded = savedGeneratorSpec(o.ckpt);
  let expected: GeneratorSpec;
  if (o.model === undefined && recorded !== null) {
    const saved = recorded;
    // The checkpoint says what it is; flags that contradict it are refused rather than ignored.
    if (kind !== null && saved.kind !== kind) throw new Error(`--ckpt ${o.ckpt} holds a ${saved.kind}; sample it with ${saved.kind === 'SiT' ? 'ode or sde' : 'ddpm or ddim'}`);
    const imageSize = saved.config.inputSize * vae.downsamplingFactor;
    if (o.imageSize !== undefined && latentSize(vae, o.imageSize) !== saved.config.inputSize) {
      throw new Error(`--image-size ${o.imageSize}: --ckpt ${o.ckpt} was trained on ${saved.config.inputSize}x${saved.config.inputSize} latents (${imageSize}x${imageSize} images through --vae-path)`);
    }
    if (o.numClasses !== undefined && o.numClasses !== saved.config.numClasses) {
      throw new Error(`--num-classes ${o.numClasses}: --ckpt ${o.ckpt} was trained with ${saved.config.numClasses} classes`);
    }
    expected = saved;
  } else {
    const resolvedKind = kind ?? (o.model?.startsWith('DiT') ? 'DiT' : 'SiT');
    expected = resolveGeneratorSpec(o.model ?? OFFICIAL_CHECKPOINT_DEFAULTS.model[resolvedKind], resolvedKind, {
      inputSize: latentSize(vae, o.imageSize ?? OFFICIAL_CHECKPOINT_DEFAULTS.imageSize), inChannels: vae.config.latentChannels,
      numClasses: o.numClasses ?? OFFICIAL_CHECKPOINT_DEFAULTS.numClasses, classDropoutProb: 0.1,
    });
  }
  const loaded = loadGenerator(o.ckpt, { spec: expected, weights: o.weights });
  checkDecoder(loaded.vae, vae, { ...o, vaePath });
  const normalization = loaded.normalization ?? latentNormalization(vaePath, vae);
  if (loaded.normalization !== null) {
    const own = (() => { try { return latentNormalization(vaePath, vae); } catch { return null; } })();
    if (own !== null && JSON.stringify(own) !== JSON.stringify(loaded.normalization)) {
      (o.log ?? console.warn)(`note: ${o.ckpt} was trained on latents normalized by ${describeNormalization(loaded.normalization)}; ` +
        `using that, not --vae-path's ${describeNormalization(own)}`);
    }
  }
  return { loaded, model: o.model ?? expected.name, normalization };
}

/**
 * Refuses to decode a generator's latents with a VAE other than the one it was trained on, unless
 * `allowVaeMismatch`; a checkpoint that records none (an official file, or one written before
 * reals recorded it) samples with a note.
 */
function checkDecoder(
  recorded: VaeIdentity | null, vae: AutoencoderKL, o: { ckpt: string; vaePath: string; allowVaeMismatch?: boolean; log?: (line: string) => void },
): void {
  const log = o.log ?? console.warn;
  if (recorded === null) {
    log(`note: --ckpt ${o.ckpt} does not record the VAE it was trained on (an official file, or written before reals recorded it): ` +
      `--vae-path ${o.vaePath} is not checked against it`);
    return;
  }
  const given = vaeIdentity(vae);
  if (sameVae(recorded, given)) return;
  const what = `--ckpt ${o.ckpt} was trained on the latents of another VAE (${describeVae(recorded)}) than --vae-path ${o.vaePath} (${describeVae(given)})`;
  if (o.allowVaeMismatch !== true) throw new Error(`${what}: its samples would be decoded wrongly; give the VAE it was trained on, or pass --allow-vae-mismatch to decode with this one`);
  log(`note: ${what}; decoding with it anyway (--allow-vae-mismatch)`);
}

/** Loads the generator and the VAE, checks them against each other, and samples into the sample folder. */
export async function runSample(mode: SampleMode, options: SampleRunOptions): Promise<SampleImagesResult> {
  const o = { ...options, ...withDefaults(SAMPLE_RUN_DEFAULTS, options) };
  if (o.cfgScale < 1) throw new Error(`--cfg-scale ${o.cfgScale}: must be at least 1 (1 samples without guidance)`);
  if (o.guidanceLow > o.guidanceHigh) throw new Error(`--guidance-low ${o.guidanceLow} is above --guidance-high ${o.guidanceHigh}`);
  torch.checkDevice(o.device);
  // Before any model loads: an output folder that cannot be made fails now, in a few system calls.
  checkWritableDir(o.sampleDir, '--sample-dir');
  const method = o.samplingMethod ?? SAMPLE_METHOD_DEFAULTS[mode];
  const odeMethods = ['euler', 'heun2', 'heun-repa', 'dopri5'];
  if (mode === 'ode' && !odeMethods.includes(method)) throw new Error(`--sampling-method ${method}: the ODE sampler knows ${odeMethods.join(', ')}`);
  if (mode === 'sde' && !['Euler', 'Heun'].includes(method)) throw new Error(`--sampling-method ${method}: the SDE sampler knows Euler, Heun`);
  const backend = o.backend ?? 'libtorch';
  if (!(SAMPLE_BACKENDS as readonly string[]).includes(backend)) throw new Error(`--backend ${backend}: one of ${SAMPLE_BACKENDS.join(', ')}`);
  if (backend === 'onnxruntime' && !((mode === 'ode' && ['euler', 'heun2'].includes(method)) || (mode === 'sde' && method === 'Euler'))) {
    throw new Error(`--backend onnxruntime runs the ODE sampler with --sampling-method euler or heun2, and the SDE with Euler (got ${mode} ${method})`);
  }
  // Everything is fetched, loaded and checked before the process group starts or any sample is drawn.
  o.vaePath = await resolveVaePath(o.vaePath, o);
  o.ckpt = await resolveGeneratorCheckpoint(o.ckpt, o);
  const vae = loadVaeFolder(o.vaePath);
  const latentChannels = vae.config.latentChannels;
  if (typeof o.cfgChannels === 'number' && o.cfgChannels > latentChannels) {
    throw new Error(`--cfg-channels ${o.cfgChannels}: the latents have ${latentChannels} channels (--vae-path ${o.vaePath}); give at most ${latentChannels}, or all`);
  }
  const { loaded, model, normalization } = loadGeneratorFor(o, SAMPLE_MODE_KIND[mode], vae, o.vaePath);
  // A VAE let through by --allow-vae-mismatch must still have the model's latent width.
  const modelChannels = loaded.spec.config.inChannels;
  if (latentChannels !== modelChannels) throw new Error(`--vae-path ${o.vaePath}: the VAE has ${latentChannels} latent channels, --ckpt ${o.ckpt} takes ${modelChannels}`);
  if (normalization.mean.length !== modelChannels) {
    throw new Error(`--ckpt ${o.ckpt}: its latent normalization has ${normalization.mean.length} channels, its model ${modelChannels}`);
  }
  const saved: Partial<TransportConfig> = loaded.transport ?? {};
  const transport: Partial<TransportConfig> = {
    pathType: o.pathType ?? saved.pathType, prediction: o.prediction ?? saved.prediction,
    lossWeight: o.lossWeight !== undefined ? o.lossWeight : saved.lossWeight, trainEps: o.trainEps ?? saved.trainEps,
    sampleEps: o.sampleEps ?? saved.sampleEps,
  };
  const onnx = backend === 'libtorch' ? undefined : await createOnnxSampler({
    model: loaded.model.eval(), vae: vae.eval(), normalization, mode: mode as 'ode' | 'sde', method: mode === 'ode' ? method as 'euler' | 'heun2' : undefined,
    sde: { diffusionForm: o.diffusionForm, diffusionNorm: o.diffusionNorm, lastStep: o.lastStep, lastStepSize: o.lastStepSize }, steps: o.numSamplingSteps, cfgScale: o.cfgScale,
    cfgChannels: o.cfgChannels, guidanceLow: o.guidanceLow, guidanceHigh: o.guidanceHigh, transport, labelSampling: o.labelSampling,
  });
  const worldSize = torch.distributed.launchedWorldSize();
  if (worldSize > 1) torch.distributed.initProcessGroup();
  try {
    return await sampleImages({
      onnx, model: loaded.model, vae, normalization, method: mode, numSamples: o.numFidSamples, batchSize: o.perProcBatchSize,
      seed: o.globalSeed, sampleDir: `${o.sampleDir}/${sampleFolderName(mode, { ...o, model }, method)}`, steps: o.numSamplingSteps,
      cfgScale: o.cfgScale, cfgChannels: o.cfgChannels, guidanceLow: o.guidanceLow, guidanceHigh: o.guidanceHigh, transport, device: o.device, precision: o.precision, log: o.log,
      labelSampling: o.labelSampling,
      ...(mode === 'ode'
        ? { ode: { samplingMethod: method as OdeMethod, atol: o.atol, rtol: o.rtol, reverse: o.reverse } }
        : mode === 'ddpm' || mode === 'ddim' ? {} : {
          sde: {
            samplingMethod: method as SdeMethod, diffusionForm: o.diffusionForm, diffusionNorm: o.diffusionNorm,
            lastStep: o.lastStep, lastStepSize: o.lastStepSize,
          },
        }),
    });
  } finally {
    await onnx?.release();
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
