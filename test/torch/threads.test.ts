import test from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { cpus, getPriority } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as torch from '../../src/torch/index.js';
import {
  createGovernor, GOVERNOR_QUIET_MS, GOVERNOR_WINDOW_MS, nextGovernorState, nicedTimeIsLoad, type GovernorIo, type GovernorState, type LoadSample,
} from '../../src/torch/threads.js';

const here = dirname(fileURLToPath(import.meta.url));
const REALS = join(here, '../../bin/reals.js');

/** The limits the governor decides over windows of GOVERNOR_WINDOW_MS, the other processes using `others[i]` cores in window i. */
function limits(others: readonly number[], machine = { cpus: 2, want: 2 }): (number | undefined)[] {
  let sample: LoadSample = { time: 0, machineBusy: 0, ownBusy: 0 };
  let state: GovernorState = { since: sample };
  return others.map((cores) => {
    const ms = GOVERNOR_WINDOW_MS;
    // This process uses one core throughout.
    sample = { time: sample.time + ms, machineBusy: sample.machineBusy + (1 + cores) * ms, ownBusy: sample.ownBusy + ms };
    state = nextGovernorState(state, sample, machine);
    return state.limit;
  });
}

test('the governor: full count while idle, one thread from the first busy window, the full count again after GOVERNOR_QUIET_MS of quiet', () => {
  assert.equal(GOVERNOR_QUIET_MS, 4 * GOVERNOR_WINDOW_MS, 'the windows below');
  const _ = undefined;
  assert.deepEqual(limits([0, 0.1, 1, 0, 0, 0, 0, 0]), [_, _, 1, 1, 1, 1, _, _]);
  // More than half a core of other work is busy; half a core is not.
  assert.deepEqual(limits([0.5, 0.6]), [_, 1]);
  // A busy window while quiet starts the quiet time again.
  assert.deepEqual(limits([1, 0, 0, 0.9, 0, 0, 0, 0]), [1, 1, 1, 1, 1, 1, 1, _]);
  // On 8 CPUs: the cores the others leave free; the limit only falls while they stay busy.
  assert.deepEqual(limits([2.2, 0.3, 5, 2.2, 0.2, 0.2, 0.2, 0.2], { cpus: 8, want: 8 }), [6, 6, 3, 3, 3, 3, 3, _]);
  // A run that wants one thread has nothing to give up.
  assert.deepEqual(limits([1, 1], { cpus: 2, want: 1 }), [_, _]);
  // No decision before a window has passed.
  const state: GovernorState = { since: { time: 0, machineBusy: 0, ownBusy: 0 } };
  assert.equal(nextGovernorState(state, { time: GOVERNOR_WINDOW_MS - 1, machineBusy: 2000, ownBusy: 0 }, { cpus: 2, want: 2 }), state);
});

/** A governor on a fake clock and fake CPU times, recording what it sets. */
function fakeGovernor(openblas: boolean): { governor: ReturnType<typeof createGovernor>; calls: string[]; pass(ms: number, others: number): void } {
  const calls: string[] = [];
  let time = 0;
  let machineBusy = 0;
  let ownBusy = 0;
  const io: GovernorIo = {
    now: () => time,
    sample: () => ({ time, machineBusy, ownBusy }),
    cpus: 2,
    setIntraOp: (n) => calls.push(`intraOp ${n}`),
    openblas: openblas ? { full: 2, set: (n) => calls.push(`openblas ${n}`) } : undefined,
  };
  return {
    governor: createGovernor(io),
    calls,
    pass(ms, others) {
      time += ms;
      ownBusy += ms;
      machineBusy += (1 + others) * ms;
    },
  };
}

test('the governor sets libtorch\'s threads and OpenBLAS\'s pool as the limit changes, and a new run starts under the limit in force', () => {
  const { governor, calls, pass } = fakeGovernor(true);
  governor.start(2);
  assert.deepEqual(calls.splice(0), ['intraOp 2']);
  pass(GOVERNOR_WINDOW_MS - 100, 1);
  governor.tick();
  assert.deepEqual(calls.splice(0), [], 'no look before a window has passed');
  pass(200, 1);
  governor.tick();
  assert.deepEqual(calls.splice(0), ['openblas 1', 'intraOp 1']);
  assert.equal(governor.limit(), 1);
  governor.start(2);
  assert.deepEqual(calls.splice(0), ['intraOp 1'], 'the next run (sampling after training) starts limited');
  pass(GOVERNOR_QUIET_MS / 2, 0);
  governor.tick();
  assert.deepEqual(calls.splice(0), []);
  pass(GOVERNOR_QUIET_MS / 2, 0);
  governor.tick();
  assert.deepEqual(calls.splice(0), ['openblas 2', 'intraOp 2']);
  assert.equal(governor.limit(), undefined);
});

test('the governor: a float32 run (one intra-op thread) gives up OpenBLAS\'s pool; without one it has nothing to give up; stop() gives the pool back', () => {
  const fp32 = fakeGovernor(true);
  fp32.governor.start(1);
  fp32.pass(GOVERNOR_WINDOW_MS, 1);
  fp32.governor.tick();
  assert.deepEqual(fp32.calls.splice(0), ['intraOp 1', 'openblas 1', 'intraOp 1']);
  fp32.governor.stop();
  assert.deepEqual(fp32.calls.splice(0), ['openblas 2'], 'libtorch\'s threads are left to the caller');
  fp32.pass(GOVERNOR_WINDOW_MS, 1);
  fp32.governor.tick();
  assert.deepEqual(fp32.calls, [], 'stopped: no more looks');

  const otherBlas = fakeGovernor(false);
  otherBlas.governor.start(1);
  otherBlas.pass(GOVERNOR_WINDOW_MS, 1);
  otherBlas.governor.tick();
  assert.deepEqual(otherBlas.calls, ['intraOp 1']);
  assert.equal(otherBlas.governor.limit(), undefined);
});

test('the governor: what the machine does while paused (a bench\'s reference side) is no load; the window goes on after resume()', () => {
  const { governor, calls, pass } = fakeGovernor(true);
  governor.start(2);
  calls.splice(0);
  pass(GOVERNOR_WINDOW_MS - 100, 0);
  governor.pause();
  // Another process takes a core meanwhile: without the pause, that window would be busy.
  pass(GOVERNOR_WINDOW_MS, 1);
  governor.tick();
  governor.resume();
  assert.deepEqual(calls.splice(0), [], 'no look while paused');
  pass(100, 0);
  governor.tick();
  assert.deepEqual(calls.splice(0), [], 'a quiet window of run time: the full count stays');
  assert.equal(governor.limit(), undefined);
  pass(GOVERNOR_WINDOW_MS, 1);
  governor.tick();
  assert.equal(governor.limit(), 1, 'load while the run runs still counts');
  // A pause does not count as quiet time either.
  governor.pause();
  pass(GOVERNOR_QUIET_MS, 0);
  governor.resume();
  pass(GOVERNOR_QUIET_MS / 2, 0);
  governor.tick();
  assert.equal(governor.limit(), 1);
  pass(GOVERNOR_QUIET_MS / 2, 0);
  governor.tick();
  assert.equal(governor.limit(), undefined);
});

test('the addon finds OpenBLAS\'s own thread pool where libtorch\'s BLAS is its pthread build, and sets it', (t) => {
  if (!existsSync('/proc/self/maps')) return t.skip('no /proc/self/maps to see which BLAS is loaded');
  const pthreadBuild = /openblas-pthread\/|libopenblasp-/.test(readFileSync('/proc/self/maps', 'utf8'));
  const atLoad = torch.native.openblasThreads();
  assert.equal(atLoad !== null, pthreadBuild, `OpenBLAS pool ${atLoad}, pthread build loaded: ${pthreadBuild}`);
  if (atLoad === null) {
    assert.throws(() => torch.native.setOpenblasThreads(1), /setOpenblasThreads: the loaded BLAS has no OpenBLAS thread pool of its own/);
    return;
  }
  const a = torch.randn([300, 300]);
  const expected = a.matmul(a);
  try {
    torch.native.setOpenblasThreads(1);
    assert.equal(torch.native.openblasThreads(), 1);
    // Another thread count may split the sums differently (OpenBLAS's Haswell kernels do): the
    // float32 error bound of 300-term dot products, 2 * 300 * 2^-24 * (|a| |a|).
    const bound = a.abs().matmul(a.abs()).mul(2 * 300 * 2 ** -24);
    assert.ok(a.matmul(a).sub(expected).abs().sub(bound).max().item() <= 0, 'float32 matmuls still run (in OpenBLAS, on one thread)');
    assert.throws(() => torch.native.setOpenblasThreads(0), /setOpenblasThreads: expected a positive count, got 0/);
  } finally {
    torch.native.setOpenblasThreads(atLoad);
  }
  assert.equal(torch.native.openblasThreads(), atLoad);
});

/** The environment of a fresh process with none of the thread and wait variables, plus `env`. */
function cleanEnv(env: Record<string, string>): NodeJS.ProcessEnv {
  const names = ['OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OMP_WAIT_POLICY', 'GOMP_SPINCOUNT', 'REALS_DEFAULT_WAIT_POLICY', 'REALS_ADAPTIVE_THREADS', 'OPENBLAS_NUM_THREADS', 'GOTO_NUM_THREADS'];
  return { ...Object.fromEntries(Object.entries(process.env).filter(([name]) => !names.includes(name))), ...env };
}

interface EnvOutput {
  openblasCore: string | null;
  cpuKernels: ReturnType<typeof torch.cpuKernels>;
  cpus: typeof torch.cpuBudget;
  waitPolicy: { value: string; source: string };
  adaptiveThreads: { adaptive: boolean; why: string; openblas: string };
}

function realsEnv(env: Record<string, string>): EnvOutput {
  const { status, stdout, stderr } = spawnSync(process.execPath, [REALS, 'env'], { encoding: 'utf8', env: cleanEnv(env), timeout: 120_000 });
  assert.equal(status, 0, stderr);
  return JSON.parse(stdout) as EnvOutput;
}

test('reals env prints the wait policy in force and whether the threads adapt to the load, and why', () => {
  const multiCpu = cpus().length >= 2;
  const openblas = torch.native.openblasThreads();
  const fresh = realsEnv({});
  assert.deepEqual(fresh.waitPolicy, { value: 'spin 20000', source: 'reals default' });
  // The addon's kernels as this process sees them; where the CPU has AVX-512 the adaLN ones take a float32 [N, T, D].
  assert.deepEqual(fresh.cpuKernels, torch.cpuKernels());
  // The CPUs a run may use, as this process reads them (test/torch/cpu-budget.test.ts runs one under a quota).
  assert.deepEqual(fresh.cpus, torch.cpuBudget);
  const x = torch.zeros([1, 2, 16]);
  assert.equal(torch.native.gatedResidual(x._handle, torch.zeros([1, 16])._handle, x._handle) !== null, fresh.cpuKernels.adaLN);
  assert.equal(fresh.adaptiveThreads.adaptive, multiCpu);
  if (multiCpu) {
    assert.match(fresh.adaptiveThreads.why, /^reals chose the threads: every 500 ms .* after 2 s of quiet \(REALS_ADAPTIVE_THREADS=0 turns it off\); niced processes /);
    const expected = getPriority() > 0 ? 'niced processes count as load (this process is niced too)'
      : kernelGroupsSessions() ? 'niced processes count as load (the kernel schedules each session as a group, so nice yields only within one)'
      : 'niced processes do not count: they yield to this one';
    assert.ok(fresh.adaptiveThreads.why.endsWith(expected), fresh.adaptiveThreads.why);
  }
  if (multiCpu && openblas !== null) assert.equal(fresh.adaptiveThreads.openblas, `governed with the intra-op threads (${openblas} at load)`);

  assert.deepEqual(realsEnv({ OMP_WAIT_POLICY: 'passive' }).waitPolicy, { value: 'PASSIVE', source: 'OMP_WAIT_POLICY' });
  assert.deepEqual(realsEnv({ GOMP_SPINCOUNT: '1000' }).waitPolicy, { value: 'spin 1000', source: 'GOMP_SPINCOUNT' });
  assert.deepEqual(realsEnv({ REALS_ADAPTIVE_THREADS: '0' }).adaptiveThreads,
    { adaptive: false, why: 'REALS_ADAPTIVE_THREADS=0', openblas: 'not governed: REALS_ADAPTIVE_THREADS=0' });
  const pinned = realsEnv({ OMP_NUM_THREADS: '2' }).adaptiveThreads;
  assert.equal(pinned.adaptive, false);
  assert.match(pinned.why, /^the thread count was chosen \(OMP_NUM_THREADS/);
  if (multiCpu && openblas !== null) assert.equal(realsEnv({ OPENBLAS_NUM_THREADS: '1' }).adaptiveThreads.openblas, 'not governed: OPENBLAS_NUM_THREADS is set');

  const bad = spawnSync(process.execPath, [REALS, 'env'], { encoding: 'utf8', env: cleanEnv({ REALS_ADAPTIVE_THREADS: 'yes' }), timeout: 120_000 });
  assert.notEqual(bad.status, 0);
  assert.match(bad.stderr, /REALS_ADAPTIVE_THREADS: expected 0 \(off\) or 1 \(on\), got 'yes'/);
});

test('reals env names the kernel set OpenBLAS picked for this CPU, and OPENBLAS_CORETYPE forces another', (t) => {
  if (!existsSync('/proc/self/maps')) return t.skip('no /proc/self/maps to see which BLAS is loaded');
  if (!/openblas/i.test(readFileSync('/proc/self/maps', 'utf8'))) {
    assert.equal(torch.openblasCoreName(), null);
    return;
  }
  const own = torch.openblasCoreName();
  assert.match(own ?? '', /^[A-Za-z0-9]+$/);
  if (process.env.OPENBLAS_CORETYPE === undefined) assert.equal(realsEnv({}).openblasCore, own);
  // Naming a kernel set runs none of its code, so these hold on a CPU without AVX-512 too.
  assert.equal(realsEnv({ OPENBLAS_CORETYPE: 'Haswell' }).openblasCore, 'Haswell');
  assert.equal(realsEnv({ OPENBLAS_CORETYPE: 'SkylakeX' }).openblasCore, 'SkylakeX');
});

interface GovernedRun { full: number; fewest: number; openblas: number | null; fewestOpenblas: number | null }

/** test/torch/governor.child.ts in a fresh process with `env`, while `load` busy loops run. */
async function governedRun(env: Record<string, string>): Promise<GovernedRun> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(here, 'governor.child.ts')], { env: cleanEnv({ REALS_TEST_GOVERN_MS: '2500', ...env }) });
  let out = '';
  let err = '';
  child.stdout.on('data', (chunk: Buffer) => { out += chunk.toString(); });
  child.stderr.on('data', (chunk: Buffer) => { err += chunk.toString(); });
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  assert.equal(code, 0, err);
  return JSON.parse(out) as GovernedRun;
}

test('next to a busy loop, a run whose threads reals chose drops to one (and OpenBLAS\'s pool too); a chosen count or REALS_ADAPTIVE_THREADS=0 stays', async (t) => {
  if (torch.cpuBudget.cpus < 2 || cpus().length < 2) return t.skip('one usable CPU: nothing to adapt');
  const loop = spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' });
  try {
    const governed = await governedRun({});
    assert.equal(governed.full, torch.cpuBudget.cpus);
    assert.equal(governed.fewest, 1, 'one thread while the loop runs');
    if (governed.openblas !== null) assert.equal(governed.fewestOpenblas, 1);
    const fixedCounts: Record<string, string>[] = [{ REALS_ADAPTIVE_THREADS: '0' }, { OMP_NUM_THREADS: String(torch.cpuBudget.cpus) }];
    for (const env of fixedCounts) {
      const fixed = await governedRun(env);
      assert.equal(fixed.fewest, fixed.full, JSON.stringify(env));
      assert.equal(fixed.fewestOpenblas, fixed.openblas, JSON.stringify(env));
    }
  } finally {
    loop.kill();
  }
});

/** Whether the kernel schedules each session as a group (CONFIG_SCHED_AUTOGROUP, switched on). */
function kernelGroupsSessions(): boolean {
  try {
    return readFileSync('/proc/sys/kernel/sched_autogroup_enabled', 'utf8').trim() === '1';
  } catch {
    return false;
  }
}

test('niced processes are load to a niced run, and to any run where the kernel schedules each session as a group', () => {
  assert.equal(nicedTimeIsLoad(0, false), false);
  assert.equal(nicedTimeIsLoad(10, false), true);
  assert.equal(nicedTimeIsLoad(0, true), true);
  assert.equal(nicedTimeIsLoad(10, true), true);
});

test('a busy loop under nice 10 in a session of its own: the run drops to one thread where sessions are scheduled as groups, and keeps its count where nice yields', async (t) => {
  if (torch.cpuBudget.cpus < 2 || cpus().length < 2) return t.skip('one usable CPU: nothing to adapt');
  const autogroups = kernelGroupsSessions();
  // detached: setsid, so the loop is a session (and, with autogroups, a scheduling group) of its own.
  const loop = spawn('nice', ['-n', '10', process.execPath, '-e', 'for (;;) {}'], { stdio: 'ignore', detached: true });
  try {
    const governed = await governedRun({});
    assert.equal(governed.fewest, autogroups ? 1 : governed.full, `autogroups ${autogroups}: ${JSON.stringify(governed)}`);
  } finally {
    loop.kill();
  }
});
