// `reals classifier train`: a small CNN trained on the class folders of the user's images, whose
// features score samples with no download (`reals evaluate --features <its checkpoint>`).
// src/pipelines/classifier.ts does the work.
import { Command } from 'commander';
import {
  CLASSIFIER_CKPT_EVERY, CLASSIFIER_TRAIN_DEFAULTS, CLASSIFIER_WEIGHTS_NAME, runClassifierTrain, type ClassifierTrainRunOptions,
} from '../pipelines/classifier.js';
import { device, integer, positive, resumeFlags } from './parse.js';

export function classifierTrainCommand(): Command {
  const d = CLASSIFIER_TRAIN_DEFAULTS;
  const command = new Command('train');
  return command
    .description('train a small CNN (3 conv-pool blocks, Linear-ReLU features, Linear classes) on an image folder\'s classes, ' +
      `writing --out/${CLASSIFIER_WEIGHTS_NAME}: the feature network of \`reals evaluate --features\` (FID, sFID, IS over its classes, precision, recall)`)
    .requiredOption('--data-path <path>', 'ImageNet-layout image folder of class folders (its train/ when it holds train/ and val/; the accuracy is measured on val/ when it holds the same class folders)')
    .option('--out <dir>', `the run folder: gets checkpoints/, ${CLASSIFIER_WEIGHTS_NAME}, metrics.jsonl and result.json (required unless --resume names the run)`)
    .option('--image-size <n>', 'side of the ADM center crop; a multiple of 8 (samples of other sizes are resized to it when scored)', integer(8), d.imageSize)
    .option('--steps <n>', 'optimizer steps', integer(1), d.steps)
    .option('--batch-size <n>', 'images per step', integer(1), d.batchSize)
    .option('--lr <lr>', 'Adam learning rate (on --resume, unless given, the checkpoint\'s)', positive, d.lr)
    .option('--feature-dim <n>', 'width of the features FID reads', integer(1), d.featureDim)
    .option('--seed <n>', 'seeds the weights and the batch order', integer(0), d.seed)
    .option('--ckpt-every <n>', 'steps between checkpoints in --out/checkpoints (the last step is saved too)', integer(1), CLASSIFIER_CKPT_EVERY)
    .option('--log-every <n>', 'steps between metrics.jsonl records (default: 50 records over the run)', integer(1))
    .option('--resume <path>', 'continue exactly from a checkpoint file, the run folder or its checkpoints folder, with the flags the run started with (--steps and --lr may change)')
    .option('--num-workers <n>', 'image decoding threads (default: the usable CPUs - 1, 1 to 8)', integer(0))
    .option('--device <device>', 'cpu or cuda[:N] (default: cuda when available)', device)
    .action(async (flags: ClassifierTrainRunOptions) => {
      await runClassifierTrain(resumeFlags(command, flags, ['lr']));
    });
}

export function classifierCommand(): Command {
  return new Command('classifier')
    .description('an image classifier of your own classes, to score samples offline')
    .addCommand(classifierTrainCommand());
}
