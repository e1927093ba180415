// Where a run writes: `results/NNN-<name>/` with `checkpoints/` inside, as DiT/SiT's train.py;
// finding what `--resume` continues from; and the guard that stops a run on a non-finite loss.
import { existsSync, mkdirSync, readdirSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { CheckpointManager } from './checkpoint.js';

export interface RunDir {
  /** `<resultsDir>/NNN-<name>` */
  path: string;
  checkpoints: string;
}

/**
 * Creates `<resultsDir>/NNN-<name>/checkpoints/`, NNN being the number of entries already in
 * resultsDir (DiT's `experiment_index = len(glob(f"{results_dir}/*"))`, which skips dot files), and
 * '/' in the name becoming '-' as DiT's `args.model.replace("/", "-")`.
 */
export function createRunDir(resultsDir: string, name: string): RunDir {
  mkdirSync(resultsDir, { recursive: true });
  const index = readdirSync(resultsDir).filter((entry) => !entry.startsWith('.')).length;
  const path = join(resultsDir, `${String(index).padStart(3, '0')}-${name.replaceAll('/', '-')}`);
  if (existsSync(path)) throw new Error(`createRunDir: ${path} already exists (results folder entries were removed or renamed?)`);
  mkdirSync(path);
  const checkpoints = join(path, 'checkpoints');
  mkdirSync(checkpoints);
  return { path, checkpoints };
}

/**
 * What `--resume ARG` continues: ARG is a checkpoint file, a run folder (its newest checkpoint in
 * `checkpoints/`) or a checkpoints folder. The run folder is where metrics and events go on.
 */
export function resolveResume(arg: string): { checkpoint: string; runDir: string } {
  if (!existsSync(arg)) throw new Error(`--resume ${arg}: no such file or folder`);
  // A run folder holds `checkpoints/`; checkpoints kept elsewhere make their folder the run folder.
  const runDirOf = (folder: string) => (basename(resolve(folder)) === 'checkpoints' ? dirname(resolve(folder)) : resolve(folder));
  if (statSync(arg).isFile()) return { checkpoint: arg, runDir: runDirOf(dirname(arg)) };
  const inRun = join(arg, 'checkpoints');
  const folder = existsSync(inRun) ? inRun : arg;
  const checkpoint = new CheckpointManager(folder).latest();
  if (checkpoint === null) throw new Error(`--resume ${arg}: no checkpoint (NNNNNNN.safetensors) in ${folder}`);
  return { checkpoint, runDir: runDirOf(folder) };
}

export class NonFiniteLossError extends Error {
  constructor(readonly loss: string, readonly value: number, readonly step: number) {
    super(`loss "${loss}" is ${value} at step ${step}: stopping; the last checkpoint saved before it is the last good one`);
    this.name = 'NonFiniteLossError';
  }
}

/** Throws NonFiniteLossError naming the first NaN or infinite value of `losses`. */
export function checkFinite(losses: Record<string, number>, step: number): void {
  for (const [name, value] of Object.entries(losses)) {
    if (!Number.isFinite(value)) throw new NonFiniteLossError(name, value, step);
  }
}
