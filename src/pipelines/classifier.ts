// The pipeline behind `reals classifier train`: a small CNN (src/models/classifier.ts) trained on
// the class folders of the user's images, whose features then score samples offline
// (`reals evaluate --features <its checkpoint>`). Reads train/ under an ImageNet root, measures
// its accuracy on val/ when val/ holds the same class folders.
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import * as torch from '../torch/index.js';
import { makeDirs, writeJsonFileAtomic } from '../io/index.js';
import { ImageFolder, classFolders } from '../data/index.js';
import { ImageClassifier } from '../models/classifier.js';
import { withDefaults } from '../runlog/process.js';
import { trainingFolder } from '../data/inputs.js';
import { datasetAccuracy, trainWithCrossEntropy } from '../train/supervised.js';

/** The settings of `reals classifier train` that have defaults (`--help` shows them). */
export interface ClassifierTrainSettings {
  /** Side of the ADM center crop; a multiple of 8. */
  imageSize: number;
  steps: number;
  batchSize: number;
  lr: number;
  seed: number;
  featureDim: number;
}

export const CLASSIFIER_TRAIN_DEFAULTS: ClassifierTrainSettings = { imageSize: 64, steps: 2000, batchSize: 64, lr: 1e-3, seed: 0, featureDim: 128 };

/** The file the classifier is written to in --out. */
export const CLASSIFIER_WEIGHTS_NAME = 'classifier.safetensors';

export interface ClassifierTrainRunOptions extends Partial<ClassifierTrainSettings> {
  /** An ImageNet-layout folder: class folders, or train/ (and val/) of class folders. */
  dataPath: string;
  /** Gets classifier.safetensors, metrics.jsonl and result.json. */
  out: string;
  numWorkers?: number;
  device?: string;
  log?: (line: string) => void;
}

export interface ClassifierTrainResult {
  checkpoint: string;
  classes: string[];
  trainImages: number;
  finalLoss: number;
  /** Accuracy on val/ (null without a val/ of the same class folders). */
  valAccuracy: number | null;
  valImages: number;
}

/** val/ beside train/ when it holds every class folder of train/, else null with the reason. */
function validationFolder(dataPath: string, training: string, classes: readonly string[]): { folder: string | null; why: string } {
  const val = join(dataPath, 'val');
  if (training === dataPath || !existsSync(val) || !statSync(val).isDirectory()) return { folder: null, why: `no val/ beside ${training}` };
  const present = new Set(classFolders(val));
  const missing = classes.filter((name) => !present.has(name));
  if (missing.length > 0) return { folder: null, why: `${val} lacks the class folders ${missing.slice(0, 5).join(', ')}${missing.length > 5 ? ', ...' : ''}` };
  return { folder: val, why: '' };
}

/** Trains the classifier on --data-path's class folders, writes it to --out, and measures it on val/. */
export async function runClassifierTrain(options: ClassifierTrainRunOptions): Promise<ClassifierTrainResult> {
  const { log = console.log } = options;
  const o = { ...options, ...withDefaults(CLASSIFIER_TRAIN_DEFAULTS, options) };
  if (o.imageSize % 8 !== 0) throw new Error(`--image-size ${o.imageSize}: must be a multiple of 8 (the classifier pools three times by 2)`);
  if (!existsSync(o.dataPath) || !statSync(o.dataPath).isDirectory()) throw new Error(`--data-path ${o.dataPath}: no such folder`);
  torch.checkDevice(o.device);
  const device = o.device ?? (torch.cuda.isAvailable() ? 'cuda' : 'cpu');
  makeDirs(o.out, '--out');
  const training = trainingFolder(o.dataPath);
  const train = new ImageFolder(training, { resolution: o.imageSize });
  if (train.classes.length < 2) throw new Error(`--data-path ${o.dataPath}: ${training} has one class folder; a classifier needs at least 2`);
  const validation = validationFolder(o.dataPath, training, train.classes);
  log(`classifier: ${train.classes.length} classes, ${train.length} images in ${training} at ${o.imageSize} px; ` +
    (validation.folder === null ? `no accuracy measured (${validation.why})` : `accuracy on ${validation.folder}`));

  torch.manualSeed(o.seed);
  const model = new ImageClassifier({ numClasses: train.classes.length, imageSize: o.imageSize, featureDim: o.featureDim }).to(device);
  const logits = (images: torch.Tensor): torch.Tensor => model.forward(images);
  const { finalLoss } = await trainWithCrossEntropy({
    model, logits, data: train, loader: { numWorkers: o.numWorkers }, steps: o.steps, batchSize: o.batchSize, lr: o.lr, seed: o.seed,
    dir: o.out, label: 'classifier', device,
  });
  const val = validation.folder === null ? null : new ImageFolder(validation.folder, { resolution: o.imageSize, classes: train.classes });
  const valAccuracy = val === null ? null : await datasetAccuracy(logits, val, { device, numWorkers: o.numWorkers });
  const checkpoint = join(o.out, CLASSIFIER_WEIGHTS_NAME);
  model.save(checkpoint, train.classes, { source: 'reals classifier train', steps: String(o.steps), data: training });
  const result: ClassifierTrainResult = {
    checkpoint, classes: [...train.classes], trainImages: train.length, finalLoss, valAccuracy, valImages: val?.length ?? 0,
  };
  writeJsonFileAtomic(join(o.out, 'result.json'), { ...result, settings: withDefaults(CLASSIFIER_TRAIN_DEFAULTS, options) });
  log(`done: loss ${finalLoss.toFixed(4)}${valAccuracy === null ? '' : `, val accuracy ${valAccuracy.toFixed(4)} on ${val!.length} images (chance ${(1 / train.classes.length).toFixed(4)})`}; ` +
    `score samples with: reals evaluate REF SAMPLE --features ${checkpoint}`);
  return result;
}
