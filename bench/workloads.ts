// The TypeScript side of `npm run bench`: each workload mirrors the function of the same name in
// bench/torch_eager.py line for line (same shapes, same ops, same freeing of results), so the two
// timings differ only by the binding layer. A workload is set up once and then run for a number
// of iterations; run.ts times it. The model workloads run our models (src/models) against the
// reference networks of the parity fixtures (test/fixtures/make_*.py), with the constructors'
// own random weights: the timing depends on the shapes, not the values.
import * as torch from '../src/torch/index.js';
import { conv2d, crossEntropy, mseLoss } from '../src/torch/functional.js';
import * as nn from '../src/nn/index.js';
import { Adam, AdamW, EMA } from '../src/optim/index.js';
import { AutoencoderKL, AUTOENCODER_KL_CONFIGS, DinoVisionTransformer, DINOV2_CONFIGS, FIDInceptionV3, SiT, SIT_CONFIGS } from '../src/models/index.js';
import type { AutoencoderKLConfig } from '../src/models/autoencoder-kl.js';
import type { SiTConfig } from '../src/models/sit.js';
import { preprocessImages } from '../src/models/dinov2.js';
import { AlignmentHeads, alignmentLoss, resampleTokens } from '../src/models/alignment.js';
import { createTransport, generateLatents } from '../src/diffusion/index.js';
import { ALIGN_LOSS_DEFAULTS } from '../src/train/align.js';
import { encodePosterior } from '../src/data/latents.js';
import { createOnnxSampler, type OnnxSampler } from '../src/sampling/onnx-backend.js';
import type { Handle } from '../src/torch/native.js';

/** Runs `iterations` of the work (a promise where the work is asynchronous: onnxruntime). */
export type Run = (iterations: number) => void | Promise<void>;

/**
 * Where a workload runs, at what batch size and in what precision (the model items; others ignore
 * them). bf16 runs the forwards under autocast as the trainers and samplers do: the losses on
 * float32 outputs, backward and the optimizer outside the region.
 */
export interface Setup {
  batch: number;
  device: torch.Device;
  precision: torch.ResolvedPrecision;
  /**
   * Called after each iteration of the workloads that stand for a step of a loop (the training
   * steps, the model forwards of an evaluation or caching batch, the samplers): torch.adaptThreads
   * in the bench, the thread governor's look at the load that the trainers' progress bars and the
   * samplers' loops give it. A no-op while the governor is off.
   */
  afterStep: () => void;
}

function addNew({ device }: Setup): Run {
  const a = torch.randn([16], { device });
  const b = torch.randn([16], { device });
  // Python frees each result by reference count; here a scope frees them, closing every 100 calls
  // as a training step's scope would (one scope around all iterations would keep thousands of
  // handles alive through garbage collections, which costs more per call; see bench/README.md).
  return (iterations) => {
    for (let done = 0; done < iterations; done += 100) {
      torch.scope(() => {
        for (let i = done; i < Math.min(done + 100, iterations); i++) a.add(b);
      });
    }
  };
}

function addInplace({ device }: Setup): Run {
  const a = torch.randn([16], { device });
  const b = torch.randn([16], { device });
  return (iterations) => {
    for (let i = 0; i < iterations; i++) a.add_(b);
  };
}

// Diagnostics for the per-op overhead (no PyTorch counterpart): the cost of one trivial N-API
// call, and of aten::add through the addon without the Tensor wrapper and scope.
function napiNoop(): Run {
  return (iterations) => {
    for (let i = 0; i < iterations; i++) torch.native.isGradEnabled();
  };
}

function addRawCallOp({ device }: Setup): Run {
  // The Tensors stay referenced here: a handle whose Tensor is collected is freed by its finalizer.
  const a = torch.randn([16], { device });
  const b = torch.randn([16], { device });
  const id = torch.opId('aten::add.Tensor');
  const { native } = torch;
  return (iterations) => {
    const [ha, hb] = [a._handle, b._handle];
    for (let i = 0; i < iterations; i++) native.dispose(native.callOp(id, ha, hb, 1) as Handle);
  };
}

function matmul({ device }: Setup): Run {
  const a = torch.randn([1024, 1024], { device });
  const b = torch.randn([1024, 1024], { device });
  return (iterations) => {
    for (let i = 0; i < iterations; i++) a.matmul(b).dispose();
  };
}

/** The machine's bfloat16 matmul rate: the peak the model items' achieved FLOP/s are compared with. */
function matmulBf16({ device }: Setup): Run {
  const a = torch.randn([2048, 2048], { device }).bfloat16();
  const b = torch.randn([2048, 2048], { device }).bfloat16();
  return (iterations) => {
    for (let i = 0; i < iterations; i++) a.matmul(b).dispose();
  };
}

/**
 * The floating-point operations of one SiT forward on `batch` latents (2 per multiply-add, the
 * matmuls only: the rest is under 1% for these sizes). Per block and image, with N tokens of
 * width D: qkv, projection and the 4x MLP take 24 N D^2, attention scores and their weighted sum
 * 4 N^2 D, adaLN 12 D^2; then the patch embedding, the final adaLN and linear layer.
 */
export function sitForwardFlops(config: SiTConfig, batch: number): number {
  const side = config.inputSize ?? 32;
  const channels = config.inChannels ?? 4;
  const tokens = (side / config.patchSize) ** 2;
  const d = config.hiddenSize;
  const patch = config.patchSize ** 2 * channels;
  const outChannels = (config.learnSigma ?? true) ? 2 * channels : channels;
  const block = 24 * tokens * d * d + 4 * tokens * tokens * d + 12 * d * d;
  const ends = 2 * tokens * patch * d + 4 * d * d + 2 * tokens * d * config.patchSize ** 2 * outChannels;
  return batch * (config.depth * block + ends);
}

function convTensors(device: torch.Device): [torch.Tensor, torch.Tensor] {
  const x = torch.randn([8, 128, 64, 64], { device, requiresGrad: true });
  const w = torch.randn([128, 128, 3, 3], { device }).div(Math.sqrt(128 * 9)).requiresGrad_();
  return [x, w];
}

function conv2dForward({ device }: Setup): Run {
  const [x, w] = convTensors(device);
  return (iterations) => torch.noGrad(() => {
    for (let i = 0; i < iterations; i++) conv2d(x, w, null, { stride: 1, padding: 1 }).dispose();
  });
}

function conv2dForwardBackward({ device }: Setup): Run {
  const [x, w] = convTensors(device);
  const gradOut = torch.randn([8, 128, 64, 64], { device });
  return (iterations) => {
    for (let i = 0; i < iterations; i++) {
      torch.scope(() => conv2d(x, w, null, { stride: 1, padding: 1 }).backward(gradOut));
      x.grad = null;
      w.grad = null;
    }
  };
}

function mlpStep({ device, afterStep }: Setup): Run {
  const model = new nn.Sequential(
    new nn.Linear(784, 512), new nn.GELU(), new nn.Linear(512, 512), new nn.GELU(), new nn.Linear(512, 10),
  ).to(device);
  const optimizer = new AdamW(model.parameters(), { lr: 1e-3 });
  const x = torch.randn([256, 784], { device });
  const target = torch.randint(0, 10, [256], { device });
  return (iterations) => {
    for (let i = 0; i < iterations; i++) {
      torch.scope(() => {
        crossEntropy(model.forward(x), target).backward();
        optimizer.step();
        optimizer.zeroGrad();
      });
      afterStep();
    }
  };
}

/** Runs `forward` once per iteration without autograd in `precision`, freeing everything it creates. */
function inference({ device, precision, afterStep }: Setup, forward: () => unknown): Run {
  return (iterations) => torch.noGrad(() => torch.withPrecision(precision, device, () => {
    for (let i = 0; i < iterations; i++) {
      torch.scope(() => { forward(); });
      afterStep();
    }
  }));
}

function sdVae(device: torch.Device): AutoencoderKL {
  return new AutoencoderKL(AUTOENCODER_KL_CONFIGS['sd-vae']).eval().to(device);
}

function vaeEncode(setup: Setup): Run {
  const { batch, device } = setup;
  const vae = sdVae(device);
  const x = torch.rand([batch, 3, 256, 256], { device }).mul(2).sub(1);
  return inference(setup, () => vae.encode(x).mode());
}

function vaeDecode(setup: Setup): Run {
  const { batch, device } = setup;
  const vae = sdVae(device);
  const z = torch.randn([batch, 4, 32, 32], { device });
  return inference(setup, () => vae.decode(z));
}

function dinov2Forward(setup: Setup): Run {
  const { batch, device } = setup;
  const model = new DinoVisionTransformer(DINOV2_CONFIGS['dinov2_vitb14']!).eval().to(device);
  const x = torch.randn([batch, 3, 224, 224], { device });
  return inference(setup, () => model.forwardFeatures(x));
}

function sitForward(setup: Setup): Run {
  const { batch, device } = setup;
  const model = new SiT(SIT_CONFIGS['SiT-B/2']).eval().to(device);
  const x = torch.randn([batch, 4, 32, 32], { device });
  const t = torch.rand([batch], { device });
  const y = torch.randint(0, 1000, [batch], { device });
  return inference(setup, () => model.forward(x, t, y));
}

// SiT's sample.py ODE sampler with --sampling-method euler: the time grid has steps + 1 points,
// so 50 steps are 50 model evaluations (of the doubled batch under guidance, as forward_with_cfg).
/** The tiny SiT of the README's own-data walkthrough: depth 4, width 128, 4 heads, patch 2, on 4x8x8 latents (64 px, f8), 5 classes. */
export const TINY_SIT: SiTConfig = { depth: 4, hiddenSize: 128, patchSize: 2, numHeads: 4, inputSize: 8, numClasses: 5 };

function sitSample(cfgScale: number, config: SiTConfig = SIT_CONFIGS['SiT-S/2'], steps = 51): (setup: Setup) => Run {
  return ({ batch, device, precision, afterStep }) => {
    const model = new SiT(config).eval().to(device);
    const labels = Array.from({ length: batch }, (_, i) => (i * 97) % (config.numClasses ?? 1000));
    const side = config.inputSize ?? 32;
    // generateLatents opens the autocast region itself (around the whole loop).
    return inference({ batch, device, precision: 'fp32', afterStep }, () => generateLatents({
      model, labels, shape: [4, side, side], seed: 0, method: 'ode', steps, ode: { samplingMethod: 'euler' },
      cfgScale, guidanceLow: 0, guidanceHigh: 1, device, precision,
    }));
  };
}

// The same sampling through `reals sample --backend onnxruntime`'s path: the SiT exported to ONNX
// in memory and stepped by the shared flow sampler (src/sampling/flow-sampler.ts) on onnxruntime-node.
function sitSampleOnnx({ batch }: Setup): Run {
  const model = new SiT(SIT_CONFIGS['SiT-S/2']).eval();
  // A small VAE: its decoder is exported beside the SiT but not timed here.
  const vae = new AutoencoderKL({ blockOutChannels: [8, 8], downBlockTypes: ['DownEncoderBlock2D', 'DownEncoderBlock2D'], upBlockTypes: ['UpDecoderBlock2D', 'UpDecoderBlock2D'], normNumGroups: 4, latentChannels: 4 }).eval();
  const indices = Array.from({ length: batch }, (_, i) => i);
  let sampler: Promise<OnnxSampler> | null = null;
  return async (iterations) => {
    sampler ??= createOnnxSampler({
      model, vae, normalization: { source: 'scaling_factor', mean: [0, 0, 0, 0], std: [1, 1, 1, 1] }, mode: 'ode', method: 'euler', steps: 51,
      cfgScale: 1, guidanceLow: 0, guidanceHigh: 1,
    });
    const onnx = await sampler;
    for (let i = 0; i < iterations; i++) (await onnx.latents(indices, 0)).dispose();
  };
}

// Training steps. src/train/align.ts and src/train/sit.ts keep their step inside the trainer, so
// the steps are composed here from the same library calls, in the trainers' order.

/** The reduced alignment config of `align.step`; bench/torch_eager.py's align_step builds the same. */
const ALIGN_VAE: Partial<AutoencoderKLConfig> = {
  blockOutChannels: [64, 128], downBlockTypes: ['DownEncoderBlock2D', 'DownEncoderBlock2D'],
  upBlockTypes: ['UpDecoderBlock2D', 'UpDecoderBlock2D'], layersPerBlock: 2, normNumGroups: 32, latentChannels: 4,
};
const ALIGN_IMAGE_SIZE = 64;
const ALIGN_DINO_INPUT = 112;

/**
 * One step of trainAlignment without GAN and LPIPS (before discStart, lpipsWeight 0): the frozen
 * DINOv2's tokens of the resized images, VAE encode, posterior sample, decode, MSE + KL + alignment
 * loss with the default weights, backward, Adam (betas 0.5, 0.9), zeroGrad, EMA of VAE and heads.
 */
function alignStep({ batch, device, precision, afterStep }: Setup): Run {
  const w = ALIGN_LOSS_DEFAULTS;
  const vae = new AutoencoderKL(ALIGN_VAE).train().to(device);
  const dino = new DinoVisionTransformer({ ...DINOV2_CONFIGS['dinov2_vits14']!, depth: 4 }).requiresGrad_(false).eval().to(device);
  const heads = new AlignmentHeads({ latentChannels: 4, featureDim: dino.config.embedDim }).train().to(device);
  const params = [...vae.parameters(), ...heads.parameters()];
  const emaVae = new AutoencoderKL(ALIGN_VAE).requiresGrad_(false).eval().to(device);
  const emaHeads = new AlignmentHeads(heads.config).requiresGrad_(false).eval().to(device);
  const opt = new Adam(params, { lr: 5e-5, betas: [0.5, 0.9] });
  const emaUpdaters = [new EMA(emaVae, vae, { decay: 0.9999 }), new EMA(emaHeads, heads, { decay: 0.9999 })];
  const x = torch.rand([batch, 3, ALIGN_IMAGE_SIZE, ALIGN_IMAGE_SIZE], { device }).mul(2).sub(1);
  const grid = ALIGN_DINO_INPUT / dino.config.patchSize;
  return (iterations) => {
    for (let i = 0; i < iterations; i++) {
      torch.scope(() => {
        const autocast = <T>(fn: () => T): T => torch.withPrecision(precision, device, fn);
        const target = torch.noGrad(() => autocast(() => {
          const features = dino.forwardFeatures(preprocessImages(x, ALIGN_DINO_INPUT));
          return { patch: features.xNormPatchtokens.float(), cls: features.xNormClstoken.float() };
        }));
        const posterior = encodePosterior(vae, x, precision);
        const total = autocast(() => {
          const z = posterior.sample();
          const xrec = vae.decode(z).float();
          const rec = mseLoss(xrec, x).mul(w.reconstructionWeight);
          const kl = posterior.kl().sum().div(z.numel());
          const latentGrid: [number, number] = [z.size(2), z.size(3)];
          const predicted = heads.forward(z);
          const align = alignmentLoss({ patch: predicted.patch.float(), cls: predicted.cls!.float() },
            { patch: resampleTokens(target.patch, [grid, grid], latentGrid), cls: target.cls }, w);
          return rec.add(kl.mul(w.klWeight)).add(align.loss);
        });
        total.backward();
        total.item();
      });
      opt.step();
      opt.zeroGrad();
      for (const ema of emaUpdaters) ema.update();
      afterStep();
    }
  };
}

/** One step of trainGenerator: transport loss (Linear, velocity), backward, AdamW (lr 1e-4, wd 0), zeroGrad, EMA. */
function sitTrainStep(config: SiTConfig): (setup: Setup) => Run {
  return ({ batch, device, precision, afterStep }) => {
    const model = new SiT(config).train().to(device);
    const ema = new SiT(config).requiresGrad_(false).eval().to(device);
    const opt = new AdamW(model.parameters().filter((p) => p.requiresGrad), { lr: 1e-4, weightDecay: 0 });
    const emaUpdater = new EMA(ema, model, { decay: 0.9999 });
    const transport = createTransport();
    const side = config.inputSize ?? 32;
    const x = torch.randn([batch, 4, side, side], { device });
    const y = torch.randint(0, config.numClasses ?? 1000, [batch], { device });
    const network = (xt: torch.Tensor, t: torch.Tensor, kwargs: Record<string, unknown>): torch.Tensor => model.forward(xt, t, kwargs.y as torch.Tensor).float();
    return (iterations) => {
      for (let i = 0; i < iterations; i++) {
        torch.scope(() => {
          const loss = torch.withPrecision(precision, device, () => transport.trainingLosses(network, x, { y }).loss.mean());
          loss.backward();
          loss.item();
        });
        opt.step();
        opt.zeroGrad();
        emaUpdater.update();
        afterStep();
      }
    };
  };
}

function inceptionForward(setup: Setup): Run {
  const { batch, device } = setup;
  const model = new FIDInceptionV3().eval().to(device);
  const images = torch.randint(0, 256, [batch, 3, 256, 256], { dtype: 'uint8', device });
  return inference(setup, () => model.forward(images));
}

/** Workloads by item name; the model items take their batch size from run.ts's ITEMS. */
export const WORKLOADS: Record<string, (setup: Setup) => Run> = {
  'add': addNew,
  'add_': addInplace,
  'napi.noop': napiNoop,
  'add.rawCallOp': addRawCallOp,
  'matmul': matmul,
  'matmul.bf16': matmulBf16,
  'conv2d.forward': conv2dForward,
  'conv2d.forward+backward': conv2dForwardBackward,
  'mlp.step': mlpStep,
  'vae.encode': vaeEncode,
  'vae.decode': vaeDecode,
  'dinov2.forward': dinov2Forward,
  'sit.forward': sitForward,
  'sit.sample': sitSample(1),
  'sit.sample.cfg': sitSample(4),
  'sit.sample.onnx': sitSampleOnnx,
  'align.step': alignStep,
  'sit.train.step': sitTrainStep(SIT_CONFIGS['SiT-B/2']),
  'sit.tiny.train.step': sitTrainStep(TINY_SIT),
  'sit.tiny.sample': sitSample(2, TINY_SIT, 17),
  'inception.forward': inceptionForward,
};
