// adaLN-Zero's elementwise work in a DiT/SiT block (models.py's modulate and gated residuals), by
// the addon's one-pass kernels (native/src/adaln.cc) where they take the tensors, else by the ops.
import { native } from './native.js';
import { layerNorm } from './functional.js';
import { Tensor } from './tensor.js';

/**
 * layer_norm(x) * (1 + scale) + shift over the last dimension, without affine parameters, for x
 * [N, T, D] and shift, scale [N, D]: models.py's modulate(norm(x), shift, scale). Under CPU bfloat16
 * autocast the kernel returns bfloat16 (the Linear it feeds would cast it); the op path returns
 * what its ops give.
 */
export function modulatedLayerNorm(x: Tensor, shift: Tensor, scale: Tensor, eps: number): Tensor {
  const fused = native.modulatedLayerNorm(x._handle, shift._handle, scale._handle, eps);
  if (fused !== null) return new Tensor(fused);
  return layerNorm(x, [x.size(-1)], null, null, eps).mul(scale.unsqueeze(1).add(1)).add(shift.unsqueeze(1));
}

/** x + gate * y for x, y [N, T, D] and gate [N, D]: the gated residual of an adaLN-Zero block. */
export function gatedResidual(x: Tensor, gate: Tensor, y: Tensor): Tensor {
  const fused = native.gatedResidual(x._handle, gate._handle, y._handle);
  if (fused !== null) return new Tensor(fused);
  return x.add(gate.unsqueeze(1).mul(y));
}
