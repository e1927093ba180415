// Data folders that hold more than images: FIFOs, devices and huge files named like images, names
// that are not UTF-8, links that loop, and folders where most files cannot be read. Each test has
// a timeout, so a loader that hangs fails instead of stopping the suite.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FIXTURES } from '../helpers.js';
import { ImageFolder } from '../../src/data/image-folder.js';
import { centerCropArr, decodeImage, writeNormalized } from '../../src/data/image.js';
import { fsDecode, fsEncode, readRegularFile } from '../../src/data/files.js';
import { DataLoader, type Batch } from '../../src/data/loader.js';
import { readIdx } from '../../src/data/fashion-mnist.js';
import { NpzFile } from '../../src/io/npz.js';
import { writeReferenceBatch } from '../../src/eval/batches.js';

const PHOTO = join(FIXTURES, 'data', 'cat_301x217.jpg');
const made: string[] = [];
after(() => { for (const dir of made) rmSync(dir, { recursive: true, force: true }); });

/** A temporary folder, removed when the tests end. */
function tmp(): string {
  const dir = mkdtempSync(join(tmpdir(), 'reals-hostile-'));
  made.push(dir);
  return dir;
}
const LATIN1_NAME = Buffer.concat([Buffer.from('caf'), Buffer.of(0xe9), Buffer.from('.jpg')]);

/** A class folder `root`/`name` with `count` copies of the fixture photo. */
function classFolder(root: string, name: string, count: number): string {
  const dir = join(root, name);
  mkdirSync(dir, { recursive: true });
  for (let i = 0; i < count; i++) copyFileSync(PHOTO, join(dir, `img${String(i).padStart(3, '0')}.jpg`));
  return dir;
}

async function readAll(loader: DataLoader): Promise<Batch[]> {
  const out: Batch[] = [];
  try {
    for await (const batch of loader) out.push(batch);
  } finally {
    await loader.close();
  }
  return out;
}

/** Runs `fn` and returns the REALS_UNREADABLE_IMAGE warnings it emitted. */
async function unreadableWarnings(fn: () => Promise<unknown>): Promise<string[]> {
  const warnings: string[] = [];
  const listen = (w: Error & { code?: string }): void => { if (w.code === 'REALS_UNREADABLE_IMAGE') warnings.push(w.message); };
  process.on('warning', listen);
  try {
    await fn();
    await new Promise((resolve) => setImmediate(resolve));
  } finally {
    process.off('warning', listen);
  }
  return warnings;
}

test('os.fsdecode and os.fsencode: undecodable bytes round-trip through U+DC80..U+DCFF', () => {
  assert.equal(fsDecode(LATIN1_NAME), 'caf\udce9.jpg');
  assert.deepEqual(fsEncode('caf\udce9.jpg'), LATIN1_NAME);
  // Valid UTF-8 (two, three and four bytes) stays as it is; an overlong or truncated sequence is escaped byte by byte.
  assert.equal(fsDecode(Buffer.from('é€😀')), 'é€😀');
  assert.equal(fsEncode('é€😀'), 'é€😀');
  assert.equal(fsDecode(Buffer.of(0xc0, 0xaf, 0xe2, 0x82, 0x41)), '\udcc0\udcaf\udce2\udc82A');
  assert.deepEqual(fsEncode('\udcc0\udcaf\udce2\udc82A'), Buffer.of(0xc0, 0xaf, 0xe2, 0x82, 0x41));
});

test('readRegularFile refuses FIFOs, devices, folders and files over the bound at once', { timeout: 20_000 }, async () => {
  const dir = tmp();
  execFileSync('mkfifo', [join(dir, 'fifo.png')]);
  symlinkSync('/dev/zero', join(dir, 'zero.png'));
  mkdirSync(join(dir, 'folder.png'));
  writeFileSync(join(dir, 'big.png'), '');
  truncateSync(join(dir, 'big.png'), 1 << 20);
  await assert.rejects(readRegularFile(join(dir, 'fifo.png'), 1 << 20), /^Error: not a regular file \(a FIFO\)$/);
  await assert.rejects(readRegularFile(join(dir, 'zero.png'), 1 << 20), /^Error: not a regular file \(a character device\)$/);
  await assert.rejects(readRegularFile(join(dir, 'folder.png'), 1 << 20), /^Error: not a regular file \(a folder\)$/);
  await assert.rejects(readRegularFile(join(dir, 'big.png'), (1 << 20) - 1), /^Error: 1048576 bytes, over the limit of 1048575$/);
  assert.equal((await readRegularFile(join(dir, 'big.png'), 1 << 20)).length, 1 << 20);
  // Training at 16 px reads at most 16.7 M pixels' worth (150 MiB): a 1 GiB sparse file is refused unread.
  truncateSync(join(dir, 'big.png'), 2 ** 30);
  await assert.rejects(decodeImage(join(dir, 'big.png'), { maxPixels: 4096 * 4096 }), /decodeImage\(.*big\.png\): 1073741824 bytes, over the limit of 150994944/);
});

test('readIdx refuses a FIFO and /dev/zero named like Fashion-MNIST files at once, naming them', { timeout: 20_000 }, () => {
  const dir = tmp();
  execFileSync('mkfifo', [join(dir, 'train-images-idx3-ubyte.gz')]);
  symlinkSync('/dev/zero', join(dir, 'train-labels-idx1-ubyte'));
  assert.throws(() => readIdx(join(dir, 'train-images-idx3-ubyte.gz')), /readIdx\(.*train-images-idx3-ubyte\.gz\): not a regular file \(a FIFO\)/);
  assert.throws(() => readIdx(join(dir, 'train-labels-idx1-ubyte')), /readIdx\(.*train-labels-idx1-ubyte\): not a regular file \(a character device\)/);
});

for (const numWorkers of [0, 2]) {
  test(`DataLoader (${numWorkers} workers): a FIFO, /dev/zero and /dev/urandom named like images are skipped at once, with one warning`, { timeout: 60_000 }, async () => {
    const root = tmp();
    const dir = classFolder(root, 'class0', 8);
    execFileSync('mkfifo', [join(dir, 'x.png')]);
    symlinkSync('/dev/zero', join(dir, 'zero.jpg'));
    symlinkSync('/dev/urandom', join(dir, 'urandom.jpg'));
    const loader = new DataLoader(new ImageFolder(root, { resolution: 16 }), { batchSize: 4, shuffle: false, numWorkers });
    let batches: Batch[] = [];
    const warnings = await unreadableWarnings(async () => { batches = await readAll(loader); });
    assert.equal(batches.flatMap((b) => b.indices).length, 8);
    assert.deepEqual(loader.skippedFiles.map((p) => p.slice(dir.length + 1)).sort(), ['urandom.jpg', 'x.png', 'zero.jpg']);
    assert.equal(warnings.length, 1);
    assert.match(warnings[0]!, /^DataLoader: skipped 3 unreadable image files in epoch 0 \(3 in all\), e\.g\. /);
    assert.match(warnings[0]!, /not a regular file \(a (FIFO|character device)\)/);
  });
}

test('a file name that is not UTF-8 (Latin-1 é) is listed and read, in a class folder so named too', { timeout: 60_000 }, async () => {
  const root = tmp();
  classFolder(root, 'plain', 1);
  const latinClass = Buffer.concat([Buffer.from(`${root}/cl`), Buffer.of(0xe9)]);
  mkdirSync(latinClass);
  copyFileSync(PHOTO, Buffer.concat([latinClass, Buffer.from('/'), LATIN1_NAME]));
  const dataset = new ImageFolder(root, { resolution: 16 });
  assert.deepEqual(dataset.classes, ['cl\udce9', 'plain']);
  assert.deepEqual(dataset.samples, [[join(root, 'cl\udce9', 'caf\udce9.jpg'), 0], [join(root, 'plain', 'img000.jpg'), 1]]);
  const loader = new DataLoader(dataset, { batchSize: 2, shuffle: false, randomFlip: false, numWorkers: 1 });
  const [batch] = await readAll(loader);
  assert.equal(loader.skipped, 0);
  // The same pixels as the photo under a plain name.
  const want = new Float32Array(3 * 16 * 16);
  writeNormalized(centerCropArr(await decodeImage(readFileSync(PHOTO)), 16), want, 0);
  assert.deepEqual((batch!.images.toArray() as Float32Array).subarray(0, want.length), want);
});

test('a link from a class folder back to its parent is walked once, not until the path is too long', { timeout: 20_000 }, () => {
  const root = tmp();
  const dir = classFolder(root, 'class0', 2);
  symlinkSync('..', join(dir, 'loop'));
  symlinkSync(dir, join(dir, 'self'));
  const dataset = new ImageFolder(root, { resolution: 16 });
  // os.walk's order: class0's own files, then class0/loop (the root: class0 is not walked again).
  assert.deepEqual(dataset.samples.map(([path]) => path.slice(root.length + 1)), ['class0/img000.jpg', 'class0/img001.jpg']);
});

test('a folder where most files cannot be read stops with one error naming it, not a warning per file', { timeout: 60_000 }, async () => {
  const root = tmp();
  const dir = classFolder(root, 'class0', 2);
  for (let i = 0; i < 30; i++) writeFileSync(join(dir, `text${String(i).padStart(2, '0')}.png`), 'not an image');
  const loader = new DataLoader(new ImageFolder(root, { resolution: 16 }), { batchSize: 8, seed: 1, numWorkers: 1 });
  const warnings = await unreadableWarnings(() => assert.rejects(readAll(loader),
    new RegExp(`^Error: DataLoader: 30 of the first 32 image files in ${dir.replaceAll('.', '\\.')} could not be read, more than half; e\\.g\\. decodeImage\\(`)));
  assert.deepEqual(warnings, []);

  // Past 64 files the share is checked without waiting for the epoch's end.
  const many = tmp();
  const manyDir = classFolder(many, 'class0', 10);
  for (let i = 0; i < 190; i++) symlinkSync('/dev/zero', join(manyDir, `zero${String(i).padStart(3, '0')}.png`));
  const early = new DataLoader(new ImageFolder(many, { resolution: 16 }), { batchSize: 8, seed: 1, numWorkers: 0, prefetch: 1 });
  let yielded = 0;
  await assert.rejects((async () => {
    try {
      for await (const batch of early) yielded += batch.indices.length;
    } finally {
      await early.close();
    }
  })(), /DataLoader: \d+ of the first (6[4-9]|7\d) image files in .* could not be read, more than half; e\.g\. .*not a regular file \(a character device\)/);
  assert.ok(yielded < 20, `stopped within the first files (${yielded} images yielded)`);
});

test('an epoch in which no file can be read any more (the folder emptied after the first) is an error, not an empty epoch', { timeout: 60_000 }, async () => {
  const root = tmp();
  const dir = classFolder(root, 'class0', 4);
  const loader = new DataLoader(new ImageFolder(root, { resolution: 16 }), { batchSize: 2, numWorkers: 0 });
  try {
    let count = 0;
    for await (const batch of loader.iterate(0)) count += batch.indices.length;
    assert.equal(count, 4);
    for (let i = 0; i < 4; i++) writeFileSync(join(dir, `img${String(i).padStart(3, '0')}.jpg`), '');
    await assert.rejects((async () => { for await (const batch of loader.iterate(1)) void batch; })(),
      new RegExp(`^Error: DataLoader: no image file of epoch 1 in ${dir.replaceAll('.', '\\.')} could be read; e\\.g\\. decodeImage\\(`));
  } finally {
    await loader.close();
  }
});

test('ref-batch reads a Latin-1 name and leaves out FIFOs and devices named like images', { timeout: 60_000 }, async () => {
  const root = tmp();
  const dir = classFolder(root, 'photos', 1);
  copyFileSync(PHOTO, Buffer.concat([Buffer.from(`${dir}/`), LATIN1_NAME]));
  execFileSync('mkfifo', [join(dir, 'x.png')]);
  symlinkSync('/dev/zero', join(dir, 'zero.jpg'));
  const out = join(root, 'ref.npz');
  assert.deepEqual(await writeReferenceBatch(dir, out, { imageSize: 16 }), { count: 2 });
  const npz = NpzFile.open(out);
  try {
    assert.deepEqual(npz.header('arr_0').shape, [2, 16, 16, 3]);
  } finally {
    npz.close();
  }
});
