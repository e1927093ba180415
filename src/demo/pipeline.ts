// `reals demo`: the whole method on Fashion-MNIST (DESIGN.md sections 7 and 8), on a laptop-class
// CPU with nothing to download, following the paper's protocol: stage 1 trains one plain VAE (the
// stand-in for the pretrained SD-VAE); stage 2 fine-tunes it twice with the same steps, lr, data
// order and seed, with the alignment loss (ReaLS) and without it (the control that separates the
// effect of alignment from the effect of more training). Every latent space gets the same SiT
// budget; its checkpoints at several fractions of the steps are sampled and scored, so the claim
// (a better FID at equal SiT steps) is measured as a curve. The ReaLS variants form a grid
// (teacher × protocol × loss × alignment weight, `DemoCells`), which is also what the reproduction
// study (docs/reproduction.md) runs. The default is the regime where the alignment study found a
// win (study-finding.ts): 8 latent channels, the training-free HOG teacher, VA-VAE's vf loss.
//
// Every step of the method calls the library pipeline that a command runs (teacher train, align
// train/convert, sit train, sample ode/sde, heads train-linear), and the report gives the command
// line that passes the same options (commandWords). The steps no command covers (the supervised ablation teacher, the evaluation classifier, scoring in that
// classifier's feature space) are in src/demo. Results go to one folder: each step's JSON,
// metrics.jsonl and TensorBoard files, figures, and report.md / report.html (src/demo/report.ts).
// One file past 500 lines: the demo's steps in the order they run, each a few lines over a command.
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as torch from '../torch/index.js';
import type { Tensor } from '../torch/index.js';
import { loadNpz } from '../io/index.js';
import { AutoencoderKL, configToDiffusers, type AutoencoderKLConfig } from '../models/autoencoder-kl.js';
import { FASHION_MNIST_CLASSES, FashionMNIST } from '../data/index.js';
import { DinoVisionTransformer } from '../models/dinov2.js';
import { HOG_TEACHER_NAME, HogTeacher } from '../models/hog.js';
import { computeStatistics, frechetDistance, precisionRecall } from '../eval/index.js';
import { linearProbe, type ProbedTeacher } from '../eval/linear-probe.js';
import { CheckpointManager, resolveResume } from '../train/index.js';
import { parseMetrics, saveImageGrid } from '../runlog/index.js';
import { sampleLabel } from '../sampling/labels.js';
import { resolveDinoConfig } from '../models/dinov2.js';
import { runAlignConvert, runAlignTrain, type AlignConvertRunOptions, type AlignTrainRunOptions } from '../pipelines/align.js';
import { runGeneratorTrain, type GeneratorTrainRunOptions } from '../pipelines/generator.js';
import { runSample, type SampleRunOptions } from '../pipelines/sample.js';
import { runTeacherTrain, type TeacherTrainRunOptions } from '../pipelines/teacher.js';
import { runTrainLinear, type TrainLinearOptions } from '../pipelines/index.js';
import { runExportWeb, type ExportOnnxRunOptions } from '../pipelines/export.js';
import { ALIGN_HEADS_NAME } from '../train/align-convert.js';
import { trainTeacher } from './teacher.js';
import { trainClassifier, type FashionClassifier } from './classifier.js';
import { fashionMnistTensors } from './supervised.js';
import { writeReport } from './report.js';
import {
  DEFAULT_LATENT_CHANNELS, RESULT_FILES, SAMPLERS, latentSpaces, type CurvePoint, type DemoCells, type DemoProfile, type DemoResult, type HeadScores, type LatentSpace,
  type LatentSpaceResult, type ReconstructionScores, type SampleScores, type SamplerName, type StepRecord, type TeacherKind, type TeacherRecord,
} from './results.js';

// --- profiles -------------------------------------------------------------------------------------

const TEACHER_BASE = { teacher: { lr: 1e-3, embedDim: 64, depth: 4, numHeads: 4 }, classifier: { lr: 1e-3 } };
const SIT_EVAL_FRACTIONS = [0.25, 0.5, 1];
/**
 * A sharper, faster-moving teacher than DINOv2's defaults, which at a few hundred steps leave the
 * teacher's outputs near uniform; DINOv2's layer-wise lr decay and patch-embedding lr factor, as
 * the reproduction study ran them (docs/reproduction.md).
 */
const SSL_TEACHER = { lr: 1e-3, localCrops: 6, teacherTemp: 0.04, warmupTeacherTemp: 0.04, momentumTeacher: 0.98, layerwiseDecay: 0.9, patchEmbedLrMult: 0.2 };
/** The alignment study's width, where its VAE-alignment win is (study-finding.ts); 4 is SD-VAE's. */
const DEMO_LATENT_CHANNELS = 8;

export const DEMO_PROFILES: Record<'test' | 'quick' | 'full', DemoProfile> = {
  /** Seconds: only shows that every step runs, for two seeds, and that the report holds the run's numbers. */
  test: {
    name: 'test', seeds: [0, 1],
    teacher: { ...TEACHER_BASE.teacher, steps: 4, batchSize: 16 },
    sslTeacher: { ...SSL_TEACHER, steps: 3, batchSize: 8, localCrops: 2 },
    classifier: { ...TEACHER_BASE.classifier, steps: 4, batchSize: 16 },
    vae: { steps: 4, batchSize: 8, lr: 1e-3, blockOutChannels: [16, 32, 32], latentChannels: DEMO_LATENT_CHANNELS },
    finetune: { steps: 4, lr: 2e-4 },
    statsImages: 32,
    sit: { steps: 4, batchSize: 16, lr: 1e-3, depth: 2, hiddenSize: 64, numHeads: 2, emaDecay: 0.9 },
    sitEvalFractions: [0.5, 1],
    samples: 20, samplingSteps: 3, cfgScale: 1.5, testImages: 40,
    head: { images: 40, steps: 4 },
  },
  /** The default: under 15 minutes on 2 CPU cores, one seed. */
  quick: {
    name: 'quick', seeds: [0],
    teacher: { ...TEACHER_BASE.teacher, steps: 300, batchSize: 64 },
    sslTeacher: { ...SSL_TEACHER, steps: 200, batchSize: 64 },
    classifier: { ...TEACHER_BASE.classifier, steps: 400, batchSize: 64 },
    vae: { steps: 400, batchSize: 16, lr: 1e-3, blockOutChannels: [16, 32, 32], latentChannels: DEMO_LATENT_CHANNELS },
    finetune: { steps: 400, lr: 2e-4 },
    statsImages: 2000,
    sit: { steps: 1400, batchSize: 32, lr: 1e-3, depth: 4, hiddenSize: 96, numHeads: 4, emaDecay: 0.995 },
    sitEvalFractions: SIT_EVAL_FRACTIONS,
    samples: 500, samplingSteps: 16, cfgScale: 2, testImages: 1000,
    head: { images: 1000, steps: 200 },
  },
  /** Longer training, three seeds: the spread says whether the difference is more than noise. */
  full: {
    name: 'full', seeds: [0, 1, 2],
    teacher: { ...TEACHER_BASE.teacher, steps: 1000, batchSize: 64 },
    sslTeacher: { ...SSL_TEACHER, steps: 1000, batchSize: 64 },
    classifier: { ...TEACHER_BASE.classifier, steps: 1000, batchSize: 64 },
    vae: { steps: 2000, batchSize: 16, lr: 1e-3, blockOutChannels: [16, 32, 32], latentChannels: DEMO_LATENT_CHANNELS },
    finetune: { steps: 2000, lr: 2e-4 },
    statsImages: 10000,
    sit: { steps: 7000, batchSize: 32, lr: 1e-3, depth: 4, hiddenSize: 96, numHeads: 4, emaDecay: 0.999 },
    sitEvalFractions: SIT_EVAL_FRACTIONS,
    samples: 2000, samplingSteps: 32, cfgScale: 2, testImages: 2000,
    head: { images: 2000, steps: 500 },
  },
};

export type ProfileName = keyof typeof DEMO_PROFILES;

/**
 * The demo's default latent spaces: pretrained, control, and one ReaLS VAE, fine-tuned with VA-VAE's
 * vf loss and the HOG teacher: the alignment study's win (study-finding.ts). alignWeights is the
 * weight of cos variants (`--loss cos`), the reproduction study's best (docs/reproduction.md).
 */
export const DEFAULT_CELLS: DemoCells = { teachers: ['hog'], protocols: ['finetune'], alignWeights: [0.25], losses: ['vf'] };

/**
 * `reals align train`'s settings that make VA-VAE's vf loss out of a cos run's (margin cosine and
 * distance matrices with the adaptive weight, no CLS term): the demo's vf spaces and the alignment study's vf arm.
 */
export const VF_ALIGN_OPTIONS: Pick<AlignTrainRunOptions, 'alignLoss' | 'clsWeight'> = { alignLoss: 'vf', clsWeight: 0 };

// --- the command lines of the steps -------------------------------------------------------------------

/**
 * The words after `reals` that pass `options` to the command `path` (`['align', 'train']`): each
 * camelCase key as its --kebab-case flag, true as the bare flag, false as --no-<flag>, a pair
 * joined by a comma; undefined values and functions are left out.
 */
export function commandWords(path: readonly string[], options: object): string[] {
  const words = [...path];
  for (const [key, value] of Object.entries(options)) {
    if (value === undefined || typeof value === 'function') continue;
    const flag = key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
    if (value === true) words.push(`--${flag}`);
    else if (value === false) words.push(`--no-${flag}`);
    else words.push(`--${flag}`, Array.isArray(value) ? value.join(',') : String(value));
  }
  return words;
}

/** A shell line: `reals <words...>`, with words quoted where the shell needs it. */
export function commandLine(words: readonly string[]): string {
  return ['reals', ...words].map((w) => (/^[\w@%+=:,./-]+$/.test(w) ? w : `'${w.replaceAll("'", "'\\''")}'`)).join(' ');
}

/** The one run folder (NNN-name) a trainer created in `dir`. */
export function onlyRunDir(dir: string): string {
  const runs = readdirSync(dir).filter((name) => /^\d{3}-/.test(name));
  if (runs.length !== 1) throw new Error(`${dir}: expected one run folder, found [${runs.join(', ')}]`);
  return join(dir, runs[0]!);
}

function writeJson(path: string, value: unknown): void {
  writeFileSync(path, `${JSON.stringify(value, null, 2)}\n`);
}

// --- the command lines of the VAE and head steps ----------------------------------------------------

/** The diffusers config.json of the demo's VAE (the plain and the ReaLS VAE share it). */
export function writeVaeConfig(path: string, blockOutChannels: number[], latentChannels = DEFAULT_LATENT_CHANNELS): void {
  const vaeConfig: Partial<AutoencoderKLConfig> = {
    inChannels: 3, outChannels: 3, latentChannels, sampleSize: 32, layersPerBlock: 1, normNumGroups: 8,
    blockOutChannels,
    downBlockTypes: blockOutChannels.map(() => 'DownEncoderBlock2D'),
    upBlockTypes: blockOutChannels.map(() => 'UpDecoderBlock2D'),
  };
  writeJson(path, configToDiffusers(new AutoencoderKL(vaeConfig).config));
}

/** The teacher files `--dino-model`/`--dino-ckpt` read (HOG: `hog`, and no checkpoint). */
export interface TeacherFiles { configPath: string; checkpoint: string | null }

export interface VaeTrainSpec {
  /** Alignment weight on both cos terms (--patch-weight, --cls-weight); 0 trains a plain VAE (or, with VF_ALIGN_OPTIONS, one aligned by the vf loss). */
  alignWeight: number;
  /** Stage 2: the stage-1 diffusers folder to fine-tune (--vae-ckpt); null trains from scratch (stage 1 or the from-scratch protocol). */
  startFrom: string | null;
  profile: Pick<DemoProfile, 'vae' | 'finetune'>;
  teacher: TeacherFiles;
  /** --dino-input-size: the side images are resized to for the teacher. */
  teacherInput: number;
  vaeConfigPath: string;
  resultsDir: string;
  seed: number;
}

/**
 * `reals align train`'s options for one VAE. Every VAE of a seed shares the data order and seed; a
 * fine-tuning run takes the stage-2 steps and lr, a run from scratch the stage-1 ones.
 */
export function vaeTrainOptions(spec: VaeTrainSpec): AlignTrainRunOptions {
  const { vae, finetune } = spec.profile;
  const steps = spec.startFrom === null ? vae.steps : finetune.steps;
  const lr = spec.startFrom === null ? vae.lr : finetune.lr;
  return {
    dataPath: 'fashion-mnist', imageSize: 32, dinoModel: spec.teacher.configPath, dinoCkpt: spec.teacher.checkpoint ?? undefined,
    dinoInputSize: spec.teacherInput, vaeConfig: spec.vaeConfigPath, vaeCkpt: spec.startFrom ?? undefined,
    lpipsWeight: 0, discStart: steps + 1, patchWeight: spec.alignWeight, clsWeight: spec.alignWeight, mlpHidden: 128, lr, batchSize: vae.batchSize,
    maxEpoch: 1000, maxSteps: steps, numWorkers: 0, resultsDir: spec.resultsDir, seed: spec.seed,
    logEvery: Math.max(1, Math.floor(steps / 50)), imageEvery: steps, ckptEvery: steps, emaDecay: 0.99,
  };
}

/** `reals align convert`'s options: the last checkpoint of the training run in `runDir` to a diffusers folder with mean_std.json. */
export function vaeConvertOptions(runDir: string, vaePath: string, statsImages: number, seed: number): AlignConvertRunOptions {
  return {
    ckpt: resolveResume(runDir).checkpoint, outputDir: vaePath, dataPath: 'fashion-mnist', numSamples: statsImages, numWorkers: 0, seed,
  };
}

/** `reals heads train-linear`'s options: a class-as-mask head on the VAE's latents or on its alignment MLPs' features. */
export function trainLinearOptions(spec: {
  vaePath: string; out: string; features: 'latent' | 'mlp'; images: number; steps: number; seed: number; dataPath?: 'fashion-mnist' | 'fashion-mnist-test';
}): TrainLinearOptions {
  return {
    dataPath: spec.dataPath ?? 'fashion-mnist', vaePath: spec.vaePath, out: spec.out, features: spec.features,
    alignCkpt: spec.features === 'mlp' ? join(spec.vaePath, 'align.safetensors') : undefined,
    maxImages: spec.images, steps: spec.steps, seed: spec.seed,
  };
}

/** `reals sit train`'s options for the SiT of one latent space: the profile's steps, batch, lr and EMA, a checkpoint at each evaluated fraction of the steps. */
export function sitTrainOptions(spec: {
  profile: Pick<DemoProfile, 'sit' | 'sitEvalFractions'>; vaePath: string; sitConfigPath: string; resultsDir: string; seed: number;
}): GeneratorTrainRunOptions {
  const s = spec.profile.sit;
  return {
    dataPath: 'fashion-mnist', vaePath: spec.vaePath, imageSize: 32, model: spec.sitConfigPath, resultsDir: spec.resultsDir, epochs: 1000, maxSteps: s.steps,
    globalBatchSize: s.batchSize, globalSeed: spec.seed, numWorkers: 0, lr: s.lr, emaDecay: s.emaDecay,
    logEvery: Math.max(1, Math.floor(s.steps / 50)), ckptEvery: sitEvalSteps(spec.profile).ckptEvery, flip: false,
  };
}

/** `reals sample ode|sde`'s options for the SiT checkpoint of `sitStep` in the run `sitRun`: the profile's samples, sampler steps and CFG (ODE: heun2, SDE: Euler). */
export function sampleOptions(spec: {
  profile: Pick<DemoProfile, 'samples' | 'samplingSteps' | 'cfgScale'>; sitConfigPath: string; sitRun: string; sitStep: number; vaePath: string;
  sampleDir: string; sampler: SamplerName; seed: number; batchSize: number;
}): SampleRunOptions {
  const { profile } = spec;
  return {
    model: spec.sitConfigPath, ckpt: join(spec.sitRun, 'checkpoints', CheckpointManager.fileName(spec.sitStep)), vaePath: spec.vaePath, sampleDir: spec.sampleDir,
    perProcBatchSize: spec.batchSize, numFidSamples: profile.samples, imageSize: 32, numClasses: FASHION_MNIST_CLASSES.length,
    cfgScale: profile.cfgScale, cfgChannels: 'all', numSamplingSteps: profile.samplingSteps, globalSeed: spec.seed,
    samplingMethod: spec.sampler === 'ode' ? 'heun2' : 'Euler',
  };
}

// --- scoring --------------------------------------------------------------------------------------

/** uint8 NHWC (an ADM sample batch) to float NCHW in [-1, 1]. */
function fromUint8(images: Tensor): Tensor {
  return images.permute(0, 3, 1, 2).float().div(127.5).sub(1);
}

/** FID, precision/recall (k = 3) in the classifier's feature space, and how often the classifier sees the class asked for. */
export function scoreSamples(classifier: FashionClassifier, reference: Tensor, npz: string): SampleScores {
  return torch.scope(() => {
    const arrays = loadNpz(npz);
    const images = fromUint8(arrays.arr_0!);
    const n = images.size(0);
    const sample = classifier.describe(images);
    const asked = torch.tensor(Array.from({ length: n }, (_, i) => sampleLabel(i, FASHION_MNIST_CLASSES.length)), { dtype: 'int64' });
    const fid = frechetDistance(computeStatistics(reference), computeStatistics(sample.features));
    const { precision, recall } = precisionRecall(reference, sample.features);
    const classAccuracy = sample.predicted.eq(asked).float().mean().item();
    return { fid, precision, recall, classAccuracy, samples: n, reference: reference.size(0) };
  });
}

/**
 * Mean squared error (images in [-1, 1]) of decode(encode(x).mode()) over the test images, rFID
 * (the reconstructions against the test images, in the classifier's features) and a grid of the first 8.
 */
async function scoreReconstruction(vae: AutoencoderKL, classifier: FashionClassifier, reference: Tensor, images: Tensor, gridPath: string): Promise<ReconstructionScores> {
  const { mse, rfid, grid } = torch.noGrad(() => torch.scope(() => {
    let sum = 0;
    const features: Tensor[] = [];
    for (let start = 0; start < images.size(0); start += 128) {
      const x = images.slice(0, start, start + 128);
      const xrec = vae.decode(vae.encode(x).mode());
      sum += xrec.sub(x).pow(2).sum().item();
      features.push(classifier.describe(xrec.clamp(-1, 1)).features);
    }
    const rfid = frechetDistance(computeStatistics(reference), computeStatistics(torch.cat(features)));
    const first = images.slice(0, 0, 8);
    const grid = torch.cat([first, vae.decode(vae.encode(first).mode()).clamp(-1, 1)]);
    return { mse: sum / images.numel(), rfid, grid };
  }));
  await saveImageGrid(gridPath, grid, { nrow: 8 });
  grid.dispose();
  return { mse, rfid, images: images.size(0) };
}

/** The first samples of each class of an ADM batch as a grid, one row per class (samples cycle through the classes). */
async function classGrid(npz: string, path: string, perClass: number): Promise<void> {
  const grid = torch.scope(() => {
    const images = fromUint8(loadNpz(npz).arr_0!);
    const classes = FASHION_MNIST_CLASSES.length;
    const per = Math.min(perClass, Math.floor(images.size(0) / classes));
    const order = FASHION_MNIST_CLASSES.flatMap((_, c) => Array.from({ length: per }, (_, k) => c + k * classes));
    return { images: images.indexSelect(0, torch.tensor(order, { dtype: 'int64' })), per };
  });
  await saveImageGrid(path, grid.images, { nrow: grid.per });
  grid.images.dispose();
}

/** The SiT checkpoint steps to sample: each fraction of the steps (whole multiples of the checkpoint interval). */
export function sitEvalSteps(profile: Pick<DemoProfile, 'sit' | 'sitEvalFractions'>): { steps: number[]; ckptEvery: number } {
  const steps = profile.sitEvalFractions.map((f) => Math.round(f * profile.sit.steps));
  if (steps.at(-1) !== profile.sit.steps) throw new Error(`profile: sitEvalFractions must end with 1, got [${profile.sitEvalFractions.join(', ')}]`);
  const gcd = (a: number, b: number): number => (b === 0 ? a : gcd(b, a % b));
  const ckptEvery = steps.reduce(gcd);
  if (ckptEvery < 1) throw new Error(`profile: sitEvalFractions [${profile.sitEvalFractions.join(', ')}] of ${profile.sit.steps} steps give a step 0`);
  return { steps, ckptEvery };
}

/** The value of `metric` (default the SiT loss) in the last record of a run's metrics.jsonl that has it. */
export function finalLoss(runDir: string, metric = 'loss'): number {
  const path = join(runDir, 'metrics.jsonl');
  const records = parseMetrics(readFileSync(path, 'utf8'), path).filter((r) => Number.isFinite(r.values[metric]));
  const last = records.at(-1);
  if (last === undefined) throw new Error(`${path}: no ${metric} record`);
  return last.values[metric]!;
}

// --- the run ----------------------------------------------------------------------------------------

export interface DemoOptions {
  profile: DemoProfile;
  /** The latent spaces to compare (default DEFAULT_CELLS). */
  cells?: DemoCells;
  /** Seeds in place of the profile's (the study runs one seed per process). */
  seeds?: number[];
  /** Output folder (default demo-out); the demo's own subfolders in it are replaced. */
  out: string;
  /** torch threads for every step (default: each step's precision picks them, torch.runThreads). */
  threads?: number;
  /** --precision of every training, sampling and readout step (default: the commands' own, auto). */
  precision?: torch.Precision;
  log?: (line: string) => void;
}

/** The demo's teacher side: 32x32 Fashion-MNIST images in, patch 4 (8x8 tokens, one per latent position of the f4 VAE). */
const TEACHER_INPUT = 32;
const TEACHER_PATCH = 4;

export async function runDemo(options: DemoOptions): Promise<DemoResult> {
  const { out } = options;
  const profile = options.seeds === undefined ? options.profile : { ...options.profile, seeds: options.seeds };
  const cells = options.cells ?? DEFAULT_CELLS;
  if (cells.teachers.length === 0 || cells.protocols.length === 0 || cells.losses.length === 0) {
    throw new Error('demo: the cells need at least one teacher, one protocol and one loss');
  }
  if (cells.losses.includes('cos') && cells.alignWeights.length === 0) throw new Error('demo: the cos loss needs at least one alignment weight');
  const spaces = latentSpaces(cells);
  const log = options.log ?? ((line: string) => console.log(line));
  if (options.threads !== undefined) torch.setNumThreads(options.threads);
  const threads = options.threads ?? { bf16: torch.runThreads('bf16', 'cpu'), fp32: torch.runThreads('fp32', 'cpu') };
  // Spread into each command's options, so that the report's command lines say it too.
  const precision = options.precision === undefined ? {} : { precision: options.precision };
  const started = performance.now();
  mkdirSync(out, { recursive: true });
  for (const name of ['teacher', 'teacher-ssl', 'teacher-hog', 'classifier', 'figures', 'configs', ...profile.seeds.map((s) => `seed-${s}`)]) rmSync(join(out, name), { recursive: true, force: true });
  mkdirSync(join(out, 'figures'), { recursive: true });
  const steps: StepRecord[] = [];
  /** Times `fn` as the step `name`, recording the command line (`words` after `reals`) that reproduces it. */
  const step = async <T>(name: string, words: readonly string[] | null, fn: () => Promise<T> | T): Promise<T> => {
    log(`\n== ${name}${words === null ? '' : `\n   ${commandLine(words)}`}`);
    const t0 = performance.now();
    const value = await fn();
    const seconds = (performance.now() - t0) / 1000;
    steps.push({ name, command: words === null ? null : commandLine(words), seconds });
    log(`   ${name}: ${seconds.toFixed(1)} s`);
    return value;
  };

  // 1. The teachers and the evaluation classifier, trained once.
  const teachers: DemoResult['teachers'] = {};
  for (const kind of cells.teachers) teachers[kind] = await trainDemoTeacher(kind, profile, out, step, log, precision);
  const c = profile.classifier;
  const classifier = await step('train the evaluation classifier (CNN, separate from the teachers)', null, () => trainClassifier({
    steps: c.steps, batchSize: c.batchSize, lr: c.lr, seed: 1, testImages: profile.testImages, dir: join(out, 'classifier'),
  }));
  writeJson(join(out, 'classifier', 'result.json'), { testAccuracy: classifier.testAccuracy, finalLoss: classifier.finalLoss });

  const test = fashionMnistTensors(profile.testImages, false);
  const reference = torch.keep(classifier.model.describe(test.images).features);

  // The shared configs: the VAE architecture (diffusers config.json) and the SiT size.
  const configs = join(out, 'configs');
  mkdirSync(configs, { recursive: true });
  const vaeConfigPath = join(configs, 'vae.json');
  writeVaeConfig(vaeConfigPath, profile.vae.blockOutChannels, profile.vae.latentChannels);
  const sitConfigPath = join(configs, 'sit-demo.json');
  const s = profile.sit;
  writeJson(sitConfigPath, { depth: s.depth, hiddenSize: s.hiddenSize, patchSize: 2, numHeads: s.numHeads });
  const sitEval = sitEvalSteps(profile);

  /** Trains one VAE with `reals align train` and converts its last checkpoint; returns the diffusers folder. */
  const trainVae = async (space: LatentSpace, seed: number, startFrom: string | null): Promise<string> => {
    const dir = join(out, `seed-${seed}`, space.id);
    mkdirSync(dir, { recursive: true });
    const teacher = teachers[space.teacher ?? cells.teachers[0]!]!;
    // A vf space: no cos term (weight 0) and VA-VAE's loss with its adaptive weight.
    const train = {
      ...vaeTrainOptions({ alignWeight: space.alignWeight ?? 0, startFrom, profile, teacher, teacherInput: TEACHER_INPUT, vaeConfigPath, resultsDir: join(dir, 'vae'), seed }),
      ...(space.loss === 'vf' ? VF_ALIGN_OPTIONS : {}), ...precision,
    };
    await step(`train the ${space.label}, seed ${seed}`, commandWords(['align', 'train'], train), () => runAlignTrain({ ...train, log }));
    const vaePath = join(dir, 'vae-diffusers');
    const convert = vaeConvertOptions(onlyRunDir(join(dir, 'vae')), vaePath, profile.statsImages, seed);
    await step(`latent statistics of the ${space.label}, seed ${seed} (diffusers folder + mean_std.json)`, commandWords(['align', 'convert'], convert),
      () => runAlignConvert({ ...convert, log }));
    return vaePath;
  };

  /** Scores one latent space: reconstruction, a SiT trained on it and sampled at its checkpoints, the linear heads. */
  const evaluateSpace = async (space: LatentSpace, seed: number, vaePath: string): Promise<LatentSpaceResult> => {
    const dir = join(out, `seed-${seed}`, space.id);
    const label = `${space.label}, seed ${seed}`;
    const firstSeed = seed === profile.seeds[0];
    const vae = AutoencoderKL.fromPretrained(vaePath).eval();
    const reconstruction = await step(`reconstruction error and rFID of the ${label}`, null,
      () => scoreReconstruction(vae, classifier.model, reference, test.images, join(out, 'figures', `reconstructions-${space.id}-seed${seed}.png`)));
    writeJson(join(dir, RESULT_FILES.reconstruction), reconstruction);

    const sit = { ...sitTrainOptions({ profile, vaePath, sitConfigPath, resultsDir: join(dir, 'sit'), seed }), ...precision };
    await step(`train a SiT on the ${label} latents`, commandWords(['sit', 'train'], sit), () => runGeneratorTrain('SiT', { ...sit, log }));
    const sitRun = onlyRunDir(join(dir, 'sit'));
    const sitFinalLoss = finalLoss(sitRun);
    writeJson(join(dir, RESULT_FILES.sit), { finalLoss: sitFinalLoss, steps: s.steps });

    /** Samples the checkpoint of `sitStep` with `sampler` (guided) and scores them in the classifier's feature space. */
    const sampleAndScore = async (sitStep: number, sampler: SamplerName): Promise<{ scores: SampleScores; npz: string }> => {
      const sampleDir = join(dir, `samples-${sampler}-step${sitStep}`);
      // All samples in one batch: the fastest way on a CPU.
      const sample = { ...sampleOptions({ profile, sitConfigPath, sitRun, sitStep, vaePath, sampleDir, sampler, seed, batchSize: profile.samples }), ...precision };
      await step(`sample the ${label} SiT at step ${sitStep} (${sampler.toUpperCase()}, CFG ${profile.cfgScale})`, commandWords(['sample', sampler], sample),
        () => runSample(sampler, { ...sample, log }));
      const npz = readdirSync(sampleDir).filter((f) => f.endsWith('.npz')).map((f) => join(sampleDir, f));
      if (npz.length !== 1) throw new Error(`${sampleDir}: expected one .npz of samples, found ${npz.length}`);
      const scores = await step(`score the ${label} ${sampler.toUpperCase()} samples at step ${sitStep} (classifier features)`, null,
        () => scoreSamples(classifier.model, reference, npz[0]!));
      return { scores, npz: npz[0]! };
    };
    const curve: CurvePoint[] = [];
    const sampling = {} as Record<SamplerName, SampleScores>;
    for (const sitStep of sitEval.steps) {
      const final = sitStep === s.steps;
      for (const sampler of final ? SAMPLERS : ['ode' as const]) {
        const { scores, npz } = await sampleAndScore(sitStep, sampler);
        if (sampler === 'ode') curve.push({ step: sitStep, ode: scores });
        if (final) {
          sampling[sampler] = scores;
          writeJson(join(dir, RESULT_FILES[sampler]), scores);
          if (firstSeed) await classGrid(npz, join(out, 'figures', `samples-${space.id}-${sampler}.png`), 8);
        }
      }
    }
    writeJson(join(dir, RESULT_FILES.curve), curve);

    // The linear-head readout: class-as-mask segmentation from the latents (all) and from the MLPs (ReaLS).
    const headRun = async (features: 'latent' | 'mlp'): Promise<HeadScores> => {
      const head = { ...trainLinearOptions({ vaePath, out: join(dir, `head-${features}.safetensors`), features, ...profile.head, seed }), ...precision };
      return step(`linear head on the ${label} ${features === 'mlp' ? 'alignment-MLP features' : 'latents'}`, commandWords(['heads', 'train-linear'], head), async () => {
        const result = await runTrainLinear({ ...head, log });
        return { mIoU: result.mIoU, pixelAccuracy: result.pixelAccuracy, train: result.train, heldOut: result.heldOut };
      });
    };
    const headLatent = await headRun('latent');
    writeJson(join(dir, RESULT_FILES.headLatent), headLatent);
    const headMlp = space.role === 'reals' ? await headRun('mlp') : null;
    if (headMlp !== null) writeJson(join(dir, RESULT_FILES.headMlp), headMlp);
    return { reconstruction, curve, sampling, sitFinalLoss, headLatent, headMlp };
  };

  const runs: DemoResult['runs'] = {};
  for (const seed of profile.seeds) {
    const results: Record<string, LatentSpaceResult> = {};
    // Stage 1 (the pretrained VAE) first: every fine-tuning run starts from it.
    const stage1 = await trainVae(spaces[0]!, seed, null);
    for (const space of spaces) {
      const vaePath = space.role === 'pretrained' ? stage1 : await trainVae(space, seed, space.protocol === 'finetune' ? stage1 : null);
      results[space.id] = await evaluateSpace(space, seed, vaePath);
    }
    runs[String(seed)] = results;
  }
  for (const tensor of [test.images, test.labels, reference]) tensor.dispose();

  // The first ReaLS space's SiT, decoder and MLP head as a page that samples and segments in the browser.
  const realsSpace = spaces.find((space) => space.role === 'reals');
  let webPage: DemoResult['webPage'] = null;
  if (realsSpace !== undefined) {
    const dir = join(out, `seed-${profile.seeds[0]}`, realsSpace.id);
    const vaePath = join(dir, 'vae-diffusers');
    const web: ExportOnnxRunOptions = {
      ckpt: join(onlyRunDir(join(dir, 'sit')), 'checkpoints', CheckpointManager.fileName(s.steps)), model: sitConfigPath, vaePath,
      alignCkpt: join(vaePath, ALIGN_HEADS_NAME), head: join(dir, 'head-mlp.safetensors'), out: join(out, 'web'),
    };
    webPage = await step(`export the ${realsSpace.label} SiT, VAE decoder and head as a web page`, [...commandWords(['export', 'web'], { ...web, out: undefined }), web.out],
      () => runExportWeb({ ...web, log }).then(() => ({ dir: web.out }), (error: Error) => ({ error: error.message })));
  }

  const result: DemoResult = {
    profile, cells, spaces, out, threads, teachers,
    classifier: { testAccuracy: classifier.testAccuracy, checkpoint: classifier.checkpoint },
    runs, steps, webPage, totalSeconds: 0,
  };
  result.totalSeconds = (performance.now() - started) / 1000;
  await writeReport(result);
  writeJson(join(out, 'metrics.json'), result);
  log(`\nreport: ${join(out, 'report.md')} and ${join(out, 'report.html')} (${result.totalSeconds.toFixed(0)} s in all)`);
  return result;
}

/** The accuracy of a linear probe on a frozen teacher's features: trained on the profile's count of train images, scored on as many test images. */
async function probeAccuracy(backbone: ProbedTeacher, profile: DemoProfile): Promise<number> {
  const probe = await linearProbe({
    backbone, train: new FashionMNIST({ channels: 3 }), test: new FashionMNIST({ channels: 3, train: false }),
    trainImages: profile.testImages, testImages: profile.testImages, inputSize: TEACHER_INPUT, seed: 0,
  });
  return probe.accuracy;
}

/** The linear-probe accuracy of a ViT teacher's frozen features, and of a randomly initialised backbone of its config. */
async function probeTeacher(configPath: string, checkpoint: string, profile: DemoProfile): Promise<Pick<TeacherRecord, 'probeAccuracy' | 'randomProbeAccuracy'>> {
  const config = resolveDinoConfig(configPath);
  const trained = await probeAccuracy(new DinoVisionTransformer(config).loadCheckpoint(checkpoint), profile);
  torch.manualSeed(0);
  const random = await probeAccuracy(new DinoVisionTransformer(config), profile);
  return { probeAccuracy: trained, randomProbeAccuracy: random };
}

type StepRunner = <T>(name: string, words: readonly string[] | null, fn: () => Promise<T> | T) => Promise<T>;

/** Trains the teacher of `kind` once for the whole run (fixed seed 0), with its linear-probe accuracy; HOG has nothing to train. */
async function trainDemoTeacher(
  kind: TeacherKind, profile: DemoProfile, out: string, step: StepRunner, log: (line: string) => void, precision: { precision?: torch.Precision },
): Promise<TeacherRecord> {
  if (kind === 'hog') {
    const dir = join(out, 'teacher-hog');
    mkdirSync(dir, { recursive: true });
    const accuracy = await step('linear probe of the HOG teacher (training-free: histograms of oriented gradients on the latent grid\'s cells)', null,
      () => probeAccuracy({ hog: new HogTeacher(), patchSize: TEACHER_PATCH }, profile));
    const record: TeacherRecord = {
      kind, testAccuracy: null, probeAccuracy: accuracy, randomProbeAccuracy: null, params: 0, checkpoint: null, configPath: HOG_TEACHER_NAME,
    };
    writeJson(join(dir, 'result.json'), record);
    return record;
  }
  const t = profile.teacher;
  const config = { imgSize: TEACHER_INPUT, patchSize: TEACHER_PATCH, embedDim: t.embedDim, depth: t.depth, numHeads: t.numHeads };
  if (kind === 'supervised') {
    const dir = join(out, 'teacher');
    const teacher = await step('train the supervised ViT teacher (DINOv2 architecture, the ablation\'s stand-in for DINOv2)', null, () => trainTeacher({
      config, inputSize: TEACHER_INPUT, steps: t.steps, batchSize: t.batchSize, lr: t.lr, seed: 0, testImages: profile.testImages, dir,
    }));
    const probe = await step('linear probe of the supervised teacher (frozen features)', null,
      () => probeTeacher(teacher.configPath, teacher.checkpoint, profile));
    const record: TeacherRecord = {
      kind, testAccuracy: teacher.testAccuracy, ...probe, params: teacher.params, checkpoint: teacher.checkpoint, configPath: teacher.configPath,
    };
    writeJson(join(dir, 'result.json'), record);
    return record;
  }
  const dir = join(out, 'teacher-ssl');
  mkdirSync(dir, { recursive: true });
  const configPath = join(dir, 'vit-demo.json');
  writeJson(configPath, config);
  const ssl = profile.sslTeacher;
  const options: TeacherTrainRunOptions = {
    dataPath: 'fashion-mnist', dinoModel: configPath, batchSize: ssl.batchSize, localCropsNumber: ssl.localCrops, teacherTemp: ssl.teacherTemp,
    warmupTeacherTemp: ssl.warmupTeacherTemp, momentumTeacher: ssl.momentumTeacher, layerwiseDecay: ssl.layerwiseDecay, patchEmbedLrMult: ssl.patchEmbedLrMult,
    maxSteps: ssl.steps, lr: ssl.lr, resultsDir: dir, seed: 0, numWorkers: 0, logEvery: Math.max(1, Math.floor(ssl.steps / 50)), ckptEvery: ssl.steps,
    // The demo probes both teachers alike below.
    probeImages: 0, out: join(dir, 'export'), ...precision,
  };
  const teacher = await step('train the self-supervised ViT teacher (DINOv2 architecture and losses, no labels)', commandWords(['teacher', 'train'], options),
    () => runTeacherTrain({ ...options, log }));
  const probe = await step('linear probe of the self-supervised teacher (frozen features)', null,
    () => probeTeacher(teacher.configPath, teacher.checkpoint, profile));
  const record: TeacherRecord = {
    kind, testAccuracy: null, ...probe, params: teacher.params, checkpoint: teacher.checkpoint, configPath: teacher.configPath,
  };
  writeJson(join(dir, 'result.json'), record);
  return record;
}

