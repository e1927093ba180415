// diffusers model folders, as ModelMixin.save_pretrained writes them and from_pretrained reads
// them: `config.json` (the model's constructor arguments plus `_class_name` and
// `_diffusers_version`) beside the weights, `diffusion_pytorch_model.safetensors` or, from older
// writers, `diffusion_pytorch_model.bin` (a torch.save'd state dict). Each model validates its
// own config; this file knows the file names, the formats and the atomic writes.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as torch from '../torch/index.js';
import { writeAll, writeFileAtomic } from './file.js';
import { loadSafetensors, saveSafetensors } from './safetensors.js';
import { load } from './torch-load.js';

export const CONFIG_NAME = 'config.json';
export const SAFETENSORS_WEIGHTS_NAME = 'diffusion_pytorch_model.safetensors';
export const WEIGHTS_NAME = 'diffusion_pytorch_model.bin';

/** The parsed contents of a JSON file; a syntax error names the file. */
export function readJsonFile(path: string): unknown {
  const text = readFileSync(path, 'utf8');
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new Error(`${path}: not valid JSON (${(error as Error).message})`);
  }
}

/**
 * Writes `value` as JSON indented by 2 with a final newline (the layout of diffusers'
 * `to_json_string`, whose keys are sorted: pass them in the order wanted), through a temporary
 * file renamed into place.
 */
export function writeJsonFileAtomic(path: string, value: unknown): void {
  const bytes = Buffer.from(`${JSON.stringify(value, null, 2)}\n`);
  writeFileAtomic(path, (fd) => writeAll(fd, bytes));
}

/**
 * The weights of the diffusers folder `dir` as from_pretrained picks them: the safetensors file
 * when there is one, otherwise the torch.save'd `.bin` state dict. `path` is the file read.
 */
export function loadDiffusersWeights(dir: string): { path: string; tensors: Map<string, torch.Tensor> } {
  const safetensorsPath = join(dir, SAFETENSORS_WEIGHTS_NAME);
  if (existsSync(safetensorsPath)) return { path: safetensorsPath, tensors: new Map(Object.entries(loadSafetensors(safetensorsPath))) };
  const binPath = join(dir, WEIGHTS_NAME);
  if (existsSync(binPath)) return { path: binPath, tensors: stateDictOf(load(binPath), binPath) };
  throw new Error(`${dir}: no diffusers weights (neither ${SAFETENSORS_WEIGHTS_NAME} nor ${WEIGHTS_NAME})`);
}

/** A torch.load result that must be a state dict: string keys, Tensor values. */
function stateDictOf(loaded: unknown, path: string): Map<string, torch.Tensor> {
  const entries = loaded instanceof Map ? [...loaded.entries()]
    : loaded !== null && typeof loaded === 'object' && !Array.isArray(loaded) ? Object.entries(loaded) : null;
  if (entries === null) throw new Error(`${path}: expected a state dict (a dict of tensors), got ${Array.isArray(loaded) ? 'a list' : typeof loaded}`);
  const out = new Map<string, torch.Tensor>();
  for (const [key, value] of entries) {
    if (typeof key !== 'string' || !(value instanceof torch.Tensor)) {
      throw new Error(`${path}: expected a state dict of tensors, but entry ${JSON.stringify(key)} is not a tensor`);
    }
    out.set(key, value);
  }
  return out;
}

/**
 * Writes `tensors` as `dir`/diffusion_pytorch_model.safetensors with the `{"format": "pt"}`
 * metadata that save_pretrained writes (atomically, as saveSafetensors does). Returns the path.
 */
export function saveDiffusersWeights(dir: string, tensors: Map<string, torch.Tensor>): string {
  const path = join(dir, SAFETENSORS_WEIGHTS_NAME);
  saveSafetensors(path, Object.fromEntries(tensors), { format: 'pt' });
  return path;
}
