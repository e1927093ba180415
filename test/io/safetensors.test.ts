import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, ftruncateSync, mkdtempSync, rmSync, openSync, readFileSync, readdirSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as torch from '../../src/torch/index.js';
import { CRC32_KEY, SafetensorsFile, loadSafetensors, saveSafetensors } from '../../src/io/index.js';
import { crc32 } from 'node:zlib';
import { FIXTURES, loadFixture } from '../helpers.js';

const REFERENCE = join(FIXTURES, 'io', 'reference.safetensors');
const expected = loadFixture('io/safetensors_expected.json') as Record<string, torch.Tensor>;
const dir = mkdtempSync(join(tmpdir(), 'reals-safetensors-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function assertTensorEqual(actual: torch.Tensor | undefined, want: torch.Tensor, what: string): void {
  assert.ok(actual instanceof torch.Tensor, `${what}: missing`);
  assert.equal(actual.dtype, want.dtype, `${what}: dtype`);
  assert.deepEqual(actual.shape, want.shape, `${what}: shape`);
  const values = (t: torch.Tensor) => Array.from(t.toArray() as ArrayLike<number | bigint>);
  assert.deepEqual(values(actual), values(want), `${what}: values`);
}

/** A file of an 8-byte header length, `header` (JSON-encoded unless a string) and `data`. */
function rawFile(name: string, header: unknown, data: Uint8Array = new Uint8Array(0)): string {
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header));
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(json.length));
  const path = join(dir, name);
  writeFileSync(path, Buffer.concat([length, json, data]));
  return path;
}

test('reads the reference layout (written from the spec in make_io.py): every dtype, exact values, metadata', () => {
  const file = SafetensorsFile.open(REFERENCE);
  try {
    assert.deepEqual(file.metadata, { format: 'pt' });
    assert.deepEqual(file.keys(), ['i64', 'f64', '10', '9', 'a.f32', 'empty', 'scalar', 'z.f32', '\u00e9.unicode', 'i32', 'bf16', 'f16', 'i16', 'i8', 'u8', 'flag']);
    assert.deepEqual(file.info('f16'), { dtype: 'float16', shape: [2, 2] });
    for (const [key, want] of Object.entries(expected)) assertTensorEqual(file.get(key), want, key);
    assert.throws(() => file.get('nope'), (e: Error) => e.message.startsWith(`${REFERENCE}: no tensor "nope" (the file holds 16: "i64", "f64",`));
  } finally {
    file.close();
  }
  assert.throws(() => file.get('i64'), new Error(`${REFERENCE}: the file is closed (reading "i64")`));
});

test('reads a file whose header lists tensors out of data order, unpadded', () => {
  const loaded = loadSafetensors(join(FIXTURES, 'io', 'unordered.safetensors'));
  assert.deepEqual(Object.keys(loaded).sort(), Object.keys(expected).sort());
  for (const [key, want] of Object.entries(expected)) assertTensorEqual(loaded[key], want, key);
});

test('saveSafetensors writes the same bytes as the reference layout for the same tensors', () => {
  const path = join(dir, 'ours.safetensors');
  saveSafetensors(path, expected, { format: 'pt' });
  assert.deepEqual(readFileSync(path), readFileSync(REFERENCE));
});

test('with checksums each tensor\'s CRC-32 is in the metadata; a flipped byte is then refused naming the tensor, the others still read', () => {
  const path = join(dir, 'checked.safetensors');
  const tensors = { ...expected, 'none at all': torch.zeros([0, 3]), 'with "quotes"': torch.arange(5) };
  saveSafetensors(path, tensors, { format: 'pt', note: `"${CRC32_KEY}":"00000000"` }, { checksums: true });
  const file = SafetensorsFile.open(path);
  const bytes = readFileSync(path);
  const dataStart = 8 + Number(bytes.readBigUInt64LE(0));
  const keys = file.keys();
  // The recorded values are zlib's crc32 of each tensor's bytes, in data order; the other metadata is as given.
  const json = JSON.parse(bytes.toString('utf8', 8, dataStart));
  assert.equal(file.metadata[CRC32_KEY], keys.map((k) => {
    const [begin, end] = json[k].data_offsets;
    return crc32(bytes.subarray(dataStart + begin, dataStart + end)).toString(16).padStart(8, '0');
  }).join(''));
  assert.deepEqual({ ...file.metadata, [CRC32_KEY]: undefined }, { format: 'pt', note: `"${CRC32_KEY}":"00000000"`, [CRC32_KEY]: undefined });
  for (const key of Object.keys(expected)) assertTensorEqual(file.get(key), expected[key]!, key);
  file.close();

  const victim = keys.find((k) => json[k].data_offsets[1] > json[k].data_offsets[0])!;
  bytes[dataStart + json[victim].data_offsets[0]]! ^= 0x01;
  writeFileSync(path, bytes);
  const damaged = SafetensorsFile.open(path);
  assert.throws(() => damaged.get(victim), (e: Error) =>
    new RegExp(`^${path.replaceAll('.', '\\.')}: tensor "${victim.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}" is corrupt: its bytes have CRC-32 0x[0-9a-f]{8}, the file recorded 0x[0-9a-f]{8}$`).test(e.message));
  const other = keys.find((k) => k !== victim && k in expected)!;
  assertTensorEqual(damaged.get(other), expected[other]!, other);
  damaged.close();
  assert.throws(() => loadSafetensors(path), /is corrupt/);
  assert.throws(() => saveSafetensors(path, expected, { [CRC32_KEY]: 'x' }, { checksums: true }), /metadata "reals\.crc32" is reserved/);
  // A checksum list of the wrong length is a malformed file.
  const wrong = rawFile('wrong-crc.safetensors', { __metadata__: { [CRC32_KEY]: '0123' }, a: { dtype: 'U8', shape: [1], data_offsets: [0, 1] } }, new Uint8Array(1));
  assert.throws(() => SafetensorsFile.open(wrong), /"reals\.crc32" is not 8 hex digits for each of the 1 tensors/);
});

test('writes non-contiguous tensors as their contiguous values; several metadata entries sort by key', () => {
  const path = join(dir, 'views.safetensors');
  const base = torch.arange(12, undefined, 1, { dtype: 'float32' }).reshape(3, 4);
  saveSafetensors(path, { t: base.t(), every2: base.slice(1, null, null, 2) }, { step: '10', args: '{"lr":1}' });
  const file = SafetensorsFile.open(path);
  assert.deepEqual(file.get('t').tolist(), base.t().contiguous().tolist());
  assert.deepEqual(file.get('every2').tolist(), [[0, 2], [4, 6], [8, 10]]);
  file.close();
  assert.match(readFileSync(path).subarray(8, 60).toString(), /^\{"__metadata__":\{"args":"\{\\"lr\\":1\}","step":"10"\},/);
});

test('dtype casts floating-point tensors only; prefix selects and strips keys; device places them', () => {
  const loaded = loadSafetensors(REFERENCE, { dtype: 'float64', prefix: 'i', device: 'cpu' });
  assert.deepEqual(Object.keys(loaded).sort(), ['16', '32', '64', '8']);
  assert.equal(loaded['64']!.dtype, 'int64');
  const file = SafetensorsFile.open(REFERENCE);
  const f16 = file.get('f16', { dtype: 'float32' });
  file.close();
  assert.equal(f16.dtype, 'float32');
  assert.deepEqual(f16.tolist(), expected.f16!.float().tolist());
});

test('writing never leaves a partial file: on failure the previous file stays and no temporary remains', () => {
  const path = join(dir, 'atomic.safetensors');
  const good = { w: torch.ones([2]) };
  saveSafetensors(path, good);
  const before = readFileSync(path);

  const disposed = torch.zeros([3]);
  disposed.dispose();
  assert.throws(() => saveSafetensors(path, { a: torch.ones([1]), b: disposed }), new Error(`saveSafetensors(${path}): tensor "b" was disposed`));
  // A tensor whose bytes cannot be read (e.g. a lost device) fails after the header and first tensor are written.
  const unreadable = new Proxy(torch.zeros([4]), {
    get(target, key) {
      if (key === 'toArray') return () => { throw new Error('device lost'); };
      return Reflect.get(target, key, target);
    },
  });
  assert.throws(() => saveSafetensors(path, { a: torch.ones([1]), b: unreadable }), /device lost/);
  assert.throws(() => saveSafetensors(path, good, { step: 3 as unknown as string }), /metadata "step" is a number; safetensors metadata values must be strings/);

  assert.deepEqual(readFileSync(path), before);
  assert.deepEqual(readdirSync(dir).filter((f) => f.includes('.tmp-')), []);
});

test('malformed files are refused with an error naming the file and the problem', () => {
  const valid = { a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'I64', shape: [1], data_offsets: [8, 16] } };
  const bytes = (n: number) => new Uint8Array(n);
  const reference = readFileSync(REFERENCE);
  const cutHeader = join(dir, 'cut-header.safetensors');
  writeFileSync(cutHeader, reference.subarray(0, 100));
  const cutData = join(dir, 'cut-data.safetensors');
  writeFileSync(cutData, reference.subarray(0, reference.length - 10));
  const cases: [string, RegExp][] = [
    [cutHeader, /header length 976 runs past the end of the file \(100 bytes\)/],
    [cutData, /the file is truncated: tensor "i16" needs data bytes 134\.\.138 but the data section holds 134/],
    [rawFile('json.safetensors', '{"a": ', bytes(8)), /the header is not valid UTF-8 JSON/],
    [rawFile('overlap.safetensors', { ...valid, b: { dtype: 'I64', shape: [1], data_offsets: [4, 12] } }, bytes(12)), /tensor "b" \(data bytes 4\.\.12\) overlaps tensor "a"/],
    [rawFile('hole.safetensors', { ...valid, b: { dtype: 'I64', shape: [1], data_offsets: [12, 20] } }, bytes(20)), /data bytes 8\.\.12 \(before tensor "b"\) belong to no tensor/],
    [rawFile('trailing.safetensors', valid, bytes(24)), /8 bytes after the last tensor belong to no tensor/],
    [rawFile('dtype.safetensors', { ...valid, a: { dtype: 'F8_E4M3', shape: [8], data_offsets: [0, 8] } }, bytes(16)), /tensor "a": unknown dtype "F8_E4M3"/],
    [rawFile('length.safetensors', { ...valid, a: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, bytes(16)), /tensor "a": F32 \[3\] needs 12 bytes but data_offsets \[0, 8\] span 8/],
    [rawFile('negative.safetensors', { ...valid, a: { dtype: 'F32', shape: [-2], data_offsets: [0, 8] } }, bytes(16)), /tensor "a": shape \[-2\] is not a list of non-negative integers/],
    [rawFile('fraction.safetensors', { ...valid, a: { dtype: 'F32', shape: [1.5], data_offsets: [0, 8] } }, bytes(16)), /tensor "a": shape \[1\.5\] is not a list/],
    [rawFile('metadata.safetensors', { ...valid, __metadata__: { step: 3 } }, bytes(16)), /__metadata__ "step" is a number/],
  ];
  const tiny = join(dir, 'tiny.safetensors');
  writeFileSync(tiny, bytes(4));
  cases.push([tiny, /not a safetensors file \(4 bytes/]);
  for (const [path, problem] of cases) {
    assert.throws(() => SafetensorsFile.open(path), (e: Error) => {
      assert.ok(e.message.startsWith(`${path}: `), `names the file: ${e.message}`);
      assert.match(e.message, problem);
      return true;
    });
  }
});

test('reads a tensor stored past 4 GiB into a (sparse) file: positions are not 32-bit', () => {
  const pad = 2 ** 32 + 8;
  const header = { pad: { dtype: 'U8', shape: [pad], data_offsets: [0, pad] }, x: { dtype: 'F32', shape: [2], data_offsets: [pad, pad + 8] } };
  const json = Buffer.from(JSON.stringify(header).padEnd(184));
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(json.length));
  const path = join(dir, 'big.safetensors');
  const fd = openSync(path, 'w');
  writeSync(fd, Buffer.concat([length, json]));
  ftruncateSync(fd, 8 + json.length + pad);
  writeSync(fd, new Uint8Array(Float32Array.from([1.5, -2]).buffer), 0, 8, 8 + json.length + pad);
  closeSync(fd);
  const file = SafetensorsFile.open(path);
  assert.deepEqual(file.info('pad'), { dtype: 'uint8', shape: [pad] });
  assert.deepEqual(file.get('x').tolist(), [1.5, -2]);
  file.close();
});
