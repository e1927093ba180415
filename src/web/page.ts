// The page `reals export web` writes (bundled into app.js): the exported models run by
// onnxruntime-web, WebGPU when the browser has it and wasm otherwise; the controls of `reals
// sample`; the image and the segmentation overlay. The query string can set every control
// (?class=3&cfg=4&low=0&high=1&steps=50&sampler=heun2&seed=0) and &auto=1 generates at once.
import { classOptionText, generateImage, type GeneratedImage, type GenerateSettings, type GraphTensor, type RunGraph, type WebManifest } from './generate.js';

/** The part of onnxruntime-web's API the page uses. */
interface OrtWeb {
  env: { wasm: { numThreads: number; wasmPaths: string } };
  InferenceSession: { create(url: string, options: { executionProviders: string[] }): Promise<{ run(feeds: Record<string, unknown>): Promise<Record<string, { data: Float32Array; dims: readonly number[] }>> }> };
  Tensor: new (type: string, data: Float32Array | BigInt64Array, dims: number[]) => unknown;
}

interface PageState { status: 'loading' | 'ready' | 'running' | 'done' | 'error'; backend: string; error?: string; result?: { pixels: number[]; labels: number[] | null; size: number } }

declare global { interface Window { reals: PageState } }

const state: PageState = { status: 'loading', backend: '' };
window.reals = state;

const element = <T extends HTMLElement>(id: string): T => {
  const found = document.getElementById(id);
  if (found === null) throw new Error(`the page has no #${id}`);
  return found as T;
};

async function webgpuAvailable(): Promise<boolean> {
  const gpu = (navigator as Navigator & { gpu?: { requestAdapter(): Promise<unknown> } }).gpu;
  if (gpu === undefined) return false;
  try {
    return (await gpu.requestAdapter()) !== null;
  } catch {
    return false;
  }
}

function settingsFromControls(): GenerateSettings {
  const number = (id: string) => Number(element<HTMLInputElement>(id).value);
  return {
    classLabel: number('class'), cfgScale: number('cfg'), guidanceLow: number('low'), guidanceHigh: number('high'),
    steps: number('steps'), method: element<HTMLSelectElement>('sampler').value as GenerateSettings['method'], seed: number('seed'),
  };
}

function draw(result: GeneratedImage, palette: [number, number, number][] | null): void {
  const { size, pixels, labels, latentSize } = result;
  const image = element<HTMLCanvasElement>('image');
  const overlay = element<HTMLCanvasElement>('overlay');
  for (const canvas of [image, overlay]) [canvas.width, canvas.height] = [size, size];
  const rgba = new ImageData(size, size);
  for (let p = 0; p < size * size; p++) {
    rgba.data.set([pixels[p * 3]!, pixels[p * 3 + 1]!, pixels[p * 3 + 2]!, 255], p * 4);
  }
  image.getContext('2d')!.putImageData(rgba, 0, 0);
  if (labels === null || palette === null) return;
  // The image with each latent position's class colour over it, half transparent.
  const mixed = new ImageData(size, size);
  const cell = size / latentSize;
  for (let yPix = 0; yPix < size; yPix++) {
    for (let xPix = 0; xPix < size; xPix++) {
      const p = yPix * size + xPix;
      const colour = palette[labels[Math.floor(yPix / cell) * latentSize + Math.floor(xPix / cell)]!] ?? [0, 0, 0];
      mixed.data.set([0, 1, 2].map((c) => (pixels[p * 3 + c]! + colour[c]!) / 2).concat(255), p * 4);
    }
  }
  overlay.getContext('2d')!.putImageData(mixed, 0, 0);
}

async function main(): Promise<void> {
  const ort = (await import(/* @vite-ignore */ './ort/ort.webgpu.bundle.min.mjs' as string)) as unknown as OrtWeb;
  ort.env.wasm.numThreads = 1;
  ort.env.wasm.wasmPaths = new URL('./ort/', window.location.href).href;
  const manifest = (await (await fetch('models/model.json')).json()) as WebManifest;
  const providers = (await webgpuAvailable()) ? ['webgpu', 'wasm'] : ['wasm'];
  state.backend = providers[0]!;
  element('backend').textContent = `onnxruntime-web on ${providers[0] === 'webgpu' ? 'WebGPU' : 'wasm (no WebGPU in this browser)'}`;
  const files = [manifest.generator.forward, manifest.generator.cfg, manifest.vae.decoder, ...(manifest.readout === null ? [] : [manifest.readout.file])];
  const sessions = new Map(await Promise.all(files.map(async (file) =>
    [file, await ort.InferenceSession.create(`models/${file}`, { executionProviders: providers })] as const)));
  const run: RunGraph = async (graph, feeds) => {
    const tensors = Object.fromEntries(Object.entries(feeds).map(([name, t]: [string, GraphTensor]) => [name, new ort.Tensor(t.type, t.data, t.dims)]));
    return sessions.get(graph)!.run(tensors);
  };

  const classes = element<HTMLSelectElement>('class');
  const names = manifest.generator.classNames ?? [];
  for (let k = 0; k < manifest.generator.config.numClasses; k++) classes.add(new Option(classOptionText(k, names), String(k)));
  const query = new URLSearchParams(window.location.search);
  for (const [key, id] of [['class', 'class'], ['cfg', 'cfg'], ['low', 'low'], ['high', 'high'], ['steps', 'steps'], ['sampler', 'sampler'], ['seed', 'seed']]) {
    const value = query.get(key!);
    if (value !== null) element<HTMLInputElement>(id!).value = value;
  }
  const progress = element('progress');
  const generate = async () => {
    state.status = 'running';
    try {
      const result = await generateImage(manifest, run, settingsFromControls(), (done, total) => { progress.textContent = `step ${done} of ${total}`; });
      draw(result, manifest.readout?.palette ?? null);
      state.result = { pixels: Array.from(result.pixels), labels: result.labels === null ? null : Array.from(result.labels), size: result.size };
      state.status = 'done';
    } catch (error) {
      state.status = 'error';
      state.error = (error as Error).message;
      progress.textContent = `error: ${state.error}`;
      throw error;
    }
  };
  element<HTMLButtonElement>('generate').addEventListener('click', () => { void generate(); });
  state.status = 'ready';
  if (query.get('auto') === '1') await generate();
}

main().catch((error: Error) => {
  state.status = 'error';
  state.error = error.message;
  console.error(error);
});
