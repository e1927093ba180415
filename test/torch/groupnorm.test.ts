// The addon's silu(group_norm(x)) kernel (native/src/groupnorm.cc) behind F.groupNormSilu: its bfloat16
// output under CPU bfloat16 autocast against PyTorch in float64 (test/fixtures/make_groupnorm_silu.py),
// with an error bound that follows from the computation; the op path everywhere else.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '../../src/torch/index.js';
import { native } from '../../src/torch/native.js';
import { F32_UNIT_ROUNDOFF, loadFixture } from '../helpers.js';

const F = torch.nnFunctional;
type T = torch.Tensor;

interface Case { name: string; groups: number; x: T; weight: T | null; bias: T | null; out64: T; pytorch_bf16_error: number }
const { eps: EPS, cases } = loadFixture('groupnorm_silu.json') as { eps: number; cases: Case[] };
const BF16_UNIT_ROUNDOFF = 2 ** -8;

// The kernel runs where the CPU has AVX-512 (as the activation kernels); elsewhere F.groupNormSilu is the op path.
const kernel = native.fusedActivations();
const bf16Autocast = <R>(fn: () => R): R => torch.withPrecision('bf16', 'cpu', fn);

/**
 * Per element, how far the kernel's output may be from float64's: the rounding to bfloat16 (half a
 * unit in the last place of 8 bits) plus the float32 work before it. That is x a + (b - mean a) with
 * a = rstd w, whose terms are at most |x - mean| rstd |w| + |b| (and the mean's and rstd's errors,
 * relative to them, from sums of up to 1,024 float32 terms in blocks added in double), then SiLU's
 * exp and division, a few roundings of |silu|; 64 roundings of the terms leave room for all of them.
 */
function bound(c: Case): T {
  const x = c.x.double();
  const normed = F.groupNorm(x, c.groups, null, null, EPS);
  const shape = [1, x.size(1), ...Array(x.dim() - 2).fill(1)];
  const scaled = c.weight === null ? normed.abs() : normed.abs().mul(c.weight.double().abs().view(shape));
  const terms = c.bias === null ? scaled : scaled.add(c.bias.double().abs().view(shape));
  return c.out64.abs().mul(BF16_UNIT_ROUNDOFF).add(terms.add(c.out64.abs()).add(1).mul(64 * F32_UNIT_ROUNDOFF));
}

const kernelOutput = (c: Case, weightFactor = 1): T =>
  bf16Autocast(() => F.groupNormSilu(c.x, c.groups, c.weight === null ? null : c.weight.mul(weightFactor), c.bias, EPS));

test('silu(group_norm(x)) in bfloat16 under autocast: within the bound from its roundings of PyTorch in float64, no worse than PyTorch\'s own bfloat16 path, and a weight off by 1.01 is caught', (t) => {
  if (!kernel) return t.skip('no AVX-512: F.groupNormSilu is the op path here');
  for (const c of cases) {
    const out = kernelOutput(c);
    assert.equal(out.dtype, 'bfloat16', c.name);
    assert.deepEqual(out.shape, c.x.shape, c.name);
    const error = out.double().sub(c.out64).abs();
    const worst = error.div(bound(c)).max().item();
    assert.ok(worst <= 1, `${c.name}: error ${worst.toFixed(3)} of the bound`);
    const maxError = error.max().item();
    assert.ok(maxError <= 1.1 * c.pytorch_bf16_error, `${c.name}: max error ${maxError} against PyTorch's bfloat16 path's ${c.pytorch_bf16_error}`);
    if (c.weight !== null) {
      const perturbed = kernelOutput(c, 1.01).double().sub(c.out64).abs().div(bound(c)).max().item();
      assert.ok(perturbed > 1, `${c.name}: a weight off by 1.01 gives ${perturbed.toFixed(3)} of the bound`);
    }
  }
});

test('a strided input gives the contiguous input\'s result, bit for bit', (t) => {
  if (!kernel) return t.skip('no AVX-512');
  const c = cases[0]!;
  const channelsLast = c.x.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2]);
  assert.notDeepEqual(channelsLast.stride(), c.x.stride());
  const strided = bf16Autocast(() => F.groupNormSilu(channelsLast, c.groups, c.weight, c.bias, EPS));
  assert.equal(strided.float().sub(kernelOutput(c).float()).abs().max().item(), 0);
});

test('the op path where the kernel does not take the call: outside autocast, with a gradient, for float32 input', () => {
  const c = cases[0]!;
  const ops = (x: T): T => F.silu(F.groupNorm(x, c.groups, c.weight, c.bias, EPS));
  const exactly = (a: T, b: T, what: string): void => {
    assert.equal(a.dtype, b.dtype, what);
    assert.equal(a.sub(b).abs().max().item(), 0, what);
  };
  // bfloat16 x with float32 weights outside autocast: group_norm in float32, as the op path gives.
  assert.equal(native.groupNormSilu(c.x._handle, c.groups, c.weight!._handle, c.bias!._handle, EPS), null);
  exactly(F.groupNormSilu(c.x, c.groups, c.weight, c.bias, EPS), ops(c.x), 'outside autocast');
  bf16Autocast(() => {
    exactly(F.groupNormSilu(c.x.float(), c.groups, c.weight, c.bias, EPS), ops(c.x.float()), 'float32 x');
    const x = c.x.clone().requiresGrad_();
    const out = F.groupNormSilu(x, c.groups, c.weight, c.bias, EPS);
    exactly(out, ops(c.x), 'x with a gradient');
    out.sum().backward();
    assert.deepEqual(x.grad?.shape, c.x.shape);
    torch.noGrad(() => assert.equal(F.groupNormSilu(x, c.groups, c.weight, c.bias, EPS).dtype, kernel ? 'bfloat16' : 'float32', 'no_grad takes the kernel'));
  });
  // What the op path refuses, the call refuses.
  assert.throws(() => bf16Autocast(() => F.groupNormSilu(c.x, 7, c.weight, c.bias, EPS)), /group/i);
});
