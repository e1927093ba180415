// Exponential moving average of parameters, as DiT/SiT's update_ema:
// `ema_p.mul_(decay).add_(p, alpha=1 - decay)` for every parameter; buffers are copied.
import * as torch from '../torch/index.js';

type Tensor = torch.Tensor;

/** Anything with named parameters (and optionally buffers), e.g. an nn Module. */
export interface NamedTensors {
  namedParameters(): Iterable<[string, Tensor]>;
  namedBuffers?(): Iterable<[string, Tensor]>;
}

type Source = readonly Tensor[] | NamedTensors;

/**
 * Pairs (ema tensor, model tensor) by name for NamedTensors (both sides must have the same names
 * and shapes) or by position for tensor lists.
 */
function pairs(ema: Source, model: Source, kind: 'parameters' | 'buffers'): [Tensor, Tensor][] {
  let named: [[string, Tensor][], [string, Tensor][]];
  if (Array.isArray(ema) || Array.isArray(model)) {
    if (!Array.isArray(ema) || !Array.isArray(model)) throw new TypeError('EMA: give two tensor lists or two objects with namedParameters()');
    if (kind === 'buffers') return [];
    named = [ema.map((t, i): [string, Tensor] => [String(i), t]), model.map((t, i): [string, Tensor] => [String(i), t])];
  } else {
    const list = (s: NamedTensors): [string, Tensor][] =>
      [...(kind === 'parameters' ? s.namedParameters() : s.namedBuffers?.() ?? [])];
    named = [list(ema as NamedTensors), list(model as NamedTensors)];
  }
  const emaByName = new Map(named[0]);
  const modelNames = new Set(named[1].map(([n]) => n));
  const missing = named[1].filter(([n]) => !emaByName.has(n)).map(([n]) => n);
  const unexpected = named[0].filter(([n]) => !modelNames.has(n)).map(([n]) => n);
  if (missing.length > 0 || unexpected.length > 0) {
    throw new Error(`EMA: the ema ${kind} lack [${missing.join(', ')}] and have extra [${unexpected.join(', ')}] compared with the model's`);
  }
  return named[1].map(([n, source]) => {
    const target = emaByName.get(n)!;
    if (target.shape.join() !== source.shape.join() || target.ndim !== source.ndim) {
      throw new Error(`EMA: ${kind} '${n}' has shape [${target.shape}] in the ema and [${source.shape}] in the model`);
    }
    return [target, source];
  });
}

export class EMA {
  readonly decay: number;

  /**
   * `ema` holds the averaged tensors (e.g. a second copy of the model), `model` the trained ones;
   * decay 0.9999 as DiT/SiT's train.py.
   */
  constructor(readonly ema: Source, readonly model: Source, options: { decay?: number } = {}) {
    this.decay = options.decay ?? 0.9999;
    if (!(this.decay >= 0 && this.decay <= 1)) throw new RangeError(`EMA: decay must be in [0, 1], got ${this.decay}`);
    pairs(ema, model, 'parameters');
    pairs(ema, model, 'buffers');
  }

  /** ema = decay * ema + (1 - decay) * model for parameters; buffers are copied. */
  update(decay = this.decay): void {
    this.apply((e, p) => torch.fusedEmaStep(e, p, decay) || e.mul_(decay).add_(p, 1 - decay));
  }

  /**
   * Copies the model into the ema, as DiT's `update_ema(ema, model, decay=0)` before training
   * (a copy rather than 0 * ema + model, so that uninitialized ema values cannot leak in as NaN).
   */
  copyFrom(): void {
    this.apply((e, p) => e.copy_(p));
  }

  private apply(parameter: (ema: Tensor, model: Tensor) => void): void {
    torch.noGrad(() => torch.scope(() => {
      for (const [e, p] of pairs(this.ema, this.model, 'parameters')) parameter(e, p);
      for (const [e, b] of pairs(this.ema, this.model, 'buffers')) e.copy_(b);
    }));
  }
}
