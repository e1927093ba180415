// Linear, Embedding, Identity, Dropout, Flatten: torch 1.13's nn/modules, same defaults and
// default initialisations.
import * as torch from '../torch/index.js';
import type { Tensor } from '../torch/index.js';
import * as F from './functional.js';
import * as init from './init.js';
import { Module } from './module.js';

export class Identity extends Module {
  override forward(input: Tensor): Tensor { return input; }
}

/** y = x W^T + b, W: [outFeatures, inFeatures]. */
export class Linear extends Module {
  readonly weight: Tensor;
  readonly bias: Tensor | null;

  constructor(readonly inFeatures: number, readonly outFeatures: number, options: { bias?: boolean } = {}) {
    super();
    this.weight = this.registerParameter('weight', torch.empty([outFeatures, inFeatures]));
    this.bias = this.registerParameter('bias', options.bias ?? true ? torch.empty([outFeatures]) : null);
    this.resetParameters();
  }

  /** kaiming_uniform(a=sqrt(5)) weights, i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and the same bound for the bias. */
  resetParameters(): void {
    init.kaimingUniform_(this.weight, { a: Math.sqrt(5) });
    if (this.bias !== null) uniformBias_(this.bias, this.weight);
  }

  override forward(input: Tensor): Tensor { return F.linear(input, this.weight, this.bias); }
}

/** U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with the weight's fan_in, as Linear's and ConvNd's reset_parameters. */
export function uniformBias_(bias: Tensor, weight: Tensor): void {
  const { fanIn } = init.calculateFanInAndFanOut(weight);
  const bound = fanIn > 0 ? 1 / Math.sqrt(fanIn) : 0;
  init.uniform_(bias, -bound, bound);
}

/** A lookup table [numEmbeddings, embeddingDim], N(0, 1) init; the paddingIdx row is zero and gets no gradient. */
export class Embedding extends Module {
  readonly weight: Tensor;
  readonly paddingIdx: number | null;

  constructor(readonly numEmbeddings: number, readonly embeddingDim: number, options: { paddingIdx?: number | null } = {}) {
    super();
    const paddingIdx = options.paddingIdx ?? null;
    if (paddingIdx !== null && (paddingIdx >= numEmbeddings || paddingIdx < -numEmbeddings)) {
      throw new RangeError(`Embedding: paddingIdx ${paddingIdx} is outside [-${numEmbeddings}, ${numEmbeddings})`);
    }
    this.paddingIdx = paddingIdx !== null && paddingIdx < 0 ? paddingIdx + numEmbeddings : paddingIdx;
    this.weight = this.registerParameter('weight', torch.empty([numEmbeddings, embeddingDim]));
    this.resetParameters();
  }

  resetParameters(): void {
    init.normal_(this.weight);
    if (this.paddingIdx !== null) torch.noGrad(() => this.weight.select(0, this.paddingIdx!).zero_());
  }

  override forward(input: Tensor): Tensor { return F.embedding(input, this.weight, this.paddingIdx); }
}

/** Zeroes elements with probability p in training mode and scales the rest by 1/(1-p); identity in eval. */
export class Dropout extends Module {
  constructor(readonly p = 0.5) {
    super();
    if (p < 0 || p > 1) throw new RangeError(`Dropout: p must be in [0, 1], got ${p}`);
  }

  override forward(input: Tensor): Tensor { return F.dropout(input, this.p, this.training); }
}

export class Flatten extends Module {
  constructor(readonly startDim = 1, readonly endDim = -1) { super(); }
  override forward(input: Tensor): Tensor { return input.flatten(this.startDim, this.endDim); }
}
