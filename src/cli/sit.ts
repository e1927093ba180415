// `reals sit train` and `reals dit train`: SiT's and DiT's train.py flags
// (src/pipelines/generator.ts does the work).
import { Command, Option } from 'commander';
import { SIT_CONFIGS } from '../models/sit.js';
import { TRANSPORT_DEFAULTS } from '../diffusion/index.js';
import type { GeneratorKind } from '../train/sit.js';
import { GENERATOR_TRAIN_RUN_DEFAULTS, runGeneratorTrain, type GeneratorTrainRunOptions } from '../pipelines/generator.js';
import { device, hubFlags, integer, noneOr, number, precisionFlag, resumeFlags } from './parse.js';

function trainCommand(kind: GeneratorKind): Command {
  const d = GENERATOR_TRAIN_RUN_DEFAULTS;
  const command = precisionFlag(hubFlags(new Command('train'), true), d.precision)
    .description(`train a class-conditional ${kind} on VAE latents (${kind}'s train.py)`)
    .option('--data-path <path>', 'ImageNet-layout image folder, or `fashion-mnist`; encoded with --vae-path at every step')
    .option('--latents-path <dir>', 'a latent cache written by `reals cache-latents` (no VAE runs)')
    .option('--vae-path <dir>', 'diffusers AutoencoderKL folder; or a Hugging Face repo id (owner/name, or owner/name/vae), fetched into the hub cache; its mean_std.json (else config.json scaling_factor) normalizes the latents')
    .option('--results-dir <dir>', 'runs go to <results-dir>/NNN-<model>-...', d.resultsDir)
    .option('--model <name>', `${Object.keys(SIT_CONFIGS).filter((n) => n.startsWith(kind)).join(', ')}, or a .json of SiTConfig fields`, `${kind}-XL/2`)
    .option('--image-size <n>', 'side of the ADM center crop (--data-path folders)', integer(8), d.imageSize)
    .option('--num-classes <n>', 'classes (default: one more than the largest label in the data)', integer(1))
    .option('--epochs <n>', 'epochs to train', integer(1), d.epochs)
    .option('--max-steps <n>', 'stop after this many steps if earlier', integer(1))
    .option('--global-batch-size <n>', 'images per step over all ranks', integer(1), d.globalBatchSize)
    .option('--global-seed <n>', 'rank r seeds with global-seed * world + r', integer(0), d.globalSeed)
    .option('--num-workers <n>', 'image decoding threads (--data-path)', integer(0))
    .option('--log-every <n>', 'steps between loss records (metrics.jsonl, TensorBoard)', integer(1), d.logEvery)
    .option('--ckpt-every <n>', 'steps between checkpoints', integer(1), d.ckptEvery)
    .option('--keep-last <n>', 'keep only the newest n checkpoints', integer(1))
    .option('--lr <lr>', 'AdamW learning rate (weight decay 0)', number(0), 1e-4)
    .option('--ema-decay <d>', 'EMA decay', number(0, 1), 0.9999)
    .option('--cfg-prob <p>', 'probability of training a label as the null class (classifier-free guidance)', number(0, 1), d.cfgProb)
    .option('--resume <path>', 'continue from a checkpoint file, a run folder or its checkpoints folder')
    .option('--no-flip', 'never mirror images (or use a cache\'s mirror images); default: each with probability 1/2')
    .option('--device <device>', 'cpu or cuda[:N] (default: cuda:LOCAL_RANK when available)', device);
  if (kind === 'SiT') {
    command
      .addOption(new Option('--path-type <type>', 'interpolant path').choices(['Linear', 'GVP', 'VP']).default(TRANSPORT_DEFAULTS.pathType))
      .addOption(new Option('--prediction <p>', 'what the network predicts').choices(['velocity', 'score', 'noise']).default(TRANSPORT_DEFAULTS.prediction))
      .option('--loss-weight <w>', 'None, velocity or likelihood', noneOr(['velocity', 'likelihood'] as const), TRANSPORT_DEFAULTS.lossWeight)
      .option('--train-eps <eps>', 'time cut-off for training (default by path)', number(0, 1))
      .option('--sample-eps <eps>', 'time cut-off for sampling (default by path)', number(0, 1));
  }
  return command.action(async (flags: GeneratorTrainRunOptions, self: Command) => {
    const result = await runGeneratorTrain(kind, resumeFlags(self, flags, ['lr', 'emaDecay']));
    if (result.checkpoint !== null) console.log(`done: step ${result.step}, checkpoint ${result.checkpoint}`);
  });
}

export function sitCommand(): Command {
  return new Command('sit').description('SiT: scalable interpolant transformers on latents').addCommand(trainCommand('SiT'));
}

export function ditCommand(): Command {
  return new Command('dit').description('DiT: diffusion transformers on latents').addCommand(trainCommand('DiT'));
}
