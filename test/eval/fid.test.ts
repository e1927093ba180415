import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '../../src/torch/index.js';
import type { Tensor } from '../../src/torch/index.js';
import { computeStatistics, frechetDistance, traceSqrtProduct } from '../../src/eval/fid.js';
import { assertClose, loadFixture } from '../helpers.js';

const fx = loadFixture('eval/expected.json').fid as Record<string, { x: Tensor; y: Tensor; fid: number; mu_x?: Tensor; sigma_x?: Tensor }>;

function relative(actual: number, expected: number): number { return Math.abs(actual - expected) / Math.abs(expected); }

test('computeStatistics equals np.mean and np.cov(rowvar=False) in float64', () => {
  const { x, mu_x, sigma_x } = fx.full_rank!;
  const stats = computeStatistics(x);
  assert.equal(stats.sigma.dtype, 'float64');
  assertClose(stats.mu, mu_x!, 1e-12, 1e-14, 'mu');
  assertClose(stats.sigma, sigma_x!, 1e-12, 1e-14, 'sigma');
  assert.throws(() => computeStatistics(x.narrow(0, 0, 1)), /computeStatistics: expected features \[N >= 2, D\], got float64 \[1,12\]/);
});

test('statistics of more rows than one float64 chunk (8192) equal the one-matmul covariance', () => {
  torch.manualSeed(0);
  const x = torch.randn([20000, 5]).add(3);
  const stats = computeStatistics(x);
  const centered = x.double().sub(x.double().mean(0));
  assertClose(stats.mu, x.double().mean(0), 1e-12, 1e-12, 'mu');
  assertClose(stats.sigma, centered.t().matmul(centered).div(19999), 1e-10, 1e-12, 'sigma');
});

for (const name of ['full_rank', 'rank_deficient', 'both_rank_deficient', 'ill_conditioned']) {
  test(`Fréchet distance equals ADM's formula with scipy.linalg.sqrtm to 1e-6 relative: ${name}`, () => {
    const { x, y, fid } = fx[name]!;
    const actual = frechetDistance(computeStatistics(x), computeStatistics(y));
    assert.ok(relative(actual, fid) < 1e-6, `${actual} vs scipy ${fid}`);
  });
}

test('tr(sqrtm(sigma1 sigma2)) of a product of diagonal covariances is Σ sqrt(a_i b_i)', () => {
  const a = torch.tensor([4, 1, 0, 9], { dtype: 'float64' });
  const b = torch.tensor([1, 16, 5, 0.25], { dtype: 'float64' });
  const expected = 2 + 4 + 0 + 1.5;
  assert.ok(Math.abs(traceSqrtProduct(torch.linalg.diagEmbed(a), torch.linalg.diagEmbed(b)) - expected) < 1e-12);
});

test('identical statistics give 0, and a shifted mean adds |Δmu|²', () => {
  const stats = computeStatistics(fx.full_rank!.x);
  assert.ok(Math.abs(frechetDistance(stats, stats)) < 1e-9);
  const shifted = { mu: stats.mu.add(torch.tensor([3, 4, ...Array(10).fill(0)], { dtype: 'float64' })), sigma: stats.sigma };
  assert.ok(Math.abs(frechetDistance(stats, shifted) - 25) < 1e-9);
});

test('the distance is symmetric', () => {
  const { x, y } = fx.full_rank!;
  const [a, b] = [computeStatistics(x), computeStatistics(y)];
  assert.ok(relative(frechetDistance(a, b), frechetDistance(b, a)) < 1e-10);
});

test('bad statistics: mismatched sizes, NaN, a covariance with a negative eigenvalue', () => {
  const stats = computeStatistics(fx.full_rank!.x);
  const small = computeStatistics(fx.full_rank!.x.narrow(1, 0, 4));
  assert.throws(() => frechetDistance(stats, small), /mean vectors have different lengths: \[12\], \[4\]/);
  assert.throws(() => frechetDistance(stats, { mu: stats.mu, sigma: small.sigma }), /covariances must be \[12, 12\] like the means, got \[12,12\], \[4,4\]/);
  const nan = { mu: stats.mu, sigma: stats.sigma.clone() };
  nan.sigma.indexPut_([0, 0], NaN);
  assert.throws(() => frechetDistance(stats, nan), /the second covariance holds NaN or infinite values/);
  const indefinite = { mu: stats.mu, sigma: stats.sigma.sub(torch.eye(12, { dtype: 'float64' }).mul(5)) };
  assert.throws(() => frechetDistance(indefinite, stats), /the first covariance is not positive semi-definite \(eigenvalue -[\d.]+\): its square root has an imaginary component/);
});
