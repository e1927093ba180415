// Positioned file reads and atomic writes for formats whose files pass 2 GiB (safetensors, PyTorch
// archives): positions are plain numbers (exact to 2^53) and no single call moves more than 1 GiB,
// below the 2 GiB that one read(2)/write(2) through Node may move.
import { closeSync, fsyncSync, openSync, readSync, renameSync, rmSync, writeSync } from 'node:fs';

const CHUNK = 1 << 30;

/** Exactly `length` bytes at `position` of `fd`; an error naming `path` when the file ends first. */
export function readAt(fd: number, position: number, length: number, path: string): Uint8Array {
  const out = new Uint8Array(length);
  let done = 0;
  while (done < length) {
    const n = readSync(fd, out, done, Math.min(CHUNK, length - done), position + done);
    if (n === 0) throw new Error(`${path}: unexpected end of file (reading ${length} bytes at byte ${position}, the file ends after ${done})`);
    done += n;
  }
  return out;
}

/** Appends all of `data` at the current position of `fd`. */
export function writeAll(fd: number, data: Uint8Array): void {
  let done = 0;
  while (done < data.length) done += writeSync(fd, data, done, Math.min(CHUNK, data.length - done));
}

/**
 * Writes `path` through `write(fd)` into `<path>.tmp-<pid>`, flushes it to disk and renames it over
 * `path`, so a reader (or a crash) sees the old file or the complete new one, never a partial one.
 * When `write` throws, the temporary file is removed and `path` is left as it was.
 */
export function writeFileAtomic(path: string, write: (fd: number) => void): void {
  const tmp = `${path}.tmp-${process.pid}`;
  let fd: number | undefined = openSync(tmp, 'w');
  try {
    write(fd);
    fsyncSync(fd);
    closeSync(fd);
    fd = undefined;
    renameSync(tmp, path);
  } catch (error) {
    if (fd !== undefined) closeSync(fd);
    rmSync(tmp, { force: true });
    throw error;
  }
}
