// Positioned file reads and atomic writes for formats whose files pass 2 GiB (safetensors, PyTorch
// archives): positions are plain numbers (exact to 2^53) and no single call moves more than 1 GiB,
// below the 2 GiB that one read(2)/write(2) through Node may move.
import { createHash } from 'node:crypto';
import { closeSync, constants, fstatSync, fsyncSync, mkdirSync, openSync, readSync, readdirSync, renameSync, rmSync, rmdirSync, statSync, writeSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';

const CHUNK = 1 << 30;

/**
 * `error` with `path` in its message when it is a system error that does not name it (read(2)
 * and write(2) errors such as EISDIR or ENOSPC say only "read" or "write"); the code is kept.
 */
export function namingPath(error: unknown, path: string): unknown {
  const e = error as NodeJS.ErrnoException;
  if (typeof e?.code !== 'string' || e.message.includes(path)) return error;
  const named: NodeJS.ErrnoException = new Error(`${path}: ${e.message}${REASONS[e.code] ? ` (${REASONS[e.code]})` : ''}`, { cause: error });
  named.code = e.code;
  return named;
}

const REASONS: Record<string, string> = {
  EISDIR: 'a folder where a file was expected', ENOSPC: 'the device is full', EROFS: 'a read-only file system',
  EDQUOT: 'the disk quota is used up', EACCES: 'permission denied', EPERM: 'not permitted', ENOTDIR: 'a part of the path is a file',
};

/**
 * Opens `path` for reading if it is a regular file. The open does not block (O_NONBLOCK: a FIFO
 * would wait for a writer forever) and fstat checks the file that was opened, so a FIFO, a device
 * such as /dev/zero or a folder named like a checkpoint or an array is an error naming it, not a
 * hang or an endless read.
 */
export function openRegularFile(path: string): number {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (error) {
    throw namingPath(error, path);
  }
  const stats = fstatSync(fd);
  if (!stats.isFile()) {
    closeSync(fd);
    const kind = stats.isFIFO() ? 'a FIFO' : stats.isCharacterDevice() || stats.isBlockDevice() ? 'a device' : stats.isDirectory() ? 'a folder' : 'not a file';
    throw new Error(`${path}: not a regular file (${kind})`);
  }
  return fd;
}

/** Exactly `length` bytes at `position` of `fd`; an error naming `path` when the file ends first. */
export function readAt(fd: number, position: number, length: number, path: string): Uint8Array {
  const out = new Uint8Array(length);
  let done = 0;
  while (done < length) {
    let n: number;
    try {
      n = readSync(fd, out, done, Math.min(CHUNK, length - done), position + done);
    } catch (error) {
      throw namingPath(error, path);
    }
    if (n === 0) throw new Error(`${path}: unexpected end of file (reading ${length} bytes at byte ${position}, the file ends after ${done})`);
    done += n;
  }
  return out;
}

/** SHA-256 (hex) of a regular file's bytes, read 16 MiB at a time. */
export function fileSha256(path: string): string {
  const hash = createHash('sha256');
  const fd = openRegularFile(path);
  try {
    const size = fstatSync(fd).size;
    for (let position = 0; position < size; position += HASH_CHUNK) hash.update(readAt(fd, position, Math.min(HASH_CHUNK, size - position), path));
  } finally {
    closeSync(fd);
  }
  return hash.digest('hex');
}

const HASH_CHUNK = 16 << 20;

/** Appends all of `data` at the current position of `fd`; an error names `path` when given. */
export function writeAll(fd: number, data: Uint8Array, path?: string): void {
  let done = 0;
  try {
    while (done < data.length) done += writeSync(fd, data, done, Math.min(CHUNK, data.length - done));
  } catch (error) {
    throw path === undefined ? error : namingPath(error, path);
  }
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
    throw namingPath(error, path);
  }
}

/** Whether process `pid` runs on this machine (EPERM: it does, as another user's). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Removes the temporaries `<name>.<marker>-<pid>` (marker `tmp`: writeFileAtomic's, NpzWriter's;
 * `incomplete`: downloads') in `dir` whose name passes `matches` and whose process is gone: a
 * write killed before its rename leaves one, and nothing else ever removes it. Returns the names
 * removed.
 */
export function removeDeadTemporaries(dir: string, matches: (name: string) => boolean = () => true, marker: 'tmp' | 'incomplete' = 'tmp'): string[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw namingPath(error, dir);
  }
  const removed: string[] = [];
  for (const name of names) {
    const match = new RegExp(`\\.${marker}-(\\d+)$`).exec(name);
    if (match === null || !matches(name) || processAlive(Number(match[1]))) continue;
    rmSync(join(dir, name), { force: true });
    removed.push(name);
  }
  return removed;
}

/**
 * mkdir -p with one mkdir(2) per missing folder, from the nearest one that exists: Node's
 * recursive mkdirSync spins forever where mkdir says ENOENT under a folder that exists (procfs),
 * and reports the deepest path with the wrong code (ENOENT for EROFS). The error names `what`
 * (a flag, say), the folder that could not be made and why.
 */
export function makeDirs(dir: string, what = 'folder'): void {
  const fail = (message: string, code?: string): never => {
    const error: NodeJS.ErrnoException = new Error(`${what} ${dir}: ${message}`);
    if (code !== undefined) error.code = code;
    throw error;
  };
  const missing: string[] = [];
  for (let at = resolve(dir); ; at = dirname(at)) {
    let isDirectory: boolean | null = null;
    try {
      isDirectory = statSync(at, { throwIfNoEntry: false })?.isDirectory() ?? null;
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      fail(`cannot reach ${at}: ${code}${REASONS[code!] ? ` (${REASONS[code!]})` : ''}`, code);
    }
    if (isDirectory === true) break;
    if (isDirectory === false) fail(`${at} exists and is not a folder`, 'ENOTDIR');
    missing.unshift(at);
    if (dirname(at) === at) break;
  }
  for (const folder of missing) mkdirOne(folder, `${what} ${dir}`);
}

/** One mkdir(2); an error names `where` and the folder (an existing folder is fine: a race). */
function mkdirOne(folder: string, where: string): void {
  try {
    mkdirSync(folder);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code!;
    if (code === 'EEXIST' && statSync(folder).isDirectory()) return;
    const reason = code === 'ENOENT' ? 'its parent exists but takes no new folders (a virtual file system such as /proc?)' : REASONS[code];
    throw Object.assign(new Error(`${where}: cannot create the folder ${folder}: ${code}${reason ? ` (${reason})` : ''}`), { code });
  }
}

/**
 * Makes sure `dir` exists and takes new files, before any work that would write there: makeDirs,
 * then a file created and removed. Bounded: a handful of system calls, whatever the file system.
 */
export function ensureWritableDir(dir: string, what = 'folder'): void {
  makeDirs(dir, what);
  probeFile(dir, what);
}

/**
 * Whether `dir` could be made and written, leaving no trace: an existing folder takes a file
 * (created and removed); a missing one, its first missing folder (made and removed) under the
 * nearest folder that exists. For a check before any work, when bad input must write nothing.
 */
export function checkWritableDir(dir: string, what = 'folder'): void {
  // Ranks that check one folder at once make and remove it under each other: a folder seen a moment
  // ago can be gone (ENOENT), so that is tried again, a bounded number of times.
  for (let attempt = 1; ; attempt++) {
    try {
      return checkWritableDirOnce(dir, what);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT' || attempt === 20) throw error;
    }
  }
}

function checkWritableDirOnce(dir: string, what: string): void {
  const target = resolve(dir);
  let first: string | null = null;
  for (let at = target; ; at = dirname(at)) {
    let stats;
    try {
      stats = statSync(at, { throwIfNoEntry: false });
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code!;
      throw Object.assign(new Error(`${what} ${dir}: cannot reach ${at}: ${code}${REASONS[code] ? ` (${REASONS[code]})` : ''}`), { code });
    }
    if (stats !== undefined) {
      if (!stats.isDirectory()) throw Object.assign(new Error(`${what} ${dir}: ${at} exists and is not a folder`), { code: 'ENOTDIR' });
      break;
    }
    first = at;
    if (dirname(at) === at) break;
  }
  if (first === null) return probeFile(target, what);
  mkdirOne(first, `${what} ${dir}`);
  try {
    rmdirSync(first);
  } catch (error) {
    // Another rank checking at the same moment removed it, or began to fill it.
    if (!['ENOENT', 'ENOTEMPTY', 'EEXIST'].includes((error as NodeJS.ErrnoException).code!)) throw error;
  }
}

function probeFile(dir: string, what: string): void {
  const probe = join(dir, `.reals-write-check-${process.pid}`);
  try {
    closeSync(openSync(probe, 'w'));
    rmSync(probe);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code!;
    const e: NodeJS.ErrnoException = new Error(`${what} ${dir}: cannot write there: ${code}${REASONS[code] ? ` (${REASONS[code]})` : ''}`);
    e.code = code;
    throw e;
  }
}
