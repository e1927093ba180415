import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { FIXTURES } from '../helpers.js';
import { ImageFolder } from '../../src/data/image-folder.js';
import { centerCropArr, decodeImage, hflip, writeNormalized } from '../../src/data/image.js';
import { DataLoader, flipFor, type Batch, type DataLoaderOptions } from '../../src/data/loader.js';

const DATA = join(FIXTURES, 'data');
const PHOTOS = ['cat_301x217.jpg', 'rocket_217x389.jpg', 'coffee_103x157.png', 'coffee_52x40.png', 'camera_75x61.png', 'coffee_rgba_63x47.png'];

/** `count` images in `classes` class folders, cycling through the fixture photos. */
function folder(count: number, classes = 3): string {
  const root = mkdtempSync(join(tmpdir(), 'reals-loader-'));
  for (let i = 0; i < count; i++) {
    const photo = PHOTOS[i % PHOTOS.length]!;
    const dir = join(root, `class${i % classes}`);
    mkdirSync(dir, { recursive: true });
    copyFileSync(join(DATA, photo), join(dir, `img${String(i).padStart(3, '0')}${photo.slice(photo.lastIndexOf('.'))}`));
  }
  return root;
}

async function collect(loader: AsyncIterable<Batch>): Promise<{ indices: number[][]; images: Float32Array[]; labels: number[][] }> {
  const out = { indices: [] as number[][], images: [] as Float32Array[], labels: [] as number[][] };
  for await (const batch of loader) {
    out.indices.push(batch.indices);
    out.images.push(batch.images.toArray() as Float32Array);
    out.labels.push(batch.labels.tolist() as number[]);
  }
  return out;
}

function loaderOf(root: string, options: Partial<DataLoaderOptions> = {}): DataLoader {
  return new DataLoader(new ImageFolder(root, { resolution: 16 }), { batchSize: 3, seed: 11, numWorkers: 2, ...options });
}

test('DataLoader: batches are the ADM items (center crop, seeded flip, [-1, 1]) in sampler order, same in worker threads and inline', async () => {
  const root = folder(8);
  const dataset = new ImageFolder(root, { resolution: 16 });
  const workers = loaderOf(root);
  const inline = loaderOf(root, { numWorkers: 0 });
  try {
    workers.setEpoch(1);
    inline.setEpoch(1);
    const a = await collect(workers);
    const b = await collect(inline);
    assert.deepEqual(a, b);
    assert.deepEqual(a.indices.flat(), workers.sampler.indices(1));
    assert.deepEqual(a.indices.map((batch) => batch.length), [3, 3, 2]);
    assert.deepEqual(a.labels.flat(), a.indices.flat().map((i) => dataset.label(i)));
    const flips = a.indices.flat().map((i) => flipFor(11, 1, i));
    assert.ok(flips.includes(true) && flips.includes(false), 'some items are flipped, some not');
    for (const [k, index] of a.indices.flat().entries()) {
      const cropped = centerCropArr(await decodeImage(dataset.path(index)), 16);
      const want = new Float32Array(3 * 16 * 16);
      writeNormalized(flips[k] ? hflip(cropped) : cropped, want, 0);
      const batch = a.images[Math.floor(k / 3)]!;
      assert.deepEqual(batch.subarray((k % 3) * want.length, (k % 3 + 1) * want.length), want, `item ${index}`);
    }
  } finally {
    await workers.close();
  }
});

test('DataLoader: the order depends on seed + epoch only; shuffle=false reads in dataset order', async () => {
  const root = folder(8);
  const order = async (options: Partial<DataLoaderOptions>, epoch: number): Promise<number[]> => {
    const loader = loaderOf(root, { numWorkers: 0, ...options });
    return (await collect(loader.iterate(epoch))).indices.flat();
  };
  const first = await order({}, 0);
  assert.deepEqual(await order({}, 0), first);
  assert.notDeepEqual(await order({}, 1), first);
  assert.deepEqual(await order({ seed: 10 }, 1), first, 'seed 10, epoch 1 draws seed + epoch = 11 like seed 11, epoch 0');
  assert.deepEqual(await order({ shuffle: false }, 3), [0, 1, 2, 3, 4, 5, 6, 7]);
});

test('DataLoader: 2 ranks read disjoint halves that cover the dataset (11 items: one repeated as padding, or dropped)', async () => {
  const root = folder(11);
  for (const dropLast of [false, true]) {
    const ranks = [0, 1].map((rank) => loaderOf(root, { rank, worldSize: 2, dropLast, numWorkers: 0 }));
    const seen = await Promise.all(ranks.map(async (loader) => (await collect(loader.iterate(2))).indices.flat()));
    const all = [...seen[0]!, ...seen[1]!];
    assert.equal(seen[0]!.length, seen[1]!.length);
    if (dropLast) {
      assert.equal(all.length, 10);
      assert.equal(new Set(all).size, 10, 'no item on both ranks');
    } else {
      assert.equal(all.length, 12);
      assert.equal(new Set(all).size, 11, 'every item read, exactly one twice (the padding)');
      const shared = seen[0]!.filter((i) => seen[1]!.includes(i));
      assert.ok(shared.length <= 1);
    }
    assert.equal(ranks[0]!.length, 2, '5 or 6 items per rank in batches of 3');
  }
});

test('DataLoader: resuming at (epoch, batch) yields the batches the uninterrupted epoch yielded from there', async () => {
  const root = folder(10);
  const full = loaderOf(root);
  const resumed = loaderOf(root);
  try {
    const all = await collect(full.iterate(4));
    assert.equal(all.indices.length, 4);
    const rest = await collect(resumed.iterate(4, 2));
    assert.deepEqual(rest.indices, all.indices.slice(2));
    assert.deepEqual(rest.images, all.images.slice(2));
    assert.deepEqual(rest.labels, all.labels.slice(2));
    // Breaking out mid-epoch leaves the loader usable.
    for await (const batch of full.iterate(4)) {
      assert.deepEqual(batch.indices, all.indices[0]);
      break;
    }
    assert.deepEqual((await collect(full.iterate(4, 3))).indices, all.indices.slice(3));
  } finally {
    await Promise.all([full.close(), resumed.close()]);
  }
});

test('DataLoader: a truncated JPEG is skipped and counted, with one warning for the epoch that names it', async () => {
  const root = folder(5, 1);
  const bytes = readFileSync(join(DATA, 'cat_301x217.jpg'));
  const broken = join(root, 'class0', 'img002_truncated.jpg');
  writeFileSync(broken, bytes.subarray(0, Math.floor(bytes.length * 0.6)));
  writeFileSync(join(root, 'class0', 'img003_empty.png'), '');
  const warnings: Error[] = [];
  const onWarning = (w: Error): void => { warnings.push(w); };
  process.on('warning', onWarning);
  const loader = loaderOf(root, { shuffle: false, batchSize: 4 });
  try {
    const { indices } = await collect(loader);
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(loader.skipped, 2);
    const dataset = loader.dataset as ImageFolder;
    assert.deepEqual(loader.skippedFiles.sort(), [broken, join(root, 'class0', 'img003_empty.png')]);
    assert.deepEqual(indices.flat().map((i) => dataset.path(i)).filter((p) => p === broken), []);
    // Sorted: img000, img001, img002, img002_truncated | img003, img003_empty, img004.
    assert.deepEqual(indices.map((batch) => batch.length), [3, 2], 'each batch lost its unreadable file');
    const named = warnings.filter((w) => (w as Error & { code?: string }).code === 'REALS_UNREADABLE_IMAGE');
    assert.equal(named.length, 1, 'one warning for the epoch, not one per file');
    assert.match(named[0]!.message, /^DataLoader: skipped 2 unreadable image files in epoch 0 \(2 in all\), e\.g\. /);
    // The reason is libvips' (its error buffer is shared by concurrent decodes, so it can be lost).
    assert.match(named[0]!.message, /decodeImage\(.*img002_truncated\.jpg\): (VipsJpeg: premature end of JPEG image|Unknown error)/i);
  } finally {
    process.off('warning', onWarning);
    await loader.close();
  }
});

test('DataLoader: a batch whose every file is unreadable is left out; the next batch keeps its position', async () => {
  const root = mkdtempSync(join(tmpdir(), 'reals-loader-'));
  mkdirSync(join(root, 'only'));
  writeFileSync(join(root, 'only', 'a1.jpg'), 'not a jpeg');
  writeFileSync(join(root, 'only', 'a2.png'), Buffer.alloc(40));
  copyFileSync(join(DATA, 'cat_301x217.jpg'), join(root, 'only', 'b.jpg'));
  copyFileSync(join(DATA, 'cat_301x217.jpg'), join(root, 'only', 'c.jpg'));
  const loader = loaderOf(root, { shuffle: false, batchSize: 2, numWorkers: 0 });
  process.on('warning', ignore);
  try {
    assert.equal(loader.length, 2);
    assert.deepEqual((await collect(loader)).indices, [[2, 3]]);
    assert.deepEqual((await collect(loader.iterate(0, 1))).indices, [[2, 3]]);
    assert.equal(loader.skipped, 2, 'the resumed run started after the unreadable batch');
  } finally {
    process.off('warning', ignore);
  }
});

function ignore(): void {}

test('flipFor mirrors about half the items, differently per epoch and seed; randomFlip: false mirrors none', async () => {
  const flips = (seed: number, epoch: number): boolean[] => Array.from({ length: 2000 }, (_, i) => flipFor(seed, epoch, i));
  const count = (f: boolean[]): number => f.filter(Boolean).length;
  assert.ok(Math.abs(count(flips(0, 0)) - 1000) < 100, `${count(flips(0, 0))} of 2000 flipped`);
  const differ = (a: boolean[], b: boolean[]): number => a.filter((v, i) => v !== b[i]).length;
  assert.ok(differ(flips(0, 0), flips(0, 1)) > 800);
  assert.ok(differ(flips(0, 0), flips(1, 0)) > 800);
  const root = folder(4);
  const plain = await collect(loaderOf(root, { numWorkers: 0, randomFlip: false, shuffle: false, batchSize: 4 }));
  const dataset = new ImageFolder(root, { resolution: 16 });
  const want = new Float32Array(4 * 3 * 16 * 16);
  for (let i = 0; i < 4; i++) writeNormalized(centerCropArr(await decodeImage(dataset.path(i)), 16), want, i * 3 * 16 * 16);
  assert.deepEqual(plain.images[0], want);
});

/** Blocks this thread for `ms` without using the CPU, as a training step blocked on the GPU does. */
function blockFor(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

test('DataLoader: with prefetching workers a training step does not wait on JPEG decoding', async (t) => {
  const root = folder(36);
  const loader = new DataLoader(new ImageFolder(root, { resolution: 64 }), { batchSize: 4, seed: 3, numWorkers: 2, prefetch: 2 });
  try {
    await collect(loader.iterate(0)); // starts the workers
    const decodePerBatch = loader.stats.decodeMs / loader.stats.batches;
    // A step long enough for 2 workers to decode the next batch meanwhile, with room to spare.
    const stepMs = Math.max(20, decodePerBatch);
    const waits: number[] = [];
    const decodeBefore = loader.stats.decodeMs;
    const iterator = loader.iterate(1);
    for (;;) {
      const start = performance.now();
      const { done } = await iterator.next();
      if (done) break;
      waits.push(performance.now() - start);
      blockFor(stepMs);
    }
    const decodeMs = loader.stats.decodeMs - decodeBefore;
    const steady = waits.slice(1);
    const waitPerStep = steady.reduce((a, b) => a + b, 0) / steady.length;
    t.diagnostic(`decode ${(decodeMs / waits.length).toFixed(1)} ms per batch of 4 (summed over workers), step ${stepMs.toFixed(1)} ms, ` +
      `first batch wait ${waits[0]!.toFixed(1)} ms, then ${waitPerStep.toFixed(2)} ms wait per step (max ${Math.max(...steady).toFixed(2)})`);
    assert.equal(waits.length, 9);
    assert.ok(waitPerStep < 0.25 * (decodeMs / waits.length), `the step waited ${waitPerStep.toFixed(2)} ms per batch for decoding that takes ${(decodeMs / waits.length).toFixed(1)} ms`);
  } finally {
    await loader.close();
  }
});

test('DataLoader.visitFirst: the first count images of epoch 0 in its order, the last batch cut; all of them when fewer', async () => {
  const dataset = {
    length: 10, itemShape: [1, 1, 1] as const,
    image: (index: number) => ({ data: new Uint8Array([index]), width: 1, height: 1, channels: 1 }),
    label: (index: number) => index,
  };
  const options = { batchSize: 4, seed: 3, randomFlip: false, numWorkers: 0 };
  const order = (await collect(new DataLoader(dataset, options))).labels.flat();
  for (const [count, expected] of [[6, 6], [8, 8], [25, 10]] as const) {
    const loader = new DataLoader(dataset, options);
    const seen: number[] = [];
    const sizes: number[] = [];
    const n = await loader.visitFirst(count, (images, labels) => {
      sizes.push(images.size(0));
      assert.equal(labels.size(0), images.size(0));
      seen.push(...Array.from(labels.toArray() as BigInt64Array, Number));
    });
    assert.equal(n, expected);
    assert.deepEqual(seen, order.slice(0, expected), `count ${count}`);
    assert.deepEqual(sizes, count === 6 ? [4, 2] : count === 8 ? [4, 4] : [4, 4, 2]);
  }
});
