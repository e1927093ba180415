// `reals sample --backend onnxruntime`: the generator and the VAE decoder exported to ONNX in
// memory (src/onnx) and run by onnxruntime-node on the CPU, stepped by the shared flow sampler
// (src/onnx/flow-sampler.ts, the code a web page runs too). The noise, labels, time grid and
// guidance decisions are the libtorch backend's, so the two give the same samples to within
// rounding. onnxruntime-node is an optional dependency: `npm install onnxruntime-node`.
import * as torch from '../torch/index.js';
import type { Tensor } from '../torch/index.js';
import type { AutoencoderKL } from '../models/autoencoder-kl.js';
import type { DiT } from '../models/sit.js';
import { Sampler, createTransport, type TransportConfig } from '../diffusion/index.js';
import { exportGenerator, exportVaeDecoder } from '../onnx/export.js';
import { guidanceDecider, sampleFlowOde, type FlowMethod } from '../onnx/flow-sampler.js';
import { denormalizeLatents, type LatentNormalization } from './latents.js';
import { sampleLabel } from './sit.js';

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
  method: FlowMethod;
  steps: number;
  cfgScale: number;
  cfgChannels?: number | 'all';
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
  const { model, vae, normalization, method, steps, cfgScale } = options;
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
  const odeOptions = { numSteps: steps };
  const { sit: grid, times } = new Sampler(transport).stepTimes('ode', odeOptions, 'repa');
  const guidedAt = guidanceDecider(grid, times, cfgScale, options.guidanceLow, options.guidanceHigh);
  const floats = (t: OrtTensor): Float32Array => t.data as Float32Array;
  return {
    async latents(indices, seed) {
      const n = indices.length;
      const labels = new ort.Tensor('int64', BigInt64Array.from(indices, (i) => BigInt(sampleLabel(i, c.numClasses))), [n]);
      torch.manualSeed(seed);
      const noise = torch.scope(() => torch.randn([n, ...shape]).toArray() as Float32Array);
      const scale = new ort.Tensor('float32', Float32Array.of(cfgScale), [1]);
      const out = await sampleFlowOde(noise, async (x, t, guided) => {
        const feeds = { x: new ort.Tensor('float32', x, [n, ...shape]), t: new ort.Tensor('float32', new Float32Array(n).fill(t), [n]), y: labels };
        return floats((guided ? await cfg.run({ ...feeds, cfg_scale: scale }) : await forward.run(feeds)).out!);
      }, { method, grid, guidedAt });
      return torch.fromArray(out, [n, ...shape]);
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
