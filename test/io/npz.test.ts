import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { closeSync, existsSync, openSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { once } from 'node:events';
import { createDeflateRaw, crc32 } from 'node:zlib';
import * as torch from '../../src/torch/index.js';
import type { Tensor } from '../../src/torch/index.js';
import { NpzFile, NpzWriter, encodeNpyHeader, loadNpy, loadNpz, parseNpyHeader, saveNpy, saveNpz } from '../../src/io/npz.js';
import { readZipEntries, storedEntryRange, type ZipEntry } from '../../src/io/zip.js';
import { FIXTURES, loadFixture, withTmp } from '../helpers.js';

const fx = loadFixture('io/npz_expected.json');
const file = (name: string): string => join(FIXTURES, 'io', name);
const PYTHON = '/usr/bin/python3';
const HAS_NUMPY = existsSync(PYTHON) && spawnSync(PYTHON, ['-c', 'import numpy']).status === 0;

function assertEqualTensors(actual: Tensor, expected: Tensor, what: string): void {
  assert.equal(actual.dtype, expected.dtype, `${what}: dtype`);
  assert.deepEqual(actual.shape, expected.shape, `${what}: shape`);
  assert.deepEqual(actual.toArray(), expected.toArray(), `${what}: values`);
}

function assertNumpyArrays(npz: Record<string, Tensor>, what: string): void {
  for (const key of ['arr_0', 'mu', 'sigma', 'labels']) assertEqualTensors(npz[key]!, fx[key], `${what} ${key}`);
  assert.deepEqual([npz.scalar!.dtype, npz.scalar!.shape, npz.scalar!.item()], ['float32', [], 2.5], `${what} scalar`);
  assertEqualTensors(npz.half!.view('int16'), fx.half_bits, `${what} half`);
  assert.deepEqual(Array.from(npz.flags!.toArray(), Boolean), fx.flags, `${what} flags`);
}

async function collect(rows: AsyncGenerator<Tensor>): Promise<Tensor[]> {
  const out: Tensor[] = [];
  for await (const r of rows) out.push(r);
  return out;
}

test('np.savez files: every dtype reads back equal, the keys in order, headers without reading data', () => {
  const npz = NpzFile.open(file('numpy_stored.npz'));
  try {
    assert.deepEqual(npz.keys(), ['arr_0', 'mu', 'sigma', 'labels', 'half', 'flags', 'scalar']);
    assert.deepEqual({ ...npz.header('arr_0'), headerLength: undefined }, { dtype: 'uint8', shape: [5, 4, 4, 3], headerLength: undefined });
    assert.equal(npz.has('arr_0'), true);
    assert.equal(npz.has('arr_1'), false);
  } finally {
    npz.close();
  }
  assertNumpyArrays(loadNpz(file('numpy_stored.npz')), 'stored');
});

test('rows of a stored array read in place: any range, and in chunks whose last is short', async () => {
  const npz = NpzFile.open(file('numpy_stored.npz'));
  try {
    assertEqualTensors(npz.readRows('arr_0', 1, 3), fx.arr_0.narrow(0, 1, 3), 'rows 1..4');
    assertEqualTensors(npz.readRows('arr_0', 5, 0), fx.arr_0.narrow(0, 5, 0), 'no rows');
    const chunks = await collect(npz.rows('arr_0', 2));
    assert.deepEqual(chunks.map((c) => c.size(0)), [2, 2, 1]);
    assertEqualTensors(torch.cat(chunks), fx.arr_0, 'chunks');
    assert.throws(() => npz.readRows('arr_0', 4, 2), /numpy_stored\.npz: rows \[4, 6\) of 'arr_0' are outside its 5 rows/);
    assert.throws(() => npz.get('arr_9'), /numpy_stored\.npz: no array 'arr_9' \(the file holds: arr_0, mu, sigma, labels, half, flags, scalar\)/);
  } finally {
    npz.close();
  }
});

test('np.savez_compressed files: whole arrays inflate, rows stream through inflate', async () => {
  assertNumpyArrays(loadNpz(file('numpy_compressed.npz')), 'compressed');
  const npz = NpzFile.open(file('numpy_compressed.npz'));
  try {
    const chunks = await collect(npz.rows('arr_0', 3));
    assert.deepEqual(chunks.map((c) => c.size(0)), [3, 2]);
    assertEqualTensors(torch.cat(chunks), fx.arr_0, 'streamed');
    assert.throws(() => npz.readRows('arr_0', 0, 1), /array 'arr_0' is compressed \(np\.savez_compressed\); read it with get\(\) or rows\(\)/);
  } finally {
    npz.close();
  }
});

test('ZIP64 entries written by Python\'s zipfile (force_zip64) and a version 2.0 .npy header', () => {
  const arrays = loadNpz(file('numpy_zip64.npz'));
  assertEqualTensors(arrays.arr_0!, fx.arr_0, 'arr_0');
  assertEqualTensors(arrays.mu!, fx.mu, 'mu');
});

test('unsupported or broken arrays give errors naming the file and array', () => {
  assert.throws(() => loadNpz(file('numpy_bigendian.npz')), /numpy_bigendian\.npz: arr_0: unsupported \.npy dtype '>f4'/);
  const header = encodeNpyHeader('float32', [2]);
  const at = Buffer.from(header).indexOf('False');
  header.set(new TextEncoder().encode('True '), at);
  assert.throws(() => parseNpyHeader(header, 'x.npy'), /x\.npy: Fortran-ordered arrays are not supported/);
  assert.throws(() => parseNpyHeader(new Uint8Array(16), 'x.npy'), /x\.npy: not an \.npy array/);
  assert.throws(() => encodeNpyHeader('bfloat16', [2]), /numpy has no bfloat16/);
});

test('.npy headers are padded to 64 bytes and end with a newline, as numpy writes them', () => {
  for (const shape of [[], [7], [50000, 256, 256, 3]]) {
    const header = encodeNpyHeader('uint8', shape);
    assert.equal(header.length % 64, 0);
    assert.equal(header[header.length - 1], 0x0a);
    assert.deepEqual(parseNpyHeader(header, 'x').shape, shape);
  }
});

test('NpzWriter: whole and streamed arrays, plain and ZIP64, read back by NpzFile', withTmp('npz', async (dir) => {
  for (const forceZip64 of [false, true]) {
    const path = join(dir, `out${forceZip64 ? '64' : ''}.npz`);
    const writer = new NpzWriter(path, { forceZip64 });
    writer.begin('arr_0', 'uint8', fx.arr_0.shape);
    for (let r = 0; r < 5; r += 2) writer.append(fx.arr_0.narrow(0, r, Math.min(2, 5 - r)));
    writer.add('mu', fx.mu);
    writer.add('empty', torch.zeros([0, 3]));
    writer.close();
    const back = loadNpz(path);
    assertEqualTensors(back.arr_0!, fx.arr_0, `arr_0 zip64=${forceZip64}`);
    assertEqualTensors(back.mu!, fx.mu, `mu zip64=${forceZip64}`);
    assert.deepEqual(back.empty!.shape, [0, 3]);
  }
  assert.deepEqual(readdirSync(dir).sort(), ['out.npz', 'out64.npz'], 'no temporary files left');
}));

test('NpzWriter refuses wrong chunks and unfinished arrays; abort leaves nothing behind', withTmp('npz', (dir) => {
  const path = join(dir, 'bad.npz');
  const writer = new NpzWriter(path);
  writer.begin('arr_0', 'uint8', [2, 3]);
  assert.throws(() => writer.append(torch.zeros([1, 3])), /array 'arr_0' is uint8, got a float32 chunk/);
  assert.throws(() => writer.append(torch.zeros([3, 3], { dtype: 'uint8' })), /array 'arr_0' gets 9 more bytes than its shape holds \(6 left\)/);
  writer.append(torch.zeros([1, 3], { dtype: 'uint8' }));
  assert.throws(() => writer.add('mu', fx.mu), /array 'arr_0' is unfinished \(3 bytes missing\)/);
  assert.throws(() => writer.close(), /array 'arr_0' is unfinished/);
  writer.abort();
  assert.deepEqual(readdirSync(dir), []);
  writeFileSync(path, 'old');
  assert.throws(() => saveNpz(path, { a: torch.zeros([2]), b: torch.zeros([2]).bfloat16() }), /numpy has no bfloat16/);
  assert.equal(readFileSync(path, 'utf8'), 'old', 'a failed save leaves the old file');
  assert.deepEqual(readdirSync(dir), ['bad.npz']);
}));

test('.npy files round-trip', withTmp('npz', (dir) => {
  const path = join(dir, 'x.npy');
  saveNpy(path, fx.sigma);
  assertEqualTensors(loadNpy(path), fx.sigma, 'sigma');
}));

test('numpy reads what NpzWriter and saveNpy write (np.load), ZIP64 included', { skip: HAS_NUMPY ? false : `${PYTHON} with numpy (Debian's python3-numpy) is not installed` }, withTmp('npz', (dir) => {
  const plain = join(dir, 'plain.npz');
  const zip64 = join(dir, 'zip64.npz');
  saveNpz(plain, { arr_0: fx.arr_0, mu: fx.mu, labels: fx.labels, scalar: torch.scalarTensor(2.5, torch.zeros([])) });
  const writer = new NpzWriter(zip64, { forceZip64: true });
  writer.add('arr_0', fx.arr_0);
  writer.add('mu', fx.mu);
  writer.close();
  saveNpy(join(dir, 'sigma.npy'), fx.sigma);
  const script = [
    'import json, sys, zipfile, numpy as np',
    'out = {}',
    'for name in ("plain.npz", "zip64.npz"):',
    '    assert zipfile.ZipFile(sys.argv[1] + "/" + name).testzip() is None',
    '    z = np.load(sys.argv[1] + "/" + name)',
    '    out[name] = {k: [str(z[k].dtype), list(z[k].shape), z[k].ravel().tolist()] for k in z.files}',
    's = np.load(sys.argv[1] + "/sigma.npy")',
    'out["sigma"] = [str(s.dtype), list(s.shape), s.ravel().tolist()]',
    'print(json.dumps(out))',
  ].join('\n');
  const numpy = JSON.parse(execFileSync(PYTHON, ['-c', script, dir], { encoding: 'utf8' }));
  const expect = (t: Tensor, dtype: string): [string, number[], number[]] => [dtype, t.shape, Array.from(t.toArray() as ArrayLike<number | bigint>, Number)];
  assert.deepEqual(numpy['plain.npz'], { arr_0: expect(fx.arr_0, 'uint8'), mu: expect(fx.mu, 'float64'), labels: expect(fx.labels, 'int64'), scalar: ['float32', [], [2.5]] });
  assert.deepEqual(numpy['zip64.npz'], { arr_0: expect(fx.arr_0, 'uint8'), mu: expect(fx.mu, 'float64') });
  assert.deepEqual(numpy.sigma, expect(fx.sigma, 'float64'));
}));

test('a truncated archive is refused with the file named', withTmp('npz', (dir) => {
  const path = join(dir, 'cut.npz');
  writeFileSync(path, readFileSync(file('numpy_stored.npz')).subarray(0, 1000));
  assert.throws(() => NpzFile.open(path), /cut\.npz: not a zip archive, or a truncated one/);
}));

interface ZipLayout {
  bytes: Buffer;
  entries: Map<string, ZipEntry>;
  /** Where a stored entry's bytes lie. */
  range: (name: string) => { offset: number; length: number };
  /** Where an entry's central-directory record starts (PK\x01\x02; the name at byte 46, the CRC-32 at byte 16). */
  directoryRecord: (name: string) => number;
}

function zipLayout(path: string): ZipLayout {
  const bytes = readFileSync(path);
  const fd = openSync(path, 'r');
  try {
    const entries = readZipEntries(fd, bytes.length, path);
    const ranges = new Map([...entries].filter(([, e]) => e.method === 0).map(([name, e]) => [name, storedEntryRange(fd, e, path)]));
    return {
      bytes, entries,
      range: (name) => ranges.get(name)!,
      directoryRecord: (name) => {
        for (let at = bytes.indexOf('PK\x01\x02'); at >= 0; at = bytes.indexOf('PK\x01\x02', at + 1)) {
          if (bytes.toString('utf8', at + 46, at + 46 + name.length) === name) return at;
        }
        throw new Error(`${path}: no central-directory record for ${name}`);
      },
    };
  } finally {
    closeSync(fd);
  }
}

test('a flipped byte in an array, or a wrong CRC-32 in the directory, is an error naming the file and array; the other arrays still read', withTmp('npz', async (dir) => {
  // np.savez: a stored array's data flipped in place.
  const stored = zipLayout(file('numpy_stored.npz'));
  const { offset, length } = stored.range('arr_0.npy');
  const flipped = Buffer.from(stored.bytes);
  flipped[offset + length - 1]! ^= 0x01;
  const path = join(dir, 'flipped.npz');
  writeFileSync(path, flipped);
  const corrupt = new RegExp(`^Error: ${path.replaceAll('.', '\\.')}: zip entry arr_0\\.npy is corrupt: its bytes have CRC-32 0x[0-9a-f]{8}, the archive recorded 0x${stored.entries.get('arr_0.npy')!.crc32.toString(16).padStart(8, '0')}$`);
  const npz = NpzFile.open(path);
  try {
    assert.throws(() => npz.get('arr_0'), corrupt);
    await assert.rejects(collect(npz.rows('arr_0', 1)), corrupt, 'streamed to the end');
    assertEqualTensors(npz.get('mu'), fx.mu, 'mu');
    assert.equal(npz.readRows('arr_0', 0, 1).shape[0], 1, 'a row range read in place is not checked');
    assert.throws(() => npz.verify('arr_0'), corrupt, 'unless verify() checks the array first');
    npz.verify('mu');
  } finally {
    npz.close();
  }
  assert.throws(() => loadNpz(path), corrupt);

  // np.savez_compressed: a recorded CRC that does not match the inflated bytes.
  const compressed = zipLayout(file('numpy_compressed.npz'));
  const wrong = Buffer.from(compressed.bytes);
  const record = compressed.directoryRecord('mu.npy');
  wrong.writeUInt32LE((wrong.readUInt32LE(record + 16) ^ 0x80) >>> 0, record + 16);
  const wrongPath = join(dir, 'wrong-crc.npz');
  writeFileSync(wrongPath, wrong);
  const file2 = NpzFile.open(wrongPath);
  try {
    assert.throws(() => file2.get('mu'), /wrong-crc\.npz: zip entry mu\.npy is corrupt: its bytes have CRC-32 0x[0-9a-f]{8}, the archive recorded 0x/);
    await assert.rejects(collect(file2.rows('mu', 3)), /zip entry mu\.npy is corrupt/);
    assert.throws(() => file2.verify('mu'), /zip entry mu\.npy is corrupt/);
    assertEqualTensors(file2.get('arr_0'), fx.arr_0, 'arr_0');
  } finally {
    file2.close();
  }
}));

test('.npy headers are read as numpy reads them: of a repeated key the last counts, exactly three keys (make_npy_headers.py)', () => {
  const { cases } = loadFixture('io/npy_headers.json') as { cases: { header: string; npy: string; dtype?: string; shape?: number[]; fortran?: boolean; error?: string }[] };
  const NUMPY_DTYPES: Record<string, string> = { '<i4': 'int32', '<f8': 'float64', '|u1': 'uint8', '<i8': 'int64', '<i2': 'int16', '<f4': 'float32' };
  for (const c of cases) {
    const bytes = Buffer.from(c.npy, 'base64');
    if (c.error !== undefined || c.fortran === true) {
      // numpy reads Fortran-ordered arrays; reals refuses them by name, as before.
      assert.throws(() => parseNpyHeader(bytes, 'x.npy'), c.fortran === true ? /x\.npy: Fortran-ordered/ : /^Error: x\.npy: /, `${c.header}: numpy says ${c.error}`);
      continue;
    }
    const header = parseNpyHeader(bytes, 'x.npy');
    assert.deepEqual([header.dtype, header.shape], [NUMPY_DTYPES[c.dtype!], c.shape], c.header);
  }
});

/** A one-entry zip archive (deflated) whose directory records `size` and `crc` for the entry, whatever `deflated` holds. */
function deflatedZip(name: string, deflated: Buffer, size: number, crc: number): Buffer {
  const fileName = Buffer.from(name);
  const local = Buffer.alloc(30);
  local.writeUInt32LE(0x04034b50, 0);
  local.writeUInt16LE(20, 4);
  local.writeUInt16LE(8, 8);
  local.writeUInt32LE(crc, 14);
  local.writeUInt32LE(deflated.length, 18);
  local.writeUInt32LE(size, 22);
  local.writeUInt16LE(fileName.length, 26);
  const central = Buffer.alloc(46);
  central.writeUInt32LE(0x02014b50, 0);
  central.writeUInt16LE(20, 4);
  central.writeUInt16LE(20, 6);
  central.writeUInt16LE(8, 10);
  central.writeUInt32LE(crc, 16);
  central.writeUInt32LE(deflated.length, 20);
  central.writeUInt32LE(size, 24);
  central.writeUInt16LE(fileName.length, 28);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(1, 8);
  end.writeUInt16LE(1, 10);
  end.writeUInt32LE(central.length + fileName.length, 12);
  end.writeUInt32LE(local.length + fileName.length + deflated.length, 16);
  return Buffer.concat([local, fileName, deflated, central, fileName, end]);
}

test('a deflated array that inflates past its declared size stops there: an error, and memory stays bounded', withTmp('npz', async (dir) => {
  // A float32 [4] array whose deflate stream goes on with 256 MiB of zeros (256 KiB compressed).
  const header = encodeNpyHeader('float32', [4]);
  const deflate = createDeflateRaw({ level: 1 });
  const compressed: Buffer[] = [];
  deflate.on('data', (chunk: Buffer) => compressed.push(chunk));
  const zeros = Buffer.alloc(1 << 20);
  deflate.write(header);
  for (let i = 0; i < 256; i++) if (!deflate.write(zeros)) await once(deflate, 'drain');
  deflate.end();
  await once(deflate, 'end');
  const declared = header.length + 16;
  const path = join(dir, 'bomb.npz');
  writeFileSync(path, deflatedZip('x.npy', Buffer.concat(compressed), declared, crc32(Buffer.concat([header, Buffer.alloc(16)]))));
  const peakBefore = process.resourceUsage().maxRSS * 1024;
  const npz = NpzFile.open(path);
  try {
    assert.deepEqual(npz.header('x').shape, [4]);
    const overrun = new RegExp(`bomb\\.npz: array 'x' inflates to more than the ${declared} bytes the zip directory says`);
    assert.throws(() => npz.get('x'), overrun);
    await assert.rejects(collect(npz.rows('x', 1)), overrun);
  } finally {
    npz.close();
  }
  // Inflated in full, the entry would raise the peak by 256 MiB; its header from a 64 KiB prefix, by 64 MiB.
  const growth = process.resourceUsage().maxRSS * 1024 - peakBefore;
  assert.ok(growth < 32 * 2 ** 20, `the peak resident memory grew by ${(growth / 2 ** 20).toFixed(1)} MiB, less than 32 MiB`);

  // A declared size that deflate cannot reach from the compressed bytes is refused before inflating.
  const lying = join(dir, 'lying.npz');
  writeFileSync(lying, deflatedZip('x.npy', Buffer.from([0x03, 0x00]), 4096, 0));
  const file = NpzFile.open(lying);
  try {
    assert.throws(() => file.get('x'), /lying\.npz: array 'x' declares 4096 bytes from 2 compressed bytes, which deflate cannot expand past 1032:1/);
  } finally {
    file.close();
  }
}));
