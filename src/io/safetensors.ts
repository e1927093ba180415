// safetensors (huggingface/safetensors): an 8-byte little-endian header length N, N bytes of JSON
// header {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__"?: {str: str}}, then the
// tensors' bytes (little-endian, row-major) back to back, offsets relative to the end of the header.
// Reading is lazy, one positioned read per tensor; writing streams tensor by tensor into a
// temporary file that is renamed into place, with the reference writer's byte layout. The format
// has no checksum; on request reals records each tensor's CRC-32 in the metadata (CRC32_KEY),
// and every read of a file that has them checks them.
import { closeSync, fstatSync, writeSync } from 'node:fs';
import { crc32 } from 'node:zlib';
import * as torch from '../torch/index.js';
import { openRegularFile, readAt, writeAll, writeFileAtomic } from './file.js';

const DTYPES = new Map<string, torch.DType>([
  ['F64', 'float64'], ['F32', 'float32'], ['F16', 'float16'], ['BF16', 'bfloat16'], ['I64', 'int64'],
  ['I32', 'int32'], ['I16', 'int16'], ['I8', 'int8'], ['U8', 'uint8'], ['BOOL', 'bool'],
]);
const DTYPE_NAMES = new Map<torch.DType, string>([...DTYPES].map(([name, dtype]) => [dtype, name]));

// The reference writer lays tensors out by descending dtype alignment, then by name (its `Dtype`
// enum is declared in increasing alignment order: BOOL, U8, I8, I16, F16, BF16, I32, F32, F64, I64),
// so every tensor starts aligned for its type once the header is padded to 8 bytes.
const ALIGNMENT_RANK: Record<torch.DType, number> = {
  bool: 0, uint8: 1, int8: 2, int16: 3, float16: 4, bfloat16: 5, int32: 6, float32: 7, float64: 8, int64: 9,
};

// As the reference reader's MAX_HEADER_SIZE.
const MAX_HEADER_BYTES = 100_000_000;

/**
 * The metadata key of the tensors' CRC-32s: 8 lowercase hex digits per tensor, in the order of
 * their data in the file (SafetensorsFile.keys()).
 */
export const CRC32_KEY = 'reals.crc32';

export interface TensorInfo { dtype: torch.DType; shape: number[] }
interface Entry extends TensorInfo { begin: number; end: number; crc32: number | null }

export interface SafetensorsReadOptions {
  /** Where the tensors go (default: the CPU). */
  device?: torch.Device;
  /** Casts floating-point tensors to this dtype; integer and bool tensors keep theirs. */
  dtype?: torch.DType;
}

/** An open safetensors file: the header is parsed and validated, tensors are read on demand. */
export class SafetensorsFile {
  private fd: number | null;

  private constructor(
    readonly path: string,
    fd: number,
    private readonly dataStart: number,
    private readonly entries: Map<string, Entry>,
    /** The header's `__metadata__` (empty when it has none). */
    readonly metadata: Record<string, string>,
  ) {
    this.fd = fd;
  }

  /** Opens `path` and validates its header; an error names the file and the problem. */
  static open(path: string): SafetensorsFile {
    const fd = openRegularFile(path);
    try {
      const { dataStart, entries, metadata } = readHeader(fd, path);
      return new SafetensorsFile(path, fd, dataStart, entries, metadata);
    } catch (error) {
      closeSync(fd);
      throw error;
    }
  }

  /** Tensor names in the order of their data in the file. */
  keys(): string[] { return [...this.entries.keys()]; }

  has(key: string): boolean { return this.entries.has(key); }

  info(key: string): TensorInfo {
    const { dtype, shape } = this.entry(key);
    return { dtype, shape: [...shape] };
  }

  /** Reads one tensor (a fresh copy). */
  get(key: string, options: SafetensorsReadOptions = {}): torch.Tensor {
    const { dtype, shape, begin, end, crc32: recorded } = this.entry(key);
    if (this.fd === null) throw new Error(`${this.path}: the file is closed (reading "${key}")`);
    const bytes = readAt(this.fd, this.dataStart + begin, end - begin, this.path);
    const actual = recorded === null ? null : crc32(bytes);
    if (actual !== recorded) throw new Error(`${this.path}: tensor "${key}" is corrupt: its bytes have CRC-32 ${hex(actual!)}, the file recorded ${hex(recorded!)}`);
    const t = torch.fromArray(bytes, shape, dtype);
    const targetDtype = options.dtype !== undefined && t.isFloatingPoint() && options.dtype !== dtype ? options.dtype : undefined;
    const device = options.device !== undefined && options.device !== 'cpu' ? options.device : undefined;
    if (targetDtype === undefined && device === undefined) return t;
    const moved = t.to({ dtype: targetDtype, device });
    t.dispose();
    return moved;
  }

  close(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
  }

  private entry(key: string): Entry {
    const entry = this.entries.get(key);
    if (entry === undefined) {
      const keys = this.keys();
      const shown = keys.slice(0, 8).map((k) => JSON.stringify(k)).join(', ');
      throw new Error(`${this.path}: no tensor "${key}" (the file holds ${keys.length}: ${shown}${keys.length > 8 ? ', ...' : ''})`);
    }
    return entry;
  }
}

function readHeader(fd: number, path: string): { dataStart: number; entries: Map<string, Entry>; metadata: Record<string, string> } {
  const fail = (message: string): never => { throw new Error(`${path}: ${message}`); };
  const size = fstatSync(fd).size;
  if (size < 8) fail(`not a safetensors file (${size} bytes, less than the 8-byte header length)`);
  const lengthBytes = readAt(fd, 0, 8, path);
  const declared = new DataView(lengthBytes.buffer).getBigUint64(0, true);
  if (declared > BigInt(size - 8)) {
    fail(`header length ${declared} runs past the end of the file (${size} bytes): the file is truncated or not safetensors`);
  }
  const headerBytes = Number(declared);
  if (headerBytes > MAX_HEADER_BYTES) fail(`header length ${headerBytes} exceeds the ${MAX_HEADER_BYTES}-byte limit`);

  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(readAt(fd, 8, headerBytes, path)));
  } catch (error) {
    fail(`the header is not valid UTF-8 JSON (${(error as Error).message})`);
  }
  if (header === null || typeof header !== 'object' || Array.isArray(header)) fail('the header is not a JSON object');

  let metadata: Record<string, string> = {};
  const parsed: [string, Entry][] = [];
  for (const [key, value] of Object.entries(header as Record<string, unknown>)) {
    if (key === '__metadata__') metadata = parseMetadata(value, fail);
    else parsed.push([key, parseEntry(key, value, fail)]);
  }

  // The data section must be covered exactly: tensors back to back from 0 to the end of the file.
  parsed.sort(([, a], [, b]) => a.begin - b.begin || a.end - b.end);
  const dataBytes = size - 8 - headerBytes;
  let covered = 0;
  let previous: string | null = null;
  for (const [key, entry] of parsed) {
    if (entry.begin < covered) fail(`tensor "${key}" (data bytes ${entry.begin}..${entry.end}) overlaps tensor "${previous}"`);
    if (entry.begin > covered) fail(`data bytes ${covered}..${entry.begin} (before tensor "${key}") belong to no tensor`);
    if (entry.end > dataBytes) {
      fail(`the file is truncated: tensor "${key}" needs data bytes ${entry.begin}..${entry.end} but the data section holds ${dataBytes}`);
    }
    covered = entry.end;
    previous = key;
  }
  if (covered < dataBytes) fail(`${dataBytes - covered} bytes after the last tensor belong to no tensor`);
  const crcs = metadata[CRC32_KEY];
  if (crcs !== undefined) {
    if (!new RegExp(`^[0-9a-f]{${8 * parsed.length}}$`).test(crcs)) fail(`__metadata__ "${CRC32_KEY}" is not 8 hex digits for each of the ${parsed.length} tensors`);
    parsed.forEach(([, entry], i) => { entry.crc32 = Number.parseInt(crcs.slice(8 * i, 8 * i + 8), 16); });
  }
  return { dataStart: 8 + headerBytes, entries: new Map(parsed), metadata };
}

const hex = (crc: number): string => `0x${crc.toString(16).padStart(8, '0')}`;

function parseMetadata(value: unknown, fail: (message: string) => never): Record<string, string> {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) fail('__metadata__ is not a JSON object');
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    if (typeof v !== 'string') fail(`__metadata__ "${k}" is a ${typeof v}, the format allows only strings`);
  }
  return Object.fromEntries(Object.entries(value as Record<string, string>));
}

function parseEntry(key: string, value: unknown, fail: (message: string) => never): Entry {
  const where = `tensor "${key}"`;
  if (value === null || typeof value !== 'object') fail(`${where}: expected {dtype, shape, data_offsets}`);
  const { dtype: name, shape, data_offsets: offsets } = value as Record<string, unknown>;
  const dtype = typeof name === 'string' ? DTYPES.get(name) : undefined;
  if (dtype === undefined) fail(`${where}: unknown dtype ${JSON.stringify(name)} (reals reads ${[...DTYPES.keys()].join(', ')})`);
  const isCount = (d: unknown): d is number => Number.isSafeInteger(d) && (d as number) >= 0;
  if (!Array.isArray(shape) || !shape.every(isCount)) fail(`${where}: shape ${JSON.stringify(shape)} is not a list of non-negative integers`);
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount) || offsets[0]! > offsets[1]!) {
    fail(`${where}: data_offsets ${JSON.stringify(offsets)} is not [begin, end] with 0 <= begin <= end`);
  }
  const [begin, end] = offsets as [number, number];
  const nbytes = (shape as number[]).reduce((a, b) => a * b, 1) * torch.BYTES_PER_ELEMENT[dtype];
  if (nbytes !== end - begin) {
    fail(`${where}: ${name} [${shape}] needs ${nbytes} bytes but data_offsets [${begin}, ${end}] span ${end - begin}`);
  }
  return { dtype, shape: shape as number[], begin, end, crc32: null };
}

/** Reads every tensor of a safetensors file (those under `prefix` only, with the prefix removed). */
export function loadSafetensors(path: string, options: SafetensorsReadOptions & { prefix?: string } = {}): Record<string, torch.Tensor> {
  const prefix = options.prefix ?? '';
  const file = SafetensorsFile.open(path);
  const loaded: [string, torch.Tensor][] = [];
  try {
    for (const key of file.keys()) {
      if (key.startsWith(prefix)) loaded.push([key.slice(prefix.length), file.get(key, options)]);
    }
  } catch (error) {
    for (const [, t] of loaded) t.dispose();
    throw error;
  } finally {
    file.close();
  }
  return Object.fromEntries(loaded);
}

/**
 * Writes `tensors` as a safetensors file with the layout of the reference writer
 * (`safetensors.torch.save_file`): tensors by descending dtype alignment then by name, the
 * header compact JSON padded with spaces to a multiple of 8, `__metadata__` first when given. The
 * reference orders metadata entries as its hash map iterates; we sort them by key. Tensors may be
 * on any device and non-contiguous: each is copied to contiguous CPU bytes as it is written. The
 * file appears complete or not at all (written to `<path>.tmp-<pid>`, then renamed). With
 * `checksums`, the metadata also holds each tensor's CRC-32 (CRC32_KEY), computed from the bytes
 * as they are written and filled into the header at the end.
 */
export function saveSafetensors(
  path: string, tensors: Record<string, torch.Tensor>, metadata?: Record<string, string>, options: { checksums?: boolean } = {},
): void {
  const fail = (message: string): never => { throw new Error(`saveSafetensors(${path}): ${message}`); };
  const entries = Object.entries(tensors).map(([name, tensor]) => {
    if (!(tensor instanceof torch.Tensor)) fail(`"${name}" is a ${typeof tensor}, not a Tensor`);
    if (tensor.isDisposed) fail(`tensor "${name}" was disposed`);
    if (name === '__metadata__') fail('"__metadata__" is reserved for the metadata and cannot name a tensor');
    const dtype = tensor.dtype;
    return { name, tensor, dtype, shape: tensor.shape, nbytes: tensor.numel() * torch.BYTES_PER_ELEMENT[dtype], utf8: Buffer.from(name) };
  });
  entries.sort((a, b) => ALIGNMENT_RANK[b.dtype] - ALIGNMENT_RANK[a.dtype] || Buffer.compare(a.utf8, b.utf8));

  const fields: string[] = [];
  const placeholder = '0'.repeat(8 * entries.length);
  if (options.checksums === true) {
    if (metadata?.[CRC32_KEY] !== undefined) fail(`metadata "${CRC32_KEY}" is reserved for the checksums`);
    metadata = { ...metadata, [CRC32_KEY]: placeholder };
  }
  if (metadata !== undefined) {
    const items = Object.entries(metadata).map(([k, v]) => {
      if (typeof v !== 'string') fail(`metadata "${k}" is a ${typeof v}; safetensors metadata values must be strings`);
      return { k, v, utf8: Buffer.from(k) };
    });
    items.sort((a, b) => Buffer.compare(a.utf8, b.utf8));
    fields.push(`"__metadata__":{${items.map(({ k, v }) => `${JSON.stringify(k)}:${JSON.stringify(v)}`).join(',')}}`);
  }
  let offset = 0;
  for (const { name, dtype, shape, nbytes } of entries) {
    fields.push(`${JSON.stringify(name)}:{"dtype":"${DTYPE_NAMES.get(dtype)}","shape":[${shape.join(',')}],"data_offsets":[${offset},${offset + nbytes}]}`);
    offset += nbytes;
  }
  const json = Buffer.from(`{${fields.join(',')}}`);
  const header = Buffer.alloc(Math.ceil(json.length / 8) * 8, ' ');
  json.copy(header);
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(header.length));

  // Metadata values other than ours escape their quotes, so this is where ours begins.
  const crcAt = options.checksums === true ? json.indexOf(`${JSON.stringify(CRC32_KEY)}:"${placeholder}"`) + CRC32_KEY.length + 4 : -1;
  writeFileAtomic(path, (fd) => {
    writeAll(fd, length);
    writeAll(fd, header);
    const crcs: string[] = [];
    for (const { name, tensor, nbytes } of entries) {
      const data = tensor.toArray();
      if (data.byteLength !== nbytes) fail(`tensor "${name}" gave ${data.byteLength} bytes, expected ${nbytes}`);
      const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
      if (crcAt >= 0) crcs.push(crc32(bytes).toString(16).padStart(8, '0'));
      writeAll(fd, bytes);
    }
    if (crcAt >= 0) writeSync(fd, Buffer.from(crcs.join('')), 0, placeholder.length, 8 + crcAt);
  });
}
