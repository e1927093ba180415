// One front end for sampling latents from a class-conditional SiT or DiT, shared by the CLI and
// the evaluator: seed, draw the starting noise, wrap the network in classifier-free guidance,
// and run the chosen sampler (SiT's ODE or SDE, or DiT's DDPM or DDIM).
import * as torch from '../torch/index.js';
import type { Tensor } from '../torch/index.js';
import { guidedModel, type ConditionalNetwork } from './guidance.js';
import type { TimeConvention } from './interval.js';
import { createDiffusion, type CreateDiffusionOptions } from './gaussian-diffusion.js';
import { Sampler, type OdeSamplerOptions, type SdeSamplerOptions } from './sampler.js';
import { createTransport, type Model, type TransportConfig } from './transport.js';

export type GenerateMethod = 'ode' | 'sde' | 'ddpm' | 'ddim';

export interface GenerateOptions {
  /** A SiT (ode, sde) or a DiT with its learned variance (ddpm, ddim), in eval mode. */
  model: ConditionalNetwork;
  /** One class label per sample. */
  labels: Tensor | readonly number[];
  /** The shape of one latent, [C, H, W]. */
  shape: readonly number[];
  seed: number;
  method: GenerateMethod;
  /**
   * --num-sampling-steps, default 250 as SiT's and DiT's sample.py. ode/sde: the points of SiT's
   * time grid (REPA's N Euler steps are N + 1 points); ddpm/ddim: the respaced number of steps.
   */
  steps?: number;
  /** Guidance scale; at most 1 runs the conditional model alone, as the sample_ddp.py scripts and REPA. Default 1. */
  cfgScale?: number;
  /** Channels to guide; default the network's cfgChannels (the official code's 3 for 4 latent channels, else all). REPA guides 'all'. */
  cfgChannels?: number | 'all';
  /** The guidance interval [guidanceLow, guidanceHigh], default [0, 1], in guidanceConvention's time. */
  guidanceLow?: number;
  guidanceHigh?: number;
  /**
   * 'repa' (default, as REPA's --guidance-low/--guidance-high: t = 1 noise, t = 0 data) or 'sit'
   * (t = 0 noise). DDPM step k (of the original T) is at REPA time k / T.
   */
  guidanceConvention?: TimeConvention;
  /** ode/sde: the transport the model was trained with (default Linear, velocity). */
  transport?: Partial<TransportConfig>;
  /** Default SiT's: dopri5, atol 1e-6, rtol 1e-3. */
  ode?: Omit<OdeSamplerOptions, 'numSteps'>;
  /** Default SiT's sample.py: Euler, 'sigma' diffusion of norm 1, a 'Mean' last step of 0.04. */
  sde?: Omit<SdeSamplerOptions, 'numSteps'>;
  /** ddpm/ddim: create_diffusion's options except the respacing (default DiT's). */
  diffusion?: Omit<CreateDiffusionOptions, 'timestepRespacing'>;
  /** ddim: 0 (default) is deterministic. */
  eta?: number;
  device?: torch.Device;
  /**
   * The network under bfloat16 autocast ('bf16'), or not ('fp32', default); 'auto' picks bf16 on
   * CUDA and bfloat16-capable CPUs. The sampler's state, its updates and the guidance stay float32.
   */
  precision?: torch.Precision;
}

const METHODS: readonly GenerateMethod[] = ['ode', 'sde', 'ddpm', 'ddim'];

/**
 * `network` with its outputs in float32, for samplers running it under autocast (whose outputs
 * are bfloat16); the network itself when no autocast runs.
 */
export function floatOutputs(network: ConditionalNetwork, precision: torch.ResolvedPrecision): ConditionalNetwork {
  if (precision === 'fp32') return network;
  return {
    config: network.config,
    cfgChannels: network.cfgChannels,
    get training() { return network.training; },
    forward: (x, t, y) => network.forward(x, t, y).float(),
  };
}

/**
 * Latents [B, ...shape] for the labels. Deterministic for a seed: torch.manualSeed(seed), then
 * the starting noise torch.randn([B, ...shape]) on the CPU, then the sampler's own draws in its
 * order. With guidance, each sample's batch runs next to its null-class copy inside the
 * interval, so the SDE and DDPM noise is drawn for B samples (SiT's and DiT's sample.py double
 * the whole batch and draw for 2B: their fixed-step ODE samples are reproduced; their stochastic
 * ones, and dopri5's (whose step-size control then sees a batch of B, not 2B), are not. The
 * `reals sample` path (src/sampling/sample.ts) doubles the batch as the reference does.
 */
export function generateLatents(options: GenerateOptions): Tensor {
  const { seed, method, cfgScale = 1, guidanceLow = 0, guidanceHigh = 1, guidanceConvention = 'repa', device = 'cpu' } = options;
  if (!METHODS.includes(method)) throw new Error(`generateLatents: method must be one of ${METHODS.join(', ')}, got '${method as string}'`);
  if (options.model.training) throw new Error('generateLatents: the model is in training mode (labels would be dropped at random); call eval() first');
  if (!Number.isInteger(seed)) throw new Error(`generateLatents: seed must be an integer, got ${seed}`);
  const diffusionSteps = options.diffusion?.diffusionSteps ?? 1000;
  const ddpm = method === 'ddpm' || method === 'ddim';
  const steps = options.steps ?? 250;
  const precision = torch.usePrecision(options.precision ?? 'fp32', device);
  const network = floatOutputs(options.model, precision);
  // One autocast region for the whole loop, so that each weight is cast to bfloat16 once.
  return torch.noGrad(() => torch.scope(() => torch.withPrecision(precision, device, () => {
    const y = (options.labels instanceof torch.Tensor ? options.labels : torch.tensor([...options.labels], { dtype: 'int64' })).to(device);
    if (y.ndim !== 1) throw new Error(`generateLatents: labels must be one label per sample, got shape [${y.shape}]`);
    torch.manualSeed(seed);
    const z = torch.randn([y.size(0), ...options.shape]).to(device);
    const sampler = ddpm ? null : new Sampler(createTransport(options.transport));
    const odeOptions = { ...options.ode, numSteps: steps };
    const sdeOptions = { diffusionForm: 'sigma' as const, ...options.sde, numSteps: steps };
    const model: Model = cfgScale > 1
      ? guidedModel(network, {
        cfgScale,
        channels: options.cfgChannels,
        interval: { low: guidanceLow, high: guidanceHigh, convention: guidanceConvention },
        sitTime: ddpm ? (k) => 1 - k / diffusionSteps : undefined,
        // By step, on the reference's float64 grid (REPA's), where the sampler has a fixed grid.
        grid: sampler === null ? undefined : method === 'ode' ? sampler.stepTimes('ode', odeOptions, guidanceConvention) : sampler.stepTimes('sde', sdeOptions, guidanceConvention),
      })
      : (x, t, kwargs) => network.forward(x, t, kwargs.y as Tensor);
    const modelKwargs = { y };
    switch (method) {
      case 'ode': case 'sde': {
        const sample = method === 'ode' ? sampler!.sampleOde(odeOptions) : sampler!.sampleSde(sdeOptions);
        const { samples } = sample(z, model, modelKwargs);
        return samples[samples.length - 1]!;
      }
      case 'ddpm': case 'ddim': {
        const diffusion = createDiffusion({ ...options.diffusion, timestepRespacing: String(steps) });
        // Latents are not images in [-1, 1]: no clipping, as DiT's sample.py.
        const loop = { noise: z, clipDenoised: false, modelKwargs };
        return method === 'ddpm' ? diffusion.pSampleLoop(model, z.shape, loop) : diffusion.ddimSampleLoop(model, z.shape, { ...loop, eta: options.eta ?? 0 });
      }
    }
  })));
}
