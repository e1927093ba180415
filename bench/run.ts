// `npm run bench -- [--threads N] [--load N] [--only add,matmul] [--device cuda] [--precision fp32|bf16|auto]`: the same work timed in TypeScript (our
// API and models), in PyTorch eager (Debian's python3, same libtorch) and, for matmul, in libtorch
// from C++, in one invocation. Samples of the sides alternate round by round (in alternating order), so the
// load of a shared machine hits both; we report medians, spread, and the median of the per-round
// ratios TS time / reference time (<= 1.0: as fast or faster). With --device cuda the tensors and
// models live on the GPU, each sample ends with a device synchronize, the model items run at GPU
// batch sizes and the C++ side is left out (it is a CPU matmul). The model, sampling and training items
// run in --precision (default auto: bf16 where the hardware has it, as the trainers and samplers
// default), TS and PyTorch alike, and in bf16 also PyTorch in float32, its default. Without --threads
// each side runs its default thread count (PyTorch in the item's precision TS's). `--load N` runs N
// busy loops beside the whole run (bench/load.ts), to measure the machine as users have it: busy.
// Both sides run fixed, equal counts: reals' thread governor is off unless the caller sets
// REALS_ADAPTIVE_THREADS=1 (`REALS_ADAPTIVE_THREADS=1 npm run bench -- --load 1`). Then TS runs
// as users run it on a busy machine: the governor gives it the cores the other processes leave
// free, looking at the load after each step of the training, sampling and model items as the
// trainers' progress bars and the samplers do, and not while a reference side runs (its CPU time
// is the bench's, not the machine's); the threads lines say "governed, at most N". See bench/README.md.
import { existsSync, readFileSync } from 'node:fs';
import { cpus, loadavg, totalmem } from 'node:os';
import { parseArgs } from 'node:util';
import type { CppWorker, PytorchWorker, Sample } from './workers.js';
import type { Precision, ResolvedPrecision } from '../src/torch/index.js';

const { values: flags } = parseArgs({
  options: {
    threads: { type: 'string' },
    only: { type: 'string' },
    device: { type: 'string', default: 'cpu' },
    precision: { type: 'string', default: 'auto' },
    load: { type: 'string', default: '0' },
  },
});
const load = Number(flags.load);
if (!(Number.isInteger(load) && load >= 0 && load <= 64)) throw new Error(`bench --load: expected a count of busy loops from 0 to 64, got '${flags.load}'`);
const device = flags.device!;
if (!/^(cpu|cuda(:\d+)?)$/.test(device)) throw new Error(`bench --device: expected cpu, cuda or cuda:N, got '${device}'`);
const onCuda = device !== 'cpu';

// Debian's libtorch does matmul in OpenBLAS, whose thread pool ignores torch.set_num_threads and
// reads OPENBLAS_NUM_THREADS once, when the library loads: set it before libtorch is imported
// here and before the reference processes start, so `--threads N` governs every side alike.
const threadsFlag = flags.threads === undefined ? undefined : Number(flags.threads);
if (threadsFlag !== undefined && !(Number.isInteger(threadsFlag) && threadsFlag > 0)) {
  throw new Error(`bench --threads: expected a positive integer, got '${flags.threads}'`);
}
if (threadsFlag !== undefined && process.env.OPENBLAS_NUM_THREADS === undefined) {
  process.env.OPENBLAS_NUM_THREADS = String(threadsFlag);
}
// TS and PyTorch time the same work on the same threads, so reals' thread governor (which would
// give TS fewer threads while the busy loops run) is off unless the caller set it: with
// REALS_ADAPTIVE_THREADS=1 TS runs governed, as users run it; bench:policy compares the settings.
process.env.REALS_ADAPTIVE_THREADS ??= '0';
const torch = await import('../src/torch/index.js');
const { governorPaused } = await import('../src/torch/threads.js');
const { threadsLine: describeThreads, tsThreads } = await import('./threads.js');
const { WORKLOADS, TINY_SIT, sitForwardFlops } = await import('./workloads.js');
const { SIT_CONFIGS } = await import('../src/models/index.js');
const { startPytorch, startCpp } = await import('./workers.js');
const { startLoad } = await import('./load.js');

/** pytorchFp32: PyTorch eager in float32, its default, beside the bf16 TS and PyTorch sides. */
type Side = 'ts' | 'pytorch' | 'pytorchFp32' | 'cpp';
const SIDE_NAMES: Record<Side, string> = { ts: 'TS', pytorch: 'PyTorch', pytorchFp32: 'PyTorch fp32', cpp: 'C++' };
if (!(torch.PRECISIONS as readonly string[]).includes(flags.precision!)) {
  throw new Error(`bench --precision: expected ${torch.PRECISIONS.join(', ')}, got '${flags.precision}'`);
}
const precision = torch.resolvePrecision(flags.precision as Precision, device);

interface Target {
  /** The side whose time TS's time is divided by. */
  vs: Side;
  maxRatio: number;
  /** An absolute bound on TS's median, in the item's unit (per-op overhead). */
  maxValue?: number;
}

interface Item {
  name: string;
  what: string;
  /** Rates (GFLOP/s, images/s, latents/s, steps/s) are shown from the seconds per iteration. */
  unit: 'µs/call' | 'ms/iter' | 'GFLOP/s' | 'images/s' | 'latents/s' | 'steps/s';
  /** Iterations timed together as one sample; samples are what the statistics are over. */
  iterations: number;
  warmup: number;
  rounds: number;
  sides: Side[];
  /** GFLOP/s: the flop of one iteration. */
  flops?: number;
  /** matmul.bf16: bfloat16 tensors, on the threads of a bf16 run (the peak the bf16 model items are read against). */
  bf16Peak?: true;
  /** The model items: the flop of one iteration at `batch` (the matmuls), for the achieved rate against matmul.bf16's. */
  modelFlops?: (batch: number) => number;
  /** images/s, latents/s: the images or latents of one iteration; the batch size of the model workloads (steps/s too). */
  batch?: number;
  targets: Target[];
  /**
   * Runs in --precision (the model, sampling and training items); in bf16 PyTorch fp32 joins the
   * sides, and `vsFp32` is the target against it (the speed-up mixed precision has to show).
   */
  mixed?: { vsFp32?: number };
}

const MATMUL_FLOPS = 2 * 1024 ** 3;
const ITEMS: Item[] = [
  { name: 'add', what: 'a.add(b), 16 float32, new tensor per call, scope per 100', unit: 'µs/call', iterations: 20000, warmup: 2,
    rounds: 41, sides: ['ts', 'pytorch'], targets: [{ vs: 'pytorch', maxRatio: 1.0, maxValue: 5 }] },
  { name: 'add_', what: 'a.add_(b), 16 float32, in place', unit: 'µs/call', iterations: 20000, warmup: 2, rounds: 41,
    sides: ['ts', 'pytorch'], targets: [{ vs: 'pytorch', maxRatio: 1.0, maxValue: 5 }] },
  { name: 'napi.noop', what: 'diagnostic: one trivial N-API call', unit: 'µs/call', iterations: 200000, warmup: 2, rounds: 15,
    sides: ['ts'], targets: [] },
  { name: 'add.rawCallOp', what: 'diagnostic: add via native.callOp + native.dispose, no Tensor wrapper', unit: 'µs/call',
    iterations: 20000, warmup: 2, rounds: 41, sides: ['ts'], targets: [] },
  { name: 'matmul', what: '1024x1024 @ 1024x1024 float32', unit: 'GFLOP/s', iterations: 3, warmup: 2, rounds: 41,
    sides: ['ts', 'pytorch', 'cpp'], flops: MATMUL_FLOPS, targets: [{ vs: 'cpp', maxRatio: 1.05 }] },
  // The bf16 peak that the model items' achieved FLOP/s are read against (the last lines of the run).
  { name: 'matmul.bf16', what: '2048x2048 @ 2048x2048 bfloat16 (oneDNN: AMX or AVX512-BF16)', unit: 'GFLOP/s', iterations: 2, warmup: 2, rounds: 11,
    sides: ['ts', 'pytorch'], flops: 2 * 2048 ** 3, targets: [], bf16Peak: true },
  { name: 'conv2d.forward', what: '3x3 conv 128->128, 8x64x64, pad 1, no grad', unit: 'ms/iter', iterations: 2, warmup: 1,
    rounds: 31, sides: ['ts', 'pytorch'], targets: [{ vs: 'pytorch', maxRatio: 1.05 }] },
  { name: 'conv2d.forward+backward', what: 'same conv, backward to input and weight', unit: 'ms/iter', iterations: 1, warmup: 2,
    rounds: 21, sides: ['ts', 'pytorch'], targets: [{ vs: 'pytorch', maxRatio: 1.05 }] },
  { name: 'mlp.step', what: 'nn.Linear MLP 784-512-512-10 GELU, batch 256, CE, AdamW step, zeroGrad', unit: 'ms/iter',
    iterations: 5, warmup: 2, rounds: 61, sides: ['ts', 'pytorch'], targets: [{ vs: 'pytorch', maxRatio: 1.0 }] },
  // Model forwards in eval mode, no grad, float32. Few rounds: one sample takes seconds on a CPU core.
  { name: 'vae.encode', what: 'SD-VAE (AutoencoderKL sd-vae) encode, 3x256x256 -> posterior mode 4x32x32', unit: 'images/s', batch: 1,
    iterations: 1, warmup: 1, rounds: 3, sides: ['ts', 'pytorch'], targets: [{ vs: 'pytorch', maxRatio: 1.05 }], mixed: {} },
  { name: 'vae.decode', what: 'SD-VAE decode, 4x32x32 -> 3x256x256', unit: 'images/s', batch: 1,
    iterations: 1, warmup: 1, rounds: 2, sides: ['ts', 'pytorch'], targets: [{ vs: 'pytorch', maxRatio: 1.0 }], mixed: { vsFp32: 0.5 } },
  { name: 'dinov2.forward', what: 'DINOv2-B/14 (dinov2_vitb14) forward_features at 224x224 (pos_embed resized from 37x37)', unit: 'images/s',
    batch: 4, iterations: 1, warmup: 1, rounds: 2, sides: ['ts', 'pytorch'], targets: [{ vs: 'pytorch', maxRatio: 1.05 }], mixed: {} },
  { name: 'sit.forward', what: 'SiT-B/2 forward, 4x32x32 latents with timesteps and class labels', unit: 'images/s', batch: 4,
    iterations: 1, warmup: 1, rounds: 3, sides: ['ts', 'pytorch'], targets: [{ vs: 'pytorch', maxRatio: 1.0 }], mixed: {},
    modelFlops: (batch) => sitForwardFlops(SIT_CONFIGS['SiT-B/2'], batch) },
  // Sampling: generateLatents against SiT's torchdiffeq Euler loop, written out in bench/torch_eager.py.
  { name: 'sit.sample', what: 'SiT-S/2, 4x32x32, ODE Euler, 50 steps = 50 forwards, no CFG', unit: 'latents/s', batch: 1,
    iterations: 1, warmup: 0, rounds: 2, sides: ['ts', 'pytorch'], targets: [{ vs: 'pytorch', maxRatio: 1.0 }], mixed: { vsFp32: 0.5 },
    modelFlops: (batch) => 50 * sitForwardFlops(SIT_CONFIGS['SiT-S/2'], batch) },
  { name: 'sit.sample.cfg', what: 'the same with CFG 4.0 on [0, 1]: 50 forwards of the doubled batch', unit: 'latents/s', batch: 1,
    iterations: 1, warmup: 0, rounds: 2, sides: ['ts', 'pytorch'], targets: [{ vs: 'pytorch', maxRatio: 1.0 }], mixed: {} },
  { name: 'sit.sample.onnx', what: 'sit.sample through onnxruntime-node (reals sample --backend onnxruntime), float32, against PyTorch eager float32', unit: 'latents/s', batch: 1,
    iterations: 1, warmup: 1, rounds: 2, sides: ['ts', 'pytorch'], targets: [] },
  // Training steps as the trainers take them (src/train/align.ts, src/train/sit.ts): forward, backward, optimizer, EMA.
  { name: 'align.step', what: 'ReaLS VAE step, reduced: VAE [64,128] on 64x64, DINOv2-S/14 depth 4 at 112 px, heads, MSE+KL+align, Adam, EMA',
    unit: 'images/s', batch: 4, iterations: 2, warmup: 2, rounds: 5, sides: ['ts', 'pytorch'], targets: [{ vs: 'pytorch', maxRatio: 1.0 }], mixed: { vsFp32: 0.5 } },
  { name: 'sit.train.step', what: 'SiT-B/2 step, 4x32x32 latents: transport loss (Linear, velocity), AdamW, EMA', unit: 'steps/s',
    batch: 8, iterations: 1, warmup: 1, rounds: 3, sides: ['ts', 'pytorch'], targets: [{ vs: 'pytorch', maxRatio: 1.0 }], mixed: { vsFp32: 0.5 },
    // Backward takes twice the forward's matmul work (the gradients of inputs and of weights).
    modelFlops: (batch) => 3 * sitForwardFlops(SIT_CONFIGS['SiT-B/2'], batch) },
  // The models the demo and small own-data runs train: a tiny SiT (depth 4, width 128) on 4x8x8 latents.
  { name: 'sit.tiny.train.step', what: 'tiny SiT step (depth 4, width 128, 4 heads, patch 2), 4x8x8 latents, 5 classes: as sit.train.step', unit: 'steps/s',
    batch: 32, iterations: 10, warmup: 1, rounds: 5, sides: ['ts', 'pytorch'], targets: [{ vs: 'pytorch', maxRatio: 1.0 }], mixed: {},
    modelFlops: (batch) => 3 * sitForwardFlops(TINY_SIT, batch) },
  { name: 'sit.tiny.sample', what: 'the tiny SiT, ODE Euler, 16 steps, CFG 2 on [0, 1], 4x8x8 latents', unit: 'latents/s',
    batch: 16, iterations: 2, warmup: 1, rounds: 5, sides: ['ts', 'pytorch'], targets: [{ vs: 'pytorch', maxRatio: 1.0 }], mixed: {},
    modelFlops: (batch) => 16 * sitForwardFlops(TINY_SIT, 2 * batch) },
  // The evaluator's network (ADM's evaluator runs batches of 64).
  { name: 'inception.forward', what: 'FID Inception v3: uint8 3x256x256, TF1 bilinear to 299, pool_3 + spatial + logits', unit: 'images/s',
    batch: 8, iterations: 1, warmup: 1, rounds: 3, sides: ['ts', 'pytorch'], targets: [{ vs: 'pytorch', maxRatio: 1.05 }] },
];

/**
 * On CUDA: the batch sizes a GPU is used at (batch 4 would time kernel launches only) and enough
 * iterations per sample to outlast timer noise; the per-op items keep their sizes.
 */
const CUDA_SETTINGS: Record<string, Partial<Pick<Item, 'batch' | 'iterations' | 'rounds'>>> = {
  'add': { rounds: 11 }, 'add_': { rounds: 11 }, 'napi.noop': { rounds: 5 }, 'add.rawCallOp': { rounds: 11 },
  'matmul': { iterations: 200, rounds: 11 },
  'conv2d.forward': { iterations: 50, rounds: 11 },
  'conv2d.forward+backward': { iterations: 20, rounds: 11 },
  'mlp.step': { iterations: 50, rounds: 11 },
  'vae.encode': { batch: 8, iterations: 5, rounds: 5 },
  'vae.decode': { batch: 8, iterations: 3, rounds: 5 },
  'dinov2.forward': { batch: 32, iterations: 3, rounds: 5 },
  'sit.forward': { batch: 32, iterations: 5, rounds: 5 },
  'sit.sample': { batch: 8, iterations: 1, rounds: 5 },
  'sit.sample.cfg': { batch: 8, iterations: 1, rounds: 5 },
  'align.step': { batch: 16, iterations: 3, rounds: 5 },
  'sit.train.step': { batch: 32, iterations: 5, rounds: 5 },
  'inception.forward': { batch: 64, iterations: 2, rounds: 5 },
};

/**
 * An item as it runs on `device`: on CUDA with CUDA_SETTINGS, without the (CPU) C++ side, and
 * without the per-op bound (a CUDA kernel launch alone takes about 5 µs).
 */
function onDevice(item: Item): Item {
  if (!onCuda) return item;
  return {
    ...item, ...CUDA_SETTINGS[item.name],
    sides: item.sides.filter((side) => side !== 'cpp'),
    targets: item.targets.filter((target) => target.vs !== 'cpp').map(({ vs, maxRatio }) => ({ vs, maxRatio })),
  };
}

/** The ADM evaluation that inception.forward's rate is projected to: 50K samples, reference statistics cached. */
const FID_SAMPLES = 50_000;

/** Whether the item runs in --precision rather than float32. */
const itemPrecision = (item: Item): ResolvedPrecision => (item.bf16Peak === true ? 'bf16' : item.mixed === undefined ? 'fp32' : precision);

/** An item in bf16: PyTorch fp32 joins its sides, with the item's target against it. */
function inPrecision(item: Item): Item {
  if (itemPrecision(item) === 'fp32' || item.mixed === undefined) return item;
  const vsFp32 = item.mixed!.vsFp32;
  return {
    ...item, sides: [...item.sides, 'pytorchFp32'],
    targets: vsFp32 === undefined ? item.targets : [...item.targets, { vs: 'pytorchFp32', maxRatio: vsFp32 }],
  };
}

function selectedItems(): Item[] {
  // onnxruntime-node runs on the CPU: against PyTorch on a GPU it would time two devices.
  return selectedByName().filter((item) => !(onCuda && item.name === 'sit.sample.onnx')).map(onDevice).map(inPrecision);
}

function selectedByName(): Item[] {
  if (flags.only === undefined) return ITEMS;
  const names = flags.only.split(',').map((s) => s.trim());
  const unknown = names.filter((n) => !ITEMS.some((item) => item.name === n));
  if (unknown.length > 0) throw new Error(`bench --only: unknown items ${unknown.join(', ')} (known: ${ITEMS.map((i) => i.name).join(', ')})`);
  return ITEMS.filter((item) => names.includes(item.name));
}

// --- statistics ----------------------------------------------------------------------------

interface Spread { median: number; min: number; max: number }

function quantile(sorted: readonly number[], q: number): number {
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (pos - lo);
}

function spread(values: readonly number[]): Spread {
  const sorted = [...values].sort((a, b) => a - b);
  return { median: quantile(sorted, 0.5), min: sorted[0]!, max: sorted[sorted.length - 1]! };
}

/** Seconds per iteration shown in the item's unit (rates invert, so their min and max swap). */
function display(item: Item, s: Spread): Spread {
  const work = item.unit === 'GFLOP/s' ? item.flops! / 1e9 : item.unit === 'images/s' || item.unit === 'latents/s' ? item.batch!
    : item.unit === 'steps/s' ? 1 : undefined;
  if (work !== undefined) {
    const rate = (t: number): number => work / t;
    return { median: rate(s.median), min: rate(s.max), max: rate(s.min) };
  }
  const scale = item.unit === 'µs/call' ? 1e6 : 1e3;
  return { median: s.median * scale, min: s.min * scale, max: s.max * scale };
}

// --- the run -------------------------------------------------------------------------------

function blasLibraries(): string {
  if (!existsSync('/proc/self/maps')) return 'unknown';
  const paths = new Set(readFileSync('/proc/self/maps', 'utf8').split('\n')
    .map((line) => /\/\S*\/lib[^/\s]*(blas|mkl)[^/\s]*\.so\S*/.exec(line)?.[0])
    .filter((path) => path !== undefined));
  return [...paths].join(', ') || 'none loaded';
}

async function main(): Promise<void> {
  const items = selectedItems();
  // Bounded: the loops end by themselves after two hours, or as soon as this process is gone.
  const stopLoad = startLoad(load, 7200);
  if (onCuda && !torch.cuda.isAvailable()) throw new Error(`bench --device ${device}: this libtorch (${torch.version()}) sees no CUDA device`);
  // --threads N: N on every side. Without it, each side runs its default: TS reals' threads for the
  // item's precision (torch.runThreads: all CPUs in bf16 on the CPU), PyTorch in that precision the
  // same count, so that the two time the same work, and PyTorch fp32 (and C++) libtorch's default.
  // With REALS_ADAPTIVE_THREADS=1 (and no --threads) TS runs governed: an item's count is its most.
  if (threadsFlag !== undefined) torch.setNumThreads(threadsFlag);
  const governed = !onCuda && torch.threadGovernor().adaptive;
  const defaultThreads = torch.runThreads('fp32', device);
  const itemThreads = (item: Item): number => torch.runThreads(itemPrecision(item), device);
  const sideThreads = (item: Item, side: Side): number | string => (side === 'ts' ? tsThreads(itemThreads(item), governed)
    : side === 'pytorch' ? itemThreads(item) : defaultThreads);
  torch.manualSeed(0);

  // One PyTorch process per thread count: set_num_threads restarts libtorch's pools, so it is not switched between samples.
  const pytorchWorkers = new Map<number, PytorchWorker>();
  const pytorchAt = async (threads: number): Promise<PytorchWorker> => {
    let worker = pytorchWorkers.get(threads);
    if (worker === undefined) {
      worker = await governorPaused(() => startPytorch(process.env.PYTHON ?? '/usr/bin/python3', threads, device));
      if (worker.threads !== threads) throw new Error(`bench: PyTorch runs ${worker.threads} threads, asked for ${threads}`);
      pytorchWorkers.set(threads, worker);
    }
    return worker;
  };
  const pytorch = await pytorchAt(defaultThreads);
  const cpp: CppWorker | undefined = items.some((item) => item.sides.includes('cpp'))
    ? await startCpp(process.env.CXX ?? 'g++', defaultThreads)
    : undefined;
  if (cpp !== undefined && cpp.threads !== defaultThreads) throw new Error(`bench: C++ runs ${cpp.threads} threads, asked for ${defaultThreads}`);
  const threadsLine = describeThreads({
    ...(threadsFlag === undefined ? {} : { fixed: threadsFlag }), governed, precision,
    precisionThreads: torch.runThreads(precision, device), fp32Threads: defaultThreads, cpp: cpp !== undefined,
  });

  const machine = {
    type: 'machine',
    date: new Date().toISOString(),
    cpu: cpus()[0]?.model ?? 'unknown',
    logicalCores: cpus().length,
    // The CPUs this process may use: the affinity count within the control group's CPU quota.
    cpuBudget: torch.cpuBudget,
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    node: process.version,
    libtorch: torch.version(),
    pytorch: pytorch.torch,
    cppLibtorch: cpp?.libtorch ?? null,
    threads: threadsLine,
    precision,
    device: pytorch.device,
    blas: `${pytorch.blas}: ${blasLibraries()}`,
    openblasThreads: process.env.OPENBLAS_NUM_THREADS ?? 'OpenBLAS default (all cores)',
    loadAverageAtStart: loadavg().map((l) => Number(l.toFixed(2))),
    busyLoops: load,
    waitPolicy: `TS ${torch.waitPolicy.value} (${torch.waitPolicy.source}); reference sides ${process.env.REALS_DEFAULT_WAIT_POLICY === '1' ? 'libgomp default' : torch.waitPolicy.value}`,
  };
  console.log(JSON.stringify(machine));

  const rows: string[][] = [];
  const missed: string[] = [];
  const projections: string[] = [];
  const started = Date.now();
  /** TS's matmul.bf16 rate (FLOP/s) when it ran, and the model items' achieved rates. */
  let bf16Peak: number | undefined;
  const achieved: { item: string; precision: ResolvedPrecision; flops: number }[] = [];
  /** Times `item` on its sides, prints its JSON lines and returns its table row. */
  const measure = async (item: Item): Promise<string[]> => {
    torch.usePrecision(itemPrecision(item), device);
    const tsRun = WORKLOADS[item.name]!({ batch: item.batch ?? 0, device, precision: itemPrecision(item), afterStep: torch.adaptThreads });
    const sameThreads = await pytorchAt(itemThreads(item));
    const samplers: Record<Side, () => Promise<Sample>> = {
      ts: async () => {
        const cpuStart = process.cpuUsage();
        const start = process.hrtime.bigint();
        await tsRun(item.iterations);
        if (onCuda) torch.cuda.synchronize();
        const wall = Number(process.hrtime.bigint() - start) / 1e9;
        const cpu = process.cpuUsage(cpuStart);
        return { wall: wall / item.iterations, cpu: (cpu.user + cpu.system) / 1e6 / item.iterations };
      },
      pytorch: () => governorPaused(() => sameThreads.sample(item.name, item.iterations, item.batch, itemPrecision(item))),
      pytorchFp32: () => governorPaused(() => pytorch.sample(item.name, item.iterations, item.batch, 'fp32')),
      cpp: () => governorPaused(() => cpp!.sample(item.name, item.iterations)),
    };
    const samples: Record<Side, Sample[]> = { ts: [], pytorch: [], pytorchFp32: [], cpp: [] };
    for (let w = 0; w < item.warmup; w++) for (const side of item.sides) await samplers[side]();
    for (let round = 0; round < item.rounds; round++) {
      const order = round % 2 === 0 ? item.sides : [...item.sides].reverse();
      for (const side of order) samples[side].push(await samplers[side]());
    }

    const shown: Partial<Record<Side, Spread>> = {};
    for (const side of item.sides) {
      const wall = spread(samples[side].map((s) => s.wall));
      const cpu = spread(samples[side].map((s) => s.cpu));
      shown[side] = display(item, wall);
      console.log(JSON.stringify({
        type: 'result', item: item.name, what: item.what, side, threads: sideThreads(item, side), unit: 'seconds/iteration', iterationsPerSample: item.iterations,
        wall, cpu, shown: { unit: item.unit, ...shown[side] }, samples: samples[side],
        // The cores the governor left TS when its samples ended (null: its full count).
        ...(side === 'ts' && governed ? { governorLimitAtEnd: torch.threadGovernor().limit ?? null } : {}),
      }));
    }
    const ratioCells: Record<string, string> = {};
    let allMet = true;
    for (const vs of item.sides.filter((s) => s !== 'ts')) {
      // Each round's TS and reference samples ran back to back, so their ratio cancels most drift.
      const wall = spread(samples.ts.map((t, r) => t.wall / samples[vs][r]!.wall));
      const cpu = spread(samples.ts.map((t, r) => t.cpu / samples[vs][r]!.cpu));
      const target = item.targets.find((t) => t.vs === vs);
      const met = target === undefined ? null
        : wall.median <= target.maxRatio && (target.maxValue === undefined || shown.ts!.median < target.maxValue);
      console.log(JSON.stringify({ type: 'ratio', item: item.name, of: 'ts', to: vs, wall, cpu, target: target ?? null, met }));
      if (met === false) {
        allMet = false;
        missed.push(`${item.name} vs ${SIDE_NAMES[vs]}`);
      }
      ratioCells[vs] = `${wall.median.toFixed(2)} [${wall.min.toFixed(2)}-${wall.max.toFixed(2)}]`;
      ratioCells[`${vs}.cpu`] = cpu.median.toFixed(2);
    }

    const cell = (side: Side): string => {
      const s = shown[side];
      return s === undefined ? '' : `${fmt(s.median)} [${fmt(s.min)}-${fmt(s.max)}]`;
    };
    const targets = item.targets.map((t) =>
      `${t.maxValue === undefined ? '' : `< ${t.maxValue} ${item.unit}, `}vs ${SIDE_NAMES[t.vs]} <= ${t.maxRatio.toFixed(2)}`);
    const verdict = item.targets.length === 0 ? '' : allMet ? 'met' : 'MISSED';
    if (item.name === 'inception.forward') {
      const duration = (side: Side): string => {
        const seconds = FID_SAMPLES / shown[side]!.median;
        return seconds >= 3600 ? `${(seconds / 3600).toFixed(2)} h` : `${(seconds / 60).toFixed(1)} min`;
      };
      projections.push(`inception.forward: ${FID_SAMPLES / 1000}K-sample FID/sFID/IS/precision/recall features (reference batch ` +
        `statistics cached) at the measured median rate, batch ${item.batch} (ADM's evaluator uses 64): ` +
        `TS ${duration('ts')}, PyTorch ${duration('pytorch')}, on ${itemThreads(item)} thread(s)${governed ? ' (TS governed, at most these)' : ''}`);
      console.log(JSON.stringify({ type: 'projection', item: item.name, samples: FID_SAMPLES,
        seconds: Object.fromEntries(item.sides.map((side) => [side, FID_SAMPLES / shown[side]!.median])) }));
    }
    const tsSeconds = spread(samples.ts.map((t) => t.wall)).median;
    if (item.name === 'matmul.bf16') bf16Peak = item.flops! / tsSeconds;
    if (item.modelFlops !== undefined) achieved.push({ item: item.name, precision: itemPrecision(item), flops: item.modelFlops(item.batch!) / tsSeconds });
    const ratios = (vs: Side): string[] => [ratioCells[vs] ?? '', ratioCells[`${vs}.cpu`] ?? ''];
    return [item.name, item.unit, itemPrecision(item), cell('ts'), cell('pytorch'), cell('pytorchFp32'), cell('cpp'),
      ...ratios('pytorch'), ...ratios('pytorchFp32'), ...ratios('cpp'), targets.join('; '), verdict];
  };
  // An item that fails (a workload's error on either side) is reported and the others still run.
  const failed: string[] = [];
  for (const item of items) {
    try {
      rows.push(await measure(item));
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      console.log(JSON.stringify({ type: 'error', item: item.name, message }));
      failed.push(`${item.name}: ${message}`);
    }
  }
  for (const worker of pytorchWorkers.values()) worker.close();
  cpp?.close();
  stopLoad();

  const loadAtEnd = loadavg().map((l) => l.toFixed(2)).join(' ');
  console.log();
  console.log(`machine: ${machine.cpu}, ${machine.logicalCores} logical cores, ${machine.memoryGiB} GiB, node ${machine.node}; device ${machine.device}`);
  console.log(`libtorch ${machine.libtorch} (TS addon), PyTorch ${machine.pytorch} (python), ${cpp ? `libtorch ${cpp.libtorch} (C++), ` : ''}` +
    `${threadsLine}; BLAS ${machine.blas}, OPENBLAS_NUM_THREADS ${machine.openblasThreads}; OpenMP wait: ${machine.waitPolicy}`);
  console.log(`busy loops beside the run (--load): ${load}`);
  console.log(`${machine.date}; load average ${machine.loadAverageAtStart.join(' ')} at start, ${loadAtEnd} at end; ` +
    `${((Date.now() - started) / 1000).toFixed(0)} s of measurement`);
  console.log('values: wall-clock median [min-max] over rounds; ratios: median [min-max] over rounds of TS time / reference time');
  console.log(`precision: TS and PyTorch run each item in the precision of its row (bf16: autocast to bfloat16); PyTorch fp32 is PyTorch eager's default`);
  console.log('in the same round, wall clock (verdict) and process CPU time (cpu: steadier when the machine is shared)');
  console.log();
  printTable(['item', 'unit', 'precision', 'TS', 'PyTorch', 'PyTorch fp32', 'C++', 'TS/PyTorch', 'cpu', 'TS/PyTorch fp32', 'cpu', 'TS/C++', 'cpu', 'target', 'verdict'], rows);
  console.log();
  for (const item of items) console.log(`${item.name}: ${item.what}${item.batch === undefined ? '' : `, batch ${item.batch}`}`);
  if (projections.length > 0) console.log(`\n${projections.join('\n')}`);
  if (achieved.length > 0) {
    console.log(`\nachieved (TS, the items' matmul flop over their median time)${bf16Peak === undefined ? '; add matmul.bf16 to --only for the share of the bf16 matmul rate' : `, against TS's matmul.bf16 ${(bf16Peak / 1e9).toFixed(0)} GFLOP/s`}:`);
    for (const a of achieved) {
      const share = bf16Peak === undefined ? null : a.flops / bf16Peak;
      console.log(JSON.stringify({ type: 'achieved', item: a.item, precision: a.precision, gflops: a.flops / 1e9, bf16MatmulGflops: bf16Peak === undefined ? null : bf16Peak / 1e9, share }));
      console.log(`  ${a.item.padEnd(20)} ${a.precision}  ${(a.flops / 1e9).toFixed(1).padStart(7)} GFLOP/s${share === null ? '' : `  ${(100 * share).toFixed(0)}% of the bf16 matmul rate`}`);
    }
  }
  if (missed.length > 0) console.log(`\ntargets missed: ${missed.join(', ')}`);
  if (failed.length > 0) {
    console.log(`\nitems failed:\n${failed.join('\n')}`);
    process.exitCode = 1;
  }
}

function fmt(v: number): string {
  return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2);
}

function printTable(header: string[], rows: string[][]): void {
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c]!.length)));
  const line = (cells: string[]): string => cells.map((cell, c) => cell.padEnd(widths[c]!)).join('  ').trimEnd();
  console.log(line(header));
  console.log(line(widths.map((w) => '-'.repeat(w))));
  for (const row of rows) console.log(line(row));
}

await main();
