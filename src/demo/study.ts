// The latent-channel study (docs/study/channels/PROTOCOL.md): does the reconstruction-generation
// dilemma appear at Fashion-MNIST scale? One cell = (latent channels C, seed S): a plain VAE of
// width C trained from scratch, its rFID and iFID, a SiT of one size for every C trained on its
// latents, and FID / precision / recall of that SiT's samples at four checkpoints, all in the
// feature space of one evaluation classifier trained once for the whole study.
//
// A cell runs the same library pipelines as `reals demo` (align train/convert, sit train, sample)
// with the demo's option builders, in float32 on one thread so that a rerun gives the same
// numbers. It is resumable: each finished stage leaves a JSON record in the work folder, a killed
// training run resumes from its last checkpoint, and a cell whose metrics file exists is skipped.
import { spawnSync } from 'node:child_process';
import { cpus } from 'node:os';
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, writeSync } from 'node:fs';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as torch from '../torch/index.js';
import * as nn from '../nn/index.js';
import { loadSafetensors } from '../io/index.js';
import { writeFileAtomic } from '../io/file.js';
import { AutoencoderKL } from '../models/autoencoder-kl.js';
import { FashionMNIST } from '../data/index.js';
import { interpolatedFid, type IfidResult } from '../eval/ifid.js';
import { CheckpointManager } from '../train/index.js';
import { RunDirBusyError, lockRunDir, type RunLock } from '../train/run-dir.js';
import { runAlignConvert, runAlignTrain } from '../pipelines/align.js';
import { runGeneratorTrain } from '../pipelines/generator.js';
import { runSample } from '../pipelines/sample.js';
import { HOG_TEACHER_NAME } from '../models/hog.js';
import { FashionClassifier, classifierExtractor, trainClassifier } from './classifier.js';
import { fashionMnistTensors } from './supervised.js';
import {
  commandLine, commandWords, finalLoss, onlyRunDir, sampleOptions, scoreSamples, sitEvalSteps, sitTrainOptions, vaeConvertOptions, vaeTrainOptions,
  writeVaeConfig,
} from './pipeline.js';
import type { DemoProfile, SampleScores } from './results.js';

export interface ChannelStudyProfile extends Pick<DemoProfile, 'sit' | 'sitEvalFractions' | 'samples' | 'samplingSteps' | 'cfgScale' | 'statsImages'> {
  name: string;
  /** The evaluation classifier, trained once with this seed and reused by every cell. */
  classifier: DemoProfile['classifier'] & { seed: number };
  /** The stage-1 VAE of every width (DemoProfile's vae, the width given per cell). */
  vae: Omit<DemoProfile['vae'], 'latentChannels'>;
  /** FID reference: the first N Fashion-MNIST test images; also the images the classifier's accuracy is measured on. */
  referenceImages: number;
  /** iFID: N test images (a seeded random subset), the point t on the segment to the L2-nearest neighbour. */
  ifid: { images: number; t: number; seed: number };
  /** Samples per sampling call (memory, not the result's meaning). */
  sampleBatch: number;
}

const STUDY_BASE = { classifier: { lr: 1e-3, seed: 1 }, vae: { lr: 1e-3, blockOutChannels: [16, 32, 32] } };

export const CHANNEL_STUDY_PROFILES: Record<'test' | 'study', ChannelStudyProfile> = {
  /** Seconds: every stage runs, for the test suite. */
  test: {
    name: 'test',
    classifier: { ...STUDY_BASE.classifier, steps: 4, batchSize: 16 },
    vae: { ...STUDY_BASE.vae, steps: 4, batchSize: 8 },
    statsImages: 32,
    sit: { steps: 4, batchSize: 16, lr: 1e-3, depth: 2, hiddenSize: 128, numHeads: 2, emaDecay: 0.9 },
    sitEvalFractions: [0.25, 0.5, 0.75, 1],
    samples: 20, samplingSteps: 3, cfgScale: 1, sampleBatch: 20,
    referenceImages: 40,
    ifid: { images: 20, t: 0.5, seed: 0 },
  },
  /** The study's cells (PROTOCOL.md): about 15 minutes a cell on one core of the study's machine. */
  study: {
    name: 'study',
    classifier: { ...STUDY_BASE.classifier, steps: 1000, batchSize: 64 },
    vae: { ...STUDY_BASE.vae, steps: 1200, batchSize: 16 },
    statsImages: 2000,
    // Width 128 = patch² x 32: the widest latent's tokens fit the SiT of every cell.
    sit: { steps: 1400, batchSize: 32, lr: 1e-3, depth: 4, hiddenSize: 128, numHeads: 4, emaDecay: 0.995 },
    sitEvalFractions: [0.25, 0.5, 0.75, 1],
    samples: 2000, samplingSteps: 16, cfgScale: 1, sampleBatch: 250,
    referenceImages: 2000,
    ifid: { images: 2000, t: 0.5, seed: 0 },
  },
};

export type ChannelStudyProfileName = keyof typeof CHANNEL_STUDY_PROFILES;
export const STUDY_CHANNELS = [4, 8, 16, 32];
export const STUDY_SEEDS = [0, 1, 2];
/** Every cell runs in float32 on one thread, so that a rerun gives the same numbers. */
export const STUDY_PRECISION = 'fp32' as const;

/** What one cell's metrics file holds. */
export interface ChannelCellMetrics {
  study: 'latent-channels';
  profile: ChannelStudyProfile;
  channels: number;
  seed: number;
  classifier: ClassifierRecord;
  reconstruction: IfidResult;
  vae: { steps: number; finalLoss: number };
  sit: { steps: number; finalLoss: number };
  /** ODE (heun2) samples of the SiT checkpoint at each evaluated step, scored against the reference. */
  curve: (SampleScores & { step: number })[];
  /** Each stage: the command that runs it alone (null: no command, the study's own code), its wall and CPU seconds. */
  stages: { name: string; command: string | null; seconds: number; cpuSeconds: number }[];
  /**
   * `cpuFamilyModel` (torch.cpuFamilyModel), `openblasCore` (torch.openblasCoreName: the float32
   * matmul kernels) and `commit` (the checkout's, `-dirty` when tracked files differ from it; null
   * outside a git checkout) are absent in cells that ran before they were recorded.
   */
  environment: {
    reals: string; node: string; libtorch: string; cpu: string; cpuFamilyModel?: string | null; openblasCore?: string | null; threads: number; precision: typeof STUDY_PRECISION; commit?: string | null;
  };
  /** The sum of the stages' wall seconds (a resumed cell counts each stage once); on a shared machine far more than cpuSeconds. */
  wallSeconds: number;
  /** The sum of the stages' CPU seconds (user + system, this process): what the cell costs. Absent in c4-seed0 and c32-seed0, which ran before it was recorded. */
  cpuSeconds?: number;
}

export interface ClassifierRecord { sha256: string; testAccuracy: number; testImages: number; steps: number; seed: number; finalLoss: number }

export interface ChannelCellOptions {
  profile: ChannelStudyProfile;
  channels: number;
  seed: number;
  /** Checkpoints, latents, samples (not committed); the classifier is cached here too. */
  work: string;
  /** Where the metrics file c<C>-seed<S>.json goes. */
  out: string;
  log?: (line: string) => void;
}

export function cellName(channels: number, seed: number): string {
  return `c${channels}-seed${seed}`;
}

export function writeJsonAtomic(path: string, value: unknown): void {
  writeFileAtomic(path, (fd) => writeSync(fd, `${JSON.stringify(value, null, 2)}\n`));
}

export function readJson<T>(path: string): T {
  return JSON.parse(readFileSync(path, 'utf8')) as T;
}

/**
 * The study's evaluation classifier: trained once into `<work>/classifier-<profile>` (in a
 * temporary folder renamed into place, so two cells starting together both end up with one), then
 * loaded; a weights file whose hash differs from the one recorded at training is refused.
 */
export async function studyClassifier(profile: ChannelStudyProfile, work: string, log: (line: string) => void): Promise<{ model: FashionClassifier; record: ClassifierRecord }> {
  const dir = join(work, `classifier-${profile.name}`);
  const recordPath = join(dir, 'result.json');
  if (!existsSync(recordPath)) {
    const tmp = `${dir}.tmp-${process.pid}`;
    rmSync(tmp, { recursive: true, force: true });
    const c = profile.classifier;
    log(`== train the evaluation classifier (${c.steps} steps, seed ${c.seed}) into ${dir}`);
    const trained = await trainClassifier({ steps: c.steps, batchSize: c.batchSize, lr: c.lr, seed: c.seed, testImages: profile.referenceImages, dir: tmp });
    const record: ClassifierRecord = {
      sha256: nn.stateDictHash(trained.model), testAccuracy: trained.testAccuracy, testImages: trained.testImages, steps: c.steps, seed: c.seed, finalLoss: trained.finalLoss,
    };
    writeJsonAtomic(join(tmp, 'result.json'), record);
    try {
      renameSync(tmp, dir);
    } catch (error) {
      // Another cell renamed its (identical) classifier first.
      if (!existsSync(recordPath)) throw error;
      rmSync(tmp, { recursive: true, force: true });
    }
  }
  const record = readJson<ClassifierRecord>(recordPath);
  const weights = join(dir, 'classifier.safetensors');
  const model = new FashionClassifier();
  model.loadStateDict(loadSafetensors(weights));
  model.eval();
  const sha256 = nn.stateDictHash(model);
  if (sha256 !== record.sha256) throw new Error(`${weights}: weights hash ${sha256} is not the ${record.sha256} recorded in ${recordPath} (delete the folder to retrain)`);
  return { model, record };
}

/**
 * Runs a trainer to `finalStep` in `resultsDir`: from scratch when it holds no run folder (or one
 * with no checkpoint yet), resumed from the last checkpoint of its run folder otherwise, not at
 * all when that checkpoint is the final one. Returns the run folder.
 */
export async function trainResumable(resultsDir: string, finalStep: number, train: (resume: string | undefined) => Promise<unknown>): Promise<string> {
  const runs = existsSync(resultsDir) ? readdirSync(resultsDir).filter((name) => /^\d{3}-/.test(name)) : [];
  const last = runs.length === 0 ? null : new CheckpointManager(join(onlyRunDir(resultsDir), 'checkpoints')).last();
  if (last === null) {
    rmSync(resultsDir, { recursive: true, force: true });
    await train(undefined);
  } else if (basename(last) !== CheckpointManager.fileName(finalStep)) {
    await train(onlyRunDir(resultsDir));
  }
  return onlyRunDir(resultsDir);
}

function packageVersion(): string {
  return readJson<{ version: string }>(new URL('../../package.json', import.meta.url).pathname).version;
}

/**
 * The commit of the checkout this code runs from, with `-dirty` when tracked files differ from it;
 * null outside a git checkout (an installed package). A cell reruns to the last digit only at its commit.
 */
export function sourceCommit(): string | null {
  const root = fileURLToPath(new URL('../..', import.meta.url));
  // An installed package inside someone's repository is not that repository's commit.
  if (!existsSync(join(root, '.git'))) return null;
  const run = spawnSync('git', ['describe', '--always', '--dirty', '--abbrev=40'], { cwd: root, encoding: 'utf8' });
  return run.status === 0 ? run.stdout.trim() : null;
}

/** What one stage of a cell cost, and the command that runs it alone (null: the study's own code). */
export type StageRecord = ChannelCellMetrics['stages'][number];

/**
 * A cell's stage runner: `stage(id, …)` runs `fn` once and keeps its result in
 * `<stagesDir>/<id>.json`, read back (with its recorded times) when the cell runs again.
 * Every stage, run or read back, is appended to `stages`.
 */
export function stageRunner(stagesDir: string, cell: string, log: (line: string) => void): {
  stage: <T>(id: string, title: string, words: readonly string[] | null, fn: () => Promise<T> | T) => Promise<T>;
  stages: StageRecord[];
} {
  mkdirSync(stagesDir, { recursive: true });
  const stages: StageRecord[] = [];
  const stage = async <T>(id: string, title: string, words: readonly string[] | null, fn: () => Promise<T> | T): Promise<T> => {
    const recordPath = join(stagesDir, `${id}.json`);
    const command = words === null ? null : commandLine(words);
    if (existsSync(recordPath)) {
      const record = readJson<{ result: T; seconds: number; cpuSeconds: number }>(recordPath);
      stages.push({ name: title, command, seconds: record.seconds, cpuSeconds: record.cpuSeconds });
      return record.result;
    }
    log(`\n== ${cell}: ${title}${command === null ? '' : `\n   ${command}`}`);
    const t0 = performance.now();
    const cpu0 = process.cpuUsage();
    const result = await fn();
    const seconds = (performance.now() - t0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    const cpuSeconds = (cpu.user + cpu.system) / 1e6;
    writeJsonAtomic(recordPath, { result, seconds, cpuSeconds });
    stages.push({ name: title, command, seconds, cpuSeconds });
    log(`   ${title}: ${seconds.toFixed(1)} s`);
    return result;
  };
  return { stage, stages };
}

/** The configs every cell of a profile shares: the VAE of `channels` channels and the study's SiT. */
export function studyConfigs(profile: ChannelStudyProfile, work: string, channels: number): { vaeConfigPath: string; sitConfigPath: string } {
  const configs = join(work, profile.name, 'configs');
  mkdirSync(configs, { recursive: true });
  const vaeConfigPath = join(configs, `vae-c${channels}.json`);
  writeVaeConfig(vaeConfigPath, profile.vae.blockOutChannels, channels);
  const sitConfigPath = join(configs, 'sit-study.json');
  writeJsonAtomic(sitConfigPath, { depth: profile.sit.depth, hiddenSize: profile.sit.hiddenSize, patchSize: 2, numHeads: profile.sit.numHeads });
  return { vaeConfigPath, sitConfigPath };
}

/** The stage-1 VAE of (channels, seed): trained, then converted to a diffusers folder with its latent statistics. */
export interface StageOneVae { runDir: string; finalLoss: number; vaePath: string; stages: StageRecord[] }

/**
 * Stage 1 of the cell (channels, seed): the plain VAE, trained from scratch in
 * `<work>/<profile>/c<C>-seed<S>/` and converted, its stage records kept there, so that the
 * alignment cells of the same (channels, seed) fine-tune this very VAE rather than train their own.
 * Alignment weight 0 with HOG, the teacher that has no weights: no alignment term reaches the VAE,
 * and no teacher has to be trained first. The folder is locked while it runs: a second cell of the
 * same (channels, seed) waits, then reads the first one's records.
 */
export async function trainStageOneVae(options: {
  profile: ChannelStudyProfile; channels: number; seed: number; work: string; log: (line: string) => void;
}): Promise<StageOneVae> {
  const { profile, channels, seed, log } = options;
  const dir = join(options.work, profile.name, cellName(channels, seed));
  mkdirSync(dir, { recursive: true });
  const lock = await waitForLock(dir, log);
  try {
    return await trainLockedStageOneVae(profile, channels, seed, options.work, dir, log);
  } finally {
    lock.release();
  }
}

/** Locks `dir` for this process, waiting while another live process holds it. */
async function waitForLock(dir: string, log: (line: string) => void): Promise<RunLock> {
  for (let waited = false; ; waited = true) {
    try {
      return lockRunDir(dir, log);
    } catch (error) {
      if (!(error instanceof RunDirBusyError)) throw error;
      if (!waited) log(`waiting for process ${error.pid}, which trains the stage-1 VAE in ${dir}`);
      await new Promise((resolve) => setTimeout(resolve, 5000));
    }
  }
}

async function trainLockedStageOneVae(profile: ChannelStudyProfile, channels: number, seed: number, work: string, dir: string, log: (line: string) => void): Promise<StageOneVae> {
  const { stage, stages } = stageRunner(join(dir, 'stages'), cellName(channels, seed), log);
  const { vaeConfigPath } = studyConfigs(profile, work, channels);
  const vaeSteps = profile.vae.steps;
  const vaeResults = join(dir, 'vae');
  const vaeTrain = {
    ...vaeTrainOptions({
      alignWeight: 0, startFrom: null, profile: { vae: { ...profile.vae, latentChannels: channels }, finetune: profile.vae },
      teacher: { configPath: HOG_TEACHER_NAME, checkpoint: '' }, teacherInput: 32, vaeConfigPath, resultsDir: vaeResults, seed,
    }),
    dinoCkpt: undefined, ckptEvery: Math.max(1, Math.floor(vaeSteps / 4)), precision: STUDY_PRECISION,
  };
  const vaeRun = await stage('vae-train', `train the plain ${channels}-channel VAE`, commandWords(['align', 'train'], vaeTrain), async () => {
    const runDir = await trainResumable(vaeResults, vaeSteps, (resume) => runAlignTrain({ ...vaeTrain, resume, log }));
    return { runDir, finalLoss: finalLoss(runDir, 'rec') };
  });
  const vaePath = join(dir, 'vae-diffusers');
  await convertStage(stage, vaeRun.runDir, vaePath, profile, seed, log);
  return { ...vaeRun, vaePath, stages };
}

export async function convertStage(stage: ReturnType<typeof stageRunner>['stage'], runDir: string, vaePath: string, profile: ChannelStudyProfile, seed: number, log: (line: string) => void): Promise<void> {
  const convert = vaeConvertOptions(runDir, vaePath, profile.statsImages, seed);
  await stage('vae-convert', 'latent statistics (diffusers folder + mean_std.json)', commandWords(['align', 'convert'], convert),
    () => runAlignConvert({ ...convert, log }).then(() => null));
}

/** What the study measures of one latent space: the VAE's rFID and iFID, the SiT trained on it and its samples' scores at each checkpoint. */
export interface LatentSpaceScores {
  reconstruction: IfidResult;
  sit: { steps: number; finalLoss: number };
  curve: ChannelCellMetrics['curve'];
}

/**
 * The evaluation every cell shares (PROTOCOL.md): rFID and iFID of the VAE in `vaePath` (a
 * diffusers folder with mean_std.json), a SiT trained on its latents in `<dir>/sit`, and FID,
 * precision, recall and class accuracy of its ODE samples at each evaluated checkpoint.
 */
export async function scoreLatentSpace(options: {
  profile: ChannelStudyProfile; channels: number; seed: number; work: string; dir: string; vaePath: string;
  classifier: FashionClassifier; stage: ReturnType<typeof stageRunner>['stage']; log: (line: string) => void;
}): Promise<LatentSpaceScores> {
  const { profile, channels, seed, dir, vaePath, classifier, stage, log } = options;
  const { sitConfigPath } = studyConfigs(profile, options.work, channels);
  const reconstruction = await stage('ifid', `rFID and iFID (t ${profile.ifid.t}, L2 neighbour, linear) on ${profile.ifid.images} test images`, null, () => interpolatedFid({
    vae: AutoencoderKL.fromPretrained(vaePath), dataset: new FashionMNIST({ channels: 3, train: false }), count: profile.ifid.images,
    extractor: classifierExtractor(classifier), t: profile.ifid.t, interpolation: 'linear', seed: profile.ifid.seed, numWorkers: 0,
  }));

  const sitResults = join(dir, 'sit');
  const sit = { ...sitTrainOptions({ profile, vaePath, sitConfigPath, resultsDir: sitResults, seed }), precision: STUDY_PRECISION };
  const sitRun = await stage('sit-train', `train the SiT on the ${channels}-channel latents`, commandWords(['sit', 'train'], sit), async () => {
    const runDir = await trainResumable(sitResults, profile.sit.steps, (resume) => runGeneratorTrain('SiT', { ...sit, resume, log }));
    return { runDir, finalLoss: finalLoss(runDir) };
  });

  const test = fashionMnistTensors(profile.referenceImages, false);
  const reference = torch.keep(classifier.describe(test.images).features);
  test.images.dispose();
  test.labels.dispose();
  const curve: ChannelCellMetrics['curve'] = [];
  for (const sitStep of sitEvalSteps(profile).steps) {
    const sampleDir = join(dir, `samples-step${sitStep}`);
    const sample = {
      ...sampleOptions({ profile, sitConfigPath, sitRun: sitRun.runDir, sitStep, vaePath, sampleDir, sampler: 'ode', seed, batchSize: profile.sampleBatch }),
      precision: STUDY_PRECISION,
    };
    const scores = await stage(`score-step${sitStep}`, `sample the SiT at step ${sitStep} (ODE heun2, ${profile.samplingSteps} steps, CFG ${profile.cfgScale}) and score`,
      commandWords(['sample', 'ode'], sample), async () => {
        // A sampling run killed midway leaves a partial folder: start it again.
        rmSync(sampleDir, { recursive: true, force: true });
        await runSample('ode', { ...sample, log });
        const npz = readdirSync(sampleDir).filter((f) => f.endsWith('.npz'));
        if (npz.length !== 1) throw new Error(`${sampleDir}: expected one .npz of samples, found ${npz.length}`);
        return scoreSamples(classifier, reference, join(sampleDir, npz[0]!));
      });
    curve.push({ step: sitStep, ...scores });
  }
  reference.dispose();
  return { reconstruction, sit: { steps: profile.sit.steps, finalLoss: sitRun.finalLoss }, curve };
}

/**
 * The computation every study cell runs, fixed with its protocol: one thread, and attention on the
 * math path, as when the first cells ran (the fused kernel came later and orders float32 sums
 * differently, so with it the same command would train other bits).
 */
export function pinStudyComputation(): void {
  torch.setNumThreads(1);
  torch.nnFunctional.enableFusedAttention(false);
}

/** The environment a cell ran in, for its metrics file. */
export function cellEnvironment(): ChannelCellMetrics['environment'] {
  return {
    reals: packageVersion(), node: process.version, libtorch: torch.version(), cpu: cpus()[0]?.model ?? 'unknown', cpuFamilyModel: torch.cpuFamilyModel(), openblasCore: torch.openblasCoreName(),
    threads: torch.getNumThreads(), precision: STUDY_PRECISION, commit: sourceCommit(),
  };
}

/**
 * One cell of the study: returns its metrics, and whether its metrics file already existed (then
 * nothing runs).
 */
export async function runChannelCell(options: ChannelCellOptions): Promise<{ path: string; skipped: boolean; metrics: ChannelCellMetrics }> {
  const { profile, channels, seed } = options;
  const log = options.log ?? ((line: string) => console.log(line));
  const name = cellName(channels, seed);
  const path = join(options.out, `${name}.json`);
  if (existsSync(path)) {
    log(`${path} exists: cell ${name} is done`);
    return { path, skipped: true, metrics: readJson<ChannelCellMetrics>(path) };
  }
  pinStudyComputation();
  const dir = join(options.work, profile.name, name);
  mkdirSync(options.out, { recursive: true });
  const classifier = await studyClassifier(profile, options.work, log);
  const stages: StageRecord[] = [];
  const vae = await trainStageOneVae({ profile, channels, seed, work: options.work, log });
  stages.push(...vae.stages);
  const { stage, stages: evaluation } = stageRunner(join(dir, 'stages'), name, log);
  const scores = await scoreLatentSpace({ profile, channels, seed, work: options.work, dir, vaePath: vae.vaePath, classifier: classifier.model, stage, log });
  stages.push(...evaluation);

  const cpuSeconds = stages.reduce((sum, s) => sum + s.cpuSeconds, 0);
  const metrics: ChannelCellMetrics = {
    study: 'latent-channels', profile, channels, seed, classifier: classifier.record, reconstruction: scores.reconstruction,
    vae: { steps: profile.vae.steps, finalLoss: vae.finalLoss }, sit: scores.sit, curve: scores.curve, stages,
    environment: cellEnvironment(),
    wallSeconds: stages.reduce((sum, s) => sum + s.seconds, 0),
    cpuSeconds,
  };
  writeJsonAtomic(path, metrics);
  log(`\nwrote ${path}: ${summary(metrics)}`);
  return { path, skipped: false, metrics };
}

/** A finished cell in one line: its rFID, iFID, FID at each step and its cost. */
export function summary(m: Pick<ChannelCellMetrics, 'reconstruction' | 'curve' | 'wallSeconds' | 'cpuSeconds'>): string {
  return `rFID ${m.reconstruction.rfid.toFixed(2)}, iFID ${m.reconstruction.ifid.toFixed(2)}, FID ${m.curve.map((p) => p.fid.toFixed(2)).join(' / ')} ` +
    `at steps ${m.curve.map((p) => p.step).join(' / ')} (${m.wallSeconds.toFixed(0)} s, ${(m.cpuSeconds ?? 0).toFixed(0)} CPU s)`;
}
