// Gradient clipping as torch.nn.utils.clip_grad_norm_ / clip_grad_value_ (torch/nn/utils/clip_grad.py).
import * as torch from '../torch/index.js';

type Tensor = torch.Tensor;

function gradsOf(params: Tensor | Iterable<Tensor>): Tensor[] {
  const list = params instanceof torch.Tensor ? [params] : [...params];
  return list.map((p) => p.grad).filter((g): g is Tensor => g !== null);
}

/**
 * Scales all gradients in place so that their joint `normType`-norm (the norm of the per-tensor
 * norms) is at most `maxNorm`; returns that norm before clipping. As PyTorch, the scale is
 * min(1, maxNorm / (total + 1e-6)) computed in the gradients' dtype and applied even when it is 1.
 */
export function clipGradNorm(
  params: Tensor | Iterable<Tensor>, maxNorm: number, normType = 2, options: { errorIfNonfinite?: boolean } = {},
): number {
  return torch.noGrad(() => torch.scope(() => {
    const grads = gradsOf(params);
    if (grads.length === 0) return 0;
    const device = grads[0]!.device;
    let total: Tensor;
    if (normType === Infinity) {
      const norms = grads.map((g) => g.abs().max().to(device));
      total = norms.length === 1 ? norms[0]! : torch.stack(norms).max();
    } else {
      const norms = grads.map((g) => g.norm(normType, [...Array(g.ndim).keys()]).to(device));
      total = torch.stack(norms).norm(normType, [0]);
    }
    const totalNorm = total.item();
    if (options.errorIfNonfinite && !Number.isFinite(totalNorm)) {
      throw new Error(`clipGradNorm: the total norm of order ${normType} of the gradients is ${totalNorm}, so it cannot be clipped`);
    }
    // `max_norm / (total_norm + 1e-6)` in Python is reciprocal() * max_norm on the tensor.
    const clipCoef = total.add(1e-6).reciprocal().mul(maxNorm).clamp(null, 1);
    for (const g of grads) g.mul_(clipCoef.to(g.device));
    return totalNorm;
  }));
}

/** Clamps every gradient in place to [-clipValue, clipValue]. */
export function clipGradValue(params: Tensor | Iterable<Tensor>, clipValue: number): void {
  torch.noGrad(() => torch.scope(() => {
    for (const g of gradsOf(params)) g.clamp_(-clipValue, clipValue);
  }));
}
