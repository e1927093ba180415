// LayerNorm, GroupNorm and BatchNorm2d as torch's nn/modules/normalization.py and batchnorm.py:
// affine weight 1 and bias 0; BatchNorm's buffers running_mean, running_var, num_batches_tracked.
import * as torch from '../torch/index.js';
import type { Tensor } from '../torch/index.js';
import * as F from './functional.js';
import { Module } from './module.js';

/** Normalizes over the trailing `normalizedShape` dims. `bias: false` is torch 2.1's option. */
export class LayerNorm extends Module {
  readonly normalizedShape: number[];
  readonly eps: number;
  readonly weight: Tensor | null;
  readonly bias: Tensor | null;

  constructor(normalizedShape: number | number[], options: { eps?: number; elementwiseAffine?: boolean; bias?: boolean } = {}) {
    super();
    this.normalizedShape = typeof normalizedShape === 'number' ? [normalizedShape] : [...normalizedShape];
    this.eps = options.eps ?? 1e-5;
    const affine = options.elementwiseAffine ?? true;
    this.weight = this.registerParameter('weight', affine ? torch.ones(this.normalizedShape) : null);
    this.bias = this.registerParameter('bias', affine && (options.bias ?? true) ? torch.zeros(this.normalizedShape) : null);
  }

  override forward(input: Tensor): Tensor { return F.layerNorm(input, this.normalizedShape, this.weight, this.bias, this.eps); }
}

/** Normalizes [N, C, ...] over groups of C / numGroups channels; per-channel affine. */
export class GroupNorm extends Module {
  readonly eps: number;
  readonly weight: Tensor | null;
  readonly bias: Tensor | null;

  constructor(readonly numGroups: number, readonly numChannels: number, options: { eps?: number; affine?: boolean } = {}) {
    super();
    if (numChannels % numGroups !== 0) throw new Error(`GroupNorm: numChannels ${numChannels} must be divisible by numGroups ${numGroups}`);
    this.eps = options.eps ?? 1e-5;
    const affine = options.affine ?? true;
    this.weight = this.registerParameter('weight', affine ? torch.ones([numChannels]) : null);
    this.bias = this.registerParameter('bias', affine ? torch.zeros([numChannels]) : null);
  }

  override forward(input: Tensor): Tensor { return F.groupNorm(input, this.numGroups, this.weight, this.bias, this.eps); }
}

export interface BatchNormOptions {
  eps?: number;
  /** Weight of the new batch statistics in the running averages; null: cumulative average. */
  momentum?: number | null;
  affine?: boolean;
  trackRunningStats?: boolean;
}

/**
 * Batch normalization over [N, C, H, W]: batch statistics in training (updating the running
 * averages with the unbiased variance), running statistics in eval.
 */
export class BatchNorm2d extends Module {
  readonly eps: number;
  readonly momentum: number | null;
  readonly trackRunningStats: boolean;
  readonly weight: Tensor | null;
  readonly bias: Tensor | null;
  readonly runningMean: Tensor | null;
  readonly runningVar: Tensor | null;
  readonly numBatchesTracked: Tensor | null;

  constructor(readonly numFeatures: number, options: BatchNormOptions = {}) {
    super();
    this.eps = options.eps ?? 1e-5;
    this.momentum = options.momentum === undefined ? 0.1 : options.momentum;
    this.trackRunningStats = options.trackRunningStats ?? true;
    const affine = options.affine ?? true;
    this.weight = this.registerParameter('weight', affine ? torch.ones([numFeatures]) : null);
    this.bias = this.registerParameter('bias', affine ? torch.zeros([numFeatures]) : null);
    const track = this.trackRunningStats;
    this.runningMean = this.registerBuffer('running_mean', track ? torch.zeros([numFeatures]) : null);
    this.runningVar = this.registerBuffer('running_var', track ? torch.ones([numFeatures]) : null);
    this.numBatchesTracked = this.registerBuffer('num_batches_tracked', track ? torch.zeros([], { dtype: 'int64' }) : null);
  }

  override forward(input: Tensor): Tensor {
    if (input.ndim !== 4) throw new Error(`BatchNorm2d: expected 4-D input [N, C, H, W], got shape [${input.shape}]`);
    let factor = this.momentum ?? 0;
    if (this.training && this.numBatchesTracked !== null) {
      this.numBatchesTracked.add_(1);
      if (this.momentum === null) factor = 1 / this.numBatchesTracked.item();
    }
    // Eval without running statistics normalizes with the batch's, as PyTorch.
    const useBatchStats = this.training || (this.runningMean === null && this.runningVar === null);
    const useRunning = !this.training || this.trackRunningStats;
    return F.batchNorm(input, useRunning ? this.runningMean : null, useRunning ? this.runningVar : null, {
      weight: this.weight, bias: this.bias, training: useBatchStats, momentum: factor, eps: this.eps,
    });
  }
}
