// `reals align train`: trains the ReaLS VAE (src/train/align.ts) from flags named as the reference
// scripts name them. It builds the models from files (a diffusers VAE folder or state dict, DINOv2
// weights, a taming discriminator, LPIPS weights), the data (an ImageNet-layout folder or
// Fashion-MNIST), joins the process group under `reals launch`, and calls trainAlignment.
// `reals align convert`: a checkpoint of it → diffusers folder + mean_std.json + align.safetensors
// (src/train/align-convert.ts).
import { existsSync, statSync } from 'node:fs';
import { Command, InvalidArgumentError, Option } from 'commander';
import * as torch from '../torch/index.js';
import { checkWritableDir, load, readJsonFile } from '../io/index.js';
import { AUTOENCODER_KL_CONFIGS, AutoencoderKL, configFromDiffusers, type AutoencoderKLConfig } from '../models/autoencoder-kl.js';
import { DINOV2_CONFIGS, DinoVisionTransformer, type DinoV2Config } from '../models/dinov2.js';
import { ALIGNMENT_DEFAULTS, AlignmentHeads, type ClsPooling } from '../models/alignment.js';
import { NLayerDiscriminator } from '../models/discriminator.js';
import { LPIPS } from '../models/lpips.js';
import { DataLoader, FashionMNIST, ImageFolder, type Dataset } from '../data/index.js';
import { ALIGN_LOSS_DEFAULTS, trainAlignment } from '../train/align.js';
import { ALIGN_HEADS_NAME, convertAlignment, loadAlignedModels, type AlignConvertResult } from '../train/align-convert.js';
import { launch } from './launch.js';
import { loadImageDataset, resumeFlags } from './sit.js';

function integer(min: number): (value: string) => number {
  return (value) => {
    const n = /^-?\d+$/.test(value) ? Number(value) : NaN;
    if (!Number.isSafeInteger(n) || n < min) throw new InvalidArgumentError(`expected an integer >= ${min}, got '${value}'`);
    return n;
  };
}

function nonNegative(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n < 0) throw new InvalidArgumentError(`expected a number >= 0, got '${value}'`);
  return n;
}

const positive = (value: string): number => {
  const n = nonNegative(value);
  if (n === 0) throw new InvalidArgumentError(`expected a number > 0, got '${value}'`);
  return n;
};

export interface AlignTrainFlags {
  dataPath: string;
  imageSize: number;
  gpusPerNode: number;
  dinoModel: string;
  dinoCkpt: string;
  dinoInputSize: number;
  vaeCkpt?: string;
  vaeConfig: string;
  discCkpt?: string;
  lpipsVgg?: string;
  lpipsLin?: string;
  /** Unset on --resume when not given (resumeFlags). */
  lr?: number;
  maxEpoch: number;
  maxSteps?: number;
  batchSize: number;
  numWorkers?: number;
  resultsDir: string;
  resume?: string;
  seed: number;
  precision: 'fp32' | 'bf16';
  ckptEvery: number;
  keepLast?: number;
  logEvery: number;
  imageEvery: number;
  emaDecay?: number;
  mlpHidden: number;
  mlpDepth: number;
  clsPooling: ClsPooling;
  clsPoolSize: number;
  recLoss: 'mse' | 'l1';
  recWeight: number;
  lpipsWeight: number;
  klWeight: number;
  patchWeight: number;
  clsWeight: number;
  smoothL1Weight: number;
  discWeight: number;
  discStart: number;
}

/** A named DINOv2 config, or a JSON file of DinoV2Config fields over dinov2_vits14's (small teachers). */
export function resolveDinoConfig(name: string): DinoV2Config {
  const named = DINOV2_CONFIGS[name];
  if (named !== undefined) return named;
  if (!name.endsWith('.json')) throw new Error(`--dino-model ${name}: not one of ${Object.keys(DINOV2_CONFIGS).join(', ')}, nor a .json config`);
  const fields = readJsonFile(name);
  if (fields === null || typeof fields !== 'object' || Array.isArray(fields)) throw new Error(`--dino-model ${name}: expected a JSON object of DinoV2Config fields`);
  const base = DINOV2_CONFIGS.dinov2_vits14!;
  const unknown = Object.keys(fields).filter((k) => !(k in base));
  if (unknown.length > 0) throw new Error(`--dino-model ${name}: unknown fields [${unknown.join(', ')}] (known: ${Object.keys(base).join(', ')})`);
  return { ...base, ...(fields as Partial<DinoV2Config>) };
}

/** A named VAE config (AUTOENCODER_KL_CONFIGS) or a diffusers config.json file. */
export function resolveVaeConfig(name: string): Partial<AutoencoderKLConfig> {
  const named = AUTOENCODER_KL_CONFIGS[name];
  if (named !== undefined) return named;
  if (!existsSync(name)) throw new Error(`--vae-config ${name}: not one of ${Object.keys(AUTOENCODER_KL_CONFIGS).join(', ')}, nor a config.json file`);
  return configFromDiffusers(readJsonFile(name), name);
}

const LDM_ENCODER_KEY = /^(first_stage_model\.)?encoder\.down\.\d+\./;

/**
 * The VAE to start from: a diffusers folder (config.json + weights), a state-dict file in
 * diffusers naming (.safetensors, .ckpt, .pt, .bin; a Lightning {state_dict} is unwrapped) with
 * the architecture of --vae-config, or, without --vae-ckpt, --vae-config randomly initialised.
 */
export function loadVae(path: string | undefined, config: string): AutoencoderKL {
  if (path === undefined) return new AutoencoderKL(resolveVaeConfig(config));
  if (!existsSync(path)) throw new Error(`--vae-ckpt ${path}: no such file or folder`);
  if (statSync(path).isDirectory()) return AutoencoderKL.fromPretrained(path);
  const vae = new AutoencoderKL(resolveVaeConfig(config));
  torch.scope(() => {
    let loaded = load(path) as unknown;
    if (loaded instanceof Map) loaded = Object.fromEntries(loaded);
    const record = loaded as Record<string, unknown>;
    const stateDict = (record !== null && typeof record === 'object' && 'state_dict' in record ? record.state_dict : record) as Record<string, torch.Tensor>;
    if (Object.keys(stateDict).some((key) => LDM_ENCODER_KEY.test(key))) {
      throw new Error(`--vae-ckpt ${path}: holds latent-diffusion (CompVis) key names (encoder.down.N...), not diffusers' (encoder.down_blocks.N...); ` +
        'convert it with diffusers\' scripts/convert_vae_pt_to_diffusers.py and pass the folder');
    }
    try {
      vae.loadDiffusersStateDict(stateDict);
    } catch (error) {
      throw new Error(`--vae-ckpt ${path}: ${(error as Error).message}`, { cause: error });
    }
  });
  return vae;
}

function loadDataset(flags: AlignTrainFlags): Dataset {
  if (flags.dataPath === 'fashion-mnist') return new FashionMNIST({ channels: 3 });
  return new ImageFolder(flags.dataPath, { resolution: flags.imageSize });
}

/** Builds everything from the flags and trains; under `reals launch` (WORLD_SIZE > 1) as one rank of DDP. */
export async function runAlignTrain(flags: AlignTrainFlags, args: Record<string, unknown>): Promise<void> {
  // Before any model loads: an output folder that cannot be made fails now, in a few system calls.
  if (flags.resume === undefined) checkWritableDir(flags.resultsDir, '--results-dir');
  const dinoConfig = resolveDinoConfig(flags.dinoModel);
  if (flags.dinoInputSize % dinoConfig.patchSize !== 0) {
    throw new Error(`--dino-input-size ${flags.dinoInputSize} is not divisible by the DINOv2 patch size ${dinoConfig.patchSize} ` +
      `(448 = 32 x 14 gives one token per latent position of a 256 px image)`);
  }
  if (flags.lpipsWeight > 0 && (flags.lpipsVgg === undefined || flags.lpipsLin === undefined)) {
    throw new Error(`--lpips-weight ${flags.lpipsWeight} needs the LPIPS weights: --lpips-vgg and --lpips-lin (or --lpips-weight 0)`);
  }
  const worldSize = torch.distributed.launchedWorldSize();
  if (worldSize > 1) torch.distributed.initProcessGroup();
  const rank = worldSize > 1 ? torch.distributed.getRank() : 0;
  try {
    torch.manualSeed(flags.seed);
    const vae = loadVae(flags.vaeCkpt, flags.vaeConfig);
    const dino = new DinoVisionTransformer(dinoConfig).loadCheckpoint(flags.dinoCkpt);
    const heads = new AlignmentHeads({
      latentChannels: vae.config.latentChannels, featureDim: dinoConfig.embedDim,
      hiddenDim: flags.mlpHidden, depth: flags.mlpDepth, clsPooling: flags.clsPooling, clsPoolSize: flags.clsPoolSize,
    });
    const discriminator = flags.discCkpt === undefined
      ? new NLayerDiscriminator({ inputNc: vae.config.outChannels })
      : NLayerDiscriminator.fromCheckpoint(flags.discCkpt, { inputNc: vae.config.outChannels });
    const lpips = flags.lpipsWeight > 0 ? LPIPS.fromPretrained({ vgg16: flags.lpipsVgg!, lin: flags.lpipsLin! }) : null;
    const data = new DataLoader(loadDataset(flags), {
      batchSize: flags.batchSize, seed: flags.seed, rank, worldSize, numWorkers: flags.numWorkers,
    });
    try {
      const result = await trainAlignment({
        vae, dino, dinoInputSize: flags.dinoInputSize, heads, discriminator, lpips, data,
        resultsDir: flags.resultsDir, resume: flags.resume, lr: flags.lr, emaDecay: flags.emaDecay,
        maxEpoch: flags.maxEpoch, maxSteps: flags.maxSteps, ckptEvery: flags.ckptEvery, keepLast: flags.keepLast,
        logEvery: flags.logEvery, imageEvery: flags.imageEvery, seed: flags.seed, precision: flags.precision, args,
        reconstruction: flags.recLoss, reconstructionWeight: flags.recWeight, lpipsWeight: flags.lpipsWeight, klWeight: flags.klWeight,
        patchWeight: flags.patchWeight, clsWeight: flags.clsWeight, smoothL1Weight: flags.smoothL1Weight,
        discWeight: flags.discWeight, discStart: flags.discStart,
      });
      if (rank === 0) console.log(`done: step ${result.step}, checkpoint ${result.checkpoint}`);
    } finally {
      await data.close();
    }
  } finally {
    if (worldSize > 1) torch.distributed.destroyProcessGroup();
  }
}

export function alignTrainCommand(): Command {
  const d = ALIGN_LOSS_DEFAULTS;
  return new Command('train')
    .description('train a VAE whose latents are aligned with frozen DINOv2 features (ReaLS)')
    .requiredOption('--data-path <path>', 'ImageNet-layout image folder (class subfolders), or `fashion-mnist` for Debian\'s dataset-fashion-mnist')
    .option('--image-size <n>', 'side of the ADM center crop of folder images', integer(1), 256)
    .option('--gpus-per-node <n>', 'ranks to start on this node through `reals launch` (when not already launched)', integer(1), 1)
    .option('--dino-model <name>', `teacher: ${Object.keys(DINOV2_CONFIGS).join(', ')}, or a .json file of DinoV2Config fields`, 'dinov2_vitb14')
    .requiredOption('--dino-ckpt <file>', 'teacher weights (torch-hub or Hugging Face naming; .pth or .safetensors)')
    .option('--dino-input-size <n>', 'side images are resized to for DINOv2; divisible by the patch size 14', integer(1), 448)
    .option('--vae-ckpt <path>', 'VAE to start from: diffusers folder, or a .safetensors/.ckpt state dict in diffusers naming (default: --vae-config from scratch)')
    .option('--vae-config <name>', `VAE architecture for a state-dict file or from scratch: ${Object.keys(AUTOENCODER_KL_CONFIGS).join(', ')}, or a config.json`, 'sd-vae')
    .option('--disc-ckpt <file>', 'PatchGAN discriminator to start from (taming/LDM checkpoint or state dict)')
    .option('--lpips-vgg <file>', 'torchvision VGG16 weights for LPIPS (vgg16-397923af.pth)')
    .option('--lpips-lin <file>', 'LPIPS linear layers (lpips weights/v0.1/vgg.pth)')
    .option('--lr <lr>', 'Adam learning rate (VAE, heads and discriminator; betas 0.5, 0.9)', positive, 5e-5)
    .option('--max-epoch <n>', 'epochs to train', integer(1), 100)
    .option('--max-steps <n>', 'stop after this many steps if earlier', integer(1))
    .option('--batch-size <n>', 'images per batch per process', integer(1), 8)
    .option('--num-workers <n>', 'image decoding threads (default: cores - 1, at most 8)', integer(0))
    .option('--results-dir <dir>', 'runs go to <results-dir>/NNN-align', 'results')
    .option('--resume <path>', 'continue from a checkpoint file, a run folder or its checkpoints folder')
    .option('--seed <n>', 'global seed (rank r uses seed * world + r)', integer(0), 0)
    .addOption(new Option('--precision <p>', 'fp32, or bf16 autocast (CUDA)').choices(['fp32', 'bf16']).default('fp32'))
    .option('--ckpt-every <n>', 'steps between checkpoints', integer(1), 5000)
    .option('--keep-last <n>', 'keep only the newest n checkpoints', integer(1))
    .option('--log-every <n>', 'steps between metrics.jsonl / TensorBoard records', integer(1), 100)
    .option('--image-every <n>', 'steps between reconstruction images in TensorBoard', integer(1), 1000)
    .option('--ema-decay <d>', 'EMA decay of the VAE and heads', nonNegative, 0.9999)
    .option('--mlp-hidden <n>', 'hidden width of MLP_patch and MLP_cls', integer(1), ALIGNMENT_DEFAULTS.hiddenDim)
    .option('--mlp-depth <n>', 'Linear layers per MLP', integer(1), ALIGNMENT_DEFAULTS.depth)
    .addOption(new Option('--cls-pooling <p>', 'MLP_cls pooling: mean of first-layer features, or avgpool of the latent to k x k')
      .choices(['mean', 'avgpool']).default(ALIGNMENT_DEFAULTS.clsPooling))
    .option('--cls-pool-size <k>', 'k of --cls-pooling avgpool', integer(1), ALIGNMENT_DEFAULTS.clsPoolSize)
    .addOption(new Option('--rec-loss <l>', 'reconstruction loss').choices(['mse', 'l1']).default(d.reconstruction))
    .option('--rec-weight <w>', 'weight of the reconstruction loss', nonNegative, d.reconstructionWeight)
    .option('--lpips-weight <w>', 'weight of LPIPS (0: no LPIPS weights needed)', nonNegative, d.lpipsWeight)
    .option('--kl-weight <w>', 'weight of the KL term (mean over latent elements)', nonNegative, d.klWeight)
    .option('--patch-weight <w>', 'weight of the patch-token alignment loss', nonNegative, d.patchWeight)
    .option('--cls-weight <w>', 'weight of the CLS-token alignment loss', nonNegative, d.clsWeight)
    .option('--smooth-l1-weight <w>', 'weight of smooth-L1 added to each alignment term', nonNegative, d.smoothL1Weight)
    .option('--disc-weight <w>', 'scale of the adaptive GAN weight', nonNegative, d.discWeight)
    .option('--disc-start <step>', 'step from which the discriminator and GAN loss run', integer(0), d.discStart)
    .action(async (flags: AlignTrainFlags, self: Command) => {
      if (flags.gpusPerNode > 1 && process.env.WORLD_SIZE === undefined) {
        // Start the ranks: the same command line again, each copy with torchrun's environment.
        process.exitCode = await launch({ command: [process.execPath, ...process.execArgv, ...process.argv.slice(1)], nprocPerNode: flags.gpusPerNode });
        return;
      }
      try {
        const given = resumeFlags(self, flags, ['lr', 'emaDecay']);
        await runAlignTrain(given, { ...given });
      } catch (error) {
        // The library's errors name the flag, file or step at fault; a stack trace adds nothing for the user.
        self.error(`error: ${(error as Error).message}`);
      }
    });
}

export interface AlignConvertFlags {
  ckpt: string;
  outputDir: string;
  dataPath: string;
  numSamples: number;
  useEma: boolean;
  imageSize?: number;
  batchSize: number;
  seed: number;
  numWorkers?: number;
  device?: string;
}

/** Converts a checkpoint of `reals align train` into `--output-dir`; the images come cropped as the run read them. */
export async function runAlignConvert(flags: AlignConvertFlags, log: (line: string) => void = console.log): Promise<AlignConvertResult> {
  checkWritableDir(flags.outputDir, '--output-dir');
  const { vae, heads, step, args } = loadAlignedModels(flags.ckpt, { useEma: flags.useEma });
  const imageSize = flags.imageSize ?? (typeof args.imageSize === 'number' ? args.imageSize : undefined);
  if (imageSize === undefined) throw new Error(`--ckpt ${flags.ckpt} records no image size (args.imageSize): pass the run's --image-size`);
  const dataset = loadImageDataset(flags.dataPath, imageSize, vae.config.inChannels);
  const result = await convertAlignment({
    vae, heads, dataset, numSamples: flags.numSamples, outputDir: flags.outputDir, batchSize: flags.batchSize, seed: flags.seed,
    numWorkers: flags.numWorkers, device: flags.device,
  });
  const round = (values: number[]) => values.map((v) => Number(v.toPrecision(4))).join(', ');
  const skipped = result.skipped > 0 ? ` (${result.skipped} unreadable files skipped)` : '';
  log(`${flags.useEma ? 'ema' : 'model'} weights of step ${step}; latents of ${result.images} images${skipped}: ` +
    `mean [${round(result.stats.mean)}], std [${round(result.stats.std)}]`);
  log(`wrote ${flags.outputDir}: config.json, diffusion_pytorch_model.safetensors, mean_std.json, ${ALIGN_HEADS_NAME}`);
  return result;
}

export function alignConvertCommand(): Command {
  return new Command('convert')
    .description('write a checkpoint of `align train` as a diffusers AutoencoderKL folder with mean_std.json (per-channel latent ' +
      `statistics over training images) and the alignment MLPs (${ALIGN_HEADS_NAME})`)
    .requiredOption('--ckpt <file>', 'a checkpoint of `reals align train` (<run>/checkpoints/NNNNNNN.safetensors)')
    .requiredOption('--output-dir <dir>', 'folder to write (created if missing; files of the same names are replaced)')
    .requiredOption('--data-path <path>', 'the training images: ImageNet-layout image folder, or `fashion-mnist`')
    .requiredOption('--num-samples <n>', 'images (a seeded random subset) the latent mean and std are computed over', integer(1))
    .option('--use-ema', 'convert the EMA weights (ema.*) instead of the trained ones (model.*)', false)
    .option('--image-size <n>', 'side of the ADM center crop of folder images (default: the run\'s --image-size)', integer(1))
    .option('--batch-size <n>', 'images per encoder call', integer(1), 32)
    .option('--seed <n>', 'seeds the subset and the posterior samples', integer(0), 0)
    .option('--num-workers <n>', 'image decoding threads (default: cores - 1, at most 8)', integer(0))
    .option('--device <device>', 'cpu or cuda[:N] (default: cuda when available)')
    .action(async (flags: AlignConvertFlags, self: Command) => {
      try {
        await runAlignConvert(flags);
      } catch (error) {
        self.error(`error: ${(error as Error).message}`);
      }
    });
}

export function alignCommand(): Command {
  return new Command('align')
    .description('the ReaLS VAE: train it with DINOv2 alignment, convert a checkpoint for the generators')
    .addCommand(alignTrainCommand())
    .addCommand(alignConvertCommand());
}
