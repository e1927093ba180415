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

export function setNumThreads(n: number): void {
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`setNumThreads: expected a positive integer, got ${n}`);
  native.setNumThreads(n);
}
export function getNumThreads(): number { return native.getNumThreads(); }
export function version(): string { return native.version(); }

/**
 * Runs `fn` under CUDA autocast (as `with torch.autocast('cuda', dtype=torch.bfloat16)`): matmuls
 * and convolutions run in `dtype`, reductions and norms stay float32. CPU ops are unaffected.
 */
export function autocast<T>(fn: () => T, options: { dtype?: DType; enabled?: boolean } = {}): T {
  const previousEnabled = native.isAutocastEnabled();
  const previousDtype = native.autocastDtype();
  native.setAutocast(options.enabled ?? true, dtypeCode(options.dtype ?? 'bfloat16'));
  try {
    return fn();
  } finally {
    native.setAutocast(previousEnabled, previousDtype);
  }
}
