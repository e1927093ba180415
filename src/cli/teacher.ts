// `reals teacher train`: a self-supervised DINOv2-architecture teacher (src/train/teacher.ts), with
// flags named after DINOv2's config keys (dinov2/configs/ssl_default_config.yaml: crops.*, dino.*,
// ibot.*, teacher.*, optim.*). `reals teacher probe`: the linear-probe accuracy of a backbone
// (src/eval/linear-probe.ts) as JSON.
import { Command, InvalidArgumentError, Option } from 'commander';
import * as torch from '../torch/index.js';
import { DINOV2_CONFIGS, DinoVisionTransformer } from '../models/dinov2.js';
import { FashionMNIST, ImageFolder, type Dataset } from '../data/index.js';
import { SELF_SUPERVISED_DEFAULTS, trainSelfSupervisedTeacher, type ProbeData, type SelfSupervisedTeacherResult } from '../train/teacher.js';
import { holdOutSplit, linearProbe } from '../eval/linear-probe.js';
import { resolveDinoConfig } from './align.js';
import { integer, number } from './sit.js';

/** `min,max`: two numbers in [low, high] with min <= max. */
function range(low: number, high: number): (value: string) => [number, number] {
  return (value) => {
    const parts = value.split(',').map((p) => p.trim());
    const [a, b] = parts.map(Number) as [number, number];
    if (parts.length !== 2 || parts.some((p) => p === '') || !Number.isFinite(a) || !Number.isFinite(b) || a < low || b > high || a > b) {
      throw new InvalidArgumentError(`expected min,max with ${low} <= min <= max <= ${high}, got '${value}'`);
    }
    return [a, b];
  };
}

const positive = (value: string): number => {
  const n = number(0)(value);
  if (n === 0) throw new InvalidArgumentError(`expected a number > 0, got '${value}'`);
  return n;
};

export interface TeacherTrainFlags {
  dataPath: string;
  imageSize: number;
  dinoModel: string;
  globalCropsSize: number;
  globalCropsScale: [number, number];
  localCropsNumber: number;
  localCropsSize: number;
  localCropsScale: [number, number];
  headNPrototypes: number;
  headHiddenDim: number;
  headBottleneckDim: number;
  headNlayers: number;
  ibotSeparateHead: boolean;
  dinoLossWeight: number;
  ibotLossWeight: number;
  koleoLossWeight: number;
  maskRatioMinMax: [number, number];
  maskSampleProbability: number;
  teacherTemp: number;
  warmupTeacherTemp: number;
  warmupTeacherTempSteps?: number;
  momentumTeacher: number;
  lr?: number;
  minLr: number;
  warmupSteps?: number;
  freezeLastLayerSteps?: number;
  weightDecay: number;
  weightDecayEnd: number;
  clipGrad: number;
  layerwiseDecay: number;
  patchEmbedLrMult: number;
  batchSize: number;
  maxSteps?: number;
  epochs: number;
  resultsDir: string;
  resume?: string;
  seed: number;
  ckptEvery: number;
  keepLast?: number;
  logEvery: number;
  numWorkers?: number;
  probeImages: number;
  out?: string;
  device?: string;
}

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

/** Builds the data and the options from the flags and trains. */
export async function runTeacherTrain(flags: TeacherTrainFlags, args: Record<string, unknown>): Promise<SelfSupervisedTeacherResult> {
  const config = resolveDinoConfig(flags.dinoModel);
  if (flags.device?.startsWith('cuda') && !torch.cuda.isAvailable()) throw new Error(`--device ${flags.device}: this libtorch build has no CUDA device`);
  for (const [flag, size] of [['--global-crops-size', flags.globalCropsSize], ['--local-crops-size', flags.localCropsSize]] as const) {
    if (size % config.patchSize !== 0) throw new Error(`${flag} ${size} is not a multiple of the patch size ${config.patchSize} of --dino-model ${flags.dinoModel}`);
  }
  const dataset = trainingImages(flags.dataPath, flags.imageSize);
  const result = await trainSelfSupervisedTeacher({
    config, dataset, resultsDir: flags.resultsDir, out: flags.out, resume: flags.resume,
    probe: probeSplits(flags.dataPath, flags.imageSize, flags.probeImages, flags.seed, console.log),
    globalCropsSize: flags.globalCropsSize, globalCropsScale: flags.globalCropsScale, localCropsNumber: flags.localCropsNumber,
    localCropsSize: flags.localCropsSize, localCropsScale: flags.localCropsScale,
    headNPrototypes: flags.headNPrototypes, headHiddenDim: flags.headHiddenDim, headBottleneckDim: flags.headBottleneckDim,
    headNlayers: flags.headNlayers, ibotSeparateHead: flags.ibotSeparateHead,
    dinoLossWeight: flags.dinoLossWeight, ibotLossWeight: flags.ibotLossWeight, koleoLossWeight: flags.koleoLossWeight,
    maskRatioMinMax: flags.maskRatioMinMax, maskSampleProbability: flags.maskSampleProbability,
    teacherTemp: flags.teacherTemp, warmupTeacherTemp: flags.warmupTeacherTemp, warmupTeacherTempSteps: flags.warmupTeacherTempSteps,
    momentumTeacher: flags.momentumTeacher, lr: flags.lr, minLr: flags.minLr, warmupSteps: flags.warmupSteps,
    freezeLastLayerSteps: flags.freezeLastLayerSteps, weightDecay: flags.weightDecay, weightDecayEnd: flags.weightDecayEnd,
    clipGrad: flags.clipGrad, layerwiseDecay: flags.layerwiseDecay, patchEmbedLrMult: flags.patchEmbedLrMult,
    batchSize: flags.batchSize, maxSteps: flags.maxSteps, epochs: flags.epochs, seed: flags.seed, ckptEvery: flags.ckptEvery,
    keepLast: flags.keepLast, logEvery: flags.logEvery, numWorkers: flags.numWorkers, device: flags.device, args,
  });
  console.log(`done: step ${result.steps}; --dino-model ${result.configPath} --dino-ckpt ${result.checkpoint}`);
  return result;
}

export function teacherTrainCommand(): Command {
  const d = SELF_SUPERVISED_DEFAULTS;
  const pair = (flags: string, description: string, low: number, high: number, value: [number, number]) =>
    new Option(flags, description).argParser(range(low, high)).default(value, value.map((v) => (Number.isInteger(v) ? v.toFixed(1) : String(v))).join(','));
  return new Command('train')
    .description('train a DINOv2-architecture ViT without labels by DINOv2 self-distillation (DINO + iBOT + KoLeo); ' +
      'exports the EMA teacher backbone for `reals align train --dino-model --dino-ckpt`')
    .requiredOption('--data-path <path>', 'ImageNet-layout image folder, or `fashion-mnist` (Debian\'s dataset-fashion-mnist, 3-channel 32x32); labels are never read for training (required)')
    .option('--image-size <n>', 'side of the ADM center crop of folder images', integer(1), 32)
    .requiredOption('--dino-model <name>', `the backbone: ${Object.keys(DINOV2_CONFIGS).join(', ')}, or a .json file of DinoV2Config fields (e.g. {"imgSize":32,"patchSize":4,"embedDim":64,"depth":4,"numHeads":4}) (required)`)
    .option('--global-crops-size <n>', 'crops.global_crops_size: side of the 2 global crops (a multiple of the patch size)', integer(1), d.globalCropsSize)
    .addOption(pair('--global-crops-scale <min,max>', 'crops.global_crops_scale: fraction of the image area a global crop covers', 0, 1, d.globalCropsScale))
    .option('--local-crops-number <n>', 'crops.local_crops_number', integer(0), d.localCropsNumber)
    .option('--local-crops-size <n>', 'crops.local_crops_size (a multiple of the patch size)', integer(1), d.localCropsSize)
    .addOption(pair('--local-crops-scale <min,max>', 'crops.local_crops_scale', 0, 1, d.localCropsScale))
    .option('--head-n-prototypes <n>', 'dino.head_n_prototypes: softmax size of the DINO and iBOT heads', integer(1), d.headNPrototypes)
    .option('--head-hidden-dim <n>', 'dino.head_hidden_dim', integer(1), d.headHiddenDim)
    .option('--head-bottleneck-dim <n>', 'dino.head_bottleneck_dim', integer(1), d.headBottleneckDim)
    .option('--head-nlayers <n>', 'dino.head_nlayers: Linear layers of the head MLP', integer(1), d.headNlayers)
    .option('--no-ibot-separate-head', 'ibot.separate_head false: score patch tokens with the DINO head (default: an iBOT head of its own)')
    .option('--dino-loss-weight <w>', 'dino.loss_weight', number(0), d.dinoLossWeight)
    .option('--ibot-loss-weight <w>', 'ibot.loss_weight (0: no iBOT masking loss)', number(0), d.ibotLossWeight)
    .option('--koleo-loss-weight <w>', 'dino.koleo_loss_weight', number(0), d.koleoLossWeight)
    .addOption(pair('--mask-ratio-min-max <min,max>', 'ibot.mask_ratio_min_max: fraction of patches block-masked', 0, 1, d.maskRatioMinMax))
    .option('--mask-sample-probability <p>', 'ibot.mask_sample_probability: fraction of global crops that are masked', number(0, 1), d.maskSampleProbability)
    .option('--teacher-temp <t>', 'teacher.teacher_temp (DINOv2: 0.07; 0.04 keeps short runs from drifting to uniform outputs)', positive, d.teacherTemp)
    .option('--warmup-teacher-temp <t>', 'teacher.warmup_teacher_temp: where the teacher temperature starts', positive, d.warmupTeacherTemp)
    .option('--warmup-teacher-temp-steps <n>', 'steps of the linear teacher-temperature warm-up (default: 30% of the run)', integer(0))
    .option('--momentum-teacher <m>', 'teacher.momentum_teacher: EMA momentum at the start, cosine to 1 at the end (DINOv2: 0.992)', number(0, 1), d.momentumTeacher)
    .option('--lr <lr>', 'peak AdamW learning rate (default: 0.004 x sqrt(batch-size / 1024), DINOv2\'s base_lr and sqrt_wrt_1024)', positive)
    .option('--min-lr <lr>', 'optim.min_lr: where the cosine ends', number(0), d.minLr)
    .option('--warmup-steps <n>', 'steps of linear lr warm-up (default: 10% of the run)', integer(0))
    .option('--freeze-last-layer-steps <n>', 'steps with the heads\' last layers frozen (default: 1% of the run)', integer(0))
    .option('--weight-decay <w>', 'optim.weight_decay: at the start, cosine to --weight-decay-end', number(0), d.weightDecay)
    .option('--weight-decay-end <w>', 'optim.weight_decay_end', number(0), d.weightDecayEnd)
    .option('--clip-grad <norm>', 'optim.clip_grad: per student part (0: no clipping)', number(0), d.clipGrad)
    .option('--layerwise-decay <r>', 'optim.layerwise_decay: lr x r^(depth + 1 - layer) (DINOv2: 0.9)', number(0, 1), d.layerwiseDecay)
    .option('--patch-embed-lr-mult <m>', 'optim.patch_embed_lr_mult (DINOv2: 0.2)', number(0), d.patchEmbedLrMult)
    .option('--batch-size <n>', 'train.batch_size_per_gpu: images per step', integer(2), 64)
    .option('--max-steps <n>', 'stop after this many steps (the schedules span the run)', integer(1))
    .option('--epochs <n>', 'optim.epochs: passes over the data, unless --max-steps stops earlier', integer(1), 100)
    .option('--results-dir <dir>', 'runs go to <results-dir>/NNN-teacher', 'results')
    .option('--resume <path>', 'continue from a checkpoint file, a run folder or its checkpoints folder')
    .option('--seed <n>', 'seeds the initialisation, the crops, the masks and the data order', integer(0), 0)
    .option('--ckpt-every <n>', 'steps between checkpoints', integer(1), 1000)
    .option('--keep-last <n>', 'keep only the newest n checkpoints', integer(1))
    .option('--log-every <n>', 'steps between metrics.jsonl / TensorBoard records', integer(1), 20)
    .option('--num-workers <n>', 'image decoding threads (default: cores - 1, at most 8)', integer(0))
    .option('--probe-images <n>', 'linear probe at the end on n train and n test images (Fashion-MNIST\'s test set, or 20% of a folder held out); 0: none', integer(0), 2000)
    .option('--out <dir>', 'folder of the exported teacher: dino-model.json and dino-teacher.safetensors (default: <run>/teacher)')
    .option('--device <device>', 'cpu or cuda[:N] (default: cuda when available)')
    .action(async (flags: TeacherTrainFlags, self: Command) => {
      try {
        await runTeacherTrain(flags, { ...flags });
      } catch (error) {
        // The library's errors name the flag, file or step at fault; a stack trace adds nothing for the user.
        self.error(`error: ${(error as Error).message}`);
      }
    });
}

export interface TeacherProbeFlags {
  dinoModel: string;
  dinoCkpt: string;
  dataPath: string;
  imageSize: number;
  inputSize?: number;
  probeImages: number;
  epochs: number;
  lr: number;
  seed: number;
  device?: string;
}

export async function runTeacherProbe(flags: TeacherProbeFlags): Promise<void> {
  const backbone = new DinoVisionTransformer(resolveDinoConfig(flags.dinoModel)).loadCheckpoint(flags.dinoCkpt);
  const splits = probeSplits(flags.dataPath, flags.imageSize, flags.probeImages, flags.seed, () => {});
  if (splits === undefined) throw new Error(`--data-path ${flags.dataPath}: needs at least two class folders for a linear probe`);
  const inputSize = flags.inputSize ?? (flags.dataPath === 'fashion-mnist' ? 32 : flags.imageSize);
  const result = await linearProbe({
    backbone: backbone.to(flags.device ?? 'cpu'), train: splits.train, test: splits.test, trainImages: flags.probeImages, testImages: flags.probeImages,
    inputSize, epochs: flags.epochs, lr: flags.lr, seed: flags.seed, device: flags.device,
  });
  console.log(JSON.stringify(result));
}

export function teacherProbeCommand(): Command {
  return new Command('probe')
    .description('linear-probe accuracy of a frozen backbone (CLS token + mean patch token, as DINOv2\'s linear eval), printed as JSON')
    .requiredOption('--dino-model <name>', `${Object.keys(DINOV2_CONFIGS).join(', ')}, or a .json file of DinoV2Config fields (required)`)
    .requiredOption('--dino-ckpt <file>', 'backbone weights (torch-hub or Hugging Face naming; .pth or .safetensors) (required)')
    .requiredOption('--data-path <path>', 'ImageNet-layout image folder (20% held out for testing), or `fashion-mnist` (its train and test sets) (required)')
    .option('--image-size <n>', 'side of the ADM center crop of folder images', integer(1), 32)
    .option('--input-size <n>', 'side images are resized to for the backbone (default: the image size)', integer(1))
    .option('--probe-images <n>', 'images drawn from each split', integer(1), 2000)
    .option('--epochs <n>', 'passes of Adam over the training features', integer(1), 100)
    .option('--lr <lr>', 'Adam learning rate of the linear classifier', positive, 1e-3)
    .option('--seed <n>', 'seeds the subsets and the classifier', integer(0), 0)
    .option('--device <device>', 'cpu or cuda[:N] (default: cpu)')
    .action(async (flags: TeacherProbeFlags, self: Command) => {
      try {
        await runTeacherProbe(flags);
      } catch (error) {
        self.error(`error: ${(error as Error).message}`);
      }
    });
}

export function teacherCommand(): Command {
  return new Command('teacher')
    .description('a self-supervised DINOv2-architecture teacher: train it without labels, probe a backbone linearly')
    .addCommand(teacherTrainCommand())
    .addCommand(teacherProbeCommand());
}
