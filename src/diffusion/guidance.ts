// Classifier-free guidance as a model for the samplers: the batch runs twice, with its labels and
// with the null class, and the guided channels become uncond + cfgScale (cond - uncond), as
// SiT's and DiT's forward_with_cfg; optionally only inside a guidance interval, outside which the
// model runs once, conditioned and unguided, as REPA's samplers.py (Kynkaanniemi et al. 2024).
// The interval and its time conventions are src/diffusion/interval.ts.
import * as torch from '../torch/index.js';
import type { Tensor } from '../torch/index.js';
import type { Model } from './transport.js';
import { convertTime, guidanceDecider, type GuidanceInterval, type StepGrid } from './interval.js';

/** A class-conditional network, such as SiT and DiT of src/models/sit.ts. */
export interface ConditionalNetwork {
  forward(x: Tensor, t: Tensor, y: Tensor): Tensor;
  readonly config: { readonly numClasses: number; readonly inChannels: number };
  /** The channels the official forward_with_cfg guides (3 in SiT and DiT); 'all' when absent. */
  readonly cfgChannels?: number | 'all';
  readonly training?: boolean;
}

export interface GuidanceOptions {
  cfgScale: number;
  /** Leading output channels to guide, or 'all' (the inChannels of the mean); default network.cfgChannels. */
  channels?: number | 'all';
  /** Default: guide at every time. */
  interval?: GuidanceInterval;
  /**
   * SiT's time of the network's time input (one value per batch). Default: the input itself, as
   * the transport samplers pass; DDPM passes integer timesteps and gives its own map.
   */
  sitTime?: (t: number) => number;
  /**
   * The sampler's fixed grid, so that guidance is decided by step, as REPA does (guidanceDecider):
   * SiT's float32 times, converted, can fall on the other side of an interval end that lies on a
   * grid point (REPA's [0, 0.75] with 28 steps). Default: every time by itself.
   */
  grid?: StepGrid;
}

/**
 * The samplers' Model for a conditional network under classifier-free guidance; modelKwargs.y
 * holds the labels [B]. Inside the interval, the output's guided channels are
 * uncond + cfgScale (cond - uncond) and the rest (a learned variance) are the conditional
 * output's: the first half of forward_with_cfg on the doubled batch. Outside it, the conditional
 * output.
 */
export function guidedModel(network: ConditionalNetwork, options: GuidanceOptions): Model {
  const { cfgScale, interval, sitTime = (t: number) => t } = options;
  const channels = options.channels ?? network.cfgChannels ?? 'all';
  if (!Number.isFinite(cfgScale)) throw new Error(`guidedModel: cfgScale must be a finite number, got ${cfgScale}`);
  if (channels !== 'all' && (!Number.isInteger(channels) || channels < 1)) throw new Error(`guidedModel: channels must be 'all' or a positive integer, got ${String(channels)}`);
  if (interval !== undefined) {
    convertTime(0, 'sit', interval.convention);
    if (!(interval.low <= interval.high)) throw new Error(`guidedModel: the guidance interval needs low <= high, got [${interval.low}, ${interval.high}]`);
  }
  if (options.grid !== undefined && options.grid.sit.length !== options.grid.times.length) {
    throw new Error(`guidedModel: grid.sit has ${options.grid.sit.length} times, grid.times ${options.grid.times.length}`);
  }
  const guidedAt = guidanceDecider(interval, options.grid, sitTime);
  const nullClass = network.config.numClasses;
  return (x, t, modelKwargs) => {
    const y = modelKwargs.y;
    if (!(y instanceof torch.Tensor)) throw new Error('guidedModel: modelKwargs.y must hold the class labels as a tensor');
    const t0 = t.amin().item();
    if (t0 !== t.amax().item()) throw new Error('guidedModel: the guidance interval needs one time for the whole batch');
    // A sampler may evaluate at one time on behalf of a step at another (REPA's Heun corrector).
    const decideAt = typeof modelKwargs.guidanceTime === 'number' ? modelKwargs.guidanceTime : t0;
    if (!guidedAt(decideAt)) return network.forward(x, t, y);
    const n = x.size(0);
    const out = network.forward(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, torch.fullLike(y, nullClass)]));
    const k = channels === 'all' ? network.config.inChannels : channels;
    if (k > out.size(1)) throw new Error(`guidedModel: cannot guide ${k} channels of an output with ${out.size(1)}`);
    const [cond, uncond] = out.split(n, 0) as [Tensor, Tensor];
    const [c, u] = [cond.slice(1, 0, k), uncond.slice(1, 0, k)];
    const guided = u.add(c.sub(u).mul(cfgScale));
    return k === out.size(1) ? guided : torch.cat([guided, cond.slice(1, k)], 1);
  };
}

/**
 * A velocity network trained in REPA's time convention (its forward takes t_repa and predicts
 * dx/dt_repa on the Linear or cosine path) as a network in SiT's: t_repa = 1 - t_sit and the
 * velocity changes sign. With it the SiT samplers run REPA checkpoints.
 */
export function fromRepaTime(network: ConditionalNetwork): ConditionalNetwork {
  return {
    config: network.config,
    cfgChannels: network.cfgChannels,
    get training() { return network.training; },
    forward: (x, t, y) => network.forward(x, t.rsub(1), y).neg(),
  };
}
