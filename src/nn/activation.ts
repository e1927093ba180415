// Activations as modules (torch's nn/modules/activation.py), each a call to F.
import type { Tensor } from '../torch/index.js';
import * as F from './functional.js';
import { Module } from './module.js';

export class SiLU extends Module {
  override forward(input: Tensor): Tensor { return F.silu(input); }
}

/** approximate 'tanh': the tanh form, as DiT/SiT MLPs use. */
export class GELU extends Module {
  constructor(readonly approximate: 'none' | 'tanh' = 'none') { super(); }
  override forward(input: Tensor): Tensor { return F.gelu(input, this.approximate); }
}

export class ReLU extends Module {
  override forward(input: Tensor): Tensor { return F.relu(input); }
}

export class LeakyReLU extends Module {
  constructor(readonly negativeSlope = 0.01) { super(); }
  override forward(input: Tensor): Tensor { return F.leakyRelu(input, this.negativeSlope); }
}

export class Tanh extends Module {
  override forward(input: Tensor): Tensor { return input.tanh(); }
}

export class Sigmoid extends Module {
  override forward(input: Tensor): Tensor { return input.sigmoid(); }
}

export class Softmax extends Module {
  constructor(readonly dim: number) { super(); }
  override forward(input: Tensor): Tensor { return F.softmax(input, this.dim); }
}
