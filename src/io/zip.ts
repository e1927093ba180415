// Reading a zip archive's central directory with positioned reads (PKWARE APPNOTE.TXT 4.3), ZIP64
// included, so that entries of archives of any size can be read in place without unpacking.
import { crc32 } from 'node:zlib';
import { readAt } from './file.js';

export interface ZipEntry {
  name: string;
  /** 0 = stored, 8 = deflated, ... (APPNOTE 4.4.5). */
  method: number;
  /** The CRC-32 of the uncompressed bytes the central directory records. */
  crc32: number;
  compressedSize: number;
  size: number;
  localHeaderOffset: number;
}

// Record signatures (APPNOTE 4.3), shared with the .npz writer.
export const EOCD = 0x06054b50;
export const ZIP64_LOCATOR = 0x07064b50;
export const ZIP64_EOCD = 0x06064b50;
export const CENTRAL_HEADER = 0x02014b50;
export const LOCAL_HEADER = 0x04034b50;
const ZIP64_EXTRA = 0x0001;
const MAX_COMMENT = 0xffff;

function view(bytes: Uint8Array): DataView { return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength); }

function uint64(v: DataView, at: number, path: string): number {
  const value = v.getBigUint64(at, true);
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error(`${path}: zip field ${value} is too large`);
  return Number(value);
}

/** The entries of the zip archive open as `fd` (of `size` bytes), by name. */
export function readZipEntries(fd: number, size: number, path: string): Map<string, ZipEntry> {
  const fail = (message: string): never => { throw new Error(`${path}: ${message}`); };
  const tailStart = Math.max(0, size - (22 + MAX_COMMENT));
  const tail = readAt(fd, tailStart, size - tailStart, path);
  const t = view(tail);
  let eocd = -1;
  for (let i = tail.length - 22; i >= 0; i--) {
    if (t.getUint32(i, true) === EOCD && i + 22 + t.getUint16(i + 20, true) === tail.length) { eocd = i; break; }
  }
  if (eocd < 0) fail('not a zip archive, or a truncated one (no end-of-central-directory record)');
  let count = t.getUint16(eocd + 10, true);
  let directorySize = t.getUint32(eocd + 12, true);
  let directoryOffset = t.getUint32(eocd + 16, true);
  if (count === 0xffff || directorySize === 0xffffffff || directoryOffset === 0xffffffff) {
    const locator = eocd - 20;
    if (locator < 0 || t.getUint32(locator, true) !== ZIP64_LOCATOR) fail('ZIP64 archive without a ZIP64 end-of-central-directory locator');
    const recordOffset = uint64(t, locator + 8, path);
    const record = view(readAt(fd, recordOffset, 56, path));
    if (record.getUint32(0, true) !== ZIP64_EOCD) fail(`no ZIP64 end-of-central-directory record at byte ${recordOffset}`);
    count = uint64(record, 32, path);
    directorySize = uint64(record, 40, path);
    directoryOffset = uint64(record, 48, path);
  }
  if (directoryOffset + directorySize > size) fail(`the central directory (bytes ${directoryOffset}..${directoryOffset + directorySize}) lies past the end of the file: truncated`);

  const directory = readAt(fd, directoryOffset, directorySize, path);
  const d = view(directory);
  const names = new TextDecoder('utf-8');
  const entries = new Map<string, ZipEntry>();
  let at = 0;
  for (let i = 0; i < count; i++) {
    if (at + 46 > directory.length || d.getUint32(at, true) !== CENTRAL_HEADER) fail(`corrupt central directory (entry ${i} at byte ${directoryOffset + at})`);
    const nameLength = d.getUint16(at + 28, true);
    const extraLength = d.getUint16(at + 30, true);
    const commentLength = d.getUint16(at + 32, true);
    const name = names.decode(directory.subarray(at + 46, at + 46 + nameLength));
    const entry: ZipEntry = {
      name,
      method: d.getUint16(at + 10, true),
      crc32: d.getUint32(at + 16, true),
      compressedSize: d.getUint32(at + 20, true),
      size: d.getUint32(at + 24, true),
      localHeaderOffset: d.getUint32(at + 42, true),
    };
    // ZIP64 extended information (APPNOTE 4.5.3): 8-byte values for exactly the fields whose
    // 4-byte value is 0xffffffff, in the order size, compressed size, local header offset.
    let extra = at + 46 + nameLength;
    const extraEnd = extra + extraLength;
    while (extra + 4 <= extraEnd) {
      const id = d.getUint16(extra, true);
      const length = d.getUint16(extra + 2, true);
      if (id === ZIP64_EXTRA) {
        let field = extra + 4;
        const next = (): number => {
          if (field + 8 > extra + 4 + length) fail(`entry ${name}: ZIP64 extra field is too short`);
          field += 8;
          return uint64(d, field - 8, path);
        };
        if (entry.size === 0xffffffff) entry.size = next();
        if (entry.compressedSize === 0xffffffff) entry.compressedSize = next();
        if (entry.localHeaderOffset === 0xffffffff) entry.localHeaderOffset = next();
      }
      extra += 4 + length;
    }
    entries.set(name, entry);
    at = extraEnd + commentLength;
  }
  return entries;
}

/** Where the bytes of a stored (uncompressed) entry lie in the file. */
export function storedEntryRange(fd: number, entry: ZipEntry, path: string): { offset: number; length: number } {
  if (entry.method !== 0) throw new Error(`${path}: zip entry ${entry.name} is compressed (method ${entry.method}); only stored entries can be read in place`);
  const local = view(readAt(fd, entry.localHeaderOffset, 30, path));
  if (local.getUint32(0, true) !== LOCAL_HEADER) throw new Error(`${path}: no local header for zip entry ${entry.name} at byte ${entry.localHeaderOffset}`);
  // The local header's extra field may differ from the central directory's (PyTorch pads it to
  // align the data to 64 bytes), so the data offset comes from the local header itself.
  const offset = entry.localHeaderOffset + 30 + local.getUint16(26, true) + local.getUint16(28, true);
  return { offset, length: entry.size };
}

/**
 * Throws unless `crc` (zlib's crc32 of the entry's whole uncompressed bytes) is the one the
 * archive recorded: a flipped or zeroed byte is an error naming the file and entry, not a silently
 * wrong tensor. A recorded 0 on non-empty data means none was computed (torch.save with
 * `torch.serialization.config.save.compute_crc32 = False` writes 0), and is not checked.
 */
export function checkEntryCrc(entry: ZipEntry, crc: number, path: string): void {
  if (entry.crc32 === 0 && entry.size > 0) return;
  if (crc !== entry.crc32) {
    throw new Error(`${path}: zip entry ${entry.name} is corrupt: its bytes have CRC-32 ${hex(crc)}, the archive recorded ${hex(entry.crc32)}`);
  }
}

const hex = (crc: number): string => `0x${crc.toString(16).padStart(8, '0')}`;

/** The bytes of a stored entry, read whole and checked against its CRC-32. */
export function readStoredEntry(fd: number, entry: ZipEntry, path: string): Uint8Array {
  const { offset, length } = storedEntryRange(fd, entry, path);
  const bytes = readAt(fd, offset, length, path);
  checkEntryCrc(entry, crc32(bytes), path);
  return bytes;
}
