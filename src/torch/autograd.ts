// Grad mode and torch.autograd.grad.
import { native } from './native.js';
import { Tensor } from './tensor.js';

function withGradMode<T>(enabled: boolean, fn: () => T): T {
  const previous = native.isGradEnabled();
  native.setGradEnabled(enabled);
  try {
    const result = fn();
    if (result !== null && typeof result === 'object' && typeof (result as { then?: unknown }).then === 'function') {
      throw new Error('torch.noGrad/enableGrad: fn returned a Promise; grad mode applies to synchronous code only');
    }
    return result;
  } finally {
    native.setGradEnabled(previous);
  }
}

/** Runs `fn` with autograd recording off, as `with torch.no_grad():`. */
export function noGrad<T>(fn: () => T): T { return withGradMode(false, fn); }
export function enableGrad<T>(fn: () => T): T { return withGradMode(true, fn); }
export function isGradEnabled(): boolean { return native.isGradEnabled(); }
export function setGradEnabled(enabled: boolean): void { native.setGradEnabled(enabled); }

/** torch.autograd.grad: gradients of `outputs` with respect to `inputs` (null where unused). */
export function grad(
  outputs: Tensor | Tensor[],
  inputs: Tensor | Tensor[],
  options: { gradOutputs?: (Tensor | null)[]; retainGraph?: boolean; createGraph?: boolean; allowUnused?: boolean } = {},
): (Tensor | null)[] {
  const outs = outputs instanceof Tensor ? [outputs] : outputs;
  const ins = inputs instanceof Tensor ? [inputs] : inputs;
  const result = native.autogradGrad(
    outs.map((t) => t._handle),
    ins.map((t) => t._handle),
    options.gradOutputs ? options.gradOutputs.map((t) => t?._handle ?? null) : null,
    options.retainGraph,
    options.createGraph ?? false,
    options.allowUnused ?? false,
  );
  return result.map((h) => (h === null ? null : new Tensor(h)));
}
