// The pipelines behind `reals teacher train` (a self-supervised DINOv2-architecture teacher,
// teacher.ts) and `reals teacher probe` (the linear-probe accuracy of a backbone,
// src/eval/linear-probe.ts), from files and names.
import * as torch from '../torch/index.js';
import { DinoVisionTransformer, resolveDinoConfig } from '../models/dinov2.js';
import { FashionMNIST, ImageFolder, type Dataset } from '../data/index.js';
import { holdOutSplit, linearProbe, type LinearProbeResult } from '../eval/linear-probe.js';
import { trainSelfSupervisedTeacher, type ProbeData, type SelfSupervisedSettings, type SelfSupervisedTeacherResult } from './teacher.js';
import { withDefaults } from './context.js';

/** --data-path: Fashion-MNIST (3 channels, 32x32) or an ImageNet-layout folder center-cropped to imageSize. */
function trainingImages(dataPath: string, imageSize: number, train = true): Dataset {
  if (dataPath === 'fashion-mnist') return new FashionMNIST({ channels: 3, train });
  return new ImageFolder(dataPath, { resolution: imageSize });
}

/** The probe's labelled splits: Fashion-MNIST's train and test sets, or a seeded 80/20 split of a folder's images by class folder. */
function probeSplits(dataPath: string, imageSize: number, images: number, seed: number, log: (line: string) => void): ProbeData | undefined {
  if (images === 0) return undefined;
  if (dataPath === 'fashion-mnist') return { train: trainingImages(dataPath, imageSize, true), test: trainingImages(dataPath, imageSize, false), images };
  const folder = new ImageFolder(dataPath, { resolution: imageSize });
  if (folder.classes.length < 2) {
    log(`note: ${dataPath} has one class folder, so there is no linear probe`);
    return undefined;
  }
  return { ...holdOutSplit(folder, 0.2, seed), images };
}

/** The run settings of `reals teacher train` that have defaults (the method's are SELF_SUPERVISED_DEFAULTS). */
export interface TeacherTrainSettings {
  /** Side of the ADM center crop of folder images. */
  imageSize: number;
  batchSize: number;
  epochs: number;
  /** Runs go to <resultsDir>/NNN-teacher. */
  resultsDir: string;
  seed: number;
  ckptEvery: number;
  logEvery: number;
  /** Linear probe at the end on n train and n test images; 0: none. */
  probeImages: number;
  /** The networks under bfloat16 autocast or not; auto (default): bf16 on CUDA and bfloat16-capable CPUs. */
  precision: torch.Precision;
}

export const TEACHER_TRAIN_RUN_DEFAULTS: TeacherTrainSettings = {
  imageSize: 32, batchSize: 64, epochs: 100, resultsDir: 'results', seed: 0, ckptEvery: 1000, logEvery: 20, probeImages: 2000, precision: 'auto',
};

/** `reals teacher train`'s flags, camelCased. */
export interface TeacherTrainRunOptions extends Partial<TeacherTrainSettings>, Partial<SelfSupervisedSettings> {
  /** An ImageNet-layout image folder, or `fashion-mnist`; labels are never read for training. */
  dataPath: string;
  /** The backbone: a DINOV2_CONFIGS name or a .json file of DinoV2Config fields. */
  dinoModel: string;
  /** Default DINOv2's base_lr 0.004 scaled by sqrt(batchSize / 1024). */
  lr?: number;
  warmupSteps?: number;
  warmupTeacherTempSteps?: number;
  freezeLastLayerSteps?: number;
  maxSteps?: number;
  resume?: string;
  keepLast?: number;
  numWorkers?: number;
  /** Folder of the exported teacher (default <run>/teacher). */
  out?: string;
  device?: string;
  log?: (line: string) => void;
}

/** Builds the data and the options and trains the teacher. */
export async function runTeacherTrain(options: TeacherTrainRunOptions): Promise<SelfSupervisedTeacherResult> {
  const { log = console.log, ...given } = options;
  const o = { ...given, ...withDefaults(TEACHER_TRAIN_RUN_DEFAULTS, given) };
  const config = resolveDinoConfig(o.dinoModel);
  torch.checkDevice(o.device);
  const { dataPath, dinoModel, imageSize, probeImages, ...settings } = o;
  for (const [flag, size] of [['--global-crops-size', o.globalCropsSize], ['--local-crops-size', o.localCropsSize]] as const) {
    if (size !== undefined && size % config.patchSize !== 0) throw new Error(`${flag} ${size} is not a multiple of the patch size ${config.patchSize} of --dino-model ${dinoModel}`);
  }
  const result = await trainSelfSupervisedTeacher({
    ...settings, config, dataset: trainingImages(dataPath, imageSize),
    probe: probeSplits(dataPath, imageSize, probeImages, o.seed, log), args: o, log,
  });
  log(`done: step ${result.steps}; --dino-model ${result.configPath} --dino-ckpt ${result.checkpoint}`);
  return result;
}

export interface TeacherProbeSettings {
  imageSize: number;
  /** Images drawn from each split. */
  probeImages: number;
  /** Passes of Adam over the training features. */
  epochs: number;
  lr: number;
  seed: number;
}

export const TEACHER_PROBE_RUN_DEFAULTS: TeacherProbeSettings = { imageSize: 32, probeImages: 2000, epochs: 100, lr: 1e-3, seed: 0 };

/** `reals teacher probe`'s flags, camelCased. */
export interface TeacherProbeRunOptions extends Partial<TeacherProbeSettings> {
  dinoModel: string;
  dinoCkpt: string;
  /** An ImageNet-layout folder (20% held out for testing), or `fashion-mnist` (its train and test sets). */
  dataPath: string;
  /** Side images are resized to for the backbone (default: Fashion-MNIST's 32, else imageSize). */
  inputSize?: number;
  device?: string;
}

export async function runTeacherProbe(options: TeacherProbeRunOptions): Promise<LinearProbeResult> {
  const o = { ...options, ...withDefaults(TEACHER_PROBE_RUN_DEFAULTS, options) };
  torch.checkDevice(o.device);
  const backbone = new DinoVisionTransformer(resolveDinoConfig(o.dinoModel)).loadCheckpoint(o.dinoCkpt);
  const splits = probeSplits(o.dataPath, o.imageSize, o.probeImages, o.seed, () => {});
  if (splits === undefined) throw new Error(`--data-path ${o.dataPath}: needs at least two class folders for a linear probe`);
  const inputSize = o.inputSize ?? (o.dataPath === 'fashion-mnist' ? 32 : o.imageSize);
  return linearProbe({
    backbone: backbone.to(o.device ?? 'cpu'), train: splits.train, test: splits.test, trainImages: o.probeImages, testImages: o.probeImages,
    inputSize, epochs: o.epochs, lr: o.lr, seed: o.seed, device: o.device,
  });
}
