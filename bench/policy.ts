// `npm run bench:policy -- [--load N] [--items a,b] [--settings a,b] [--rounds R] [--no-amx]`: the
// thread and wait policy measured, not assumed. Each item runs in a fresh process per setting
// (OpenMP reads its environment once, when libtorch loads), so a setting is what a user would get
// by exporting the same variables: reals' default (bounded spinning, and the thread governor, which
// looks at the load between steps as the trainers' progress bars and the samplers' loops do), then
// one or two intra-op threads (a fixed count: no governor), OpenMP's passive, active or bounded
// waiting, and both precisions. `--load N` runs N busy loops beside it (bench/load.ts), as a
// browser, a second job or CI would. The table gives each setting's time per iteration (median of
// the rounds) and its ratio to the fastest setting of the row. `--no-amx` runs every setting with
// oneDNN limited to AVX512-BF16 (DNNL_MAX_CPU_ISA=AVX512_CORE_BF16), the bf16 path of a CPU without
// AMX such as an AMD EPYC, to see on an AMX machine whether bf16 still beats fp32 there.
import { spawn } from 'node:child_process';
import { cpus, loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { startLoad } from './load.js';
import { readCpuQuota } from '../src/torch/cpu-budget.js';

const { values: flags } = parseArgs({
  options: {
    load: { type: 'string', default: '0' },
    items: { type: 'string', default: 'sit.tiny.train.step,sit.train.step,vae.decode' },
    settings: { type: 'string' },
    rounds: { type: 'string', default: '5' },
    'no-amx': { type: 'boolean', default: false },
    child: { type: 'string' },
    precision: { type: 'string' },
    batch: { type: 'string' },
  },
});

/** Batch and iterations per round of each item this probe knows. */
const ITEMS: Record<string, { batch: number; iterations: number }> = {
  'sit.tiny.train.step': { batch: 32, iterations: 10 },
  'sit.tiny.sample': { batch: 16, iterations: 1 },
  'sit.train.step': { batch: 8, iterations: 1 },
  'vae.decode': { batch: 1, iterations: 1 },
};

/**
 * The settings, by the name `--settings` takes: extra environment and the precision flag. The
 * defaults set nothing: reals' own policy (`default` is `--precision auto`).
 */
const SETTINGS: { name: string; env: Record<string, string>; precision: 'auto' | 'fp32' | 'bf16' }[] = [
  { name: 'default', env: {}, precision: 'auto' },
  { name: 'default-fp32', env: {}, precision: 'fp32' },
  { name: 'bf16-1', env: { OMP_NUM_THREADS: '1' }, precision: 'bf16' },
  { name: 'bf16-2-active', env: { OMP_NUM_THREADS: '2', OMP_WAIT_POLICY: 'ACTIVE' }, precision: 'bf16' },
  { name: 'bf16-2-passive', env: { OMP_NUM_THREADS: '2', OMP_WAIT_POLICY: 'PASSIVE' }, precision: 'bf16' },
  { name: 'bf16-2-spin20k', env: { OMP_NUM_THREADS: '2', GOMP_SPINCOUNT: '20000' }, precision: 'bf16' },
  { name: 'bf16-2-spin100k', env: { OMP_NUM_THREADS: '2', GOMP_SPINCOUNT: '100000' }, precision: 'bf16' },
  { name: 'fp32-1', env: { OMP_NUM_THREADS: '1' }, precision: 'fp32' },
  { name: 'fp32-2-active', env: { OMP_NUM_THREADS: '2', OMP_WAIT_POLICY: 'ACTIVE' }, precision: 'fp32' },
  { name: 'fp32-2-passive', env: { OMP_NUM_THREADS: '2', OMP_WAIT_POLICY: 'PASSIVE' }, precision: 'fp32' },
];
/** Warm-up before the timed rounds: at least one round and this long, so that the thread governor has looked at the load. */
const WARMUP_MS = 1500;

async function child(item: string, precision: 'auto' | 'fp32' | 'bf16', rounds: number): Promise<void> {
  const torch = await import('../src/torch/index.js');
  const { WORKLOADS } = await import('./workloads.js');
  const spec = ITEMS[item];
  if (spec === undefined) throw new Error(`bench:policy: unknown item ${item}`);
  const resolved = torch.usePrecision(precision, 'cpu');
  torch.manualSeed(0);
  // The workloads give the governor its look at the load after each step, as the trainers do.
  const run = WORKLOADS[item]!({ batch: spec.batch, device: 'cpu', precision: resolved, afterStep: torch.adaptThreads });
  const round = async (): Promise<void> => { await run(spec.iterations); };
  const warmupStart = performance.now();
  do await round(); while (performance.now() - warmupStart < WARMUP_MS);
  const times: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const start = performance.now();
    await round();
    times.push((performance.now() - start) / 1000 / spec.iterations);
  }
  times.sort((a, b) => a - b);
  process.stdout.write(`${JSON.stringify({ seconds: times[Math.floor(times.length / 2)], precision: resolved, threads: torch.getNumThreads() })}\n`);
}

function runChild(item: string, setting: (typeof SETTINGS)[number], rounds: number): Promise<{ seconds: number; precision: string; threads: number }> {
  return new Promise((resolve, reject) => {
    const env: NodeJS.ProcessEnv = { ...process.env, ...setting.env, ...(flags['no-amx'] ? { DNNL_MAX_CPU_ISA: 'AVX512_CORE_BF16' } : {}) };
    for (const name of ['OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OMP_WAIT_POLICY', 'GOMP_SPINCOUNT', 'OPENBLAS_NUM_THREADS', 'REALS_ADAPTIVE_THREADS']) {
      if (!(name in setting.env)) delete env[name];
    }
    const proc = spawn(process.execPath, ['--import', 'tsx', 'bench/policy.ts', '--child', item, '--precision', setting.precision, '--rounds', String(rounds)], { env });
    let out = '';
    let err = '';
    proc.stdout.on('data', (chunk: Buffer) => { out += chunk.toString(); });
    proc.stderr.on('data', (chunk: Buffer) => { err += chunk.toString(); });
    proc.on('close', (code) => {
      const line = out.trim().split('\n').pop() ?? '';
      if (code !== 0 || line === '') reject(new Error(`bench:policy: ${item} ${setting.name} exited ${code}: ${err.trim().split('\n').pop()}`));
      else resolve(JSON.parse(line) as { seconds: number; precision: string; threads: number });
    });
  });
}

async function main(): Promise<void> {
  const rounds = Number(flags.rounds);
  if (flags.child !== undefined) {
    await child(flags.child, (flags.precision ?? 'auto') as 'auto' | 'fp32' | 'bf16', rounds);
    return;
  }
  const load = Number(flags.load);
  if (!Number.isInteger(load) || load < 0) throw new Error(`bench:policy --load: expected a count, got '${flags.load}'`);
  const items = flags.items!.split(',');
  for (const item of items) if (ITEMS[item] === undefined) throw new Error(`bench:policy --items: unknown item '${item}' (known: ${Object.keys(ITEMS).join(', ')})`);
  const settingNames = flags.settings?.split(',') ?? SETTINGS.map((s) => s.name);
  const settings = settingNames.map((name) => {
    const setting = SETTINGS.find((s) => s.name === name);
    if (setting === undefined) throw new Error(`bench:policy --settings: unknown setting '${name}' (known: ${SETTINGS.map((s) => s.name).join(', ')})`);
    return setting;
  });
  const stopLoad = startLoad(load, 3600);
  try {
    const quota = readCpuQuota();
    console.log(`# bench:policy ${new Date().toISOString()} ${cpus()[0]?.model} x${cpus().length}, load processes ${load}, loadavg ${loadavg()[0]!.toFixed(2)}` +
      `${quota === undefined ? '' : `, CPU quota ${quota.cpus} (${quota.file})`}${flags['no-amx'] ? ', oneDNN without AMX (DNNL_MAX_CPU_ISA=AVX512_CORE_BF16)' : ''}`);
    for (const item of items) {
      const rows: { name: string; seconds: number; precision: string }[] = [];
      for (const setting of settings) {
        const result = await runChild(item, setting, rounds);
        rows.push({ name: setting.name, seconds: result.seconds, precision: result.precision });
        console.log(JSON.stringify({ type: 'policy', item, load, setting: setting.name, env: setting.env, ...result }));
      }
      const fastest = Math.min(...rows.map((r) => r.seconds));
      console.log(`\n${item} (load ${load}):`);
      for (const row of rows) console.log(`  ${row.name.padEnd(16)} ${row.precision.padEnd(5)} ${(row.seconds * 1000).toFixed(1).padStart(9)} ms  ${(row.seconds / fastest).toFixed(2)}x`);
    }
  } finally {
    stopLoad();
  }
}

await main();
