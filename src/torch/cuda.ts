// Devices, threads and autocast.
import { native } from './native.js';
import { dtypeCode, type DType } from './dtype.js';

export const cuda = {
  isAvailable: (): boolean => native.cudaIsAvailable(),
  deviceCount: (): number => native.cudaDeviceCount(),
  synchronize: (): void => native.cudaSynchronize(),
  /** Bytes held by tensors, reserved by the caching allocator, and the peak held, on `device`. */
  memoryStats: (device = 0): { allocated: number; reserved: number; maxAllocated: number } => native.cudaMemoryStats(device),
  emptyCache: (): void => native.cudaEmptyCache(),
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
