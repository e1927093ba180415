// Improved precision and recall (Kynkäänniemi et al. 2019) as the ADM evaluator computes them
// (guided-diffusion evaluations/evaluator.py: ManifoldEstimator, DistanceBlock), on pool_3
// features: each set's manifold is the union of balls around its points reaching to the k-th
// nearest neighbour; precision is the fraction of samples inside the reference manifold, recall
// the fraction of references inside the sample manifold.
import * as torch from '../torch/index.js';
import type { Device, Tensor } from '../torch/index.js';

export interface ManifoldOptions {
  /** Neighbourhood size: ADM's nhood_sizes = (3,). */
  k?: number;
  /** Rows and columns of one block of the distance matrix (ADM: 10,000 each). */
  rowBatchSize?: number;
  colBatchSize?: number;
  /** Where the distance blocks are computed (default: the features' device). */
  device?: Device;
}

const DEFAULTS = { k: 3, rowBatchSize: 10000, colBatchSize: 10000 };

/**
 * Squared Euclidean distances [M, N] between rows of u [M, D] and v [N, D] as ADM's
 * _batch_pairwise_distances: max(|u|² - 2 u·vᵀ + |v|², 0). In float32, ADM's fallback precision:
 * ADM first tries float16 and keeps that result when it is finite, which rounds distances to 11
 * significant bits; float32 decides the few comparisons that rounding would flip by the exact order.
 */
export function pairwiseDistances(u: Tensor, v: Tensor): Tensor {
  return torch.scope(() => {
    const a = u.to('float32');
    const b = v.to('float32');
    const normU = a.mul(a).sum(1).unsqueeze(1);
    const normV = b.mul(b).sum(1).unsqueeze(0);
    return normU.sub(a.matmul(b.t()).mul(2)).add(normV).clamp(0);
  });
}

function options(o: ManifoldOptions): Required<Omit<ManifoldOptions, 'device'>> & { device: Device | undefined } {
  const merged = { ...DEFAULTS, ...o, device: o.device };
  for (const key of ['k', 'rowBatchSize', 'colBatchSize'] as const) {
    if (!Number.isInteger(merged[key]) || merged[key] < 1) throw new RangeError(`precision/recall: ${key} must be a positive integer, got ${merged[key]}`);
  }
  return merged;
}

function checkFeatures(features: Tensor, what: string, k: number): void {
  if (features.ndim !== 2) throw new Error(`precision/recall: ${what} features must be [N, D], got [${features.shape}]`);
  if (features.size(0) < k + 1) throw new Error(`precision/recall: ${what} has ${features.size(0)} samples; the radius to the k-th nearest neighbour (k = ${k}) needs at least ${k + 1}`);
}

/**
 * Each row's squared distance to its k-th nearest neighbour in `features` [N, D] (the row itself,
 * at distance 0, counted as the 0th: ADM's np.partition(distances, [0..k])[:, k]), as float32 [N].
 * Distances come in row x column blocks and only the k + 1 smallest per row are carried from one
 * block to the next, so memory stays at one block whatever N.
 */
export function manifoldRadii(features: Tensor, manifold: ManifoldOptions = {}): Tensor {
  const { k, rowBatchSize, colBatchSize, device } = options(manifold);
  checkFeatures(features, 'the feature set', k);
  const n = features.size(0);
  const on = (t: Tensor): Tensor => (device === undefined ? t : t.to(device));
  return torch.noGrad(() => torch.scope(() => {
    const radii: Tensor[] = [];
    for (let r = 0; r < n; r += rowBatchSize) {
      const rows = on(features.narrow(0, r, Math.min(rowBatchSize, n - r)));
      let nearest: Tensor | undefined;
      for (let c = 0; c < n; c += colBatchSize) {
        nearest = torch.scope(() => {
          const d = pairwiseDistances(rows, on(features.narrow(0, c, Math.min(colBatchSize, n - c))));
          const candidates = nearest === undefined ? d : torch.cat([nearest, d], 1);
          return candidates.topk(Math.min(k + 1, candidates.size(1)), 1, false, true)[0];
        });
      }
      radii.push(nearest!.select(1, k).cpu());
    }
    return torch.cat(radii);
  }));
}

export interface PrecisionRecall {
  precision: number;
  recall: number;
}

/**
 * ADM's precision and recall of `sample` features against `reference` features (pool_3, [N, D]):
 * radii from each set's k-th neighbour, then precision = the fraction of samples with distance
 * <= the radius of some reference, recall = the fraction of references with distance <= the radius
 * of some sample (ManifoldEstimator.evaluate_pr), the distance matrix again in blocks.
 */
export function precisionRecall(reference: Tensor, sample: Tensor, manifold: ManifoldOptions = {}): PrecisionRecall {
  const { k, rowBatchSize, colBatchSize, device } = options(manifold);
  checkFeatures(reference, 'the reference batch', k);
  checkFeatures(sample, 'the sample batch', k);
  if (reference.size(1) !== sample.size(1)) throw new Error(`precision/recall: reference features have ${reference.size(1)} dimensions, sample features ${sample.size(1)}`);
  const on = (t: Tensor): Tensor => (device === undefined ? t : t.to(device));
  const referenceRadii = manifoldRadii(reference, manifold);
  const sampleRadii = manifoldRadii(sample, manifold);
  return torch.noGrad(() => torch.scope(() => {
    const [nr, ns] = [reference.size(0), sample.size(0)];
    const referenceIn = torch.zeros([nr], { dtype: 'bool' });
    const sampleIn = torch.zeros([ns], { dtype: 'bool' });
    for (let r = 0; r < nr; r += rowBatchSize) {
      const rowCount = Math.min(rowBatchSize, nr - r);
      const rows = on(reference.narrow(0, r, rowCount));
      const rowRadii = on(referenceRadii.narrow(0, r, rowCount)).unsqueeze(1);
      for (let c = 0; c < ns; c += colBatchSize) {
        torch.scope(() => {
          const colCount = Math.min(colBatchSize, ns - c);
          const d = pairwiseDistances(rows, on(sample.narrow(0, c, colCount)));
          const rowsIn = d.le(on(sampleRadii.narrow(0, c, colCount)).unsqueeze(0)).sum(1).gt(0).cpu();
          const colsIn = d.le(rowRadii).sum(0).gt(0).cpu();
          referenceIn.narrow(0, r, rowCount).copy_(referenceIn.narrow(0, r, rowCount).logicalOr(rowsIn));
          sampleIn.narrow(0, c, colCount).copy_(sampleIn.narrow(0, c, colCount).logicalOr(colsIn));
        });
      }
    }
    const fraction = (t: Tensor): number => t.to('float64').mean().item();
    return { precision: fraction(sampleIn), recall: fraction(referenceIn) };
  }));
}
