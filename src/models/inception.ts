// The FID Inception network: pytorch-fid's fid_inception_v3 (mseitzer/pytorch-fid,
// src/pytorch_fid/inception.py), i.e. torchvision's Inception3 (models/inception.py) with
// num_classes=1008, aux_logits=False and the blocks patched to match the TensorFlow graph
// inception-2015-12-05 (FIDInceptionA/C/E_1: average pools that leave the padding out;
// FIDInceptionE_2: a max pool). Keys equal those of pt_inception-2015-12-05-6726825d.pth, so the
// published file loads as it is. The input path and outputs follow torch-fidelity
// (feature_extractor_inceptionv3.py): uint8 images, TensorFlow 1's bilinear resize to 299,
// (x - 128) / 128, pool_3 and the logits; plus the spatial features of the ADM evaluator
// (guided-diffusion evaluations/evaluator.py) for sFID.
import { existsSync } from 'node:fs';
import * as torch from '../torch/index.js';
import type { Tensor } from '../torch/index.js';
import * as nn from '../nn/index.js';
import { load } from '../io/index.js';

const F = nn.F;

/** Where pytorch-fid downloads the weights from (its FID_WEIGHTS_URL). */
export const FID_WEIGHTS_URL = 'https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth';

/** The image side the network was trained at; every input is resized to it. */
export const INCEPTION_INPUT_SIZE = 299;

/** Conv (no bias), BatchNorm (eps 0.001, TensorFlow's), ReLU: torchvision's BasicConv2d. */
class BasicConv2d extends nn.Module {
  readonly conv: nn.Conv2d;
  readonly bn: nn.BatchNorm2d;

  constructor(inChannels: number, outChannels: number, kernelSize: nn.Size2, options: { stride?: number; padding?: nn.Size2 } = {}) {
    super();
    this.conv = this.addModule('conv', new nn.Conv2d(inChannels, outChannels, kernelSize, { ...options, bias: false }));
    this.bn = this.addModule('bn', new nn.BatchNorm2d(outChannels, { eps: 0.001 }));
  }

  override forward(x: Tensor): Tensor { return F.relu(this.bn.forward(this.conv.forward(x))); }
}

/** TensorFlow's average pool leaves the zero padding out of the mean (pytorch-fid's "Patch"). */
function avgPoolTF(x: Tensor): Tensor {
  return F.avgPool2d(x, 3, { stride: 1, padding: 1, countIncludePad: false });
}

/** 35x35 block (Mixed_5b/5c/5d): FIDInceptionA. */
class FIDInceptionA extends nn.Module {
  readonly branch1x1: BasicConv2d;
  readonly branch5x5_1: BasicConv2d;
  readonly branch5x5_2: BasicConv2d;
  readonly branch3x3dbl_1: BasicConv2d;
  readonly branch3x3dbl_2: BasicConv2d;
  readonly branch3x3dbl_3: BasicConv2d;
  readonly branchPool: BasicConv2d;

  constructor(inChannels: number, poolFeatures: number) {
    super();
    this.branch1x1 = this.addModule('branch1x1', new BasicConv2d(inChannels, 64, 1));
    this.branch5x5_1 = this.addModule('branch5x5_1', new BasicConv2d(inChannels, 48, 1));
    this.branch5x5_2 = this.addModule('branch5x5_2', new BasicConv2d(48, 64, 5, { padding: 2 }));
    this.branch3x3dbl_1 = this.addModule('branch3x3dbl_1', new BasicConv2d(inChannels, 64, 1));
    this.branch3x3dbl_2 = this.addModule('branch3x3dbl_2', new BasicConv2d(64, 96, 3, { padding: 1 }));
    this.branch3x3dbl_3 = this.addModule('branch3x3dbl_3', new BasicConv2d(96, 96, 3, { padding: 1 }));
    this.branchPool = this.addModule('branch_pool', new BasicConv2d(inChannels, poolFeatures, 1));
  }

  override forward(x: Tensor): Tensor {
    const branch1x1 = this.branch1x1.forward(x);
    const branch5x5 = this.branch5x5_2.forward(this.branch5x5_1.forward(x));
    const branch3x3dbl = this.branch3x3dbl_3.forward(this.branch3x3dbl_2.forward(this.branch3x3dbl_1.forward(x)));
    const branchPool = this.branchPool.forward(avgPoolTF(x));
    return torch.cat([branch1x1, branch5x5, branch3x3dbl, branchPool], 1);
  }
}

/** 35x35 -> 17x17 reduction (Mixed_6a): torchvision's InceptionB, unpatched. */
class InceptionB extends nn.Module {
  readonly branch3x3: BasicConv2d;
  readonly branch3x3dbl_1: BasicConv2d;
  readonly branch3x3dbl_2: BasicConv2d;
  readonly branch3x3dbl_3: BasicConv2d;

  constructor(inChannels: number) {
    super();
    this.branch3x3 = this.addModule('branch3x3', new BasicConv2d(inChannels, 384, 3, { stride: 2 }));
    this.branch3x3dbl_1 = this.addModule('branch3x3dbl_1', new BasicConv2d(inChannels, 64, 1));
    this.branch3x3dbl_2 = this.addModule('branch3x3dbl_2', new BasicConv2d(64, 96, 3, { padding: 1 }));
    this.branch3x3dbl_3 = this.addModule('branch3x3dbl_3', new BasicConv2d(96, 96, 3, { stride: 2 }));
  }

  override forward(x: Tensor): Tensor {
    const branch3x3 = this.branch3x3.forward(x);
    const branch3x3dbl = this.branch3x3dbl_3.forward(this.branch3x3dbl_2.forward(this.branch3x3dbl_1.forward(x)));
    return torch.cat([branch3x3, branch3x3dbl, F.maxPool2d(x, 3, { stride: 2 })], 1);
  }
}

/** 17x17 block (Mixed_6b..6e) with factorized 7x7 convolutions: FIDInceptionC. */
class FIDInceptionC extends nn.Module {
  readonly branch1x1: BasicConv2d;
  readonly branch7x7_1: BasicConv2d;
  readonly branch7x7_2: BasicConv2d;
  readonly branch7x7_3: BasicConv2d;
  readonly branch7x7dbl_1: BasicConv2d;
  readonly branch7x7dbl_2: BasicConv2d;
  readonly branch7x7dbl_3: BasicConv2d;
  readonly branch7x7dbl_4: BasicConv2d;
  readonly branch7x7dbl_5: BasicConv2d;
  readonly branchPool: BasicConv2d;

  constructor(inChannels: number, channels7x7: number) {
    super();
    const c7 = channels7x7;
    this.branch1x1 = this.addModule('branch1x1', new BasicConv2d(inChannels, 192, 1));
    this.branch7x7_1 = this.addModule('branch7x7_1', new BasicConv2d(inChannels, c7, 1));
    this.branch7x7_2 = this.addModule('branch7x7_2', new BasicConv2d(c7, c7, [1, 7], { padding: [0, 3] }));
    this.branch7x7_3 = this.addModule('branch7x7_3', new BasicConv2d(c7, 192, [7, 1], { padding: [3, 0] }));
    this.branch7x7dbl_1 = this.addModule('branch7x7dbl_1', new BasicConv2d(inChannels, c7, 1));
    this.branch7x7dbl_2 = this.addModule('branch7x7dbl_2', new BasicConv2d(c7, c7, [7, 1], { padding: [3, 0] }));
    this.branch7x7dbl_3 = this.addModule('branch7x7dbl_3', new BasicConv2d(c7, c7, [1, 7], { padding: [0, 3] }));
    this.branch7x7dbl_4 = this.addModule('branch7x7dbl_4', new BasicConv2d(c7, c7, [7, 1], { padding: [3, 0] }));
    this.branch7x7dbl_5 = this.addModule('branch7x7dbl_5', new BasicConv2d(c7, 192, [1, 7], { padding: [0, 3] }));
    this.branchPool = this.addModule('branch_pool', new BasicConv2d(inChannels, 192, 1));
  }

  /** The four branch outputs before concatenation (torchvision's InceptionC._forward). */
  branches(x: Tensor): [Tensor, Tensor, Tensor, Tensor] {
    const branch1x1 = this.branch1x1.forward(x);
    const branch7x7 = this.branch7x7_3.forward(this.branch7x7_2.forward(this.branch7x7_1.forward(x)));
    let branch7x7dbl = this.branch7x7dbl_1.forward(x);
    for (const conv of [this.branch7x7dbl_2, this.branch7x7dbl_3, this.branch7x7dbl_4, this.branch7x7dbl_5]) branch7x7dbl = conv.forward(branch7x7dbl);
    const branchPool = this.branchPool.forward(avgPoolTF(x));
    return [branch1x1, branch7x7, branch7x7dbl, branchPool];
  }

  override forward(x: Tensor): Tensor { return torch.cat(this.branches(x), 1); }
}

/** 17x17 -> 8x8 reduction (Mixed_7a): torchvision's InceptionD, unpatched. */
class InceptionD extends nn.Module {
  readonly branch3x3_1: BasicConv2d;
  readonly branch3x3_2: BasicConv2d;
  readonly branch7x7x3_1: BasicConv2d;
  readonly branch7x7x3_2: BasicConv2d;
  readonly branch7x7x3_3: BasicConv2d;
  readonly branch7x7x3_4: BasicConv2d;

  constructor(inChannels: number) {
    super();
    this.branch3x3_1 = this.addModule('branch3x3_1', new BasicConv2d(inChannels, 192, 1));
    this.branch3x3_2 = this.addModule('branch3x3_2', new BasicConv2d(192, 320, 3, { stride: 2 }));
    this.branch7x7x3_1 = this.addModule('branch7x7x3_1', new BasicConv2d(inChannels, 192, 1));
    this.branch7x7x3_2 = this.addModule('branch7x7x3_2', new BasicConv2d(192, 192, [1, 7], { padding: [0, 3] }));
    this.branch7x7x3_3 = this.addModule('branch7x7x3_3', new BasicConv2d(192, 192, [7, 1], { padding: [3, 0] }));
    this.branch7x7x3_4 = this.addModule('branch7x7x3_4', new BasicConv2d(192, 192, 3, { stride: 2 }));
  }

  override forward(x: Tensor): Tensor {
    const branch3x3 = this.branch3x3_2.forward(this.branch3x3_1.forward(x));
    let branch7x7x3 = this.branch7x7x3_1.forward(x);
    for (const conv of [this.branch7x7x3_2, this.branch7x7x3_3, this.branch7x7x3_4]) branch7x7x3 = conv.forward(branch7x7x3);
    return torch.cat([branch3x3, branch7x7x3, F.maxPool2d(x, 3, { stride: 2 })], 1);
  }
}

/**
 * 8x8 block with expanded filter banks: FIDInceptionE_1 (Mixed_7b, pool 'avg' without the
 * padding) and FIDInceptionE_2 (Mixed_7c, pool 'max': the TensorFlow graph max-pools here,
 * "likely an error" in that graph as pytorch-fid notes, kept for comparable scores).
 */
class FIDInceptionE extends nn.Module {
  readonly branch1x1: BasicConv2d;
  readonly branch3x3_1: BasicConv2d;
  readonly branch3x3_2a: BasicConv2d;
  readonly branch3x3_2b: BasicConv2d;
  readonly branch3x3dbl_1: BasicConv2d;
  readonly branch3x3dbl_2: BasicConv2d;
  readonly branch3x3dbl_3a: BasicConv2d;
  readonly branch3x3dbl_3b: BasicConv2d;
  readonly branchPool: BasicConv2d;

  constructor(inChannels: number, readonly pool: 'avg' | 'max') {
    super();
    this.branch1x1 = this.addModule('branch1x1', new BasicConv2d(inChannels, 320, 1));
    this.branch3x3_1 = this.addModule('branch3x3_1', new BasicConv2d(inChannels, 384, 1));
    this.branch3x3_2a = this.addModule('branch3x3_2a', new BasicConv2d(384, 384, [1, 3], { padding: [0, 1] }));
    this.branch3x3_2b = this.addModule('branch3x3_2b', new BasicConv2d(384, 384, [3, 1], { padding: [1, 0] }));
    this.branch3x3dbl_1 = this.addModule('branch3x3dbl_1', new BasicConv2d(inChannels, 448, 1));
    this.branch3x3dbl_2 = this.addModule('branch3x3dbl_2', new BasicConv2d(448, 384, 3, { padding: 1 }));
    this.branch3x3dbl_3a = this.addModule('branch3x3dbl_3a', new BasicConv2d(384, 384, [1, 3], { padding: [0, 1] }));
    this.branch3x3dbl_3b = this.addModule('branch3x3dbl_3b', new BasicConv2d(384, 384, [3, 1], { padding: [1, 0] }));
    this.branchPool = this.addModule('branch_pool', new BasicConv2d(inChannels, 192, 1));
  }

  override forward(x: Tensor): Tensor {
    const branch1x1 = this.branch1x1.forward(x);
    const branch3x3 = this.branch3x3_1.forward(x);
    const branch3x3dbl = this.branch3x3dbl_2.forward(this.branch3x3dbl_1.forward(x));
    const pooled = this.pool === 'avg' ? avgPoolTF(x) : F.maxPool2d(x, 3, { stride: 1, padding: 1 });
    return torch.cat([
      branch1x1,
      this.branch3x3_2a.forward(branch3x3), this.branch3x3_2b.forward(branch3x3),
      this.branch3x3dbl_3a.forward(branch3x3dbl), this.branch3x3dbl_3b.forward(branch3x3dbl),
      this.branchPool.forward(pooled),
    ], 1);
  }
}

/** What the FID, sFID and IS computations read from one batch. */
export interface InceptionFeatures {
  /** [N, 2048]: the final average pool (TensorFlow's pool_3), FID's features. */
  pool3: Tensor;
  /**
   * [N, 2023]: the ADM evaluator's sFID features, `mixed_6/conv:0`[..., :7] reshaped to [N, -1]:
   * the first 7 channels of Mixed_6d.branch1x1 after its ReLU (mixed_6 is the graph's seventh
   * mixed block; torch-fidelity's util_convert_inception_weights.py maps mixed_6/conv to
   * Mixed_6d.branch1x1), 17x17x7 flattened in TensorFlow's NHWC order.
   */
  spatial: Tensor;
  /**
   * [N, 1008]: pool3 @ fc.weight^T without the bias. Its softmax gives the Inception Score's class
   * probabilities: the ADM evaluator multiplies pool_3 by the weight input of
   * `softmax/logits/MatMul` alone, and torch-fidelity's IS reads 'logits_unbiased' by default.
   */
  logitsUnbiased: Tensor;
  /** [N, 1008]: logitsUnbiased + fc.bias (torch-fidelity's 'logits'). */
  logits: Tensor;
}

/**
 * FID Inception v3 with the state-dict keys of torchvision's Inception3 (Conv2d_1a_3x3.conv.weight,
 * Mixed_5b.branch1x1.bn.running_mean, ..., fc.bias). Load the published weights with
 * FIDInceptionV3.fromCheckpoint('pt_inception-2015-12-05-6726825d.pth').
 */
export class FIDInceptionV3 extends nn.Module {
  readonly conv2d1a3x3: BasicConv2d;
  readonly conv2d2a3x3: BasicConv2d;
  readonly conv2d2b3x3: BasicConv2d;
  readonly conv2d3b1x1: BasicConv2d;
  readonly conv2d4a3x3: BasicConv2d;
  readonly mixed5b: FIDInceptionA;
  readonly mixed5c: FIDInceptionA;
  readonly mixed5d: FIDInceptionA;
  readonly mixed6a: InceptionB;
  readonly mixed6b: FIDInceptionC;
  readonly mixed6c: FIDInceptionC;
  readonly mixed6d: FIDInceptionC;
  readonly mixed6e: FIDInceptionC;
  readonly mixed7a: InceptionD;
  readonly mixed7b: FIDInceptionE;
  readonly mixed7c: FIDInceptionE;
  readonly fc: nn.Linear;

  constructor() {
    super();
    this.conv2d1a3x3 = this.addModule('Conv2d_1a_3x3', new BasicConv2d(3, 32, 3, { stride: 2 }));
    this.conv2d2a3x3 = this.addModule('Conv2d_2a_3x3', new BasicConv2d(32, 32, 3));
    this.conv2d2b3x3 = this.addModule('Conv2d_2b_3x3', new BasicConv2d(32, 64, 3, { padding: 1 }));
    this.conv2d3b1x1 = this.addModule('Conv2d_3b_1x1', new BasicConv2d(64, 80, 1));
    this.conv2d4a3x3 = this.addModule('Conv2d_4a_3x3', new BasicConv2d(80, 192, 3));
    this.mixed5b = this.addModule('Mixed_5b', new FIDInceptionA(192, 32));
    this.mixed5c = this.addModule('Mixed_5c', new FIDInceptionA(256, 64));
    this.mixed5d = this.addModule('Mixed_5d', new FIDInceptionA(288, 64));
    this.mixed6a = this.addModule('Mixed_6a', new InceptionB(288));
    this.mixed6b = this.addModule('Mixed_6b', new FIDInceptionC(768, 128));
    this.mixed6c = this.addModule('Mixed_6c', new FIDInceptionC(768, 160));
    this.mixed6d = this.addModule('Mixed_6d', new FIDInceptionC(768, 160));
    this.mixed6e = this.addModule('Mixed_6e', new FIDInceptionC(768, 192));
    this.mixed7a = this.addModule('Mixed_7a', new InceptionD(768));
    this.mixed7b = this.addModule('Mixed_7b', new FIDInceptionE(1280, 'avg'));
    this.mixed7c = this.addModule('Mixed_7c', new FIDInceptionE(2048, 'max'));
    this.fc = this.addModule('fc', new nn.Linear(2048, 1008));
  }

  /**
   * uint8 images [N, 3, H, W] (RGB, 0..255) to the network's input, as torch-fidelity: cast to the
   * model's dtype, TensorFlow 1's bilinear resize to 299x299, then (x - 128) / 128.
   */
  preprocess(images: Tensor): Tensor {
    if (images.dtype !== 'uint8' || images.ndim !== 4 || images.size(1) !== 3) {
      throw new Error(`FIDInceptionV3: expected uint8 images [N, 3, H, W], got ${images.dtype} [${images.shape}]`);
    }
    const x = resizeBilinearTF1(images.to(this.fc.weight.dtype), [INCEPTION_INPUT_SIZE, INCEPTION_INPUT_SIZE]);
    return x.sub(128).div(128);
  }

  /** pool_3, spatial features and logits of uint8 images [N, 3, H, W]. */
  override forward(images: Tensor): InceptionFeatures { return this.forwardFeatures(this.preprocess(images)); }

  /** The features of already preprocessed input [N, 3, 299, 299] in [-1, 1]. */
  forwardFeatures(input: Tensor): InceptionFeatures {
    // Each layer's output is freed once the next has consumed it, as Python frees it at its last
    // use, rather than when the forward returns: the stem's maps are tens of MB a batch (peak RSS
    // at batch 64, with the resize's scope: 2.3 GB, against 4.0 GB with everything kept to the end).
    let x = input;
    const next = (layer: (t: Tensor) => Tensor): void => {
      const out = layer(x);
      if (x !== input) x.dispose();
      x = out;
    };
    for (const conv of [this.conv2d1a3x3, this.conv2d2a3x3, this.conv2d2b3x3]) next((t) => conv.forward(t));
    next((t) => F.maxPool2d(t, 3, { stride: 2 }));
    for (const conv of [this.conv2d3b1x1, this.conv2d4a3x3]) next((t) => conv.forward(t));
    next((t) => F.maxPool2d(t, 3, { stride: 2 }));
    for (const block of [this.mixed5b, this.mixed5c, this.mixed5d, this.mixed6a, this.mixed6b, this.mixed6c]) next((t) => block.forward(t));
    const mixed6d = this.mixed6d.branches(x);
    next(() => torch.cat(mixed6d, 1));
    for (const block of [this.mixed6e, this.mixed7a, this.mixed7b, this.mixed7c]) next((t) => block.forward(t));
    const pool3 = F.adaptiveAvgPool2d(x, 1).flatten(1);
    const logitsUnbiased = pool3.matmul(this.fc.weight.t());
    const n = pool3.size(0);
    return {
      pool3,
      spatial: mixed6d[0].narrow(1, 0, 7).permute(0, 2, 3, 1).reshape(n, -1),
      logitsUnbiased,
      logits: logitsUnbiased.add(this.fc.bias!.unsqueeze(0)),
    };
  }

  /**
   * The network with the weights of a checkpoint, in eval mode and frozen: a file (torch.save
   * .pth in either format, or .safetensors) or a state dict already loaded. Bad keys or shapes
   * raise an error naming the file and every offending key.
   */
  static fromCheckpoint(checkpoint: string | nn.StateDict | Record<string, Tensor>): FIDInceptionV3 {
    const source = typeof checkpoint === 'string' ? checkpoint : 'checkpoint';
    if (typeof checkpoint === 'string' && !existsSync(checkpoint)) {
      throw new Error(`${checkpoint}: no such file (pytorch-fid publishes the FID Inception weights at ${FID_WEIGHTS_URL})`);
    }
    const model = new FIDInceptionV3();
    torch.scope(() => {
      try {
        model.loadStateDict(withBatchCounters(typeof checkpoint === 'string' ? load(checkpoint) : checkpoint, model));
      } catch (error) {
        throw new Error(`${source}: ${(error as Error).message}`, { cause: error });
      }
    });
    return model.eval().requiresGrad_(false);
  }
}

/**
 * A state dict of tensors, with each BatchNorm's num_batches_tracked the model's own where the
 * file has none: the published weights were converted from TensorFlow without those counters, and
 * PyTorch's BatchNorm._load_from_state_dict fills them in for such version-less state dicts. The
 * counter only matters in training with momentum=None, never in this frozen network.
 */
function withBatchCounters(value: unknown, model: FIDInceptionV3): nn.StateDict {
  const entries = value instanceof Map ? [...value.entries()] as [string, unknown][]
    : value !== null && typeof value === 'object' && !Array.isArray(value) ? Object.entries(value) : null;
  if (entries === null) throw new Error('expected a state dict (a dict of tensors)');
  const notTensors = entries.filter(([, v]) => !(v instanceof torch.Tensor)).map(([k]) => k);
  if (notTensors.length > 0) throw new Error(`expected a state dict of tensors; not tensors: [${notTensors.join(', ')}]`);
  const stateDict = new Map(entries as [string, Tensor][]);
  for (const [key, counter] of model.stateDict()) {
    if (key.endsWith('.bn.num_batches_tracked') && !stateDict.has(key)) stateDict.set(key, counter);
  }
  return stateDict;
}

/**
 * Bilinear resize of [N, C, H, W] floating-point images to `size` exactly as TensorFlow 1's
 * tf.image.resize_bilinear(align_corners=False) (core/kernels/resize_bilinear_op.cc), which the
 * FID graph applies to its input, and torch-fidelity's interpolate_bilinear_2d_like_tensorflow1x
 * reproduces: source = destination * (in / out) with no half-pixel offset (unlike PyTorch's
 * align_corners=False), scale and positions in float32, lerps in the order TensorFlow computes them.
 */
export function resizeBilinearTF1(x: Tensor, size: number | [number, number]): Tensor {
  if (x.ndim !== 4 || !x.isFloatingPoint()) throw new Error(`resizeBilinearTF1: expected floating-point [N, C, H, W], got ${x.dtype} [${x.shape}]`);
  return torch.scope(() => resizeRows(x, size));
}

function resizeRows(x: Tensor, size: number | [number, number]): Tensor {
  const [outH, outW] = typeof size === 'number' ? [size, size] : size;
  const ys = interpolation(x.size(2), outH);
  const xs = interpolation(x.size(3), outW);
  const index = (values: number[]): Tensor => torch.tensor(values, { dtype: 'int64', device: x.device });
  const lerp = (values: number[], shape: number[]): Tensor => torch.tensor(values, { dtype: 'float32', device: x.device }).to(x.dtype).view(shape);
  // Advanced indexing (aten::index), as torch-fidelity: on the CPU it is several times faster
  // than index_select along the last dimension.
  const top = x.index(':', ':', index(ys.lower));
  const bottom = x.index(':', ':', index(ys.upper));
  const xLower = index(xs.lower);
  const xUpper = index(xs.upper);
  const xLerp = lerp(xs.lerp, [1, 1, 1, outW]);
  const topLeft = top.index('...', xLower);
  const bottomLeft = bottom.index('...', xLower);
  const topRow = topLeft.add(top.index('...', xUpper).sub(topLeft).mul(xLerp));
  const bottomRow = bottomLeft.add(bottom.index('...', xUpper).sub(bottomLeft).mul(xLerp));
  return topRow.add(bottomRow.sub(topRow).mul(lerp(ys.lerp, [1, 1, outH, 1])));
}

/**
 * TensorFlow's compute_interpolation_weights in float32: scale = in / out, src = i * scale,
 * lower = trunc(src), upper = min(lower + 1, in - 1), lerp = src - lower. A float32 product or
 * quotient computed in double and rounded once with Math.fround is the correctly rounded float32
 * result (double carries more than 2 * 24 + 2 bits).
 */
function interpolation(inSize: number, outSize: number): { lower: number[]; upper: number[]; lerp: number[] } {
  const scale = Math.fround(inSize / outSize);
  const lower: number[] = [];
  const upper: number[] = [];
  const lerp: number[] = [];
  for (let i = 0; i < outSize; i++) {
    const src = Math.fround(i * scale);
    const lo = Math.trunc(src);
    lower.push(lo);
    upper.push(Math.min(lo + 1, inSize - 1));
    lerp.push(Math.fround(src - lo));
  }
  return { lower, upper, lerp };
}
