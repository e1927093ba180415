// The libtorch addon (native/), loaded once. Everything above src/torch talks to it through Tensor.
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

/** A number naming one at::Tensor in the addon's table (generation-checked, so stale ones are refused). */
export type Handle = number & { readonly __handle: unique symbol };
export type GroupHandle = { readonly __group: unique symbol };
export type StoreHandle = { readonly __store: unique symbol };

export interface Native {
  version(): string;
  fromBuffer(data: ArrayBufferView | ArrayBuffer, shape: readonly number[], dtype: number): Handle;
  toBuffer(h: Handle): ArrayBuffer;
  shape(h: Handle): number[];
  stride(h: Handle): number[];
  dim(h: Handle): number;
  numel(h: Handle): number;
  dtype(h: Handle): number;
  device(h: Handle): string;
  isContiguous(h: Handle): boolean;
  dispose(h: Handle): void;
  disposeMany(handles: Float64Array): void;
  /** Disposes `h` when `owner` is garbage collected. */
  attachFinalizer(owner: object, h: Handle): void;
  setData(h: Handle, source: Handle): void;
  liveTensors(): number;
  isDisposed(h: Handle): boolean;
  item(h: Handle): number;
  requiresGrad(h: Handle): boolean;
  setRequiresGrad(h: Handle, value: boolean): void;
  isLeaf(h: Handle): boolean;
  gradFn(h: Handle): string | null;
  grad(h: Handle): Handle | null;
  setGrad(h: Handle, grad: Handle | null): void;
  backward(h: Handle, gradient: Handle | null, retainGraph: boolean | undefined, createGraph: boolean): void;
  autogradGrad(
    outputs: Handle[],
    inputs: Handle[],
    gradOutputs: (Handle | null)[] | null,
    retainGraph: boolean | undefined,
    createGraph: boolean,
    allowUnused: boolean,
  ): (Handle | null)[];
  setGradEnabled(enabled: boolean): void;
  isGradEnabled(): boolean;
  manualSeed(seed: number): void;
  /** The CPU generator's state, or CUDA device `cudaDevice`'s. */
  getRngState(cudaDevice?: number): Handle;
  setRngState(state: Handle, cudaDevice?: number): void;
  setNumThreads(n: number): void;
  getNumThreads(): number;
  /**
   * The threads of OpenBLAS's own pool, where libtorch's BLAS is OpenBLAS's pthread build (float32
   * matmuls run there, not on libtorch's threads); null for any other BLAS.
   */
  openblasThreads(): number | null;
  /** Sets them (openblas_set_num_threads); throws where openblasThreads() is null. */
  setOpenblasThreads(n: number): void;
  /** OpenBLAS's kernel set for this CPU (openblas_get_corename, e.g. 'Haswell'); null for any other BLAS. */
  openblasCoreName(): string | null;
  /** torch.autocast's __enter__ on 'cpu' or 'cuda': sets the state and counts a nesting level. */
  enterAutocast(device: 'cpu' | 'cuda', enabled: boolean, dtype: number): void;
  /** __exit__: restores the given state; leaving the outermost level frees the cast-weight cache. */
  exitAutocast(device: 'cpu' | 'cuda', enabled: boolean, dtype: number): void;
  isAutocastEnabled(device: 'cpu' | 'cuda'): boolean;
  autocastDtype(device: 'cpu' | 'cuda'): number;
  cudaIsAvailable(): boolean;
  cudaDeviceCount(): number;
  cudaSynchronize(): void;
  cudaMemoryStats(device?: number): { allocated: number; reserved: number; maxAllocated: number };
  cudaEmptyCache(): void;
  lookupOp(name: string, overload: string): number;
  hasOp(name: string, overload: string): boolean;
  opReturns(id: number): ('Tensor' | 'Tensor[]' | 'value')[];
  callOp(id: number, ...args: unknown[]): unknown;
  /** An operator of schema (Tensor, Tensor[, Scalar alpha]) -> Tensor through the unboxed dispatcher path. */
  callBinary(id: number, a: Handle, b: Handle, alpha?: number): Handle;
  /** Whether this CPU runs the addon's fused activation kernels (AVX-512); elsewhere geluTanh and silu are libtorch's. */
  fusedActivations(): boolean;
  /** gelu(x, approximate='tanh'): the addon's fused kernel for float32/bfloat16 tensors on AVX-512 CPUs, libtorch's otherwise. */
  geluTanh(x: Handle): Handle;
  /** silu(x): the addon's fused kernel for bfloat16 tensors on AVX-512 CPUs, libtorch's otherwise. */
  silu(x: Handle): Handle;
  /** Whether F.scaledDotProductAttention may run the addon's fused kernel for this dtype here (AVX-512; bfloat16 only without AMX matmuls), for 64 or more queries and keys. */
  fusedAttention(dtype: 'float32' | 'bfloat16'): boolean;
  /**
   * softmax(q k^T * scale) v by the addon's fused kernel (native/src/attention.cc), or null where it does not take
   * the inputs (another device or dtype, E not a multiple of 16 up to 128, no AVX-512) or, unless forceKernel (the
   * tests), where the math path is faster: fewer than 64 queries or keys, bfloat16 with AMX matmuls or needing a gradient.
   */
  attention(q: Handle, k: Handle, v: Handle, scale: number, forceKernel?: boolean): Handle | null;
  /**
   * One Adam/AdamW update in place by the addon's one-pass kernel (native/src/optim.cc): true, or false (nothing
   * done) where it does not take the tensors (not all float32, contiguous, on the CPU, of one shape; no AVX-512).
   */
  adamStep(
    param: Handle, grad: Handle, expAvg: Handle, expAvgSq: Handle, paramFactor: number, l2: number, maximize: boolean,
    beta1: number, beta2: number, stepSize: number, biasCorrection2Sqrt: number, eps: number,
  ): boolean;
  /**
   * layer_norm(x) * (1 + scale) + shift by the addon's one-pass kernel (native/src/adaln.cc), bfloat16 under CPU bfloat16
   * autocast, or null where it does not take the inputs (x not a float32 [N, T, D] CPU tensor, D not a multiple of
   * 16, shift or scale not [N, D] float32 or bfloat16, no AVX-512).
   */
  modulatedLayerNorm(x: Handle, shift: Handle, scale: Handle, eps: number): Handle | null;
  /** x + gate * y by the same kernel file, or null where it does not take the inputs (as modulatedLayerNorm; y float32 or bfloat16 like x). */
  gatedResidual(x: Handle, gate: Handle, y: Handle): Handle | null;
  /**
   * silu(group_norm(x)) in bfloat16 by the addon's one kernel (native/src/groupnorm.cc), or null where it does not take
   * the call (x not a bfloat16 [N, C, ...] CPU tensor, C not a multiple of groups, weight or bias not float32 [C], not
   * under CPU bfloat16 autocast, a gradient wanted, no AVX-512).
   */
  groupNormSilu(x: Handle, groups: number, weight: Handle | null, bias: Handle | null, eps: number): Handle | null;
  /** ema = decay * ema + (1 - decay) * param in place by the same kernel file: true, or false (nothing done) where it does not take the tensors (as adamStep). */
  emaStep(ema: Handle, param: Handle, decay: number): boolean;
  newGroup(
    backend: string, addr: string, port: number, rank: number, worldSize: number, timeoutMs: number, rendezvousTimeoutMs: number,
    hostStore: boolean, storePrefix: string,
  ): GroupHandle;
  newStore(host: string, port: number, isServer: boolean, worldSize: number, waitWorkers: boolean, timeoutMs: number): StoreHandle;
  storeSet(store: StoreHandle, key: string, value: string): void;
  storeGet(store: StoreHandle, key: string): string;
  allReduce(group: GroupHandle, tensors: Handle[], op: string): void;
  broadcast(group: GroupHandle, tensors: Handle[], src: number): void;
  allGather(group: GroupHandle, outputs: Handle[], input: Handle): void;
  barrier(group: GroupHandle): void;
  destroyGroup(group: GroupHandle): void;
  exitWithParent(ppid: number): boolean;
}

/** What reals exports before libtorch loads, unless the user set OMP_WAIT_POLICY or GOMP_SPINCOUNT (waitPolicy). */
export const DEFAULT_WAIT_ENV = { GOMP_SPINCOUNT: '20000' } as const;

/**
 * How OpenMP's threads wait between parallel regions, and who chose it. libtorch's intra-op pool
 * and oneDNN's are libgomp's, which by default spins 300,000 turns at the end of every parallel
 * region before it sleeps. On a machine where another process holds a core, a spinning thread
 * keeps its time slice from it, and a step of thousands of small regions waits on it every time:
 * a tiny SiT trained 12x slower next to one busy loop on 2 cores. Waiting passively (a futex sleep)
 * avoids that but makes every wake-up slow: on an idle machine small steps took 1.7-2.3x as long.
 * reals bounds the spin to 20,000 turns (fast wake-ups on an idle machine, bench/README.md's thread
 * policy) and leaves the busy machine to the thread governor (threads.ts), which drops to one
 * thread, where nothing waits, while other processes take the CPUs. libgomp reads the setting once,
 * when it loads, so it is set before the addon loads; a user's own OMP_WAIT_POLICY or
 * GOMP_SPINCOUNT is left alone.
 */
export const waitPolicy: { value: string; source: 'reals default' | 'OMP_WAIT_POLICY' | 'GOMP_SPINCOUNT' } = (() => {
  const set = (name: string): boolean => (process.env[name] ?? '') !== '';
  // Child processes (the ranks of reals launch) inherit the variable; the marker says whose it is.
  const inherited = process.env.REALS_DEFAULT_WAIT_POLICY === '1' && !set('OMP_WAIT_POLICY') &&
    process.env.GOMP_SPINCOUNT === DEFAULT_WAIT_ENV.GOMP_SPINCOUNT;
  if (!inherited && set('OMP_WAIT_POLICY')) return { value: process.env.OMP_WAIT_POLICY!.toUpperCase(), source: 'OMP_WAIT_POLICY' as const };
  if (!inherited && set('GOMP_SPINCOUNT')) return { value: `spin ${process.env.GOMP_SPINCOUNT}`, source: 'GOMP_SPINCOUNT' as const };
  Object.assign(process.env, DEFAULT_WAIT_ENV);
  process.env.REALS_DEFAULT_WAIT_POLICY = '1';
  return { value: `spin ${DEFAULT_WAIT_ENV.GOMP_SPINCOUNT}`, source: 'reals default' as const };
})();

function load(): Native {
  const root = join(dirname(fileURLToPath(import.meta.url)), '../..');
  const path = process.env.REALS_NATIVE ?? join(root, 'native/build/reals.node');
  if (!existsSync(path)) {
    throw new Error(`reals: the libtorch addon ${path} is not built; run \`npm run build:native\` (see README)`);
  }
  return createRequire(import.meta.url)(path) as Native;
}

export const native: Native = load();
