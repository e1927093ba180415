// `reals sample ode|sde` (SiT) and `reals sample ddpm|ddim` (DiT): SiT's and DiT's sample_ddp.py
// flags (src/pipelines/sample.ts runSample does the work): one PNG per sample, one ADM
// .npz, a grid image; under `reals launch` the ranks share the batches. The checkpoint is one of
// ours (its config, normalization and transport are read from it) or an official .pt file
// (--model and --image-size say which network, the VAE folder how its latents are normalized).
import { Command, Option } from 'commander';
import { SIT_CONFIGS } from '../models/sit.js';
import { LABEL_SAMPLINGS } from '../sampling/labels.js';
import { OFFICIAL_CHECKPOINT_DEFAULTS, SAMPLE_BACKENDS, SAMPLE_METHOD_DEFAULTS, SAMPLE_MODE_KIND, SAMPLE_RUN_DEFAULTS, runSample, type SampleMode, type SampleRunOptions } from '../pipelines/sample.js';
import { allowVaeMismatchFlag, cfgChannels, device, hubFlags, integer, noneOr, number, precisionFlag } from './parse.js';

const DESCRIPTIONS: Record<SampleMode, string> = {
  ode: 'sample a SiT with the probability-flow ODE', sde: 'sample a SiT with the reverse SDE',
  ddpm: 'sample a DiT with DDPM (its learned variance)', ddim: 'sample a DiT with DDIM (eta 0)',
};

function modeCommand(mode: SampleMode): Command {
  const kind = SAMPLE_MODE_KIND[mode];
  const d = SAMPLE_RUN_DEFAULTS;
  // ODE and SDE as SiT's sample.py spells its mode argument.
  const command = allowVaeMismatchFlag(precisionFlag(hubFlags(new Command(mode).alias(mode.toUpperCase()), true), d.precision))
    .description(DESCRIPTIONS[mode])
    .option('--model <name>', `${Object.keys(SIT_CONFIGS).filter((n) => n.startsWith(kind)).join(', ')}, or a .json of SiTConfig fields (default: what a reals checkpoint records; an official file: ${OFFICIAL_CHECKPOINT_DEFAULTS.model[kind]})`)
    .requiredOption('--ckpt <file>', `a reals checkpoint (.safetensors), an official ${kind} .pt (state dict or {model, ema, ...}), or a published name (${kind === 'SiT' ? 'SiT-XL-2-256x256.pt' : 'DiT-XL-2-256x256.pt, DiT-XL-2-512x512.pt'}), fetched into pretrained_models/ as its download.py does`)
    .requiredOption('--vae-path <dir>', 'diffusers AutoencoderKL folder that decodes the latents; or a Hugging Face repo id (owner/name, or owner/name/vae), fetched into the hub cache')
    .option('--sample-dir <dir>', 'samples go to <sample-dir>/<run name>/, with <run name>.npz and .png beside it', d.sampleDir)
    .option('--per-proc-batch-size <n>', 'samples per batch per rank', integer(1), d.perProcBatchSize)
    .option('--num-fid-samples <n>', 'samples in the .npz', integer(1), d.numFidSamples)
    .option('--image-size <n>', `image side; the latent side is this / the VAE's factor (default: a reals checkpoint's; an official file: ${OFFICIAL_CHECKPOINT_DEFAULTS.imageSize})`, integer(8))
    .option('--num-classes <n>', `classes (default: a reals checkpoint's; an official file: ${OFFICIAL_CHECKPOINT_DEFAULTS.numClasses})`, integer(1))
    .option('--cfg-scale <s>', 'classifier-free guidance scale (1: none)', number(1), d.cfgScale)
    .option('--cfg-channels <n>', 'leading channels to guide, or `all` (REPA); default the official 3 for 4 latent channels, all for other widths', cfgChannels)
    .option('--guidance-low <t>', 'guidance applies for REPA times t in [low, high] (t = 1 noise)', number(0, 1), d.guidanceLow)
    .option('--guidance-high <t>', 'upper end of the guidance interval', number(0, 1), d.guidanceHigh)
    .option('--num-sampling-steps <n>', kind === 'SiT' ? 'time grid points' : 'respaced diffusion steps', integer(2), d.numSamplingSteps)
    .option('--global-seed <n>', 'rank r seeds with global-seed * world + r', integer(0), d.globalSeed)
    .addOption(new Option('--label-sampling <how>', 'balanced: labels cycle through the classes (REPA-E\'s class-balanced protocol); ' +
      'random: torch.randint per batch from its seed, as SiT\'s sample_ddp.py (recorded in sampling.json)').choices([...LABEL_SAMPLINGS]).default(d.labelSampling))
    .addOption(new Option('--weights <w>', 'which weights of a training checkpoint').choices(['ema', 'model']).default(d.weights))
    .option('--device <device>', 'cpu or cuda[:N] (default: cuda:LOCAL_RANK when available)', device);
  if (kind === 'SiT') {
    command
      .addOption(new Option('--path-type <type>', 'interpolant path (default: the checkpoint\'s, else Linear)').choices(['Linear', 'GVP', 'VP']))
      .addOption(new Option('--prediction <p>', 'what the network predicts (default: the checkpoint\'s, else velocity)').choices(['velocity', 'score', 'noise']))
      .option('--loss-weight <w>', 'None, velocity or likelihood', noneOr(['velocity', 'likelihood'] as const))
      .option('--train-eps <eps>', 'training time cut-off', number(0, 1))
      .option('--sample-eps <eps>', 'sampling time cut-off', number(0, 1));
  }
  if (mode === 'ode' || mode === 'sde') {
    command.addOption(new Option('--backend <b>', 'libtorch, or onnxruntime: the graphs exported in memory and run by onnxruntime-node on the CPU (ODE euler and heun2, SDE Euler)')
      .choices([...SAMPLE_BACKENDS]).default('libtorch'));
  }
  if (mode === 'ode') {
    command
      .option('--sampling-method <m>', 'euler, heun2 (torchdiffeq\'s, as SiT), heun-repa (REPA\'s Heun: no corrector on the last step, the corrector guided as its step) or dopri5', SAMPLE_METHOD_DEFAULTS.ode)
      .option('--atol <tol>', 'absolute tolerance (dopri5)', number(0), d.atol)
      .option('--rtol <tol>', 'relative tolerance (dopri5)', number(0), d.rtol)
      .option('--reverse', 'integrate from data to noise', d.reverse);
  } else if (mode === 'sde') {
    command
      .option('--sampling-method <m>', 'Euler or Heun', SAMPLE_METHOD_DEFAULTS.sde)
      .addOption(new Option('--diffusion-form <f>', 'diffusion coefficient of the SDE')
        .choices(['constant', 'SBDM', 'sigma', 'linear', 'decreasing', 'increasing-decreasing']).default(d.diffusionForm))
      .option('--diffusion-norm <n>', 'scale of the diffusion coefficient', number(0), d.diffusionNorm)
      .option('--last-step <s>', 'None, Mean, Tweedie or Euler', noneOr(['Mean', 'Tweedie', 'Euler'] as const), d.lastStep)
      .option('--last-step-size <h>', 'size of the last step', number(0, 1), d.lastStepSize);
  }
  return command.action(async (flags: SampleRunOptions) => {
    await runSample(mode, flags);
  });
}

export function sampleCommand(): Command {
  return new Command('sample')
    .description('sample images from a SiT or DiT checkpoint into PNGs, an ADM .npz and a grid (sample_ddp.py)')
    .addCommand(modeCommand('ode'))
    .addCommand(modeCommand('sde'))
    .addCommand(modeCommand('ddpm'))
    .addCommand(modeCommand('ddim'));
}
