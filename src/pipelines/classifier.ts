// The pipeline behind `reals classifier train`: a small CNN (src/models/classifier.ts) trained on
// the class folders of the user's images, whose features then score samples offline
// (`reals evaluate --features <its checkpoint>`). Reads train/ under an ImageNet root, measures
// its accuracy on val/ when val/ holds the same class folders. --out is its run folder: checkpoints
// every --ckpt-every steps, --resume continuing one exactly, a stop signal saving first.
import { existsSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import * as torch from '../torch/index.js';
import { makeDirs, writeJsonFileAtomic } from '../io/index.js';
import { ImageFolder, classFolders } from '../data/index.js';
import { CLASSIFIER_METADATA_KEY, ImageClassifier, type ImageClassifierConfig } from '../models/classifier.js';
import { CheckpointManager, checkResumeLayout, loadCheckpoint, type Checkpoint } from '../train/checkpoint.js';
import { openRunOutputs } from '../train/context.js';
import { withDefaults } from '../runlog/process.js';
import { trainingFolder } from '../data/inputs.js';
import { resolveResume } from '../train/run-dir.js';
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

/** Steps between checkpoints in --out/checkpoints (the last step is saved too). */
export const CLASSIFIER_CKPT_EVERY = 500;

/** The file the classifier is written to in --out. */
export const CLASSIFIER_WEIGHTS_NAME = 'classifier.safetensors';

export interface ClassifierTrainRunOptions extends Partial<ClassifierTrainSettings> {
  /** An ImageNet-layout folder: class folders, or train/ (and val/) of class folders. */
  dataPath: string;
  /** The run folder: gets classifier.safetensors, checkpoints/, metrics.jsonl and result.json. Optional with `resume` (its run folder). */
  out?: string;
  /** A checkpoint file, the run folder (--out) or its checkpoints folder, continued exactly. Give the flags the run started with; --steps and --lr may change. */
  resume?: string;
  /** Default CLASSIFIER_CKPT_EVERY. */
  ckptEvery?: number;
  /** Steps between metrics.jsonl records (default: 50 records over the run). */
  logEvery?: number;
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

/** --out, or the run folder --resume continues (they must agree when both are given). */
function runFolder(out: string | undefined, resume: string | undefined): { out: string; checkpoint: string | null } {
  if (resume === undefined) {
    if (out === undefined) throw new Error('--out: required (the run folder), unless --resume names one');
    return { out, checkpoint: null };
  }
  const resumed = resolveResume(resume);
  if (out !== undefined && resolve(out) !== resumed.runDir) throw new Error(`--out ${out}: --resume ${resume} continues the run in ${resumed.runDir}; give that folder, or leave --out out`);
  return { out: resumed.runDir, checkpoint: resumed.checkpoint };
}

/** Refuses to resume a checkpoint of another network, classes or batch order than this run's. */
function checkResumable(checkpoint: Checkpoint, config: ImageClassifierConfig, classes: readonly string[], settings: ClassifierTrainSettings): void {
  const fail = (message: string): never => { throw new Error(`resume from ${checkpoint.path}: ${message}`); };
  const saved = checkpoint.metadata.classifier as (ImageClassifierConfig & { classes: string[] }) | undefined;
  if (saved === undefined) fail('not a checkpoint of `reals classifier train` (no metadata "classifier")');
  const expected = { ...config, classes };
  for (const key of ['numClasses', 'imageSize', 'featureDim', 'classes'] as const) {
    if (JSON.stringify(saved![key]) !== JSON.stringify(expected[key])) fail(`it trains ${key} ${JSON.stringify(saved![key])}, this run ${JSON.stringify(expected[key])}`);
  }
  const seed = checkpoint.metadata.args.seed;
  if (seed !== settings.seed) fail(`it was trained with --seed ${seed} (the batch order), this run has --seed ${settings.seed}`);
  checkResumeLayout(checkpoint, { worldSize: 1, batchSize: settings.batchSize });
}

/** Trains the classifier on --data-path's class folders, writes it to --out, and measures it on val/. */
export async function runClassifierTrain(options: ClassifierTrainRunOptions): Promise<ClassifierTrainResult> {
  const { log: given = console.log } = options;
  const o = { ...options, ...withDefaults(CLASSIFIER_TRAIN_DEFAULTS, options) };
  if (o.imageSize % 8 !== 0) throw new Error(`--image-size ${o.imageSize}: must be a multiple of 8 (the classifier pools three times by 2)`);
  if (!existsSync(o.dataPath) || !statSync(o.dataPath).isDirectory()) throw new Error(`--data-path ${o.dataPath}: no such folder`);
  torch.checkDevice(o.device);
  const device = o.device ?? (torch.cuda.isAvailable() ? 'cuda' : 'cpu');
  const folder = runFolder(o.out, o.resume);
  const out = folder.out;
  const training = trainingFolder(o.dataPath);
  const train = new ImageFolder(training, { resolution: o.imageSize });
  if (train.classes.length < 2) throw new Error(`--data-path ${o.dataPath}: ${training} has one class folder; a classifier needs at least 2`);
  makeDirs(out, '--out');
  if (folder.checkpoint === null && existsSync(join(out, 'checkpoints')) && new CheckpointManager(join(out, 'checkpoints')).last() !== null) {
    throw new Error(`--out ${out}: holds the checkpoints of an earlier run; continue it with --resume ${out}, or give another --out`);
  }
  const validation = validationFolder(o.dataPath, training, train.classes);
  const config: ImageClassifierConfig = { numClasses: train.classes.length, imageSize: o.imageSize, featureDim: o.featureDim };
  const resume = folder.checkpoint === null ? undefined : loadCheckpoint(folder.checkpoint);
  // A resumed run goes on with its checkpoint's learning rate unless --lr is given.
  const savedLr = resume?.metadata.args.lr;
  const settings = withDefaults(CLASSIFIER_TRAIN_DEFAULTS, { ...options, lr: options.lr ?? (typeof savedLr === 'number' ? savedLr : undefined) });
  if (resume !== undefined) checkResumable(resume, config, train.classes, settings);

  torch.manualSeed(o.seed);
  const model = new ImageClassifier(config).to(device);
  const logits = (images: torch.Tensor): torch.Tensor => model.forward(images);
  const args = { ...settings, dataPath: o.dataPath };
  const outputs = openRunOutputs(out, 0, { lock: true, log: given, args, resumeStep: resume?.metadata.step });
  const log = outputs.log;
  if (resume !== undefined) log(`resuming ${resume.path} at step ${resume.metadata.step}`);
  log(`classifier: ${train.classes.length} classes, ${train.length} images in ${training} at ${o.imageSize} px; ` +
    (validation.folder === null ? `no accuracy measured (${validation.why})` : `accuracy on ${validation.folder}`));
  let finalLoss: number;
  try {
    ({ finalLoss } = await trainWithCrossEntropy({
      model, logits, data: train, loader: { numWorkers: o.numWorkers }, steps: o.steps, batchSize: o.batchSize, lr: settings.lr, seed: o.seed,
      dir: out, label: 'classifier', device, logEvery: o.logEvery,
      run: {
        runDir: out, checkpoints: outputs.checkpoints!, metrics: outputs.metrics!, tensorboard: outputs.tensorboard!, log, resume,
        ckptEvery: o.ckptEvery ?? CLASSIFIER_CKPT_EVERY, metadata: { args, [CLASSIFIER_METADATA_KEY]: { ...config, classes: train.classes } },
      },
    }));
  } finally {
    outputs.metrics!.close();
    outputs.tensorboard!.close();
    outputs.lock!.release();
  }
  const val = validation.folder === null ? null : new ImageFolder(validation.folder, { resolution: o.imageSize, classes: train.classes });
  const valAccuracy = val === null ? null : await datasetAccuracy(logits, val, { device, numWorkers: o.numWorkers });
  const checkpoint = join(out, CLASSIFIER_WEIGHTS_NAME);
  model.save(checkpoint, train.classes, { source: 'reals classifier train', steps: String(o.steps), data: training });
  const result: ClassifierTrainResult = {
    checkpoint, classes: [...train.classes], trainImages: train.length, finalLoss, valAccuracy, valImages: val?.length ?? 0,
  };
  writeJsonFileAtomic(join(out, 'result.json'), { ...result, settings });
  log(`done: loss ${finalLoss.toFixed(4)}${valAccuracy === null ? '' : `, val accuracy ${valAccuracy.toFixed(4)} on ${val!.length} images (chance ${(1 / train.classes.length).toFixed(4)})`}; ` +
    `score samples with: reals evaluate REF SAMPLE --features ${checkpoint}`);
  return result;
}
