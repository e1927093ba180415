// nn.functional equals PyTorch 1.13 on fixed inputs (test/fixtures/make_torch.py), in float32
// (relative 1e-5) and float64 (relative 1e-6); plus the argument checks the wrappers add.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '../../src/torch/index.js';
import { native } from '../../src/torch/native.js';
import { loadFixture, assertClose } from '../helpers.js';

const F = torch.nnFunctional;
type T = torch.Tensor;
const fx = loadFixture('torch_functional.json');

/** allclose with rtol 1e-5 (float32) or 1e-6 (float64), atol the same fraction of the largest |expected|. */
function assertMatches(actual: T, expected: T, what: string): void {
  assert.equal(actual.dtype, expected.dtype, `${what}: dtype`);
  const rtol = expected.dtype === 'float64' ? 1e-6 : 1e-5;
  assertClose(actual, expected, rtol, rtol * expected.abs().max().item(), what);
}

/** Runs `fn` on the float32 inputs and on the same values in float64 and compares with out32/out64. */
function assertBoth(expected: { out32: T; out64: T }, what: string, fn: (...xs: (T | null)[]) => T, ...inputs: (T | null)[]): void {
  assertMatches(fn(...inputs), expected.out32, `${what} float32`);
  assertMatches(fn(...inputs.map((t) => t?.double() ?? null)), expected.out64, `${what} float64`);
}

test('conv2d equals PyTorch (bias, stride, padding, dilation, groups)', () => {
  for (const [i, c] of (fx.conv2d as any[]).entries()) {
    const o = { stride: c.stride, padding: c.padding, dilation: c.dilation, groups: c.groups };
    assertBoth(c, `conv2d case ${i}`, (x, w, b) => F.conv2d(x!, w!, b, o), c.input, c.weight, c.bias);
  }
});

test('convTranspose2d equals PyTorch (stride, padding, outputPadding, groups, dilation)', () => {
  for (const [i, c] of (fx.conv_transpose2d as any[]).entries()) {
    const o = { stride: c.stride, padding: c.padding, outputPadding: c.output_padding, groups: c.groups, dilation: c.dilation };
    assertBoth(c, `convTranspose2d case ${i}`, (x, w, b) => F.convTranspose2d(x!, w!, b, o), c.input, c.weight, c.bias);
  }
});

test('groupNorm and layerNorm equal PyTorch', () => {
  const g = fx.group_norm;
  assertBoth(g, 'groupNorm', (x, w, b) => F.groupNorm(x!, g.groups, w, b), g.input, g.weight, g.bias);
  const l = fx.layer_norm;
  assertBoth(l, 'layerNorm', (x, w, b) => F.layerNorm(x!, [3, 8], w, b), l.input, l.weight, l.bias);
});

test('batchNorm equals PyTorch in training (output and running-stat update) and eval', () => {
  const c = fx.batch_norm;
  for (const [dtype, suffix] of [['float32', '32'], ['float64', '64']] as const) {
    const [x, w, b] = [c.input, c.weight, c.bias].map((t: T) => t.to(dtype));
    const runningMean = c.running_mean.to(dtype).clone();
    const runningVar = c.running_var.to(dtype).clone();
    const y = F.batchNorm(x!, runningMean, runningVar, { weight: w, bias: b, training: true, momentum: 0.2 });
    assertMatches(y, c[`train${suffix}`], `batchNorm training ${dtype}`);
    assertMatches(runningMean, c[`running_mean${suffix}`], `running mean ${dtype}`);
    assertMatches(runningVar, c[`running_var${suffix}`], `running var ${dtype}`);
    const e = F.batchNorm(x!, c.running_mean.to(dtype), c.running_var.to(dtype), { weight: w, bias: b });
    assertMatches(e, c[`eval${suffix}`], `batchNorm eval ${dtype}`);
  }
});

test('scaledDotProductAttention equals the attention formula (plain, bool mask, float mask + scale, causal)', () => {
  const a = fx.attention;
  const sdpa = F.scaledDotProductAttention;
  assertBoth(a.plain, 'plain', (q, k, v) => sdpa(q!, k!, v!), a.q, a.k, a.v);
  assertBoth(a.bool, 'bool mask', (q, k, v) => sdpa(q!, k!, v!, { attnMask: a.bool_mask }), a.q, a.k, a.v);
  assertBoth(a.float, 'float mask', (q, k, v) => sdpa(q!, k!, v!, { attnMask: a.float_mask.to(q!.dtype), scale: 0.2 }), a.q, a.k, a.v);
  const first5 = (t: T): T => t.narrow(2, 0, 5);
  assertBoth(a.causal, 'causal', (q, k, v) => sdpa(q!, k!, v!, { isCausal: true }), a.q, first5(a.k), first5(a.v));
});

test('interpolate equals PyTorch (nearest, bilinear, bicubic, alignCorners, antialias)', () => {
  const i = fx.interpolate;
  const cases: [string, T, (x: T) => T][] = [
    ['bicubic_down', i.input, (x) => F.interpolate(x, { size: [5, 3], mode: 'bicubic' })],
    ['bicubic_up', i.small, (x) => F.interpolate(x, { scaleFactor: 2, mode: 'bicubic' })],
    ['bicubic_aa_down', i.input, (x) => F.interpolate(x, { size: [5, 3], mode: 'bicubic', antialias: true })],
    ['bicubic_align_corners', i.small, (x) => F.interpolate(x, { size: [7, 6], mode: 'bicubic', alignCorners: true })],
    ['bilinear_down', i.input, (x) => F.interpolate(x, { size: [4, 6], mode: 'bilinear' })],
    ['bilinear_up_align_corners', i.small, (x) => F.interpolate(x, { scaleFactor: 1.5, mode: 'bilinear', alignCorners: true })],
    ['bilinear_aa_down', i.input, (x) => F.interpolate(x, { size: [4, 3], mode: 'bilinear', antialias: true })],
    ['nearest_down', i.input, (x) => F.interpolate(x, { size: [4, 3], mode: 'nearest' })],
    ['nearest_up', i.small, (x) => F.interpolate(x, { scaleFactor: 2 })],
  ];
  for (const [name, input, fn] of cases) assertBoth(i[name], name, (x) => fn(x!), input);
});

test('gelu (erf and tanh), softmax, logSoftmax and matmul equal PyTorch', () => {
  assertBoth(fx.gelu_tanh, 'gelu tanh', (x) => F.gelu(x!, 'tanh'), fx.gelu_tanh.input);
  assertBoth(fx.gelu, 'gelu', (x) => F.gelu(x!), fx.gelu.input);
  assertBoth(fx.softmax, 'softmax', (x) => F.softmax(x!, -1), fx.softmax.input);
  assertBoth(fx.log_softmax, 'logSoftmax', (x) => F.logSoftmax(x!, 0), fx.log_softmax.input);
  assertBoth(fx.matmul, 'matmul', (a, b) => a!.matmul(b!), fx.matmul.a, fx.matmul.b);
});

// The addon's fused activations (native/src/activations.cc); float32 SiLU stays libtorch's.
const FUSED_ACTIVATIONS: { name: string; activation: (x: T) => T; libtorch: (x: T) => T; fixture: string; fusesFloat32: boolean }[] = [
  { name: 'tanh GELU', activation: (x) => F.gelu(x, 'tanh'), libtorch: (x) => torch.op('aten::gelu')(x, 'tanh'), fixture: 'gelu_tanh_kernel', fusesFloat32: true },
  { name: 'SiLU', activation: F.silu, libtorch: (x) => torch.op('aten::silu')(x), fixture: 'silu_kernel', fusesFloat32: false },
];
for (const { name, activation, libtorch, fixture, fusesFloat32 } of FUSED_ACTIVATIONS) {
  test(`the fused ${name}: as accurate as PyTorch's, rounded once in bfloat16, any dense layout, libtorch's elsewhere`, () => {
    const c = fx[fixture];
    const x: T = c.input;
    if (!native.fusedActivations()) {
      // A CPU without AVX-512 runs libtorch's kernels.
      for (const v of [x, c.input_bf16 as T]) assert.equal(activation(v).float().sub(libtorch(v).float()).abs().max().item(), 0, 'libtorch\'s');
      return;
    }
    const out = activation(x);
    assert.equal(out.dtype, 'float32');
    const leaf = x.clone().requiresGrad_();
    activation(leaf).backward(c.grad_out);
    if (fusesFloat32) {
      // Error against float64 per max(1, |x|): the kernel's (one exp, a division) against PyTorch's float32
      // kernel on the same inputs; both are a few float32 ulps. 1.5x PyTorch's leaves room for rounding
      // luck, and an error in the exp polynomial or the range reduction would be orders beyond it.
      const scaled = (t: T, ref: T): number => t.double().sub(ref).abs().div(x.double().abs().clamp(1, Infinity)).max().item();
      assert.ok(scaled(out, c.ref64) <= 1.5 * scaled(c.out32, c.ref64), `forward error ${scaled(out, c.ref64)} vs PyTorch ${scaled(c.out32, c.ref64)}`);
      assertClose(out, c.out32, 1e-6, 1e-6, `${name} vs PyTorch float32`);
      // The gradient: PyTorch's 1 - s cancels as s -> 1; the kernel takes it as exp(.) s.
      const gradError = (g: T): number => g.double().sub(c.grad64).abs().max().item();
      assert.ok(gradError(leaf.grad!) <= gradError(c.grad32), `gradient error ${gradError(leaf.grad!)} vs PyTorch ${gradError(c.grad32)}`);
    } else {
      assert.equal(out.sub(c.out32).abs().max().item(), 0, 'float32 is PyTorch\'s, bit for bit');
      assert.equal(leaf.grad!.sub(c.grad32).abs().max().item(), 0, 'float32 gradient is PyTorch\'s, bit for bit');
    }
    // bfloat16: computed in float32 and rounded once, so it is the correctly rounded value except where
    // the float32 result lies within its error of a rounding midpoint (PyTorch 1.13 rounds between steps).
    const xb: T = c.input_bf16;
    const outb = activation(xb);
    assert.equal(outb.dtype, 'bfloat16');
    const rounded = c.ref_bf16.float().bfloat16();
    const mismatches = outb.ne(rounded).sum().item();
    assert.ok(mismatches <= x.numel() / 1000, `bfloat16: ${mismatches} of ${x.numel()} not correctly rounded`);
    assertClose(outb.double(), c.ref_bf16, 2 ** -8, 1e-30, 'bfloat16 within one rounding of float64');
    const leafb = xb.clone().requiresGrad_();
    activation(leafb).backward(c.grad_out.bfloat16());
    assert.equal(leafb.grad!.dtype, 'bfloat16');
    assertClose(leafb.grad!.double(), c.grad_out.bfloat16().double().mul(c.deriv_bf16), 2 ** -7, 1e-30, 'bfloat16 gradient');
    // Layouts (in bfloat16, which both kernels take): a dense input (a transpose, channels-last) is read
    // in memory order and keeps its strides, a gradient laid out otherwise is matched to it, and a
    // strided view is made contiguous.
    const m = xb.narrow(0, 0, 3072).view(48, 64);
    const transposed = activation(m.t());
    assert.deepEqual(transposed.stride(), m.t().stride());
    assert.equal(transposed.sub(activation(m).t()).abs().max().item(), 0, 'transposed input');
    assert.equal(activation(m.narrow(1, 0, 33)).sub(activation(m.narrow(1, 0, 33).contiguous())).abs().max().item(), 0, 'strided input');
    const channelsLast = xb.narrow(0, 0, 3072).view(3, 16, 16, 4).permute(0, 3, 1, 2).clone().requiresGrad_();
    const nchw = channelsLast.detach().contiguous().requiresGrad_();
    const gradNchw = c.grad_out.bfloat16().narrow(0, 0, 3072).view(3, 4, 16, 16);
    activation(channelsLast).backward(gradNchw);
    activation(nchw).backward(gradNchw);
    assert.deepEqual(activation(channelsLast).stride(), [1024, 1, 64, 4]);
    assert.equal(channelsLast.grad!.sub(nchw.grad!).abs().max().item(), 0, 'channels-last gradient');
    // float64 (libtorch's kernel) and the second derivative (through differentiable libtorch ops).
    assert.equal(activation(x.double()).sub(libtorch(x.double())).abs().max().item(), 0, 'float64 is libtorch\'s');
    // In a dtype the kernel takes, so that its autograd Function's create_graph branch runs.
    const second = (g: (v: T) => T): T => {
      const v = (fusesFloat32 ? x : xb).narrow(0, 0, 64).clone().requiresGrad_();
      const [first] = torch.autograd.grad(g(v).sum(), v, { createGraph: true });
      return torch.autograd.grad(first!.square().sum(), v)[0]!;
    };
    const tolerance = fusesFloat32 ? 1e-5 : 2 ** -7;
    assertClose(second(activation).float(), second(libtorch).float(), tolerance, tolerance, 'double backward');
  });
}

test('interpolate and pad reject contradictory arguments with errors that say why', () => {
  const x = torch.zeros([1, 1, 4, 4]);
  assert.throws(() => F.interpolate(x, {}), /interpolate: give exactly one of size and scaleFactor/);
  assert.throws(() => F.interpolate(x, { size: 2, scaleFactor: 2 }), /exactly one of size and scaleFactor/);
  assert.throws(() => F.interpolate(x, { size: 2, alignCorners: true }), /alignCorners only applies to bilinear and bicubic/);
  assert.throws(() => F.interpolate(x, { size: 2, antialias: true }), /antialias only applies to bilinear and bicubic/);
  assert.throws(() => F.pad(torch.zeros([2, 3]), [1, 1], 'reflect'), /pad: mode 'reflect' is implemented for 4-D input/);
  assert.throws(() => F.dropout(x, 1.5), /dropout: p must be in \[0, 1\], got 1.5/);
});

test('dropout: p = 0 and eval are the identity; with a fixed seed the mask repeats and survivors scale by 1/(1-p)', () => {
  const x = torch.ones([1000], { dtype: 'float64' });
  assert.deepEqual(F.dropout(x, 0).tolist(), x.tolist());
  assert.deepEqual(F.dropout(x, 0.5, false).tolist(), x.tolist());
  torch.manualSeed(7);
  const a = F.dropout(x, 0.25);
  torch.manualSeed(7);
  const b = F.dropout(x, 0.25);
  assert.deepEqual(a.tolist(), b.tolist());
  const values = new Set(a.tolist() as number[]);
  assert.deepEqual([...values].sort(), [0, 1 / 0.75]);
  const kept = a.ne(0).double().mean().item();
  assert.ok(Math.abs(kept - 0.75) < 0.05, `kept fraction ${kept}`);
});

test('embedding: the padding row (negative index counts from the end) gets no gradient', () => {
  const weight = torch.ones([4, 2], { dtype: 'float64', requiresGrad: true });
  const ids = torch.tensor([[3, 1], [3, 0]]);
  F.embedding(ids, weight, -1).sum().backward();
  assert.deepEqual(weight.grad!.tolist(), [[1, 1], [1, 1], [0, 0], [0, 0]]);
  assert.throws(() => F.embedding(ids, weight, 4), /embedding: paddingIdx 4 is out of range for a weight of 4 rows/);
  assert.throws(() => F.embedding(ids, weight, -5), /paddingIdx -5 is out of range/);
});
