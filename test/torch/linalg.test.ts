// linalg equals PyTorch 1.13 on a float64 SPD matrix (eigh, svd; test/fixtures/make_torch.py) and
// its functions agree with their definitions (solve, inv, det, cholesky, norms, diagonals).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '../../src/torch/index.js';
import { loadFixture, assertClose } from '../helpers.js';

const L = torch.linalg;
type T = torch.Tensor;
const fx = loadFixture('torch_linalg.json');

/** Flips the sign of each column of `q` (and of the matching row of `rows`) so its largest-|.| entry is positive. */
function fixSigns(q: T, rows: T | null = null): [T, T | null] {
  const index = q.abs().argmax(0, true);
  const sign = q.gather(0, index).sign();
  return [q.mul(sign), rows === null ? null : rows.mul(sign.t())];
}

test('eigh of a float64 SPD matrix equals PyTorch (eigenvalues; eigenvectors up to sign)', () => {
  const [values, vectors] = L.eigh(fx.spd);
  assertClose(values, fx.eigenvalues, 1e-6, 1e-12, 'eigenvalues');
  assertClose(fixSigns(vectors)[0], fixSigns(fx.eigenvectors)[0], 1e-6, 1e-12, 'eigenvectors');
  assertClose(vectors.mul(values).matmul(vectors.t()), fx.spd, 1e-6, 1e-12, 'Q diag(L) Q^T');
  const [upper] = L.eigh(fx.spd.triu(), 'U');
  assertClose(upper, fx.eigenvalues, 1e-6, 1e-12, "uplo 'U' reads the upper triangle");
});

test('svd equals PyTorch (singular values; singular vectors up to a shared sign)', () => {
  const [u, s, vh] = L.svd(fx.rect, false);
  assert.deepEqual([u.shape, s.shape, vh.shape], [[5, 3], [3], [3, 3]]);
  assertClose(s, fx.s, 1e-6, 1e-12, 'S');
  const [uFixed, vhFixed] = fixSigns(u, vh);
  const [uExpected, vhExpected] = fixSigns(fx.u, fx.vh);
  assertClose(uFixed, uExpected, 1e-6, 1e-12, 'U');
  assertClose(vhFixed!, vhExpected!, 1e-6, 1e-12, 'Vh');
  const [uFull, sFull, vhFull] = L.svd(fx.spd);
  assert.deepEqual([uFull.shape, vhFull.shape], [[6, 6], [6, 6]], 'fullMatrices defaults to true');
  assertClose(sFull, fx.spd_singular_values, 1e-6, 1e-12, 'singular values of the SPD matrix');
  assertClose(sFull.flip(0), fx.eigenvalues, 1e-6, 1e-12, 'an SPD matrix has singular values = eigenvalues');
});

test('solve, inv, det, cholesky agree with their definitions', () => {
  const a = fx.spd;
  const b = torch.arange(0, 12, 1, { dtype: 'float64' }).reshape(6, 2);
  assertClose(a.matmul(L.solve(a, b)), b, 1e-9, 1e-9, 'A solve(A, B) = B');
  assertClose(L.inv(a).matmul(a), torch.eye(6, { dtype: 'float64' }), 1e-9, 1e-9, 'inv(A) A = I');
  assertClose(L.det(a), fx.eigenvalues.prod(), 1e-9, 0, 'det = product of eigenvalues');
  const c = L.cholesky(a);
  assert.deepEqual(c.triu(1).abs().max().item(), 0, 'cholesky factor is lower triangular');
  assertClose(c.matmul(c.t()), a, 1e-9, 1e-9, 'L L^T = A');
  assert.throws(() => L.cholesky(a.neg()), /aten::linalg_cholesky: .*not positive-definite/);
  assert.throws(() => L.solve(a, torch.ones([5, 1], { dtype: 'float64' })), /aten::linalg_solve: .*tensor arguments: float64\[6, 6\], float64\[5, 1\]/);
});

test('eigvals returns (real, imaginary) pairs, since reals has no complex dtype', () => {
  const rotation = torch.tensor([[0, -1], [1, 0]], { dtype: 'float64' });
  const pairs = L.eigvals(rotation);
  assert.equal(pairs.dtype, 'float64');
  const sorted = (pairs.tolist() as number[][]).sort((p, q) => p[1]! - q[1]!);
  assert.deepEqual(sorted, [[0, -1], [0, 1]]);
  const real = L.eigvals(fx.spd).select(-1, 0).sort()[0];
  assertClose(real, fx.eigenvalues, 1e-9, 1e-12, 'eigvals of an SPD matrix = eigh eigenvalues');
});

test('norms, trace, diagonals and outer products', () => {
  const a = torch.tensor([[1, -2, 3], [-4, 5, -6]], { dtype: 'float64' });
  assert.equal(L.matrixNorm(a).item(), Math.sqrt(91));
  assert.equal(L.matrixNorm(a, 1).item(), 9, 'ord 1: largest column abs sum');
  assert.equal(L.matrixNorm(a, Infinity).item(), 15, 'ord inf: largest row abs sum');
  assertClose(L.matrixNorm(a, 2), L.svd(a, false)[1].max(), 1e-12, 0, 'ord 2: largest singular value');
  assert.equal(L.vectorNorm(a).item(), Math.sqrt(91));
  assert.deepEqual(L.vectorNorm(a, 1, [1]).tolist(), [6, 15]);
  assert.deepEqual(L.vectorNorm(a, Infinity, [0], true).tolist(), [[4, 5, 6]]);
  assert.equal(L.trace(a.narrow(1, 0, 2)).item(), 6);
  assert.deepEqual(L.diagonal(a, 1).tolist(), [-2, -6]);
  assert.deepEqual(L.diag(torch.tensor([1, 2])).tolist(), [[1, 0], [0, 2]]);
  assert.deepEqual(L.diag(a, -1).tolist(), [-4]);
  assert.deepEqual(L.diagEmbed(torch.tensor([[1, 2], [3, 4]])).tolist(), [[[1, 0], [0, 2]], [[3, 0], [0, 4]]]);
  assert.deepEqual(L.outer(torch.tensor([1, 2]), torch.tensor([3, 4, 5])).tolist(), [[3, 4, 5], [6, 8, 10]]);
});
