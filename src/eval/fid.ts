// FID and sFID: the Fréchet distance between Gaussians fitted to Inception features, as the ADM
// evaluator computes it (guided-diffusion evaluations/evaluator.py, FIDStatistics and
// Evaluator.compute_statistics, after TTUR's fid.py), in float64.
import * as torch from '../torch/index.js';
import type { Tensor } from '../torch/index.js';

/** A Gaussian fitted to features: mean [D] and covariance [D, D], float64. */
export interface FIDStatistics {
  mu: Tensor;
  sigma: Tensor;
}

/** Rows per float64 chunk in computeStatistics: 50,000 x 2048 would take 800 MB at once. */
const STATISTICS_CHUNK = 8192;

/**
 * np.mean(x, 0) and np.cov(x, rowvar=False) (divisor N - 1) of features [N, D], in float64: the
 * mean first, then the centred products summed over chunks of rows, as np.cov centres before
 * multiplying.
 */
export function computeStatistics(features: Tensor): FIDStatistics {
  if (features.ndim !== 2 || features.size(0) < 2) {
    throw new Error(`computeStatistics: expected features [N >= 2, D], got ${features.dtype} [${features.shape}]`);
  }
  const [n, d] = features.shape as [number, number];
  const rows = (start: number): Tensor => features.narrow(0, start, Math.min(STATISTICS_CHUNK, n - start)).to('float64');
  return torch.noGrad(() => torch.scope(() => {
    const mu = torch.zeros([d], { dtype: 'float64', device: features.device });
    for (let start = 0; start < n; start += STATISTICS_CHUNK) torch.scope(() => mu.add_(rows(start).sum(0)));
    mu.div_(n);
    const sigma = torch.zeros([d, d], { dtype: 'float64', device: features.device });
    for (let start = 0; start < n; start += STATISTICS_CHUNK) {
      torch.scope(() => {
        const centered = rows(start).sub(mu);
        sigma.add_(centered.t().matmul(centered));
      });
    }
    return { mu, sigma: sigma.div_(n - 1) };
  }));
}

/**
 * [eigenvalues clamped at 0, eigenvectors] of a symmetric positive semi-definite matrix. A
 * negative eigenvalue whose square root passes ADM's 1e-3 tolerance on imaginary parts means the
 * matrix is no covariance: an error, as ADM raises "Imaginary component".
 */
function psdEigen(a: Tensor, what: string): [Tensor, Tensor] {
  const [values, vectors] = torch.linalg.eigh(a.add(a.t()).div(2));
  const lowest = values.min().item();
  if (lowest < 0 && Math.sqrt(-lowest) > 1e-3) {
    throw new Error(`frechetDistance: ${what} is not positive semi-definite (eigenvalue ${lowest}): its square root has an imaginary component ${Math.sqrt(-lowest)}`);
  }
  return [values.clamp(0), vectors];
}

/**
 * tr(sqrtm(sigma1 · sigma2)) for covariance matrices, in float64. ADM takes the trace of
 * scipy.linalg.sqrtm of the (non-symmetric) product; the product is similar to the symmetric
 * positive semi-definite S = sqrt(sigma1) · sigma2 · sqrt(sigma1), so both square roots have the
 * same eigenvalues and the trace is Σ sqrt(eig(S)), which eigh computes stably even when the
 * product is singular (fewer samples than dimensions): eigenvalues that rounding pushed below zero
 * are clamped to 0, where scipy's Schur-based sqrtm gives them an imaginary square root that ADM
 * then discards with `.real`.
 */
export function traceSqrtProduct(sigma1: Tensor, sigma2: Tensor): number {
  return torch.noGrad(() => torch.scope(() => {
    const [values1, vectors1] = psdEigen(sigma1, 'the first covariance');
    const sqrt1 = vectors1.mul(values1.sqrt()).matmul(vectors1.t());
    const [values] = psdEigen(sqrt1.matmul(sigma2).matmul(sqrt1), 'sqrt(sigma1) sigma2 sqrt(sigma1)');
    return values.sqrt().sum().item();
  }));
}

function checkFinite(t: Tensor, what: string): void {
  if (!t.isfinite().all().item()) throw new Error(`frechetDistance: ${what} holds NaN or infinite values`);
}

/**
 * The Fréchet distance |mu1 - mu2|² + tr(sigma1) + tr(sigma2) - 2 tr(sqrtm(sigma1 · sigma2)) as
 * ADM's FIDStatistics.frechet_distance, in float64. Where ADM's scipy sqrtm returns non-finite
 * values it retries with 1e-6 added to both diagonals; the eigh route above never produces them
 * for finite input (verified against scipy on singular and ill-conditioned products), so that
 * retry has no counterpart here and non-finite statistics are an error instead.
 */
export function frechetDistance(a: FIDStatistics, b: FIDStatistics): number {
  if (a.mu.ndim !== 1 || b.mu.ndim !== 1 || a.mu.size(0) !== b.mu.size(0)) {
    throw new Error(`frechetDistance: mean vectors have different lengths: [${a.mu.shape}], [${b.mu.shape}]`);
  }
  const d = a.mu.size(0);
  if (a.sigma.ndim !== 2 || b.sigma.ndim !== 2 || [...a.sigma.shape, ...b.sigma.shape].some((s) => s !== d)) {
    throw new Error(`frechetDistance: covariances must be [${d}, ${d}] like the means, got [${a.sigma.shape}], [${b.sigma.shape}]`);
  }
  return torch.noGrad(() => torch.scope(() => {
    const [mu1, sigma1, mu2, sigma2] = [a.mu, a.sigma, b.mu, b.sigma].map((t) => t.to('float64'));
    checkFinite(mu1!, 'the first mean');
    checkFinite(sigma1!, 'the first covariance');
    checkFinite(mu2!, 'the second mean');
    checkFinite(sigma2!, 'the second covariance');
    const diff = mu1!.sub(mu2!);
    const trace = (t: Tensor): number => torch.linalg.trace(t).item();
    return diff.mul(diff).sum().item() + trace(sigma1!) + trace(sigma2!) - 2 * traceSqrtProduct(sigma1!, sigma2!);
  }));
}
