// `reals segment`, `reals depth`, `reals heads compare`, `reals heads train-linear`: flags for the
// pipelines of src/pipelines/heads.ts (DINOv2's linear heads read out of latents).
import { writeFileSync } from 'node:fs';
import { Command, Option } from 'commander';
import {
  COMPARE_RUN_DEFAULTS, DENSE_RUN_DEFAULTS, TRAIN_LINEAR_RUN_DEFAULTS, runCompare, runDense, runTrainLinear, type CompareOptions, type DenseOptions,
  type TrainLinearOptions,
} from '../pipelines/index.js';
import { integer, number, outputFile, precisionFlag } from './parse.js';

function sourceOptions(command: Command, features: readonly string[]): Command {
  return precisionFlag(command, DENSE_RUN_DEFAULTS.precision)
    .addOption(new Option('--features <f>', 'where the head\'s features come from').choices([...features]).default(DENSE_RUN_DEFAULTS.features))
    .option('--align-ckpt <file>', 'alignment MLPs: align.safetensors from reals align convert')
    .option('--dino-model <name>', 'DINOv2 config for --features dino / compare (a name or a .json)', DENSE_RUN_DEFAULTS.dinoModel)
    .option('--dino-ckpt <file>', 'DINOv2 weights (torch-hub or Hugging Face naming)')
    .option('--dino-input-size <n>', 'side the decoded image is resized to for DINOv2 (a multiple of 14)', integer(14), DENSE_RUN_DEFAULTS.dinoInputSize);
}

function depthRangeOptions(command: Command): Command {
  return command
    .option('--min-depth <m>', 'released depth heads: smallest depth', number(0), 0.001)
    .option('--max-depth <m>', 'released depth heads: largest depth (NYU 10, KITTI 80; default 10, or 80 for *_kitti_* files)', number(0));
}

function denseCommand(name: 'segment' | 'depth'): Command {
  const own = name === 'segment' ? 'segmentation' : 'depth';
  const other = name === 'segment' ? '--depth-head' : '--seg-head';
  const command = new Command(name)
    .description(`${own} maps read out of latents (or images encoded by the VAE) by a DINOv2 linear head`)
    .argument('<inputs...>', 'images, folders of images, or latent files (.npz / .safetensors)')
    .requiredOption('--vae-path <dir>', 'diffusers AutoencoderKL folder (encodes images, decodes latents)')
    .requiredOption('--head <file>', `${own} head: a released dinov2 .pth (mmseg layout) or a .safetensors from reals heads train-linear`)
    .option(`${other} <file>`, `also run a ${name === 'segment' ? 'depth' : 'segmentation'} head (the grid shows both)`)
    .option('--out <dir>', 'output folder', `${name}-out`)
    .option('--image-size <n>', 'ADM center crop of input images', integer(8), DENSE_RUN_DEFAULTS.imageSize)
    .option('--batch-size <n>', 'images per batch', integer(1), DENSE_RUN_DEFAULTS.batchSize)
    .option('--raw', 'also write the arrays (.npy: labels int64, depth float32 metres)', DENSE_RUN_DEFAULTS.raw)
    .option('--latents-normalized', 'latent files hold diffusion-normalized latents (mean_std.json / scaling factor of --vae-path)', DENSE_RUN_DEFAULTS.latentsNormalized)
    .option('--latents-key <name>', 'the array of a latent file to read');
  return depthRangeOptions(sourceOptions(command, ['mlp', 'dino'])).action(async (inputs: string[], flags: Omit<DenseOptions, 'inputs'> & { head: string }) => {
    const { head, ...rest } = flags;
    const result = await runDense({
      ...rest, inputs, segHead: name === 'segment' ? head : flags.segHead, depthHead: name === 'depth' ? head : flags.depthHead,
    });
    console.log(`${result.images} images: ${result.files.length} files in ${flags.out}`);
  });
}

function compareCommand(): Command {
  const command = new Command('compare')
    .description('the same heads on the alignment MLPs\' features and on DINOv2\'s features of the decoded image: mIoU, pixel agreement, depth RMSE')
    .argument('<inputs...>', 'images or folders of images')
    .requiredOption('--vae-path <dir>', 'diffusers AutoencoderKL folder')
    .option('--seg-head <file>', 'segmentation head')
    .option('--depth-head <file>', 'depth head')
    .option('--image-size <n>', 'ADM center crop of input images', integer(8), COMPARE_RUN_DEFAULTS.imageSize)
    .option('--batch-size <n>', 'images per batch', integer(1), COMPARE_RUN_DEFAULTS.batchSize)
    .option('--json <file>', 'also write the result to this file', outputFile);
  return depthRangeOptions(sourceOptions(command, ['mlp'])).action(async (inputs: string[], flags: Omit<CompareOptions, 'inputs'> & { json?: string }) => {
    const { json, ...rest } = flags;
    const result = await runCompare({ ...rest, inputs });
    const text = JSON.stringify(result);
    console.log(text);
    if (json !== undefined) writeFileSync(json, `${text}\n`);
  });
}

function trainLinearCommand(): Command {
  const d = TRAIN_LINEAR_RUN_DEFAULTS;
  const command = new Command('train-linear')
    .description('fit a linear segmentation head (BatchNorm + 1x1 conv over patch features and CLS) on a labelled folder')
    .requiredOption('--data-path <dir>', 'a folder with images/ and masks/ (8-bit grey PNG class indices, 255 ignored), or fashion-mnist / fashion-mnist-test (class as mask; training / test images)')
    .requiredOption('--vae-path <dir>', 'diffusers AutoencoderKL folder')
    .requiredOption('--out <file>', 'the head (.safetensors)')
    .option('--image-size <n>', 'ADM center crop of folder images', integer(8), d.imageSize)
    .option('--num-classes <n>', 'classes (default: the largest label + 1)', integer(1))
    .option('--max-images <n>', 'images to use', integer(2), d.maxImages)
    .option('--holdout <f>', 'fraction held out for scoring', number(0, 1), d.holdout)
    .option('--steps <n>', 'optimizer steps', integer(1), d.steps)
    .option('--batch-size <n>', 'images per step', integer(1), d.batchSize)
    .option('--lr <lr>', 'AdamW learning rate', number(0), d.lr)
    .option('--seed <n>', 'seed of the minibatches and the head init', integer(0), d.seed);
  return sourceOptions(command, ['mlp', 'dino', 'latent']).action(async (flags: TrainLinearOptions) => {
    console.log(JSON.stringify(await runTrainLinear(flags)));
  });
}

export function segmentCommand(): Command { return denseCommand('segment'); }
export function depthCommand(): Command { return denseCommand('depth'); }

export function headsCommand(): Command {
  return new Command('heads')
    .description('DINOv2 linear heads on aligned latents: compare with DINOv2, fit your own')
    .addCommand(compareCommand())
    .addCommand(trainLinearCommand());
}
