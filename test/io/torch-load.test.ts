import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, mkdtempSync, openSync, rmSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as torch from '../../src/torch/index.js';
import { load } from '../../src/io/index.js';
import { readZipEntries, storedEntryRange } from '../../src/io/zip.js';
import { FIXTURES, loadFixture } from '../helpers.js';

const IO = join(FIXTURES, 'io');
const expected = loadFixture('io/expected.json');
const dir = mkdtempSync(join(tmpdir(), 'reals-torch-load-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function assertTensorEqual(actual: unknown, want: torch.Tensor, what: string): void {
  assert.ok(actual instanceof torch.Tensor, `${what}: not a Tensor`);
  assert.equal(actual.dtype, want.dtype, `${what}: dtype`);
  assert.deepEqual(actual.shape, want.shape, `${what}: shape`);
  const values = (t: torch.Tensor) => Array.from(t.toArray() as ArrayLike<number | bigint>);
  assert.deepEqual(values(actual), values(want), `${what}: values`);
}

function assertTensorsEqual(actual: Record<string, unknown>, want: Record<string, torch.Tensor>, what: string): void {
  assert.deepEqual(Object.keys(actual), Object.keys(want), `${what}: keys`);
  for (const [key, t] of Object.entries(want)) assertTensorEqual(actual[key], t, `${what}.${key}`);
}

interface Checkpoint {
  state_dict: Record<string, torch.Tensor> & { _metadata?: Record<string, { version: number }> };
  tensors: Record<string, torch.Tensor>;
  views: Record<'transposed' | 'strided' | 'a' | 'b', torch.Tensor>;
  param: torch.Tensor;
  args: Record<string, unknown>;
  misc: Record<string, unknown>;
  step: number;
}

// make_io.py writes one object in each of these forms.
for (const file of ['checkpoint.pt', 'legacy.pt', 'protocol4.pt', 'zip64.pt']) {
  test(`${file}: every value and tensor reads back exactly as saved by PyTorch`, () => {
    const ckpt = load(join(IO, file)) as Checkpoint;
    assert.deepEqual(Object.keys(ckpt), ['state_dict', 'tensors', 'views', 'param', 'args', 'misc', 'step']);
    assertTensorsEqual(ckpt.state_dict, expected.state_dict, 'state_dict');
    assert.equal(ckpt.state_dict._metadata?.['1']?.version, 2, "OrderedDict attribute _metadata (BatchNorm's version)");
    assertTensorsEqual(ckpt.tensors, expected.tensors, 'tensors');
    assertTensorsEqual(ckpt.views, expected.views, 'views');
    for (const [key, stride] of Object.entries(expected.strides as Record<string, number[]>)) {
      assert.deepEqual(ckpt.views[key as keyof Checkpoint['views']].stride(), stride, `views.${key}: stride`);
    }
    assertTensorEqual(ckpt.param, expected.param, 'param');
    assert.equal(ckpt.param.requiresGrad, true, 'a Parameter keeps requires_grad');
    assert.deepEqual(ckpt.args, { __class__: 'argparse.Namespace', model: 'SiT-XL/2', lr: 1e-4, epochs: 3, ckpt: null, cfg: true, image_size: 256 });
    assert.deepEqual(ckpt.misc, {
      int: 7, neg: -123456789012, big: 2n ** 70n, float: 0.1, str: 'h\u00e9llo \u2713', none: null, true: true,
      tuple: [1, 'two', 3], nested: [1, [2, [3]]], bytes: Uint8Array.from([0, 1, 255]),
      int_keys: new Map([[0, 'a'], [2, 'b']]), tuple_key: new Map([[[1, 2], 'x']]),
      device: 'cuda:1', dtype: 'bfloat16', size: [2, 3],
    });
    assert.equal(ckpt.step, 1234);
  });

  test(`${file}: tensors that shared a storage when saved share memory when loaded`, () => {
    const { views } = load(join(IO, file)) as Checkpoint;
    views.a.select(0, 3).fill_(42); // a = shared[2:7], b = shared[5:]: a[3] is b[0]
    assert.equal(views.b.select(0, 0).item(), 42);
    views.transposed.select(0, 0).select(0, 1).fill_(-7); // transposed = base.t(), strided = base[1:3, ::2]
    assert.equal(views.strided.select(0, 0).select(0, 0).item(), -7);
  });
}

test('a .safetensors path loads as a record of tensors', () => {
  const tensors = load(join(IO, 'reference.safetensors')) as Record<string, torch.Tensor>;
  assertTensorEqual(tensors['z.f32'], loadFixture('io/safetensors_expected.json')['z.f32'], 'z.f32');
});

test('truncated or foreign files are refused with an error naming the file', () => {
  const cut = (file: string, bytes: number): string => {
    const path = join(dir, `cut-${file}`);
    writeFileSync(path, readFileSync(join(IO, file)).subarray(0, bytes));
    return path;
  };
  const zip = cut('checkpoint.pt', 3000);
  assert.throws(() => load(zip), (e: Error) => e.message.startsWith(`${zip}: `) && /no end-of-central-directory record/.test(e.message));
  const legacy = cut('legacy.pt', 4000);
  assert.throws(() => load(legacy), (e: Error) => e.message.startsWith(`${legacy}: unexpected end of file`));
  const text = join(dir, 'notes.pt');
  writeFileSync(text, 'not a checkpoint');
  assert.throws(() => load(text), new Error(`${text}: not a PyTorch checkpoint (neither a zip archive nor a legacy pickle stream)`));
});

test('a flipped byte in a storage is an error naming the file and entry; a CRC-32 recorded as 0 (compute_crc32=False) is not checked', () => {
  const source = join(IO, 'checkpoint.pt');
  const bytes = readFileSync(source);
  const fd = openSync(source, 'r');
  const entries = readZipEntries(fd, bytes.length, source);
  const name = [...entries.keys()].find((n) => /\/data\/\d+$/.test(n))!;
  const { offset } = storedEntryRange(fd, entries.get(name)!, source);
  closeSync(fd);
  const flipped = Buffer.from(bytes);
  flipped[offset]! ^= 0x40;
  const path = join(dir, 'flipped.pt');
  writeFileSync(path, flipped);
  assert.throws(() => load(path), (e: Error) => e.message.startsWith(`${path}: zip entry ${name} is corrupt: its bytes have CRC-32 0x`));
  // torch.serialization.config.save.compute_crc32 = False writes 0 in the local and central headers.
  let record = -1;
  for (let at = flipped.indexOf('PK\x01\x02'); at >= 0; at = flipped.indexOf('PK\x01\x02', at + 1)) {
    if (flipped.toString('utf8', at + 46, at + 46 + name.length) === name) record = at;
  }
  flipped.writeUInt32LE(0, record + 16);
  writeFileSync(path, flipped);
  assert.ok(load(path) !== null);
});

test('a legacy .pt whose pickle nests past the stack, or claims a string past its end, is an error naming the file', () => {
  const dir = mkdtempSync(join(tmpdir(), 'reals-load-'));
  try {
    // torch.save's legacy magic number, protocol version and sys_info pickles, then the object's pickle.
    const head = Buffer.from('80028a0a6cfc9c46f9206aa850192e80024de9032e80027d710028581000000070726f746f636f6c5f76657273696f6e71014de903580d0000006c6974746c655f656e6469616e710288580a000000747970655f73697a657371037d710428580500000073686f727471054b025803000000696e7471064b0458040000006c6f6e6771074b0475752e', 'hex');
    const keys = Buffer.from('80025d71002e', 'hex');
    const deep = join(dir, 'deep.pt');
    writeFileSync(deep, Buffer.concat([head, Buffer.from([0x80, 0x02]), Buffer.alloc(200_000, 0x5d), Buffer.alloc(199_999, 0x61), Buffer.from('.'), keys]));
    assert.throws(() => load(deep), new RegExp(`^Error: ${deep}: Maximum call stack size exceeded \\(a pickle nested too deeply, or a size too large to allocate`));
    const huge = join(dir, 'huge.pt');
    writeFileSync(huge, Buffer.concat([head, Buffer.from([0x80, 0x02, 0x58, 0xf0, 0xff, 0xff, 0xff]), Buffer.from('abc')]));
    assert.throws(() => load(huge), new RegExp(`^Error: ${huge}: pickle data is truncated \\(needs 4294967280 bytes at byte 144, the input ends at byte 147\\)`));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
