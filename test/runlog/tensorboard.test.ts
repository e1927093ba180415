import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import sharp from 'sharp';
import * as torch from '../../src/torch/index.js';
import { SummaryWriter, crc32c, maskedCrc32c } from '../../src/runlog/tensorboard.js';

// An independent reader, written from the formats' specifications: a bit-by-bit CRC-32C,
// TFRecord framing, and a generic protobuf field decoder.

function crc32cBitwise(data: Uint8Array): number {
  let crc = 0xffffffff;
  for (const byte of data) {
    crc ^= byte;
    for (let k = 0; k < 8; k++) crc = (crc >>> 1) ^ (0x82f63b78 & -(crc & 1));
  }
  return (crc ^ 0xffffffff) >>> 0;
}

function unmask(masked: number): number {
  const rot = (masked - 0xa282ead8) >>> 0;
  return ((rot >>> 17) | (rot << 15)) >>> 0;
}

function readRecords(file: Buffer): Buffer[] {
  const records: Buffer[] = [];
  let at = 0;
  while (at < file.length) {
    const length = Number(file.readBigUInt64LE(at));
    assert.equal(unmask(file.readUInt32LE(at + 8)), crc32cBitwise(file.subarray(at, at + 8)), `length CRC of the record at byte ${at}`);
    const data = file.subarray(at + 12, at + 12 + length);
    assert.equal(unmask(file.readUInt32LE(at + 12 + length)), crc32cBitwise(data), `data CRC of the record at byte ${at}`);
    records.push(data);
    at += 12 + length + 4;
  }
  assert.equal(at, file.length, 'the file ends after a whole record');
  return records;
}

type Field = bigint | Buffer | number;
function decode(message: Buffer): Map<number, Field[]> {
  const fields = new Map<number, Field[]>();
  let at = 0;
  const varint = (): bigint => {
    let value = 0n;
    for (let shift = 0n; ; shift += 7n) {
      const byte = message[at++]!;
      value |= BigInt(byte & 0x7f) << shift;
      if (byte < 0x80) return value;
    }
  };
  while (at < message.length) {
    const key = Number(varint());
    let value: Field;
    switch (key & 7) {
      case 0: value = varint(); break;
      case 1: value = message.readDoubleLE(at); at += 8; break;
      case 2: { const n = Number(varint()); value = message.subarray(at, at + n); at += n; break; }
      case 5: value = message.readFloatLE(at); at += 4; break;
      default: throw new Error(`wire type ${key & 7}`);
    }
    const list = fields.get(key >> 3) ?? [];
    list.push(value);
    fields.set(key >> 3, list);
  }
  return fields;
}
const one = (fields: Map<number, Field[]>, n: number): Field => {
  const values = fields.get(n);
  assert.equal(values?.length, 1, `field ${n} appears once`);
  return values![0]!;
};

test('crc32c matches the published CRC-32C check values (RFC 3720, B.4)', () => {
  assert.equal(crc32c(Buffer.from('123456789')), 0xe3069283);
  assert.equal(crc32c(new Uint8Array(32)), 0x8a9136aa);
  assert.equal(crc32c(new Uint8Array(32).fill(0xff)), 0x62a8ab43);
  assert.equal(crc32c(Uint8Array.from({ length: 32 }, (_, i) => i)), 0x46dd794e);
  assert.equal(crc32c(Uint8Array.from({ length: 32 }, (_, i) => 31 - i)), 0x113fdb5c);
  const data = Buffer.from('reals');
  assert.notEqual(maskedCrc32c(data), crc32c(data));
  assert.equal(unmask(maskedCrc32c(data)), crc32c(data));
});

test('an event file holds the version record, scalars and PNG images that an independent reader decodes', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'reals-tb-'));
  try {
    const writer = new SummaryWriter(dir);
    writer.addScalar('train/loss', 0.125, 7, 1700000000.5);
    writer.addScalar('train/lr', 1e-4, 2 ** 40);
    const image = torch.arange(0, 2 * 3 * 3).reshape(2, 3, 3).mul(10).to('uint8');
    await writer.addImage('samples', image, 9);
    writer.close();
    assert.throws(() => writer.addScalar('late', 1, 10), /closed/);

    const name = basename(writer.path);
    assert.deepEqual(readdirSync(dir), [name]);
    const [seconds, host, pid, uid] = name.split(/^events\.out\.tfevents\.(\d{10})\.(.+)\.(\d+)\.(\d+)$/).slice(1);
    assert.ok(Math.abs(Number(seconds) - Date.now() / 1000) < 60, name);
    assert.deepEqual([host, Number(pid)], [hostname(), process.pid]);
    assert.ok(Number.isInteger(Number(uid)), name);

    const events = readRecords(readFileSync(writer.path)).map(decode);
    assert.equal(events.length, 4);
    assert.equal(one(events[0]!, 3).toString(), 'brain.Event:2');
    assert.ok(Math.abs((one(events[0]!, 1) as number) - Date.now() / 1000) < 60);

    const scalar = (event: Map<number, Field[]>) => decode(one(decode(one(event, 5) as Buffer), 1) as Buffer);
    assert.equal(one(events[1]!, 1), 1700000000.5);
    assert.equal(one(events[1]!, 2), 7n);
    assert.equal(one(scalar(events[1]!), 1).toString(), 'train/loss');
    assert.equal(one(scalar(events[1]!), 2), 0.125);
    assert.equal(one(events[2]!, 2), 2n ** 40n);
    assert.equal(one(scalar(events[2]!), 2), Math.fround(1e-4));

    const value = scalar(events[3]!);
    assert.equal(one(value, 1).toString(), 'samples');
    const img = decode(one(value, 4) as Buffer);
    assert.deepEqual([one(img, 1), one(img, 2), one(img, 3)], [2n, 3n, 3n], 'height, width, colorspace RGB');
    const { data, info } = await sharp(one(img, 4) as Buffer).raw().toBuffer({ resolveWithObject: true });
    assert.deepEqual([info.height, info.width, info.channels], [2, 3, 3]);
    assert.deepEqual([...data], [...(image.toArray() as Uint8Array)]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('purgeStep writes a SessionLog START at that step, and PNG bytes are accepted as they are', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'reals-tb-'));
  try {
    const writer = new SummaryWriter(dir, { purgeStep: 401, filenameSuffix: '.resumed' });
    const png = await sharp({ create: { width: 5, height: 4, channels: 4, background: '#ff000080' } }).png().toBuffer();
    await writer.addImage('rgba', png, 401);
    await assert.rejects(writer.addImage('bad', Buffer.from('not a png at all, but long enough to look'), 1), /"bad".*not a PNG/);
    writer.close();
    assert.ok(writer.path.endsWith('.resumed'));
    const events = readRecords(readFileSync(writer.path)).map(decode);
    assert.equal(events.length, 3);
    assert.equal(one(events[1]!, 2), 401n);
    assert.equal(one(decode(one(events[1]!, 6) as Buffer), 1), 1n, 'SessionLog.status = START');
    const img = decode(one(decode(one(decode(one(events[2]!, 5) as Buffer), 1) as Buffer), 4) as Buffer);
    assert.deepEqual([one(img, 1), one(img, 2), one(img, 3)], [4n, 5n, 4n], 'height, width, colorspace RGBA');
    assert.ok((one(img, 4) as Buffer).equals(png));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
