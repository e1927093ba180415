// Bounds on the sizes in a model config read from a file, so that a negative or absurd value is
// refused by name before any tensor is allocated (a width of 1e9 would otherwise ask for
// petabytes, or crash deep inside libtorch with no field named).
import { totalmem } from 'node:os';

/** The inclusive range of an integer field. */
export interface SizeRange { min: number; max: number }

/** Throws `<where>: "<field>" must be an integer in [min, max], got <value>` for the first field out of range. */
export function checkSizes(where: string, config: Readonly<Record<string, unknown>>, ranges: Readonly<Record<string, SizeRange>>): void {
  for (const [field, { min, max }] of Object.entries(ranges)) {
    const value = config[field];
    if (value === undefined) continue;
    if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
      throw new Error(`${where}: "${field}" must be an integer in [${min}, ${max}], got ${JSON.stringify(value)}`);
    }
  }
}

/** Throws when `width` does not split into `heads` heads. */
export function checkHeads(where: string, width: number, heads: number, widthField: string): void {
  if (width % heads !== 0) throw new Error(`${where}: "${widthField}" ${width} does not split into numHeads ${heads} heads`);
}

// --- Parameter counts: every field can be in range while together they ask for terabytes
// (diffusers' block_out_channels [16384] * 4 with 64 layers per block), so a config's weights are
// counted, layer by layer as the model builds them, and refused past the machine's memory.

const conv = (inChannels: number, outChannels: number, kernel: number): number => inChannels * outChannels * kernel * kernel + outChannels;
const linear = (inFeatures: number, outFeatures: number): number => inFeatures * outFeatures + outFeatures;
const norm = (channels: number): number => 2 * channels;

/** The AutoencoderKL fields that decide its size (diffusers' names, camelCased). */
export interface AutoencoderKLSizes {
  inChannels: number; outChannels: number; latentChannels: number; blockOutChannels: readonly number[]; layersPerBlock: number;
  midBlockAddAttention: boolean; useQuantConv: boolean; usePostQuantConv: boolean;
}

/** The parameters of diffusers' AutoencoderKL with this config: encoder, decoder, quant convs. */
export function autoencoderKLParameters(c: AutoencoderKLSizes): number {
  const resnet = (inChannels: number, outChannels: number): number =>
    norm(inChannels) + conv(inChannels, outChannels, 3) + norm(outChannels) + conv(outChannels, outChannels, 3)
    + (inChannels === outChannels ? 0 : conv(inChannels, outChannels, 1));
  const mid = (channels: number): number => 2 * resnet(channels, channels) + (c.midBlockAddAttention ? norm(channels) + 4 * linear(channels, channels) : 0);
  // Each block's first resnet takes the previous block's width; every block but the last resamples with a 3x3 conv.
  const blocks = (widths: readonly number[], layers: number): number => widths.reduce((sum, width, i) => {
    const previous = widths[Math.max(i - 1, 0)]!;
    const resnets = resnet(previous, width) + (layers - 1) * resnet(width, width);
    return sum + resnets + (i < widths.length - 1 ? conv(width, width, 3) : 0);
  }, 0);
  const widths = c.blockOutChannels;
  const first = widths[0]!;
  const last = widths[widths.length - 1]!;
  const latent = c.latentChannels;
  const encoder = conv(c.inChannels, first, 3) + blocks(widths, c.layersPerBlock) + mid(last) + norm(last) + conv(last, 2 * latent, 3);
  const decoder = conv(latent, last, 3) + mid(last) + blocks([...widths].reverse(), c.layersPerBlock + 1) + norm(first) + conv(first, c.outChannels, 3);
  return encoder + decoder + (c.useQuantConv ? conv(2 * latent, 2 * latent, 1) : 0) + (c.usePostQuantConv ? conv(latent, latent, 1) : 0);
}

/** The SiT/DiT fields that decide its size (SiTConfig with its defaults filled in). */
export interface SiTSizes {
  depth: number; hiddenSize: number; patchSize: number; inputSize: number; inChannels: number; mlpRatio: number;
  classDropoutProb: number; numClasses: number; learnSigma: boolean;
}

/** The parameters of SiT's (or DiT's) models.py network with this config, pos_embed included (a frozen parameter there). */
export function sitParameters(c: SiTSizes): number {
  const h = c.hiddenSize;
  const mlpHidden = Math.trunc(h * c.mlpRatio);
  const outChannels = c.learnSigma ? 2 * c.inChannels : c.inChannels;
  const block = linear(h, 3 * h) + linear(h, h) + linear(h, mlpHidden) + linear(mlpHidden, h) + linear(h, 6 * h);
  return conv(c.inChannels, h, c.patchSize) + (Math.floor(c.inputSize / c.patchSize) ** 2) * h // x_embedder, pos_embed
    + linear(256, h) + linear(h, h) // t_embedder's MLP on 256 frequencies
    + (c.numClasses + (c.classDropoutProb > 0 ? 1 : 0)) * h // y_embedder's table, with the null class
    + c.depth * block
    + linear(h, 2 * h) + linear(h, c.patchSize * c.patchSize * outChannels); // final_layer
}

/** The DINOv2 fields that decide its size. */
export interface DinoV2Sizes {
  imgSize: number; patchSize: number; inChans: number; embedDim: number; depth: number; mlpRatio: number;
  ffnLayer: 'mlp' | 'swiglufused'; numRegisterTokens: number;
}

/** The parameters of DINOv2's DinoVisionTransformer (torch hub) with this config. */
export function dinov2Parameters(c: DinoV2Sizes): number {
  const d = c.embedDim;
  const hidden = Math.trunc(d * c.mlpRatio);
  // SwiGLUFFNFused: 2/3 of the MLP's hidden size, rounded up to a multiple of 8.
  const swiglu = Math.floor((Math.trunc((hidden * 2) / 3) + 7) / 8) * 8;
  const ffn = c.ffnLayer === 'mlp' ? linear(d, hidden) + linear(hidden, d) : linear(d, 2 * swiglu) + linear(swiglu, d);
  const block = norm(d) + linear(d, 3 * d) + linear(d, d) + d + norm(d) + ffn + d;
  const tokens = 1 + Math.floor(c.imgSize / c.patchSize) ** 2 + c.numRegisterTokens + 1; // CLS, pos_embed, registers, mask_token
  return tokens * d + d + conv(c.inChans, d, c.patchSize) + c.depth * block + norm(d);
}

const gib = (bytes: number): string => `${(bytes / 2 ** 30).toFixed(1)} GiB`;

/**
 * Throws `<where>: ...` when `parameters` float32 weights would take more than `memory` bytes
 * (default: all of this machine's memory): such a config cannot be built here, whatever else runs.
 */
export function checkWeightsFit(where: string, parameters: number, memory = totalmem()): void {
  const bytes = 4 * parameters;
  if (bytes <= memory) return;
  throw new Error(`${where}: the config makes ${parameters.toExponential(2)} parameters, ${gib(bytes)} in float32, more than this machine's ${gib(memory)} of memory`);
}
