// torch.nn.init: in-place initialisers under noGrad, with torch 1.13's formulas (nn/init.py), so
// the same seed draws the same numbers as PyTorch.
import * as torch from '../torch/index.js';
import type { Tensor } from '../torch/index.js';

export type Nonlinearity =
  | 'linear' | 'conv1d' | 'conv2d' | 'conv3d' | 'conv_transpose1d' | 'conv_transpose2d' | 'conv_transpose3d'
  | 'sigmoid' | 'tanh' | 'relu' | 'leaky_relu' | 'selu';
export type FanMode = 'fan_in' | 'fan_out';

/** The recommended gain for a nonlinearity (`param`: leaky_relu's negative slope, default 0.01). */
export function calculateGain(nonlinearity: Nonlinearity, param: number | null = null): number {
  switch (nonlinearity) {
    case 'tanh': return 5.0 / 3;
    case 'relu': return Math.sqrt(2.0);
    case 'leaky_relu': return Math.sqrt(2.0 / (1 + (param ?? 0.01) ** 2));
    case 'selu': return 3.0 / 4;
    case 'linear': case 'conv1d': case 'conv2d': case 'conv3d': case 'sigmoid':
    case 'conv_transpose1d': case 'conv_transpose2d': case 'conv_transpose3d': return 1;
    default: throw new Error(`calculateGain: unsupported nonlinearity '${String(nonlinearity)}'`);
  }
}

/** fan_in = size(1) * receptive field, fan_out = size(0) * receptive field (dims 2.. are the field). */
export function calculateFanInAndFanOut(tensor: Tensor): { fanIn: number; fanOut: number } {
  const shape = tensor.shape;
  if (shape.length < 2) {
    throw new Error(`calculateFanInAndFanOut: fan in and fan out need a tensor of at least 2 dims, got shape [${shape}]`);
  }
  const receptiveField = shape.slice(2).reduce((a, b) => a * b, 1);
  return { fanIn: shape[1]! * receptiveField, fanOut: shape[0]! * receptiveField };
}

function fan(tensor: Tensor, mode: FanMode): number {
  const { fanIn, fanOut } = calculateFanInAndFanOut(tensor);
  if (mode === 'fan_in') return fanIn;
  if (mode === 'fan_out') return fanOut;
  throw new Error(`init: mode must be 'fan_in' or 'fan_out', got '${String(mode)}'`);
}

function inPlace(tensor: Tensor, fill: (t: Tensor) => void): Tensor {
  torch.noGrad(() => fill(tensor));
  return tensor;
}

export function uniform_(tensor: Tensor, a = 0, b = 1): Tensor { return inPlace(tensor, (t) => t.uniform_(a, b)); }
export function normal_(tensor: Tensor, mean = 0, std = 1): Tensor { return inPlace(tensor, (t) => t.normal_(mean, std)); }
export function constant_(tensor: Tensor, value: number): Tensor { return inPlace(tensor, (t) => t.fill_(value)); }
export function zeros_(tensor: Tensor): Tensor { return inPlace(tensor, (t) => t.zero_()); }
export function ones_(tensor: Tensor): Tensor { return inPlace(tensor, (t) => t.fill_(1)); }

/** U(-a, a) with a = gain * sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio 2010). */
export function xavierUniform_(tensor: Tensor, gain = 1): Tensor {
  const { fanIn, fanOut } = calculateFanInAndFanOut(tensor);
  const std = gain * Math.sqrt(2.0 / (fanIn + fanOut));
  const a = Math.sqrt(3.0) * std;
  return uniform_(tensor, -a, a);
}

/** N(0, std^2) with std = gain * sqrt(2 / (fan_in + fan_out)). */
export function xavierNormal_(tensor: Tensor, gain = 1): Tensor {
  const { fanIn, fanOut } = calculateFanInAndFanOut(tensor);
  return normal_(tensor, 0, gain * Math.sqrt(2.0 / (fanIn + fanOut)));
}

export interface KaimingOptions { a?: number; mode?: FanMode; nonlinearity?: Nonlinearity }

/** U(-bound, bound) with bound = gain * sqrt(3 / fan) (He et al. 2015). */
export function kaimingUniform_(tensor: Tensor, o: KaimingOptions = {}): Tensor {
  if (tensor.numel() === 0) return tensor;
  const std = calculateGain(o.nonlinearity ?? 'leaky_relu', o.a ?? 0) / Math.sqrt(fan(tensor, o.mode ?? 'fan_in'));
  const bound = Math.sqrt(3.0) * std;
  return uniform_(tensor, -bound, bound);
}

/** N(0, std^2) with std = gain / sqrt(fan). */
export function kaimingNormal_(tensor: Tensor, o: KaimingOptions = {}): Tensor {
  if (tensor.numel() === 0) return tensor;
  const std = calculateGain(o.nonlinearity ?? 'leaky_relu', o.a ?? 0) / Math.sqrt(fan(tensor, o.mode ?? 'fan_in'));
  return normal_(tensor, 0, std);
}

/**
 * N(mean, std^2) truncated to [a, b], by inverse-CDF sampling as torch's trunc_normal_: uniform
 * in [2 cdf(a) - 1, 2 cdf(b) - 1], then erfinv, scale, shift and clamp.
 */
export function truncNormal_(tensor: Tensor, o: { mean?: number; std?: number; a?: number; b?: number } = {}): Tensor {
  const { mean = 0, std = 1, a = -2, b = 2 } = o;
  const normCdf = (x: number): number => (1 + erf(x / Math.SQRT2)) / 2;
  const l = normCdf((a - mean) / std);
  const u = normCdf((b - mean) / std);
  return inPlace(tensor, (t) => {
    t.uniform_(2 * l - 1, 2 * u - 1);
    torch.callOp('aten::erfinv_', t);
    t.mul_(std * Math.sqrt(2)).add_(mean).clamp_(a, b);
  });
}

/** Scalar erf (JavaScript has none), computed by libtorch in float64. */
function erf(x: number): number {
  return torch.scope(() => torch.tensor([x], { dtype: 'float64' }).erf().item());
}
