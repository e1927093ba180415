// `reals demo`: the whole method on Fashion-MNIST (DESIGN.md section 7), on a laptop-class CPU with
// nothing to download. Every step of the method runs the command a user would run, in this
// process: the demo builds each command line, parses it with that command's own flag parser, and
// calls the function behind it (align train/convert, sit train, sample ode/sde, heads
// train-linear). The steps no command covers (the stand-in teacher, the evaluation classifier,
// scoring in that classifier's feature space) are in src/demo. Results go to one folder: each step's
// JSON, metrics.jsonl and TensorBoard files, figures, and report.md / report.html (src/demo/report.ts).
import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import * as torch from '../torch/index.js';
import type { Tensor } from '../torch/index.js';
import { loadNpz } from '../io/index.js';
import { AutoencoderKL, configToDiffusers, type AutoencoderKLConfig } from '../models/autoencoder-kl.js';
import { FASHION_MNIST_CLASSES } from '../data/index.js';
import { computeStatistics, frechetDistance, precisionRecall } from '../eval/index.js';
import { resolveResume, saveImageGrid } from '../train/index.js';
import { sampleLabel } from '../train/sit.js';
import { alignTrainCommand, alignConvertCommand, runAlignTrain, runAlignConvert, type AlignTrainFlags, type AlignConvertFlags } from '../cli/align.js';
import { runGeneratorTrain, sitCommand, type GeneratorTrainFlags } from '../cli/sit.js';
import { sampleCommand } from '../cli/sample.js';
import { headsCommand, runTrainLinear, type TrainLinearOptions } from '../cli/heads.js';
import { trainTeacher } from './teacher.js';
import { trainClassifier, type FashionClassifier } from './classifier.js';
import { fashionMnistTensors } from './supervised.js';
import { writeReport } from './report.js';
import {
  RESULT_FILES, SAMPLERS, VARIANTS, type DemoProfile, type DemoResult, type HeadScores, type ReconstructionScores, type SampleScores,
  type SamplerName, type StepRecord, type Variant, type VariantResult,
} from './results.js';

// --- profiles -------------------------------------------------------------------------------------

const TEACHER_BASE = { teacher: { lr: 1e-3, embedDim: 64, depth: 4, numHeads: 4 }, classifier: { lr: 1e-3 } };

export const DEMO_PROFILES: Record<'test' | 'quick' | 'full', DemoProfile> = {
  /** Seconds: only shows that every step runs, for two seeds, and that the report holds the run's numbers. */
  test: {
    name: 'test', seeds: [0, 1],
    teacher: { ...TEACHER_BASE.teacher, steps: 4, batchSize: 16 },
    classifier: { ...TEACHER_BASE.classifier, steps: 4, batchSize: 16 },
    vae: { steps: 4, batchSize: 8, lr: 1e-3, blockOutChannels: [16, 32, 32] },
    statsImages: 32,
    sit: { steps: 4, batchSize: 16, lr: 1e-3, depth: 2, hiddenSize: 64, numHeads: 2, emaDecay: 0.9 },
    samples: 20, samplingSteps: 3, cfgScale: 1.5, testImages: 40,
    head: { images: 40, steps: 4 },
  },
  /** The default: under 15 minutes on 2 CPU cores. */
  quick: {
    name: 'quick', seeds: [0],
    teacher: { ...TEACHER_BASE.teacher, steps: 300, batchSize: 64 },
    classifier: { ...TEACHER_BASE.classifier, steps: 400, batchSize: 64 },
    vae: { steps: 400, batchSize: 16, lr: 1e-3, blockOutChannels: [16, 32, 32] },
    statsImages: 2000,
    sit: { steps: 1400, batchSize: 32, lr: 1e-3, depth: 4, hiddenSize: 96, numHeads: 4, emaDecay: 0.995 },
    samples: 500, samplingSteps: 16, cfgScale: 2, testImages: 1000,
    head: { images: 1000, steps: 200 },
  },
  /** Longer training, three seeds: the spread says whether the difference is more than noise. */
  full: {
    name: 'full', seeds: [0, 1, 2],
    teacher: { ...TEACHER_BASE.teacher, steps: 1000, batchSize: 64 },
    classifier: { ...TEACHER_BASE.classifier, steps: 1000, batchSize: 64 },
    vae: { steps: 2000, batchSize: 16, lr: 1e-3, blockOutChannels: [16, 32, 32] },
    statsImages: 10000,
    sit: { steps: 7000, batchSize: 32, lr: 1e-3, depth: 4, hiddenSize: 96, numHeads: 4, emaDecay: 0.999 },
    samples: 2000, samplingSteps: 32, cfgScale: 2, testImages: 2000,
    head: { images: 2000, steps: 500 },
  },
};

export type ProfileName = keyof typeof DEMO_PROFILES;

// --- running the CLI's commands in process -----------------------------------------------------------

/** A leaf command (`sit train`) of a command group. */
export function subcommand(group: Command, name: string): Command {
  const found = group.commands.find((c) => c.name() === name);
  if (found === undefined) throw new Error(`reals ${group.name()} has no subcommand ${name}`);
  return found;
}

/** The flags `argv` gives `command`, parsed (validated, defaults filled) by the command's own options, without running it. */
export function parseFlags<T>(command: Command, argv: readonly string[]): T {
  let flags: T | null = null;
  command.exitOverride().configureOutput({ writeErr: (text) => process.stderr.write(text) });
  command.action((opts: T) => { flags = opts; });
  command.parse([...argv], { from: 'user' });
  if (flags === null) throw new Error(`${command.name()} ${argv.join(' ')}: the flags did not parse`);
  return flags;
}

/** Runs `command` on `argv` (its own action), errors thrown rather than exiting the process. */
async function runCommand(command: Command, argv: readonly string[]): Promise<void> {
  command.exitOverride();
  await command.parseAsync([...argv], { from: 'user' });
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
export function writeVaeConfig(path: string, blockOutChannels: number[]): void {
  const vaeConfig: Partial<AutoencoderKLConfig> = {
    inChannels: 3, outChannels: 3, latentChannels: 4, sampleSize: 32, layersPerBlock: 1, normNumGroups: 8,
    blockOutChannels,
    downBlockTypes: blockOutChannels.map(() => 'DownEncoderBlock2D'),
    upBlockTypes: blockOutChannels.map(() => 'UpDecoderBlock2D'),
  };
  writeJson(path, configToDiffusers(new AutoencoderKL(vaeConfig).config));
}

export interface VaeTrainSpec {
  variant: Variant;
  vae: DemoProfile['vae'];
  teacher: { configPath: string; checkpoint: string };
  /** --dino-input-size: the side images are resized to for the teacher. */
  teacherInput: number;
  vaeConfigPath: string;
  resultsDir: string;
  seed: number;
}

/** `reals align train` words of one variant: the alignment losses on (ReaLS) or off (plain), everything else equal. */
export function vaeTrainWords(spec: VaeTrainSpec): string[] {
  const v = spec.vae;
  const alignWeight = spec.variant === 'reals' ? '0.5' : '0';
  return [
    'align', 'train', '--data-path', 'fashion-mnist', '--image-size', '32', '--dino-model', spec.teacher.configPath, '--dino-ckpt', spec.teacher.checkpoint,
    '--dino-input-size', String(spec.teacherInput), '--vae-config', spec.vaeConfigPath, '--lpips-weight', '0', '--disc-start', String(v.steps + 1),
    '--patch-weight', alignWeight, '--cls-weight', alignWeight, '--mlp-hidden', '128', '--lr', String(v.lr), '--batch-size', String(v.batchSize),
    '--max-epoch', '1000', '--max-steps', String(v.steps), '--num-workers', '0', '--results-dir', spec.resultsDir, '--seed', String(spec.seed),
    '--log-every', String(Math.max(1, Math.floor(v.steps / 50))), '--image-every', String(v.steps), '--ckpt-every', String(v.steps), '--ema-decay', '0.99',
  ];
}

/** `reals align convert` words: the last checkpoint of the training run in `runDir` to a diffusers folder with mean_std.json. */
export function vaeConvertWords(runDir: string, vaePath: string, statsImages: number, seed: number): string[] {
  return [
    'align', 'convert', '--ckpt', resolveResume(runDir).checkpoint, '--output-dir', vaePath, '--data-path', 'fashion-mnist',
    '--num-samples', String(statsImages), '--num-workers', '0', '--seed', String(seed),
  ];
}

/** `reals heads train-linear` words: a class-as-mask head on the VAE's latents or on its alignment MLPs' features. */
export function trainLinearWords(spec: {
  vaePath: string; out: string; features: 'latent' | 'mlp'; images: number; steps: number; seed: number; dataPath?: 'fashion-mnist' | 'fashion-mnist-test';
}): string[] {
  return [
    'heads', 'train-linear', '--data-path', spec.dataPath ?? 'fashion-mnist', '--vae-path', spec.vaePath, '--out', spec.out,
    '--features', spec.features, ...(spec.features === 'mlp' ? ['--align-ckpt', join(spec.vaePath, 'align.safetensors')] : []),
    '--max-images', String(spec.images), '--steps', String(spec.steps), '--seed', String(spec.seed),
  ];
}

// --- scoring --------------------------------------------------------------------------------------

/** uint8 NHWC (an ADM sample batch) to float NCHW in [-1, 1]. */
function fromUint8(images: Tensor): Tensor {
  return images.permute(0, 3, 1, 2).float().div(127.5).sub(1);
}

/** FID, precision/recall (k = 3) in the classifier's feature space, and how often the classifier sees the class asked for. */
function scoreSamples(classifier: FashionClassifier, reference: Tensor, npz: string): SampleScores {
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

/** Mean squared error (images in [-1, 1]) of decode(encode(x).mode()) over the test images, and a grid of the first 8. */
async function scoreReconstruction(vae: AutoencoderKL, images: Tensor, gridPath: string): Promise<ReconstructionScores> {
  const { mse, grid } = torch.noGrad(() => torch.scope(() => {
    let sum = 0;
    for (let start = 0; start < images.size(0); start += 128) {
      const x = images.slice(0, start, start + 128);
      const xrec = vae.decode(vae.encode(x).mode());
      sum += xrec.sub(x).pow(2).sum().item();
    }
    const first = images.slice(0, 0, 8);
    const grid = torch.cat([first, vae.decode(vae.encode(first).mode()).clamp(-1, 1)]);
    return { mse: sum / images.numel(), grid };
  }));
  await saveImageGrid(gridPath, grid, { nrow: 8 });
  grid.dispose();
  return { mse, images: images.size(0) };
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

// --- the run ----------------------------------------------------------------------------------------

export interface DemoOptions {
  profile: DemoProfile;
  /** Output folder (default demo-out); the demo's own subfolders in it are replaced. */
  out: string;
  /** torch threads (default 1: on a loaded 2-core machine more threads only contend). */
  threads?: number;
  log?: (line: string) => void;
}

export async function runDemo(options: DemoOptions): Promise<DemoResult> {
  const { profile, out } = options;
  const log = options.log ?? ((line: string) => console.log(line));
  const threads = options.threads ?? 1;
  torch.setNumThreads(threads);
  const started = performance.now();
  mkdirSync(out, { recursive: true });
  for (const name of ['teacher', 'classifier', 'figures', ...profile.seeds.map((s) => `seed-${s}`)]) rmSync(join(out, name), { recursive: true, force: true });
  mkdirSync(join(out, 'figures'), { recursive: true });
  const steps: StepRecord[] = [];
  /** Times `fn` as the step `name`, recording the command line that reproduces it. */
  const step = async <T>(name: string, words: readonly string[] | null, fn: () => Promise<T> | T): Promise<T> => {
    log(`\n== ${name}${words === null ? '' : `\n   ${commandLine(words)}`}`);
    const t0 = performance.now();
    const value = await fn();
    const seconds = (performance.now() - t0) / 1000;
    steps.push({ name, command: words === null ? null : commandLine(words), seconds });
    log(`   ${name}: ${seconds.toFixed(1)} s`);
    return value;
  };

  // 1. The stand-in teacher and the evaluation classifier, trained once.
  const t = profile.teacher;
  const teacherInput = 32;
  const teacher = await step('train the ViT teacher (DINOv2 architecture, stand-in for DINOv2 weights)', null, () => trainTeacher({
    config: { imgSize: 32, patchSize: 4, embedDim: t.embedDim, depth: t.depth, numHeads: t.numHeads },
    inputSize: teacherInput, steps: t.steps, batchSize: t.batchSize, lr: t.lr, seed: 0, testImages: profile.testImages, dir: join(out, 'teacher'),
  }));
  writeJson(join(out, 'teacher', 'result.json'), { testAccuracy: teacher.testAccuracy, finalLoss: teacher.finalLoss, params: teacher.params });
  const c = profile.classifier;
  const classifier = await step('train the evaluation classifier (CNN, separate from the teacher)', null, () => trainClassifier({
    steps: c.steps, batchSize: c.batchSize, lr: c.lr, seed: 1, testImages: profile.testImages, dir: join(out, 'classifier'),
  }));
  writeJson(join(out, 'classifier', 'result.json'), { testAccuracy: classifier.testAccuracy, finalLoss: classifier.finalLoss });

  const test = fashionMnistTensors(profile.testImages, false);
  const reference = torch.keep(classifier.model.describe(test.images).features);

  // The shared configs: the VAE architecture (diffusers config.json) and the SiT size.
  const configs = join(out, 'configs');
  mkdirSync(configs, { recursive: true });
  const vaeConfigPath = join(configs, 'vae.json');
  writeVaeConfig(vaeConfigPath, profile.vae.blockOutChannels);
  const sitConfigPath = join(configs, 'sit-demo.json');
  const s = profile.sit;
  writeJson(sitConfigPath, { depth: s.depth, hiddenSize: s.hiddenSize, patchSize: 2, numHeads: s.numHeads });

  const runs: DemoResult['runs'] = {};
  for (const seed of profile.seeds) {
    runs[String(seed)] = {} as Record<Variant, VariantResult>;
    for (const variant of VARIANTS) {
      const label = `${variant === 'plain' ? 'plain VAE' : 'ReaLS VAE'}, seed ${seed}`;
      const dir = join(out, `seed-${seed}`, variant);
      mkdirSync(dir, { recursive: true });

      // 2. The VAE: the alignment trainer with the alignment losses on (ReaLS) or off (plain).
      const trainWords = vaeTrainWords({ variant, vae: profile.vae, teacher, teacherInput, vaeConfigPath, resultsDir: join(dir, 'vae'), seed });
      await step(`train the ${label}`, trainWords, async () => {
        const flags = parseFlags<AlignTrainFlags>(alignTrainCommand(), trainWords.slice(2));
        await runAlignTrain(flags, { ...flags });
      });
      const vaeRun = onlyRunDir(join(dir, 'vae'));
      const vaePath = join(dir, 'vae-diffusers');
      const convertWords = vaeConvertWords(vaeRun, vaePath, profile.statsImages, seed);
      await step(`latent statistics of the ${label} (diffusers folder + mean_std.json)`, convertWords, async () => {
        await runAlignConvert(parseFlags<AlignConvertFlags>(alignConvertCommand(), convertWords.slice(2)), log);
      });
      const vae = AutoencoderKL.fromPretrained(vaePath).eval();
      const reconstruction = await step(`reconstruction error of the ${label}`, null,
        () => scoreReconstruction(vae, test.images, join(out, 'figures', `reconstructions-${variant}-seed${seed}.png`)));
      writeJson(join(dir, RESULT_FILES.reconstruction), reconstruction);

      // 3. A SiT on its latents.
      const sitWords = [
        'sit', 'train', '--data-path', 'fashion-mnist', '--vae-path', vaePath, '--image-size', '32', '--model', sitConfigPath,
        '--results-dir', join(dir, 'sit'), '--epochs', '1000', '--max-steps', String(s.steps), '--global-batch-size', String(s.batchSize),
        '--global-seed', String(seed), '--num-workers', '0', '--lr', String(s.lr), '--ema-decay', String(s.emaDecay),
        '--log-every', String(Math.max(1, Math.floor(s.steps / 50))), '--ckpt-every', String(s.steps), '--no-flip',
      ];
      await step(`train a SiT on the ${label} latents`, sitWords, async () => {
        const flags = parseFlags<GeneratorTrainFlags>(subcommand(sitCommand(), 'train'), sitWords.slice(2));
        await runGeneratorTrain('SiT', flags, { ...flags });
      });
      const sitCkpt = resolveResume(onlyRunDir(join(dir, 'sit'))).checkpoint;

      // 4. Samples with the ODE and the SDE sampler, guided; scored in the classifier's feature space.
      const sampling = {} as Record<SamplerName, SampleScores>;
      for (const sampler of SAMPLERS) {
        const sampleDir = join(dir, `samples-${sampler}`);
        const sampleWords = [
          'sample', sampler, '--model', sitConfigPath, '--ckpt', sitCkpt, '--vae-path', vaePath, '--sample-dir', sampleDir,
          // All samples in one batch: the fastest way on a CPU.
          '--per-proc-batch-size', String(profile.samples), '--num-fid-samples', String(profile.samples), '--image-size', '32',
          '--num-classes', String(FASHION_MNIST_CLASSES.length), '--cfg-scale', String(profile.cfgScale), '--cfg-channels', 'all',
          '--num-sampling-steps', String(profile.samplingSteps), '--global-seed', String(seed),
          ...(sampler === 'ode' ? ['--sampling-method', 'heun2'] : ['--sampling-method', 'Euler']),
        ];
        await step(`sample the ${label} SiT (${sampler.toUpperCase()}, CFG ${profile.cfgScale})`, sampleWords,
          () => runCommand(subcommand(sampleCommand(), sampler), sampleWords.slice(2)));
        const npz = readdirSync(sampleDir).filter((f) => f.endsWith('.npz')).map((f) => join(sampleDir, f));
        if (npz.length !== 1) throw new Error(`${sampleDir}: expected one .npz of samples, found ${npz.length}`);
        sampling[sampler] = await step(`score the ${label} ${sampler.toUpperCase()} samples (classifier features)`, null,
          () => scoreSamples(classifier.model, reference, npz[0]!));
        writeJson(join(dir, RESULT_FILES[sampler]), sampling[sampler]);
        if (seed === profile.seeds[0]) await classGrid(npz[0]!, join(out, 'figures', `samples-${variant}-${sampler}.png`), 8);
      }

      // 5. The linear-head readout: class-as-mask segmentation from the latents (both) and from the MLPs (ReaLS).
      const headRun = async (features: 'latent' | 'mlp'): Promise<HeadScores> => {
        const headWords = trainLinearWords({ vaePath, out: join(dir, `head-${features}.safetensors`), features, ...profile.head, seed });
        return step(`linear head on the ${label} ${features === 'mlp' ? 'alignment-MLP features' : 'latents'}`, headWords, async () => {
          const result = await runTrainLinear(parseFlags<TrainLinearOptions>(subcommand(headsCommand(), 'train-linear'), headWords.slice(2)));
          return { mIoU: result.mIoU, pixelAccuracy: result.pixelAccuracy, train: result.train, heldOut: result.heldOut };
        });
      };
      const headLatent = await headRun('latent');
      writeJson(join(dir, RESULT_FILES.headLatent), headLatent);
      const headMlp = variant === 'reals' ? await headRun('mlp') : null;
      if (headMlp !== null) writeJson(join(dir, RESULT_FILES.headMlp), headMlp);
      runs[String(seed)]![variant] = { reconstruction, sampling, headLatent, headMlp };
    }
  }
  for (const tensor of [test.images, test.labels, reference]) tensor.dispose();

  const result: DemoResult = {
    profile, out, threads,
    teacher: { testAccuracy: teacher.testAccuracy, params: teacher.params, checkpoint: teacher.checkpoint, configPath: teacher.configPath },
    classifier: { testAccuracy: classifier.testAccuracy, checkpoint: classifier.checkpoint },
    runs, steps, totalSeconds: 0,
  };
  result.totalSeconds = (performance.now() - started) / 1000;
  await writeReport(result);
  writeJson(join(out, 'metrics.json'), result);
  log(`\nreport: ${join(out, 'report.md')} and ${join(out, 'report.html')} (${result.totalSeconds.toFixed(0)} s in all)`);
  return result;
}

