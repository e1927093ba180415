// diffusers' AutoencoderKL, the VAE of Stable Diffusion and of ReaLS: models/autoencoders/
// autoencoder_kl.py with vae.py's Encoder, Decoder and DiagonalGaussianDistribution, resnet.py's
// ResnetBlock2D, downsampling.py's Downsample2D, upsampling.py's Upsample2D, and unet_2d_blocks.py's
// DownEncoderBlock2D, UpDecoderBlock2D and UNetMidBlock2D (with its single-head Attention from
// attention_processor.py). State-dict keys are diffusers' keys, and a folder is diffusers'
// (config.json + diffusion_pytorch_model.safetensors or .bin) plus ReaLS's mean_std.json.
// One file past 500 lines, as STYLE's rule for models: the network reads top to bottom like diffusers' files.
import { existsSync, rmSync } from 'node:fs';
import { makeDirs } from '../io/file.js';
import { join } from 'node:path';
import { z } from 'zod';
import * as torch from '../torch/index.js';
import type { Tensor } from '../torch/index.js';
import * as nn from '../nn/index.js';
import { F } from '../nn/index.js';
import type { Dim, OnnxGraph, Value } from '../onnx/graph.js';
import { autoencoderKLParameters, checkWeightsFit } from './config-sizes.js';
import { attention as onnxAttention, childPath, exportModule, registerExporter, silu as onnxSilu } from '../onnx/modules.js';
import {
  CONFIG_NAME, loadDiffusersWeights, readJsonFile, saveDiffusersWeights, writeJsonFileAtomic,
} from '../io/diffusers.js';

// --- config ----------------------------------------------------------------------------------

const positiveInt = z.number().int().positive();
/** Bounds that refuse an absurd size by name before any tensor is allocated (SD's VAE: 512 channels, 4 blocks, 2 layers). */
const channels = positiveInt.max(16384);

/** The constructor arguments of diffusers' AutoencoderKL, camelCased, with its defaults. */
const configSchema = z.object({
  inChannels: channels.default(3),
  outChannels: channels.default(3),
  downBlockTypes: z.array(z.literal('DownEncoderBlock2D')).min(1).default(() => ['DownEncoderBlock2D' as const]),
  upBlockTypes: z.array(z.literal('UpDecoderBlock2D')).min(1).default(() => ['UpDecoderBlock2D' as const]),
  blockOutChannels: z.array(channels).min(1).max(16).default(() => [64]),
  layersPerBlock: positiveInt.max(64).default(1),
  // diffusers' get_activation also knows mish, gelu and relu; no published VAE uses them.
  actFn: z.enum(['silu', 'swish']).default('silu'),
  latentChannels: channels.default(4),
  normNumGroups: channels.default(32),
  /** Only tiled decoding reads it in diffusers; kept so a folder round-trips. */
  sampleSize: z.union([positiveInt, z.tuple([positiveInt, positiveInt])]).default(32),
  /** Latents for a diffusion model are (z - shiftFactor) * scalingFactor (see normalizeLatents). */
  scalingFactor: z.number().positive().default(0.18215),
  shiftFactor: z.number().nullable().default(null),
  /** Per-channel latent statistics that SDXL-style pipelines apply with scalingFactor. */
  latentsMean: z.array(z.number()).nullable().default(null),
  latentsStd: z.array(z.number().positive()).nullable().default(null),
  /** Read by diffusers' pipelines (run the VAE in float32), not by the model. */
  forceUpcast: z.boolean().default(true),
  useQuantConv: z.boolean().default(true),
  usePostQuantConv: z.boolean().default(true),
  midBlockAddAttention: z.boolean().default(true),
}).superRefine((c, ctx) => {
  // Messages name no other field: parseConfig names fields in the caller's spelling.
  const blocks = c.blockOutChannels.length;
  for (const field of ['downBlockTypes', 'upBlockTypes'] as const) {
    if (c[field].length !== blocks) {
      ctx.addIssue({ code: 'custom', path: [field], message: `has ${c[field].length} entries, expected ${blocks} (one per block)` });
    }
  }
  c.blockOutChannels.forEach((channels, i) => {
    if (channels % c.normNumGroups !== 0) {
      ctx.addIssue({ code: 'custom', path: ['blockOutChannels', i], message: `${channels} channels do not split into ${c.normNumGroups} groups` });
    }
  });
  for (const field of ['latentsMean', 'latentsStd'] as const) {
    const values = c[field];
    if (values !== null && values.length !== c.latentChannels) {
      ctx.addIssue({ code: 'custom', path: [field], message: `has ${values.length} entries, expected one per latent channel (${c.latentChannels})` });
    }
  }
  if ((c.latentsMean === null) !== (c.latentsStd === null)) {
    ctx.addIssue({ code: 'custom', path: [c.latentsMean === null ? 'latentsMean' : 'latentsStd'], message: 'is missing while its mean/std counterpart is given' });
  }
});

export type AutoencoderKLConfig = z.output<typeof configSchema>;

const snakeCase = (name: string): string => name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
const camelCase = (name: string): string => name.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());

/** Validates `fields`; the error lists every bad field, named by `name` (config.json uses snake_case). */
function parseConfig(fields: unknown, where: string, name: (field: string) => string): AutoencoderKLConfig {
  const parsed = configSchema.safeParse(fields);
  if (parsed.success) return parsed.data;
  const issues = parsed.error.issues.map((issue) => {
    const path = issue.path.map((p) => (typeof p === 'string' ? name(p) : String(p))).join('.');
    return `${path}: ${issue.message}`;
  });
  throw new Error(`${where}: invalid AutoencoderKL config: ${issues.join('; ')}`);
}

/**
 * A config from a diffusers config.json object, missing fields taking diffusers' defaults and
 * unknown fields ignored, as diffusers' from_config does. Errors name the file and the field.
 */
export function configFromDiffusers(json: unknown, file = CONFIG_NAME): AutoencoderKLConfig {
  if (json === null || typeof json !== 'object' || Array.isArray(json)) throw new Error(`${file}: expected a JSON object`);
  const entries = Object.entries(json as Record<string, unknown>);
  const className = (json as Record<string, unknown>)._class_name;
  if (className !== undefined && className !== 'AutoencoderKL') {
    throw new Error(`${file}: _class_name is ${JSON.stringify(className)}, expected "AutoencoderKL"`);
  }
  const fields = Object.fromEntries(entries.filter(([key]) => !key.startsWith('_')).map(([key, value]) => [camelCase(key), value]));
  const config = parseConfig(fields, file, snakeCase);
  checkWeightsFit(file, autoencoderKLParameters(config));
  return config;
}

/**
 * The config.json object diffusers writes for `config`: snake_case keys, sorted, with
 * `_class_name` and `_diffusers_version` (0.29.0, the first release that reads every field).
 */
export function configToDiffusers(config: AutoencoderKLConfig): Record<string, unknown> {
  const json: Record<string, unknown> = { _class_name: 'AutoencoderKL', _diffusers_version: '0.29.0' };
  for (const [key, value] of Object.entries(config)) json[snakeCase(key)] = value;
  return Object.fromEntries(Object.entries(json).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

// --- mean_std.json ---------------------------------------------------------------------------

export const MEAN_STD_NAME = 'mean_std.json';

/** ReaLS's per-channel latent statistics over the training images: mean_std.json. */
export interface LatentStats { mean: number[]; std: number[] }

const latentStatsSchema = z.object({ mean: z.array(z.number()), std: z.array(z.number().positive()) });

function parseLatentStats(json: unknown, file: string, latentChannels: number): LatentStats {
  const parsed = latentStatsSchema.safeParse(json);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((issue) => `${issue.path.join('.')}: ${issue.message}`);
    throw new Error(`${file}: expected {"mean": [${latentChannels} numbers], "std": [${latentChannels} positive numbers]}: ${issues.join('; ')}`);
  }
  for (const field of ['mean', 'std'] as const) {
    if (parsed.data[field].length !== latentChannels) {
      throw new Error(`${file}: ${field} has ${parsed.data[field].length} entries but latent_channels is ${latentChannels}`);
    }
  }
  return parsed.data;
}

// --- building blocks -------------------------------------------------------------------------

// Every GroupNorm of diffusers' VAE (resnets, attention, conv_norm_out) uses this eps.
const EPS = 1e-6;

/** diffusers' nonlinearity(norm(x)) (SiLU; actFn 'swish' is the same function), fused where the addon's kernel takes it. */
function normSilu(norm: nn.GroupNorm, x: Tensor): Tensor {
  return F.groupNormSilu(x, norm.numGroups, norm.weight, norm.bias, norm.eps);
}

/** resnet.py's ResnetBlock2D as the VAE builds it: no time embedding, dropout 0, output scale 1. */
class ResnetBlock2D extends nn.Module {
  readonly norm1: nn.GroupNorm;
  readonly conv1: nn.Conv2d;
  readonly norm2: nn.GroupNorm;
  readonly conv2: nn.Conv2d;
  readonly convShortcut: nn.Conv2d | null;

  constructor(inChannels: number, outChannels: number, groups: number) {
    super();
    this.norm1 = this.addModule('norm1', new nn.GroupNorm(groups, inChannels, { eps: EPS }));
    this.conv1 = this.addModule('conv1', new nn.Conv2d(inChannels, outChannels, 3, { padding: 1 }));
    this.norm2 = this.addModule('norm2', new nn.GroupNorm(groups, outChannels, { eps: EPS }));
    this.conv2 = this.addModule('conv2', new nn.Conv2d(outChannels, outChannels, 3, { padding: 1 }));
    this.convShortcut = inChannels === outChannels ? null : this.addModule('conv_shortcut', new nn.Conv2d(inChannels, outChannels, 1));
  }

  override forward(input: Tensor): Tensor {
    let hidden = this.conv1.forward(normSilu(this.norm1, input));
    hidden = this.conv2.forward(normSilu(this.norm2, hidden));
    const shortcut = this.convShortcut === null ? input : this.convShortcut.forward(input);
    return shortcut.add(hidden);
  }
}

/** downsampling.py's Downsample2D(use_conv=True, padding=0): a stride-2 3x3 conv. */
class Downsample2D extends nn.Module {
  readonly conv: nn.Conv2d;

  constructor(channels: number) {
    super();
    this.conv = this.addModule('conv', new nn.Conv2d(channels, channels, 3, { stride: 2 }));
  }

  // As diffusers: asymmetric (0, 1, 0, 1) zero padding (right and bottom) before the unpadded conv.
  override forward(input: Tensor): Tensor { return this.conv.forward(F.pad(input, [0, 1, 0, 1])); }
}

/** upsampling.py's Upsample2D(use_conv=True): nearest 2x, then a 3x3 conv. */
class Upsample2D extends nn.Module {
  readonly conv: nn.Conv2d;

  constructor(channels: number) {
    super();
    this.conv = this.addModule('conv', new nn.Conv2d(channels, channels, 3, { padding: 1 }));
  }

  override forward(input: Tensor): Tensor {
    return this.conv.forward(F.interpolate(input, { scaleFactor: 2, mode: 'nearest' }));
  }
}

/**
 * attention_processor.py's Attention as UNetMidBlock2D builds it for the VAE: self-attention over
 * the H*W positions with one head of all channels (attention_head_dim = channels), GroupNorm
 * first, a residual connection, rescale_output_factor 1. to_out.1 is a parameterless Dropout(0).
 */
class Attention extends nn.Module {
  readonly groupNorm: nn.GroupNorm;
  readonly toQ: nn.Linear;
  readonly toK: nn.Linear;
  readonly toV: nn.Linear;
  readonly toOut: nn.ModuleList<nn.Linear>;

  constructor(channels: number, groups: number) {
    super();
    this.groupNorm = this.addModule('group_norm', new nn.GroupNorm(groups, channels, { eps: EPS }));
    this.toQ = this.addModule('to_q', new nn.Linear(channels, channels));
    this.toK = this.addModule('to_k', new nn.Linear(channels, channels));
    this.toV = this.addModule('to_v', new nn.Linear(channels, channels));
    this.toOut = this.addModule('to_out', new nn.ModuleList([new nn.Linear(channels, channels)]));
  }

  override forward(input: Tensor): Tensor {
    const [batch, channels, height, width] = input.shape as [number, number, number, number];
    const hidden = this.groupNorm.forward(input.view(batch, channels, height * width)).transpose(1, 2);
    const attended = F.scaledDotProductAttention(this.toQ.forward(hidden), this.toK.forward(hidden), this.toV.forward(hidden));
    return this.toOut.at(0).forward(attended).transpose(1, 2).reshape(batch, channels, height, width).add(input);
  }
}

/** unet_2d_blocks.py's UNetMidBlock2D (num_layers 1): resnet, [attention], resnet. */
class UNetMidBlock2D extends nn.Module {
  readonly attentions: nn.ModuleList<Attention>;
  readonly resnets: nn.ModuleList<ResnetBlock2D>;

  constructor(channels: number, groups: number, addAttention: boolean) {
    super();
    // Registered before the resnets, as diffusers does, so stateDict() lists keys in its order.
    this.attentions = this.addModule('attentions', new nn.ModuleList(addAttention ? [new Attention(channels, groups)] : []));
    this.resnets = this.addModule('resnets', new nn.ModuleList([
      new ResnetBlock2D(channels, channels, groups), new ResnetBlock2D(channels, channels, groups),
    ]));
  }

  override forward(input: Tensor): Tensor {
    let hidden = this.resnets.at(0).forward(input);
    for (const attention of this.attentions) hidden = attention.forward(hidden);
    return this.resnets.at(1).forward(hidden);
  }
}

/** DownEncoderBlock2D: `numLayers` resnets, then a Downsample2D unless it is the last block. */
class DownEncoderBlock2D extends nn.Module {
  readonly resnets: nn.ModuleList<ResnetBlock2D>;
  readonly downsamplers: nn.ModuleList<Downsample2D> | null;

  constructor(numLayers: number, inChannels: number, outChannels: number, groups: number, addDownsample: boolean) {
    super();
    this.resnets = this.addModule('resnets', new nn.ModuleList(
      Array.from({ length: numLayers }, (_, i) => new ResnetBlock2D(i === 0 ? inChannels : outChannels, outChannels, groups)),
    ));
    this.downsamplers = addDownsample ? this.addModule('downsamplers', new nn.ModuleList([new Downsample2D(outChannels)])) : null;
  }

  override forward(input: Tensor): Tensor {
    let hidden = input;
    for (const resnet of this.resnets) hidden = resnet.forward(hidden);
    for (const downsampler of this.downsamplers ?? []) hidden = downsampler.forward(hidden);
    return hidden;
  }
}

/** UpDecoderBlock2D: `numLayers` resnets, then an Upsample2D unless it is the last block. */
class UpDecoderBlock2D extends nn.Module {
  readonly resnets: nn.ModuleList<ResnetBlock2D>;
  readonly upsamplers: nn.ModuleList<Upsample2D> | null;

  constructor(numLayers: number, inChannels: number, outChannels: number, groups: number, addUpsample: boolean) {
    super();
    this.resnets = this.addModule('resnets', new nn.ModuleList(
      Array.from({ length: numLayers }, (_, i) => new ResnetBlock2D(i === 0 ? inChannels : outChannels, outChannels, groups)),
    ));
    this.upsamplers = addUpsample ? this.addModule('upsamplers', new nn.ModuleList([new Upsample2D(outChannels)])) : null;
  }

  override forward(input: Tensor): Tensor {
    let hidden = input;
    for (const resnet of this.resnets) hidden = resnet.forward(hidden);
    for (const upsampler of this.upsamplers ?? []) hidden = upsampler.forward(hidden);
    return hidden;
  }
}

/** vae.py's Encoder with double_z: image [N, in, H, W] → moments [N, 2 * latent, H / 2^(blocks-1), ...]. */
class Encoder extends nn.Module {
  readonly convIn: nn.Conv2d;
  readonly downBlocks: nn.ModuleList<DownEncoderBlock2D>;
  readonly midBlock: UNetMidBlock2D;
  readonly convNormOut: nn.GroupNorm;
  readonly convOut: nn.Conv2d;

  constructor(c: AutoencoderKLConfig) {
    super();
    const channels = c.blockOutChannels;
    const last = channels[channels.length - 1]!;
    this.convIn = this.addModule('conv_in', new nn.Conv2d(c.inChannels, channels[0]!, 3, { padding: 1 }));
    this.downBlocks = this.addModule('down_blocks', new nn.ModuleList(channels.map((out, i) => new DownEncoderBlock2D(
      c.layersPerBlock, channels[Math.max(i - 1, 0)]!, out, c.normNumGroups, i < channels.length - 1,
    ))));
    this.midBlock = this.addModule('mid_block', new UNetMidBlock2D(last, c.normNumGroups, c.midBlockAddAttention));
    this.convNormOut = this.addModule('conv_norm_out', new nn.GroupNorm(c.normNumGroups, last, { eps: EPS }));
    this.convOut = this.addModule('conv_out', new nn.Conv2d(last, 2 * c.latentChannels, 3, { padding: 1 }));
  }

  override forward(input: Tensor): Tensor {
    let hidden = this.convIn.forward(input);
    for (const block of this.downBlocks) hidden = block.forward(hidden);
    hidden = this.midBlock.forward(hidden);
    // diffusers' conv_act is nn.SiLU() whatever act_fn says.
    return this.convOut.forward(normSilu(this.convNormOut, hidden));
  }
}

/** vae.py's Decoder (norm_type "group"): latent [N, latent, h, w] → image [N, out, h * 2^(blocks-1), ...]. */
class Decoder extends nn.Module {
  readonly convIn: nn.Conv2d;
  readonly upBlocks: nn.ModuleList<UpDecoderBlock2D>;
  readonly midBlock: UNetMidBlock2D;
  readonly convNormOut: nn.GroupNorm;
  readonly convOut: nn.Conv2d;

  constructor(c: AutoencoderKLConfig) {
    super();
    const reversed = [...c.blockOutChannels].reverse();
    this.convIn = this.addModule('conv_in', new nn.Conv2d(c.latentChannels, reversed[0]!, 3, { padding: 1 }));
    // up_blocks is registered before mid_block, as in diffusers (state-dict order).
    this.upBlocks = this.addModule('up_blocks', new nn.ModuleList<UpDecoderBlock2D>());
    this.midBlock = this.addModule('mid_block', new UNetMidBlock2D(reversed[0]!, c.normNumGroups, c.midBlockAddAttention));
    reversed.forEach((out, i) => this.upBlocks.push(new UpDecoderBlock2D(
      c.layersPerBlock + 1, reversed[Math.max(i - 1, 0)]!, out, c.normNumGroups, i < reversed.length - 1,
    )));
    const first = c.blockOutChannels[0]!;
    this.convNormOut = this.addModule('conv_norm_out', new nn.GroupNorm(c.normNumGroups, first, { eps: EPS }));
    this.convOut = this.addModule('conv_out', new nn.Conv2d(first, c.outChannels, 3, { padding: 1 }));
  }

  override forward(input: Tensor): Tensor {
    let hidden = this.midBlock.forward(this.convIn.forward(input));
    for (const block of this.upBlocks) hidden = block.forward(hidden);
    return this.convOut.forward(normSilu(this.convNormOut, hidden));
  }
}

// --- posterior -------------------------------------------------------------------------------

/** vae.py's DiagonalGaussianDistribution over the encoder's moments [N, 2C, h, w] = (mean, logvar). */
export class DiagonalGaussianDistribution {
  readonly mean: Tensor;
  /** Clamped to [-30, 20], as diffusers does. */
  readonly logvar: Tensor;
  readonly std: Tensor;
  readonly var: Tensor;

  constructor(readonly parameters: Tensor) {
    const [mean, logvar] = parameters.chunk(2, 1) as [Tensor, Tensor];
    this.mean = mean;
    this.logvar = logvar.clamp(-30, 20);
    this.std = this.logvar.mul(0.5).exp();
    this.var = this.logvar.exp();
  }

  /**
   * mean + std * noise. `noise` defaults to torch.randn of the mean's shape from the default
   * generator, which is diffusers' sample(generator=None); the addon has no torch.Generator
   * objects, so a caller that needs its own stream passes its own standard-normal noise.
   */
  sample(noise?: Tensor): Tensor {
    if (noise !== undefined && noise.shape.join() !== this.mean.shape.join()) {
      throw new Error(`DiagonalGaussianDistribution.sample: noise shape [${noise.shape}] differs from the mean's [${this.mean.shape}]`);
    }
    const eps = noise ?? torch.randn(this.mean.shape, { dtype: this.mean.dtype, device: this.mean.device });
    return this.mean.add(this.std.mul(eps));
  }

  /** KL(this || other) per sample, summed over [C, h, w]; `other` defaults to N(0, I). */
  kl(other?: DiagonalGaussianDistribution): Tensor {
    if (other === undefined) return this.mean.pow(2).add(this.var).sub(1).sub(this.logvar).sum([1, 2, 3]).mul(0.5);
    return this.mean.sub(other.mean).pow(2).div(other.var).add(this.var.div(other.var)).sub(1).sub(this.logvar).add(other.logvar)
      .sum([1, 2, 3]).mul(0.5);
  }

  mode(): Tensor { return this.mean; }
}

// --- the model -------------------------------------------------------------------------------

/**
 * The VAE: encode(x) gives a posterior over latents of `latentChannels` channels at
 * 1 / 2^(blocks - 1) of the resolution, decode(z) the image. Construct from a (partial) config with
 * diffusers' defaults, or read a diffusers folder with fromPretrained.
 */
export class AutoencoderKL extends nn.Module {
  readonly config: AutoencoderKLConfig;
  readonly encoder: Encoder;
  readonly decoder: Decoder;
  readonly quantConv: nn.Conv2d | null;
  readonly postQuantConv: nn.Conv2d | null;
  /** mean_std.json's statistics; when set, normalizeLatents uses them instead of the config's. */
  latentStats: LatentStats | null = null;
  /** As diffusers' enable_slicing(): encode and decode a batch one image at a time to save memory. */
  useSlicing = false;

  /** How many pixels of a side one latent covers (diffusers' vae_scale_factor; SD-VAE: 8). */
  get downsamplingFactor(): number { return 2 ** (this.config.blockOutChannels.length - 1); }

  constructor(config: Partial<AutoencoderKLConfig> = {}) {
    super();
    this.config = parseConfig(config, 'AutoencoderKL', (field) => field);
    const c = this.config;
    this.encoder = this.addModule('encoder', new Encoder(c));
    this.decoder = this.addModule('decoder', new Decoder(c));
    this.quantConv = c.useQuantConv ? this.addModule('quant_conv', new nn.Conv2d(2 * c.latentChannels, 2 * c.latentChannels, 1)) : null;
    this.postQuantConv = c.usePostQuantConv ? this.addModule('post_quant_conv', new nn.Conv2d(c.latentChannels, c.latentChannels, 1)) : null;
  }

  /** Images [N, inChannels, H, W] (in [-1, 1]) → the posterior over latents. */
  encode(x: Tensor): DiagonalGaussianDistribution {
    const moments = this.sliced(x, (slice) => {
      const h = this.encoder.forward(slice);
      return this.quantConv === null ? h : this.quantConv.forward(h);
    });
    return new DiagonalGaussianDistribution(moments);
  }

  /** Latents [N, latentChannels, h, w] → images [N, outChannels, H, W]. */
  decode(z: Tensor): Tensor {
    return this.sliced(z, (slice) => this.decoder.forward(this.postQuantConv === null ? slice : this.postQuantConv.forward(slice)));
  }

  /** decode(posterior.mode()), or of a posterior sample with `samplePosterior` (noise as sample()). */
  override forward(sample: Tensor, options: { samplePosterior?: boolean; noise?: Tensor } = {}): Tensor {
    const posterior = this.encode(sample);
    return this.decode(options.samplePosterior ? posterior.sample(options.noise) : posterior.mode());
  }

  private sliced(input: Tensor, fn: (slice: Tensor) => Tensor): Tensor {
    if (!this.useSlicing || input.size(0) <= 1) return fn(input);
    return torch.cat(input.split(1).map((slice) => torch.scope(() => fn(slice))));
  }

  /**
   * VAE latents → the diffusion model's latents: (z - mean) / std per channel with mean_std.json
   * (ReaLS); otherwise as diffusers' pipelines: (z - latents_mean) * scaling_factor / latents_std
   * when the config has latents_mean/std (SDXL), else (z - shift_factor) * scaling_factor (SD, SD3, FLUX).
   */
  normalizeLatents(z: Tensor): Tensor {
    const c = this.config;
    if (this.latentStats !== null) return z.sub(this.channelTensor(this.latentStats.mean, z)).div(this.channelTensor(this.latentStats.std, z));
    if (c.latentsMean !== null && c.latentsStd !== null) {
      return z.sub(this.channelTensor(c.latentsMean, z)).mul(c.scalingFactor).div(this.channelTensor(c.latentsStd, z));
    }
    return z.sub(c.shiftFactor ?? 0).mul(c.scalingFactor);
  }

  /** The inverse of normalizeLatents: diffusion latents → VAE latents, ready for decode. */
  denormalizeLatents(z: Tensor): Tensor {
    const c = this.config;
    if (this.latentStats !== null) return z.mul(this.channelTensor(this.latentStats.std, z)).add(this.channelTensor(this.latentStats.mean, z));
    if (c.latentsMean !== null && c.latentsStd !== null) {
      return z.mul(this.channelTensor(c.latentsStd, z)).div(c.scalingFactor).add(this.channelTensor(c.latentsMean, z));
    }
    return z.div(c.scalingFactor).add(c.shiftFactor ?? 0);
  }

  /** Per-channel values as [1, C, 1, 1] with z's dtype and device. */
  private channelTensor(values: number[], z: Tensor): Tensor {
    if (z.ndim !== 4 || z.size(1) !== values.length) {
      throw new Error(`AutoencoderKL: latents of shape [${z.shape}] do not have ${values.length} channels in dim 1`);
    }
    return torch.tensor(values, { dtype: z.dtype, device: z.device }).view(1, values.length, 1, 1);
  }

  /**
   * Loads a diffusers state dict with either attention naming (see convertDeprecatedAttentionKeys);
   * strict, so the error lists every missing, unexpected and mis-shaped key.
   */
  loadDiffusersStateDict(stateDict: nn.StateDict | Record<string, Tensor>): void {
    const source = stateDict instanceof Map ? stateDict : new Map(Object.entries(stateDict));
    const attentionPaths = this.namedModules().filter(([, m]) => m instanceof Attention).map(([path]) => path);
    this.loadStateDict(convertDeprecatedAttentionKeys(source, attentionPaths));
  }

  /**
   * Reads a diffusers AutoencoderKL folder: config.json, diffusion_pytorch_model.safetensors (or
   * .bin, read with torch.load) and, when present, mean_std.json. The model comes back in eval
   * mode, as from_pretrained returns it; `device` and `dtype` move it after loading. Errors name
   * the file at fault.
   */
  static fromPretrained(dir: string, options: { device?: torch.Device; dtype?: torch.DType } = {}): AutoencoderKL {
    const configPath = join(dir, CONFIG_NAME);
    const config = configFromDiffusers(readJsonFile(configPath), configPath);
    const model = new AutoencoderKL(config);
    const statsPath = join(dir, MEAN_STD_NAME);
    if (existsSync(statsPath)) model.latentStats = parseLatentStats(readJsonFile(statsPath), statsPath, config.latentChannels);
    torch.scope(() => {
      const { path, tensors } = loadDiffusersWeights(dir);
      try {
        model.loadDiffusersStateDict(tensors);
      } catch (error) {
        throw new Error(`${path}: ${(error as Error).message}`, { cause: error });
      }
    });
    if (options.device !== undefined || options.dtype !== undefined) model.to({ device: options.device, dtype: options.dtype });
    return model.eval();
  }

  /**
   * Writes the folder fromPretrained and diffusers' AutoencoderKL.from_pretrained read:
   * config.json, diffusion_pytorch_model.safetensors (current attention names) and mean_std.json
   * when latentStats is set (a stale one is removed otherwise). Each file is written to a
   * temporary name and renamed into place.
   */
  savePretrained(dir: string): void {
    makeDirs(dir, 'savePretrained:');
    torch.scope(() => saveDiffusersWeights(dir, this.stateDict()));
    writeJsonFileAtomic(join(dir, CONFIG_NAME), configToDiffusers(this.config));
    const statsPath = join(dir, MEAN_STD_NAME);
    if (this.latentStats === null) rmSync(statsPath, { force: true });
    else writeJsonFileAtomic(statsPath, { mean: this.latentStats.mean, std: this.latentStats.std });
  }
}

const DEPRECATED_ATTENTION_NAMES: [string, string][] = [['query', 'to_q'], ['key', 'to_k'], ['value', 'to_v'], ['proj_attn', 'to_out.0']];

/**
 * Renames the attention weights that older diffusers saved (query, key, value, proj_attn: Linear
 * weights [C, C] of its AttentionBlock) to the current names (to_q, to_k, to_v, to_out.0) under
 * each attention module path, as ModelMixin._convert_deprecated_attention_blocks does; keys
 * already in the current naming pass through. Returns a new Map in the same order.
 */
export function convertDeprecatedAttentionKeys(stateDict: Map<string, Tensor>, attentionPaths: string[]): Map<string, Tensor> {
  const renames = new Map<string, string>();
  for (const path of attentionPaths) {
    for (const [old, current] of DEPRECATED_ATTENTION_NAMES) {
      for (const param of ['weight', 'bias']) renames.set(`${path}.${old}.${param}`, `${path}.${current}.${param}`);
    }
  }
  return new Map([...stateDict].map(([key, tensor]) => [renames.get(key) ?? key, tensor]));
}

// --- named configs ---------------------------------------------------------------------------

// The SD-VAE layout that the published VAEs below share.
const SD_LAYOUT: Partial<AutoencoderKLConfig> = {
  downBlockTypes: ['DownEncoderBlock2D', 'DownEncoderBlock2D', 'DownEncoderBlock2D', 'DownEncoderBlock2D'],
  upBlockTypes: ['UpDecoderBlock2D', 'UpDecoderBlock2D', 'UpDecoderBlock2D', 'UpDecoderBlock2D'],
  blockOutChannels: [128, 256, 512, 512],
  layersPerBlock: 2,
  normNumGroups: 32,
};

/** Published VAEs' configs (their config.json): `new AutoencoderKL(AUTOENCODER_KL_CONFIGS['sd-vae'])`. */
export const AUTOENCODER_KL_CONFIGS: Record<string, Partial<AutoencoderKLConfig>> = {
  /** Stable Diffusion 1.x, stabilityai/sd-vae-ft-mse and -ema: the SD-VAE that ReaLS starts from. */
  'sd-vae': { ...SD_LAYOUT, latentChannels: 4, sampleSize: 256, scalingFactor: 0.18215 },
  /** stabilityai/sdxl-vae. */
  'sdxl-vae': { ...SD_LAYOUT, latentChannels: 4, sampleSize: 1024, scalingFactor: 0.13025 },
  /** black-forest-labs/FLUX.1: 16 latent channels, shifted, no quant convs. */
  'flux-vae': {
    ...SD_LAYOUT, latentChannels: 16, sampleSize: 1024, scalingFactor: 0.3611, shiftFactor: 0.1159,
    useQuantConv: false, usePostQuantConv: false,
  },
};

/** A named VAE config (AUTOENCODER_KL_CONFIGS) or a diffusers config.json file; `--vae-config`. */
export function resolveVaeConfig(name: string): Partial<AutoencoderKLConfig> {
  const named = AUTOENCODER_KL_CONFIGS[name];
  if (named !== undefined) return named;
  if (!existsSync(name)) throw new Error(`--vae-config ${name}: not one of ${Object.keys(AUTOENCODER_KL_CONFIGS).join(', ')}, nor a config.json file`);
  return configFromDiffusers(readJsonFile(name), name);
}

// --- ONNX export: each module's forward as graph nodes (src/onnx) --------------------------------

const onnxLayers = (m: nn.Module & { resnets: nn.ModuleList<ResnetBlock2D> }, g: OnnxGraph, x: Value, path: string): Value =>
  [...m.resnets].reduce((h, resnet, i) => exportModule(resnet, g, [h], childPath(path, `resnets.${i}`)), x);

registerExporter(ResnetBlock2D, (m, g, [x], path) => {
  const part = (name: string, module: nn.Module, input: Value) => exportModule(module, g, [input], childPath(path, name));
  let hidden = part('conv1', m.conv1, onnxSilu(g, part('norm1', m.norm1, x!)));
  hidden = part('conv2', m.conv2, onnxSilu(g, part('norm2', m.norm2, hidden)));
  return g.add(m.convShortcut === null ? x! : part('conv_shortcut', m.convShortcut, x!), hidden);
});
registerExporter(Downsample2D, (m, g, [x], path) => exportModule(m.conv, g, [g.pad2d(x!, [0, 1, 0, 1])], childPath(path, 'conv')));
registerExporter(Upsample2D, (m, g, [x], path) => exportModule(m.conv, g, [g.upsampleNearest(x!, 2)], childPath(path, 'conv')));
registerExporter(Attention, (m, g, [x], path) => {
  const [n, c, h, w] = x!.shape as [Dim, number, number, number];
  const part = (name: string, module: nn.Module, input: Value) => exportModule(module, g, [input], childPath(path, name));
  const hidden = g.transpose(part('group_norm', m.groupNorm, g.reshape(x!, [n, c, h * w])), [0, 2, 1]);
  const attended = onnxAttention(g, part('to_q', m.toQ, hidden), part('to_k', m.toK, hidden), part('to_v', m.toV, hidden));
  return g.add(g.reshape(g.transpose(part('to_out.0', m.toOut.at(0), attended), [0, 2, 1]), [n, c, h, w]), x!);
});
registerExporter(UNetMidBlock2D, (m, g, [x], path) => {
  let hidden = exportModule(m.resnets.at(0), g, [x!], childPath(path, 'resnets.0'));
  [...m.attentions].forEach((a, i) => { hidden = exportModule(a, g, [hidden], childPath(path, `attentions.${i}`)); });
  return exportModule(m.resnets.at(1), g, [hidden], childPath(path, 'resnets.1'));
});
registerExporter(DownEncoderBlock2D, (m, g, [x], path) => [...m.downsamplers ?? []]
  .reduce((h, d, i) => exportModule(d, g, [h], childPath(path, `downsamplers.${i}`)), onnxLayers(m, g, x!, path)));
registerExporter(UpDecoderBlock2D, (m, g, [x], path) => [...m.upsamplers ?? []]
  .reduce((h, u, i) => exportModule(u, g, [h], childPath(path, `upsamplers.${i}`)), onnxLayers(m, g, x!, path)));
registerExporter(Encoder, (m, g, [x], path) => {
  let hidden = exportModule(m.convIn, g, [x!], childPath(path, 'conv_in'));
  [...m.downBlocks].forEach((b, i) => { hidden = exportModule(b, g, [hidden], childPath(path, `down_blocks.${i}`)); });
  hidden = exportModule(m.midBlock, g, [hidden], childPath(path, 'mid_block'));
  return exportModule(m.convOut, g, [onnxSilu(g, exportModule(m.convNormOut, g, [hidden], childPath(path, 'conv_norm_out')))], childPath(path, 'conv_out'));
});
registerExporter(Decoder, (m, g, [z], path) => {
  let hidden = exportModule(m.midBlock, g, [exportModule(m.convIn, g, [z!], childPath(path, 'conv_in'))], childPath(path, 'mid_block'));
  [...m.upBlocks].forEach((b, i) => { hidden = exportModule(b, g, [hidden], childPath(path, `up_blocks.${i}`)); });
  return exportModule(m.convOut, g, [onnxSilu(g, exportModule(m.convNormOut, g, [hidden], childPath(path, 'conv_norm_out')))], childPath(path, 'conv_out'));
});

/** AutoencoderKL.decode(z) as graph nodes: post_quant_conv, then the decoder. */
export function decodeOnnx(vae: AutoencoderKL, g: OnnxGraph, z: Value): Value {
  const latents = vae.postQuantConv === null ? z : exportModule(vae.postQuantConv, g, [z], 'post_quant_conv');
  return exportModule(vae.decoder, g, [latents], 'decoder');
}

/** The posterior's moments [N, 2 latent, h, w] (mean, then log-variance) of AutoencoderKL.encode(x), as graph nodes. */
export function encodeOnnx(vae: AutoencoderKL, g: OnnxGraph, x: Value): Value {
  const moments = exportModule(vae.encoder, g, [x], 'encoder');
  return vae.quantConv === null ? moments : exportModule(vae.quantConv, g, [moments], 'quant_conv');
}
