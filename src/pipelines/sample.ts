// The pipeline behind `reals sample ode|sde|ddpm|ddim` (SiT's and DiT's sample_ddp.py): the
// generator from --ckpt (ours, an official file or a hub name) checked against --model, the VAE
// folder and the normalization the generator was trained with, then src/sampling's sampleImages on
// libtorch or onnxruntime; under `reals launch` each rank draws its share.
import { basename } from 'node:path';
import * as torch from '../torch/index.js';
import { checkWritableDir } from '../io/index.js';
import { SIT_CONFIGS, type SiTConfig } from '../models/sit.js';
import {
  type DiffusionForm, type LastStep, type LossWeight, type OdeMethod, type PathType, type Prediction, type SdeMethod, type TransportConfig,
} from '../diffusion/index.js';
import { loadGenerator, savedGeneratorSpec, type GeneratorKind, type GeneratorSpec, type LoadedGenerator } from '../train/sit.js';
import { sampleImages, type SampleImagesResult } from '../sampling/sample.js';
import { type LabelSampling } from '../sampling/labels.js';
import type { AutoencoderKL } from '../models/autoencoder-kl.js';
import { describeNormalization, latentNormalization, type LatentNormalization } from '../data/latent-normalization.js';
import { withDefaults } from '../runlog/process.js';
import { createOnnxSampler } from '../sampling/onnx-backend.js';
import { latentSize, loadVaeFolder, resolveVaePath, type HubRunOptions } from '../data/inputs.js';
import { resolveGeneratorCheckpoint } from '../hub/index.js';
import { describeVae, sameVae, vaeIdentity, type VaeIdentity } from '../data/vae-identity.js';
import { resolveGeneratorSpec } from './generator.js';

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
