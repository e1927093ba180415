import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as torch from '../../src/torch/index.js';
import { saveNpz } from '../../src/io/npz.js';
import { FIDInceptionV3 } from '../../src/models/inception.js';
import {
  cachedActivations, computeLogits, inceptionExtractor, inceptionThroughput, openImageBatches, type FeatureExtractor,
} from '../../src/eval/index.js';
import { contentHash } from '../../src/eval/batches.js';
import { NpzFile } from '../../src/io/npz.js';

const ascii = (text: string) => torch.tensor(Array.from(Buffer.from(text, 'ascii')), { dtype: 'uint8' });

const model = new FIDInceptionV3().eval().requiresGrad_(false);
const extractor = inceptionExtractor(model);

test('inceptionExtractor: pool_3 (2048) and spatial (2023) features, IS logits = pool_3 · fc.weightᵀ (logitsUnbiased), an id per weights', () => {
  torch.manualSeed(0);
  const images = torch.randint(0, 256, [2, 3, 32, 32], { dtype: 'uint8' });
  torch.noGrad(() => {
    const expected = model.forward(images);
    const { pool3, spatial } = extractor.features(images);
    assert.deepEqual([pool3.shape, spatial!.shape], [[2, 2048], [2, 2023]]);
    assert.equal(pool3.sub(expected.pool3).abs().max().item(), 0);
    assert.equal(computeLogits(pool3, extractor).sub(expected.logitsUnbiased).abs().max().item(), 0);
  });
  assert.match(extractor.id, /^inception-[0-9a-f]{16}$/);
  assert.equal(inceptionExtractor(model).id, extractor.id);
  const other = new FIDInceptionV3();
  assert.notEqual(inceptionExtractor(other).id, extractor.id);
});

test('computeLogits runs in ADM\'s batches of 512 rows and equals one matmul', () => {
  const projection = torch.randn([6, 3]);
  const stub: FeatureExtractor = { id: 'stub', device: 'cpu', features: () => { throw new Error('unused'); }, logits: (x) => x.matmul(projection) };
  const pool3 = torch.randn([1100, 6]);
  const logits = computeLogits(pool3, stub);
  assert.deepEqual(logits.shape, [1100, 3]);
  assert.ok(logits.sub(pool3.matmul(projection)).abs().max().item() < 1e-6);
});

test('a cache file that does not fit the batch is an error that says how to recover', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'reals-acts-'));
  try {
    saveNpz(join(dir, 'ref.npz'), { arr_0: torch.zeros([5, 8, 8, 3], { dtype: 'uint8' }) });
        const ref = join(dir, 'ref.npz');
    saveNpz(join(dir, 'cache.npz'), {
      pool3: torch.zeros([4, 2048]), spatial: torch.zeros([4, 2023]),
      source_sha256: ascii(await contentHash(ref)), extractor_id: ascii(extractor.id),
    });
    await assert.rejects(cachedActivations(await openImageBatches(ref), extractor, join(dir, 'cache.npz'), await contentHash(ref)),
      /cache\.npz: cached pool3 is float32 \[4,2048\], expected float32 \[5, D\]; delete the file to recompute it/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('inceptionThroughput (for npm run bench) times whole batches through the network', () => {
  const result = inceptionThroughput({ batchSize: 2, batches: 1, imageSize: 32, extractor });
  assert.equal(result.images, 2);
  assert.ok(result.seconds > 0 && Math.abs(result.imagesPerSecond - 2 / result.seconds) < 1e-9);
});

test('an activation cache records inside itself the sha256 of its batch and the extractor; one from other inputs is recomputed, not reused', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'reals-acts-'));
  let calls = 0;
  const counting = (id: string): FeatureExtractor => ({
    id, device: 'cpu', logits: (x) => x,
    features: (images) => { calls++; const f = images.float().mean([2, 3]); return { pool3: f, spatial: f.mul(2) }; },
  });
  const warnings: string[] = [];
  const onWarning = (warning: Error) => warnings.push(warning.message);
  process.on('warning', onWarning);
  try {
    const ref = join(dir, 'ref.npz');
    const cache = join(dir, 'ref.acts.npz');
    saveNpz(ref, { arr_0: torch.randint(0, 256, [3, 4, 4, 3], { dtype: 'uint8' }) });
    const hash = await contentHash(ref);
    const first = await cachedActivations(await openImageBatches(ref), counting('a'), cache, hash);
    assert.equal(first.cached, false);
    const file = NpzFile.open(cache);
    assert.equal(Buffer.from(file.get('source_sha256').toArray() as Uint8Array).toString('ascii'), hash);
    assert.equal(Buffer.from(file.get('extractor_id').toArray() as Uint8Array).toString('ascii'), 'a');
    file.close();
    const again = await cachedActivations(await openImageBatches(ref), counting('a'), cache, hash);
    assert.deepEqual([again.cached, calls], [true, 1], 'the same batch and extractor read the cache');

    // The batch changed under the same cache name (copied, renamed, or edited in place): recomputed.
    saveNpz(ref, { arr_0: torch.full([3, 4, 4, 3], 7, { dtype: 'uint8' }) });
    const changed = await contentHash(ref);
    const recomputed = await cachedActivations(await openImageBatches(ref), counting('a'), cache, changed);
    assert.deepEqual([recomputed.cached, calls], [false, 2]);
    assert.ok(Math.abs((recomputed.activations.pool3.index(0, 0).item() as number) - 7) < 1e-6, 'the new batch\'s features, not the stale ones');
    await new Promise((resolve) => setImmediate(resolve));
    assert.match(warnings.at(-1)!, new RegExp(`ref\\.acts\\.npz: the activation cache was computed from sha256 ${hash.slice(0, 16)}… by a, not from .*ref\\.npz \\(sha256 ${changed.slice(0, 16)}…\\) by a: recomputing it`));
    // Another extractor, and a cache written without the record: recomputed too.
    assert.equal((await cachedActivations(await openImageBatches(ref), counting('b'), cache, changed)).cached, false);
    saveNpz(cache, { pool3: torch.zeros([3, 3]), spatial: torch.zeros([3, 3]) });
    assert.equal((await cachedActivations(await openImageBatches(ref), counting('b'), cache, changed)).cached, false);
    assert.equal(calls, 4);
  } finally {
    process.off('warning', onWarning);
    rmSync(dir, { recursive: true, force: true });
  }
});
