// The pipelines behind `reals teacher train` (a self-supervised DINOv2-architecture teacher,
// teacher.ts) and `reals teacher probe` (the linear-probe accuracy of a backbone,
// src/eval/linear-probe.ts, and the spatial structure of its patch tokens beside that of a
// random-init backbone, src/eval/spatial-structure.ts), from files and names.
import * as torch from '../torch/index.js';
import { DinoVisionTransformer, resolveDinoConfig, type DinoV2Config } from '../models/dinov2.js';
import { HOG_TEACHER_NAME, HogTeacher } from '../models/hog.js';
import { SafetensorsFile } from '../io/index.js';
import { FASHION_MNIST_CLASSES, FashionMNIST, ImageFolder, type Dataset } from '../data/index.js';
import { holdOutSplit, linearProbe, type LinearProbeResult, type ProbedTeacher } from '../eval/linear-probe.js';
import { LDS_FAR_DISTANCE, meanAndStd, spatialStructure } from '../eval/spatial-structure.js';
import { trainSelfSupervisedTeacher, type ProbeData, type SelfSupervisedSettings, type SelfSupervisedTeacherResult } from '../train/teacher.js';
import { withDefaults } from '../runlog/process.js';
import { loadCheckpoint } from '../train/checkpoint.js';
import { trainingFolder } from '../data/inputs.js';

/** --data-path: Fashion-MNIST (3 channels, 32x32) or an ImageNet-layout folder (its train/ under an ImageNet root) center-cropped to imageSize. */
function trainingImages(dataPath: string, imageSize: number, train = true): Dataset {
  if (dataPath === 'fashion-mnist') return new FashionMNIST({ channels: 3, train });
  return new ImageFolder(trainingFolder(dataPath), { resolution: imageSize });
}

/** The probe's labelled splits and their class count: Fashion-MNIST's train and test sets, or a seeded 80/20 split of a folder's images by class folder. */
function probeSplits(dataPath: string, imageSize: number, images: number, seed: number, log: (line: string) => void): (ProbeData & { classes: number }) | undefined {
  if (images === 0) return undefined;
  if (dataPath === 'fashion-mnist') {
    return { train: trainingImages(dataPath, imageSize, true), test: trainingImages(dataPath, imageSize, false), images, classes: FASHION_MNIST_CLASSES.length };
  }
  const folder = new ImageFolder(trainingFolder(dataPath), { resolution: imageSize });
  if (folder.classes.length < 2) {
    log(`note: ${folder.root} has one class folder, so there is no linear probe`);
    return undefined;
  }
  return { ...holdOutSplit(folder, 0.2, seed), images, classes: folder.classes.length };
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
  /** Images drawn from each split; the LDS is measured on those of the test split. */
  probeImages: number;
  /** Passes of Adam over the training features. */
  epochs: number;
  lr: number;
  /** Seeds the subsets, the classifier and the random-init backbone. */
  seed: number;
  /** LDS's far pairs: Manhattan distance >= this many tokens (iREPA: 6). */
  ldsFarDistance: number;
  /** Pixels per cell of `--dino-model hog`: the VAE's downsampling factor, as align train gives HOG the latent grid (4: the demo's f4 VAE). */
  hogCellSize: number;
}

export const TEACHER_PROBE_RUN_DEFAULTS: TeacherProbeSettings = {
  imageSize: 32, probeImages: 2000, epochs: 100, lr: 1e-3, seed: 0, ldsFarDistance: LDS_FAR_DISTANCE, hogCellSize: 4,
};

/** `reals teacher probe`'s flags, camelCased. */
export interface TeacherProbeRunOptions extends Partial<TeacherProbeSettings> {
  /** A DINOV2_CONFIGS name, a .json file of DinoV2Config fields, or `hog` (HogTeacher: no weights). */
  dinoModel: string;
  /** The backbone's weights (hub or Hugging Face naming), or a checkpoint of `reals teacher train` (its EMA teacher's backbone); none for hog. */
  dinoCkpt?: string;
  /** An ImageNet-layout folder (its train/ under an ImageNet root; 20% held out for testing), or `fashion-mnist` (its train and test sets). */
  dataPath: string;
  /** Side images are resized to for the backbone (default: Fashion-MNIST's 32, else imageSize). */
  inputSize?: number;
  device?: string;
}

/** What `reals teacher probe` prints: the linear probe and the LDS of the backbone and of a random-init one of its config, and the class count. */
export interface TeacherProbeResult extends LinearProbeResult {
  classes: number;
  /** Mean LDS of the backbone's final-norm patch tokens over the test images (src/eval/spatial-structure.ts). */
  lds: number;
  /** The standard deviation of the LDS over the test images (its standard error: / sqrt(ldsImages)). */
  ldsStd: number;
  /** The probe accuracy and LDS of the backbone's config initialised with torch.manualSeed(seed): what training added (null for hog, which has no weights). */
  randomInitAccuracy: number | null;
  ldsRandomInit: number | null;
  ldsRandomInitStd: number | null;
  /** Standard deviation over the test images of lds minus ldsRandomInit, image by image: the paired standard error of what training added is this / sqrt(ldsImages). */
  ldsGainStd: number | null;
  ldsImages: number;
  /** The token grid [height, width] of the LDS. */
  ldsGrid: [number, number];
  ldsFarDistance: number;
}

/**
 * A DINOv2-architecture backbone from `path`: a checkpoint of `reals teacher train` (its metadata
 * holds teacher_config) gives its EMA teacher's backbone, so a long run's milestones are probed
 * from the run's own checkpoints; any other file is read as `--dino-ckpt` is everywhere.
 */
function loadBackbone(config: DinoV2Config, path: string): DinoVisionTransformer {
  const backbone = new DinoVisionTransformer(config);
  if (!path.endsWith('.safetensors') || SafetensorsFile.open(path).metadata.teacher_config === undefined) return backbone.loadCheckpoint(path);
  const teacher = loadCheckpoint(path).groups.teacher ?? {};
  const prefix = 'backbone.';
  try {
    backbone.loadStateDict(Object.fromEntries(Object.entries(teacher).filter(([key]) => key.startsWith(prefix)).map(([key, t]) => [key.slice(prefix.length), t])));
  } catch (error) {
    throw new Error(`--dino-ckpt ${path}: the teacher train checkpoint's teacher.backbone.* does not fit --dino-model: ${(error as Error).message}`);
  }
  return backbone;
}

export async function runTeacherProbe(options: TeacherProbeRunOptions): Promise<TeacherProbeResult> {
  const o = { ...options, ...withDefaults(TEACHER_PROBE_RUN_DEFAULTS, options) };
  torch.checkDevice(o.device);
  const device = o.device ?? 'cpu';
  const isHog = o.dinoModel === HOG_TEACHER_NAME;
  const imageSide = o.dataPath === 'fashion-mnist' ? 32 : o.imageSize;
  const inputSize = o.inputSize ?? imageSide;
  let teacher: ProbedTeacher;
  let config: DinoV2Config | null = null;
  if (isHog) {
    if (o.dinoCkpt !== undefined) throw new Error(`--dino-ckpt ${o.dinoCkpt}: --dino-model ${HOG_TEACHER_NAME} has no weights`);
    if (inputSize !== imageSide) throw new Error(`--input-size ${inputSize}: --dino-model ${HOG_TEACHER_NAME} reads the images at their own size, ${imageSide}`);
    if (inputSize % o.hogCellSize !== 0) throw new Error(`--hog-cell-size ${o.hogCellSize} does not divide the ${inputSize}-pixel images into whole cells`);
    teacher = { hog: new HogTeacher(), patchSize: o.hogCellSize };
  } else {
    if (o.dinoCkpt === undefined) throw new Error(`--dino-ckpt is required with --dino-model ${o.dinoModel}`);
    config = resolveDinoConfig(o.dinoModel);
    teacher = loadBackbone(config, o.dinoCkpt).to(device);
  }
  const patchSize = config?.patchSize ?? o.hogCellSize;
  const splits = probeSplits(o.dataPath, o.imageSize, o.probeImages, o.seed, () => {});
  if (splits === undefined) throw new Error(`--data-path ${o.dataPath}: needs at least two class folders for a linear probe`);
  const side = Math.floor(inputSize / patchSize);
  if (o.ldsFarDistance > 2 * (side - 1)) {
    throw new Error(`--lds-far-distance ${o.ldsFarDistance}: the ${side}x${side} patch grid (input size ${inputSize}, patch ${patchSize}) has no pairs that far apart (at most ${2 * (side - 1)})`);
  }
  const measure = async (backbone: ProbedTeacher) => {
    const probe = await linearProbe({
      backbone, train: splits.train, test: splits.test, trainImages: o.probeImages, testImages: o.probeImages,
      inputSize, epochs: o.epochs, lr: o.lr, seed: o.seed, device,
    });
    const structure = await spatialStructure({
      backbone, images: splits.test, count: o.probeImages, inputSize, farDistance: o.ldsFarDistance, seed: o.seed, device,
    });
    return { probe, structure };
  };
  const trained = await measure(teacher);
  let randomInit: Awaited<ReturnType<typeof measure>> | null = null;
  if (config !== null) {
    torch.manualSeed(o.seed);
    randomInit = await measure(new DinoVisionTransformer(config).to(device));
  }
  return {
    ...trained.probe, classes: splits.classes, randomInitAccuracy: randomInit?.probe.accuracy ?? null,
    lds: trained.structure.lds, ldsStd: trained.structure.ldsStd, ldsRandomInit: randomInit?.structure.lds ?? null,
    ldsRandomInitStd: randomInit?.structure.ldsStd ?? null,
    ldsGainStd: randomInit === null ? null : meanAndStd(trained.structure.perImage.map((v, i) => v - randomInit.structure.perImage[i]!)).std,
    ldsImages: trained.structure.images,
    ldsGrid: trained.structure.grid, ldsFarDistance: trained.structure.farDistance,
  };
}
