import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '../../src/torch/index.js';
import { manifoldRadii, pairwiseDistances, precisionRecall } from '../../src/eval/precision-recall.js';
import { assertClose, loadFixture } from '../helpers.js';

const fx = loadFixture('eval/expected.json').precision_recall;

test('pairwise squared distances equal |u - v|² (clamped at 0)', () => {
  const u = torch.randn([5, 7]);
  const v = torch.randn([3, 7]);
  const direct = u.unsqueeze(1).sub(v.unsqueeze(0)).pow(2).sum(2);
  assertClose(pairwiseDistances(u, v), direct, 1e-5, 1e-5, 'distances');
  assert.ok(pairwiseDistances(u, u).min().item() >= 0);
});

test('radii: squared distance to the 3rd neighbour (np.partition(d, 3)[:, 3]) in one block and in ragged blocks', () => {
  for (const blocks of [{}, { rowBatchSize: 16, colBatchSize: 7 }, { rowBatchSize: 1, colBatchSize: 2 }]) {
    assertClose(manifoldRadii(fx.ref, blocks), fx.radii_ref.float(), 1e-5, 1e-6, `reference radii ${JSON.stringify(blocks)}`);
    assertClose(manifoldRadii(fx.sample, blocks), fx.radii_sample.float(), 1e-5, 1e-6, `sample radii ${JSON.stringify(blocks)}`);
  }
});

test('precision and recall equal ADM\'s evaluate_pr (numpy), whatever the block sizes', () => {
  for (const blocks of [{}, { rowBatchSize: 32, colBatchSize: 48 }, { rowBatchSize: 5, colBatchSize: 3 }]) {
    const { precision, recall } = precisionRecall(fx.ref, fx.sample, blocks);
    assert.equal(precision, fx.precision, `precision ${JSON.stringify(blocks)}`);
    assert.equal(recall, fx.recall, `recall ${JSON.stringify(blocks)}`);
  }
});

test('a set against itself or a shuffled copy: precision = recall = 1; against far-away points: 0', () => {
  const shuffled = fx.ref.indexSelect(0, torch.randperm(fx.ref.size(0)));
  assert.deepEqual(precisionRecall(fx.ref, fx.ref), { precision: 1, recall: 1 });
  assert.deepEqual(precisionRecall(fx.ref, shuffled, { rowBatchSize: 8, colBatchSize: 13 }), { precision: 1, recall: 1 });
  assert.deepEqual(precisionRecall(fx.ref, fx.ref.add(100)), { precision: 0, recall: 0 });
});

test('too few samples, mismatched dimensions and bad block sizes give clear errors', () => {
  assert.throws(() => manifoldRadii(fx.ref.narrow(0, 0, 3)), /the feature set has 3 samples; the radius to the k-th nearest neighbour \(k = 3\) needs at least 4/);
  assert.throws(() => precisionRecall(fx.ref, fx.sample.narrow(0, 0, 2)), /the sample batch has 2 samples/);
  assert.throws(() => precisionRecall(fx.ref, fx.sample.narrow(1, 0, 4)), /reference features have 8 dimensions, sample features 4/);
  assert.throws(() => precisionRecall(fx.ref, fx.sample, { rowBatchSize: 0 }), /rowBatchSize must be a positive integer, got 0/);
});
