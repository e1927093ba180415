// File names and file reads for data folders that may hold anything. Names are bytes on Linux, not
// necessarily UTF-8: they are carried as strings the way Python carries them (os.fsdecode, the
// surrogateescape error handler: a byte that is not part of valid UTF-8 becomes U+DC80..U+DCFF)
// and turned back into the same bytes to open them, so a Latin-1 `café.png` is read, as
// torchvision reads it. Reads take regular files only, up to a size bound: a FIFO, a device such as
// /dev/zero, or a folder named like an image is an error for that one file, not a hang.
import { closeSync, constants, fstatSync, openSync, readdirSync, readSync, statSync, type Dirent, type Stats } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/** The length of the valid UTF-8 sequence starting at `at` (RFC 3629's table), or 0. */
function utf8SequenceLength(bytes: Uint8Array, at: number): number {
  const b0 = bytes[at]!;
  const continuation = (i: number, low = 0x80, high = 0xbf): boolean => at + i < bytes.length && bytes[at + i]! >= low && bytes[at + i]! <= high;
  if (b0 < 0x80) return 1;
  if (b0 >= 0xc2 && b0 <= 0xdf) return continuation(1) ? 2 : 0;
  if (b0 >= 0xe0 && b0 <= 0xef) {
    const [low, high] = b0 === 0xe0 ? [0xa0, 0xbf] : b0 === 0xed ? [0x80, 0x9f] : [0x80, 0xbf];
    return continuation(1, low, high) && continuation(2) ? 3 : 0;
  }
  if (b0 >= 0xf0 && b0 <= 0xf4) {
    const [low, high] = b0 === 0xf0 ? [0x90, 0xbf] : b0 === 0xf4 ? [0x80, 0x8f] : [0x80, 0xbf];
    return continuation(1, low, high) && continuation(2) && continuation(3) ? 4 : 0;
  }
  return 0;
}

/** A file name's bytes as Python's os.fsdecode gives them: UTF-8, each undecodable byte as U+DC00 + byte. */
export function fsDecode(bytes: Uint8Array): string {
  try {
    return strictUtf8.decode(bytes);
  } catch {
    let out = '';
    for (let at = 0; at < bytes.length;) {
      const length = utf8SequenceLength(bytes, at);
      out += length === 0 ? String.fromCharCode(0xdc00 + bytes[at]!) : strictUtf8.decode(bytes.subarray(at, at + length));
      at += Math.max(length, 1);
    }
    return out;
  }
}

/** The bytes of a path fsDecode made (os.fsencode): the path itself when it holds no escaped byte. */
export function fsEncode(path: string): string | Buffer {
  if (!/[\udc80-\udcff]/.test(path)) return path;
  const parts: Buffer[] = [];
  for (const char of path) {
    const code = char.codePointAt(0)!;
    parts.push(code >= 0xdc80 && code <= 0xdcff ? Buffer.of(code - 0xdc00) : Buffer.from(char, 'utf8'));
  }
  return Buffer.concat(parts);
}

/** The entries of folder `dir` with their names as fsDecode gives them. */
export function readDirectory(dir: string): { name: string; entry: Dirent<Buffer> }[] {
  return readdirSync(fsEncode(dir), { withFileTypes: true, encoding: 'buffer' }).map((entry) => ({ name: fsDecode(entry.name), entry }));
}

/** stat(2) of a path fsDecode made, following links; undefined when it does not exist. */
export function statPath(path: string): Stats | undefined {
  return statSync(fsEncode(path), { throwIfNoEntry: false });
}

/** Every regular file under `dir` (links followed, each folder once), as paths joined to `dir`. */
export function listRegularFiles(dir: string): string[] {
  const out: string[] = [];
  const seen = new Set<string>();
  const visit = (folder: string): void => {
    const stats = statPath(folder);
    // A link back to a folder above would otherwise be walked until the path is too long.
    if (stats === undefined || seen.has(`${stats.dev}:${stats.ino}`)) return;
    seen.add(`${stats.dev}:${stats.ino}`);
    for (const { name } of readDirectory(folder)) {
      const path = join(folder, name);
      const target = statPath(path);
      if (target?.isDirectory()) visit(path);
      else if (target?.isFile()) out.push(path);
    }
  };
  visit(dir);
  return out;
}

function describe(stats: Stats): string {
  if (stats.isFIFO()) return 'a FIFO';
  if (stats.isCharacterDevice()) return 'a character device';
  if (stats.isBlockDevice()) return 'a block device';
  if (stats.isDirectory()) return 'a folder';
  if (stats.isSocket()) return 'a socket';
  return 'not a file';
}

function checkRegular(stats: Stats, maxBytes: number): void {
  if (!stats.isFile()) throw new Error(`not a regular file (${describe(stats)})`);
  if (stats.size > maxBytes) throw new Error(`${stats.size} bytes, over the limit of ${maxBytes}`);
}

/** readRegularFile on this thread. */
export function readRegularFileSync(path: string, maxBytes: number): Buffer {
  const fd = openSync(fsEncode(path), constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    const stats = fstatSync(fd);
    checkRegular(stats, maxBytes);
    const bytes = Buffer.allocUnsafe(stats.size);
    let done = 0;
    while (done < bytes.length) {
      const read = readSync(fd, bytes, done, bytes.length - done, done);
      if (read === 0) break;
      done += read;
    }
    return bytes.subarray(0, done);
  } finally {
    closeSync(fd);
  }
}

/**
 * The bytes of the regular file at `path` (a path fsDecode made), at most `maxBytes`. The file is
 * opened without blocking (a FIFO with no writer would block open(2)) and checked with fstat on
 * that descriptor, so what is read is what was checked.
 */
export async function readRegularFile(path: string, maxBytes: number): Promise<Buffer> {
  const handle = await open(fsEncode(path), constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    const stats = await handle.stat();
    checkRegular(stats, maxBytes);
    const bytes = Buffer.allocUnsafe(stats.size);
    let done = 0;
    while (done < bytes.length) {
      const { bytesRead } = await handle.read(bytes, done, bytes.length - done, done);
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    return bytes.subarray(0, done);
  } finally {
    await handle.close();
  }
}
