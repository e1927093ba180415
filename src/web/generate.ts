// One image from the exported graphs (`reals export onnx`'s folder), written once for the web page
// and for Node: the seeded noise, SiT's ODE with guidance on an interval, the decoder, the 8-bit
// pixels, and the segmentation readout. The runtime is passed in (onnxruntime-web in the page,
// onnxruntime-node in Node), so this file imports neither. No Node or libtorch imports.
import { linspace32, linspace64, sampleFlowOde, type FlowMethod } from '../sampling/flow-sampler.js';
import { guidanceDecider } from '../diffusion/interval.js';
import { seededNormal } from './noise.js';

/** The fields of model.json (src/pipelines/export.ts OnnxManifest) the page reads. */
export interface WebManifest {
  generator: {
    forward: string;
    cfg: string;
    config: { inChannels: number; inputSize: number; numClasses: number };
    /** SiT's ODE interval [t0, t1] (0 noise, 1 data). */
    timeInterval: [number, number];
    /** The class names in label order; null, or absent in pages exported before they were recorded: the page shows numbers. */
    classNames?: string[] | null;
  };
  vae: { decoder: string; latentChannels: number; latentSize: number; imageSize: number; normalization: { mean: number[]; std: number[] } };
  readout: { file: string; numClasses: number; palette: [number, number, number][] } | null;
}

/** A float32 or int64 tensor for a graph, and what comes back from one. */
export interface GraphTensor { type: 'float32' | 'int64'; data: Float32Array | BigInt64Array; dims: number[] }
/** Runs the graph of file `graph` (as named in the manifest) on `feeds`; returns its outputs' data. */
export type RunGraph = (graph: string, feeds: Record<string, GraphTensor>) => Promise<Record<string, { data: Float32Array; dims: readonly number[] }>>;

export interface GenerateSettings {
  classLabel: number;
  cfgScale: number;
  /** The guidance interval in REPA's time (1 noise, 0 data), as `reals sample --guidance-low/--guidance-high`. */
  guidanceLow: number;
  guidanceHigh: number;
  /** Grid points of the ODE (steps + 1 evaluations' worth for Euler: the same meaning as --num-sampling-steps). */
  steps: number;
  method: FlowMethod;
  seed: number;
}

export interface GeneratedImage {
  /** RGB, 8 bits, row-major [size, size, 3]. */
  pixels: Uint8ClampedArray;
  size: number;
  /** The class of each latent position [latentSize * latentSize], or null without a readout. */
  labels: Int32Array | null;
  latentSize: number;
}

/** The class menu's text for label k: its name where the manifest records one, else the number. */
export function classOptionText(label: number, classNames: readonly string[]): string {
  return classNames[label] ?? String(label);
}

/** The pixels of a decoded image [1, 3, H, W] in [-1, 1]: clamp(127.5 x + 128, 0, 255), truncated, as sample_ddp.py's uint8 cast. */
export function toPixels(image: Float32Array, size: number): Uint8ClampedArray {
  const plane = size * size;
  const out = new Uint8ClampedArray(plane * 3);
  for (let c = 0; c < 3; c++) {
    for (let p = 0; p < plane; p++) out[p * 3 + c] = Math.trunc(Math.min(255, Math.max(0, Math.fround(Math.fround(image[c * plane + p]! * 127.5) + 128))));
  }
  return out;
}

export async function generateImage(manifest: WebManifest, run: RunGraph, settings: GenerateSettings, onStep?: (done: number, total: number) => void): Promise<GeneratedImage> {
  const { generator, vae } = manifest;
  const { inChannels: c, inputSize: s, numClasses } = generator.config;
  if (!(Number.isInteger(settings.classLabel) && settings.classLabel >= 0 && settings.classLabel < numClasses)) {
    throw new Error(`class ${settings.classLabel}: the model has classes 0 to ${numClasses - 1}`);
  }
  const [t0, t1] = generator.timeInterval;
  const grid = linspace32(t0, t1, settings.steps);
  const guided = guidanceDecider({ low: settings.guidanceLow, high: settings.guidanceHigh, convention: 'repa' }, { sit: grid, times: linspace64(1 - t0, 1 - t1, settings.steps) });
  const guidedAt = (t: number): boolean => settings.cfgScale > 1 && guided(t);
  const y: GraphTensor = { type: 'int64', data: BigInt64Array.of(BigInt(settings.classLabel)), dims: [1] };
  const scale: GraphTensor = { type: 'float32', data: Float32Array.of(settings.cfgScale), dims: [1] };
  const latents = await sampleFlowOde(seededNormal(settings.seed, c * s * s), async (x, t, guided) => {
    const feeds: Record<string, GraphTensor> = { x: { type: 'float32', data: x, dims: [1, c, s, s] }, t: { type: 'float32', data: Float32Array.of(t), dims: [1] }, y };
    const out = guided ? await run(generator.cfg, { ...feeds, cfg_scale: scale }) : await run(generator.forward, feeds);
    return out.out!.data;
  }, { method: settings.method, grid, guidedAt, onStep });

  // The VAE's latents: mean + std * x per channel, as the training normalization's inverse.
  const z = new Float32Array(latents.length);
  const plane = s * s;
  for (let ch = 0; ch < c; ch++) {
    const { mean, std } = vae.normalization;
    for (let p = 0; p < plane; p++) z[ch * plane + p] = Math.fround(Math.fround(latents[ch * plane + p]! * std[ch]!) + mean[ch]!);
  }
  const zTensor: GraphTensor = { type: 'float32', data: z, dims: [1, c, s, s] };
  const image = (await run(vae.decoder, { z: zTensor })).image!;
  let labels: Int32Array | null = null;
  if (manifest.readout !== null) {
    const logits = (await run(manifest.readout.file, { z: zTensor })).logits!.data;
    const k = manifest.readout.numClasses;
    labels = new Int32Array(plane);
    for (let p = 0; p < plane; p++) {
      let best = 0;
      for (let cls = 1; cls < k; cls++) if (logits[cls * plane + p]! > logits[best * plane + p]!) best = cls;
      labels[p] = best;
    }
  }
  return { pixels: toPixels(image.data, vae.imageSize), size: vae.imageSize, labels, latentSize: s };
}
