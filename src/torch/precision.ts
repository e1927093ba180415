// Mixed precision as one setting: 'fp32', 'bf16' (autocast to bfloat16 on the tensors' device) or
// 'auto', which picks bf16 where the hardware runs it fast (CUDA, and CPUs with AMX or AVX512-BF16
// matmul units) and fp32 elsewhere. Only the ops autocast lists run in bfloat16: weights, optimizer
// state and everything outside the region stay float32, as PyTorch's mixed precision.
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { autocast, autocastDeviceType, chosenThreads, LIBTORCH_DEFAULT_THREADS, setRunThreads } from './cuda.js';
import type { Device } from './tensor.js';

export const PRECISIONS = ['fp32', 'bf16', 'auto'] as const;
export type Precision = (typeof PRECISIONS)[number];
/** What a run uses once 'auto' is decided. */
export type ResolvedPrecision = Exclude<Precision, 'auto'>;

/** The CPU feature flags that give bfloat16 matmuls in hardware (oneDNN uses either). */
const BF16_CPU_FLAGS = ['amx_bf16', 'avx512_bf16'];

let cpuBf16: boolean | undefined;

/** Whether this CPU reports amx_bf16 or avx512_bf16 in /proc/cpuinfo (false where there is no such file). */
export function cpuHasBf16(): boolean {
  if (cpuBf16 === undefined) {
    let flags: string[] = [];
    try {
      const line = readFileSync('/proc/cpuinfo', 'utf8').split('\n').find((l) => l.startsWith('flags'));
      flags = line === undefined ? [] : line.slice(line.indexOf(':') + 1).trim().split(/\s+/);
    } catch {
      flags = [];
    }
    cpuBf16 = BF16_CPU_FLAGS.some((flag) => flags.includes(flag));
  }
  return cpuBf16;
}

/** 'auto' becomes bf16 on CUDA and on CPUs with bfloat16 units (cpuHasBf16), fp32 elsewhere; the others stay. */
export function resolvePrecision(precision: Precision, device: Device): ResolvedPrecision {
  if (!(PRECISIONS as readonly string[]).includes(precision)) {
    throw new Error(`precision must be one of ${PRECISIONS.join(', ')}, got '${String(precision)}'`);
  }
  if (precision !== 'auto') return precision;
  return autocastDeviceType(device) === 'cuda' || cpuHasBf16() ? 'bf16' : 'fp32';
}

/** What a run's steps compute, where it decides the threads (runThreads). */
export interface RunWork {
  /**
   * Multiply-adds of the run's typical matmul: for a transformer, the tokens of one forward's batch
   * times its width squared (transformerMatmulMacs).
   */
  matmulMacs?: number;
}

/**
 * Below this many multiply-adds in a run's typical matmul, a bf16 run is faster on one intra-op
 * thread than on two: waking and joining the second thread at each of the step's parallel regions
 * costs more than it saves. Measured on 2 vCPUs (bench/README.md, the thread policy): the tiny
 * walkthrough SiT (512 tokens x 128^2 = 8.4M) trains 1.25-1.5x faster on one thread, idle or
 * loaded; SiT-S/2 sampling at batch 1 (256 x 384^2 = 38M) 1.3-1.8x faster on two.
 */
export const SMALL_MATMUL_MACS = 16e6;

/** A transformer's typical matmul: `tokens` rows (the whole batch's) through a `width` x `width` weight. */
export function transformerMatmulMacs(tokens: number, width: number): number {
  return tokens * width * width;
}

/**
 * The intra-op threads of a run in `precision` on `device`: the count the caller chose
 * (torch.setNumThreads, OMP_NUM_THREADS, MKL_NUM_THREADS), else on the CPU in bf16 every CPU this
 * process may run on (os.availableParallelism()), because oneDNN's bfloat16 matmuls and
 * convolutions run on these threads, or one where the run's matmuls are small (SMALL_MATMUL_MACS);
 * otherwise libtorch's default (OMP_NUM_THREADS, else its physical cores), because float32 matmuls
 * run in the BLAS's own pool, which already takes every CPU, and a second full pool contends with it.
 */
export function runThreads(precision: ResolvedPrecision, device: Device, work: RunWork = {}): number {
  const chosen = chosenThreads();
  if (chosen !== undefined) return chosen;
  if (precision !== 'bf16' || autocastDeviceType(device) !== 'cpu') return LIBTORCH_DEFAULT_THREADS;
  return work.matmulMacs !== undefined && work.matmulMacs < SMALL_MATMUL_MACS ? 1 : availableParallelism();
}

/**
 * resolvePrecision, and runThreads for the run. The trainers, samplers, latent caching, heads and
 * evaluator call it as their run starts; the generator's trainer and samplers say how large their
 * matmuls are.
 */
export function usePrecision(precision: Precision, device: Device, work: RunWork = {}): ResolvedPrecision {
  const resolved = resolvePrecision(precision, device);
  setRunThreads(runThreads(resolved, device, work));
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
