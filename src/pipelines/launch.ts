// `reals launch`'s work, torchrun's job for reals: starts nprocPerNode copies of a command on this
// node, each with the environment torch.distributed.initProcessGroup() reads, and tears the
// whole group down as soon as one rank fails, so a dead rank never leaves the others hanging.
// Ranks started here end with the launcher however it ends (distributed.LAUNCHER_PID_ENV).
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { constants } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Writable } from 'node:stream';
import { LAUNCHER_PID_ENV } from '../torch/distributed.js';

const REALS_BIN = join(dirname(fileURLToPath(import.meta.url)), '../../bin/reals.js');

export interface LaunchOptions {
  /** The command: a reals subcommand (`sit train ...`), or a program when its first word is `node` or a path. */
  command: string[];
  nprocPerNode: number;
  nnodes?: number;
  nodeRank?: number;
  masterAddr?: string;
  masterPort?: number;
  /** How long the other ranks get between SIGTERM and SIGKILL when a rank failed (default 5 s). */
  graceMs?: number;
  /**
   * How long the ranks get between a SIGINT or SIGTERM forwarded to them and SIGKILL (default 30 s,
   * torchrun's agent's): a trainer finishes its step and writes a checkpoint in that time.
   */
  signalGraceMs?: number;
  /** Where the ranks' output goes (default: this process's stdout and stderr). */
  stdout?: Writable;
  stderr?: Writable;
}

/** `[program, args]` for a command, by the rule `reals launch --help` states. */
export function resolveCommand(command: string[]): [string, string[]] {
  const [first, ...rest] = command;
  if (first === undefined) throw new Error('launch: no command given (reals launch [options] -- <command...>)');
  if (first === 'node' || first.includes('/')) return [first, rest];
  return [process.execPath, [REALS_BIN, ...command]];
}

function checkInteger(name: string, value: number, min: number, max = Number.MAX_SAFE_INTEGER): void {
  if (!Number.isInteger(value) || value < min || value > max) throw new RangeError(`launch: ${name} must be an integer in [${min}, ${max}], got ${value}`);
}

function exitCode(code: number | null, signal: NodeJS.Signals | null): number {
  if (signal !== null) return 128 + (constants.signals[signal] ?? 0);
  return code ?? 1;
}

/**
 * Runs `nprocPerNode` ranks of `command` and resolves, once every rank has ended, to 0 if all
 * exited with 0, else to the exit code of the first rank that failed (128 + signal number for a
 * rank killed by a signal). When one rank fails the others get SIGTERM, then SIGKILL after
 * `graceMs`; SIGINT and SIGTERM sent to this process are forwarded to the ranks, each time one
 * comes, and SIGKILL follows after `signalGraceMs`.
 */
export async function launch(options: LaunchOptions): Promise<number> {
  const { nprocPerNode, nnodes = 1, nodeRank = 0, masterAddr = '127.0.0.1', masterPort = 29500, graceMs = 5000, signalGraceMs = 30_000 } = options;
  checkInteger('nprocPerNode', nprocPerNode, 1);
  checkInteger('nnodes', nnodes, 1);
  checkInteger('nodeRank', nodeRank, 0, nnodes - 1);
  checkInteger('masterPort', masterPort, 1, 65535);
  const [program, args] = resolveCommand(options.command);
  const stdout = options.stdout ?? process.stdout;
  const stderr = options.stderr ?? process.stderr;
  const prefixed = nprocPerNode > 1;
  const piped = prefixed || options.stdout !== undefined || options.stderr !== undefined;

  return new Promise((resolve) => {
    const running = new Set<ChildProcess>();
    let failure: number | null = null;
    let open = nprocPerNode;
    let killTimer: NodeJS.Timeout | undefined;

    const stop = (signal: NodeJS.Signals, killAfterMs: number): void => {
      for (const child of running) child.kill(signal);
      killTimer ??= setTimeout(() => { for (const child of running) child.kill('SIGKILL'); }, killAfterMs);
    };
    const fail = (code: number): void => {
      if (failure !== null) return;
      failure = code;
      stop('SIGTERM', graceMs);
    };
    const onSignal = (signal: NodeJS.Signals): void => {
      failure ??= exitCode(null, signal);
      stop(signal, signalGraceMs);
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);

    for (let localRank = 0; localRank < nprocPerNode; localRank++) {
      const rank = nodeRank * nprocPerNode + localRank;
      const child = spawn(program, args, {
        // A process group of their own: a terminal's Ctrl-C reaches the ranks once, forwarded by
        // this process, not also directly, which a trainer would take for a second signal.
        detached: true,
        stdio: ['inherit', piped ? 'pipe' : 'inherit', piped ? 'pipe' : 'inherit'],
        env: {
          ...process.env,
          MASTER_ADDR: masterAddr,
          MASTER_PORT: String(masterPort),
          WORLD_SIZE: String(nnodes * nprocPerNode),
          RANK: String(rank),
          LOCAL_RANK: String(localRank),
          LOCAL_WORLD_SIZE: String(nprocPerNode),
          GROUP_RANK: String(nodeRank),
          [LAUNCHER_PID_ENV]: String(process.pid),
          // As torchrun: one intra-op thread per rank unless asked, so N ranks don't oversubscribe the cores.
          OMP_NUM_THREADS: process.env.OMP_NUM_THREADS ?? (nprocPerNode > 1 ? '1' : undefined),
        },
      });
      running.add(child);
      if (piped) {
        for (const [source, sink] of [[child.stdout!, stdout], [child.stderr!, stderr]] as const) {
          createInterface({ input: source, crlfDelay: Infinity }).on('line', (line) => {
            sink.write(prefixed ? `[rank ${rank}] ${line}\n` : `${line}\n`);
          });
        }
      }
      child.on('error', (error) => {
        stderr.write(`launch: rank ${rank} could not start \`${[program, ...args].join(' ')}\`: ${error.message}\n`);
        running.delete(child);
        fail(127);
      });
      child.on('exit', (code, signal) => {
        running.delete(child);
        if (code !== 0) fail(exitCode(code, signal));
      });
      child.on('close', () => {
        if (--open > 0) return;
        clearTimeout(killTimer);
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
        resolve(failure ?? 0);
      });
    }
  });
}
