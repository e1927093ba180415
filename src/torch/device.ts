// Checking a device name before any work: `cpu`, `cuda` or `cuda:N` on a build that has it.
import { native } from './native.js';

/** Throws a one-line error naming `flag` when `device` is not `cpu`, `cuda` or `cuda:N`, or names a CUDA device this build lacks. */
export function checkDevice(device: string | undefined, flag = '--device'): void {
  if (device === undefined || device === 'cpu') return;
  const match = /^cuda(?::(\d+))?$/.exec(device);
  if (match === null) throw new Error(`${flag} ${device}: expected cpu, cuda or cuda:N`);
  const count = native.cudaIsAvailable() ? native.cudaDeviceCount() : 0;
  if (count === 0) throw new Error(`${flag} ${device}: this libtorch build has no CUDA device`);
  const index = match[1] === undefined ? 0 : Number(match[1]);
  if (index >= count) throw new Error(`${flag} ${device}: there ${count === 1 ? 'is 1 CUDA device' : `are ${count} CUDA devices`} (cuda:0${count > 1 ? `..cuda:${count - 1}` : ''})`);
}
