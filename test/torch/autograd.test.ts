// Autograd through every differentiable wrapper in src/torch, checked against finite differences
// in float64 (test/gradcheck.ts), plus the autograd API: grad, createGraph, noGrad, leaf flags.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '../../src/torch/index.js';
import { gradcheck, type GradcheckOptions } from '../gradcheck.js';

const F = torch.nnFunctional;
const L = torch.linalg;
type T = torch.Tensor;

/** float64 input requiring grad, uniform in [lo, hi). */
function x(shape: number[], lo = -1, hi = 1): T {
  return torch.rand(shape, { dtype: 'float64' }).mul(hi - lo).add(lo).requiresGrad_();
}
/** float64 input requiring grad with |value| in [0.3, 1): away from the kinks of abs, sign, 1/x. */
function away(shape: number[]): T {
  const sign = torch.rand(shape, { dtype: 'float64' }).lt(0.5).double().mul(2).sub(1);
  return torch.rand(shape, { dtype: 'float64' }).mul(0.7).add(0.3).mul(sign).requiresGrad_();
}
/** A constant (not differentiated) float64 input. */
function c(shape: number[], lo = -1, hi = 1): T { return torch.rand(shape, { dtype: 'float64' }).mul(hi - lo).add(lo); }
function long(values: number[] | number[][] | number[][][]): T { return torch.tensor(values, { dtype: 'int64' }); }
function mask(values: boolean[] | boolean[][]): T { return torch.tensor(values, { dtype: 'bool' }); }

interface GradCase {
  /** The wrapper under test: 'Tensor.<method>', 'F.<function>', 'linalg.<function>' or 'torch.<function>'. */
  op: string;
  name?: string;
  inputs: () => T[];
  fn: (...inputs: T[]) => T | T[];
  tol?: GradcheckOptions;
}

const CASES: GradCase[] = [
  // --- arithmetic, scalar and broadcasting variants ---
  { op: 'Tensor.add', name: 'broadcast [2,3] + [3], alpha 2', inputs: () => [x([2, 3]), x([3])], fn: (a, b) => a.add(b, 2) },
  { op: 'Tensor.add', name: 'scalar', inputs: () => [x([2, 3])], fn: (a) => a.add(1.5) },
  { op: 'Tensor.sub', name: 'broadcast [2,1] - [3], alpha 0.5', inputs: () => [x([2, 1]), x([3])], fn: (a, b) => a.sub(b, 0.5) },
  { op: 'Tensor.sub', name: 'scalar', inputs: () => [x([4])], fn: (a) => a.sub(3) },
  { op: 'Tensor.rsub', inputs: () => [x([4])], fn: (a) => a.rsub(2) },
  { op: 'Tensor.mul', name: 'broadcast [2,1,3] * [4,1]', inputs: () => [x([2, 1, 3]), x([4, 1])], fn: (a, b) => a.mul(b) },
  { op: 'Tensor.mul', name: 'scalar', inputs: () => [x([3])], fn: (a) => a.mul(-2.5) },
  { op: 'Tensor.div', name: 'broadcast [2,3] / [2,1]', inputs: () => [x([2, 3]), away([2, 1])], fn: (a, b) => a.div(b) },
  { op: 'Tensor.div', name: 'scalar', inputs: () => [x([3])], fn: (a) => a.div(4) },
  { op: 'Tensor.div', name: "roundingMode 'floor' (zero gradient)", inputs: () => [x([5], -3, 3)], fn: (a) => a.div(0.7, 'floor') },
  { op: 'Tensor.div', name: "roundingMode 'trunc' by a tensor", inputs: () => [x([5], -3, 3), away([5])], fn: (a, b) => a.div(b, 'trunc') },
  { op: 'Tensor.remainder', name: 'tensor', inputs: () => [x([5], 0.1, 0.9), x([5], 1.1, 2)], fn: (a, b) => a.add(2).remainder(b) },
  { op: 'Tensor.remainder', name: 'scalar', inputs: () => [x([5], 0.1, 0.9)], fn: (a) => a.add(3).remainder(2) },
  { op: 'Tensor.pow', name: 'scalar exponent 3', inputs: () => [x([4])], fn: (a) => a.pow(3) },
  { op: 'Tensor.pow', name: 'scalar exponent 0.5', inputs: () => [x([4], 0.5, 2)], fn: (a) => a.pow(0.5) },
  { op: 'Tensor.pow', name: 'tensor exponent, broadcast', inputs: () => [x([2, 3], 0.5, 2), x([3])], fn: (a, b) => a.pow(b) },
  { op: 'Tensor.neg', inputs: () => [x([4])], fn: (a) => a.neg() },
  { op: 'Tensor.abs', inputs: () => [away([6])], fn: (a) => a.abs() },
  { op: 'Tensor.sqrt', inputs: () => [x([4], 0.5, 2)], fn: (a) => a.sqrt() },
  { op: 'Tensor.rsqrt', inputs: () => [x([4], 0.5, 2)], fn: (a) => a.rsqrt() },
  { op: 'Tensor.exp', inputs: () => [x([4])], fn: (a) => a.exp() },
  { op: 'Tensor.log', inputs: () => [x([4], 0.5, 2)], fn: (a) => a.log() },
  { op: 'Tensor.log1p', inputs: () => [x([4], -0.5, 2)], fn: (a) => a.log1p() },
  { op: 'Tensor.expm1', inputs: () => [x([4])], fn: (a) => a.expm1() },
  { op: 'Tensor.sin', inputs: () => [x([4], -3, 3)], fn: (a) => a.sin() },
  { op: 'Tensor.cos', inputs: () => [x([4], -3, 3)], fn: (a) => a.cos() },
  { op: 'Tensor.tan', inputs: () => [x([4], -1.2, 1.2)], fn: (a) => a.tan() },
  { op: 'Tensor.tanh', inputs: () => [x([4], -2, 2)], fn: (a) => a.tanh() },
  { op: 'Tensor.sigmoid', inputs: () => [x([4], -3, 3)], fn: (a) => a.sigmoid() },
  { op: 'Tensor.erf', inputs: () => [x([4], -2, 2)], fn: (a) => a.erf() },
  { op: 'Tensor.floor', name: 'zero gradient', inputs: () => [x([4], -3, 3)], fn: (a) => a.floor() },
  { op: 'Tensor.ceil', name: 'zero gradient', inputs: () => [x([4], -3, 3)], fn: (a) => a.ceil() },
  { op: 'Tensor.round', name: 'zero gradient', inputs: () => [x([4], -3, 3)], fn: (a) => a.round() },
  { op: 'Tensor.sign', name: 'zero gradient', inputs: () => [away([4])], fn: (a) => a.sign() },
  { op: 'Tensor.reciprocal', inputs: () => [away([4])], fn: (a) => a.reciprocal() },
  { op: 'Tensor.square', inputs: () => [x([4])], fn: (a) => a.square() },
  { op: 'Tensor.clamp', name: 'scalar bounds', inputs: () => [x([8], -2, 2)], fn: (a) => a.clamp(-0.5, 0.7) },
  { op: 'Tensor.clamp', name: 'min only', inputs: () => [x([8])], fn: (a) => a.clamp(0.1) },
  { op: 'Tensor.clamp', name: 'tensor bounds', inputs: () => [x([2, 4], -2, 2), x([4], -1, 0), x([2, 1], 0, 1)], fn: (a, lo, hi) => a.clamp(lo, hi) },
  { op: 'Tensor.clamp', name: 'tensor min, number max', inputs: () => [x([6], -2, 2), x([6], -1, 0)], fn: (a, lo) => a.clamp(lo, 0.5) },
  { op: 'Tensor.clip', inputs: () => [x([8], -2, 2)], fn: (a) => a.clip(-1, 1) },
  { op: 'Tensor.clip', name: 'tensor bounds', inputs: () => [x([2, 4], -2, 2), x([4], -1, 0), x([2, 1], 0, 1)], fn: (a, lo, hi) => a.clip(lo, hi) },
  { op: 'Tensor.maximum', name: 'broadcast', inputs: () => [x([2, 3]), x([3])], fn: (a, b) => a.maximum(b) },
  { op: 'Tensor.minimum', name: 'broadcast', inputs: () => [x([2, 3]), x([2, 1])], fn: (a, b) => a.minimum(b) },
  { op: 'Tensor.nanToNum', name: 'inf, -inf and nan replaced', inputs: () => [x([5])], fn: (a) => a.where(mask([true, false, false, false, true]), torch.tensor([0, Infinity, -Infinity, NaN, 0], { dtype: 'float64' })).nanToNum(0, 5, -5) },
  { op: 'Tensor.where', name: 'tensor other', inputs: () => [x([2, 3]), x([3])], fn: (a, b) => a.where(mask([[true, false, true], [false, false, true]]), b) },
  { op: 'Tensor.where', name: 'scalar other', inputs: () => [x([3])], fn: (a) => a.where(mask([true, false, true]), 2) },
  { op: 'torch.where', name: 'tensor, tensor', inputs: () => [x([3]), x([2, 3])], fn: (a, b) => torch.where(mask([false, true, true]), a, b) },
  { op: 'torch.where', name: 'scalar input', inputs: () => [x([3])], fn: (b) => torch.where(mask([false, true, true]), 0.5, b) },
  { op: 'Tensor.maskedFill', inputs: () => [x([2, 3])], fn: (a) => a.maskedFill(mask([true, false, true]), -1) },

  // --- matrix products ---
  { op: 'Tensor.matmul', name: '[3,4] @ [4,2]', inputs: () => [x([3, 4]), x([4, 2])], fn: (a, b) => a.matmul(b) },
  { op: 'Tensor.matmul', name: 'batched [2,3,4] @ [4,2]', inputs: () => [x([2, 3, 4]), x([4, 2])], fn: (a, b) => a.matmul(b) },
  { op: 'Tensor.matmul', name: 'vector @ matrix', inputs: () => [x([4]), x([4, 3])], fn: (a, b) => a.matmul(b) },
  { op: 'Tensor.matmul', name: 'vector @ vector', inputs: () => [x([4]), x([4])], fn: (a, b) => a.matmul(b) },
  { op: 'Tensor.mm', inputs: () => [x([2, 3]), x([3, 4])], fn: (a, b) => a.mm(b) },
  { op: 'Tensor.bmm', inputs: () => [x([2, 2, 3]), x([2, 3, 2])], fn: (a, b) => a.bmm(b) },

  // --- reductions ---
  { op: 'Tensor.sum', name: 'all', inputs: () => [x([2, 3])], fn: (a) => a.sum() },
  { op: 'Tensor.sum', name: 'dims [0, 2] keepdim', inputs: () => [x([2, 3, 2])], fn: (a) => a.sum([0, 2], true) },
  { op: 'Tensor.sum', name: 'dim -1, dtype float64', inputs: () => [x([2, 3])], fn: (a) => a.sum(-1, false, { dtype: 'float64' }) },
  { op: 'Tensor.mean', name: 'all', inputs: () => [x([2, 3])], fn: (a) => a.mean() },
  { op: 'Tensor.mean', name: 'dim 1 keepdim', inputs: () => [x([2, 3, 2])], fn: (a) => a.mean(1, true) },
  { op: 'Tensor.prod', name: 'all', inputs: () => [away([5])], fn: (a) => a.prod() },
  { op: 'Tensor.prod', name: 'dim 1 keepdim', inputs: () => [away([2, 3])], fn: (a) => a.prod(1, true) },
  { op: 'Tensor.max', name: 'all', inputs: () => [x([2, 3])], fn: (a) => a.max() },
  { op: 'Tensor.max', name: 'dim 1 (values)', inputs: () => [x([3, 4])], fn: (a) => a.max(1) },
  { op: 'Tensor.min', name: 'all', inputs: () => [x([2, 3])], fn: (a) => a.min() },
  { op: 'Tensor.min', name: 'dim 0 keepdim (values)', inputs: () => [x([3, 4])], fn: (a) => a.min(0, true) },
  { op: 'Tensor.amax', name: 'dims [0, 2]', inputs: () => [x([2, 3, 2])], fn: (a) => a.amax([0, 2]) },
  { op: 'Tensor.amin', name: 'dim 1 keepdim', inputs: () => [x([2, 3])], fn: (a) => a.amin(1, true) },
  { op: 'Tensor.var', name: 'all', inputs: () => [x([2, 3])], fn: (a) => a.var() },
  { op: 'Tensor.var', name: 'dim 1, correction 0, keepdim', inputs: () => [x([2, 4])], fn: (a) => a.var(1, { correction: 0, keepdim: true }) },
  { op: 'Tensor.std', name: 'all', inputs: () => [x([2, 3])], fn: (a) => a.std() },
  { op: 'Tensor.std', name: 'dims [0, 1]', inputs: () => [x([2, 3, 2])], fn: (a) => a.std([0, 1]) },
  { op: 'Tensor.norm', name: 'p=2 all', inputs: () => [x([2, 3])], fn: (a) => a.norm() },
  { op: 'Tensor.norm', name: 'p=1 dim 1', inputs: () => [away([2, 3])], fn: (a) => a.norm(1, 1) },
  { op: 'Tensor.norm', name: 'p=3 dims [0,1] keepdim', inputs: () => [away([2, 3, 2])], fn: (a) => a.norm(3, [0, 1], true) },
  { op: 'Tensor.logsumexp', inputs: () => [x([2, 4], -3, 3)], fn: (a) => a.logsumexp(1) },
  { op: 'Tensor.logsumexp', name: 'dims [0,1] keepdim', inputs: () => [x([2, 3, 2], -3, 3)], fn: (a) => a.logsumexp([0, 1], true) },
  { op: 'Tensor.cumsum', inputs: () => [x([2, 4])], fn: (a) => a.cumsum(1) },
  { op: 'Tensor.sort', name: 'values', inputs: () => [x([2, 5])], fn: (a) => a.sort(1, true) },
  { op: 'Tensor.topk', name: 'values', inputs: () => [x([2, 5])], fn: (a) => a.topk(2) },

  // --- views and shape ops ---
  { op: 'Tensor.view', inputs: () => [x([2, 6])], fn: (a) => a.view(3, -1) },
  { op: 'Tensor.reshape', name: 'of a non-contiguous tensor', inputs: () => [x([3, 4])], fn: (a) => a.t().reshape([6, 2]) },
  { op: 'Tensor.flatten', inputs: () => [x([2, 3, 2])], fn: (a) => a.flatten(1) },
  { op: 'Tensor.unflatten', inputs: () => [x([2, 6])], fn: (a) => a.unflatten(1, [2, 3]) },
  { op: 'Tensor.permute', inputs: () => [x([2, 3, 4])], fn: (a) => a.permute(2, 0, 1) },
  { op: 'Tensor.transpose', inputs: () => [x([2, 3, 4])], fn: (a) => a.transpose(0, -1) },
  { op: 'Tensor.t', inputs: () => [x([2, 3])], fn: (a) => a.t() },
  { op: 'Tensor.T', inputs: () => [x([2, 3, 4])], fn: (a) => a.T },
  { op: 'Tensor.squeeze', name: 'all', inputs: () => [x([1, 3, 1])], fn: (a) => a.squeeze() },
  { op: 'Tensor.squeeze', name: 'dim', inputs: () => [x([1, 3, 1])], fn: (a) => a.squeeze(-1) },
  { op: 'Tensor.unsqueeze', inputs: () => [x([2, 3])], fn: (a) => a.unsqueeze(1) },
  { op: 'Tensor.expand', inputs: () => [x([3, 1])], fn: (a) => a.expand(2, 3, 4) },
  { op: 'Tensor.expandAs', inputs: () => [x([1, 3])], fn: (a) => a.expandAs(torch.zeros([4, 3])) },
  { op: 'Tensor.repeat', inputs: () => [x([2, 3])], fn: (a) => a.repeat(2, 1, 2) },
  { op: 'Tensor.repeatInterleave', inputs: () => [x([2, 3])], fn: (a) => a.repeatInterleave(2, 1) },
  { op: 'Tensor.contiguous', inputs: () => [x([2, 3])], fn: (a) => a.t().contiguous() },
  { op: 'Tensor.clone', inputs: () => [x([2, 3])], fn: (a) => a.clone() },
  { op: 'Tensor.narrow', inputs: () => [x([3, 5])], fn: (a) => a.narrow(1, 1, 3) },
  { op: 'Tensor.select', name: 'negative index', inputs: () => [x([3, 4])], fn: (a) => a.select(1, -1) },
  { op: 'Tensor.slice', name: 'step 2', inputs: () => [x([3, 7])], fn: (a) => a.slice(1, 1, null, 2) },
  { op: 'Tensor.indexSelect', name: 'repeated indices', inputs: () => [x([4, 3])], fn: (a) => a.indexSelect(0, long([3, 0, 3])) },
  { op: 'Tensor.gather', inputs: () => [x([2, 4])], fn: (a) => a.gather(1, long([[0, 0, 3], [2, 1, 2]])) },
  { op: 'Tensor.scatter', name: 'self and src', inputs: () => [x([2, 4]), x([2, 2])], fn: (a, s) => a.scatter(1, long([[3, 0], [1, 2]]), s) },
  { op: 'Tensor.flip', inputs: () => [x([2, 3, 2])], fn: (a) => a.flip([0, 2]) },
  { op: 'Tensor.roll', inputs: () => [x([3, 4])], fn: (a) => a.roll([1, -1], [0, 1]) },
  { op: 'Tensor.roll', name: 'flattened', inputs: () => [x([3, 4])], fn: (a) => a.roll(5) },
  { op: 'Tensor.tril', inputs: () => [x([3, 4])], fn: (a) => a.tril(1) },
  { op: 'Tensor.triu', inputs: () => [x([3, 4])], fn: (a) => a.triu(-1) },
  { op: 'Tensor.split', name: 'size 2', inputs: () => [x([5, 2])], fn: (a) => a.split(2) },
  { op: 'Tensor.split', name: 'sizes [1, 3] along dim 1', inputs: () => [x([2, 4])], fn: (a) => a.split([1, 3], 1) },
  { op: 'Tensor.chunk', inputs: () => [x([2, 5])], fn: (a) => a.chunk(3, 1) },
  { op: 'Tensor.unbind', inputs: () => [x([3, 2])], fn: (a) => a.unbind(1) },
  { op: 'torch.cat', inputs: () => [x([2, 3]), x([1, 3])], fn: (a, b) => torch.cat([a, b, a]) },
  { op: 'torch.stack', inputs: () => [x([2, 3]), x([2, 3])], fn: (a, b) => torch.stack([a, b], 1) },

  // --- Python-style indexing ---
  { op: 'Tensor.index', name: 'x[1, -1]', inputs: () => [x([3, 4, 2])], fn: (a) => a.index(1, -1) },
  { op: 'Tensor.index', name: 'x[:, 1::2]', inputs: () => [x([3, 5])], fn: (a) => a.index(':', torch.slice(1, null, 2)) },
  { op: 'Tensor.index', name: 'x[None, ..., 0]', inputs: () => [x([2, 3, 2])], fn: (a) => a.index(null, '...', 0) },
  { op: 'Tensor.index', name: 'x[[2, 0, 2]] (repeated rows accumulate)', inputs: () => [x([3, 2])], fn: (a) => a.index(long([2, 0, 2])) },
  { op: 'Tensor.index', name: 'x[:, idx, 1:3]', inputs: () => [x([2, 3, 4])], fn: (a) => a.index(':', long([0, 2]), torch.slice(1, 3)) },
  { op: 'Tensor.index', name: 'x[..., mask]', inputs: () => [x([2, 2, 3])], fn: (a) => a.index('...', mask([[true, false, true], [false, true, true]])) },
  { op: 'Tensor.indexPut_', name: 'x[idx, :] = v', inputs: () => [x([3, 4]), x([2, 4])], fn: (a, v) => a.clone().indexPut_([long([2, 0]), ':'], v) },
  { op: 'Tensor.indexPut_', name: 'x[:, ::2] = broadcast v', inputs: () => [x([3, 4]), x([2])], fn: (a, v) => a.clone().indexPut_([':', torch.slice(null, null, 2)], v) },
  { op: 'Tensor.indexPut_', name: 'x[mask] = scalar', inputs: () => [x([2, 3])], fn: (a) => a.clone().indexPut_([mask([[true, false, false], [false, true, true]])], 0.5) },

  // --- in place (on a non-leaf) ---
  { op: 'Tensor.add_', inputs: () => [x([2, 3]), x([3])], fn: (a, b) => a.clone().add_(b, 2) },
  { op: 'Tensor.add_', name: 'scalar', inputs: () => [x([3])], fn: (a) => a.mul(2).add_(1) },
  { op: 'Tensor.sub_', inputs: () => [x([2, 3]), x([3])], fn: (a, b) => a.clone().sub_(b) },
  { op: 'Tensor.mul_', inputs: () => [x([2, 3]), x([2, 1])], fn: (a, b) => a.clone().mul_(b) },
  { op: 'Tensor.mul_', name: 'scalar', inputs: () => [x([3])], fn: (a) => a.clone().mul_(3) },
  { op: 'Tensor.div_', inputs: () => [x([2, 3]), away([3])], fn: (a, b) => a.clone().div_(b) },
  { op: 'Tensor.div_', name: 'scalar', inputs: () => [x([3])], fn: (a) => a.clone().div_(4) },
  { op: 'Tensor.pow_', inputs: () => [x([3], 0.5, 2)], fn: (a) => a.clone().pow_(2.5) },
  { op: 'Tensor.sqrt_', inputs: () => [x([3], 0.5, 2)], fn: (a) => a.clone().sqrt_() },
  { op: 'Tensor.exp_', inputs: () => [x([3])], fn: (a) => a.clone().exp_() },
  { op: 'Tensor.clamp_', inputs: () => [x([8], -2, 2)], fn: (a) => a.clone().clamp_(-1, 1) },
  { op: 'Tensor.copy_', name: 'broadcast source', inputs: () => [x([2, 3]), x([3])], fn: (a, b) => a.clone().copy_(b).mul(a) },
  { op: 'Tensor.zero_', name: 'zero gradient', inputs: () => [x([3])], fn: (a) => a.clone().zero_().add(a) },
  { op: 'Tensor.fill_', name: 'zero gradient', inputs: () => [x([3])], fn: (a) => a.clone().fill_(2).mul(a) },
  { op: 'Tensor.addcmul_', inputs: () => [x([3]), x([3]), x([3])], fn: (a, b, d) => a.clone().addcmul_(b, d, 0.5) },
  { op: 'Tensor.addcdiv_', inputs: () => [x([3]), x([3]), away([3])], fn: (a, b, d) => a.clone().addcdiv_(b, d, 2) },
  { op: 'Tensor.lerp_', inputs: () => [x([3]), x([3])], fn: (a, b) => a.clone().lerp_(b, 0.3) },
  { op: 'Tensor.maskedFill_', inputs: () => [x([2, 3])], fn: (a) => a.clone().maskedFill_(mask([false, true, false]), 3) },

  // --- nn.functional ---
  { op: 'F.linear', inputs: () => [x([2, 3]), x([4, 3]), x([4])], fn: (a, w, b) => F.linear(a, w, b) },
  { op: 'F.linear', name: 'no bias, batched input', inputs: () => [x([2, 2, 3]), x([2, 3])], fn: (a, w) => F.linear(a, w) },
  { op: 'F.conv2d', name: 'bias', inputs: () => [x([1, 2, 5, 5]), x([3, 2, 3, 3]), x([3])], fn: (a, w, b) => F.conv2d(a, w, b) },
  { op: 'F.conv2d', name: 'stride 2, padding 1', inputs: () => [x([1, 2, 5, 5]), x([2, 2, 3, 3])], fn: (a, w) => F.conv2d(a, w, null, { stride: 2, padding: 1 }) },
  { op: 'F.conv2d', name: 'groups 2', inputs: () => [x([1, 4, 4, 4]), x([4, 2, 2, 2]), x([4])], fn: (a, w, b) => F.conv2d(a, w, b, { groups: 2 }) },
  { op: 'F.conv2d', name: 'dilation 2, padding [1, 2]', inputs: () => [x([1, 1, 6, 5]), x([2, 1, 2, 2])], fn: (a, w) => F.conv2d(a, w, null, { dilation: 2, padding: [1, 2] }) },
  { op: 'F.convTranspose2d', name: 'stride 2, padding 1, outputPadding 1', inputs: () => [x([1, 2, 3, 3]), x([2, 2, 3, 3]), x([2])], fn: (a, w, b) => F.convTranspose2d(a, w, b, { stride: 2, padding: 1, outputPadding: 1 }) },
  { op: 'F.convTranspose2d', name: 'groups 2, dilation 2', inputs: () => [x([1, 4, 3, 3]), x([4, 1, 2, 2])], fn: (a, w) => F.convTranspose2d(a, w, null, { groups: 2, dilation: 2 }) },
  { op: 'F.maxPool2d', name: 'kernel 2', inputs: () => [x([1, 2, 4, 4])], fn: (a) => F.maxPool2d(a, 2) },
  { op: 'F.maxPool2d', name: 'kernel 3, stride 2, padding 1', inputs: () => [x([1, 1, 5, 5])], fn: (a) => F.maxPool2d(a, 3, { stride: 2, padding: 1 }) },
  { op: 'F.avgPool2d', name: 'kernel 2', inputs: () => [x([1, 2, 4, 4])], fn: (a) => F.avgPool2d(a, 2) },
  { op: 'F.avgPool2d', name: 'kernel 3, padding 1, countIncludePad false, ceilMode', inputs: () => [x([1, 1, 5, 5])], fn: (a) => F.avgPool2d(a, 3, { stride: 2, padding: 1, countIncludePad: false, ceilMode: true }) },
  { op: 'F.adaptiveAvgPool2d', name: '5x5 -> 3x2', inputs: () => [x([1, 2, 5, 5])], fn: (a) => F.adaptiveAvgPool2d(a, [3, 2]) },
  { op: 'F.interpolate', name: 'nearest, scale 2', inputs: () => [x([1, 1, 3, 3])], fn: (a) => F.interpolate(a, { scaleFactor: 2 }) },
  { op: 'F.interpolate', name: 'nearest, size 2x5', inputs: () => [x([1, 1, 4, 3])], fn: (a) => F.interpolate(a, { size: [2, 5], mode: 'nearest' }) },
  { op: 'F.interpolate', name: 'bilinear', inputs: () => [x([1, 1, 3, 4])], fn: (a) => F.interpolate(a, { size: [5, 3], mode: 'bilinear' }) },
  { op: 'F.interpolate', name: 'bilinear, alignCorners', inputs: () => [x([1, 1, 3, 3])], fn: (a) => F.interpolate(a, { scaleFactor: 1.5, mode: 'bilinear', alignCorners: true }) },
  { op: 'F.interpolate', name: 'bicubic', inputs: () => [x([1, 1, 4, 4])], fn: (a) => F.interpolate(a, { size: 6, mode: 'bicubic' }) },
  { op: 'F.interpolate', name: 'bilinear, antialias (downsample)', inputs: () => [x([1, 1, 7, 6])], fn: (a) => F.interpolate(a, { size: [3, 4], mode: 'bilinear', antialias: true }) },
  { op: 'F.interpolate', name: 'bicubic, antialias (downsample)', inputs: () => [x([1, 1, 7, 7])], fn: (a) => F.interpolate(a, { size: 3, mode: 'bicubic', antialias: true }) },
  { op: 'F.softmax', inputs: () => [x([2, 4], -2, 2)], fn: (a) => F.softmax(a, -1) },
  { op: 'F.logSoftmax', inputs: () => [x([2, 4], -2, 2)], fn: (a) => F.logSoftmax(a, 0) },
  { op: 'F.layerNorm', inputs: () => [x([2, 2, 3]), x([2, 3]), x([2, 3])], fn: (a, w, b) => F.layerNorm(a, [2, 3], w, b) },
  { op: 'F.layerNorm', name: 'no affine', inputs: () => [x([3, 4])], fn: (a) => F.layerNorm(a, [4]) },
  { op: 'F.groupNorm', inputs: () => [x([2, 4, 2, 2]), x([4]), x([4])], fn: (a, w, b) => F.groupNorm(a, 2, w, b) },
  { op: 'F.groupNormSilu', inputs: () => [x([2, 4, 2, 2]), x([4]), x([4])], fn: (a, w, b) => F.groupNormSilu(a, 2, w, b) },
  { op: 'F.batchNorm', name: 'training', inputs: () => [x([3, 2, 2, 2]), x([2]), x([2])], fn: (a, w, b) => F.batchNorm(a, torch.zeros([2], { dtype: 'float64' }), torch.ones([2], { dtype: 'float64' }), { weight: w, bias: b, training: true }) },
  { op: 'F.batchNorm', name: 'eval, running stats', inputs: () => [x([3, 2, 2]), x([2]), x([2])], fn: (a, w, b) => F.batchNorm(a, torch.tensor([0.1, -0.2], { dtype: 'float64' }), torch.tensor([0.5, 2], { dtype: 'float64' }), { weight: w, bias: b }) },
  { op: 'F.gelu', name: 'erf', inputs: () => [x([6], -3, 3)], fn: (a) => F.gelu(a) },
  { op: 'F.gelu', name: 'tanh', inputs: () => [x([6], -3, 3)], fn: (a) => F.gelu(a, 'tanh') },
  { op: 'F.silu', inputs: () => [x([6], -3, 3)], fn: (a) => F.silu(a) },
  { op: 'F.relu', inputs: () => [away([6])], fn: (a) => F.relu(a) },
  { op: 'F.leakyRelu', inputs: () => [away([6])], fn: (a) => F.leakyRelu(a, 0.2) },
  { op: 'F.softplus', inputs: () => [x([6], -3, 3)], fn: (a) => F.softplus(a, 2) },
  { op: 'F.elu', inputs: () => [away([6])], fn: (a) => F.elu(a, 0.7) },
  { op: 'F.mish', inputs: () => [x([6], -3, 3)], fn: (a) => F.mish(a) },
  { op: 'F.hardtanh', inputs: () => [x([8], -2, 2)], fn: (a) => F.hardtanh(a, -0.5, 1) },
  { op: 'F.sigmoid', inputs: () => [x([4], -3, 3)], fn: (a) => F.sigmoid(a) },
  { op: 'F.tanh', inputs: () => [x([4], -2, 2)], fn: (a) => F.tanh(a) },
  { op: 'F.dropout', name: 'p = 0', inputs: () => [x([2, 3])], fn: (a) => F.dropout(a, 0) },
  { op: 'F.dropout', name: 'p = 0.5, fixed seed', inputs: () => [x([4, 4])], fn: (a) => { torch.manualSeed(3); return F.dropout(a, 0.5); } },
  { op: 'F.dropout', name: 'eval', inputs: () => [x([2, 3])], fn: (a) => F.dropout(a, 0.5, false) },
  { op: 'F.embedding', name: 'weight', inputs: () => [x([5, 3])], fn: (w) => F.embedding(long([[1, 4], [1, 0]]), w) },
  { op: 'F.mseLoss', inputs: () => [x([2, 3]), x([2, 3])], fn: (a, b) => F.mseLoss(a, b) },
  { op: 'F.mseLoss', name: "reduction 'none'", inputs: () => [x([2, 3]), x([2, 3])], fn: (a, b) => F.mseLoss(a, b, 'none') },
  { op: 'F.l1Loss', inputs: () => [x([2, 3]), c([2, 3])], fn: (a, b) => F.l1Loss(a, b, 'sum') },
  { op: 'F.smoothL1Loss', inputs: () => [x([8], -3, 3), c([8])], fn: (a, b) => F.smoothL1Loss(a, b, 'mean', 0.5) },
  { op: 'F.crossEntropy', inputs: () => [x([3, 4], -2, 2)], fn: (a) => F.crossEntropy(a, long([0, 3, 1])) },
  { op: 'F.crossEntropy', name: 'class weights, ignoreIndex, labelSmoothing', inputs: () => [x([4, 3], -2, 2)], fn: (a) => F.crossEntropy(a, long([0, 2, -100, 1]), { weight: torch.tensor([1, 2, 0.5], { dtype: 'float64' }), labelSmoothing: 0.1 }) },
  { op: 'F.crossEntropy', name: 'spatial [N, C, H, W]', inputs: () => [x([2, 3, 2, 2], -2, 2)], fn: (a) => F.crossEntropy(a, long([[[0, 1], [2, 2]], [[1, 0], [0, 2]]]), { reduction: 'sum' }) },
  { op: 'F.nllLoss', inputs: () => [x([3, 4], -2, 0)], fn: (a) => F.nllLoss(a, long([2, 0, 3])) },
  { op: 'F.binaryCrossEntropyWithLogits', name: 'input and target', inputs: () => [x([2, 3], -3, 3), x([2, 3], 0, 1)], fn: (a, t) => F.binaryCrossEntropyWithLogits(a, t) },
  { op: 'F.pad', name: 'constant', inputs: () => [x([1, 2, 3])], fn: (a) => F.pad(a, [1, 2, 0, 1], 'constant', 0.5) },
  { op: 'F.pad', name: 'reflect', inputs: () => [x([1, 1, 3, 4])], fn: (a) => F.pad(a, [2, 1, 1, 2], 'reflect') },
  { op: 'F.pad', name: 'replicate', inputs: () => [x([1, 1, 3, 3])], fn: (a) => F.pad(a, [1, 0, 2, 1], 'replicate') },
  { op: 'F.normalize', inputs: () => [x([3, 4])], fn: (a) => F.normalize(a) },
  { op: 'F.normalize', name: 'p=1, dim 0', inputs: () => [away([3, 2])], fn: (a) => F.normalize(a, { p: 1, dim: 0 }) },
  { op: 'F.pixelShuffle', inputs: () => [x([1, 8, 2, 2])], fn: (a) => F.pixelShuffle(a, 2) },
  { op: 'F.pixelUnshuffle', inputs: () => [x([1, 2, 4, 4])], fn: (a) => F.pixelUnshuffle(a, 2) },
  { op: 'F.cosineSimilarity', inputs: () => [x([3, 4]), x([3, 4])], fn: (a, b) => F.cosineSimilarity(a, b) },
  { op: 'F.scaledDotProductAttention', inputs: () => [x([2, 3, 4]), x([2, 5, 4]), x([2, 5, 3])], fn: (q, k, v) => F.scaledDotProductAttention(q, k, v) },
  // float64 takes the op path; test/torch/adaln.test.ts checks the kernels' gradients.
  { op: 'torch.modulatedLayerNorm', inputs: () => [x([2, 3, 4]), x([2, 4]), x([2, 4])], fn: (a, shift, scale) => torch.modulatedLayerNorm(a, shift, scale, 1e-6) },
  { op: 'torch.gatedResidual', inputs: () => [x([2, 3, 4]), x([2, 4]), x([2, 3, 4])], fn: (a, gate, y) => torch.gatedResidual(a, gate, y) },
  { op: 'F.scaledDotProductAttention', name: 'bool mask', inputs: () => [x([1, 3, 2]), x([1, 4, 2]), x([1, 4, 2])], fn: (q, k, v) => F.scaledDotProductAttention(q, k, v, { attnMask: mask([[true, false, true, true], [false, true, true, false], [true, true, false, false]]) }) },
  { op: 'F.scaledDotProductAttention', name: 'float mask (differentiated), scale 0.3', inputs: () => [x([1, 3, 2]), x([1, 3, 2]), x([1, 3, 2]), x([3, 3])], fn: (q, k, v, m) => F.scaledDotProductAttention(q, k, v, { attnMask: m, scale: 0.3 }) },
  { op: 'F.scaledDotProductAttention', name: 'causal', inputs: () => [x([2, 1, 4, 3]), x([2, 1, 4, 3]), x([2, 1, 4, 3])], fn: (q, k, v) => F.scaledDotProductAttention(q, k, v, { isCausal: true }) },

  // --- linalg (outputs chosen invariant to the sign of each eigen/singular vector) ---
  { op: 'linalg.eigh', name: 'eigenvalues and squared eigenvectors of (M + M^T) / 2', inputs: () => [x([3, 3])], fn: (m) => { const [l, q] = L.eigh(m.add(m.t()).div(2)); return [l, q.square()]; } },
  { op: 'linalg.svd', name: 'S, U^2, Vh^2 of a square matrix', inputs: () => [x([3, 3])], fn: (a) => { const [u, s, vh] = L.svd(a, false); return [s, u.square(), vh.square()]; } },
  { op: 'linalg.svd', name: 'S and U^2 of a wide matrix', inputs: () => [x([2, 4])], fn: (a) => { const [u, s] = L.svd(a, false); return [s, u.square()]; } },
  { op: 'linalg.eigvals', name: 'distinct real eigenvalues, as (real, imaginary) pairs', inputs: () => [x([3, 3])], fn: (a) => L.eigvals(a.add(L.diag(torch.tensor([3, 0, -3], { dtype: 'float64' })))) },
  { op: 'linalg.solve', inputs: () => [x([3, 3]), x([3, 2])], fn: (a, b) => L.solve(a.add(torch.eye(3, { dtype: 'float64' }).mul(3)), b) },
  { op: 'linalg.inv', inputs: () => [x([3, 3])], fn: (a) => L.inv(a.add(torch.eye(3, { dtype: 'float64' }).mul(3))) },
  { op: 'linalg.det', inputs: () => [x([3, 3])], fn: (a) => L.det(a) },
  { op: 'linalg.cholesky', name: 'of M M^T + 3I', inputs: () => [x([3, 3])], fn: (m) => L.cholesky(m.matmul(m.t()).add(torch.eye(3, { dtype: 'float64' }).mul(3))) },
  { op: 'linalg.matrixNorm', name: "'fro'", inputs: () => [x([2, 3])], fn: (a) => L.matrixNorm(a) },
  { op: 'linalg.matrixNorm', name: 'ord 2 (largest singular value)', inputs: () => [x([3, 3])], fn: (a) => L.matrixNorm(a, 2) },
  { op: 'linalg.matrixNorm', name: 'ord 1, batched', inputs: () => [away([2, 2, 3])], fn: (a) => L.matrixNorm(a, 1) },
  { op: 'linalg.vectorNorm', name: 'ord 2, all', inputs: () => [x([2, 3])], fn: (a) => L.vectorNorm(a) },
  { op: 'linalg.vectorNorm', name: 'ord 3, dim 1 keepdim', inputs: () => [away([2, 3])], fn: (a) => L.vectorNorm(a, 3, [1], true) },
  { op: 'linalg.trace', inputs: () => [x([3, 3])], fn: (a) => L.trace(a) },
  { op: 'linalg.diagonal', name: 'offset 1', inputs: () => [x([3, 4])], fn: (a) => L.diagonal(a, 1) },
  { op: 'linalg.diag', name: 'vector to matrix', inputs: () => [x([3])], fn: (a) => L.diag(a, -1) },
  { op: 'linalg.diag', name: 'matrix to vector', inputs: () => [x([3, 3])], fn: (a) => L.diag(a) },
  { op: 'linalg.diagEmbed', inputs: () => [x([2, 3])], fn: (a) => L.diagEmbed(a) },
  { op: 'linalg.outer', inputs: () => [x([3]), x([2])], fn: (a, b) => L.outer(a, b) },
];

// Casts leave float64, where finite differences at eps 1e-6 mean nothing; they are checked below
// by the exact gradient they must pass back (the cast of the incoming gradient).
const CAST_METHODS = ['to', 'type', 'float', 'double', 'half', 'bfloat16', 'cpu'];

/** Everything that is not differentiable, by reason: the coverage test fails on a name in neither list. */
const NOT_DIFFERENTIABLE: Record<string, string[]> = {
  'metadata, memory, autograd plumbing': [
    'Tensor.constructor', 'Tensor.shape', 'Tensor.size', 'Tensor.ndim', 'Tensor.dim', 'Tensor.numel', 'Tensor.stride',
    'Tensor.dtype', 'Tensor.device', 'Tensor.isCuda', 'Tensor.isContiguous', 'Tensor.isFloatingPoint', 'Tensor.isDisposed',
    'Tensor.toString', 'Tensor.dispose', 'Tensor.requiresGrad', 'Tensor.requiresGrad_', 'Tensor.isLeaf', 'Tensor.gradFn',
    'Tensor.grad', 'Tensor.backward', 'Tensor.detach', 'Tensor.detach_', 'Tensor.basicIndex', 'Tensor.data',
    'Tensor._kept', 'Tensor._finalized',
  ],
  'export to JS values': ['Tensor.toArray', 'Tensor.tolist', 'Tensor.item'],
  'integer or bool results': [
    'Tensor.long', 'Tensor.int', 'Tensor.bool', 'Tensor.byte', 'Tensor.eq', 'Tensor.ne', 'Tensor.lt', 'Tensor.le', 'Tensor.gt',
    'Tensor.ge', 'Tensor.logicalNot', 'Tensor.logicalAnd', 'Tensor.logicalOr', 'Tensor.isnan', 'Tensor.isfinite',
    'Tensor.argmax', 'Tensor.argmin', 'Tensor.all', 'Tensor.any',
  ],
  'random fills (no gradient by definition)': ['Tensor.normal_', 'Tensor.uniform_', 'Tensor.bernoulli_'],
  'CUDA only': ['Tensor.cuda'],
  'factories and sampling (no gradient to any input; torch.normal has none by definition)': [
    'torch.tensor', 'torch.fromArray', 'torch.scalarTensor', 'torch.empty', 'torch.zeros', 'torch.ones', 'torch.full', 'torch.arange',
    'torch.linspace', 'torch.eye', 'torch.emptyLike', 'torch.zerosLike', 'torch.onesLike', 'torch.fullLike', 'torch.randn',
    'torch.rand', 'torch.randint', 'torch.randperm', 'torch.normal', 'torch.randnLike', 'torch.randLike',
  ],
  'engine, modes, RNG state, dtype helpers (the ops callOp reaches are checked through their wrappers)': [
    'torch.Tensor', 'torch.callOp', 'torch.op', 'torch.opId', 'torch.hasOp', 'torch.autocast', 'torch.noGrad', 'torch.enableGrad',
    'torch.isGradEnabled', 'torch.setGradEnabled', 'torch.scope', 'torch.keep', 'torch.slice', 'torch.version',
    'torch.getNumThreads', 'torch.setNumThreads', 'torch.adaptThreads', 'torch.threadGovernor', 'torch.manualSeed', 'torch.getRngState', 'torch.setRngState',
    'torch.dtypeCode', 'torch.dtypeFromCode', 'torch.isFloatingPoint', 'torch.typedArrayFromBuffer',
    'torch.autocastDeviceType', 'torch.cpuFamilyModel', 'torch.cpuHasBf16', 'torch.cpuKernels', 'torch.resolvePrecision', 'torch.runThreads', 'torch.usePrecision', 'torch.withPrecision', 'torch.checkDevice',
    'torch.openblasCoreName', 'F.enableFusedAttention', 'F.fusedAttentionEnabled',
  ],
  'optimizer updates (in place, outside autograd; test/optim/adam.test.ts and ema.test.ts check them)': ['torch.fusedAdamStep', 'torch.fusedEmaStep'],
};

function wrapperNames(): string[] {
  const names = Object.getOwnPropertyNames(torch.Tensor.prototype).map((m) => `Tensor.${m}`);
  names.push(...Object.keys(F).map((f) => `F.${f}`), ...Object.keys(L).map((f) => `linalg.${f}`));
  names.push(...Object.entries(torch).filter(([, v]) => typeof v === 'function').map(([f]) => `torch.${f}`));
  return names;
}

test('the gradcheck table covers every differentiable wrapper (Tensor methods, torch.*, F, linalg)', () => {
  const covered = new Set([...CASES.map((c) => c.op), ...CAST_METHODS.map((m) => `Tensor.${m}`)]);
  const excluded = new Set(Object.values(NOT_DIFFERENTIABLE).flat());
  const missing = wrapperNames().filter((name) => !covered.has(name) && !excluded.has(name));
  assert.deepEqual(missing, [], `no gradcheck case and not marked non-differentiable: ${missing.join(', ')}`);
  const both = [...covered].filter((name) => excluded.has(name));
  assert.deepEqual(both, [], 'listed as both checked and non-differentiable');
  const unknown = [...covered, ...excluded].filter((name) => !wrapperNames().includes(name));
  assert.deepEqual(unknown, [], 'table names that are not wrappers');
});

test('gradcheck itself fails on a wrong gradient (x * x.detach() has gradient x, not 2x)', () => {
  torch.manualSeed(0);
  assert.throws(() => gradcheck((a) => a.mul(a.detach()), [x([3])]), /gradcheck: d output\[0\] \/ d input 0/);
});

for (const [i, c] of CASES.entries()) {
  test(`gradcheck ${c.op}${c.name ? ` (${c.name})` : ''}`, () => {
    torch.manualSeed(1000 + i);
    const inputs = c.inputs();
    gradcheck(c.fn, inputs, c.tol);
    for (const t of inputs) t.dispose();
  });
}

test('casts pass the gradient back cast to the input dtype', () => {
  const w = torch.tensor([0.5, -2, 1.25], { dtype: 'float64' });
  const casts: [string, (a: T) => T][] = [
    ['to(float32)', (a) => a.to('float32')], ['to({dtype: float16})', (a) => a.to({ dtype: 'float16' })],
    ['type(bfloat16)', (a) => a.type('bfloat16')], ['float', (a) => a.float()], ['half', (a) => a.half()],
    ['bfloat16', (a) => a.bfloat16()], ['double', (a) => a.double()], ['cpu', (a) => a.cpu()],
  ];
  for (const [name, cast] of casts) {
    const a = x([3]);
    const y = cast(a);
    const [g] = torch.autograd.grad(y.mul(w.to(y.dtype)).sum(), [a]);
    assert.equal(g!.dtype, 'float64', name);
    assert.deepEqual(g!.tolist(), w.tolist(), name);
  }
});

test('autograd.grad with createGraph gives differentiable gradients (double backward)', () => {
  const a = torch.tensor([0.5, -1.5, 2], { dtype: 'float64', requiresGrad: true });
  const [g] = torch.autograd.grad(a.pow(3).sum(), a, { createGraph: true });
  assert.deepEqual(g!.tolist(), [0.75, 6.75, 12]);
  assert.ok(g!.requiresGrad, 'first derivative is part of a graph');
  const [gg] = torch.autograd.grad(g!.sum(), a);
  assert.deepEqual(gg!.tolist(), [3, -9, 12]);
  // Second derivatives of a few composite ops against finite differences of their gradient.
  const second: [string, (v: T) => T][] = [
    ['softmax', (v) => F.softmax(v, -1)], ['gelu tanh', (v) => F.gelu(v, 'tanh')], ['layerNorm', (v) => F.layerNorm(v, [3])],
    ['logsumexp', (v) => v.logsumexp(1)], ['silu', (v) => F.silu(v)], ['conv2d', (v) => F.conv2d(v.view(1, 1, 2, 3), v.view(1, 1, 2, 3).narrow(3, 0, 2))],
  ];
  // The finite differences run under noGrad on constant inputs: the derivative is taken on a leaf.
  const derivative = (f: (v: T) => T) => (v: T): T => torch.enableGrad(() => {
    const leaf = v.requiresGrad ? v : v.detach().requiresGrad_();
    return torch.autograd.grad(f(leaf).square().sum(), leaf, { createGraph: true })[0]!;
  });
  for (const [name, f] of second) {
    torch.manualSeed(5);
    assert.doesNotThrow(() => gradcheck(derivative(f), [x([2, 3])]), name);
  }
});

test('autograd.grad: gradOutputs weight the outputs, unused inputs are null with allowUnused, an error without', () => {
  const a = torch.tensor([1, 2], { dtype: 'float64', requiresGrad: true });
  const b = torch.tensor([3], { dtype: 'float64', requiresGrad: true });
  const [ga] = torch.autograd.grad(a.mul(3), a, { gradOutputs: [torch.tensor([1, 10], { dtype: 'float64' })] });
  assert.deepEqual(ga!.tolist(), [3, 30]);
  assert.deepEqual(torch.autograd.grad(a.sum(), [a, b], { allowUnused: true }).map((g) => g?.tolist() ?? null), [[1, 1], null]);
  assert.throws(() => torch.autograd.grad(a.sum(), [a, b]), /autograd\.grad: .*not have been used in the graph/);
});

test('requiresGrad, isLeaf, gradFn, grad accumulation, detach and noGrad', () => {
  const a = torch.tensor([1, 2, 3], { dtype: 'float64', requiresGrad: true });
  assert.equal(a.isLeaf, true);
  assert.equal(a.gradFn, null);
  const b = a.mul(a);
  assert.equal(b.requiresGrad, true);
  assert.equal(b.isLeaf, false);
  assert.equal(b.gradFn, 'MulBackward0');
  assert.equal(a.add(1).gradFn, 'AddBackward1');
  b.sum().backward();
  a.mul(2).sum().backward();
  assert.deepEqual(a.grad!.tolist(), [4, 6, 8], 'backward accumulates into .grad');
  a.grad = null;
  assert.equal(a.grad, null);

  const d = a.detach();
  assert.equal(d.requiresGrad, false);
  assert.equal(d.isLeaf, true);
  const n = torch.noGrad(() => a.mul(2));
  assert.equal(n.requiresGrad, false);
  assert.equal(n.gradFn, null);
  assert.equal(torch.isGradEnabled(), true, 'noGrad restores grad mode');
  assert.throws(() => torch.noGrad(() => { throw new Error('inside'); }), /inside/);
  assert.equal(torch.isGradEnabled(), true, 'noGrad restores grad mode after an exception');
  const e = torch.noGrad(() => torch.enableGrad(() => a.mul(2)));
  assert.equal(e.requiresGrad, true, 'enableGrad inside noGrad records');

  const c = torch.zeros([2]);
  assert.equal(c.requiresGrad, false);
  c.requiresGrad = true;
  assert.equal(c.requiresGrad, true);
  assert.throws(() => a.mul(2).requiresGrad_(false), /requiresGrad_\(false\): you can only change requires_grad flags of leaf variables/);
  assert.throws(() => { a.mul(2).requiresGrad = true; }, /requiresGrad: you can only change/);
  assert.throws(() => a.add_(1), /leaf Variable that requires grad/);
  const y = a.clone();
  y.mul_(2);
  assert.equal(y.gradFn, 'MulBackward1', 'in-place ops on non-leaves are recorded (mul_.Scalar)');
});

test('backward: gradient argument, retainGraph, createGraph', () => {
  const a = torch.tensor([1, 2], { dtype: 'float64', requiresGrad: true });
  const y = a.square();
  y.backward(torch.tensor([1, -1], { dtype: 'float64' }), { retainGraph: true });
  assert.deepEqual(a.grad!.tolist(), [2, -4]);
  y.backward(torch.tensor([1, 1], { dtype: 'float64' }));
  assert.deepEqual(a.grad!.tolist(), [4, 0]);
  assert.throws(() => y.backward(torch.tensor([1, 1], { dtype: 'float64' })), /backward: .*(second time|freed)/);
  assert.throws(() => y.backward(), /backward: grad can be implicitly created only for scalar outputs/);
  a.grad = null;
  a.pow(3).sum().backward(null, { createGraph: true });
  const g = a.grad!;
  assert.equal(g.requiresGrad, true);
  assert.deepEqual(torch.autograd.grad(g.sum(), a)[0]!.tolist(), [6, 12]);
});
