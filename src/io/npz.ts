// NumPy's .npy and .npz files (numpy/lib/format.py; an .npz is a zip archive of .npy files named
// `<key>.npy`, as np.savez writes it). Reading is in place and in row ranges, so an array larger
// than memory (an ADM sample batch: 50,000 x 256 x 256 x 3 bytes) streams in chunks; writing
// streams rows in too, with ZIP64 records where sizes or offsets pass 4 GiB, and gives files that
// np.load reads. Whole arrays, and arrays streamed to their end, are checked against the CRC-32
// the archive records; a row range read in place (readRows) is not, unless verify() checked the array.
// One file past 500 lines: the reader and the writer share the ZIP (and ZIP64) records they parse and write.
import { closeSync, createReadStream, fsyncSync, openSync, fstatSync, renameSync, rmSync, writeSync } from 'node:fs';
import { createInflateRaw, crc32, inflateRawSync, constants as zlibConstants } from 'node:zlib';
import * as torch from '../torch/index.js';
import type { DType, Tensor } from '../torch/index.js';
import { openRegularFile, readAt, writeAll, writeFileAtomic } from './file.js';
import {
  checkEntryCrc, readStoredEntry, readZipEntries, storedEntryRange, type ZipEntry, LOCAL_HEADER, CENTRAL_HEADER, ZIP64_EOCD, ZIP64_LOCATOR, EOCD,
} from './zip.js';

/** What an .npy header says about its array. */
export interface NpyHeader {
  dtype: DType;
  shape: number[];
  /** Bytes before the array data (magic, version, header length, header text). */
  headerLength: number;
}

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY

// numpy's array-protocol type strings for the dtypes reals has ('<' little-endian, '|' not
// applicable); numpy has no bfloat16.
const DESCR_DTYPE: Record<string, DType> = {
  '|u1': 'uint8', '|i1': 'int8', '<i2': 'int16', '<i4': 'int32', '<i8': 'int64',
  '<f2': 'float16', '<f4': 'float32', '<f8': 'float64', '|b1': 'bool',
};
const DTYPE_DESCR = Object.fromEntries(Object.entries(DESCR_DTYPE).map(([descr, dtype]) => [dtype, descr])) as Partial<Record<DType, string>>;

function rowBytes(header: NpyHeader): number {
  return header.shape.slice(1).reduce((a, b) => a * b, torch.BYTES_PER_ELEMENT[header.dtype]);
}

function dataBytes(header: NpyHeader): number {
  return header.shape.reduce((a, b) => a * b, torch.BYTES_PER_ELEMENT[header.dtype]);
}

/** The bytes before an .npy file's data, from its first 12 bytes (Infinity when fewer are given). */
function npyHeaderLength(bytes: Uint8Array): number {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.length >= 10 && bytes[6] === 1) return 10 + v.getUint16(8, true);
  return bytes.length >= 12 ? 12 + v.getUint32(8, true) : Infinity;
}

/**
 * Parses the start of an .npy file (format versions 1.0, 2.0 and 3.0). `bytes` must hold the
 * whole header; `source` names the file (and array) in errors.
 */
export function parseNpyHeader(bytes: Uint8Array, source: string): NpyHeader {
  const fail = (message: string): never => { throw new Error(`${source}: ${message}`); };
  if (bytes.length < 10 || MAGIC.some((b, i) => bytes[i] !== b)) fail('not an .npy array (no \\x93NUMPY magic)');
  const major = bytes[6]!;
  if (major < 1 || major > 3) fail(`unknown .npy format version ${major}.${bytes[7]}`);
  const lengthSize = major === 1 ? 2 : 4;
  const headerLength = npyHeaderLength(bytes);
  if (headerLength > bytes.length) fail(`truncated .npy header (${headerLength} bytes expected)`);
  const text = new TextDecoder(major === 3 ? 'utf-8' : 'latin1').decode(bytes.subarray(8 + lengthSize, headerLength));
  let header: Map<string, PyLiteral>;
  try {
    header = parseHeaderDict(text);
  } catch (error) {
    return fail(`cannot parse the .npy header (${(error as Error).message}): ${text.trim()}`);
  }
  const keys = [...header.keys()].sort();
  if (keys.join() !== 'descr,fortran_order,shape') fail(`the .npy header has the keys [${keys.join(', ')}]; numpy requires exactly descr, fortran_order, shape`);
  const descr = header.get('descr');
  if (typeof descr !== 'string') return fail(`unsupported .npy dtype (only plain numeric dtypes, not structured ones): ${text.trim()}`);
  const dtype = DESCR_DTYPE[descr] ?? DESCR_DTYPE[descr.replace(/^[=<|]/, descr.endsWith('1') ? '|' : '<')];
  if (dtype === undefined) return fail(`unsupported .npy dtype '${descr}' (reals reads ${Object.keys(DESCR_DTYPE).join(', ')})`);
  const fortranOrder = header.get('fortran_order');
  if (typeof fortranOrder !== 'boolean') fail(`the .npy header's fortran_order is not a bool: ${text.trim()}`);
  if (fortranOrder) fail('Fortran-ordered arrays are not supported (save with np.ascontiguousarray)');
  const shapeValue = header.get('shape');
  const dims = shapeValue instanceof PyTuple ? shapeValue.items.filter((d) => typeof d === 'bigint') : [];
  if (!(shapeValue instanceof PyTuple) || dims.length !== shapeValue.items.length) return fail(`the .npy header's shape is not a tuple of integers: ${text.trim()}`);
  if (dims.some((d) => d < 0n || d > BigInt(Number.MAX_SAFE_INTEGER))) fail(`bad .npy shape (${dims.join(', ')})`);
  const shape = dims.map(Number);
  return { dtype, shape, headerLength };
}

/** A tuple in an .npy header (a list is kept apart from it, as numpy refuses a list for the shape). */
class PyTuple { constructor(readonly items: PyLiteral[]) {} }
type PyLiteral = string | bigint | number | boolean | null | PyTuple | PyLiteral[] | Map<string, PyLiteral>;

/**
 * The .npy header text as numpy reads it, with ast.literal_eval: a dict literal of strings,
 * integers, floats, True/False/None, tuples and lists, followed by nothing but whitespace. Of a
 * repeated key the last one counts, as in any Python dict display.
 */
function parseHeaderDict(text: string): Map<string, PyLiteral> {
  let at = 0;
  const skip = (): void => { while (at < text.length && ' \t\n\r'.includes(text[at]!)) at++; };
  const expect = (c: string): void => {
    skip();
    if (text[at] !== c) throw new Error(`expected '${c}' at character ${at}`);
    at++;
  };
  const items = (close: string, depth: number): PyLiteral[] => {
    const out: PyLiteral[] = [];
    for (skip(); text[at] !== close; skip()) {
      out.push(value(depth));
      skip();
      if (text[at] === ',') at++;
      else if (text[at] !== close) throw new Error(`expected ',' or '${close}' at character ${at}`);
    }
    at++;
    return out;
  };
  const value = (depth: number): PyLiteral => {
    // Headers hold a dict of flat values; deep nesting is malformed, and would exhaust the stack.
    if (depth > 16) throw new Error('nested too deeply');
    skip();
    const c = text[at];
    if (c === '{') {
      at++;
      const dict = new Map<string, PyLiteral>();
      for (skip(); text[at] !== '}'; skip()) {
        const key = value(depth + 1);
        if (typeof key !== 'string') throw new Error(`a key that is not a string at character ${at}`);
        expect(':');
        dict.set(key, value(depth + 1));
        skip();
        if (text[at] === ',') at++;
        else if (text[at] !== '}') throw new Error(`expected ',' or '}' at character ${at}`);
      }
      at++;
      return dict;
    }
    if (c === '(') {
      at++;
      return new PyTuple(items(')', depth + 1));
    }
    if (c === '[') {
      at++;
      return items(']', depth + 1);
    }
    if (c === "'" || c === '"') {
      const end = text.indexOf(c, at + 1);
      if (end < 0) throw new Error(`an unterminated string at character ${at}`);
      const body = text.slice(at + 1, end);
      if (body.includes('\\') || body.includes('\n')) throw new Error(`an escape or line break in a string at character ${at}`);
      at = end + 1;
      return body;
    }
    const token = /^(?:True|False|None|[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?)/.exec(text.slice(at, at + 64))?.[0];
    if (token === undefined) throw new Error(`unexpected ${c === undefined ? 'end' : `'${c}'`} at character ${at}`);
    at += token.length;
    if (token === 'True' || token === 'False') return token === 'True';
    if (token === 'None') return null;
    return /^[-+]?\d+$/.test(token) ? BigInt(token) : Number(token);
  };
  const dict = value(0);
  skip();
  if (at !== text.length) throw new Error(`text after the dict at character ${at}`);
  if (!(dict instanceof Map)) throw new Error('not a dict');
  return dict;
}

/** The .npy header for an array of `dtype` and `shape` (version 1.0, padded to 64 bytes as numpy does). */
export function encodeNpyHeader(dtype: DType, shape: readonly number[]): Uint8Array {
  const descr = DTYPE_DESCR[dtype];
  if (descr === undefined) throw new Error(`.npy: numpy has no ${dtype}; convert the tensor first (e.g. .float())`);
  const shapeText = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(', ')})`;
  let text = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${shapeText}, }`;
  const major = text.length + 11 < 65536 ? 1 : 2;
  const prefix = major === 1 ? 10 : 12;
  text += ' '.repeat((64 - ((prefix + text.length + 1) % 64)) % 64) + '\n';
  const out = new Uint8Array(prefix + text.length);
  out.set(MAGIC);
  out[6] = major;
  const v = new DataView(out.buffer);
  if (major === 1) v.setUint16(8, text.length, true);
  else v.setUint32(8, text.length, true);
  out.set(new TextEncoder().encode(text), prefix);
  return out;
}

function tensorBytes(t: Tensor): Uint8Array {
  const values = t.contiguous().cpu().toArray();
  return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
}

/** Writes one tensor as an .npy file (atomically). */
export function saveNpy(path: string, t: Tensor): void {
  const header = encodeNpyHeader(t.dtype, t.shape);
  const data = tensorBytes(t);
  writeFileAtomic(path, (fd) => { writeAll(fd, header); writeAll(fd, data); });
}

/** Reads an .npy file into a tensor. */
export function loadNpy(path: string): Tensor {
  const fd = openRegularFile(path);
  try {
    const size = fstatSync(fd).size;
    const header = parseNpyHeader(readAt(fd, 0, Math.min(size, 1 << 16), path), path);
    if (header.headerLength + dataBytes(header) > size) throw new Error(`${path}: truncated (${dataBytes(header)} bytes of data expected)`);
    return torch.fromArray(readAt(fd, header.headerLength, dataBytes(header), path), header.shape, header.dtype);
  } finally {
    closeSync(fd);
  }
}

const VERIFY_CHUNK = 1 << 26;

/** Deflate's largest expansion (zlib's technical details: 258 bytes from a 2-bit code at best). */
const MAX_DEFLATE_RATIO = 1032;

/**
 * An open .npz archive. Arrays stored uncompressed (np.savez) are read in place, any row range
 * at a time; compressed ones (np.savez_compressed) are inflated whole by `get` and streamed by
 * `rows`. Close it when done.
 */
export class NpzFile {
  private readonly fd: number;
  private readonly entries: Map<string, ZipEntry>;
  private readonly headers = new Map<string, NpyHeader>();

  private constructor(readonly path: string) {
    this.fd = openRegularFile(path);
    try {
      this.entries = readZipEntries(this.fd, fstatSync(this.fd).size, path);
    } catch (error) {
      closeSync(this.fd);
      throw error;
    }
  }

  static open(path: string): NpzFile { return new NpzFile(path); }

  close(): void { closeSync(this.fd); }

  /** The array names, as np.load(path).files. */
  keys(): string[] { return [...this.entries.keys()].filter((k) => k.endsWith('.npy')).map((k) => k.slice(0, -4)); }

  has(name: string): boolean { return this.entries.has(`${name}.npy`); }

  private entry(name: string): ZipEntry {
    const entry = this.entries.get(`${name}.npy`);
    if (entry === undefined) throw new Error(`${this.path}: no array '${name}' (the file holds: ${this.keys().join(', ') || 'nothing'})`);
    if (entry.method !== 0 && entry.method !== 8) throw new Error(`${this.path}: array '${name}' uses zip compression method ${entry.method}; only stored and deflated are read`);
    if (entry.method === 0 ? entry.size !== entry.compressedSize : entry.size > entry.compressedSize * MAX_DEFLATE_RATIO + 64) {
      throw new Error(`${this.path}: array '${name}' declares ${entry.size} bytes from ${entry.compressedSize} ${entry.method === 0 ? 'stored' : 'compressed'} bytes, which ${entry.method === 0 ? 'must be equal' : `deflate cannot expand past ${MAX_DEFLATE_RATIO}:1`}`);
    }
    return entry;
  }

  /** The dtype and shape of array `name`, from its header alone. */
  header(name: string): NpyHeader {
    let header = this.headers.get(name);
    if (header === undefined) {
      const entry = this.entry(name);
      const source = `${this.path}: ${name}`;
      let start: Uint8Array;
      if (entry.method === 0) {
        const { offset, length } = storedEntryRange(this.fd, entry, this.path);
        start = readAt(this.fd, offset, Math.min(length, 1 << 16), this.path);
      } else {
        // The header sits in the first bytes; a sync flush inflates a prefix without the rest. A
        // short prefix first: 4 KiB inflates to at most 4 MiB, the 64 KiB a long header may need
        // to 64 MiB.
        const { offset } = this.compressedRange(entry);
        start = new Uint8Array(0);
        for (const length of [1 << 12, 1 << 16]) {
          const prefix = readAt(this.fd, offset, Math.min(entry.compressedSize, length), this.path);
          start = inflateRawSync(prefix, { finishFlush: zlibConstants.Z_SYNC_FLUSH });
          if (npyHeaderLength(start) <= start.length || prefix.length === entry.compressedSize) break;
        }
      }
      header = parseNpyHeader(start, source);
      if (header.headerLength + dataBytes(header) !== entry.size) {
        throw new Error(`${source}: the header's ${header.dtype} [${header.shape}] needs ${dataBytes(header)} bytes of data, the entry holds ${entry.size - header.headerLength}`);
      }
      this.headers.set(name, header);
    }
    return header;
  }

  // storedEntryRange's offset arithmetic (from the local header) holds for any method.
  private compressedRange(entry: ZipEntry): { offset: number; length: number } {
    const { offset } = storedEntryRange(this.fd, { ...entry, method: 0 }, this.path);
    return { offset, length: entry.compressedSize };
  }

  /** The whole array `name` as a tensor (its CRC-32 checked). */
  get(name: string): Tensor {
    const entry = this.entry(name);
    const header = this.header(name);
    let bytes: Uint8Array;
    if (entry.method === 0) {
      bytes = readStoredEntry(this.fd, entry, this.path);
    } else {
      const { offset, length } = this.compressedRange(entry);
      try {
        // One byte past the declared size is enough to tell an overrun: zlib stops there.
        bytes = inflateRawSync(readAt(this.fd, offset, length, this.path), { maxOutputLength: entry.size + 1 });
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ERR_BUFFER_TOO_LARGE') throw error;
        throw new Error(`${this.path}: array '${name}' inflates to more than the ${entry.size} bytes the zip directory says`, { cause: error });
      }
      if (bytes.length !== entry.size) throw new Error(`${this.path}: array '${name}' inflates to ${bytes.length} bytes, the zip directory says ${entry.size}`);
      checkEntryCrc(entry, crc32(bytes), this.path);
    }
    return torch.fromArray(bytes.subarray(header.headerLength), header.shape, header.dtype);
  }

  /**
   * Checks array `name` against its CRC-32 without keeping it: a stored array is read in 64 MiB
   * pieces, a compressed one inflated. What readRows then reads of it is what was written.
   */
  verify(name: string): void {
    const entry = this.entry(name);
    if (entry.method !== 0) {
      this.get(name).dispose();
      return;
    }
    const { offset, length } = storedEntryRange(this.fd, entry, this.path);
    let crc = 0;
    for (let done = 0; done < length; done += VERIFY_CHUNK) crc = crc32(readAt(this.fd, offset + done, Math.min(VERIFY_CHUNK, length - done), this.path), crc);
    checkEntryCrc(entry, crc, this.path);
  }

  /** Rows [start, start + count) of the stored (uncompressed) array `name`, read in place (not checked: see verify). */
  readRows(name: string, start: number, count: number): Tensor {
    const entry = this.entry(name);
    const header = this.header(name);
    const rows = header.shape[0] ?? 1;
    if (!(Number.isInteger(start) && Number.isInteger(count) && start >= 0 && count >= 0 && start + count <= rows)) {
      throw new RangeError(`${this.path}: rows [${start}, ${start + count}) of '${name}' are outside its ${rows} rows`);
    }
    if (entry.method !== 0) throw new Error(`${this.path}: array '${name}' is compressed (np.savez_compressed); read it with get() or rows()`);
    const { offset } = storedEntryRange(this.fd, entry, this.path);
    const bytes = readAt(this.fd, offset + header.headerLength + start * rowBytes(header), count * rowBytes(header), this.path);
    return torch.fromArray(bytes, header.shape.length === 0 ? [] : [count, ...header.shape.slice(1)], header.dtype);
  }

  /**
   * The array `name` in consecutive chunks of `batchSize` rows (the last may be shorter). Read to
   * the end, its CRC-32 is checked once the last chunk is taken: a corrupt array throws there.
   */
  async *rows(name: string, batchSize: number): AsyncGenerator<Tensor> {
    const entry = this.entry(name);
    const header = this.header(name);
    const total = header.shape[0];
    if (total === undefined) throw new Error(`${this.path}: '${name}' is a scalar, it has no rows`);
    if (!Number.isInteger(batchSize) || batchSize < 1) throw new RangeError(`${this.path}: rows('${name}', ${batchSize}): the batch size must be a positive integer`);
    if (entry.method === 0) {
      const { offset } = storedEntryRange(this.fd, entry, this.path);
      let crc = crc32(readAt(this.fd, offset, header.headerLength, this.path));
      const stride = rowBytes(header);
      for (let start = 0; start < total; start += batchSize) {
        const count = Math.min(batchSize, total - start);
        const bytes = readAt(this.fd, offset + header.headerLength + start * stride, count * stride, this.path);
        crc = crc32(bytes, crc);
        yield torch.fromArray(bytes, [count, ...header.shape.slice(1)], header.dtype);
      }
      checkEntryCrc(entry, crc, this.path);
      return;
    }
    const { offset, length } = this.compressedRange(entry);
    const stride = rowBytes(header);
    const pending: Buffer[] = [];
    let pendingBytes = 0;
    let skip = header.headerLength;
    let emitted = 0;
    const take = (bytes: number): Uint8Array => {
      const joined = Buffer.concat(pending, pendingBytes);
      pending.length = 0;
      pending.push(joined.subarray(bytes));
      pendingBytes -= bytes;
      return joined.subarray(0, bytes);
    };
    const stream = createReadStream('', { fd: this.fd, autoClose: false, start: offset, end: offset + length - 1 }).pipe(createInflateRaw());
    let crc = 0;
    let inflated = 0;
    try {
      for await (const chunk of stream as AsyncIterable<Buffer>) {
        inflated += chunk.length;
        if (inflated > entry.size) throw new Error(`${this.path}: array '${name}' inflates to more than the ${entry.size} bytes the zip directory says`);
        crc = crc32(chunk, crc);
        let data = chunk;
        if (skip > 0) {
          const n = Math.min(skip, data.length);
          skip -= n;
          data = data.subarray(n);
        }
        pending.push(data);
        pendingBytes += data.length;
        while (emitted < total && pendingBytes >= Math.min(batchSize, total - emitted) * stride) {
          const count = Math.min(batchSize, total - emitted);
          yield torch.fromArray(take(count * stride), [count, ...header.shape.slice(1)], header.dtype);
          emitted += count;
        }
      }
    } finally {
      stream.destroy();
    }
    if (emitted < total) throw new Error(`${this.path}: array '${name}' ends after ${emitted} of ${total} rows`);
    checkEntryCrc(entry, crc, this.path);
  }
}

/** Every array of an .npz file, by name (np.load(path) as a dict). */
export function loadNpz(path: string): Record<string, Tensor> {
  const file = NpzFile.open(path);
  try {
    return Object.fromEntries(file.keys().map((k) => [k, file.get(k)]));
  } finally {
    file.close();
  }
}

/** Writes tensors as an uncompressed .npz (np.savez), atomically. */
export function saveNpz(path: string, arrays: Record<string, Tensor>): void {
  const writer = new NpzWriter(path);
  try {
    for (const [name, t] of Object.entries(arrays)) writer.add(name, t);
    writer.close();
  } catch (error) {
    writer.abort();
    throw error;
  }
}

// Zip records (PKWARE APPNOTE.TXT 4.3); stored entries, 1980-01-01 timestamps.
const U32_MAX = 0xffffffff;
const DOS_DATE_1980_01_01 = (1 << 5) | 1;

interface WrittenEntry { name: Uint8Array; size: number; crc: number; offset: number; zip64: boolean }

/**
 * Writes an .npz archive array by array, each either whole (`add`) or streamed in row chunks
 * (`begin`, then `append` until the declared shape is full), into a temporary file that `close`
 * renames over `path`; `abort` removes it. Arrays are stored uncompressed like np.savez, so
 * NpzFile reads them back in place. `forceZip64` writes ZIP64 records even for small files
 * (as Python's zipfile force_zip64), which is how tests cover the >4 GiB layout.
 */
export class NpzWriter {
  private fd: number | undefined;
  private readonly tmp: string;
  private position = 0;
  private readonly written: WrittenEntry[] = [];
  private current: { entry: WrittenEntry; remaining: number; crc: number; label: string; dtype: DType } | undefined;

  constructor(readonly path: string, private readonly options: { forceZip64?: boolean } = {}) {
    this.tmp = `${path}.tmp-${process.pid}`;
    this.fd = openSync(this.tmp, 'w');
  }

  private write(bytes: Uint8Array): void {
    if (this.fd === undefined) throw new Error(`${this.path}: the npz writer is closed`);
    writeAll(this.fd, bytes, this.path);
    this.position += bytes.length;
  }

  /** Starts array `name` of `dtype` and `shape`; its data follows through `append`. */
  begin(name: string, dtype: DType, shape: readonly number[]): void {
    if (this.current !== undefined) throw new Error(`${this.path}: array '${this.current.label}' is unfinished (${this.current.remaining} bytes missing)`);
    if (this.written.some((e) => new TextDecoder().decode(e.name) === `${name}.npy`)) throw new Error(`${this.path}: array '${name}' written twice`);
    const header = encodeNpyHeader(dtype, shape);
    const data = shape.reduce((a, b) => a * b, torch.BYTES_PER_ELEMENT[dtype]);
    const entry: WrittenEntry = { name: new TextEncoder().encode(`${name}.npy`), size: header.length + data, crc: 0, offset: this.position, zip64: false };
    entry.zip64 = this.options.forceZip64 === true || entry.size >= U32_MAX;
    const local = new DataView(new ArrayBuffer(30 + entry.name.length + (entry.zip64 ? 20 : 0)));
    local.setUint32(0, LOCAL_HEADER, true);
    local.setUint16(4, entry.zip64 ? 45 : 20, true);
    local.setUint16(6, 0x0800, true); // names are UTF-8
    local.setUint16(12, DOS_DATE_1980_01_01, true);
    local.setUint32(18, entry.zip64 ? U32_MAX : entry.size, true);
    local.setUint32(22, entry.zip64 ? U32_MAX : entry.size, true);
    local.setUint16(26, entry.name.length, true);
    local.setUint16(28, entry.zip64 ? 20 : 0, true);
    new Uint8Array(local.buffer).set(entry.name, 30);
    if (entry.zip64) {
      const extra = 30 + entry.name.length;
      local.setUint16(extra, 0x0001, true);
      local.setUint16(extra + 2, 16, true);
      local.setBigUint64(extra + 4, BigInt(entry.size), true);
      local.setBigUint64(extra + 12, BigInt(entry.size), true);
    }
    this.write(new Uint8Array(local.buffer));
    this.current = { entry, remaining: data, crc: crc32(header), label: name, dtype };
    this.write(header);
    this.finishIfComplete();
  }

  /** Appends rows (a tensor of the begun array's dtype) or raw bytes to the begun array. */
  append(chunk: Tensor | Uint8Array): void {
    const current = this.current;
    if (current === undefined) throw new Error(`${this.path}: append before begin`);
    if (!(chunk instanceof Uint8Array) && chunk.dtype !== current.dtype) throw new Error(`${this.path}: array '${current.label}' is ${current.dtype}, got a ${chunk.dtype} chunk`);
    const bytes = chunk instanceof Uint8Array ? chunk : tensorBytes(chunk);
    if (bytes.length > current.remaining) throw new Error(`${this.path}: array '${current.label}' gets ${bytes.length} more bytes than its shape holds (${current.remaining} left)`);
    current.crc = crc32(bytes, current.crc);
    current.remaining -= bytes.length;
    this.write(bytes);
    this.finishIfComplete();
  }

  private finishIfComplete(): void {
    const current = this.current;
    if (current === undefined || current.remaining > 0) return;
    current.entry.crc = current.crc;
    const crc = new DataView(new ArrayBuffer(4));
    crc.setUint32(0, current.crc, true);
    writeSync(this.fd!, new Uint8Array(crc.buffer), 0, 4, current.entry.offset + 14);
    this.written.push(current.entry);
    this.current = undefined;
  }

  /** Writes a whole tensor as array `name`. */
  add(name: string, t: Tensor): void {
    this.begin(name, t.dtype, t.shape);
    if (t.numel() > 0) this.append(t);
  }

  /** Writes the central directory and moves the finished file to `path`. */
  close(): void {
    if (this.current !== undefined) throw new Error(`${this.path}: array '${this.current.label}' is unfinished (${this.current.remaining} bytes missing)`);
    const directoryOffset = this.position;
    for (const e of this.written) {
      const offset64 = this.options.forceZip64 === true || e.offset >= U32_MAX;
      const fields = (e.zip64 ? 2 : 0) + (offset64 ? 1 : 0);
      const extraLength = fields > 0 ? 4 + 8 * fields : 0;
      const h = new DataView(new ArrayBuffer(46 + e.name.length + extraLength));
      h.setUint32(0, CENTRAL_HEADER, true);
      h.setUint16(4, 45, true);
      h.setUint16(6, e.zip64 || offset64 ? 45 : 20, true);
      h.setUint16(8, 0x0800, true);
      h.setUint16(14, DOS_DATE_1980_01_01, true);
      h.setUint32(16, e.crc, true);
      h.setUint32(20, e.zip64 ? U32_MAX : e.size, true);
      h.setUint32(24, e.zip64 ? U32_MAX : e.size, true);
      h.setUint16(28, e.name.length, true);
      h.setUint16(30, extraLength, true);
      h.setUint32(38, 0o100644 * 0x10000, true); // a regular file, rw-r--r-- (upper 16 bits: Unix mode)
      h.setUint32(42, offset64 ? U32_MAX : e.offset, true);
      new Uint8Array(h.buffer).set(e.name, 46);
      if (fields > 0) {
        let at = 46 + e.name.length;
        h.setUint16(at, 0x0001, true);
        h.setUint16(at + 2, 8 * fields, true);
        at += 4;
        // APPNOTE 4.5.3: size, compressed size, local header offset, each only when its field is 0xffffffff.
        if (e.zip64) { h.setBigUint64(at, BigInt(e.size), true); h.setBigUint64(at + 8, BigInt(e.size), true); at += 16; }
        if (offset64) h.setBigUint64(at, BigInt(e.offset), true);
      }
      this.write(new Uint8Array(h.buffer));
    }
    const directorySize = this.position - directoryOffset;
    const count = this.written.length;
    const zip64 = this.options.forceZip64 === true || count >= 0xffff || directoryOffset >= U32_MAX || directorySize >= U32_MAX;
    if (zip64) {
      const recordOffset = this.position;
      const r = new DataView(new ArrayBuffer(56 + 20));
      r.setUint32(0, ZIP64_EOCD, true);
      r.setBigUint64(4, 44n, true);
      r.setUint16(12, 45, true);
      r.setUint16(14, 45, true);
      r.setBigUint64(24, BigInt(count), true);
      r.setBigUint64(32, BigInt(count), true);
      r.setBigUint64(40, BigInt(directorySize), true);
      r.setBigUint64(48, BigInt(directoryOffset), true);
      r.setUint32(56, ZIP64_LOCATOR, true);
      r.setBigUint64(64, BigInt(recordOffset), true);
      r.setUint32(72, 1, true);
      this.write(new Uint8Array(r.buffer));
    }
    const end = new DataView(new ArrayBuffer(22));
    end.setUint32(0, EOCD, true);
    end.setUint16(8, zip64 ? 0xffff : count, true);
    end.setUint16(10, zip64 ? 0xffff : count, true);
    end.setUint32(12, zip64 ? U32_MAX : directorySize, true);
    end.setUint32(16, zip64 ? U32_MAX : directoryOffset, true);
    this.write(new Uint8Array(end.buffer));
    fsyncSync(this.fd!);
    closeSync(this.fd!);
    this.fd = undefined;
    renameSync(this.tmp, this.path);
  }

  /** Drops the unfinished file; `path` is left as it was. */
  abort(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
    rmSync(this.tmp, { force: true });
  }
}
