// The addon's fused attention (native/src/attention.cc) behind F.scaledDotProductAttention: forward and
// gradients against PyTorch's math attention in float64 (test/fixtures/make_attention.py), in float32
// and bfloat16, with error bounds that follow from the computation; the math path elsewhere.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '../../src/torch/index.js';
import { native } from '../../src/torch/native.js';
import { loadFixture } from '../helpers.js';

const F = torch.nnFunctional;
type T = torch.Tensor;
const { cases } = loadFixture('attention_kernel.json') as { cases: AttentionCase[] };

interface AttentionCase {
  name: string; query: T; key: T; value: T; grad_out: T; scale: number;
  out64: T; grad_q64: T; grad_k64: T; grad_v64: T;
  pytorch_bf16_error: { out: number; grad_q: number; grad_k: number; grad_v: number };
}
type Results = { out: T; grad_q: T; grad_k: T; grad_v: T };

/** The kernel's output, in every dtype it takes (F.scaledDotProductAttention keeps bfloat16 on the math path where oneDNN has AMX). */
function kernel(q: T, k: T, v: T, scale: number): T {
  const out = native.attention(q._handle, k._handle, v._handle, scale, true);
  assert.ok(out !== null, 'the kernel takes these inputs');
  return new torch.Tensor(out);
}

/** Output and gradients of the kernel on the case's inputs in `dtype`, with `scale`. */
function attend(c: AttentionCase, dtype: 'float32' | 'bfloat16', scale: number): Results {
  const [q, k, v] = [c.query, c.key, c.value].map((t) => t.to(dtype).clone().requiresGrad_()) as [T, T, T];
  const out = kernel(q, k, v, scale);
  out.backward(c.grad_out.to(dtype));
  return { out: out.detach(), grad_q: q.grad!, grad_k: k.grad!, grad_v: v.grad! };
}

/**
 * Per element, the sum of the magnitudes of the terms that make each result (float64): out = P V,
 * dV = P^T dO, dS = P (dO V^T - rowsum(dO o)), dQ = scale dS K, dK = scale dS^T Q. A float32
 * computation of a sum of n terms errs by at most about n u times this sum (u = 2^-24); an error
 * delta in a score moves P by delta P (relative), which the same magnitudes carry into each result.
 */
function magnitudes(c: AttentionCase): { terms: Results; scoreMagnitude: number } {
  const [q, k, v, g] = [c.query, c.key, c.value, c.grad_out].map((t) => t.double());
  const probs = F.softmax(q!.mul(c.scale).matmul(k!.transpose(-2, -1)), -1);
  const absScores = q!.abs().mul(c.scale).matmul(k!.abs().transpose(-2, -1));
  const gradScores = probs.mul(g!.abs().matmul(v!.abs().transpose(-2, -1)).add(g!.abs().mul(c.out64.abs()).sum([-1], true)));
  return {
    scoreMagnitude: absScores.max().item(),
    terms: {
      out: probs.matmul(v!.abs()),
      grad_v: probs.transpose(-2, -1).matmul(g!.abs()),
      grad_q: gradScores.matmul(k!.abs()).mul(c.scale),
      grad_k: gradScores.transpose(-2, -1).matmul(q!.abs()).mul(c.scale),
    },
  };
}

const RESULTS = ['out', 'grad_q', 'grad_k', 'grad_v'] as const;
const reference = (c: AttentionCase, what: (typeof RESULTS)[number]): T =>
  ({ out: c.out64, grad_q: c.grad_q64, grad_k: c.grad_k64, grad_v: c.grad_v64 })[what];

/**
 * The largest error over the bound per result: float32 accumulation of the E-term scores and the
 * S- and L-term sums, n = 4 (E + S + L) roundings of u, each carried through the score magnitude
 * (1 + max |s|); bfloat16 adds the result's rounding (2^-9 relative, twice for slack) and, on the
 * magnitudes, two bfloat16 roundings (2^-9 each) of a factor of the terms: P, rounded for its
 * products, in out and dV (twice for slack); in dQ and dK the saved output in rowsum(dO o) and dS,
 * rounded for its products (on CPUs with AVX512-BF16).
 */
function boundRatios(c: AttentionCase, r: Results, dtype: 'float32' | 'bfloat16'): Record<string, number> {
  const { terms, scoreMagnitude } = magnitudes(c);
  const [l, e] = c.query.shape.slice(-2) as [number, number];
  const s = c.key.shape.at(-2)!;
  const n = 4 * (e + s + l);
  const ratios: Record<string, number> = {};
  for (const what of RESULTS) {
    const ref = reference(c, what);
    let bound = terms[what].mul(n * 2 ** -24 * (1 + scoreMagnitude));
    if (dtype === 'bfloat16') bound = bound.add(ref.abs().add(terms[what]).mul(2 ** -8));
    ratios[what] = r[what].double().sub(ref).abs().div(bound.add(1e-30)).max().item();
  }
  return ratios;
}

const within = (ratios: Record<string, number>): boolean => Object.values(ratios).every((x) => x <= 1);

test('fused attention: float32 and bfloat16 within the bounds of their roundings against float64, a scale off by 1.001 (float32) or 1.01 (bfloat16) is not', () => {
  if (!native.fusedAttention('float32')) return; // no AVX-512: the math path; the next test checks the dispatch
  for (const c of cases) {
    for (const dtype of ['float32', 'bfloat16'] as const) {
      const ratios = boundRatios(c, attend(c, dtype, c.scale), dtype);
      assert.ok(within(ratios), `${c.name}, ${dtype}: error over bound ${JSON.stringify(ratios)}`);
      const off = dtype === 'float32' ? 1.001 : 1.01;
      const wrong = boundRatios(c, attend(c, dtype, c.scale * off), dtype);
      assert.ok(!within(wrong), `${c.name}, ${dtype}: a scale off by ${off} passed ${JSON.stringify(wrong)}`);
    }
    // bfloat16: as accurate as PyTorch's own bfloat16 attention (the math path under autocast), which
    // rounds P and dS to bfloat16 too; the same roundings in another order move the largest error by
    // a few percent either way (the kernel's grad_k of 'heads 64, tails' is 1.03 of PyTorch's).
    const ours = attend(c, 'bfloat16', c.scale);
    for (const what of RESULTS) {
      const error = ours[what].double().sub(reference(c, what)).abs().max().item();
      assert.ok(error <= 1.1 * c.pytorch_bf16_error[what], `${c.name}: bfloat16 ${what} error ${error} vs PyTorch's ${c.pytorch_bf16_error[what]}`);
    }
  }
});

test('fused attention: strided inputs (the heads of a qkv projection), autocast, create_graph, the dispatch by dtype and CPU, and the math path elsewhere', () => {
  torch.manualSeed(3);
  const [b, n, heads, e] = [2, 70, 3, 64];
  const qkv = torch.randn([b, n, 3 * heads * e]).reshape(b, n, 3, heads, e).permute(2, 0, 3, 1, 4);
  const [q, k, v] = qkv.unbind(0) as [T, T, T];
  const math = (x: T, y: T, z: T): T => F.softmax(x.mul(e ** -0.5).matmul(y.transpose(-2, -1)), -1).matmul(z);
  const fused = F.scaledDotProductAttention(q, k, v);
  assert.deepEqual(fused.shape, [b, heads, n, e]);
  // The same kernel on contiguous copies: bit for bit.
  assert.equal(fused.sub(F.scaledDotProductAttention(q.contiguous(), k.contiguous(), v.contiguous())).abs().max().item(), 0);
  const close = (a: T, ref: T, tol: number, what: string): void => {
    const error = a.double().sub(ref.double()).abs().max().item();
    assert.ok(error <= tol, `${what}: ${error} > ${tol}`);
  };
  close(fused, math(q, k, v), 1e-5, 'strided heads vs math');
  // Under CPU autocast float32 inputs are computed in bfloat16, as the math path's matmuls are.
  const autocast = torch.withPrecision('bf16', 'cpu', () => F.scaledDotProductAttention(q, k, v));
  assert.equal(autocast.dtype, 'bfloat16');
  close(autocast, math(q, k, v), 2 ** -6 * math(q, k, v).abs().max().item(), 'autocast');
  // create_graph: the gradient is itself differentiable (libtorch ops), and equals the math path's.
  const second = (attention: (x: T, y: T, z: T) => T): T => {
    const leaf = q.narrow(2, 0, 64).contiguous().requiresGrad_();
    const [first] = torch.autograd.grad(attention(leaf, k, v).square().sum(), leaf, { createGraph: true });
    return torch.autograd.grad(first!.square().sum(), leaf)[0]!;
  };
  close(second((x, y, z) => F.scaledDotProductAttention(x, y, z)), second(math), 1e-3, 'double backward');
  // Outside the kernel: float64, a head size that is not a multiple of 16, a mask: the math path.
  for (const [x, y, z] of [[q.double(), k.double(), v.double()], [q.narrow(-1, 0, 24), k.narrow(-1, 0, 24), v.narrow(-1, 0, 24)]] as [T, T, T][]) {
    assert.equal(native.attention(x._handle, y._handle, z._handle, 0.125), null);
  }
  const mask = torch.ones([n, n], { dtype: 'bool' }).tril();
  close(F.scaledDotProductAttention(q, k, v, { attnMask: mask }), F.scaledDotProductAttention(q, k, v, { isCausal: true }), 0, 'masked: math path');
  // bfloat16: the kernel where fusedAttention('bfloat16') says so (no AMX matmuls), else the math path, bit for bit.
  const [qb, kb, vb] = [q, k, v].map((t) => t.bfloat16()) as [T, T, T];
  const expected = native.fusedAttention('bfloat16') ? kernel(qb, kb, vb, e ** -0.5) : math(qb, kb, vb);
  assert.equal(F.scaledDotProductAttention(qb, kb, vb).float().sub(expected.float()).abs().max().item(), 0, 'bfloat16 dispatch');
  // bfloat16 with a gradient goes the same way; forceKernel runs the kernel wherever it takes the inputs.
  const qg = qb.detach().requiresGrad_();
  assert.equal(native.attention(qg._handle, kb._handle, vb._handle, e ** -0.5) !== null, native.fusedAttention('bfloat16'), 'bfloat16 with a gradient');
  if (native.fusedAttention('float32')) assert.notEqual(native.attention(qg._handle, kb._handle, vb._handle, e ** -0.5, true), null, 'forceKernel');
  // Where the math path is faster: fewer than 64 queries or keys.
  for (const [x, y] of [[q.narrow(2, 0, 63), k], [q, k.narrow(2, 0, 63)]] as [T, T][]) {
    assert.equal(native.attention(x._handle, y._handle, y === k ? v._handle : v.narrow(2, 0, 63)._handle, 0.125), null, 'under 64 tokens: math path');
  }
  if (!native.fusedAttention('float32')) assert.equal(native.attention(q._handle, k._handle, v._handle, 0.125, true), null, 'no AVX-512: math path');
  assert.throws(() => native.fusedAttention('float64' as 'float32'), /fusedAttention: dtype must be 'float32' or 'bfloat16', got 'float64'/);
});
