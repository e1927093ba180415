// Where a run writes: `results/NNN-<name>/` with `checkpoints/` inside, as DiT/SiT's train.py;
// finding what `--resume` continues from; and the guard that stops a run on a non-finite loss.
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, rmSync, statSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { CheckpointManager, lastGoodText } from './checkpoint.js';
import { ensureWritableDir, processAlive } from '../io/file.js';

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
  ensureWritableDir(resultsDir, 'results folder');
  const index = readdirSync(resultsDir).filter((entry) => !entry.startsWith('.')).length;
  const path = join(resultsDir, `${String(index).padStart(3, '0')}-${name.replaceAll('/', '-')}`);
  if (existsSync(path)) throw new Error(`createRunDir: ${path} already exists (results folder entries were removed or renamed?)`);
  mkdirSync(path);
  const checkpoints = join(path, 'checkpoints');
  mkdirSync(checkpoints);
  return { path, checkpoints };
}

/**
 * What `--resume ARG` continues: ARG is a checkpoint file, a run folder (the checkpoint its
 * `checkpoints/last.safetensors` names: the one saved last, which after a resume from an older
 * checkpoint is not the highest step) or a checkpoints folder. The run folder is where metrics
 * and events go on.
 */
export function resolveResume(arg: string): { checkpoint: string; runDir: string } {
  if (!existsSync(arg)) throw new Error(`--resume ${arg}: no such file or folder`);
  // A run folder holds `checkpoints/`; checkpoints kept elsewhere make their folder the run folder.
  const runDirOf = (folder: string) => (basename(resolve(folder)) === 'checkpoints' ? dirname(resolve(folder)) : resolve(folder));
  if (statSync(arg).isFile()) return { checkpoint: arg, runDir: runDirOf(dirname(arg)) };
  const inRun = join(arg, 'checkpoints');
  const folder = existsSync(inRun) ? inRun : arg;
  const checkpoint = new CheckpointManager(folder).last();
  if (checkpoint === null) throw new Error(`--resume ${arg}: no checkpoint (NNNNNNN.safetensors) in ${folder}`);
  return { checkpoint, runDir: runDirOf(folder) };
}

/** The lock file of a live run folder: `{"pid", "host", "started"}`. */
export const RUN_LOCK = 'run.lock';

export interface RunLock { path: string; release(): void }

/** The error of a folder locked by a live process on this host: the caller may wait for it. */
export class RunDirBusyError extends Error {
  constructor(message: string, readonly pid: number) {
    super(message);
  }
}

/**
 * Locks a run folder for this process, so that a second trainer (another `--resume` of a run
 * still going) is refused before it truncates the metrics or writes checkpoints beside the
 * first. The lock file is created exclusively; one left by a process that is gone (killed, or
 * crashed) is taken over with a note; one of a live process, or of another host, is an error
 * naming the process and the file.
 */
export function lockRunDir(runDir: string, log: (line: string) => void = () => {}): RunLock {
  const path = join(runDir, RUN_LOCK);
  const me = { pid: process.pid, host: hostname(), started: new Date().toISOString() };
  for (let attempt = 0; ; attempt++) {
    let fd: number;
    try {
      fd = openSync(path, 'wx');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 0) throw error;
      let holder: { pid?: unknown; host?: unknown } = {};
      try {
        holder = JSON.parse(readFileSync(path, 'utf8')) as typeof holder;
      } catch {
        // Empty or torn: its writer died between creating and writing it.
      }
      const pid = typeof holder.pid === 'number' ? holder.pid : null;
      if (typeof holder.host === 'string' && holder.host !== me.host) {
        throw new Error(`${runDir} is in use by process ${pid} on ${holder.host} (${path}); if that run has ended, delete the file`);
      }
      if (pid !== null && pid !== process.pid && processAlive(pid)) {
        throw new RunDirBusyError(`${runDir} is in use by a running trainer, process ${pid} (${path}): wait for it to end, or stop it, before resuming this run`, pid);
      }
      if (pid === process.pid && heldLocks.has(resolve(path))) {
        throw new Error(`${runDir} is already being trained by this process (${path})`);
      }
      log(`note: ${path}: taking over the lock of process ${pid ?? '?'}, which is no longer running`);
      rmSync(path, { force: true });
      continue;
    }
    writeSync(fd, `${JSON.stringify(me)}\n`);
    closeSync(fd);
    heldLocks.add(resolve(path));
    return {
      path,
      release() {
        if (!heldLocks.delete(resolve(path))) return;
        rmSync(path, { force: true });
      },
    };
  }
}

const heldLocks = new Set<string>();

export class NonFiniteLossError extends Error {
  /** `lastGood`: the run's last checkpoint (null: none yet), where it is known. */
  constructor(readonly loss: string, readonly value: number, readonly step: number, lastGood?: string | null) {
    super(`loss "${loss}" is ${value} at step ${step}: stopping; ${lastGoodText(lastGood)}`);
    this.name = 'NonFiniteLossError';
  }
}

/**
 * Throws NonFiniteLossError naming the first NaN or infinite value of `losses` and the last
 * checkpoint of `checkpoints` (rank 0's manager; other ranks pass null and name none).
 */
export function checkFinite(losses: Record<string, number>, step: number, checkpoints: CheckpointManager | null = null): void {
  for (const [name, value] of Object.entries(losses)) {
    if (!Number.isFinite(value)) throw new NonFiniteLossError(name, value, step, checkpoints === null ? undefined : checkpoints.last());
  }
}
