import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '../../src/torch/index.js';
import { clipGradNorm, clipGradValue } from '../../src/optim/index.js';
import { loadFixture, maxRelError } from '../helpers.js';

type Tensor = torch.Tensor;

interface NormCase { max_norm: number; norm_type: number | 'inf'; total: number; clipped: Tensor[] }
const fixture = loadFixture('optim_clip.json') as { grads: Tensor[]; norm_cases: NormCase[]; value_clip: number; value_clipped: Tensor[] };

function paramsWithGrads(): Tensor[] {
  return fixture.grads.map((g) => {
    const p = torch.zerosLike(g).requiresGrad_();
    p.grad = g.clone();
    return p;
  });
}

for (const c of fixture.norm_cases) {
  test(`clipGradNorm(maxNorm ${c.max_norm}, normType ${c.norm_type}) returns PyTorch's total norm and clipped grads`, () => {
    const params = paramsWithGrads();
    const total = clipGradNorm(params, c.max_norm, c.norm_type === 'inf' ? Infinity : c.norm_type);
    assert.ok(Math.abs(total - c.total) <= 1e-6 * c.total, `total norm ${total} vs ${c.total}`);
    params.forEach((p, i) => {
      const err = maxRelError(p.grad!, c.clipped[i]!);
      assert.ok(err <= 1e-6, `grad ${i}: relative error ${err}`);
    });
  });
}

test('clipGradNorm skips parameters without gradients, returns 0 for none, and can refuse a non-finite norm', () => {
  const p = torch.ones([2]).requiresGrad_();
  assert.equal(clipGradNorm([p], 1), 0);
  const q = torch.ones([2]).requiresGrad_();
  q.grad = torch.tensor([3, 4], { dtype: 'float32' });
  assert.equal(clipGradNorm([p, q], 10), 5);
  assert.deepEqual(q.grad!.tolist(), [3, 4], 'a norm under maxNorm leaves the gradients as they are');
  q.grad = torch.tensor([Infinity, 1], { dtype: 'float32' });
  assert.throws(() => clipGradNorm(q, 1, 2, { errorIfNonfinite: true }), /clipGradNorm: the total norm of order 2 of the gradients is Infinity/);
});

test('clipGradValue clamps every gradient to [-clip, clip] as clip_grad_value_', () => {
  const params = paramsWithGrads();
  clipGradValue(params, fixture.value_clip);
  params.forEach((p, i) => assert.deepEqual(p.grad!.toArray(), fixture.value_clipped[i]!.toArray()));
});
