// `reals align train` and `reals align convert`: the flags of the ReaLS VAE's training and of
// converting its checkpoint (a diffusers folder + mean_std.json + align.safetensors), named as the
// reference scripts name them; src/pipelines/align.ts does the work.
import { Command, Option } from 'commander';
import { AUTOENCODER_KL_CONFIGS } from '../models/autoencoder-kl.js';
import { DINOV2_CONFIGS } from '../models/dinov2.js';
import { HOG_TEACHER_NAME, HogTeacher } from '../models/hog.js';
import { ALIGN_HEADS_NAME } from '../train/align-convert.js';
import {
  ALIGN_CONVERT_RUN_DEFAULTS, ALIGN_TRAIN_RUN_DEFAULTS, runAlignConvert, runAlignTrain, type AlignConvertRunOptions, type AlignTrainRunOptions,
} from '../pipelines/align.js';
import { launch } from '../pipelines/launch.js';
import { device, givenFlags, hubFlags, integer, number, positive, precisionFlag, resumeFlags } from './parse.js';

export function alignTrainCommand(): Command {
  const d = ALIGN_TRAIN_RUN_DEFAULTS;
  return precisionFlag(hubFlags(new Command('train'), true), d.precision)
    .description('train a VAE whose latents are aligned with frozen DINOv2 features (ReaLS)')
    .requiredOption('--data-path <path>', 'ImageNet-layout image folder (class subfolders), or `fashion-mnist` for Debian\'s dataset-fashion-mnist')
    .option('--image-size <n>', 'side of the ADM center crop of folder images', integer(1), d.imageSize)
    .option('--gpus-per-node <n>', 'ranks to start on this node through `reals launch` (when not already launched)', integer(1), 1)
    .option('--dino-model <name>', `teacher: ${Object.keys(DINOV2_CONFIGS).join(', ')}, a .json file of DinoV2Config fields, ` +
      `or ${HOG_TEACHER_NAME} (histograms of oriented gradients on the latent grid's cells: no weights, ${new HogTeacher().embedDim}-wide tokens; docs/alignment.md)`, d.dinoModel)
    .option('--dino-ckpt <file>', 'teacher weights (torch-hub or Hugging Face naming; .pth or .safetensors) (default: the torch-hub checkpoint of --dino-model, fetched into $TORCH_HOME/hub/checkpoints)')
    .option('--dino-input-size <n>', 'side images are resized to for the teacher; divisible by its patch size (not used by hog) ' +
      '(default: the teacher\'s own: a .json teacher\'s imgSize, else patch size x latent side, one token per latent position: 448 for 256 px and an f8 VAE)', integer(1))
    .option('--vae-ckpt <path>', 'VAE to start from: diffusers folder, a Hugging Face repo id (e.g. stabilityai/sd-vae-ft-ema, fetched into the hub cache), or a .safetensors/.ckpt state dict in diffusers naming (default: --vae-config from scratch)')
    .option('--vae-config <name>', `VAE architecture for a state-dict file or from scratch: ${Object.keys(AUTOENCODER_KL_CONFIGS).join(', ')}, or a config.json ` +
      '(a diffusers folder as --vae-ckpt has its own config.json: the run records that as vaeConfig, unless this flag is given and describes the same network)', d.vaeConfig)
    .option('--disc-ckpt <file>', 'PatchGAN discriminator to start from (taming/LDM checkpoint or state dict)')
    .option('--lpips-vgg <file>', 'torchvision VGG16 weights for LPIPS (vgg16-397923af.pth; default: fetched into the torch hub cache)')
    .option('--lpips-lin <file>', 'LPIPS linear layers (lpips weights/v0.1/vgg.pth; default: fetched into the torch hub cache)')
    .option('--lr <lr>', 'Adam learning rate (VAE, heads and discriminator; betas 0.5, 0.9)', positive, 5e-5)
    .option('--max-epoch <n>', 'epochs to train', integer(1), d.maxEpoch)
    .option('--max-steps <n>', 'stop after this many steps if earlier', integer(1))
    .option('--batch-size <n>', 'images per batch per process', integer(1), d.batchSize)
    .option('--num-workers <n>', 'image decoding threads (default: the usable CPUs - 1, 1 to 8)', integer(0))
    .option('--results-dir <dir>', 'runs go to <results-dir>/NNN-align', d.resultsDir)
    .option('--resume <path>', 'continue from a checkpoint file, a run folder or its checkpoints folder')
    .option('--seed <n>', 'global seed (rank r uses seed * world + r)', integer(0), d.seed)
    .option('--ckpt-every <n>', 'steps between checkpoints', integer(1), d.ckptEvery)
    .option('--keep-last <n>', 'keep only the newest n checkpoints', integer(1))
    .option('--log-every <n>', 'steps between metrics.jsonl / TensorBoard records', integer(1), d.logEvery)
    .option('--image-every <n>', 'steps between reconstruction images in TensorBoard', integer(1), d.imageEvery)
    .option('--ema-decay <d>', 'EMA decay of the VAE and heads', number(0, 1), 0.9999)
    .option('--mlp-hidden <n>', 'hidden width of MLP_patch and MLP_cls', integer(1), d.mlpHidden)
    .option('--mlp-depth <n>', 'Linear layers per MLP', integer(1), d.mlpDepth)
    .addOption(new Option('--cls-pooling <p>', 'MLP_cls pooling: mean of first-layer features, or avgpool of the latent to k x k')
      .choices(['mean', 'avgpool']).default(d.clsPooling))
    .option('--cls-pool-size <k>', 'k of --cls-pooling avgpool', integer(1), d.clsPoolSize)
    .addOption(new Option('--patch-proj <p>', 'patch projector: MLP_patch per latent position, or a 3x3 conv on the latent grid (iREPA)')
      .choices(['mlp', 'conv3']).default(d.patchProj))
    .addOption(new Option('--teacher-norm <n>', 'patch targets: DINOv2\'s tokens, or spatially normalised per image and channel (iREPA)')
      .choices(['none', 'spatial']).default(d.teacherNorm))
    .option('--teacher-norm-alpha <a>', 'share of the spatial mean --teacher-norm spatial subtracts (iREPA\'s gamma; its training scripts use 0.6 and 0.8)', number(0, 1), d.teacherNormAlpha)
    .addOption(new Option('--align-loss <l>', 'patch loss: 1 - cosine per token (ReaLS), or VA-VAE\'s margin cosine + margin distance matrix')
      .choices(['cos', 'vf']).default(d.alignLoss))
    .option('--vf-margin-cos <m>', 'vf: margin of the per-token cosine term relu(1 - m - cos)', number(0, 2), d.vfMarginCos)
    .option('--vf-margin-distmat <m>', 'vf: margin of the distance-matrix term relu(|cos_ij(z) - cos_ij(f)| - m)', number(0, 2), d.vfMarginDistmat)
    .option('--vf-weight-cos <w>', 'vf: weight of the per-token cosine term', number(0), d.vfWeightCos)
    .option('--vf-weight-distmat <w>', 'vf: weight of the distance-matrix term', number(0), d.vfWeightDistmat)
    .option('--vf-weight <w>', 'vf: weight of the vf loss (times the adaptive weight unless --no-vf-adaptive)', number(0), d.vfWeight)
    .option('--no-vf-adaptive', 'vf: --vf-weight alone, without the adaptive weight ||grad nll|| / ||grad vf|| at the encoder\'s last layer (default: adaptive)')
    .addOption(new Option('--rec-loss <l>', 'reconstruction loss').choices(['mse', 'l1']).default(d.recLoss))
    .option('--rec-weight <w>', 'weight of the reconstruction loss', number(0), d.recWeight)
    .option('--lpips-weight <w>', 'weight of LPIPS (0: no LPIPS weights needed)', number(0), d.lpipsWeight)
    .option('--kl-weight <w>', 'weight of the KL term (mean over latent elements)', number(0), d.klWeight)
    .option('--patch-weight <w>', 'weight of the patch-token alignment loss (--align-loss cos; vf uses --vf-weight)', number(0), d.patchWeight)
    .option('--cls-weight <w>', 'weight of the CLS-token alignment loss (0: no MLP_cls at all, patch-only alignment)', number(0), d.clsWeight)
    .option('--smooth-l1-weight <w>', 'weight of smooth-L1 added to each alignment term', number(0), d.smoothL1Weight)
    .option('--disc-weight <w>', 'scale of the adaptive GAN weight', number(0), d.discWeight)
    .option('--disc-start <step>', 'step from which the discriminator and GAN loss run', integer(0), d.discStart)
    .option('--eq-weight <w>', 'weight of EQ-VAE\'s equivariance term: reconstruction (+ LPIPS) of decode(T(z)) against T(x), T a random downscale and quarter turn (0: off)', number(0), d.eqWeight)
    .option('--no-eq-rotation', 'EQ-VAE\'s T downscales only, without its quarter turns (the Diffusability paper\'s scale equivariance; default: both)')
    .action(async (flags: AlignTrainRunOptions & { gpusPerNode: number }, self: Command) => {
      const { gpusPerNode, ...options } = flags;
      if (gpusPerNode > 1 && process.env.WORLD_SIZE === undefined) {
        // Start the ranks: the same command line again, each copy with torchrun's environment.
        process.exitCode = await launch({ command: [process.execPath, ...process.execArgv, ...process.argv.slice(1)], nprocPerNode: gpusPerNode });
        return;
      }
      // A --vae-config left at its default is not given: a diffusers folder as --vae-ckpt then brings its own.
      const result = await runAlignTrain(givenFlags(self, resumeFlags(self, options, ['lr', 'emaDecay']), ['vaeConfig']));
      if (result.checkpoint !== null) console.log(`done: step ${result.step}, checkpoint ${result.checkpoint}`);
    });
}

export function alignConvertCommand(): Command {
  const c = ALIGN_CONVERT_RUN_DEFAULTS;
  return new Command('convert')
    .description('write a checkpoint of `align train` as a diffusers AutoencoderKL folder with mean_std.json (per-channel latent ' +
      `statistics over training images) and the alignment MLPs (${ALIGN_HEADS_NAME})`)
    .requiredOption('--ckpt <file>', 'a checkpoint of `reals align train` (<run>/checkpoints/NNNNNNN.safetensors)')
    .requiredOption('--output-dir <dir>', 'folder to write (created if missing; files of the same names are replaced)')
    .requiredOption('--data-path <path>', 'the training images: ImageNet-layout image folder, or `fashion-mnist`')
    .requiredOption('--num-samples <n>', 'images (a seeded random subset) the latent mean and std are computed over', integer(1))
    .option('--use-ema', 'convert the EMA weights (ema.*) instead of the trained ones (model.*)', c.useEma)
    .option('--image-size <n>', 'side of the ADM center crop of folder images (default: the run\'s --image-size)', integer(1))
    .option('--batch-size <n>', 'images per encoder call', integer(1), c.batchSize)
    .option('--seed <n>', 'seeds the subset and the posterior samples', integer(0), c.seed)
    .option('--num-workers <n>', 'image decoding threads (default: the usable CPUs - 1, 1 to 8)', integer(0))
    .option('--device <device>', 'cpu or cuda[:N] (default: cuda when available)', device)
    .action(async (flags: AlignConvertRunOptions) => {
      await runAlignConvert(flags);
    });
}

export function alignCommand(): Command {
  return new Command('align')
    .description('the ReaLS VAE: train it with DINOv2 alignment, convert a checkpoint for the generators')
    .addCommand(alignTrainCommand())
    .addCommand(alignConvertCommand());
}
