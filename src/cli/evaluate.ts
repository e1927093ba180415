// `reals evaluate REF SAMPLE` (the ADM evaluator's five numbers) and `reals fid-stats`
// (mu/sigma/mu_s/sigma_s of a custom dataset), `reals ref-batch` (an ADM reference batch from a
// folder): parse flags, call src/eval, print.
import { Command } from 'commander';
import { writeJsonFileAtomic } from '../io/index.js';
import { progress, type Progress } from '../runlog/progress.js';
import {
  ACTIVATION_BATCH_SIZE, DEFAULT_FEATURES_DINO_MODEL, DGM_EVAL_DINOV2_INPUT, INCEPTION_WEIGHTS_ENV, IS_SPLIT_SIZE,
  evaluate, featureExtractor, formatResult, writeFidStatistics, writeReferenceBatch, type FeatureNetworkOptions,
} from '../eval/index.js';
import { device, integer, outputFile } from './parse.js';

type NetworkFlags = FeatureNetworkOptions & { batchSize: number };

/** One progress bar per stage (the reference batch, then the sample batch), counting images. */
export function stageProgress(): { update: (label: string, done: number, total: number) => void; stop: () => void } {
  let bar: Progress | undefined;
  let current = '';
  return {
    update: (label, done, total) => {
      if (label !== current) {
        bar?.stop();
        bar = progress({ total, label, unit: 'img' });
        current = label;
      }
      bar!.update(done);
    },
    stop: () => {
      bar?.stop();
      bar = undefined;
    },
  };
}

/**
 * The feature network's flags (--features and the weights of each network), which `reals ifid`
 * shares; `recorded` says where the command names the network.
 */
export function featureNetworkFlags(command: Command, recorded: string): Command {
  return command
    .option('--features <network>', 'the feature network: inception (ADM\'s numbers), dinov2 (FD_DINOv2 as dgm-eval: ' +
      `${DGM_EVAL_DINOV2_INPUT} px bicubic, ImageNet mean/std, CLS token; no score over classes, no sFID), or a checkpoint of reals classifier train ` +
      '(the Inception Score\'s formula over its classes, reported as classifierScore, "Classifier Score") or a teacher backbone of reals teacher train ' +
      `(its CLS token; no score over classes, no sFID). Only inception reports an Inception Score (inceptionScore). ${recorded}`, 'inception')
    .option('--dino-model <name>', `the DINOv2 of --features dinov2 (default: ${DEFAULT_FEATURES_DINO_MODEL}, dgm-eval's)`)
    .option('--dino-ckpt <file>', 'its weights (default: the torch-hub checkpoint, fetched into $TORCH_HOME/hub/checkpoints)')
    .option('--inception-weights <file>', `FID Inception weights (pt_inception-2015-12-05-6726825d.pth; default: $${INCEPTION_WEIGHTS_ENV}, else pytorch-fid's file in the torch hub cache, fetched when missing)`);
}

function networkOptions(command: Command): Command {
  return featureNetworkFlags(command, 'Reports (featureNetwork), activation caches and fid-stats files name the network; a REF of another network is refused')
    .option('--device <device>', 'cpu or cuda[:N] (default: cuda when available)', device)
    .option('--batch-size <n>', 'images per network call (ADM: 64)', integer(1), ACTIVATION_BATCH_SIZE)
    .option('--offline', 'download nothing (also HF_HUB_OFFLINE=1): the network\'s weights must be given or cached');
}

export function evaluateCommand(): Command {
  return networkOptions(new Command('evaluate'))
    .description('the ADM evaluator: Inception Score, FID, sFID, precision and recall of SAMPLE against REF (.npz with arr_0 uint8 NHWC, or image folders), ' +
      'in the features of --features (the report names it; other networks give a Classifier Score or no score over classes, as --features says)')
    .argument('<ref>', 'reference batch (e.g. VIRTUAL_imagenet256_labeled.npz, or `reals ref-batch` output); its mu/sigma/mu_s/sigma_s are used when present; a `reals fid-stats` file gives FID, sFID and IS only')
    .argument('<sample>', 'sample batch')
    .option('--json <file>', 'also write the numbers, counts and input hashes as JSON (only once all are computed)', outputFile)
    .option('--recompute-ref-stats', 'compute the reference statistics from its images even when the file holds them')
    .option('--no-cache', 'neither read nor write the reference activation cache next to REF')
    .option('--is-split-size <n>', 'samples per split of the Inception Score or Classifier Score (ADM: 5000)', integer(1), IS_SPLIT_SIZE)
    .action(async (ref: string, sample: string, flags: NetworkFlags & { json?: string; recomputeRefStats?: boolean; cache: boolean; isSplitSize: number }) => {
      const bar = stageProgress();
      try {
        const result = await evaluate(ref, sample, {
          extractor: await featureExtractor(flags),
          batchSize: flags.batchSize,
          isSplitSize: flags.isSplitSize,
          recomputeRefStats: flags.recomputeRefStats === true,
          cache: flags.cache,
          onProgress: (stage, done, total) => bar.update(stage, done, total),
        });
        bar.stop();
        console.log(formatResult(result));
        if (flags.json !== undefined) writeJsonFileAtomic(flags.json, result);
      } finally {
        bar.stop();
      }
    });
}

export function fidStatsCommand(): Command {
  return networkOptions(new Command('fid-stats'))
    .description('write mu, sigma (pool_3) and mu_s, sigma_s (spatial) of a dataset, the statistics ADM reference batches carry, and the feature network (extractor_id)')
    .argument('<input>', 'a folder of PNG/JPEG images or an .npz with arr_0')
    .requiredOption('--out <file>', 'the .npz to write')
    .action(async (input: string, flags: NetworkFlags & { out: string }) => {
      const bar = stageProgress();
      const extractor = await featureExtractor(flags);
      try {
        const { count, sha256 } = await writeFidStatistics(input, flags.out, {
          extractor,
          batchSize: flags.batchSize,
          onProgress: (done, total) => bar.update('images', done, total),
        });
        bar.stop();
        console.log(`${flags.out}: statistics of ${count} images (sha256 ${sha256}) in the features of ${extractor.id}`);
      } finally {
        bar.stop();
      }
    });
}

export function refBatchCommand(): Command {
  return new Command('ref-batch')
    .description('write an ADM reference batch (arr_0 uint8 [N, H, W, 3]) from a folder of images, center-cropped as ADM does: the REF of `reals evaluate`')
    .argument('<folder>', 'images (PNG, JPEG, WebP, TIFF), searched recursively, e.g. ImageNet\'s val/')
    .requiredOption('--out <file>', 'the .npz to write', outputFile)
    .option('--image-size <n>', 'side of the ADM center crop', integer(1), 256)
    .option('--max-images <n>', 'a random subset of n images (seeded by --seed), e.g. 50000 (default: all)', integer(1))
    .option('--seed <n>', 'seeds the subset', integer(0), 0)
    .action(async (folder: string, flags: { out: string; imageSize: number; maxImages?: number; seed: number }) => {
      const bar = stageProgress();
      try {
        const { count } = await writeReferenceBatch(folder, flags.out, { ...flags, onProgress: (done, total) => bar.update('images', done, total) });
        bar.stop();
        console.log(`${flags.out}: ${count} images, ${flags.imageSize}x${flags.imageSize}`);
      } finally {
        bar.stop();
      }
    });
}
