// The pipelines behind `reals align train` and `reals align convert`, from files and names as the
// reference scripts take them: build the models (a diffusers VAE folder or state dict, DINOv2
// weights, a taming discriminator, LPIPS weights) and the data, join the process group under
// `reals launch`, and call trainAlignment (align.ts) or convertAlignment (align-convert.ts).
import { statSync } from 'node:fs';
import { join } from 'node:path';
import * as torch from '../torch/index.js';
import { CONFIG_NAME, checkWritableDir } from '../io/index.js';
import { DinoVisionTransformer, resolveDinoConfig, type DinoV2Config } from '../models/dinov2.js';
import { HOG_TEACHER_NAME, HogTeacher } from '../models/hog.js';
import { ALIGNMENT_DEFAULTS, AlignmentHeads, type AlignLossKind, type ClsPooling, type PatchProjection, type TeacherNorm } from '../models/alignment.js';
import { NLayerDiscriminator } from '../models/discriminator.js';
import { resolveVaeConfig, type AutoencoderKLConfig } from '../models/autoencoder-kl.js';
import { LPIPS } from '../models/lpips.js';
import { DataLoader } from '../data/index.js';
import { ALIGN_LOSS_DEFAULTS, trainAlignment, type AlignTrainResult } from '../train/align.js';
import { ALIGN_HEADS_NAME, convertAlignment, loadAlignedModels, type AlignConvertResult } from '../train/align-convert.js';
import { withDefaults } from '../runlog/process.js';
import { loadImageDataset, loadStartingVae, resolveVaePath, type HubRunOptions } from '../data/inputs.js';
import { fetchDinov2Checkpoint, fetchLpipsWeights } from '../hub/index.js';
import { checkStepMemory, dinoForwardBytes, lpipsTrainBytes, vaeTrainBytes } from '../train/memory.js';
import { EQ_MAX_SCALE } from '../train/equivariance.js';

/** The settings of an alignment run that have defaults (`reals align train --help` shows them). */
export interface AlignTrainSettings {
  /** Side of the ADM center crop of folder images. */
  imageSize: number;
  /** A DINOV2_CONFIGS name, a .json file of DinoV2Config fields, or `hog` (HogTeacher: no weights). */
  dinoModel: string;
  /**
   * The VAE architecture for a state-dict --vae-ckpt or from scratch: an AUTOENCODER_KL_CONFIGS name
   * or a config.json. A diffusers folder as --vae-ckpt has its own, which the run's args record.
   */
  vaeConfig: string;
  maxEpoch: number;
  /** Images per batch per process. */
  batchSize: number;
  /** Runs go to <resultsDir>/NNN-align. */
  resultsDir: string;
  seed: number;
  /** The forwards under bfloat16 autocast or not; auto: bf16 on CUDA and bfloat16-capable CPUs. */
  precision: torch.Precision;
  ckptEvery: number;
  logEvery: number;
  imageEvery: number;
  mlpHidden: number;
  mlpDepth: number;
  clsPooling: ClsPooling;
  clsPoolSize: number;
  /** MLP_patch, or iREPA's 3x3 conv projector. */
  patchProj: PatchProjection;
  /** iREPA's spatial normalisation of the teacher's patch tokens, or none. */
  teacherNorm: TeacherNorm;
  /** The share of the spatial mean --teacher-norm spatial subtracts. */
  teacherNormAlpha: number;
  /** The patch loss: ReaLS's cosine or VA-VAE's vf loss. */
  alignLoss: AlignLossKind;
  vfMarginCos: number;
  vfMarginDistmat: number;
  vfWeightCos: number;
  vfWeightDistmat: number;
  vfWeight: number;
  /** VA-VAE's adaptive weight on the vf term (false: --vf-weight alone). */
  vfAdaptive: boolean;
  recLoss: 'mse' | 'l1';
  recWeight: number;
  lpipsWeight: number;
  klWeight: number;
  patchWeight: number;
  clsWeight: number;
  smoothL1Weight: number;
  discWeight: number;
  discStart: number;
  /** EQ-VAE's term (0: off) and whether its transform turns as well as downscales. */
  eqWeight: number;
  eqRotation: boolean;
}

export const ALIGN_TRAIN_RUN_DEFAULTS: AlignTrainSettings = {
  imageSize: 256, dinoModel: 'dinov2_vitb14', vaeConfig: 'sd-vae', maxEpoch: 100, batchSize: 8, resultsDir: 'results',
  seed: 0, precision: 'auto', ckptEvery: 5000, logEvery: 100, imageEvery: 1000,
  mlpHidden: ALIGNMENT_DEFAULTS.hiddenDim, mlpDepth: ALIGNMENT_DEFAULTS.depth, clsPooling: ALIGNMENT_DEFAULTS.clsPooling, clsPoolSize: ALIGNMENT_DEFAULTS.clsPoolSize,
  patchProj: ALIGNMENT_DEFAULTS.patchProj, teacherNorm: ALIGNMENT_DEFAULTS.teacherNorm, teacherNormAlpha: ALIGNMENT_DEFAULTS.teacherNormAlpha,
  alignLoss: ALIGNMENT_DEFAULTS.alignLoss,
  vfMarginCos: ALIGN_LOSS_DEFAULTS.vfCosMargin, vfMarginDistmat: ALIGN_LOSS_DEFAULTS.vfDistmatMargin, vfWeightCos: ALIGN_LOSS_DEFAULTS.vfCosWeight,
  vfWeightDistmat: ALIGN_LOSS_DEFAULTS.vfDistmatWeight, vfWeight: ALIGN_LOSS_DEFAULTS.vfWeight, vfAdaptive: ALIGN_LOSS_DEFAULTS.vfAdaptive,
  recLoss: ALIGN_LOSS_DEFAULTS.reconstruction, recWeight: ALIGN_LOSS_DEFAULTS.reconstructionWeight, lpipsWeight: ALIGN_LOSS_DEFAULTS.lpipsWeight,
  klWeight: ALIGN_LOSS_DEFAULTS.klWeight, patchWeight: ALIGN_LOSS_DEFAULTS.patchWeight, clsWeight: ALIGN_LOSS_DEFAULTS.clsWeight,
  smoothL1Weight: ALIGN_LOSS_DEFAULTS.smoothL1Weight, discWeight: ALIGN_LOSS_DEFAULTS.discWeight, discStart: ALIGN_LOSS_DEFAULTS.discStart,
  eqWeight: ALIGN_LOSS_DEFAULTS.eqWeight, eqRotation: ALIGN_LOSS_DEFAULTS.eqRotation,
};

/** `reals align train`'s flags, camelCased; the ones left out take ALIGN_TRAIN_RUN_DEFAULTS. */
export interface AlignTrainRunOptions extends Partial<AlignTrainSettings>, HubRunOptions {
  /** An ImageNet-layout image folder (class subfolders), or `fashion-mnist`. */
  dataPath: string;
  /**
   * Side images are resized to for the teacher (unused by HOG); default teacherInputSize: the
   * teacher's own (a .json config's imgSize), or one token per latent position.
   */
  dinoInputSize?: number;
  /** The teacher's weights (torch-hub or Hugging Face naming); default the torch-hub checkpoint of a published dinoModel, fetched into its cache. */
  dinoCkpt?: string;
  /** The VAE to start from (loadStartingVae; a Hugging Face repo id is fetched); default --vae-config from scratch. */
  vaeCkpt?: string;
  discCkpt?: string;
  /** LPIPS's torchvision VGG16 and linear layers; default their upstream files, fetched into the torch hub cache. */
  lpipsVgg?: string;
  lpipsLin?: string;
  /** Default 5e-5; on resume, unless given, the checkpoint's. */
  lr?: number;
  /** Default 0.9999; on resume, unless given, the checkpoint's. */
  emaDecay?: number;
  maxSteps?: number;
  numWorkers?: number;
  resume?: string;
  keepLast?: number;
  /** One-line notices (default console.log). */
  log?: (line: string) => void;
}

/**
 * The teacher's input side when --dino-input-size is not given: a .json teacher's (one of
 * `reals teacher train`, or configs/teacher/) own imgSize, the size it learned at; a published
 * DINOv2's patch size times the latent side, one token on each latent position (ReaLS's 448 =
 * 14 x 32 for 256 px images and an f8 VAE).
 */
export function teacherInputSize(dinoModel: string, config: DinoV2Config, latentSide: number): { size: number; why: string } {
  if (dinoModel.endsWith('.json')) return { size: config.imgSize, why: `the teacher's own imgSize (${dinoModel})` };
  const size = config.patchSize * latentSide;
  return { size, why: `patch size ${config.patchSize} x latent side ${latentSide}: one ${dinoModel} token on each latent position` };
}

/** The fields of a VAE config that do not shape its network: the latents' normalization and what only pipelines read. */
const NON_ARCHITECTURE_FIELDS = new Set(['sampleSize', 'scalingFactor', 'shiftFactor', 'latentsMean', 'latentsStd', 'forceUpcast']);

/**
 * The architecture fields --vae-config `name` sets that differ from `config`'s (a diffusers
 * folder's, whose normalization align convert rewrote), each as `field: given, not the folder's`.
 */
function vaeConfigDifferences(name: string, config: AutoencoderKLConfig): string[] {
  return Object.entries(resolveVaeConfig(name))
    .filter(([field, value]) => !NON_ARCHITECTURE_FIELDS.has(field) && JSON.stringify(value) !== JSON.stringify(config[field as keyof AutoencoderKLConfig]))
    .map(([field, value]) => `${field}: ${JSON.stringify(value)}, not the folder's ${JSON.stringify(config[field as keyof AutoencoderKLConfig])}`);
}

/** Builds everything from the options and trains; under `reals launch` (WORLD_SIZE > 1) as one rank of DDP. */
export async function runAlignTrain(options: AlignTrainRunOptions): Promise<AlignTrainResult> {
  const { log, ...given } = options;
  const o = { ...given, ...withDefaults(ALIGN_TRAIN_RUN_DEFAULTS, given) };
  // Before any model loads: an output folder that cannot be made fails now, in a few system calls.
  if (o.resume === undefined) checkWritableDir(o.resultsDir, '--results-dir');
  const hog = o.dinoModel === HOG_TEACHER_NAME ? new HogTeacher() : null;
  if (hog !== null && o.dinoCkpt !== undefined) throw new Error(`--dino-ckpt ${o.dinoCkpt}: --dino-model ${HOG_TEACHER_NAME} has no weights`);
  const dinoConfig = hog === null ? resolveDinoConfig(o.dinoModel) : null;
  if (dinoConfig !== null && o.dinoInputSize !== undefined && o.dinoInputSize % dinoConfig.patchSize !== 0) {
    throw new Error(`--dino-input-size ${o.dinoInputSize} is not divisible by the DINOv2 patch size ${dinoConfig.patchSize} ` +
      `(448 = 32 x 14 gives one token per latent position of a 256 px image)`);
  }
  // Weights not given are fetched (or found in their caches) before the process group starts.
  const hub = { offline: o.offline };
  if (dinoConfig !== null) o.dinoCkpt ??= await fetchDinov2Checkpoint(o.dinoModel, hub);
  if (o.vaeCkpt !== undefined) o.vaeCkpt = await resolveVaePath(o.vaeCkpt, { ...hub, revision: o.revision, flag: '--vae-ckpt' });
  if (o.lpipsWeight > 0 && (o.lpipsVgg === undefined || o.lpipsLin === undefined)) {
    const fetched = await fetchLpipsWeights(hub).catch((error: Error) => {
      throw new Error(`LPIPS (--lpips-weight ${o.lpipsWeight}): ${error.message}; or give --lpips-vgg and --lpips-lin, or train without LPIPS: --lpips-weight 0`, { cause: error });
    });
    o.lpipsVgg ??= fetched.vgg16;
    o.lpipsLin ??= fetched.lin;
  }
  const worldSize = torch.distributed.launchedWorldSize();
  if (worldSize > 1) torch.distributed.initProcessGroup();
  const rank = worldSize > 1 ? torch.distributed.getRank() : 0;
  try {
    torch.manualSeed(o.seed);
    const vae = loadStartingVae(o.vaeCkpt, o.vaeConfig);
    // A diffusers folder brings its own architecture: the run records its config.json, unless a
    // --vae-config given beside it describes the same network.
    if (o.vaeCkpt !== undefined && statSync(o.vaeCkpt).isDirectory()) {
      const differences = given.vaeConfig === undefined ? null : vaeConfigDifferences(given.vaeConfig, vae.config);
      if (differences !== null && differences.length > 0 && rank === 0) {
        (log ?? console.log)(`note: --vae-config ${given.vaeConfig} is not used: --vae-ckpt ${o.vaeCkpt} has its own ${CONFIG_NAME} (${differences.slice(0, 3).join('; ')})`);
      }
      if (differences === null || differences.length > 0) o.vaeConfig = join(o.vaeCkpt, CONFIG_NAME);
    }
    if (dinoConfig !== null && o.dinoInputSize === undefined) {
      const factor = vae.downsamplingFactor;
      if (o.imageSize % factor !== 0) throw new Error(`--image-size ${o.imageSize} is not a multiple of the VAE's downsampling factor ${factor}`);
      const chosen = teacherInputSize(o.dinoModel, dinoConfig, o.imageSize / factor);
      o.dinoInputSize = chosen.size;
      if (rank === 0) (log ?? console.log)(`--dino-input-size ${chosen.size}: ${chosen.why}`);
    }
    const dinoInputSize = hog === null ? o.dinoInputSize : undefined;
    const dino = hog ?? new DinoVisionTransformer(dinoConfig!).loadCheckpoint(o.dinoCkpt!);
    // --cls-weight 0 builds no MLP_cls: patch-only alignment leaves no untrained weights behind.
    const heads = new AlignmentHeads({
      latentChannels: vae.config.latentChannels, featureDim: hog?.embedDim ?? dinoConfig!.embedDim,
      hiddenDim: o.mlpHidden, depth: o.mlpDepth, clsPooling: o.clsPooling, clsPoolSize: o.clsPoolSize,
      patchProj: o.patchProj, clsHead: o.clsWeight > 0, teacherNorm: o.teacherNorm, teacherNormAlpha: o.teacherNormAlpha, alignLoss: o.alignLoss,
    });
    const discriminator = o.discCkpt === undefined
      ? new NLayerDiscriminator({ inputNc: vae.config.outChannels })
      : NLayerDiscriminator.fromCheckpoint(o.discCkpt, { inputNc: vae.config.outChannels });
    const lpips = o.lpipsWeight > 0 ? LPIPS.fromPretrained({ vgg16: o.lpipsVgg!, lin: o.lpipsLin! }) : null;
    checkStepMemory({
      'VAE': vaeTrainBytes(vae.config, o.batchSize, o.imageSize),
      ...(dinoConfig === null ? {} : { 'DINOv2 at --dino-input-size': dinoForwardBytes(dinoConfig, o.batchSize, dinoInputSize!) }),
      ...(lpips === null ? {} : { LPIPS: lpipsTrainBytes(o.batchSize, o.imageSize) }),
      // EQ-VAE's second decode, at most at the largest scaled side: the decoder's half of a VAE step, and LPIPS on it.
      ...(o.eqWeight > 0 ? { 'EQ-VAE\'s decode': vaeTrainBytes(vae.config, o.batchSize, o.imageSize * EQ_MAX_SCALE) / 2 } : {}),
      ...(o.eqWeight > 0 && lpips !== null ? { 'LPIPS on EQ-VAE\'s decode': lpipsTrainBytes(o.batchSize, o.imageSize * EQ_MAX_SCALE) } : {}),
    }, `--batch-size ${o.batchSize}, ${dinoConfig === null ? '' : `--dino-input-size ${dinoInputSize} `}or --image-size ${o.imageSize}`, torch.cuda.isAvailable() ? 'cuda' : 'cpu');
    const data = new DataLoader(loadImageDataset(o.dataPath, o.imageSize, vae.config.inChannels), {
      batchSize: o.batchSize, seed: o.seed, rank, worldSize, numWorkers: o.numWorkers,
    });
    try {
      return await trainAlignment({
        vae, dino, dinoInputSize, heads, discriminator, lpips, data,
        resultsDir: o.resultsDir, resume: o.resume, lr: o.lr, emaDecay: o.emaDecay,
        maxEpoch: o.maxEpoch, maxSteps: o.maxSteps, ckptEvery: o.ckptEvery, keepLast: o.keepLast,
        logEvery: o.logEvery, imageEvery: o.imageEvery, seed: o.seed, precision: o.precision, args: o, log,
        reconstruction: o.recLoss, reconstructionWeight: o.recWeight, lpipsWeight: o.lpipsWeight, klWeight: o.klWeight,
        patchWeight: o.patchWeight, clsWeight: o.clsWeight, smoothL1Weight: o.smoothL1Weight,
        vfCosMargin: o.vfMarginCos, vfDistmatMargin: o.vfMarginDistmat, vfCosWeight: o.vfWeightCos, vfDistmatWeight: o.vfWeightDistmat,
        vfWeight: o.vfWeight, vfAdaptive: o.vfAdaptive,
        discWeight: o.discWeight, discStart: o.discStart,
        eqWeight: o.eqWeight, eqRotation: o.eqRotation,
      });
    } finally {
      await data.close();
    }
  } finally {
    if (worldSize > 1) torch.distributed.destroyProcessGroup();
  }
}

export interface AlignConvertSettings {
  /** Convert the EMA weights (ema.*) instead of the trained ones (model.*). */
  useEma: boolean;
  /** Images per encoder call. */
  batchSize: number;
  /** Seeds the subset and the posterior samples. */
  seed: number;
}

export const ALIGN_CONVERT_RUN_DEFAULTS: AlignConvertSettings = { useEma: false, batchSize: 32, seed: 0 };

/** `reals align convert`'s flags, camelCased. */
export interface AlignConvertRunOptions extends Partial<AlignConvertSettings> {
  /** A checkpoint of `reals align train`. */
  ckpt: string;
  outputDir: string;
  /** The training images: an ImageNet-layout folder, or `fashion-mnist`. */
  dataPath: string;
  /** Images (a seeded random subset) the latent mean and std are computed over. */
  numSamples: number;
  /** Default: the run's --image-size. */
  imageSize?: number;
  numWorkers?: number;
  device?: string;
  log?: (line: string) => void;
}

/** Converts a checkpoint of `reals align train` into `outputDir`; the images come cropped as the run read them. */
export async function runAlignConvert(options: AlignConvertRunOptions): Promise<AlignConvertResult> {
  const o = { ...options, ...withDefaults(ALIGN_CONVERT_RUN_DEFAULTS, options) };
  const log = o.log ?? console.log;
  checkWritableDir(o.outputDir, '--output-dir');
  torch.checkDevice(o.device);
  const { vae, heads, step, args } = loadAlignedModels(o.ckpt, { useEma: o.useEma });
  const imageSize = o.imageSize ?? (typeof args.imageSize === 'number' ? args.imageSize : undefined);
  if (imageSize === undefined) throw new Error(`--ckpt ${o.ckpt} records no image size (args.imageSize): pass the run's --image-size`);
  const dataset = loadImageDataset(o.dataPath, imageSize, vae.config.inChannels);
  const result = await convertAlignment({
    vae, heads, dataset, numSamples: o.numSamples, outputDir: o.outputDir, batchSize: o.batchSize, seed: o.seed,
    numWorkers: o.numWorkers, device: o.device,
  });
  const round = (values: number[]) => values.map((v) => Number(v.toPrecision(4))).join(', ');
  const skipped = result.skipped > 0 ? ` (${result.skipped} unreadable files skipped)` : '';
  log(`${o.useEma ? 'ema' : 'model'} weights of step ${step}; latents of ${result.images} images${skipped}: ` +
    `mean [${round(result.stats.mean)}], std [${round(result.stats.std)}]`);
  log(`wrote ${o.outputDir}: config.json, diffusion_pytorch_model.safetensors, mean_std.json, ${ALIGN_HEADS_NAME}`);
  return result;
}
