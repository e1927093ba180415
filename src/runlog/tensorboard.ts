// TensorBoard event files without TensorFlow: a file of TFRecords, each a serialized `Event`
// protocol buffer (tensorboard/compat/proto/event.proto, summary.proto). A TFRecord is
// uint64 length, masked CRC32C of the length bytes, the data, masked CRC32C of the data
// (tensorflow/core/lib/io/record_writer.cc), all little-endian.
import { closeSync, fsyncSync, openSync, writeSync } from 'node:fs';
import { makeDirs } from '../io/file.js';
import { hostname } from 'node:os';
import { join } from 'node:path';
import * as torch from '../torch/index.js';
import { encodePng } from './images.js';

// CRC-32C (Castagnoli): reflected polynomial 0x82F63B78, initial value and final xor 0xFFFFFFFF.
const CRC32C_TABLE = new Uint32Array(256).map((_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
  return c >>> 0;
});

export function crc32c(data: Uint8Array): number {
  let crc = 0xffffffff;
  for (const byte of data) crc = CRC32C_TABLE[(crc ^ byte) & 0xff]! ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

/** As TensorFlow's crc32c::Mask: a CRC of data that holds CRCs is itself a poor CRC, so rotate and offset it. */
export function maskedCrc32c(data: Uint8Array): number {
  const crc = crc32c(data);
  return ((((crc >>> 15) | (crc << 17)) >>> 0) + 0xa282ead8) >>> 0;
}

/** One TFRecord around `data`. */
export function tfRecord(data: Uint8Array): Uint8Array {
  const out = Buffer.alloc(8 + 4 + data.length + 4);
  out.writeBigUInt64LE(BigInt(data.length), 0);
  out.writeUInt32LE(maskedCrc32c(out.subarray(0, 8)), 8);
  out.set(data, 12);
  out.writeUInt32LE(maskedCrc32c(data), 12 + data.length);
  return out;
}

// --- protobuf wire format: the few field kinds the Event messages use --------------------------

function varint(value: number | bigint): number[] {
  let v = BigInt.asUintN(64, BigInt(value));
  const bytes: number[] = [];
  while (v >= 0x80n) {
    bytes.push(Number(v & 0x7fn) | 0x80);
    v >>= 7n;
  }
  bytes.push(Number(v));
  return bytes;
}

class ProtoWriter {
  private readonly parts: Uint8Array[] = [];

  private key(field: number, wireType: number): void { this.parts.push(Uint8Array.from(varint((field << 3) | wireType))); }
  uint(field: number, value: number | bigint): this {
    this.key(field, 0);
    this.parts.push(Uint8Array.from(varint(value)));
    return this;
  }
  double(field: number, value: number): this {
    this.key(field, 1);
    const b = Buffer.alloc(8);
    b.writeDoubleLE(value);
    this.parts.push(b);
    return this;
  }
  float(field: number, value: number): this {
    this.key(field, 5);
    const b = Buffer.alloc(4);
    b.writeFloatLE(value);
    this.parts.push(b);
    return this;
  }
  bytes(field: number, value: Uint8Array | string): this {
    const data = typeof value === 'string' ? Buffer.from(value, 'utf8') : value;
    this.key(field, 2);
    this.parts.push(Uint8Array.from(varint(data.length)), data);
    return this;
  }
  finish(): Uint8Array { return Buffer.concat(this.parts); }
}

// Field numbers from event.proto and summary.proto.
const EVENT = { wallTime: 1, step: 2, fileVersion: 3, summary: 5, sessionLog: 6 } as const;
const SUMMARY_VALUE = 1;
const VALUE = { tag: 1, simpleValue: 2, image: 4 } as const;
const IMAGE = { height: 1, width: 2, colorspace: 3, encodedImageString: 4 } as const;
const SESSION_LOG_START = 1;

// PNG colour type (IHDR byte 9) -> Summary.Image colorspace (1 grey, 2 grey+alpha, 3 RGB, 4 RGBA).
const PNG_COLORSPACE: Record<number, number> = { 0: 1, 4: 2, 2: 3, 3: 3, 6: 4 };
const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

/** Width, height and colorspace from a PNG's IHDR chunk, which the format puts first. */
function pngInfo(png: Uint8Array, tag: string): { width: number; height: number; colorspace: number } {
  const b = Buffer.from(png.buffer, png.byteOffset, png.byteLength);
  if (b.length < 33 || !b.subarray(0, 8).equals(PNG_SIGNATURE) || b.toString('latin1', 12, 16) !== 'IHDR') {
    throw new Error(`SummaryWriter.addImage("${tag}"): the bytes are not a PNG image`);
  }
  const colorspace = PNG_COLORSPACE[b[25]!];
  if (colorspace === undefined) throw new Error(`SummaryWriter.addImage("${tag}"): unknown PNG colour type ${b[25]}`);
  return { width: b.readUInt32BE(16), height: b.readUInt32BE(20), colorspace };
}

// As tensorboard's EventFileWriter: unique per writer even when two open in the same second.
let globalUid = 0;

export interface SummaryWriterOptions {
  /** Appended to the file name, as torch.utils.tensorboard's `filename_suffix`. */
  filenameSuffix?: string;
  /**
   * On resume from step T, pass T + 1 (the first step this run logs): TensorBoard then drops the
   * events at steps >= T + 1 that the interrupted run wrote after its checkpoint (torch's `purge_step`).
   */
  purgeStep?: number;
}

/** Writes scalars and images for TensorBoard; each event reaches the file when it is added. */
export class SummaryWriter {
  /** `events.out.tfevents.<seconds>.<hostname>.<pid>.<uid>`, as TensorBoard's EventFileWriter names it. */
  readonly path: string;
  private fd: number | null;

  constructor(readonly logDir: string, options: SummaryWriterOptions = {}) {
    makeDirs(logDir, 'TensorBoard folder');
    const seconds = String(Math.floor(Date.now() / 1000)).padStart(10, '0');
    this.path = join(logDir, `events.out.tfevents.${seconds}.${hostname()}.${process.pid}.${globalUid++}${options.filenameSuffix ?? ''}`);
    this.fd = openSync(this.path, 'w');
    this.write(new ProtoWriter().double(EVENT.wallTime, Date.now() / 1000).bytes(EVENT.fileVersion, 'brain.Event:2'));
    if (options.purgeStep !== undefined) {
      const start = new ProtoWriter().uint(1, SESSION_LOG_START).finish();
      this.write(new ProtoWriter().double(EVENT.wallTime, Date.now() / 1000).uint(EVENT.step, options.purgeStep).bytes(EVENT.sessionLog, start));
    }
  }

  addScalar(tag: string, value: number, step: number, wallTime = Date.now() / 1000): void {
    this.addSummaryValue(new ProtoWriter().bytes(VALUE.tag, tag).float(VALUE.simpleValue, value), step, wallTime);
  }

  /**
   * An image from PNG bytes or from a uint8 tensor [H, W, C] (C = 1, 3 or 4), which is encoded as
   * PNG first (hence async). For a [N, C, H, W] batch, pass makeGrid's result.
   */
  async addImage(tag: string, image: Uint8Array | torch.Tensor, step: number, wallTime = Date.now() / 1000): Promise<void> {
    const png = image instanceof torch.Tensor ? await encodePng(image) : image;
    const { width, height, colorspace } = pngInfo(png, tag);
    const encoded = new ProtoWriter().uint(IMAGE.height, height).uint(IMAGE.width, width).uint(IMAGE.colorspace, colorspace)
      .bytes(IMAGE.encodedImageString, png).finish();
    this.addSummaryValue(new ProtoWriter().bytes(VALUE.tag, tag).bytes(VALUE.image, encoded), step, wallTime);
  }

  /** Forces the events written so far to disk. */
  flush(): void {
    if (this.fd !== null) fsyncSync(this.fd);
  }

  close(): void {
    if (this.fd === null) return;
    fsyncSync(this.fd);
    closeSync(this.fd);
    this.fd = null;
  }

  private addSummaryValue(value: ProtoWriter, step: number, wallTime: number): void {
    const summary = new ProtoWriter().bytes(SUMMARY_VALUE, value.finish()).finish();
    this.write(new ProtoWriter().double(EVENT.wallTime, wallTime).uint(EVENT.step, step).bytes(EVENT.summary, summary));
  }

  private write(event: ProtoWriter): void {
    if (this.fd === null) throw new Error(`SummaryWriter(${this.path}): the writer is closed`);
    const record = tfRecord(event.finish());
    let done = 0;
    while (done < record.length) done += writeSync(this.fd, record, done);
  }
}
