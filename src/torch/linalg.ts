// Linear algebra for FID and friends (float64 recommended): eigh, svd, eigvals, solve, det, inv.
import { Tensor, op } from './tensor.js';

const O = {
  eigh: op('aten::linalg_eigh'), svd: op('aten::linalg_svd'), eigvals: op('aten::linalg_eigvals'),
  solve: op('aten::linalg_solve'), inv: op('aten::linalg_inv'), det: op('aten::linalg_det'),
  cholesky: op('aten::linalg_cholesky'), matrixNorm: op('aten::linalg_matrix_norm'), vectorNorm: op('aten::linalg_vector_norm'),
  trace: op('aten::trace'), diagonal: op('aten::diagonal'), diag: op('aten::diag'), outer: op('aten::outer'),
  diagEmbed: op('aten::diag_embed'), viewAsReal: op('aten::view_as_real'),
};

/** Eigenvalues (ascending) and eigenvectors of a symmetric matrix: [L, Q] with A = Q diag(L) Q^T. */
export function eigh(a: Tensor, uplo: 'L' | 'U' = 'L'): [Tensor, Tensor] { return O.eigh(a, uplo); }
/** [U, S, Vh] with A = U diag(S) Vh. */
export function svd(a: Tensor, fullMatrices = true): [Tensor, Tensor, Tensor] { return O.svd(a, fullMatrices, null); }
/**
 * Eigenvalues of a general square matrix as [..., n, 2] (real, imaginary) pairs: reals has no
 * complex dtype, so libtorch's complex result is returned through view_as_real.
 */
export function eigvals(a: Tensor): Tensor {
  const complex: Tensor = O.eigvals(a);
  const pairs: Tensor = O.viewAsReal(complex);
  complex.dispose();
  return pairs;
}
export function solve(a: Tensor, b: Tensor): Tensor { return O.solve(a, b, true); }
export function inv(a: Tensor): Tensor { return O.inv(a); }
export function det(a: Tensor): Tensor { return O.det(a); }
export function cholesky(a: Tensor): Tensor { return O.cholesky(a, false); }
export function matrixNorm(a: Tensor, ord: number | 'fro' = 'fro'): Tensor {
  if (ord === 'fro') return op('aten::linalg_matrix_norm.str_ord')(a, 'fro', [-2, -1], false, null);
  return O.matrixNorm(a, ord, [-2, -1], false, null);
}
export function vectorNorm(a: Tensor, ord = 2, dim: number[] | null = null, keepdim = false): Tensor { return O.vectorNorm(a, ord, dim, keepdim, null); }
export function trace(a: Tensor): Tensor { return O.trace(a); }
export function diagonal(a: Tensor, offset = 0, dim1 = 0, dim2 = 1): Tensor { return O.diagonal(a, offset, dim1, dim2); }
export function diag(a: Tensor, diagonal = 0): Tensor { return O.diag(a, diagonal); }
export function diagEmbed(a: Tensor): Tensor { return O.diagEmbed(a, 0, -2, -1); }
export function outer(a: Tensor, b: Tensor): Tensor { return O.outer(a, b); }
