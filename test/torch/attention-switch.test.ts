import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '../../src/torch/index.js';
import { native } from '../../src/torch/native.js';

const F = torch.nnFunctional;
type T = torch.Tensor;

test('enableFusedAttention(false) keeps F.scaledDotProductAttention on the math path, bit for bit; true gives the kernel back', () => {
  torch.manualSeed(5);
  const [q, k, v] = [0, 1, 2].map(() => torch.randn([2, 3, 70, 64])) as [T, T, T];
  const math = F.softmax(q.mul(0.125).matmul(k.transpose(-2, -1)), -1).matmul(v);
  const maxDiff = (a: T, b: T): number => a.sub(b).abs().max().item();
  assert.equal(F.fusedAttentionEnabled(), true);
  try {
    F.enableFusedAttention(false);
    assert.equal(F.fusedAttentionEnabled(), false);
    assert.equal(maxDiff(F.scaledDotProductAttention(q, k, v), math), 0);
  } finally {
    F.enableFusedAttention(true);
  }
  const fused = F.scaledDotProductAttention(q, k, v);
  // Where the CPU runs the kernel its sums are ordered otherwise: close to the math path, not equal.
  if (native.fusedAttention('float32')) assert.ok(maxDiff(fused, math) > 0 && maxDiff(fused, math) < 1e-5);
  else assert.equal(maxDiff(fused, math), 0);
});
