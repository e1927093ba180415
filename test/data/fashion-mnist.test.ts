import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FashionMNIST, FASHION_MNIST_ROOT, readIdx } from '../../src/data/fashion-mnist.js';
import { DataLoader } from '../../src/data/loader.js';

const installed = existsSync(join(FASHION_MNIST_ROOT, 'train-images-idx3-ubyte.gz'));
const skip = installed ? false : `Debian's dataset-fashion-mnist is not installed (${FASHION_MNIST_ROOT}); apt-get install dataset-fashion-mnist`;

test('readIdx reads gzipped and plain IDX files and refuses a wrong magic, element type or length', () => {
  const dir = mkdtempSync(join(tmpdir(), 'reals-idx-'));
  const header = Buffer.from([0, 0, 0x08, 2, 0, 0, 0, 2, 0, 0, 0, 3]);
  const idx = Buffer.concat([header, Buffer.from([1, 2, 3, 4, 5, 6])]);
  writeFileSync(join(dir, 'a.idx'), idx);
  writeFileSync(join(dir, 'a.idx.gz'), gzipSync(idx));
  for (const name of ['a.idx', 'a.idx.gz']) {
    const { shape, data } = readIdx(join(dir, name));
    assert.deepEqual(shape, [2, 3]);
    assert.deepEqual(Array.from(data), [1, 2, 3, 4, 5, 6]);
  }
  writeFileSync(join(dir, 'short.idx'), idx.subarray(0, 15));
  assert.throws(() => readIdx(join(dir, 'short.idx')), /short\.idx\): shape \[2,3\] needs 6 bytes of data, the file has 3/);
  writeFileSync(join(dir, 'int.idx'), Buffer.from([0, 0, 0x0c, 1, 0, 0, 0, 0]));
  assert.throws(() => readIdx(join(dir, 'int.idx')), /element type 0xc is not unsigned byte/);
  writeFileSync(join(dir, 'bad.idx'), Buffer.from([1, 0, 8, 1]));
  assert.throws(() => readIdx(join(dir, 'bad.idx')), /bad magic/);
});

test('FashionMNIST: 60,000 train and 10,000 test images, 10 balanced labels, padded 28 -> 32 with zeros', { skip }, () => {
  const train = new FashionMNIST();
  const testSet = new FashionMNIST({ train: false, channels: 3 });
  assert.equal(train.length, 60000);
  assert.equal(testSet.length, 10000);
  assert.deepEqual(train.itemShape, [1, 32, 32]);
  assert.deepEqual(testSet.itemShape, [3, 32, 32]);
  const counts = new Array<number>(10).fill(0);
  for (let i = 0; i < testSet.length; i++) counts[testSet.label(i)]!++;
  assert.deepEqual(counts, new Array(10).fill(1000));
  // The first training item of Fashion-MNIST is an ankle boot (9), the first test item too.
  assert.equal(train.label(0), 9);
  assert.equal(testSet.label(0), 9);
  const grey = train.image(0);
  assert.deepEqual([grey.width, grey.height, grey.channels], [32, 32, 1]);
  let border = 0;
  let inside = 0;
  for (let y = 0; y < 32; y++) {
    for (let x = 0; x < 32; x++) {
      const v = grey.data[y * 32 + x]!;
      if (y < 2 || y >= 30 || x < 2 || x >= 30) border += v;
      else inside += v;
    }
  }
  assert.equal(border, 0);
  assert.ok(inside > 0);
  const rgb = testSet.image(0);
  assert.equal(rgb.data.length, 32 * 32 * 3);
  for (let p = 0; p < 32 * 32; p++) assert.ok(rgb.data[3 * p] === rgb.data[3 * p + 1] && rgb.data[3 * p] === rgb.data[3 * p + 2]);
  assert.throws(() => train.image(60000), /index 60000 is outside \[0, 60000\)/);
  assert.throws(() => new FashionMNIST({ root: tmpdir() }), /train-images-idx3-ubyte\.gz is missing; install Debian's dataset-fashion-mnist/);
});

test('FashionMNIST through the DataLoader: [B, C, 32, 32] float32 in [-1, 1] with a border of -1, int64 labels', { skip }, async () => {
  for (const channels of [1, 3] as const) {
    const dataset = new FashionMNIST({ train: false, channels });
    const loader = new DataLoader(dataset, { batchSize: 16, seed: 1 });
    assert.equal(loader.length, 625);
    const first = await loader.iterate(0).next();
    assert.ok(!first.done);
    const { images, labels, indices } = first.value;
    assert.deepEqual(images.shape, [16, channels, 32, 32]);
    assert.equal(images.dtype, 'float32');
    assert.equal(labels.dtype, 'int64');
    assert.equal(images.min().item(), -1);
    assert.ok(images.max().item() <= 1 && images.max().item() > 0);
    assert.equal(images.index(':', ':', 0).max().item(), -1, 'top padding row is -1');
    assert.equal(images.index(':', ':', ':', 31).max().item(), -1, 'right padding column is -1');
    assert.deepEqual(labels.tolist(), indices.map((i) => dataset.label(i)));
  }
});
