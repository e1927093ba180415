// The exported page's generation run in Node: the graphs of a `reals export web` site, read from
// its models/ folder by onnxruntime-node, driven by the page's own generateImage. Tests compare
// it with the page in chromium and with `reals sample`.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { generateImage, type GenerateSettings, type GeneratedImage, type RunGraph, type WebManifest } from '../../src/web/generate.js';

/** What the page at `site` generates for `settings`, computed in Node. */
export async function generateInNode(site: string, settings: GenerateSettings): Promise<GeneratedImage> {
  const manifest = JSON.parse(readFileSync(join(site, 'models', 'model.json'), 'utf8')) as WebManifest;
  const sessions = new Map<string, ort.InferenceSession>();
  const run: RunGraph = async (graph, feeds) => {
    if (!sessions.has(graph)) sessions.set(graph, await ort.InferenceSession.create(join(site, 'models', graph)));
    const tensors = Object.fromEntries(Object.entries(feeds).map(([name, t]) => [name, new ort.Tensor(t.type, t.data, t.dims)]));
    const out = await sessions.get(graph)!.run(tensors);
    return Object.fromEntries(Object.entries(out).map(([name, o]) => [name, { data: o.data as Float32Array, dims: o.dims }]));
  };
  try {
    return await generateImage(manifest, run, settings);
  } finally {
    for (const session of sessions.values()) await session.release();
  }
}
