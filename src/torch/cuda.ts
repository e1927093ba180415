// Devices, threads and autocast.
import { native } from './native.js';
import { dtypeCode, type DType } from './dtype.js';
import { Tensor, type Device } from './tensor.js';

/** The index of a CUDA device given as 'cuda', 'cuda:N' or N (as torch.cuda's functions take it). */
function cudaIndex(device: Device | number): number {
  if (typeof device === 'number') return device;
  const match = /^cuda(?::(\d+))?$/.exec(device);
  if (match === null) throw new Error(`expected a CUDA device ('cuda', 'cuda:N' or N), got '${device}'`);
  return match[1] === undefined ? 0 : Number(match[1]);
}

export const cuda = {
  isAvailable: (): boolean => native.cudaIsAvailable(),
  deviceCount: (): number => native.cudaDeviceCount(),
  /** The index of 'cuda' (0), 'cuda:N' or N. */
  deviceIndex: cudaIndex,
  synchronize: (): void => native.cudaSynchronize(),
  /** Bytes held by tensors, reserved by the caching allocator, and the peak held, on `device`. */
  memoryStats: (device = 0): { allocated: number; reserved: number; maxAllocated: number } => native.cudaMemoryStats(device),
  emptyCache: (): void => native.cudaEmptyCache(),
  /** The device's default generator state (uint8 tensor), for exact resume, as torch.cuda.get_rng_state. */
  getRngState: (device: Device | number = 'cuda'): Tensor => new Tensor(native.getRngState(cudaIndex(device))),
  setRngState: (state: Tensor, device: Device | number = 'cuda'): void => native.setRngState(state._handle, cudaIndex(device)),
};

/** libtorch's intra-op thread count when the addon loaded: OMP_NUM_THREADS, else the physical cores it sees. */
export const LIBTORCH_DEFAULT_THREADS = native.getNumThreads();
/** The count the caller chose, with setNumThreads or (read by libtorch) OMP_NUM_THREADS or MKL_NUM_THREADS. */
let threadsChosen: number | undefined =
  ['OMP_NUM_THREADS', 'MKL_NUM_THREADS'].some((name) => (process.env[name] ?? '') !== '') ? LIBTORCH_DEFAULT_THREADS : undefined;

/** As torch.set_num_threads; from then on the runs keep this count (see usePrecision). */
export function setNumThreads(n: number): void {
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`setNumThreads: expected a positive integer, got ${n}`);
  native.setNumThreads(n);
  threadsChosen = n;
}

/** The thread count the caller chose, if any: then every run keeps it. */
export function chosenThreads(): number | undefined { return threadsChosen; }

/**
 * Sets the intra-op thread count for a run. Changing it costs milliseconds (libtorch restarts its
 * pools), so it is only called when the count differs.
 */
export function setRunThreads(n: number): void {
  if (native.getNumThreads() !== n) native.setNumThreads(n);
}
export function getNumThreads(): number { return native.getNumThreads(); }
export function version(): string { return native.version(); }

export type AutocastDevice = 'cpu' | 'cuda';

export interface AutocastOptions {
  /** The device type whose ops are cast: 'cpu', or 'cuda' (default; 'cuda:N' names the same type). */
  device?: Device;
  /** Default bfloat16 on both device types. */
  dtype?: DType;
  enabled?: boolean;
}

/** 'cpu' or 'cuda' for a device name ('cuda:1' is 'cuda'). */
export function autocastDeviceType(device: Device): AutocastDevice {
  if (device === 'cpu') return 'cpu';
  if (/^cuda(:\d+)?$/.test(device)) return 'cuda';
  throw new Error(`autocast: device must be cpu, cuda or cuda:N, got '${device}'`);
}

/**
 * Runs `fn` under autocast on one device type, as `with torch.autocast('cpu', dtype=torch.bfloat16)`:
 * matmuls, linears and convolutions on that device run in `dtype`, reductions and norms stay float32,
 * other devices' ops are unaffected. Nested calls restore the outer state; within the outermost call
 * each float32 weight that requires grad is cast once and reused (libtorch's autocast cache).
 */
export function autocast<T>(fn: () => T, options: AutocastOptions = {}): T {
  const device = autocastDeviceType(options.device ?? 'cuda');
  const previousEnabled = native.isAutocastEnabled(device);
  const previousDtype = native.autocastDtype(device);
  native.enterAutocast(device, options.enabled ?? true, dtypeCode(options.dtype ?? 'bfloat16'));
  try {
    return fn();
  } finally {
    native.exitAutocast(device, previousEnabled, previousDtype);
  }
}
