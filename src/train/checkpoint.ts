// Training checkpoints: one safetensors file holding every tensor under its group's prefix
// (`model.*`, `ema.*`, `opt.*`, ...) and the run's state (args, step, epoch, RNG, optimizer
// groups) as JSON strings in the header metadata. saveSafetensors writes to a temporary name and
// renames, so a crash leaves the previous checkpoint and never a partial one under a real name;
// a checkpoint whose floating-point tensors hold a NaN or an infinity is not written at all, and
// each tensor's CRC-32 is recorded, so a corrupt one is refused when read.
import { existsSync, lstatSync, mkdirSync, readFileSync, readdirSync, readlinkSync, renameSync, rmSync, symlinkSync, writeSync } from 'node:fs';
import { basename, join } from 'node:path';
import { z } from 'zod';
import * as torch from '../torch/index.js';
import { CRC32_KEY, SafetensorsFile, loadSafetensors, saveSafetensors, type SafetensorsReadOptions } from '../io/safetensors.js';
import { makeDirs, processAlive, writeFileAtomic } from '../io/file.js';
import { flattenStateDict, unflattenStateDict, type OptionValue, type Optimizer } from '../optim/optimizer.js';
import type { ProcessContext } from '../runlog/process.js';

type Tensor = torch.Tensor;
export type TensorGroup = Record<string, Tensor> | Map<string, Tensor>;

const metadataSchema = z.looseObject({
  step: z.number().int().nonnegative(),
  epoch: z.number().int().nonnegative(),
  args: z.record(z.string(), z.unknown()),
  /** torch.getRngState() (the CPU generator) as base64; rank 0's in a multi-rank run. */
  rng: z.string().optional(),
  /** Every rank's CPU generator state, rank 0's first. */
  rng_ranks: z.array(z.string()).optional(),
  /** Every rank's torch.cuda.getRngState() of the device it trains on (absent when training on the CPU). */
  cuda_rng_ranks: z.array(z.string()).optional(),
  /** The optimizer's param_groups and non-tensor state (see optimizerToCheckpoint). */
  optimizer: z.unknown().optional(),
  /** The ranks and the batch of each rank the run trained with (checkResumeLayout). */
  world_size: z.number().int().positive().optional(),
  /** The EMA decay the run used (resumeEmaDecay). */
  ema_decay: z.number().min(0).max(1).optional(),
  batch_size: z.number().int().positive().optional(),
  /** Every rank's next batch in the epoch (batchPositionMetadata), rank 0's first. */
  batch_ranks: z.array(z.number().int().nonnegative()).optional(),
});
export type CheckpointMetadata = z.infer<typeof metadataSchema>;

export interface CheckpointContents {
  /** Tensors by group; `{model: m.stateDict()}` is saved as `model.<key>`. */
  tensors: Record<string, TensorGroup>;
  metadata: CheckpointMetadata;
}

export interface Checkpoint {
  path: string;
  /** Tensors by group, keys without the group prefix. */
  groups: Record<string, Record<string, Tensor>>;
  metadata: CheckpointMetadata;
}

export function saveCheckpoint(path: string, contents: CheckpointContents): void {
  const tensors: Record<string, Tensor> = {};
  for (const [group, entries] of Object.entries(contents.tensors)) {
    if (group === '' || group.includes('.')) throw new Error(`saveCheckpoint(${path}): group name "${group}" must be non-empty and without '.'`);
    for (const [key, tensor] of entries instanceof Map ? entries : Object.entries(entries)) tensors[`${group}.${key}`] = tensor;
  }
  const bad = firstNonFinite(tensors);
  if (bad !== null) throw new NonFiniteCheckpointError(path, bad, contents.metadata.step);
  const metadata: Record<string, string> = {};
  for (const [key, value] of Object.entries(contents.metadata)) {
    if (value !== undefined) metadata[key] = JSON.stringify(value);
  }
  saveSafetensors(path, tensors, metadata, { checksums: true });
}

/**
 * A checkpoint that would hold a NaN or an infinity. A loss can be finite while the step it
 * drives overflows the weights (an infinite gradient, a learning rate too large), so the weights
 * themselves are checked: the checkpoints already written stay the last good ones.
 */
export class NonFiniteCheckpointError extends Error {
  /** `lastGood`: the run's last checkpoint (null: none yet), where it is known. */
  constructor(readonly path: string, readonly tensor: string, readonly step: number, lastGood?: string | null) {
    super(`saveCheckpoint(${path}): tensor "${tensor}" holds NaN or infinite values at step ${step}: not written, stopping; ${lastGoodText(lastGood)}`);
    this.name = 'NonFiniteCheckpointError';
  }
}

/** The end of a non-finite error's message: which checkpoint a --resume would continue from. */
export function lastGoodText(lastGood: string | null | undefined): string {
  if (lastGood === undefined) return 'the checkpoints saved before it are the last good ones';
  return lastGood === null ? 'no checkpoint was saved before it' : `the last good checkpoint is ${lastGood}`;
}

/**
 * The name of the first floating-point tensor holding a NaN or an infinity, or null. A sum is
 * NaN or infinite when an element is, and costs one read of the tensor without allocating one
 * of its size (isfinite's mask does, at 20 times the time); a sum that overflowed from finite
 * values is confirmed element by element.
 */
function firstNonFinite(tensors: Record<string, Tensor>): string | null {
  return torch.scope(() => {
    const names = Object.keys(tensors).filter((name) => tensors[name]!.isFloatingPoint() && tensors[name]!.numel() > 0);
    if (names.length === 0) return null;
    const sums = torch.stack(names.map((name) => tensors[name]!.sum().float().to('cpu'))).toArray() as Float32Array;
    return names.find((name, i) => !Number.isFinite(sums[i]!) && !tensors[name]!.isfinite().all().item()) ?? null;
  });
}

/** Reads a checkpoint; a truncated or corrupt file, a bad tensor name or bad metadata is an error naming the file and field. */
export function loadCheckpoint(path: string, options: SafetensorsReadOptions = {}): Checkpoint {
  const fail = (message: string): never => { throw new Error(`loadCheckpoint(${path}): ${message}`); };
  const file = SafetensorsFile.open(path);
  file.close();
  const values: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(file.metadata)) {
    if (key === CRC32_KEY) continue;
    try {
      values[key] = JSON.parse(value);
    } catch {
      fail(`metadata "${key}" is not JSON: ${value.slice(0, 80)}`);
    }
  }
  const parsed = metadataSchema.safeParse(values);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    fail(`metadata "${issue.path.join('.')}": ${issue.message}`);
  }
  const groups: Record<string, Record<string, Tensor>> = {};
  for (const [name, tensor] of Object.entries(loadSafetensors(path, options))) {
    const dot = name.indexOf('.');
    if (dot <= 0) fail(`tensor "${name}" has no group prefix (model., ema., opt., ...)`);
    (groups[name.slice(0, dot)] ??= {})[name.slice(dot + 1)] = tensor;
  }
  return { path, groups, metadata: parsed.data! };
}

// --- run state helpers ------------------------------------------------------------------------

/** The default generator of `device` (the CPU's, or a CUDA device's) as a uint8 tensor. */
function generatorState(device: torch.Device): Tensor {
  return device === 'cpu' ? torch.getRngState() : torch.cuda.getRngState(device);
}

/** The state of `device`'s default generator (the CPU's by default) as base64, as `metadata.rng` holds it. */
export function rngStateBase64(device: torch.Device = 'cpu'): string {
  return torch.scope(() => Buffer.from(generatorState(device).toArray() as Uint8Array).toString('base64'));
}

/** Restores `device`'s default generator from rngStateBase64(device): later random draws equal those after the save. */
export function setRngStateBase64(state: string, device: torch.Device = 'cpu'): void {
  const bytes = new Uint8Array(Buffer.from(state, 'base64'));
  torch.scope(() => {
    const t = torch.fromArray(bytes, [bytes.length], 'uint8');
    if (device === 'cpu') torch.setRngState(t);
    else torch.cuda.setRngState(t, device);
  });
}

/** Where a training process runs: its rank of `worldSize` and the device it trains on. */
export type RankPlace = Omit<ProcessContext, 'log'>;

/**
 * Every rank's state of `generator`'s default generator as base64, rank 0's first, gathered on the
 * device the rank trains on (NCCL moves CUDA tensors only).
 */
function rngStatesOfRanks(generator: torch.Device, place: RankPlace): string[] {
  const { distributed, worldSize } = place;
  if (!distributed) return [rngStateBase64(generator)];
  return torch.scope(() => {
    const state = generatorState(generator).to(place.device);
    const states = Array.from({ length: worldSize }, () => torch.zerosLike(state));
    torch.distributed.allGather(states, state);
    return states.map((t) => Buffer.from(t.toArray() as Uint8Array).toString('base64'));
  });
}

/** The generator states a trainer's checkpoint holds (every rank calls it; the states are gathered). */
export function trainingRngMetadata(place: RankPlace): Pick<CheckpointMetadata, 'rng' | 'rng_ranks' | 'cuda_rng_ranks'> {
  const cpu = rngStatesOfRanks('cpu', place);
  const cuda = place.device === 'cpu' ? undefined : rngStatesOfRanks(place.device, place);
  return { rng: cpu[0], rng_ranks: cpu, cuda_rng_ranks: cuda };
}

/**
 * Restores this rank's generators (CPU, and CUDA when training there) from a checkpoint written
 * with trainingRngMetadata, so the run draws what the uninterrupted run would have. Where the
 * checkpoint cannot say (another number of ranks, or it was trained on the CPU and resumes on a
 * GPU), the generators are reseeded from `seed`, `step` and the rank, and a note says why.
 */
export function restoreTrainingRng(checkpoint: Checkpoint, place: RankPlace, seed: number, log: (line: string) => void): void {
  const { metadata, path } = checkpoint;
  if (typeof metadata.rng !== 'string') throw new Error(`resume from ${path}: no RNG state (metadata "rng")`);
  const cpu = metadata.rng_ranks ?? [metadata.rng];
  const cuda = metadata.cuda_rng_ranks;
  const onCuda = place.device !== 'cpu';
  let why: string | null = null;
  if (cpu.length !== place.worldSize) why = `it holds the RNG states of ${cpu.length} ranks, this run has ${place.worldSize}`;
  else if (onCuda && cuda?.length !== place.worldSize) why = `it holds no CUDA RNG states for ${place.worldSize} rank(s) (was it trained on the CPU?)`;
  if (why === null) {
    setRngStateBase64(cpu[place.rank]!);
    if (onCuda) setRngStateBase64(cuda![place.rank]!, place.device);
    return;
  }
  // manualSeed seeds the CUDA generators too.
  torch.manualSeed((seed * place.worldSize + place.rank) * 1_000_003 + metadata.step);
  log(`note: ${path}: ${why}; the random draws are reseeded, so losses will not continue exactly as the uninterrupted run`);
}

/** Where a checkpoint's run stood: its step, epoch and next batch (`metadata.batch`, checked). */
export function checkpointPosition(checkpoint: Checkpoint): { step: number; epoch: number; batch: number } {
  const { step, epoch, batch } = checkpoint.metadata;
  if (typeof batch !== 'number' || !Number.isInteger(batch) || batch < 0) {
    throw new Error(`resume from ${checkpoint.path}: metadata "batch" is ${JSON.stringify(batch)}, not a batch index`);
  }
  return { step, epoch, batch };
}

/**
 * Every rank's next batch in the epoch, as `metadata.batch` (rank 0's) and `batch_ranks`: a rank
 * whose data left a batch out is one batch further in its shard than the others after the same
 * steps. Every rank calls it.
 */
export function batchPositionMetadata(batch: number, place: RankPlace): { batch: number; batch_ranks: number[] } {
  if (!place.distributed) return { batch, batch_ranks: [batch] };
  const batches = torch.scope(() => {
    const mine = torch.tensor([batch], { dtype: 'int64' }).to(place.device);
    const all = Array.from({ length: place.worldSize }, () => torch.zerosLike(mine));
    torch.distributed.allGather(all, mine);
    return all.map((t) => t.item());
  });
  return { batch: batches[0]!, batch_ranks: batches };
}

/**
 * Refuses to resume a checkpoint on another layout: each rank's data position and random stream
 * belong to its shard of the old rank count, and the steps of an epoch to the old global batch,
 * so neither continues as the run did. (Checkpoints from before `world_size` was recorded give
 * their rank count by `rng_ranks`; their batch size is not known and not checked.)
 */
export function checkResumeLayout(checkpoint: Checkpoint, layout: { worldSize: number; batchSize: number }): void {
  const { metadata, path } = checkpoint;
  const ranks = metadata.world_size ?? metadata.rng_ranks?.length ?? 1;
  const batch = metadata.batch_size ?? layout.batchSize;
  if (ranks === layout.worldSize && batch === layout.batchSize) return;
  const show = (w: number, b: number) => `${w} rank${w === 1 ? '' : 's'} x ${b} = global batch ${w * b}`;
  throw new Error(`resume from ${path}: it was trained on ${show(ranks, batch)}, this run is ${show(layout.worldSize, layout.batchSize)}; ` +
    'each rank\'s data position and random stream, and the steps of an epoch, belong to that layout: resume with the same ' +
    `--global-batch-size on ${ranks} rank${ranks === 1 ? '' : 's'}, or start a new run from its weights`);
}

/**
 * Resuming with optimizer settings other than the checkpoint's, as Lightning's lr override: each
 * setting given (undefined: not given, and the checkpoint's continues) replaces the restored one
 * in every param group of `optimizer`, and a note says what changed. Returns the settings of the
 * first group: the values that run, for the metadata.
 */
export function overrideOptimizerSettings<O extends { lr: number } & Record<string, OptionValue>, K extends keyof O & string>(
  optimizer: Optimizer<O, any>, given: { [k in K]: O[k] | undefined }, log: (line: string) => void, what = 'the optimizer',
): Pick<O, K> {
  for (const [key, value] of Object.entries(given) as [K, O[K] | undefined][]) {
    if (value === undefined) continue;
    const before = optimizer.paramGroups.map((g) => g[key]);
    if (before.every((v) => JSON.stringify(v) === JSON.stringify(value))) continue;
    for (const group of optimizer.paramGroups) (group as O)[key] = value;
    log(`note: resuming with ${key} ${JSON.stringify(value)} for ${what}, where the checkpoint's was ${JSON.stringify(before[0])}`);
  }
  const first = optimizer.paramGroups[0]!;
  return Object.fromEntries(Object.keys(given).map((key) => [key, first[key as K]])) as unknown as Pick<O, K>;
}

/**
 * The EMA decay of a resumed run: the one given, else the checkpoint's (`ema_decay`, or
 * `args.emaDecay` in checkpoints from before it was recorded), else 0.9999; a change is logged.
 */
export function resumeEmaDecay(checkpoint: Checkpoint, given: number | undefined, log: (line: string) => void): number {
  const { metadata } = checkpoint;
  const saved = metadata.ema_decay ?? (typeof metadata.args.emaDecay === 'number' ? metadata.args.emaDecay : undefined);
  if (given !== undefined && saved !== undefined && given !== saved) log(`note: resuming with EMA decay ${given}, where the checkpoint's was ${saved}`);
  return given ?? saved ?? 0.9999;
}

/** This rank's next batch from a checkpoint: its own of `batch_ranks` when it has one, else `batch` (rank 0's). */
export function resumeBatch(checkpoint: Checkpoint, batch: number, place: RankPlace): number {
  const ranks = checkpoint.metadata.batch_ranks;
  return ranks !== undefined && ranks.length === place.worldSize ? ranks[place.rank]! : batch;
}

/** `{tensors, metadata}` to save as `tensors.opt` and `metadata.optimizer` (or other names, for a second optimizer). */
export function optimizerToCheckpoint(optimizer: Optimizer<any, any>): { tensors: Record<string, Tensor>; metadata: unknown } {
  return flattenStateDict(optimizer.stateDict(), '');
}

/** Loads the optimizer state that optimizerToCheckpoint saved as tensor group `group` and metadata `key`. */
export function loadOptimizer(optimizer: Optimizer<any, any>, checkpoint: Checkpoint, names: { group?: string; key?: string } = {}): void {
  const { group = 'opt', key = 'optimizer' } = names;
  const metadata = checkpoint.metadata[key];
  if (metadata === undefined) throw new Error(`loadOptimizer: ${checkpoint.path} holds no optimizer state (metadata "${key}")`);
  optimizer.loadStateDict(unflattenStateDict(checkpoint.groups[group] ?? {}, metadata, ''));
}

// --- a folder of checkpoints --------------------------------------------------------------------

const CHECKPOINT_NAME = /^(\d{7,})\.safetensors$/;
// Temporary files are `<name>.tmp-<pid>` (writeFileAtomic, and the `last` link below).
const TEMPORARY_NAME = /^(?:\d{7,}|last)\.safetensors\.tmp-(\d+)$/;
export const LAST_LINK = 'last.safetensors';
export const LAST_POINTER = 'last.txt';

export interface CheckpointManagerOptions {
  /** Keep only the newest K checkpoints (default: keep all, as DiT/SiT). */
  keepLast?: number;
}

/**
 * `dir/0001000.safetensors` (the step, 7 digits as DiT's `{train_steps:07d}.pt`), the newest K
 * kept, and `last.safetensors`, a symbolic link to the newest (`last.txt` naming it where the
 * file system has no symbolic links).
 */
export class CheckpointManager {
  readonly keepLast: number;

  constructor(readonly dir: string, options: CheckpointManagerOptions = {}) {
    this.keepLast = options.keepLast ?? Infinity;
    if (!(this.keepLast >= 1)) throw new RangeError(`CheckpointManager(${dir}): keepLast must be at least 1, got ${options.keepLast}`);
    makeDirs(dir, 'checkpoints folder');
    // Temporaries of saves that died with their process (kill -9, power loss) are garbage.
    for (const name of readdirSync(dir)) {
      const match = TEMPORARY_NAME.exec(name);
      if (match !== null && !processAlive(Number(match[1]))) rmSync(join(dir, name), { force: true });
    }
  }

  static fileName(step: number): string { return `${String(step).padStart(7, '0')}.safetensors`; }

  /** The complete checkpoints in the folder, oldest step first. */
  list(): { step: number; path: string }[] {
    return readdirSync(this.dir)
      .map((name) => [name, CHECKPOINT_NAME.exec(name)] as const)
      .filter(([, match]) => match !== null)
      .map(([name, match]) => ({ step: Number(match![1]), path: join(this.dir, name) }))
      .sort((a, b) => a.step - b.step);
  }

  /** The newest checkpoint's path, or null when there is none. */
  latest(): string | null { return this.list().at(-1)?.path ?? null; }

  /**
   * The checkpoint saved last (what --resume continues from): the one `last.safetensors` (or
   * `last.txt`) names, which is not the newest step after a resume from an older one; the newest
   * where neither exists (a folder written by another tool); null when there is no checkpoint.
   * A `last` naming a file that is gone is an error.
   */
  last(): string | null {
    const link = join(this.dir, LAST_LINK);
    const pointer = join(this.dir, LAST_POINTER);
    let name: string | null = null;
    if (lstatSync(link, { throwIfNoEntry: false })?.isSymbolicLink()) name = readlinkSync(link);
    else if (existsSync(link)) return link;
    else if (existsSync(pointer)) name = readFileSync(pointer, 'utf8').trim();
    if (name === null) return this.latest();
    const path = join(this.dir, name);
    if (!existsSync(path)) throw new Error(`${this.dir}: ${LAST_LINK} names ${name}, which is not there; resume from a checkpoint file instead`);
    return path;
  }

  /**
   * Resuming from the checkpoint of `step`: the checkpoints of later steps belong to the run that
   * was abandoned, and would be taken for this one's (keepLast, --resume). They are moved, not
   * deleted, into `abandoned-after-<step>[-N]/`, and `last` points at the resumed checkpoint
   * (or is removed where that lives elsewhere). Returns the folder, or null when nothing was later.
   */
  setAsideAfter(step: number): string | null {
    const later = this.list().filter((c) => c.step > step);
    if (later.length === 0) return null;
    const base = join(this.dir, `abandoned-after-${String(step).padStart(7, '0')}`);
    let aside = base;
    for (let n = 2; existsSync(aside); n++) aside = `${base}-${n}`;
    mkdirSync(aside);
    for (const { path } of later) renameSync(path, join(aside, basename(path)));
    const resumed = CheckpointManager.fileName(step);
    if (existsSync(join(this.dir, resumed))) this.pointLastAt(resumed);
    else for (const name of [LAST_LINK, LAST_POINTER]) rmSync(join(this.dir, name), { force: true });
    return aside;
  }

  /** Saves the checkpoint of `metadata.step`, points `last` at it, then deletes those beyond keepLast. */
  save(contents: CheckpointContents): string {
    const name = CheckpointManager.fileName(contents.metadata.step);
    const path = join(this.dir, name);
    try {
      saveCheckpoint(path, contents);
    } catch (error) {
      if (error instanceof NonFiniteCheckpointError) throw new NonFiniteCheckpointError(path, error.tensor, error.step, this.last());
      throw error;
    }
    this.pointLastAt(name);
    const old = this.list().filter((c) => c.path !== path);
    for (const { path: stale } of old.slice(0, Math.max(0, old.length + 1 - this.keepLast))) rmSync(stale);
    return path;
  }

  private pointLastAt(name: string): void {
    const link = join(this.dir, LAST_LINK);
    const tmp = `${link}.tmp-${process.pid}`;
    rmSync(tmp, { force: true });
    try {
      symlinkSync(name, tmp);
    } catch (error) {
      if (!['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS'].includes((error as NodeJS.ErrnoException).code ?? '')) throw error;
      writeFileAtomic(join(this.dir, LAST_POINTER), (fd) => writeSync(fd, `${name}\n`));
      return;
    }
    renameSync(tmp, link);
  }
}
