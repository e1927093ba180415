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

const model = new FIDInceptionV3().eval().requiresGrad_(false);
const extractor = inceptionExtractor(model);

test('inceptionExtractor: pool_3 (2048) and spatial (2023) features, IS logits = pool_3 · fc.weightᵀ (logitsUnbiased), an id per weights', () => {
  torch.manualSeed(0);
  const images = torch.randint(0, 256, [2, 3, 32, 32], { dtype: 'uint8' });
  torch.noGrad(() => {
    const expected = model.forward(images);
    const { pool3, spatial } = extractor.features(images);
    assert.deepEqual([pool3.shape, spatial.shape], [[2, 2048], [2, 2023]]);
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
    saveNpz(join(dir, 'cache.npz'), { pool3: torch.zeros([4, 2048]), spatial: torch.zeros([4, 2023]) });
    await assert.rejects(cachedActivations(await openImageBatches(join(dir, 'ref.npz')), extractor, join(dir, 'cache.npz')),
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
