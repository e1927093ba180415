// The Inception Score as the ADM evaluator computes it (guided-diffusion
// evaluations/evaluator.py, Evaluator.compute_inception_score, after improved-gan's
// inception_score/model.py).
import * as torch from '../torch/index.js';
import type { Tensor } from '../torch/index.js';

/** ADM's split size: the score is averaged over consecutive splits of this many samples. */
export const IS_SPLIT_SIZE = 5000;

/**
 * exp(E_x KL(p(y|x) || p(y))) per split of `splitSize` consecutive rows, averaged over splits, for
 * classifier logits [N, C]. As ADM: softmax in float32 (its TensorFlow softmax graph), splits at
 * 0, splitSize, 2·splitSize, ... with a shorter last split counted like the others. The KL sum runs
 * in float64 and takes 0 · log 0 as 0, where ADM's numpy would give NaN for a probability that
 * underflowed to zero. Fewer than `splitSize` rows make one partial split, as in ADM.
 */
export function inceptionScore(logits: Tensor, splitSize = IS_SPLIT_SIZE): number {
  if (logits.ndim !== 2) throw new Error(`inceptionScore: expected logits [N, classes], got [${logits.shape}]`);
  if (!Number.isInteger(splitSize) || splitSize < 1) throw new RangeError(`inceptionScore: split size must be a positive integer, got ${splitSize}`);
  const n = logits.size(0);
  if (n === 0) throw new Error('inceptionScore: no samples');
  return torch.noGrad(() => torch.scope(() => {
    const p = torch.nnFunctional.softmax(logits.to('float32'), 1).to('float64');
    const scores: number[] = [];
    for (let start = 0; start < n; start += splitSize) {
      const part = p.narrow(0, start, Math.min(splitSize, n - start));
      const marginal = part.mean(0, true);
      const terms = part.mul(part.log().sub(marginal.log()));
      const kl = torch.where(part.gt(0), terms, 0).sum(1).mean().item();
      scores.push(Math.exp(kl));
    }
    return scores.reduce((a, b) => a + b, 0) / scores.length;
  }));
}
