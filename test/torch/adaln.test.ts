// The addon's adaLN kernels (native/src/adaln.cc) behind torch.modulatedLayerNorm and
// torch.gatedResidual: forward and gradients against PyTorch in float64 (test/fixtures/make_adaln.py),
// in float32 and under bfloat16 autocast, with error bounds that follow from the computation; the
// op path elsewhere; the SiT block through them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '../../src/torch/index.js';
import { native } from '../../src/torch/native.js';
import { SiTBlock } from '../../src/models/sit.js';
import { F32_UNIT_ROUNDOFF, loadFixture } from '../helpers.js';

const F = torch.nnFunctional;
type T = torch.Tensor;
type Dtype = 'float32' | 'bfloat16';
const EPS = 1e-6;

interface AdaLNCase {
  name: string; x: T; shift: T; scale: T; gate: T; y: T; grad_modulated: T; grad_gated: T;
  modulated64: Record<ModulatedResult, T>; gated64: Record<GatedResult, T>;
  pytorch_bf16_error: { modulated: Record<ModulatedResult, number>; gated: Record<GatedResult, number> };
}
const MODULATED = ['out', 'grad_x', 'grad_shift', 'grad_scale'] as const;
const GATED = ['out', 'grad_x', 'grad_gate', 'grad_y'] as const;
type ModulatedResult = (typeof MODULATED)[number];
type GatedResult = (typeof GATED)[number];
const { cases } = loadFixture('adaln_kernel.json') as { cases: AdaLNCase[] };

// The kernels run where the CPU has AVX-512 (as the activation kernels); elsewhere these functions are the op path.
const kernels = native.fusedActivations();

/**
 * Runs `fn` as a block does: x float32 (the residual stream), the per-sample vectors in `dtype` (adaLN's
 * Linear output: bfloat16 under autocast), bfloat16 under CPU autocast. The vectors are scaled by
 * `perturb`, which the bounds must catch.
 */
function run<R extends string>(names: readonly R[], fn: (inputs: T[]) => T, inputs: T[], vectors: number[], gradOut: T, dtype: Dtype, perturb = 1): Record<R, T> {
  const leaves = inputs.map((t, i) => (vectors.includes(i) ? t.mul(perturb).to(dtype) : t.clone()).requiresGrad_());
  const out = dtype === 'bfloat16' ? torch.withPrecision('bf16', 'cpu', () => fn(leaves)) : fn(leaves);
  out.backward(gradOut.to(out.dtype));
  return Object.fromEntries(names.map((name, i) => [name, i === 0 ? out.detach() : leaves[i - 1]!.grad!])) as Record<R, T>;
}

const modulated = (c: AdaLNCase, dtype: Dtype, perturb = 1): Record<ModulatedResult, T> =>
  run(MODULATED, ([x, shift, scale]) => torch.modulatedLayerNorm(x!, shift!, scale!, EPS), [c.x, c.shift, c.scale], [1, 2], c.grad_modulated, dtype, perturb);
const gated = (c: AdaLNCase, dtype: Dtype, perturb = 1): Record<GatedResult, T> =>
  run(GATED, ([x, gate, y]) => torch.gatedResidual(x!, gate!, y!), [c.x, c.gate, c.y.to(dtype)], [1], c.grad_gated, dtype, perturb);

/**
 * Per result, the magnitude of the terms that make it (float64) and the number of float32 roundings
 * that can fall on them, 4 per term of the longest sum for slack. The norm: a mean and a centred sum
 * of squares over D (the mean's error, up to D u max|x| per row, moves x^ by rstd times that), then
 * x^ (1 + scale) + shift; its backward sums g = dy (1 + scale) and g x^ over D, and the gradients of
 * shift and scale sum over T (blocks of 32 rows, then the blocks). The gated residual rounds the
 * product and the sum; gate's gradient sums over T.
 */
function modulatedTerms(c: AdaLNCase): Record<ModulatedResult, [T, number]> {
  const [t, d] = c.x.shape.slice(1) as [number, number];
  const x = c.x.double();
  const rstd = x.var(-1, { correction: 0, keepdim: true }).add(EPS).rsqrt();
  const meanError = x.abs().amax(-1, true).mul(rstd); // rstd max|x|: the mean's error in x^, per D u
  const xhat = F.layerNorm(x, [d], null, null, EPS).abs().add(meanError);
  const factor = c.scale.double().add(1).abs().unsqueeze(1);
  const dy = c.grad_modulated.double().abs();
  const g = dy.mul(factor);
  return {
    out: [xhat.mul(factor).add(c.shift.double().abs().unsqueeze(1)), 4 * d],
    grad_x: [rstd.mul(g.add(g.mean([-1], true)).add(xhat.mul(g.mul(xhat).mean([-1], true)))), 4 * d],
    grad_shift: [dy.sum(1), 4 * t],
    grad_scale: [dy.mul(xhat).sum(1), 4 * (t + d)],
  };
}

function gatedTerms(c: AdaLNCase): Record<GatedResult, [T, number]> {
  const t = c.x.size(1);
  const [x, gate, y, dh] = [c.x, c.gate.unsqueeze(1), c.y, c.grad_gated].map((v) => v.double().abs()) as [T, T, T, T];
  return { out: [x.add(gate.mul(y)), 4], grad_x: [dh, 4], grad_gate: [dh.mul(y).sum(1), 4 * t], grad_y: [dh.mul(gate), 4] };
}

/**
 * The largest error over the bound per result: n u times the terms, and where the result is rounded to
 * bfloat16 (the norm's output, and every gradient of a bfloat16 input), that rounding (2^-9 relative,
 * twice for slack, on the reference and the terms, as the attention kernel's test).
 */
function boundRatios<R extends string>(results: Record<R, T>, reference: Record<R, T>, terms: Record<R, [T, number]>): Record<R, number> {
  const ratios = {} as Record<R, number>;
  for (const name of Object.keys(terms) as R[]) {
    const [magnitude, n] = terms[name];
    const ref = reference[name];
    let bound = magnitude.mul(n * F32_UNIT_ROUNDOFF);
    if (results[name].dtype === 'bfloat16') bound = bound.add(ref.abs().add(magnitude).mul(2 ** -8));
    ratios[name] = results[name].double().sub(ref).abs().div(bound.add(1e-30)).max().item();
  }
  return ratios;
}

const within = (ratios: Record<string, number>): boolean => Object.values(ratios).every((r) => r <= 1);

test('adaLN kernels: float32 and bfloat16 within the bounds of their roundings against float64, vectors off by 1.001 (float32) or 1.03 (bfloat16) are not', () => {
  for (const c of cases) {
    for (const dtype of ['float32', 'bfloat16'] as const) {
      const off = dtype === 'float32' ? 1.001 : 1.03;
      const checks = [
        ['modulatedLayerNorm', (p: number) => boundRatios(modulated(c, dtype, p), c.modulated64, modulatedTerms(c))],
        ['gatedResidual', (p: number) => boundRatios(gated(c, dtype, p), c.gated64, gatedTerms(c))],
      ] as const;
      for (const [what, ratios] of checks) {
        const right = ratios(1);
        // The op path (no AVX-512) rounds 1 + scale and gate * y to bfloat16 under autocast: only float32 is held to the kernel's bound there.
        if (kernels || dtype === 'float32') assert.ok(within(right), `${c.name}, ${what}, ${dtype}: error over bound ${JSON.stringify(right)}`);
        const wrong = ratios(off);
        assert.ok(!within(wrong), `${c.name}, ${what}, ${dtype}: vectors off by ${off} passed ${JSON.stringify(wrong)}`);
      }
    }
    if (!kernels) continue;
    // bfloat16: at least as accurate as PyTorch's own path (which rounds 1 + scale and gate * y to bfloat16).
    const ours = { modulated: modulated(c, 'bfloat16'), gated: gated(c, 'bfloat16') };
    for (const [op, names, reference] of [['modulated', MODULATED, c.modulated64], ['gated', GATED, c.gated64]] as const) {
      for (const name of names) {
        const ref = (reference as Record<string, T>)[name]!;
        const error = (ours[op] as Record<string, T>)[name]!.double().sub(ref).abs().max().item();
        const theirs = (c.pytorch_bf16_error[op] as Record<string, number>)[name]!;
        // Plus the fixture's 12 digits (x's gradient is exact on both sides: dh itself).
        assert.ok(error <= 1.1 * theirs + 1e-11 * ref.abs().max().item(), `${c.name}: bfloat16 ${op} ${name} error ${error} vs PyTorch's ${theirs}`);
      }
    }
  }
});

test('adaLN kernels: the op path outside them, strided inputs, create_graph, and the output dtype under autocast', () => {
  torch.manualSeed(4);
  const [n, t, d] = [2, 20, 32];
  const x = torch.randn([n, t, d]).mul(2);
  const ada = torch.randn([n, 3 * d]);
  const [shift, scale, gate] = ada.chunk(3, 1) as [T, T, T]; // views with a row stride of 3 d, as adaLN's chunks
  const opsModulated = (v: T, s: T, c: T): T => F.layerNorm(v, [v.size(-1)], null, null, EPS).mul(c.unsqueeze(1).add(1)).add(s.unsqueeze(1));
  const close = (a: T, b: T, tol: number, what: string): void => {
    const error = a.double().sub(b.double()).abs().max().item();
    assert.ok(error <= tol, `${what}: ${error} > ${tol}`);
  };
  // float32: the op path's values (the norm's statistics in another summation order: |x^| < 5 here, D = 32).
  close(torch.modulatedLayerNorm(x, shift, scale, EPS), opsModulated(x, shift, scale), 1e-5, 'modulatedLayerNorm vs ops');
  const y = torch.randn([n, t, d]);
  assert.equal(torch.gatedResidual(x, gate, y).sub(x.add(gate.unsqueeze(1).mul(y))).abs().max().item(), 0, 'gatedResidual vs ops, float32');
  // A transposed x: copied, the same values.
  const xt = x.transpose(0, 1).contiguous().transpose(0, 1);
  assert.ok(!xt.isContiguous());
  assert.equal(torch.modulatedLayerNorm(xt, shift, scale, EPS).sub(torch.modulatedLayerNorm(x, shift, scale, EPS)).abs().max().item(), 0, 'strided x');
  assert.equal(torch.gatedResidual(xt, gate, y.transpose(0, 1).contiguous().transpose(0, 1)).sub(torch.gatedResidual(x, gate, y)).abs().max().item(), 0, 'strided x, y');
  // Under bfloat16 autocast the norm's output is bfloat16 from the kernel (the Linear it feeds would cast it), float32 from the ops.
  const bf16Out = torch.withPrecision('bf16', 'cpu', () => torch.modulatedLayerNorm(x, shift.bfloat16(), scale.bfloat16(), EPS));
  assert.equal(bf16Out.dtype, kernels ? 'bfloat16' : 'float32');
  assert.equal(torch.withPrecision('bf16', 'cpu', () => torch.gatedResidual(x, gate.bfloat16(), y.bfloat16())).dtype, 'float32');
  // create_graph: the gradients are differentiable (recomputed by libtorch's ops) and equal the op path's.
  const second = (fn: (v: T) => T): T => {
    const leaf = x.clone().requiresGrad_();
    const [first] = torch.autograd.grad(fn(leaf).square().sum(), leaf, { createGraph: true });
    return torch.autograd.grad(first!.square().sum(), leaf)[0]!;
  };
  const scaleLeaf = scale.clone().requiresGrad_();
  close(second((v) => torch.modulatedLayerNorm(v, shift, scaleLeaf, EPS)), second((v) => opsModulated(v, shift, scaleLeaf)), 1e-3, 'double backward, norm');
  close(second((v) => torch.gatedResidual(v, gate, v.square())), second((v) => v.add(gate.unsqueeze(1).mul(v.square()))), 1e-4, 'double backward, gate');
  // Outside the kernels: D not a multiple of 16, float64, a 2-D x.
  for (const [v, s] of [[x.narrow(2, 0, 24), shift.narrow(1, 0, 24)], [x.double(), shift.double()], [x.select(0, 0), shift]] as [T, T][]) {
    assert.equal(native.modulatedLayerNorm(v._handle, s._handle, s._handle, EPS), null, `op path for [${v.shape}] ${v.dtype}`);
    assert.equal(native.gatedResidual(v._handle, s._handle, v._handle), null, `op path for [${v.shape}] ${v.dtype}`);
  }
  if (!kernels) assert.equal(native.gatedResidual(x._handle, gate._handle, y._handle), null, 'no AVX-512: op path');
  else assert.notEqual(native.gatedResidual(x._handle, gate._handle, y._handle), null, 'AVX-512: the kernel');
  // D 24 through the public functions: the ops, bit for bit.
  assert.equal(torch.modulatedLayerNorm(x.narrow(2, 0, 24), shift.narrow(1, 0, 24), scale.narrow(1, 0, 24), EPS)
    .sub(opsModulated(x.narrow(2, 0, 24), shift.narrow(1, 0, 24), scale.narrow(1, 0, 24))).abs().max().item(), 0, 'D 24: ops');
});

test('a SiT block through the kernels equals the same block through the ops (float32, forward and every gradient)', () => {
  torch.manualSeed(6);
  const block = new SiTBlock(32, 2);
  // adaLN-Zero starts at 0 (gates 0): random weights, so that every branch counts.
  for (const p of block.parameters()) torch.noGrad(() => p.copy_(torch.randn(p.shape).mul(0.2)));
  const x = torch.randn([2, 9, 32]).requiresGrad_();
  const c = torch.randn([2, 32]);
  const kernelOut = block.forward(x, c);
  kernelOut.square().sum().backward();
  const kernelGrads = [x.grad!.clone(), ...block.parameters().map((p) => p.grad!.clone())];
  x.grad = null;
  block.zeroGrad();
  const [shiftMsa, scaleMsa, gateMsa, shiftMlp, scaleMlp, gateMlp] = block.adaLNModulation.forward(c).chunk(6, 1) as T[];
  const modulate = (v: T, s: T, k: T): T => F.layerNorm(v, [32], null, null, EPS).mul(k.unsqueeze(1).add(1)).add(s.unsqueeze(1));
  const h = x.add(gateMsa!.unsqueeze(1).mul(block.attn.forward(modulate(x, shiftMsa!, scaleMsa!))));
  const opsOut = h.add(gateMlp!.unsqueeze(1).mul(block.mlp.forward(modulate(h, shiftMlp!, scaleMlp!))));
  opsOut.square().sum().backward();
  const opsGrads = [x.grad!, ...block.parameters().map((p) => p.grad!)];
  const scaleOf = (v: T): number => v.abs().max().item();
  assert.ok(kernelOut.sub(opsOut).abs().max().item() <= 1e-5 * scaleOf(opsOut), 'block output');
  kernelGrads.forEach((g, i) => assert.ok(g.sub(opsGrads[i]!).abs().max().item() <= 1e-4 * scaleOf(opsGrads[i]!), `gradient ${i}`));
});
