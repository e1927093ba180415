// torch.distributed: one default process group per process, set up from torchrun's variables
// (MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK) as `init_process_group('env://')`.
// Collectives are synchronous and in place; one that does not complete within the group's
// timeout throws (a dead peer is usually detected sooner: its connection closes).
import { native, type GroupHandle, type StoreHandle } from './native.js';
import { Tensor } from './tensor.js';
import { cuda } from './cuda.js';

export type Backend = 'gloo' | 'nccl';
export type ReduceOp = 'sum' | 'avg' | 'product' | 'max' | 'min';

/**
 * 5 minutes, where PyTorch's default_pg_timeout is 30: a rank that stops answering (a stalled
 * data shard, a wedged peer) then fails the run within minutes. A training step, a checkpoint
 * save or a rendezvous of ranks started together takes far less; REALS_DIST_TIMEOUT_S sets
 * another default, options.timeoutMs one group's.
 */
export const DEFAULT_TIMEOUT_MS = 5 * 60 * 1000;

/** The default collective timeout: REALS_DIST_TIMEOUT_S (seconds) when set, else DEFAULT_TIMEOUT_MS. */
export function defaultTimeoutMs(): number {
  const raw = process.env.REALS_DIST_TIMEOUT_S;
  if (raw === undefined || raw === '') return DEFAULT_TIMEOUT_MS;
  const seconds = /^\s*\d+(\.\d+)?\s*$/.test(raw) ? Number(raw) : NaN;
  if (!(seconds >= 0.001 && seconds <= 7 * 24 * 3600)) {
    throw new Error(`environment variable REALS_DIST_TIMEOUT_S must be a number of seconds in [0.001, 604800], got '${raw}'`);
  }
  return Math.round(seconds * 1000);
}

/**
 * A collective that failed: timed out, or a peer's connection closed. It names the operation and
 * this rank; `at(where)` adds what the process was doing (a trainer's step), which the
 * collective cannot know.
 */
export class CollectiveError extends Error {
  constructor(
    readonly op: string, readonly rank: number, readonly worldSize: number, readonly timeoutMs: number,
    readonly reason: string, readonly where: string | null = null,
  ) {
    const peer = /timed out|timeout|closed|reset|refused|broken pipe/i.test(reason) ? '; another rank stalled, died or is in another collective' : '';
    super(`distributed.${op} on rank ${rank} of ${worldSize}${where === null ? '' : ` at ${where}`} failed ` +
      `(timeout ${timeoutMs / 1000} s${peer}): ${reason}`);
    this.name = 'CollectiveError';
  }

  /** The same error, saying where this rank was (e.g. `step 7 (epoch 1)`); an error that already says so is kept. */
  at(where: string): CollectiveError {
    return this.where !== null ? this : new CollectiveError(this.op, this.rank, this.worldSize, this.timeoutMs, this.reason, where);
  }
}

export interface InitOptions {
  /** 'nccl' when CUDA is available, else 'gloo'. */
  backend?: Backend;
  /** Limit for each collective; default defaultTimeoutMs() (5 minutes). */
  timeoutMs?: number;
  /** How long the rendezvous waits for every rank to start; default the larger of timeoutMs and 5 minutes. */
  rendezvousTimeoutMs?: number;
  /** Default: the RANK environment variable. */
  rank?: number;
  /** Default: WORLD_SIZE. */
  worldSize?: number;
  /** Default: LOCAL_RANK. */
  localRank?: number;
  /** Default: MASTER_ADDR. */
  masterAddr?: string;
  /** Default: MASTER_PORT. */
  masterPort?: number;
}

interface ProcessGroup {
  handle: GroupHandle;
  backend: Backend;
  rank: number;
  worldSize: number;
  localRank: number;
  timeoutMs: number;
}

let current: ProcessGroup | null = null;

function fromEnv(variable: string, option: string): string {
  const value = process.env[variable];
  if (value === undefined || value === '') {
    throw new Error(
      `initProcessGroup: environment variable ${variable} is not set; pass options.${option} ` +
        'or start the processes with `reals launch --nproc-per-node N -- <command>`',
    );
  }
  return value;
}

function integer(given: number | undefined, variable: string, option: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const raw = given ?? fromEnv(variable, option);
  const value = typeof raw === 'number' ? raw : /^\d+$/.test(raw.trim()) ? Number(raw) : NaN;
  if (!Number.isInteger(value) || value < min || value > max) {
    const source = given === undefined ? `environment variable ${variable}` : `options.${option}`;
    throw new Error(`initProcessGroup: ${source} must be an integer in [${min}, ${max}], got '${raw}'`);
  }
  return value;
}

/**
 * The number of ranks this process was started as: WORLD_SIZE (set by `reals launch`, torchrun,
 * SLURM scripts), or 1 when it is unset. Anything else than a positive integer is an error naming
 * the variable: read as a number it would be NaN or 0, and every rank would run the whole job alone.
 */
export function launchedWorldSize(): number {
  const raw = process.env.WORLD_SIZE;
  if (raw === undefined) return 1;
  const value = /^\s*\d+\s*$/.test(raw) ? Number(raw) : NaN;
  if (!Number.isSafeInteger(value) || value < 1) throw new Error(`environment variable WORLD_SIZE must be a positive integer (the number of ranks), got '${raw}'`);
  return value;
}

/**
 * The key prefix of torchelastic's agent store, `/worker/attempt_<TORCHELASTIC_RESTART_COUNT>`, when
 * torchrun says its agent serves the TCPStore at MASTER_ADDR:MASTER_PORT
 * (TORCHELASTIC_USE_AGENT_STORE=True); null otherwise. As torch's env:// rendezvous: each restart
 * of the workers rendezvouses under its own prefix, so the keys of a failed attempt, still in the
 * agent's store, are never read as this attempt's.
 */
export function agentStorePrefix(env: NodeJS.ProcessEnv = process.env): string | null {
  if (env.TORCHELASTIC_USE_AGENT_STORE !== 'True') return null;
  const raw = env.TORCHELASTIC_RESTART_COUNT;
  if (raw === undefined || !/^\d+$/.test(raw)) {
    throw new Error(`initProcessGroup: TORCHELASTIC_USE_AGENT_STORE=True needs TORCHELASTIC_RESTART_COUNT, a non-negative integer, got '${raw ?? ''}'`);
  }
  return `/worker/attempt_${Number(raw)}`;
}

/**
 * dist.init_process_group: joins the default process group. Every value not given is read from
 * the variable `reals launch` (or torchrun, SLURM scripts, Kubernetes operators) sets; rank 0
 * hosts the TCPStore rendezvous at MASTER_ADDR:MASTER_PORT, or under torchrun's agent store
 * (agentStorePrefix) every rank joins the agent's as a client.
 */
export function initProcessGroup(options: InitOptions = {}): void {
  if (current !== null) throw new Error('initProcessGroup: the default process group is already initialized; call destroyProcessGroup() first');
  const backend = options.backend ?? (cuda.isAvailable() ? 'nccl' : 'gloo');
  const timeoutMs = options.timeoutMs ?? defaultTimeoutMs();
  if (!Number.isInteger(timeoutMs) || timeoutMs <= 0) throw new Error(`initProcessGroup: options.timeoutMs must be a positive integer, got ${timeoutMs}`);
  const rendezvousTimeoutMs = options.rendezvousTimeoutMs ?? Math.max(timeoutMs, DEFAULT_TIMEOUT_MS);
  if (!Number.isInteger(rendezvousTimeoutMs) || rendezvousTimeoutMs <= 0) {
    throw new Error(`initProcessGroup: options.rendezvousTimeoutMs must be a positive integer, got ${rendezvousTimeoutMs}`);
  }
  const worldSize = integer(options.worldSize, 'WORLD_SIZE', 'worldSize', 1);
  const rank = integer(options.rank, 'RANK', 'rank', 0, worldSize - 1);
  const localRank = integer(options.localRank, 'LOCAL_RANK', 'localRank', 0, rank);
  const masterAddr = options.masterAddr ?? fromEnv('MASTER_ADDR', 'masterAddr');
  const masterPort = integer(options.masterPort, 'MASTER_PORT', 'masterPort', 1, 65535);
  const prefix = agentStorePrefix();
  let handle: GroupHandle;
  try {
    handle = native.newGroup(backend, masterAddr, masterPort, rank, worldSize, timeoutMs, rendezvousTimeoutMs, prefix === null && rank === 0, prefix ?? '');
  } catch (error) {
    const reason = (error as Error).message.replace(/^initProcessGroup: /, '');
    const where = prefix === null ? `${masterAddr}:${masterPort}` : `torchrun's agent store ${masterAddr}:${masterPort} (keys under ${prefix})`;
    throw new Error(
      `initProcessGroup: rank ${rank} of ${worldSize} could not join the ${backend} group at ${where} ` +
        `(rendezvous timeout ${rendezvousTimeoutMs} ms): ${reason}`,
    );
  }
  current = { handle, backend, rank, worldSize, localRank, timeoutMs };
  followLauncher(rank);
}

/** Set by `reals launch` in each rank's environment: the launcher's process id. */
export const LAUNCHER_PID_ENV = 'REALS_LAUNCHER_PID';

/**
 * A rank started by `reals launch` ends when its launcher does, even by SIGKILL, which the
 * launcher cannot forward: then its peers (on this node and others) see its connections close
 * and fail within seconds instead of waiting out the collective timeout.
 */
function followLauncher(rank: number): void {
  const launcher = Number(process.env[LAUNCHER_PID_ENV]);
  if (!Number.isInteger(launcher) || launcher <= 0 || launcher !== process.ppid) return;
  if (!native.exitWithParent(launcher) && process.ppid !== launcher) {
    throw new Error(`initProcessGroup: rank ${rank}'s launcher (pid ${launcher}) has ended; stopping`);
  }
}

function group(what: string): ProcessGroup {
  if (current === null) throw new Error(`distributed.${what}: the default process group is not initialized; call initProcessGroup() first`);
  return current;
}

export function isInitialized(): boolean { return current !== null; }
export function getBackend(): Backend { return group('getBackend').backend; }
export function getRank(): number { return group('getRank').rank; }
export function getWorldSize(): number { return group('getWorldSize').worldSize; }
/** This process's index on its node (LOCAL_RANK): the CUDA device it should use. */
export function getLocalRank(): number { return group('getLocalRank').localRank; }

/** Runs a native collective, its failure a CollectiveError naming the operation and this rank. */
function collective(g: ProcessGroup, op: string, run: () => void): void {
  try {
    run();
  } catch (error) {
    const reason = (error as Error).message.replace(new RegExp(`^${op}: `), '');
    throw new CollectiveError(op, g.rank, g.worldSize, g.timeoutMs, reason);
  }
}

function checkRank(what: string, rank: number, worldSize: number): void {
  if (!Number.isInteger(rank) || rank < 0 || rank >= worldSize) throw new RangeError(`distributed.${what}: rank ${rank} is not in [0, ${worldSize})`);
}

/**
 * dist.all_reduce: reduces `tensor` across all ranks, in place on every rank. 'avg' (ReduceOp.AVG,
 * which Gloo lacks) is the sum divided by the world size, on every backend.
 */
export function allReduce(tensor: Tensor, op: ReduceOp = 'sum'): void {
  const g = group('allReduce');
  collective(g, 'allReduce', () => native.allReduce(g.handle, [tensor._handle], op === 'avg' ? 'sum' : op));
  if (op === 'avg') tensor.div_(g.worldSize);
}

/** dist.broadcast: copies rank `src`'s `tensor` into `tensor` on every other rank. */
export function broadcast(tensor: Tensor, src: number): void {
  const g = group('broadcast');
  checkRank('broadcast(src)', src, g.worldSize);
  collective(g, 'broadcast', () => native.broadcast(g.handle, [tensor._handle], src));
}

/** dist.all_gather: `outputs[r]` receives rank r's `input` (one output per rank, same shape). */
export function allGather(outputs: Tensor[], input: Tensor): void {
  const g = group('allGather');
  if (outputs.length !== g.worldSize) {
    throw new Error(`distributed.allGather: expected ${g.worldSize} output tensors (one per rank), got ${outputs.length}`);
  }
  collective(g, 'allGather', () => native.allGather(g.handle, outputs.map((t) => t._handle), input._handle));
}

/** dist.barrier: returns once every rank has called it. */
export function barrier(): void {
  const g = group('barrier');
  collective(g, 'barrier', () => native.barrier(g.handle));
}

/** dist.destroy_process_group: leaves the default group; initProcessGroup may be called again. */
export function destroyProcessGroup(): void {
  native.destroyGroup(group('destroyProcessGroup').handle);
  current = null;
}

export interface TCPStoreOptions {
  /** The number of clients the server counts in (with waitForWorkers); default: not counted. */
  worldSize?: number;
  /** Serve the store on `port` (else connect to it); default false. */
  isMaster?: boolean;
  /** How long a connection or a get() waits; default 5 minutes. */
  timeoutMs?: number;
  /** Block until worldSize clients have connected; default true. */
  waitForWorkers?: boolean;
}

/**
 * dist.TCPStore: a key-value store served over TCP by one process, the kind torchrun's agent
 * serves its workers (agentStorePrefix) and every process group rendezvouses through.
 */
export class TCPStore {
  private readonly handle: StoreHandle;

  constructor(readonly hostName: string, readonly port: number, options: TCPStoreOptions = {}) {
    const { worldSize, isMaster = false, timeoutMs = DEFAULT_TIMEOUT_MS, waitForWorkers = true } = options;
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw new RangeError(`TCPStore: port must be an integer in [0, 65535], got ${port}`);
    this.handle = native.newStore(hostName, port, isMaster, worldSize ?? -1, waitForWorkers, timeoutMs);
  }

  set(key: string, value: string): void { native.storeSet(this.handle, key, value); }

  /** The value of `key`, waiting up to the store's timeout for another process to set it. */
  get(key: string): string { return native.storeGet(this.handle, key); }
}
