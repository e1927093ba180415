// The addon's one-pass Adam/AdamW and EMA updates (native/src/optim.cc), for src/optim/adam.ts and
// src/optim/ema.ts: the same float32 operations as their op-by-op paths, with each element read and
// written once.
import { native } from './native.js';
import type { Tensor } from './tensor.js';

/** The scalars of one step, as adam.ts computes them in double precision (the kernel rounds them to float32, as libtorch). */
export interface AdamStepScalars {
  /** AdamW's decoupled decay 1 - lr * weightDecay; 1 for none. */
  paramFactor: number;
  /** Adam's L2 penalty: weightDecay * param added to the gradient; 0 for none. */
  l2: number;
  maximize: boolean;
  beta1: number;
  beta2: number;
  /** lr / (1 - beta1^step). */
  stepSize: number;
  /** sqrt(1 - beta2^step). */
  biasCorrection2Sqrt: number;
  eps: number;
}

/**
 * Updates `param`, `expAvg` and `expAvgSq` in place by one Adam step and returns true, or returns
 * false and leaves them untouched where the kernel does not take them: all four must be float32,
 * contiguous, on the CPU and of one shape, on a CPU with AVX-512.
 */
export function fusedAdamStep(param: Tensor, grad: Tensor, expAvg: Tensor, expAvgSq: Tensor, s: AdamStepScalars): boolean {
  return native.adamStep(
    param._handle, grad._handle, expAvg._handle, expAvgSq._handle, s.paramFactor, s.l2, s.maximize,
    s.beta1, s.beta2, s.stepSize, s.biasCorrection2Sqrt, s.eps,
  );
}

/**
 * ema = decay * ema + (1 - decay) * param in place, as ema.mul_(decay).add_(param, 1 - decay), and
 * true; or false, untouched, where the kernel does not take them (as fusedAdamStep).
 */
export function fusedEmaStep(ema: Tensor, param: Tensor, decay: number): boolean {
  return native.emaStep(ema._handle, param._handle, decay);
}
