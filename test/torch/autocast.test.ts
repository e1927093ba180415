import test from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as torch from '../../src/torch/index.js';
import * as F from '../../src/torch/functional.js';

const cpuState = (): [boolean, number] => [torch.native.isAutocastEnabled('cpu'), torch.native.autocastDtype('cpu')];
const cudaState = (): [boolean, number] => [torch.native.isAutocastEnabled('cuda'), torch.native.autocastDtype('cuda')];

test('autocast on the CPU sets the CPU state only, and restores it nested and on throw', () => {
  const [cpuOutside, cudaOutside] = [cpuState(), cudaState()];
  torch.autocast(() => {
    assert.deepEqual(cpuState(), [true, 15], 'bfloat16 by default');
    assert.deepEqual(cudaState(), cudaOutside, 'CUDA autocast untouched');
    torch.autocast(() => assert.equal(cpuState()[0], false), { device: 'cpu', enabled: false });
    assert.deepEqual(cpuState(), [true, 15]);
    assert.throws(() => torch.autocast(() => { throw new Error('boom'); }, { device: 'cpu' }), /boom/);
    assert.deepEqual(cpuState(), [true, 15], 'restored after an exception');
    // libtorch 1.13 refuses float16 on the CPU (2.x runs it): either way the state is the outer one after.
    try {
      torch.autocast(() => 0, { device: 'cpu', dtype: 'float16' });
    } catch (error) {
      assert.match((error as Error).message, /enterAutocast: .*Bfloat16/);
    }
    assert.deepEqual(cpuState(), [true, 15], 'unchanged by a refused dtype');
  }, { device: 'cpu' });
  assert.deepEqual(cpuState(), cpuOutside);
  assert.throws(() => torch.autocast(() => 0, { device: 'mps' }), /cpu, cuda or cuda:N, got 'mps'/);
});

test('CPU autocast runs matmul, linear and conv in bfloat16 and keeps reductions, norms and elementwise ops float32', () => {
  torch.manualSeed(0);
  const a = torch.randn([8, 16]);
  const w = torch.randn([4, 16]);
  const image = torch.randn([1, 3, 8, 8]);
  const kernel = torch.randn([2, 3, 3, 3]);
  const out = torch.autocast(() => ({
    matmul: a.matmul(w.t()), linear: F.linear(a, w), conv: F.conv2d(image, kernel),
    sum: a.sum(), layerNorm: F.layerNorm(a, [16]), add: a.add(a), softmax: F.softmax(a, -1),
  }), { device: 'cpu' });
  assert.equal(out.matmul.dtype, 'bfloat16');
  assert.equal(out.linear.dtype, 'bfloat16');
  assert.equal(out.conv.dtype, 'bfloat16');
  for (const name of ['sum', 'layerNorm', 'add', 'softmax'] as const) assert.equal(out[name].dtype, 'float32', name);
  // bfloat16 keeps 8 significant bits: the product of rounded inputs is within a few 2^-8 of float32's.
  const exact = a.matmul(w.t());
  const relative = out.matmul.float().sub(exact).abs().max().item() / exact.abs().max().item();
  assert.ok(relative > 0 && relative < 0.02, `relative error ${relative}`);
  assert.equal(torch.autocast(() => a.matmul(w.t()), { device: 'cpu', enabled: false }).dtype, 'float32');
});

test('under CPU autocast a float32 weight gets its gradient in float32, computed through the bfloat16 copies', () => {
  torch.manualSeed(1);
  const w = torch.randn([4, 16], { requiresGrad: true });
  const x = torch.randn([2, 16]);
  torch.autocast(() => F.linear(x, w).float().sum(), { device: 'cpu' }).backward();
  assert.equal(w.grad!.dtype, 'float32');
  // d sum(x w^T) / dw = 1^T x, with x rounded to bfloat16 on the way in (and the sum of two rows rounded on the way out).
  const expected = torch.ones([4, 2]).matmul(x.bfloat16().float());
  assert.ok(w.grad!.sub(expected).abs().max().item() <= expected.abs().max().item() * 2 ** -8);
});

test('resolvePrecision: auto is bf16 on CUDA and on CPUs with bfloat16 units, fp32 on others; fp32 and bf16 stay', () => {
  assert.equal(torch.resolvePrecision('auto', 'cuda'), 'bf16');
  assert.equal(torch.resolvePrecision('auto', 'cuda:1'), 'bf16');
  assert.equal(torch.resolvePrecision('auto', 'cpu'), torch.cpuHasBf16() ? 'bf16' : 'fp32');
  assert.equal(torch.resolvePrecision('fp32', 'cuda'), 'fp32');
  assert.equal(torch.resolvePrecision('bf16', 'cpu'), 'bf16');
  assert.throws(() => torch.resolvePrecision('fp16' as torch.Precision, 'cpu'), /precision must be one of fp32, bf16, auto, got 'fp16'/);
});

/** The thread counts test/torch/run-threads.child.ts sees in a fresh process with `env`. */
function childThreads(env: Record<string, string>): Record<string, number> {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([name]) => name !== 'OMP_NUM_THREADS' && name !== 'MKL_NUM_THREADS'));
  const child = join(dirname(fileURLToPath(import.meta.url)), 'run-threads.child.ts');
  const { status, stdout, stderr } = spawnSync(process.execPath, ['--import', 'tsx', child], { encoding: 'utf8', env: { ...clean, ...env }, timeout: 60_000 });
  assert.equal(status, 0, stderr);
  return JSON.parse(stdout) as Record<string, number>;
}

test('usePrecision: a CPU run in bf16 takes every CPU it may use, fp32 and CUDA runs libtorch\'s default within them; a count the caller chose stays', () => {
  const cpus = torch.cpuBudget.cpus;
  assert.ok(cpus >= 1 && cpus <= availableParallelism(), `${cpus} of ${availableParallelism()}`);
  const fresh = childThreads({});
  const libtorchDefault = Math.min(fresh.atLoad ?? NaN, cpus);
  assert.deepEqual(fresh, {
    atLoad: fresh.atLoad, bf16Cpu: cpus, fp32Cpu: libtorchDefault, bf16Cuda: libtorchDefault, bf16AfterSetNumThreads1: 1, runThreadsBf16AfterSetNumThreads1: 1,
  });
  assert.equal(torch.runThreads('bf16', 'cpu'), cpus);
  assert.equal(torch.runThreads('bf16', 'cuda'), torch.runThreads('fp32', 'cpu'));
  // OMP_NUM_THREADS is the caller's choice, as for PyTorch: libtorch reads it and the runs keep it.
  const pinned = childThreads({ OMP_NUM_THREADS: '1' });
  assert.deepEqual(pinned, { atLoad: 1, bf16Cpu: 1, fp32Cpu: 1, bf16Cuda: 1, bf16AfterSetNumThreads1: 1, runThreadsBf16AfterSetNumThreads1: 1 });
  if (cpus > 1) assert.equal(childThreads({ MKL_NUM_THREADS: '1' }).bf16Cpu, 1);
});

/** What test/torch/wait-policy.child.ts sees in a fresh process with `env` (the wait variables cleared first). */
function childWaitPolicy(env: Record<string, string>): {
  waitPolicy: { value: string; source: string }; env: Record<'OMP_WAIT_POLICY' | 'GOMP_SPINCOUNT', string | null>; spinMsPerRegion: number;
} {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([name]) => !['OMP_WAIT_POLICY', 'GOMP_SPINCOUNT', 'REALS_DEFAULT_WAIT_POLICY'].includes(name)));
  const child = join(dirname(fileURLToPath(import.meta.url)), 'wait-policy.child.ts');
  const { status, stdout, stderr } = spawnSync(process.execPath, ['--import', 'tsx', child], { encoding: 'utf8', env: { ...clean, ...env }, timeout: 60_000 });
  assert.equal(status, 0, stderr);
  return JSON.parse(stdout);
}

test('OpenMP threads spin a bounded 20,000 turns by default (set before libtorch loads); a policy the user exported stays', () => {
  const fresh = childWaitPolicy({});
  assert.deepEqual(fresh.waitPolicy, { value: 'spin 20000', source: 'reals default' });
  assert.deepEqual(fresh.env, { OMP_WAIT_POLICY: null, GOMP_SPINCOUNT: '20000' }, 'child processes (ranks) inherit it');
  const active = childWaitPolicy({ OMP_WAIT_POLICY: 'active' });
  assert.deepEqual(active.waitPolicy, { value: 'ACTIVE', source: 'OMP_WAIT_POLICY' });
  assert.deepEqual(childWaitPolicy({ OMP_WAIT_POLICY: 'passive' }).env, { OMP_WAIT_POLICY: 'passive', GOMP_SPINCOUNT: null });
  // libgomp's own default spin, exported by the user.
  const libgompDefault = childWaitPolicy({ GOMP_SPINCOUNT: '300000' });
  assert.deepEqual(libgompDefault.waitPolicy, { value: 'spin 300000', source: 'GOMP_SPINCOUNT' });
  assert.deepEqual(childWaitPolicy({ GOMP_SPINCOUNT: '20000', REALS_DEFAULT_WAIT_POLICY: '1' }).waitPolicy, { value: 'spin 20000', source: 'reals default' });
  // The marker beside a value that is not reals' own: the variable is the user's.
  assert.deepEqual(childWaitPolicy({ OMP_WAIT_POLICY: 'PASSIVE', REALS_DEFAULT_WAIT_POLICY: '1' }).waitPolicy, { value: 'PASSIVE', source: 'OMP_WAIT_POLICY' });
  // libgomp really read it: after each parallel region the second thread spins through less of the
  // main thread's 30 ms pause (measured on 2 vCPUs: 2.6 ms of CPU per region at libgomp's default,
  // 20 active; the region's own work is in every figure).
  if (availableParallelism() > 1) {
    assert.ok(active.spinMsPerRegion > 4 * fresh.spinMsPerRegion, `spinning ${active.spinMsPerRegion} ms active vs ${fresh.spinMsPerRegion} ms bounded per region`);
    assert.ok(libgompDefault.spinMsPerRegion > 2 * fresh.spinMsPerRegion, `spinning ${libgompDefault.spinMsPerRegion} ms at libgomp's default vs ${fresh.spinMsPerRegion} ms bounded per region`);
  }
});

test('cpuHasBf16 reads the amx_bf16 and avx512_bf16 flags of /proc/cpuinfo', async () => {
  const { readFileSync, existsSync } = await import('node:fs');
  const flags = existsSync('/proc/cpuinfo') ? /^flags\s*:(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.split(/\s+/) ?? [] : [];
  assert.equal(torch.cpuHasBf16(), flags.includes('amx_bf16') || flags.includes('avx512_bf16'));
});

test('cpuFamilyModel names the x86 family and model numbers of /proc/cpuinfo, as lscpu does', async () => {
  const { spawnSync } = await import('node:child_process');
  const lscpu = spawnSync('lscpu', [], { encoding: 'utf8' });
  if (lscpu.status !== 0) return;
  const field = (name: string) => new RegExp(`^${name}:\\s*(\\S+)$`, 'm').exec(lscpu.stdout)?.[1];
  const [family, model] = [field('CPU family'), field('Model')];
  assert.equal(torch.cpuFamilyModel(), family === undefined || model === undefined ? null : `family ${family} model ${model}`);
});

test('withPrecision runs fp32 without autocast and bf16 under the device type\'s autocast', () => {
  const a = torch.randn([3, 3]);
  assert.equal(torch.withPrecision('fp32', 'cpu', () => a.matmul(a)).dtype, 'float32');
  assert.equal(torch.withPrecision('bf16', 'cpu', () => a.matmul(a)).dtype, 'bfloat16');
  assert.equal(torch.native.isAutocastEnabled('cpu'), false);
});
