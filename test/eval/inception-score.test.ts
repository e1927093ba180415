import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '../../src/torch/index.js';
import { inceptionScore, IS_SPLIT_SIZE } from '../../src/eval/inception-score.js';
import { loadFixture } from '../helpers.js';

const fx = loadFixture('eval/expected.json').inception_score;

test('Inception Score equals ADM\'s split formula (numpy) to 1e-6: splits of 20 (20, 20, 10) and one split of 50', () => {
  for (const [split, expected] of [[20, fx.split_20], [50, fx.split_50]] as [number, number][]) {
    const actual = inceptionScore(fx.logits, split);
    assert.ok(Math.abs(actual - expected) / expected < 1e-6, `split ${split}: ${actual} vs ${expected}`);
  }
});

test('ADM\'s split size is 5,000; a uniform classifier scores 1, a confident one over C classes scores C', () => {
  assert.equal(IS_SPLIT_SIZE, 5000);
  assert.ok(Math.abs(inceptionScore(torch.zeros([8, 10]), 8) - 1) < 1e-12);
  const confident = torch.eye(4).mul(60).repeat(2, 1);
  assert.ok(Math.abs(inceptionScore(confident, 8) - 4) < 1e-9, 'probabilities that underflow to 0 count as 0 · log 0 = 0');
});

test('fewer samples than one split make one partial split, as in ADM; a bad split size or bad logits give clear errors', () => {
  const logits = torch.randn([10, 4]);
  assert.equal(inceptionScore(logits, 20), inceptionScore(logits, 10), 'one split of the 10 rows');
  assert.ok(inceptionScore(logits) > 1);
  assert.throws(() => inceptionScore(torch.zeros([0, 4])), /inceptionScore: no samples/);
  assert.throws(() => inceptionScore(torch.zeros([10, 4]), 0), /split size must be a positive integer, got 0/);
  assert.throws(() => inceptionScore(torch.zeros([10]), 5), /expected logits \[N, classes\], got \[10\]/);
});
