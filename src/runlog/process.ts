// What every long-running command needs to know about its process: one rank of a process group
// or alone, the device it computes on, and a log only rank 0 prints; and the options it was given
// over its defaults.
import * as torch from '../torch/index.js';

const dist = torch.distributed;

export interface ProcessContext {
  /** Whether this process is one of several ranks of the default process group. */
  distributed: boolean;
  rank: number;
  worldSize: number;
  device: torch.Device;
  /** One-line notices; silent on ranks other than 0. */
  log: (line: string) => void;
}

/**
 * The rank and world size of the default process group (0 of 1 without one), the device (the
 * given one, else cuda:LOCAL_RANK when CUDA exists, else cpu), and a rank-0 log (default
 * console.log).
 */
export function processContext(options: { device?: torch.Device; log?: (line: string) => void }): ProcessContext {
  const distributed = dist.isInitialized() && dist.getWorldSize() > 1;
  const rank = distributed ? dist.getRank() : 0;
  const worldSize = distributed ? dist.getWorldSize() : 1;
  const device = options.device ?? (torch.cuda.isAvailable() ? `cuda:${distributed ? dist.getLocalRank() : 0}` : 'cpu');
  if (device !== 'cpu') {
    const count = torch.cuda.deviceCount();
    if (torch.cuda.deviceIndex(device) >= count) {
      throw new Error(`device ${device}: this machine has ${count} CUDA device(s)` +
        (distributed ? ` and this is local rank ${dist.getLocalRank()}: start at most ${count} rank(s) per node, or pass --device cpu` : ''));
    }
  }
  const log = rank === 0 ? options.log ?? ((line: string) => console.log(line)) : () => {};
  return { distributed, rank, worldSize, device, log };
}

/** `defaults` overridden by the options that were given: an explicit `undefined` keeps the default. */
export function withDefaults<T extends object>(defaults: T, options: Partial<T>): T {
  const keys = Object.keys(defaults) as (keyof T)[];
  return { ...defaults, ...Object.fromEntries(keys.filter((k) => options[k] !== undefined).map((k) => [k, options[k]])) };
}
