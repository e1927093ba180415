// `reals teacher train`: a self-supervised DINOv2-architecture teacher, with flags named after
// DINOv2's config keys (dinov2/configs/ssl_default_config.yaml: crops.*, dino.*, ibot.*, teacher.*,
// optim.*). `reals teacher probe`: the linear-probe accuracy of a backbone and the spatial structure
// (iREPA's LDS) of its patch tokens beside a random-init backbone's, as JSON.
// src/pipelines/teacher.ts does the work.
import { Command, Option } from 'commander';
import { DINOV2_CONFIGS } from '../models/dinov2.js';
import { HOG_TEACHER_NAME } from '../models/hog.js';
import { SELF_SUPERVISED_DEFAULTS } from '../train/teacher.js';
import {
  TEACHER_PROBE_RUN_DEFAULTS, TEACHER_TRAIN_RUN_DEFAULTS, runTeacherProbe, runTeacherTrain, type TeacherProbeRunOptions, type TeacherTrainRunOptions,
} from '../pipelines/teacher.js';
import { device, integer, number, positive, precisionFlag, range } from './parse.js';

export function teacherTrainCommand(): Command {
  const d = SELF_SUPERVISED_DEFAULTS;
  const r = TEACHER_TRAIN_RUN_DEFAULTS;
  const pair = (flags: string, description: string, low: number, high: number, value: [number, number]) =>
    new Option(flags, description).argParser(range(low, high)).default(value, value.map((v) => (Number.isInteger(v) ? v.toFixed(1) : String(v))).join(','));
  return precisionFlag(new Command('train'), r.precision)
    .description('train a DINOv2-architecture ViT without labels by DINOv2 self-distillation (DINO + iBOT + KoLeo); ' +
      'exports the EMA teacher backbone for `reals align train --dino-model --dino-ckpt`')
    .requiredOption('--data-path <path>', 'ImageNet-layout image folder (its train/ when it holds train/ and val/), or `fashion-mnist` (Debian\'s dataset-fashion-mnist, 3-channel 32x32); labels are never read for training')
    .option('--image-size <n>', 'side of the ADM center crop of folder images', integer(1), r.imageSize)
    .requiredOption('--dino-model <name>', `the backbone: ${Object.keys(DINOV2_CONFIGS).join(', ')}, or a .json file of DinoV2Config fields (e.g. {"imgSize":32,"patchSize":4,"embedDim":64,"depth":4,"numHeads":4})`)
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
    .option('--batch-size <n>', 'train.batch_size_per_gpu: images per step', integer(2), r.batchSize)
    .option('--max-steps <n>', 'stop after this many steps (the schedules span the run)', integer(1))
    .option('--epochs <n>', 'optim.epochs: passes over the data, unless --max-steps stops earlier', integer(1), r.epochs)
    .option('--results-dir <dir>', 'runs go to <results-dir>/NNN-teacher', r.resultsDir)
    .option('--resume <path>', 'continue from a checkpoint file, a run folder or its checkpoints folder')
    .option('--seed <n>', 'seeds the initialisation, the crops, the masks and the data order', integer(0), r.seed)
    .option('--ckpt-every <n>', 'steps between checkpoints', integer(1), r.ckptEvery)
    .option('--keep-last <n>', 'keep only the newest n checkpoints', integer(1))
    .option('--log-every <n>', 'steps between metrics.jsonl / TensorBoard records', integer(1), r.logEvery)
    .option('--num-workers <n>', 'image decoding threads (default: the usable CPUs - 1, 1 to 8)', integer(0))
    .option('--probe-images <n>', 'linear probe at the end on n train and n test images (Fashion-MNIST\'s test set, or 20% of a folder held out); 0: none', integer(0), r.probeImages)
    .option('--out <dir>', 'folder of the exported teacher: dino-model.json and dino-teacher.safetensors (default: <run>/teacher)')
    .option('--device <device>', 'cpu or cuda[:N] (default: cuda when available)', device)
    .action(async (flags: TeacherTrainRunOptions) => {
      await runTeacherTrain(flags);
    });
}

export function teacherProbeCommand(): Command {
  const d = TEACHER_PROBE_RUN_DEFAULTS;
  return new Command('probe')
    .description('linear-probe accuracy of a frozen backbone (CLS token + mean patch token, as DINOv2\'s linear eval) and the LDS of its patch tokens ' +
      '(iREPA\'s local-vs-distant similarity: mean cosine of 4-neighbour token pairs minus that of pairs at Manhattan distance >= --lds-far-distance; ' +
      'docs/alignment.md) beside a random-init backbone\'s probe and LDS of the same config, printed as JSON with the class count')
    .requiredOption('--dino-model <name>', `${Object.keys(DINOV2_CONFIGS).join(', ')}, a .json file of DinoV2Config fields, ` +
      `or ${HOG_TEACHER_NAME} (align train's training-free HOG teacher: no weights, no random init to compare)`)
    .option('--dino-ckpt <file>', 'backbone weights (torch-hub or Hugging Face naming; .pth or .safetensors), or a checkpoint of `reals teacher train` ' +
      '(its EMA teacher\'s backbone); required unless --dino-model hog')
    .option('--hog-cell-size <px>', 'pixels per HOG cell: the downsampling factor of the VAE it would align (align train gives HOG the latent grid)', integer(1), d.hogCellSize)
    .requiredOption('--data-path <path>', 'ImageNet-layout image folder (its train/ when it holds train/ and val/; 20% held out for testing), or `fashion-mnist` (its train and test sets)')
    .option('--image-size <n>', 'side of the ADM center crop of folder images', integer(1), d.imageSize)
    .option('--input-size <n>', 'side images are resized to for the backbone (default: the image size)', integer(1))
    .option('--probe-images <n>', 'images drawn from each split; the LDS is measured on the test split\'s', integer(1), d.probeImages)
    .option('--epochs <n>', 'passes of Adam over the training features', integer(1), d.epochs)
    .option('--lr <lr>', 'Adam learning rate of the linear classifier', positive, d.lr)
    .option('--seed <n>', 'seeds the subsets, the classifier and the random-init backbone', integer(0), d.seed)
    .option('--lds-far-distance <n>', 'LDS\'s distant pairs: Manhattan distance >= n tokens on the patch grid (iREPA: 6)', integer(2), d.ldsFarDistance)
    .option('--device <device>', 'cpu or cuda[:N] (default: cpu)', device)
    .action(async (flags: TeacherProbeRunOptions) => {
      console.log(JSON.stringify(await runTeacherProbe(flags)));
    });
}

export function teacherCommand(): Command {
  return new Command('teacher')
    .description('a self-supervised DINOv2-architecture teacher: train it without labels, probe a backbone linearly')
    .addCommand(teacherTrainCommand())
    .addCommand(teacherProbeCommand());
}
