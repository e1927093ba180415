// `reals sample ode|sde` (SiT) and `reals sample ddpm|ddim` (DiT): SiT's and DiT's sample_ddp.py
// (src/train/sit.ts sampleImages does the work): one PNG per sample, one ADM .npz, a grid image;
// under `reals launch` the ranks share the batches. The checkpoint is one of ours (its config,
// normalization and transport are read from it) or an official .pt file (--model and
// --image-size say which network, the VAE folder how its latents are normalized).
import { basename } from 'node:path';
import { Command, Option } from 'commander';
import * as torch from '../torch/index.js';
import type { LastStep } from '../diffusion/index.js';
import { checkWritableDir } from '../io/index.js';
import type { DiffusionForm, LossWeight, OdeMethod, PathType, Prediction, SdeMethod, TransportConfig } from '../diffusion/index.js';
import { loadGenerator, sampleImages } from '../train/sit.js';
import { describeNormalization, latentNormalization } from '../train/latents.js';
import { SIT_CONFIGS } from '../models/sit.js';
import { integer, latentSize, loadVae, noneOr, number, resolveGeneratorSpec } from './sit.js';

type Mode = 'ode' | 'sde' | 'ddpm' | 'ddim';

const KIND = { ode: 'SiT', sde: 'SiT', ddpm: 'DiT', ddim: 'DiT' } as const;

interface SampleFlags {
  model: string;
  ckpt: string;
  vaePath: string;
  sampleDir: string;
  perProcBatchSize: number;
  numFidSamples: number;
  imageSize: number;
  numClasses: number;
  cfgScale: number;
  cfgChannels?: number | 'all';
  guidanceLow: number;
  guidanceHigh: number;
  numSamplingSteps: number;
  globalSeed: number;
  weights: 'ema' | 'model';
  pathType?: PathType;
  prediction?: Prediction;
  lossWeight?: LossWeight;
  trainEps?: number;
  sampleEps?: number;
  samplingMethod?: string;
  /** ode */
  atol?: number;
  rtol?: number;
  reverse?: boolean;
  /** sde */
  diffusionForm?: DiffusionForm;
  diffusionNorm?: number;
  lastStep?: LastStep;
  lastStepSize?: number;
  device?: string;
}

function cfgChannels(value: string): number | 'all' {
  return value === 'all' ? 'all' : integer(1)(value);
}

/** Python's str(float): 4.0 → "4.0", as sample_ddp.py's folder names print the flags. */
function pyFloat(value: number): string { return Number.isInteger(value) ? value.toFixed(1) : String(value); }

/** sample_ddp.py's folder name for the samples. */
export function sampleFolderName(mode: Mode, flags: SampleFlags, method: string): string {
  const model = flags.model.endsWith('.json') ? basename(flags.model, '.json') : flags.model.replaceAll('/', '-');
  const ckpt = basename(flags.ckpt).replace('.pt', '').replace('.safetensors', '');
  const head = `${model}-${ckpt}-cfg-${pyFloat(flags.cfgScale)}-${flags.perProcBatchSize}-${mode.toUpperCase()}-${flags.numSamplingSteps}`;
  if (mode === 'ddpm' || mode === 'ddim') return head;
  return mode === 'ode' ? `${head}-${method}` : `${head}-${method}-${flags.diffusionForm}-${flags.lastStep ?? 'None'}-${pyFloat(flags.lastStepSize!)}`;
}

async function runSample(mode: Mode, flags: SampleFlags): Promise<void> {
  if (flags.cfgScale < 1) throw new Error(`--cfg-scale ${flags.cfgScale}: must be at least 1 (1 samples without guidance)`);
  if (flags.guidanceLow > flags.guidanceHigh) throw new Error(`--guidance-low ${flags.guidanceLow} is above --guidance-high ${flags.guidanceHigh}`);
  // Before any model loads: an output folder that cannot be made fails now, in a few system calls.
  checkWritableDir(flags.sampleDir, '--sample-dir');
  const method = flags.samplingMethod ?? (mode === 'ode' ? 'dopri5' : mode === 'sde' ? 'Euler' : mode);
  const odeMethods = ['euler', 'heun2', 'heun-repa', 'dopri5'];
  if (mode === 'ode' && !odeMethods.includes(method)) throw new Error(`--sampling-method ${method}: the ODE sampler knows ${odeMethods.join(', ')}`);
  if (mode === 'sde' && !['Euler', 'Heun'].includes(method)) throw new Error(`--sampling-method ${method}: the SDE sampler knows Euler, Heun`);
  // Everything is loaded and checked before the process group starts or any sample is drawn.
  const vae = loadVae(flags.vaePath);
  const expected = resolveGeneratorSpec(flags.model, KIND[mode], {
    inputSize: latentSize(vae, flags.imageSize), inChannels: vae.config.latentChannels, numClasses: flags.numClasses, classDropoutProb: 0.1,
  });
  const loaded = loadGenerator(flags.ckpt, { spec: expected, weights: flags.weights });
  const normalization = loaded.normalization ?? latentNormalization(flags.vaePath, vae);
  if (loaded.normalization !== null) {
    const own = (() => { try { return latentNormalization(flags.vaePath, vae); } catch { return null; } })();
    if (own !== null && JSON.stringify(own) !== JSON.stringify(loaded.normalization)) {
      console.warn(`note: ${flags.ckpt} was trained on latents normalized by ${describeNormalization(loaded.normalization)}; ` +
        `using that, not --vae-path's ${describeNormalization(own)}`);
    }
  }
  const saved: Partial<TransportConfig> = loaded.transport ?? {};
  const transport: Partial<TransportConfig> = {
    pathType: flags.pathType ?? saved.pathType, prediction: flags.prediction ?? saved.prediction,
    lossWeight: flags.lossWeight !== undefined ? flags.lossWeight : saved.lossWeight, trainEps: flags.trainEps ?? saved.trainEps,
    sampleEps: flags.sampleEps ?? saved.sampleEps,
  };
  const worldSize = torch.distributed.launchedWorldSize();
  if (worldSize > 1) torch.distributed.initProcessGroup();
  try {
    await sampleImages({
      model: loaded.model, vae, normalization, method: mode, numSamples: flags.numFidSamples, batchSize: flags.perProcBatchSize,
      seed: flags.globalSeed, sampleDir: `${flags.sampleDir}/${sampleFolderName(mode, flags, method)}`, steps: flags.numSamplingSteps,
      cfgScale: flags.cfgScale, cfgChannels: flags.cfgChannels, guidanceLow: flags.guidanceLow, guidanceHigh: flags.guidanceHigh, transport, device: flags.device,
      ...(mode === 'ode'
        ? { ode: { samplingMethod: method as OdeMethod, atol: flags.atol, rtol: flags.rtol, reverse: flags.reverse } }
        : mode === 'ddpm' || mode === 'ddim' ? {} : {
          sde: {
            samplingMethod: method as SdeMethod, diffusionForm: flags.diffusionForm, diffusionNorm: flags.diffusionNorm,
            lastStep: flags.lastStep, lastStepSize: flags.lastStepSize,
          },
        }),
    });
  } finally {
    if (worldSize > 1) torch.distributed.destroyProcessGroup();
  }
}

const DESCRIPTIONS: Record<Mode, string> = {
  ode: 'sample a SiT with the probability-flow ODE', sde: 'sample a SiT with the reverse SDE',
  ddpm: 'sample a DiT with DDPM (its learned variance)', ddim: 'sample a DiT with DDIM (eta 0)',
};

function modeCommand(mode: Mode): Command {
  const kind = KIND[mode];
  const command = new Command(mode)
    .description(DESCRIPTIONS[mode])
    .option('--model <name>', `${Object.keys(SIT_CONFIGS).filter((n) => n.startsWith(kind)).join(', ')}, or a .json of SiTConfig fields (official checkpoints)`, `${kind}-XL/2`)
    .requiredOption('--ckpt <file>', `a reals checkpoint (.safetensors) or an official ${kind} .pt (state dict or {model, ema, ...})`)
    .requiredOption('--vae-path <dir>', 'diffusers AutoencoderKL folder that decodes the latents')
    .option('--sample-dir <dir>', 'samples go to <sample-dir>/<run name>/, with <run name>.npz and .png beside it', 'samples')
    .option('--per-proc-batch-size <n>', 'samples per batch per rank', integer(1), 4)
    .option('--num-fid-samples <n>', 'samples in the .npz', integer(1), 50_000)
    .option('--image-size <n>', 'image side (official checkpoints: the latent side is this / the VAE\'s factor)', integer(8), 256)
    .option('--num-classes <n>', 'classes (official checkpoints)', integer(1), 1000)
    .option('--cfg-scale <s>', 'classifier-free guidance scale (1: none)', number(1), 1.0)
    .option('--cfg-channels <n>', 'leading channels to guide, or `all` (REPA); default the official 3', cfgChannels)
    .option('--guidance-low <t>', 'guidance applies for REPA times t in [low, high] (t = 1 noise)', number(0, 1), 0)
    .option('--guidance-high <t>', 'upper end of the guidance interval', number(0, 1), 1)
    .option('--num-sampling-steps <n>', kind === 'SiT' ? 'time grid points' : 'respaced diffusion steps', integer(2), 250)
    .option('--global-seed <n>', 'rank r seeds with global-seed * world + r', integer(0), 0)
    .addOption(new Option('--weights <w>', 'which weights of a training checkpoint').choices(['ema', 'model']).default('ema'))
    .option('--device <device>', 'cpu or cuda[:N] (default: cuda:LOCAL_RANK when available)');
  if (kind === 'SiT') {
    command
      .addOption(new Option('--path-type <type>', 'interpolant path (default: the checkpoint\'s, else Linear)').choices(['Linear', 'GVP', 'VP']))
      .addOption(new Option('--prediction <p>', 'what the network predicts (default: the checkpoint\'s, else velocity)').choices(['velocity', 'score', 'noise']))
      .option('--loss-weight <w>', 'None, velocity or likelihood', noneOr(['velocity', 'likelihood'] as const))
      .option('--train-eps <eps>', 'training time cut-off', number(0, 1))
      .option('--sample-eps <eps>', 'sampling time cut-off', number(0, 1));
  }
  if (mode === 'ode') {
    command
      .option('--sampling-method <m>', 'euler, heun2 (torchdiffeq\'s, as SiT), heun-repa (REPA\'s Heun: no corrector on the last step, the corrector guided as its step) or dopri5', 'dopri5')
      .option('--atol <tol>', 'absolute tolerance (dopri5)', number(0), 1e-6)
      .option('--rtol <tol>', 'relative tolerance (dopri5)', number(0), 1e-3)
      .option('--reverse', 'integrate from data to noise', false);
  } else if (mode === 'sde') {
    command
      .option('--sampling-method <m>', 'Euler or Heun', 'Euler')
      .addOption(new Option('--diffusion-form <f>', 'diffusion coefficient of the SDE')
        .choices(['constant', 'SBDM', 'sigma', 'linear', 'decreasing', 'increasing-decreasing']).default('sigma'))
      .option('--diffusion-norm <n>', 'scale of the diffusion coefficient', number(0), 1.0)
      .option('--last-step <s>', 'None, Mean, Tweedie or Euler', noneOr(['Mean', 'Tweedie', 'Euler'] as const), 'Mean')
      .option('--last-step-size <h>', 'size of the last step', number(0, 1), 0.04);
  }
  return command.action(async (flags: SampleFlags) => {
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
