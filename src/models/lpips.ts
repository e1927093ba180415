// LPIPS with the VGG16 trunk, as richzhang/PerceptualSimilarity's lpips package (lpips/lpips.py:
// LPIPS(net='vgg', version='0.1') with lpips=True, spatial=False; lpips/pretrained_networks.py:
// vgg16) and taming-transformers' copy of it (taming/modules/losses/lpips.py), which every
// VQGAN/LDM-style autoencoder trains with. Both register the same modules, so the state-dict keys
// are theirs:
//   scaling_layer.shift, scaling_layer.scale       the ScalingLayer's constant buffers
//   net.slice{1..5}.{N}.weight / .bias              torchvision's vgg16().features[N] convs
//   lin{0..4}.model.1.weight                        1x1 convs after a Dropout (model.0)
// The lpips package also keeps the five linear layers in a ModuleList `lins`, so its state dicts
// repeat them as lins.{0..4}.model.1.weight; taming's do not. The published files hold parts:
// torchvision's vgg16-397923af.pth (`features.N.*`, `classifier.*`) for the trunk and vgg.pth
// (lpips' weights/v0.1/vgg.pth, the same file as taming's vgg_lpips) with only the lin keys.
import * as torch from '../torch/index.js';
import type { Tensor } from '../torch/index.js';
import * as nn from '../nn/index.js';
import { load } from '../io/index.js';

const F = nn.F;

/** torchvision's vgg16 "D" configuration: 3x3 convs (padding 1) + ReLU, 'M' = 2x2 max pooling. */
const VGG16_LAYERS: (number | 'M')[] = [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512, 512, 512];

/** pretrained_networks.vgg16 cuts vgg16().features at these indices: after relu1_2, relu2_2, relu3_3, relu4_3, relu5_3. */
const SLICE_BOUNDS = [0, 4, 9, 16, 23, 30];

/** Channels of the five feature maps (LPIPS.chns for 'vgg'). */
export const LPIPS_VGG_CHANNELS = [64, 128, 256, 512, 512];

/** torchvision's MaxPool2d(kernel_size=2, stride=2) between VGG stages. */
class MaxPool2d extends nn.Module {
  override forward(input: Tensor): Tensor { return F.maxPool2d(input, 2, { stride: 2 }); }
}

/**
 * The VGG16 trunk as pretrained_networks.vgg16: slice1..slice5, each a Sequential whose children
 * keep their index in torchvision's `features` (slice2 holds '4'..'8'), so keys read
 * `net.slice2.5.weight` for `features.5.weight`.
 */
export class Vgg16 extends nn.Module {
  readonly slices: nn.Sequential[] = [];

  constructor() {
    super();
    const features: nn.Module[] = [];
    let inChannels = 3;
    for (const v of VGG16_LAYERS) {
      if (v === 'M') {
        features.push(new MaxPool2d());
      } else {
        features.push(new nn.Conv2d(inChannels, v, 3, { padding: 1 }), new nn.ReLU());
        inChannels = v;
      }
    }
    for (let k = 0; k < 5; k++) {
      const slice = new nn.Sequential();
      for (let x = SLICE_BOUNDS[k]!; x < SLICE_BOUNDS[k + 1]!; x++) slice.addModule(String(x), features[x]!);
      this.slices.push(this.addModule(`slice${k + 1}`, slice));
    }
  }

  /** The five feature maps relu1_2, relu2_2, relu3_3, relu4_3, relu5_3. */
  override forward(x: Tensor): Tensor[] {
    const outs: Tensor[] = [];
    let h = x;
    for (const slice of this.slices) {
      h = slice.forward(h);
      outs.push(h);
    }
    return outs;
  }
}

/** (x - shift) / scale per RGB channel: [-1, 1] images to roughly ImageNet-normalized ones (lpips v0.1's constants). */
export class ScalingLayer extends nn.Module {
  readonly shift: Tensor;
  readonly scale: Tensor;

  constructor() {
    super();
    this.shift = this.registerBuffer('shift', torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1));
    this.scale = this.registerBuffer('scale', torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1));
  }

  override forward(input: Tensor): Tensor { return input.sub(this.shift).div(this.scale); }
}

/** A 1x1 conv to one channel without bias, after a Dropout (use_dropout=True, upstream's default). */
export class NetLinLayer extends nn.Module {
  readonly model: nn.Sequential;

  constructor(chnIn: number, chnOut = 1) {
    super();
    this.model = this.addModule('model', new nn.Sequential(new nn.Dropout(), new nn.Conv2d(chnIn, chnOut, 1, { bias: false })));
  }

  override forward(x: Tensor): Tensor { return this.model.forward(x); }
}

/** x / (||x||_2 over channels + eps), lpips.normalize_tensor. */
export function normalizeTensor(x: Tensor, eps = 1e-10): Tensor {
  return x.div(x.pow(2).sum(1, true).sqrt().add(eps));
}

export interface LPIPSForwardOptions {
  /** Inputs are in [0, 1] rather than [-1, 1] (mapped with 2x - 1 first), as lpips' `normalize`. */
  normalize?: boolean;
}

/**
 * The learned perceptual distance between two batches of RGB images in [-1, 1]: per image a
 * [N, 1, 1, 1] tensor. Built frozen and in eval mode (taming freezes every parameter; the lpips
 * package freezes the trunk and defaults to eval); gradients still flow to the inputs, for use
 * as a loss. The weights start random: load them with fromPretrained or loadCheckpoint.
 */
export class LPIPS extends nn.Module {
  readonly scalingLayer: ScalingLayer;
  readonly net: Vgg16;
  readonly lins: NetLinLayer[];

  constructor() {
    super();
    this.scalingLayer = this.addModule('scaling_layer', new ScalingLayer());
    this.net = this.addModule('net', new Vgg16());
    this.lins = LPIPS_VGG_CHANNELS.map((c, k) => this.addModule(`lin${k}`, new NetLinLayer(c)));
    this.requiresGrad_(false);
    this.eval();
  }

  override forward(in0: Tensor, in1: Tensor, options: LPIPSForwardOptions = {}): Tensor {
    if (in0.ndim !== 4 || in0.size(1) !== 3) throw new Error(`LPIPS: expected images [N, 3, H, W], got [${in0.shape}]`);
    if (in1.shape.join() !== in0.shape.join()) throw new Error(`LPIPS: the images' shapes differ: [${in0.shape}] vs [${in1.shape}]`);
    if (options.normalize) {
      in0 = in0.mul(2).sub(1);
      in1 = in1.mul(2).sub(1);
    }
    const outs0 = this.net.forward(this.scalingLayer.forward(in0));
    const outs1 = this.net.forward(this.scalingLayer.forward(in1));
    let val: Tensor | null = null;
    for (let kk = 0; kk < this.lins.length; kk++) {
      const diff = normalizeTensor(outs0[kk]!).sub(normalizeTensor(outs1[kk]!)).pow(2);
      const res = this.lins[kk]!.forward(diff).mean([2, 3], true);
      val = val === null ? res : val.add(res);
    }
    return val!;
  }

  /**
   * Loads the published weights from their two files: `vgg16`, torchvision's VGG16 state dict
   * (vgg16-397923af.pth, or any file with its `features.N.*` keys; `classifier.*` is ignored), and
   * `lin`, the linear layers (lpips' weights/v0.1/vgg.pth or taming's vgg.pth: lin{0..4}.model.1.weight).
   * Every trunk and linear key must be present; errors name the file and the keys.
   */
  static fromPretrained(files: { vgg16: string; lin: string }): LPIPS {
    const model = new LPIPS();
    torch.scope(() => {
      const trunk = readStateDict(files.vgg16);
      const lin = readStateDict(files.lin);
      const state = new Map<string, Tensor>([
        ['scaling_layer.shift', model.scalingLayer.shift], ['scaling_layer.scale', model.scalingLayer.scale],
      ]);
      try {
        for (const [key, t] of torchvisionVgg16ToLpips(trunk)) state.set(key, t);
      } catch (error) {
        throw new Error(`${files.vgg16}: ${(error as Error).message}`, { cause: error });
      }
      const notLin = [...lin.keys()].filter((k) => !/^lin\d\./.test(k));
      if (notLin.length > 0) throw new Error(`${files.lin}: expected only lin{0..4}.model.1.weight, also found [${notLin.join(', ')}]`);
      for (const [key, t] of lin) state.set(key, t);
      const missing = [...model.stateDict().keys()].filter((k) => !state.has(k));
      const missingTrunk = missing.filter((k) => k.startsWith('net.'));
      if (missingTrunk.length > 0) throw new Error(`${files.vgg16}: missing keys [${missingTrunk.map(lpipsKeyToTorchvision).join(', ')}]`);
      if (missing.length > 0) throw new Error(`${files.lin}: missing keys [${missing.join(', ')}]`);
      try {
        model.loadStateDict(state);
      } catch (error) {
        throw new Error(`${files.vgg16} + ${files.lin}: ${(error as Error).message}`, { cause: error });
      }
    });
    return model;
  }

  /**
   * Loads a whole LPIPS state dict (torch.save or safetensors): taming's LPIPS().state_dict() as
   * it is, or the lpips package's, whose lins.K.* repeat linK.* (see lpipsPackageToTaming).
   */
  loadCheckpoint(path: string): this {
    torch.scope(() => {
      try {
        this.loadStateDict(lpipsPackageToTaming(readStateDict(path)));
      } catch (error) {
        throw new Error(`${path}: ${(error as Error).message}`, { cause: error });
      }
    });
    return this;
  }
}

// --- state-dict layouts --------------------------------------------------------------------------

function sliceOf(index: number): number {
  for (let k = 0; k < 5; k++) if (index >= SLICE_BOUNDS[k]! && index < SLICE_BOUNDS[k + 1]!) return k + 1;
  return -1;
}

/** `net.sliceK.N.rest` to torchvision's `features.N.rest`. */
function lpipsKeyToTorchvision(key: string): string { return key.replace(/^net\.slice\d\./, 'features.'); }

/**
 * torchvision vgg16 keys `features.N.{weight,bias}` to LPIPS trunk keys `net.sliceK.N.*` (the
 * slice that holds layer N); `classifier.*` is dropped, any other key is an error naming it.
 */
export function torchvisionVgg16ToLpips(stateDict: Map<string, Tensor>): Map<string, Tensor> {
  const out = new Map<string, Tensor>();
  const bad: string[] = [];
  for (const [key, t] of stateDict) {
    if (key.startsWith('classifier.')) continue;
    const m = /^features\.(\d+)\.(.+)$/.exec(key);
    const slice = m === null ? -1 : sliceOf(Number(m[1]));
    if (slice < 0) bad.push(key);
    else out.set(`net.slice${slice}.${m![1]}.${m![2]}`, t);
  }
  if (bad.length > 0) throw new Error(`not torchvision vgg16 keys (features.N.* for N < 30, classifier.*): [${bad.join(', ')}]`);
  return out;
}

/** The inverse of torchvisionVgg16ToLpips: the trunk's `net.sliceK.N.*` keys as `features.N.*`; other keys are left out. */
export function lpipsToTorchvisionVgg16(stateDict: Map<string, Tensor>): Map<string, Tensor> {
  const out = new Map<string, Tensor>();
  for (const [key, t] of stateDict) if (/^net\.slice\d\./.test(key)) out.set(lpipsKeyToTorchvision(key), t);
  return out;
}

/**
 * The lpips package's state dict in taming's (= this module's) layout: its `lins.K.*` entries
 * are the modules `linK` registered a second time, so they are dropped where `linK.*` is present
 * and renamed to it where not.
 */
export function lpipsPackageToTaming(stateDict: Map<string, Tensor>): Map<string, Tensor> {
  const out = new Map<string, Tensor>();
  for (const [key, t] of stateDict) {
    const m = /^lins\.(\d+)\.(.+)$/.exec(key);
    if (m === null) out.set(key, t);
    else if (!stateDict.has(`lin${m[1]}.${m[2]}`)) out.set(`lin${m[1]}.${m[2]}`, t);
  }
  return out;
}

/** A file's state dict (torch.save'd dict or OrderedDict of tensors, or safetensors). */
function readStateDict(path: string): Map<string, Tensor> {
  const loaded = load(path);
  const entries = loaded instanceof Map ? [...loaded.entries()]
    : loaded !== null && typeof loaded === 'object' && !Array.isArray(loaded) ? Object.entries(loaded) : null;
  if (entries === null) throw new Error(`${path}: expected a state dict (a dict of tensors), got ${Array.isArray(loaded) ? 'a list' : typeof loaded}`);
  const notTensors = entries.filter(([, v]) => !(v instanceof torch.Tensor)).map(([k]) => String(k));
  if (notTensors.length > 0) throw new Error(`${path}: expected a state dict of tensors; not tensors: [${notTensors.join(', ')}]`);
  return new Map(entries as [string, Tensor][]);
}
