// ModuleList and Sequential: children named '0', '1', ... as PyTorch, so state-dict keys read
// 'blocks.3.attn.qkv.weight'.
import type { Tensor } from '../torch/index.js';
import { Module } from './module.js';

/** A list of submodules (no forward of its own), iterable and indexable like an array. */
export class ModuleList<M extends Module = Module> extends Module {
  constructor(modules: Iterable<M> = []) {
    super();
    for (const m of modules) this.push(m);
  }

  get length(): number { return this._modules.size; }

  push(...modules: M[]): this {
    for (const m of modules) this.addModule(String(this._modules.size), m);
    return this;
  }

  /** The module at `index`; negative indices count from the end, as Python's. */
  at(index: number): M {
    const i = index < 0 ? index + this.length : index;
    const m = this._modules.get(String(i));
    if (m === undefined || !Number.isInteger(i)) {
      throw new RangeError(`${this.constructor.name}: index ${index} out of range for length ${this.length}`);
    }
    return m as M;
  }

  *[Symbol.iterator](): Iterator<M> {
    for (const m of this._modules.values()) yield m as M;
  }
}

/** Runs its children in order, each on the previous one's output. */
export class Sequential extends ModuleList {
  constructor(...modules: Module[]) { super(modules); }

  override forward(input: Tensor): Tensor {
    let x = input;
    for (const m of this) x = m.forward(x) as Tensor;
    return x;
  }
}
