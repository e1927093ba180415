// `reals sample --backend onnxruntime`: the generator and the VAE decoder exported to ONNX in
// memory (src/models/onnx-export.ts) and run by onnxruntime-node on the CPU, stepped by the shared
// flow sampler (./flow-sampler.ts, the code a web page runs too). The noise, labels, time grid and
// guidance decisions are the libtorch backend's, so the two give the same samples to within
// rounding. onnxruntime-node is an optional dependency: `npm install onnxruntime-node`.
import * as torch from '../torch/index.js';
import type { Tensor } from '../torch/index.js';
import type { AutoencoderKL } from '../models/autoencoder-kl.js';
import type { DiT } from '../models/sit.js';
import { Sampler, createTransport, guidanceDecider, type SdeSamplerOptions, type Transport, type TransportConfig } from '../diffusion/index.js';
import { exportGenerator, exportVaeDecoder } from '../models/onnx-export.js';
import { sampleFlowOde, type FlowMethod } from './flow-sampler.js';
import { denormalizeLatents, type LatentNormalization } from '../data/latent-normalization.js';
import { sampleLabels, type LabelSampling } from './labels.js';

/** The part of onnxruntime-node's API used here. */
interface OrtTensor { readonly data: unknown; readonly dims: readonly number[] }
interface OrtSession { run(feeds: Record<string, OrtTensor>): Promise<Record<string, OrtTensor>>; release(): Promise<void> }
interface Ort {
  InferenceSession: { create(model: Uint8Array, options?: Record<string, unknown>): Promise<OrtSession> };
  Tensor: new (type: string, data: Float32Array | BigInt64Array, dims: readonly number[]) => OrtTensor;
}

async function loadOrt(): Promise<Ort> {
  try {
    return (await import('onnxruntime-node')) as unknown as Ort;
  } catch (error) {
    throw new Error('--backend onnxruntime needs the onnxruntime-node package: npm install onnxruntime-node ' +
      '(with --onnxruntime-node-install=skip where its install script cannot download)', { cause: error });
  }
}

export interface OnnxSamplerOptions {
  model: DiT;
  vae: AutoencoderKL;
  normalization: LatentNormalization;
  /** The ODE (euler or heun2, the flow sampler) or the SDE (Euler-Maruyama, as src/diffusion/sde.ts). */
  mode: 'ode' | 'sde';
  /** ODE: the fixed-grid method. */
  method?: FlowMethod;
  /** SDE: the diffusion form and norm and the last step, as `reals sample sde` takes them. */
  sde?: Pick<SdeSamplerOptions, 'diffusionForm' | 'diffusionNorm' | 'lastStep' | 'lastStepSize'>;
  steps: number;
  cfgScale: number;
  cfgChannels?: number | 'all';
  /** How labels are chosen, as sampleLatents (default balanced). */
  labelSampling?: LabelSampling;
  /** The guidance interval in REPA's time, as `reals sample` takes it. */
  guidanceLow: number;
  guidanceHigh: number;
  transport?: Partial<TransportConfig>;
  /** onnxruntime's intra-op threads (default: torch's thread count). */
  threads?: number;
}

export interface OnnxSampler {
  /** The normalized latents of samples `indices` from `seed`, as sampleLatents draws them. */
  latents(indices: readonly number[], seed: number): Promise<Tensor>;
  /** vae.decode of denormalized latents. */
  decode(latents: Tensor): Promise<Tensor>;
  release(): Promise<void>;
}

export async function createOnnxSampler(options: OnnxSamplerOptions): Promise<OnnxSampler> {
  const { model, vae, normalization, mode, steps, cfgScale } = options;
  const transport = createTransport(options.transport);
  if (transport.config.prediction !== 'velocity') {
    throw new Error(`--backend onnxruntime samples velocity models; this one predicts ${transport.config.prediction}`);
  }
  const ort = await loadOrt();
  const sessionOptions = { intraOpNumThreads: options.threads ?? torch.getNumThreads(), interOpNumThreads: 1 };
  const graphs = exportGenerator(model, { cfgChannels: options.cfgChannels });
  const c = model.config;
  const [forward, cfg, decoder] = await Promise.all([
    ort.InferenceSession.create(graphs.forward, sessionOptions), ort.InferenceSession.create(graphs.cfg, sessionOptions),
    ort.InferenceSession.create(exportVaeDecoder(vae, { latentSize: c.inputSize }), sessionOptions),
  ]);
  const shape = [c.inChannels, c.inputSize, c.inputSize];
  // The grid and the guidance decisions of generateLatents (guidedModel by step on REPA's grid).
  const sde = { diffusionForm: 'sigma' as const, ...options.sde, numSteps: steps };
  const sampler = new Sampler(transport);
  const stepGrid = mode === 'ode' ? sampler.stepTimes('ode', { numSteps: steps }, 'repa') : sampler.stepTimes('sde', sde, 'repa');
  const grid = stepGrid.sit;
  const guided = guidanceDecider({ low: options.guidanceLow, high: options.guidanceHigh, convention: 'repa' }, stepGrid);
  const guidedAt = (t: number): boolean => cfgScale > 1 && guided(t);
  // With guidance over the whole range libtorch steps the doubled batch (sampleLatents), so the
  // SDE's noise is drawn for 2n rows; the first n are this batch's.
  const doubled = cfgScale > 1 && options.guidanceLow <= 0 && options.guidanceHigh >= 1;
  const floats = (t: OrtTensor): Float32Array => t.data as Float32Array;
  return {
    async latents(indices, seed) {
      const n = indices.length;
      const labelSampling = options.labelSampling ?? 'balanced';
      const labels = new ort.Tensor('int64', BigInt64Array.from(sampleLabels(indices, c.numClasses, labelSampling, seed, shape), BigInt), [n]);
      torch.manualSeed(seed);
      const noise = torch.scope(() => torch.randn([n, ...shape]).toArray() as Float32Array);
      // As sampleLatents' doubled batch: the random labels are drawn between the noise and the SDE's draws.
      if (doubled && labelSampling === 'random') torch.randint(0, c.numClasses, [n]).dispose();
      const scale = new ort.Tensor('float32', Float32Array.of(cfgScale), [1]);
      const velocity = async (x: Float32Array, t: number, guided: boolean): Promise<Float32Array> => {
        const feeds = { x: new ort.Tensor('float32', x, [n, ...shape]), t: new ort.Tensor('float32', new Float32Array(n).fill(t), [n]), y: labels };
        return floats((guided ? await cfg.run({ ...feeds, cfg_scale: scale }) : await forward.run(feeds)).out!);
      };
      if (mode === 'ode') {
        return torch.fromArray(await sampleFlowOde(noise, velocity, { method: options.method ?? 'heun2', grid, guidedAt }), [n, ...shape]);
      }
      return sampleSdeEuler(torch.fromArray(noise, [n, ...shape]), velocity, { transport, sde, grid, guidedAt, noiseRows: doubled ? 2 * n : n });
    },
    async decode(latents) {
      const z = torch.scope(() => denormalizeLatents(latents, normalization).contiguous().toArray() as Float32Array);
      const { image } = await decoder.run({ z: new ort.Tensor('float32', z, latents.shape) });
      return torch.fromArray(floats(image!), [...image!.dims]);
    },
    async release() {
      await Promise.all([forward.release(), cfg.release(), decoder.release()]);
    },
  };
}

/**
 * SiT's Euler-Maruyama SDE sampler (src/diffusion/sampler.ts sampleSde with src/diffusion/sde.ts's
 * Euler step), driven by an asynchronous network: the same transport drift, score and diffusion
 * terms and the same draws (torch.randn of `noiseRows` rows per step before the network runs, of
 * which the batch's are the first), then the last step.
 */
async function sampleSdeEuler(
  init: Tensor, velocity: (x: Float32Array, t: number, guided: boolean) => Promise<Float32Array>,
  o: { transport: Transport; sde: SdeSamplerOptions & { numSteps: number }; grid: readonly number[]; guidedAt: (t: number) => boolean; noiseRows: number },
): Promise<Tensor> {
  const { transport, sde, grid } = o;
  const { diffusionForm = 'sigma', diffusionNorm = 1.0, lastStep = 'Mean' } = sde;
  if (lastStep !== 'Mean' && lastStep !== null) throw new Error(`--backend onnxruntime samples the SDE with --last-step Mean or None, got ${lastStep}`);
  const lastStepSize = lastStep === null ? 0 : sde.lastStepSize ?? 0.04;
  const n = init.size(0);
  const shape = init.shape;
  const path = transport.pathSampler;
  const at = (t: number): Tensor => torch.full([n], t);
  const diffusion = (x: Tensor, t: Tensor): Tensor => path.computeDiffusion(x, t, diffusionForm, diffusionNorm);
  const drift = async (x: Tensor, t: number): Promise<Tensor> => {
    const out = torch.fromArray(await velocity(x.contiguous().toArray() as Float32Array, t, o.guidedAt(t)), shape);
    return torch.scope(() => {
      const tt = at(t);
      return transport.driftFromOutput(out, x, tt).add(diffusion(x, tt).mul(transport.scoreFromOutput(out, x, tt)));
    });
  };
  const dt = Math.fround(grid[1]! - grid[0]!);
  const sqrtDt = Math.fround(Math.sqrt(dt));
  let x = init;
  for (const ti of grid.slice(0, -1)) {
    const dw = torch.scope(() => torch.randn([o.noiseRows, ...shape.slice(1)]).slice(0, 0, n).mul(sqrtDt));
    const k = await drift(x, ti);
    x = torch.scope(() => x.add(k.mul(dt)).add(diffusion(x, at(ti)).mul(2).sqrt().mul(dw)));
  }
  if (lastStep === null) return x;
  const t1 = grid[grid.length - 1]!;
  return x.add((await drift(x, t1)).mul(lastStepSize));
}
