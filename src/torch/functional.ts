// The operators behind torch.nn.functional, with PyTorch's signatures (options objects where
// Python uses keywords). src/nn re-exports these as F.
import { Tensor, op, hasOp, type Scalar } from './tensor.js';
import { zeros } from './creation.js';
import { native } from './native.js';

const O = {
  linear: op('aten::linear'), conv2d: op('aten::conv2d'), convTranspose2d: op('aten::conv_transpose2d.input'),
  maxPool2d: op('aten::max_pool2d'), avgPool2d: op('aten::avg_pool2d'), adaptiveAvgPool2d: op('aten::adaptive_avg_pool2d'),
  upsampleNearest2d: op('aten::upsample_nearest2d.vec'), upsampleBilinear2d: op('aten::upsample_bilinear2d.vec'),
  upsampleBicubic2d: op('aten::upsample_bicubic2d.vec'),
  upsampleBilinearAA: op('aten::_upsample_bilinear2d_aa.vec'), upsampleBicubicAA: op('aten::_upsample_bicubic2d_aa.vec'),
  softmax: op('aten::softmax.int'), logSoftmax: op('aten::log_softmax.int'),
  layerNorm: op('aten::layer_norm'), groupNorm: op('aten::group_norm'), batchNorm: op('aten::batch_norm'),
  gelu: op('aten::gelu'), relu: op('aten::relu'), leakyRelu: op('aten::leaky_relu'),
  softplus: op('aten::softplus'), elu: op('aten::elu'), mish: op('aten::mish'), hardtanh: op('aten::hardtanh'),
  dropout: op('aten::dropout'), embedding: op('aten::embedding'),
  mseLoss: op('aten::mse_loss'), l1Loss: op('aten::l1_loss'), smoothL1: op('aten::smooth_l1_loss'),
  crossEntropy: op('aten::cross_entropy_loss'), nllLoss: op('aten::nll_loss_nd'),
  bceWithLogits: op('aten::binary_cross_entropy_with_logits'),
  pad: op('aten::constant_pad_nd'), reflectionPad2d: op('aten::reflection_pad2d'), replicationPad2d: op('aten::replication_pad2d'),
  normalize: op('aten::linalg_vector_norm'), pixelShuffle: op('aten::pixel_shuffle'), pixelUnshuffle: op('aten::pixel_unshuffle'),
  unfold: op('aten::im2col'), cosineSimilarity: op('aten::cosine_similarity'), sdpa: op('aten::scaled_dot_product_attention'),
  matmul: op('aten::matmul'), baddbmm: op('aten::baddbmm'),
};

export type Reduction = 'mean' | 'sum' | 'none';
const REDUCTION = { none: 0, mean: 1, sum: 2 } as const;

function pair(v: number | readonly number[]): number[] { return typeof v === 'number' ? [v, v] : [...v]; }

export function linear(input: Tensor, weight: Tensor, bias: Tensor | null = null): Tensor { return O.linear(input, weight, bias); }

export interface Conv2dOptions { stride?: number | number[]; padding?: number | number[]; dilation?: number | number[]; groups?: number }
export function conv2d(input: Tensor, weight: Tensor, bias: Tensor | null = null, o: Conv2dOptions = {}): Tensor {
  return O.conv2d(input, weight, bias, pair(o.stride ?? 1), pair(o.padding ?? 0), pair(o.dilation ?? 1), o.groups ?? 1);
}
export function convTranspose2d(
  input: Tensor, weight: Tensor, bias: Tensor | null = null,
  o: Conv2dOptions & { outputPadding?: number | number[] } = {},
): Tensor {
  return O.convTranspose2d(input, weight, bias, pair(o.stride ?? 1), pair(o.padding ?? 0), pair(o.outputPadding ?? 0),
    o.groups ?? 1, pair(o.dilation ?? 1));
}

export interface Pool2dOptions { stride?: number | number[] | null; padding?: number | number[]; ceilMode?: boolean }
export function maxPool2d(input: Tensor, kernelSize: number | number[], o: Pool2dOptions & { dilation?: number | number[] } = {}): Tensor {
  return O.maxPool2d(input, pair(kernelSize), pair(o.stride ?? kernelSize), pair(o.padding ?? 0), pair(o.dilation ?? 1), o.ceilMode ?? false);
}
export function avgPool2d(
  input: Tensor, kernelSize: number | number[],
  o: Pool2dOptions & { countIncludePad?: boolean; divisorOverride?: number | null } = {},
): Tensor {
  return O.avgPool2d(input, pair(kernelSize), pair(o.stride ?? kernelSize), pair(o.padding ?? 0), o.ceilMode ?? false,
    o.countIncludePad ?? true, o.divisorOverride ?? null);
}
export function adaptiveAvgPool2d(input: Tensor, outputSize: number | number[]): Tensor { return O.adaptiveAvgPool2d(input, pair(outputSize)); }

export interface InterpolateOptions {
  size?: number | number[];
  scaleFactor?: number | number[];
  mode?: 'nearest' | 'bilinear' | 'bicubic';
  alignCorners?: boolean;
  antialias?: boolean;
}
/** F.interpolate for 4-D input. antialias needs a libtorch with _upsample_*_aa (1.11+). */
export function interpolate(input: Tensor, o: InterpolateOptions): Tensor {
  const mode = o.mode ?? 'nearest';
  if ((o.size === undefined) === (o.scaleFactor === undefined)) throw new Error('interpolate: give exactly one of size and scaleFactor');
  const size = o.size === undefined ? null : pair(o.size);
  const scales = o.scaleFactor === undefined ? null : pair(o.scaleFactor);
  if (mode === 'nearest') {
    if (o.alignCorners !== undefined) throw new Error('interpolate: alignCorners only applies to bilinear and bicubic');
    if (o.antialias) throw new Error('interpolate: antialias only applies to bilinear and bicubic');
    return O.upsampleNearest2d(input, size, scales);
  }
  const alignCorners = o.alignCorners ?? false;
  if (o.antialias) {
    const aaOp = mode === 'bilinear' ? 'aten::_upsample_bilinear2d_aa.vec' : 'aten::_upsample_bicubic2d_aa.vec';
    if (!hasOp(aaOp)) throw new Error(`interpolate: antialias=true needs ${aaOp}, which this libtorch lacks`);
    return (mode === 'bilinear' ? O.upsampleBilinearAA : O.upsampleBicubicAA)(input, size, alignCorners, scales);
  }
  return (mode === 'bilinear' ? O.upsampleBilinear2d : O.upsampleBicubic2d)(input, size, alignCorners, scales);
}

export function softmax(input: Tensor, dim: number): Tensor { return O.softmax(input, dim); }
export function logSoftmax(input: Tensor, dim: number): Tensor { return O.logSoftmax(input, dim); }

export function layerNorm(input: Tensor, normalizedShape: number[], weight: Tensor | null = null, bias: Tensor | null = null, eps = 1e-5): Tensor {
  return O.layerNorm(input, normalizedShape, weight, bias, eps, true);
}
/**
 * F.group_norm. A bfloat16 input with float32 affine parameters (a conv's output under CPU autocast,
 * whose op list in libtorch 1.13 lacks group_norm, unlike CUDA's) is normalized in float32, as
 * CUDA autocast does; the kernel itself refuses mixed dtypes.
 */
export function groupNorm(input: Tensor, numGroups: number, weight: Tensor | null = null, bias: Tensor | null = null, eps = 1e-5): Tensor {
  const mixed = weight !== null && weight.dtype === 'float32' && input.dtype !== 'float32';
  return O.groupNorm(mixed ? input.float() : input, numGroups, weight, bias, eps, true);
}
/**
 * silu(F.group_norm(...)): the VAE's norm and nonlinearity. Under CPU bfloat16 autocast, with no
 * gradient wanted, one pass of the addon (native/src/groupnorm.cc) returns it in bfloat16, as the
 * conv it feeds would cast it; elsewhere the two functions above and below run.
 */
export function groupNormSilu(input: Tensor, numGroups: number, weight: Tensor | null = null, bias: Tensor | null = null, eps = 1e-5): Tensor {
  const fused = native.groupNormSilu(input._handle, numGroups, weight?._handle ?? null, bias?._handle ?? null, eps);
  return fused !== null ? new Tensor(fused) : silu(groupNorm(input, numGroups, weight, bias, eps));
}
/** F.batch_norm: updates runningMean/runningVar in place when training. */
export function batchNorm(
  input: Tensor, runningMean: Tensor | null, runningVar: Tensor | null,
  o: { weight?: Tensor | null; bias?: Tensor | null; training?: boolean; momentum?: number; eps?: number } = {},
): Tensor {
  return O.batchNorm(input, o.weight ?? null, o.bias ?? null, runningMean, runningVar, o.training ?? false, o.momentum ?? 0.1, o.eps ?? 1e-5, true);
}

/**
 * GELU; approximate 'tanh' is the tanh form (DiT/SiT MLPs use it), which runs the addon's fused
 * kernel on float32/bfloat16 tensors on AVX-512 CPUs (native/src/activations.cc).
 */
export function gelu(input: Tensor, approximate: 'none' | 'tanh' = 'none'): Tensor {
  return approximate === 'tanh' ? new Tensor(native.geluTanh(input._handle)) : O.gelu(input, approximate);
}
/** SiLU: the addon's fused kernel on bfloat16 tensors on AVX-512 CPUs (native/src/activations.cc); float32 is libtorch's. */
export function silu(input: Tensor): Tensor { return new Tensor(native.silu(input._handle)); }
export function relu(input: Tensor): Tensor { return O.relu(input); }
export function leakyRelu(input: Tensor, negativeSlope = 0.01): Tensor { return O.leakyRelu(input, negativeSlope); }
export function softplus(input: Tensor, beta = 1, threshold = 20): Tensor { return O.softplus(input, beta, threshold); }
export function elu(input: Tensor, alpha = 1): Tensor { return O.elu(input, alpha); }
export function mish(input: Tensor): Tensor { return O.mish(input); }
export function hardtanh(input: Tensor, minVal = -1, maxVal = 1): Tensor { return O.hardtanh(input, minVal, maxVal); }
export function sigmoid(input: Tensor): Tensor { return input.sigmoid(); }
export function tanh(input: Tensor): Tensor { return input.tanh(); }

export function dropout(input: Tensor, p = 0.5, training = true): Tensor {
  if (p < 0 || p > 1) throw new RangeError(`dropout: p must be in [0, 1], got ${p}`);
  return O.dropout(input, p, training);
}
/** F.embedding: rows of `weight`; the row `paddingIdx` (negative counts from the end) gets no gradient. */
export function embedding(input: Tensor, weight: Tensor, paddingIdx: number | null = null): Tensor {
  const rows = weight.size(0);
  if (paddingIdx !== null && (paddingIdx >= rows || paddingIdx < -rows)) {
    throw new RangeError(`embedding: paddingIdx ${paddingIdx} is out of range for a weight of ${rows} rows`);
  }
  // aten::embedding reads -1 as "no padding row", so a negative index is resolved here, as F.embedding does.
  return O.embedding(weight, input, paddingIdx === null ? -1 : paddingIdx < 0 ? rows + paddingIdx : paddingIdx, false, false);
}

export function mseLoss(input: Tensor, target: Tensor, reduction: Reduction = 'mean'): Tensor { return O.mseLoss(input, target, REDUCTION[reduction]); }
export function l1Loss(input: Tensor, target: Tensor, reduction: Reduction = 'mean'): Tensor { return O.l1Loss(input, target, REDUCTION[reduction]); }
export function smoothL1Loss(input: Tensor, target: Tensor, reduction: Reduction = 'mean', beta = 1): Tensor {
  return O.smoothL1(input, target, REDUCTION[reduction], beta);
}
export function crossEntropy(
  input: Tensor, target: Tensor,
  o: { weight?: Tensor | null; reduction?: Reduction; ignoreIndex?: number; labelSmoothing?: number } = {},
): Tensor {
  return O.crossEntropy(input, target, o.weight ?? null, REDUCTION[o.reduction ?? 'mean'], o.ignoreIndex ?? -100, o.labelSmoothing ?? 0);
}
export function nllLoss(input: Tensor, target: Tensor, o: { weight?: Tensor | null; reduction?: Reduction; ignoreIndex?: number } = {}): Tensor {
  return O.nllLoss(input, target, o.weight ?? null, REDUCTION[o.reduction ?? 'mean'], o.ignoreIndex ?? -100);
}
export function binaryCrossEntropyWithLogits(input: Tensor, target: Tensor, reduction: Reduction = 'mean'): Tensor {
  return O.bceWithLogits(input, target, null, null, REDUCTION[reduction]);
}

/** F.pad: `pad` lists (left, right, top, bottom, ...) from the last dim backwards, as PyTorch. */
export function pad(input: Tensor, padding: number[], mode: 'constant' | 'reflect' | 'replicate' = 'constant', value = 0): Tensor {
  if (mode === 'constant') return O.pad(input, padding, value);
  if (padding.length !== 4 || input.ndim !== 4) throw new Error(`pad: mode '${mode}' is implemented for 4-D input with 4 pads`);
  return (mode === 'reflect' ? O.reflectionPad2d : O.replicationPad2d)(input, padding);
}

/** F.normalize: x / max(||x||_p, eps) along `dim`. */
export function normalize(input: Tensor, o: { p?: number; dim?: number; eps?: number } = {}): Tensor {
  const norm = O.normalize(input, o.p ?? 2, [o.dim ?? 1], true, null) as Tensor;
  return input.div(norm.clamp(o.eps ?? 1e-12));
}
export function pixelShuffle(input: Tensor, upscaleFactor: number): Tensor { return O.pixelShuffle(input, upscaleFactor); }
export function pixelUnshuffle(input: Tensor, downscaleFactor: number): Tensor { return O.pixelUnshuffle(input, downscaleFactor); }
export function cosineSimilarity(x1: Tensor, x2: Tensor, dim = 1, eps = 1e-8): Tensor { return O.cosineSimilarity(x1, x2, dim, eps); }

const HAS_SDPA = hasOp('aten::scaled_dot_product_attention');
let fusedAttention = true;

/**
 * Whether F.scaledDotProductAttention may run the addon's fused kernel (default true), as PyTorch's
 * torch.backends.cuda.enable_flash_sdp: false keeps every call on the math path, whose float32 sums
 * are ordered as before the kernel existed, so that runs recorded then reproduce to the last bit.
 */
export function enableFusedAttention(enabled: boolean): void {
  fusedAttention = enabled;
}

export function fusedAttentionEnabled(): boolean {
  return fusedAttention;
}

/**
 * F.scaled_dot_product_attention(q, k, v) over [..., L, E]: libtorch's fused kernel when this
 * libtorch has it (2.0+); else, without a mask, causality or dropout, the addon's fused kernel where
 * it takes the inputs and is the faster path (CPU tensors with E a multiple of 16 up to 128 and 64
 * or more queries and keys, on AVX-512: float32, and bfloat16 where oneDNN has no AMX;
 * native/src/attention.cc; enableFusedAttention(false) turns it off); otherwise
 * the exact composition softmax(q k^T * scale + mask) v.
 */
export function scaledDotProductAttention(
  query: Tensor, key: Tensor, value: Tensor,
  o: { attnMask?: Tensor | null; dropoutP?: number; isCausal?: boolean; scale?: number | null } = {},
): Tensor {
  const dropoutP = o.dropoutP ?? 0;
  const isCausal = o.isCausal ?? false;
  if (HAS_SDPA) return O.sdpa(query, key, value, o.attnMask ?? null, dropoutP, isCausal, o.scale ?? null);
  const e = query.size(-1);
  const scale = o.scale ?? 1 / Math.sqrt(e);
  if (fusedAttention && !o.attnMask && !isCausal && dropoutP === 0) {
    const fused = native.attention(query._handle, key._handle, value._handle, scale);
    if (fused !== null) return new Tensor(fused);
  }
  // The query scaled before the product, as timm's Attention (SiT, DiT, DINOv2) does: L x E
  // multiplications instead of L x S.
  const scores = query.mul(scale).matmul(key.transpose(-2, -1));
  let masked = scores;
  if (isCausal) {
    const l = query.size(-2);
    const s = key.size(-2);
    const keepMask = zeros([l, s], { dtype: 'bool', device: query.device }).logicalNot().tril();
    masked = masked.maskedFill(keepMask.logicalNot(), -Infinity);
  }
  if (o.attnMask) masked = o.attnMask.dtype === 'bool' ? masked.maskedFill(o.attnMask.logicalNot(), -Infinity) : masked.add(o.attnMask);
  let weights = softmax(masked, -1);
  if (dropoutP > 0) weights = dropout(weights, dropoutP, true);
  return weights.matmul(value);
}

export type { Scalar };
