// The thread governor: a CPU run's threads follow the machine's load. On an idle machine every CPU
// with bounded spinning is the fastest setting; with another process on a core, one thread is
// (bench/README.md, the thread policy: no fixed setting is within 1.2x of the best in both). So
// every GOVERNOR_WINDOW_MS of wall time the governor measures the CPU time the other processes
// used, drops a run to the cores they leave free at once, and gives it its full count back after
// GOVERNOR_QUIET_MS of quiet. It sets libtorch's intra-op threads and OpenBLAS's own pool (where
// float32 matmuls run), only where reals chose the counts.
import { readFileSync } from 'node:fs';
import { cpus, getPriority } from 'node:os';
import { cpuBudget } from './cpu-budget.js';
import { autocastDeviceType, chosenThreads, setRunThreads } from './cuda.js';
import { native } from './native.js';
import type { Device } from './tensor.js';

/** Wall time between two looks at the machine's load. */
export const GOVERNOR_WINDOW_MS = 500;
/** How long the machine must stay quiet before a reduced run takes its full count again. */
export const GOVERNOR_QUIET_MS = 2000;
/** The environment variable that turns the governor off ('0') for runs that need a fixed count. */
export const ADAPTIVE_THREADS_ENV = 'REALS_ADAPTIVE_THREADS';

/** Cumulative CPU times at one moment, in milliseconds. */
export interface LoadSample {
  /** Wall clock. */
  time: number;
  /** Busy time of the whole machine, summed over its CPUs (user, sys, irq; nice too where nicedTimeIsLoad). */
  machineBusy: number;
  /** This process's CPU time, all its threads. */
  ownBusy: number;
}

export interface GovernorState {
  /** Where the current window starts. */
  since: LoadSample;
  /** The cores the run may use while other processes take the rest; undefined on a quiet machine. */
  limit?: number;
  /** While limited: when the quiet windows in a row began. */
  quietSince?: number;
}

/**
 * The governor's decision, from the window since `state.since` to `sample` (none before
 * GOVERNOR_WINDOW_MS have passed): the other processes' CPU time over the wall time is the cores
 * they use, and the cores they leave free (rounded, so that half a core of theirs leaves a core
 * free) below what the run wants (`want`: its full thread count) limit it to those at once. A limit
 * only falls while the machine stays busy, and goes once it has been quiet for GOVERNOR_QUIET_MS.
 */
export function nextGovernorState(state: GovernorState, sample: LoadSample, machine: { cpus: number; want: number }): GovernorState {
  const wall = sample.time - state.since.time;
  if (wall < GOVERNOR_WINDOW_MS) return state;
  const others = (sample.machineBusy - state.since.machineBusy - (sample.ownBusy - state.since.ownBusy)) / wall;
  const free = Math.max(1, Math.floor(machine.cpus - others + 0.5));
  if (free < machine.want) return { since: sample, limit: Math.min(free, state.limit ?? free) };
  if (state.limit === undefined) return { since: sample };
  const quietSince = state.quietSince ?? state.since.time;
  return sample.time - quietSince >= GOVERNOR_QUIET_MS ? { since: sample } : { since: sample, limit: state.limit, quietSince };
}

/** What the governor reads and sets: the real ones below, fakes in tests. */
export interface GovernorIo {
  now(): number;
  sample(): LoadSample;
  /** The CPUs machineBusy sums over. */
  cpus: number;
  /** Sets libtorch's intra-op threads. */
  setIntraOp(n: number): void;
  /** OpenBLAS's own pool where the governor may set it: its full count (as it loaded, within cpuBudget), and the setter. */
  openblas?: { full: number; set(n: number): void };
}

export interface Governor {
  /** A run starts with `intraOp` threads as its full count: sets them, less the limit in force. */
  start(intraOp: number): void;
  /** Once a window has passed: samples the load and sets the counts where the limit changed. */
  tick(): void;
  /** Governing ends: OpenBLAS's pool gets its count back; libtorch's threads are the caller's. */
  stop(): void;
  /**
   * The clock stops while the run waits on another process's work (the reference sides of
   * `npm run bench`): the CPU time the machine spends until resume() is no load the run meets.
   */
  pause(): void;
  /** The clock goes on: the window in progress continues as though the pause had not been. */
  resume(): void;
  /** The cores the run may use now, undefined while the machine is quiet. */
  limit(): number | undefined;
}

export function createGovernor(io: GovernorIo): Governor {
  let run: number | undefined;
  let state: GovernorState | undefined;
  let openblasNow = io.openblas?.full;
  let pausedAt: LoadSample | undefined;
  const setOpenblas = (n: number): void => {
    if (io.openblas === undefined || openblasNow === n) return;
    io.openblas.set(n);
    openblasNow = n;
  };
  const apply = (intraOp: number): void => {
    const limit = state?.limit ?? Infinity;
    if (io.openblas !== undefined) setOpenblas(Math.min(io.openblas.full, limit));
    io.setIntraOp(Math.min(intraOp, limit));
  };
  return {
    start(intraOp) {
      run = intraOp;
      state ??= { since: io.sample() };
      apply(intraOp);
    },
    tick() {
      if (run === undefined || state === undefined || pausedAt !== undefined || io.now() - state.since.time < GOVERNOR_WINDOW_MS) return;
      const previous = state.limit;
      state = nextGovernorState(state, io.sample(), { cpus: io.cpus, want: Math.max(run, io.openblas?.full ?? 1) });
      if (state.limit !== previous) apply(run);
    },
    stop() {
      run = undefined;
      if (io.openblas !== undefined) setOpenblas(io.openblas.full);
    },
    pause() {
      pausedAt ??= io.sample();
    },
    resume() {
      if (pausedAt === undefined) return;
      const now = io.sample();
      // A window that began before the pause moves later by the pause's wall and CPU times.
      if (state !== undefined && state.since.time <= pausedAt.time) {
        const { since, quietSince } = state;
        const wall = now.time - pausedAt.time;
        state = {
          ...state,
          since: { time: since.time + wall, machineBusy: since.machineBusy + now.machineBusy - pausedAt.machineBusy, ownBusy: since.ownBusy + now.ownBusy - pausedAt.ownBusy },
          ...(quietSince === undefined ? {} : { quietSince: quietSince + wall }),
        };
      }
      pausedAt = undefined;
    },
    limit: () => state?.limit,
  };
}

/**
 * Whether the kernel schedules each session as a group (CONFIG_SCHED_AUTOGROUP, on by default in
 * many desktop kernels): groups then share the CPUs as equals, and a process's nice weighs only
 * against the processes of its own session.
 */
const autogroups = (() => {
  try {
    return readFileSync('/proc/sys/kernel/sched_autogroup_enabled', 'utf8').trim() === '1';
  } catch {
    return false;
  }
})();

/**
 * Whether other processes' niced CPU time is load to a run of priority `priority`. A niced process
 * (a background study, a build under nice 10) gets about a tenth of a core against one of normal
 * priority, so it is load only to a niced run; but where the kernel groups sessions (`autogroups`)
 * one started from another terminal or under setsid takes its group's full share, nice or not.
 */
export function nicedTimeIsLoad(priority: number, autogroups: boolean): boolean {
  return priority > 0 || autogroups;
}

/** What the governor does with niced processes, and why, for `reals env`. */
function niceRule(): string {
  if (getPriority() > 0) return 'count as load (this process is niced too)';
  return autogroups ? 'count as load (the kernel schedules each session as a group, so nice yields only within one)' : 'do not count: they yield to this one';
}

function sampleLoad(): LoadSample {
  const countNice = nicedTimeIsLoad(getPriority(), autogroups);
  let machineBusy = 0;
  for (const { times } of cpus()) machineBusy += times.user + (countNice ? times.nice : 0) + times.sys + times.irq;
  const own = process.cpuUsage();
  return { time: performance.now(), machineBusy, ownBusy: (own.user + own.system) / 1000 };
}

const machineCpus = cpus().length;
/** OpenBLAS's pool when it loaded (read once, as OpenBLAS does), unless the user sized it. */
const openblasAtLoad = native.openblasThreads();
const openblasChosen = ['OPENBLAS_NUM_THREADS', 'GOTO_NUM_THREADS'].find((name) => (process.env[name] ?? '') !== '');
/** OpenBLAS counted the CPUs, not the control group's quota: where reals sizes the pool, no more than cpuBudget. */
const openblasFull = openblasAtLoad === null ? null : Math.min(openblasAtLoad, cpuBudget.cpus);
if (openblasFull !== null && openblasFull !== openblasAtLoad && openblasChosen === undefined && chosenThreads() === undefined) {
  native.setOpenblasThreads(openblasFull);
}

const governor = createGovernor({
  now: () => performance.now(),
  sample: sampleLoad,
  cpus: machineCpus,
  setIntraOp: setRunThreads,
  openblas: openblasFull === null || openblasChosen !== undefined ? undefined : { full: openblasFull, set: (n) => native.setOpenblasThreads(n) },
});

/** Why the governor leaves a run on `device` (any CPU run when omitted) alone, or undefined where it governs it. */
function governorOff(device?: Device): string | undefined {
  const setting = process.env[ADAPTIVE_THREADS_ENV] ?? '';
  if (setting !== '' && setting !== '0' && setting !== '1') throw new Error(`${ADAPTIVE_THREADS_ENV}: expected 0 (off) or 1 (on), got '${setting}'`);
  if (setting === '0') return `${ADAPTIVE_THREADS_ENV}=0`;
  if (chosenThreads() !== undefined) return 'the thread count was chosen (OMP_NUM_THREADS, MKL_NUM_THREADS, torch.setNumThreads or --threads)';
  if (machineCpus < 2) return 'fewer than 2 CPUs';
  if (device !== undefined && autocastDeviceType(device) === 'cuda') return 'a CUDA run';
  return undefined;
}

/**
 * Sets a run's intra-op threads (usePrecision): `intraOp` where the governor is off, else `intraOp`
 * less the governor's limit in force, and from then on as the load goes (adaptThreads).
 */
export function setGovernedThreads(intraOp: number, device: Device): void {
  if (governorOff(device) === undefined) {
    governor.start(intraOp);
    return;
  }
  governor.stop();
  setRunThreads(intraOp);
}

/**
 * The governor's clock: long loops call it often (the progress bars every step, the samplers'
 * loops every step); it returns at once unless a window has passed and a run is governed.
 */
export function adaptThreads(): void {
  // A count chosen after the run started (torch.setNumThreads) ends governing.
  if (chosenThreads() !== undefined) governor.stop();
  else governor.tick();
}

/**
 * Runs `work`, which another process does while this one waits (the reference sides of
 * `npm run bench`), with the governor's clock stopped: that process's CPU time is no load of the run's.
 */
export async function governorPaused<T>(work: () => Promise<T>): Promise<T> {
  governor.pause();
  try {
    return await work();
  } finally {
    governor.resume();
  }
}

/** What `reals env` prints: whether CPU runs' threads adapt to the load, and why (not). */
export function threadGovernor(): { adaptive: boolean; why: string; openblas: string; limit?: number } {
  const off = governorOff();
  const openblas = openblasAtLoad === null ? 'not governed: the BLAS has no OpenBLAS thread pool of its own'
    : openblasChosen !== undefined ? `not governed: ${openblasChosen} is set`
    : `governed with the intra-op threads (${openblasAtLoad} at load${openblasFull === openblasAtLoad ? '' : `, ${openblasFull} within the CPU quota`})`;
  if (off !== undefined) return { adaptive: false, why: off, openblas: `not governed: ${off}` };
  return {
    adaptive: true,
    why: `reals chose the threads: every ${GOVERNOR_WINDOW_MS} ms a CPU run takes the cores other processes leave free, ` +
      `and its full count after ${GOVERNOR_QUIET_MS / 1000} s of quiet (${ADAPTIVE_THREADS_ENV}=0 turns it off); ` +
      `niced processes ${niceRule()}`,
    openblas,
    limit: governor.limit(),
  };
}
