// Mixed precision as one setting: 'fp32', 'bf16' (autocast to bfloat16 on the tensors' device) or
// 'auto', which picks bf16 where the hardware runs it fast (CUDA, and CPUs with AMX or AVX512-BF16
// matmul units) and fp32 elsewhere. Only the ops autocast lists run in bfloat16: weights, optimizer
// state and everything outside the region stay float32, as PyTorch's mixed precision.
import { readFileSync } from 'node:fs';
import { cpuBudget } from './cpu-budget.js';
import { autocast, autocastDeviceType, chosenThreads, LIBTORCH_DEFAULT_THREADS } from './cuda.js';
import { native } from './native.js';
import { setGovernedThreads } from './threads.js';
import type { Device } from './tensor.js';

export const PRECISIONS = ['fp32', 'bf16', 'auto'] as const;
export type Precision = (typeof PRECISIONS)[number];
/** What a run uses once 'auto' is decided. */
export type ResolvedPrecision = Exclude<Precision, 'auto'>;

/** The CPU feature flags that give bfloat16 matmuls in hardware (oneDNN uses either). */
const BF16_CPU_FLAGS = ['amx_bf16', 'avx512_bf16'];

let cpuBf16: boolean | undefined;

/** The first CPU's fields of /proc/cpuinfo (`flags`, `cpu family`, ...), values trimmed; empty where there is no such file. */
function firstCpuInfo(): Map<string, string> {
  let text: string;
  try {
    text = readFileSync('/proc/cpuinfo', 'utf8');
  } catch {
    return new Map();
  }
  const fields = new Map<string, string>();
  for (const line of text.split('\n')) {
    if (line.trim() === '') break;
    const colon = line.indexOf(':');
    if (colon >= 0) fields.set(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
  }
  return fields;
}

/** Whether this CPU reports amx_bf16 or avx512_bf16 in /proc/cpuinfo (false where there is no such file). */
export function cpuHasBf16(): boolean {
  if (cpuBf16 === undefined) {
    const flags = firstCpuInfo().get('flags')?.split(/\s+/) ?? [];
    cpuBf16 = BF16_CPU_FLAGS.some((flag) => flags.includes(flag));
  }
  return cpuBf16;
}

/**
 * The x86 family and model numbers, e.g. 'family 26 model 2' (a Zen 5 EPYC), null where
 * /proc/cpuinfo has none. One model name ("AMD EPYC") covers CPUs whose kernels round differently.
 */
export function cpuFamilyModel(): string | null {
  const info = firstCpuInfo();
  const [family, model] = [info.get('cpu family'), info.get('model')];
  return family === undefined || model === undefined ? null : `family ${family} model ${model}`;
}

/**
 * The kernel set OpenBLAS runs float32 matmuls with ('Haswell', 'SkylakeX', 'Cooperlake', ...), null
 * for another BLAS. OpenBLAS picks it by CPU and OPENBLAS_CORETYPE overrides it; CPUs that get the
 * same set order their float32 sums alike, so it, more than the CPU's name, says which runs can
 * reproduce each other to the last bit.
 */
export function openblasCoreName(): string | null {
  return native.openblasCoreName();
}

/**
 * Which of the addon's own CPU kernels run on this machine (bench/README.md measures each): all need
 * AVX-512; attention in bfloat16 also needs oneDNN without AMX matmuls (with AMX libtorch's path is
 * the faster). Where one does not run, the same function runs libtorch's ops.
 */
export function cpuKernels(): {
  gelu: boolean; siluBf16: boolean; attention: { float32: boolean; bfloat16: boolean }; adaLN: boolean; groupNormSiluBf16: boolean; adamEma: boolean;
} {
  const avx512 = native.fusedActivations();
  return {
    gelu: avx512, siluBf16: avx512,
    attention: { float32: native.fusedAttention('float32'), bfloat16: native.fusedAttention('bfloat16') },
    adaLN: avx512, groupNormSiluBf16: avx512, adamEma: avx512,
  };
}

/** 'auto' becomes bf16 on CUDA and on CPUs with bfloat16 units (cpuHasBf16), fp32 elsewhere; the others stay. */
export function resolvePrecision(precision: Precision, device: Device): ResolvedPrecision {
  if (!(PRECISIONS as readonly string[]).includes(precision)) {
    throw new Error(`precision must be one of ${PRECISIONS.join(', ')}, got '${String(precision)}'`);
  }
  if (precision !== 'auto') return precision;
  return autocastDeviceType(device) === 'cuda' || cpuHasBf16() ? 'bf16' : 'fp32';
}

/**
 * The intra-op threads of a run in `precision` on `device`: the count the caller chose
 * (torch.setNumThreads, OMP_NUM_THREADS, MKL_NUM_THREADS), else on the CPU in bf16 every CPU this
 * process may use (cpuBudget: the CPUs it may run on, within its control group's CPU quota),
 * because oneDNN's bfloat16 matmuls and convolutions run on these threads; otherwise libtorch's
 * default (its physical cores) within the same budget, because float32 matmuls run in the BLAS's
 * own pool, which already takes every CPU, and a second full pool contends with it. This is the
 * run's full count: while other processes take CPUs, the thread governor (threads.ts) runs it on fewer.
 */
export function runThreads(precision: ResolvedPrecision, device: Device): number {
  const chosen = chosenThreads();
  if (chosen !== undefined) return chosen;
  return precision === 'bf16' && autocastDeviceType(device) === 'cpu' ? cpuBudget.cpus : Math.min(LIBTORCH_DEFAULT_THREADS, cpuBudget.cpus);
}

/**
 * resolvePrecision, and runThreads for the run, governed by the machine's load where reals chose
 * them (setGovernedThreads). The trainers, samplers, latent caching, heads and evaluator call it
 * as their run starts.
 */
export function usePrecision(precision: Precision, device: Device): ResolvedPrecision {
  const resolved = resolvePrecision(precision, device);
  setGovernedThreads(runThreads(resolved, device), device);
  return resolved;
}

/**
 * Runs `fn` in `precision` on `device`: fp32 as it is, bf16 under bfloat16 autocast of the device's
 * type. Outputs of autocast ops come back bfloat16; cast with `.float()` where float32 is needed.
 */
export function withPrecision<T>(precision: ResolvedPrecision, device: Device, fn: () => T): T {
  if (precision === 'fp32') return fn();
  return autocast(fn, { device, dtype: 'bfloat16' });
}
