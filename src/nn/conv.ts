// Conv2d and ConvTranspose2d as torch 1.13's nn/modules/conv.py: same arguments, defaults and
// default initialisation (kaiming_uniform(a=sqrt(5)) weights, U(+-1/sqrt(fan_in)) bias).
import * as torch from '../torch/index.js';
import type { Tensor } from '../torch/index.js';
import * as F from './functional.js';
import * as init from './init.js';
import { uniformBias_ } from './layers.js';
import { Module } from './module.js';

export type Size2 = number | [number, number];

export interface Conv2dOptions {
  stride?: Size2;
  padding?: Size2;
  dilation?: Size2;
  groups?: number;
  bias?: boolean;
}

function pair(v: Size2): [number, number] { return typeof v === 'number' ? [v, v] : v; }

/** Shared by Conv2d and ConvTranspose2d (PyTorch's _ConvNd). */
abstract class ConvNd extends Module {
  readonly weight: Tensor;
  readonly bias: Tensor | null;
  readonly kernelSize: [number, number];
  readonly stride: [number, number];
  readonly padding: [number, number];
  readonly dilation: [number, number];
  readonly groups: number;

  constructor(
    readonly inChannels: number, readonly outChannels: number, kernelSize: Size2,
    options: Conv2dOptions, transposed: boolean,
  ) {
    super();
    this.groups = options.groups ?? 1;
    const name = this.constructor.name;
    if (inChannels % this.groups !== 0) throw new Error(`${name}: inChannels ${inChannels} must be divisible by groups ${this.groups}`);
    if (outChannels % this.groups !== 0) throw new Error(`${name}: outChannels ${outChannels} must be divisible by groups ${this.groups}`);
    this.kernelSize = pair(kernelSize);
    this.stride = pair(options.stride ?? 1);
    this.padding = pair(options.padding ?? 0);
    this.dilation = pair(options.dilation ?? 1);
    const shape = transposed
      ? [inChannels, outChannels / this.groups, ...this.kernelSize]
      : [outChannels, inChannels / this.groups, ...this.kernelSize];
    this.weight = this.registerParameter('weight', torch.empty(shape));
    this.bias = this.registerParameter('bias', options.bias ?? true ? torch.empty([outChannels]) : null);
    this.resetParameters();
  }

  resetParameters(): void {
    init.kaimingUniform_(this.weight, { a: Math.sqrt(5) });
    if (this.bias !== null) uniformBias_(this.bias, this.weight);
  }
}

/** 2-D convolution over [N, C, H, W]; weight [outChannels, inChannels / groups, kH, kW]. */
export class Conv2d extends ConvNd {
  constructor(inChannels: number, outChannels: number, kernelSize: Size2, options: Conv2dOptions = {}) {
    super(inChannels, outChannels, kernelSize, options, false);
  }

  override forward(input: Tensor): Tensor {
    return F.conv2d(input, this.weight, this.bias, { stride: this.stride, padding: this.padding, dilation: this.dilation, groups: this.groups });
  }
}

/**
 * Transposed 2-D convolution; weight [inChannels, outChannels / groups, kH, kW]. outputPadding
 * adds rows/columns on one side of the output to pick among the sizes a strided conv maps back.
 */
export class ConvTranspose2d extends ConvNd {
  readonly outputPadding: [number, number];

  constructor(inChannels: number, outChannels: number, kernelSize: Size2, options: Conv2dOptions & { outputPadding?: Size2 } = {}) {
    super(inChannels, outChannels, kernelSize, options, true);
    this.outputPadding = pair(options.outputPadding ?? 0);
    for (let i = 0; i < 2; i++) {
      if (this.outputPadding[i]! >= Math.max(this.stride[i]!, this.dilation[i]!)) {
        throw new Error(`ConvTranspose2d: outputPadding [${this.outputPadding}] must be smaller than stride [${this.stride}] or dilation [${this.dilation}]`);
      }
    }
  }

  override forward(input: Tensor): Tensor {
    return F.convTranspose2d(input, this.weight, this.bias, {
      stride: this.stride, padding: this.padding, outputPadding: this.outputPadding, dilation: this.dilation, groups: this.groups,
    });
  }
}
