// `reals extract-ema`: the EMA weights of a training checkpoint (a generator's or the aligned
// VAE's, or an official SiT/DiT .pt with an "ema" entry) as a plain safetensors state dict.
import { Command } from 'commander';
import * as torch from '../torch/index.js';
import { load, saveSafetensors, SafetensorsFile } from '../io/index.js';
import { loadCheckpoint } from '../train/checkpoint.js';

/** Writes the `ema` weights of checkpoint `ckpt` to `out`; returns how many tensors. */
export function extractEma(ckpt: string, out: string): number {
  let ema: Record<string, torch.Tensor>;
  if (ckpt.endsWith('.safetensors')) {
    const file = SafetensorsFile.open(ckpt);
    const keys = file.keys();
    file.close();
    if (!keys.some((k) => k.startsWith('ema.'))) throw new Error(`--ckpt ${ckpt}: no ema.* tensors (groups: ${[...new Set(keys.map((k) => k.split('.')[0]))].join(', ')})`);
    ema = loadCheckpoint(ckpt).groups.ema!;
  } else {
    const loaded = load(ckpt);
    const entries = loaded instanceof Map ? loaded : loaded !== null && typeof loaded === 'object' ? new Map(Object.entries(loaded)) : null;
    const found = entries?.get('ema');
    const state = found instanceof Map ? Object.fromEntries(found) : found;
    if (state === null || typeof state !== 'object' || !Object.values(state).every((v) => v instanceof torch.Tensor)) {
      throw new Error(`--ckpt ${ckpt}: no "ema" state dict (top-level keys: ${entries === null ? typeof loaded : [...entries.keys()].join(', ')})`);
    }
    ema = state as Record<string, torch.Tensor>;
  }
  saveSafetensors(out, ema, { format: 'pt' });
  return Object.keys(ema).length;
}

export function extractEmaCommand(): Command {
  return new Command('extract-ema')
    .description('write the EMA weights of a training checkpoint as a plain safetensors state dict')
    .requiredOption('--ckpt <file>', 'a reals checkpoint (.safetensors) or an official .pt with an "ema" entry')
    .requiredOption('--out <file>', 'the .safetensors file to write')
    .action((flags: { ckpt: string; out: string }) => {
      const n = extractEma(flags.ckpt, flags.out);
      console.log(`wrote ${n} EMA tensors to ${flags.out}`);
    });
}
