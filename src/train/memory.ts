// An estimate of a training step's peak memory, checked against what the machine has before the
// first step: a run that would be killed by the kernel's OOM killer, silently and minutes in, is
// refused with the estimate, the free memory and the flags that change it.
import { constrainedMemory, memoryUsage } from 'node:process';
import { freemem } from 'node:os';
import * as torch from '../torch/index.js';
import type { DinoV2Config } from '../models/dinov2.js';
import type { AutoencoderKLConfig } from '../models/autoencoder-kl.js';

const FLOAT_BYTES = 4;

/**
 * The attention scores of one layer: without a fused kernel (libtorch 1.13 has none) the
 * scores, their scaled copy and the softmax are each [batch, heads, tokens, tokens].
 */
function attentionBytes(batch: number, heads: number, tokens: number): number {
  const materialized = torch.hasOp('aten::scaled_dot_product_attention') ? 1 : 3;
  return materialized * batch * heads * tokens * tokens * FLOAT_BYTES;
}

/**
 * DINOv2's forward without gradients at `inputSize`: one block is alive at a time, so the peak is
 * one layer's attention scores plus its token activations (qkv, the MLP's hidden layer, the
 * residual stream).
 */
export function dinoForwardBytes(config: DinoV2Config, batch: number, inputSize: number): number {
  const tokens = (inputSize / config.patchSize) ** 2 + 1 + config.numRegisterTokens;
  const tokenActivations = batch * tokens * config.embedDim * (3 + config.mlpRatio + 3) * FLOAT_BYTES;
  return 1.25 * (attentionBytes(batch, config.numHeads, tokens) + tokenActivations);
}

/**
 * A VAE training step (encoder, decoder, the losses) at `imageSize`: the activations kept for the
 * backward pass, about 6 feature maps per ResNet block and level (norms, activations, convolution
 * outputs, in the encoder and the decoder), twice over for the gradients, plus the mid block's
 * attention at the lowest resolution. Against the peak resident memory of a forward and backward
 * pass (libtorch 1.13, 1 thread): the demo's VAE at batch 16, 32 px, 66 MiB estimated and 88
 * measured; SD's VAE at batch 2, 128 px, 1.79 GiB and 1.76; at batch 1, 256 px, 3.6 and 3.05.
 * DINOv2's estimate (patch 4, width 64, batch 8 at 128 px): 506 MiB, 498 measured.
 */
export function vaeTrainBytes(config: AutoencoderKLConfig, batch: number, imageSize: number): number {
  let featureMaps = 0;
  let side = imageSize;
  config.blockOutChannels.forEach((channels, level) => {
    featureMaps += channels * side * side * 6 * (2 * config.layersPerBlock + 1);
    if (level < config.blockOutChannels.length - 1) side /= 2;
  });
  const lowest = config.blockOutChannels.at(-1)!;
  const midAttention = config.midBlockAddAttention ? attentionBytes(batch, 1, side * side) * 2 : 0;
  return 2 * batch * (featureMaps + lowest * side * side * 24) * FLOAT_BYTES + midAttention;
}

/**
 * LPIPS's VGG16 on the reconstructions, with gradients: its 13 convolutions' outputs and ReLUs
 * add up to 270 x imageSize^2 values per image, kept for the backward pass and matched by their
 * gradients.
 */
export function lpipsTrainBytes(batch: number, imageSize: number): number {
  return 2 * 2 * batch * 270 * imageSize * imageSize * FLOAT_BYTES;
}

/** The memory a new allocation may take here: what the OS calls available, within the cgroup's limit. */
export function availableMemoryBytes(): number {
  const limit = constrainedMemory();
  const inLimit = limit > 0 && limit < Number.MAX_SAFE_INTEGER ? limit - memoryUsage.rss() : Infinity;
  return Math.min(freemem(), inLimit);
}

const gib = (bytes: number): string => `${(bytes / 2 ** 30).toFixed(1)} GiB`;

/**
 * Throws, naming the estimate, the free memory and the flags to change, when the parts of a step
 * add up to more than `available` bytes. CUDA devices are not checked: libtorch 1.13 gives no
 * free-memory query, and a CUDA OOM is an error with a message rather than a silent kill.
 */
export function checkStepMemory(
  parts: Readonly<Record<string, number>>, flags: string, device: string | undefined, available = availableMemoryBytes(),
): void {
  if (device?.startsWith('cuda')) return;
  const total = Object.values(parts).reduce((a, b) => a + b, 0);
  if (total <= available) return;
  const detail = Object.entries(parts).map(([part, bytes]) => `${part} ${gib(bytes)}`).join(', ');
  throw new Error(`a training step needs about ${gib(total)} (${detail}) but ${gib(available)} is free: lower ${flags}`);
}
