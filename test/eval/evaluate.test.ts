import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import * as torch from '../../src/torch/index.js';
import type { Tensor } from '../../src/torch/index.js';
import { withTmp } from '../helpers.js';
import { saveNpz } from '../../src/io/npz.js';
import {
  EXTRACTOR_KEY, asciiTensor, computeActivations, computeStatistics, evaluate, formatResult, openImageBatches, readStatistics, writeFidStatistics, writeReferenceBatch,
  type FeatureExtractor,
} from '../../src/eval/index.js';

/**
 * A stand-in for the Inception network, fast enough for tests: pool_3 = per-channel 4x4 average
 * pools and their squares (96-d), spatial = 2x2 pools (12-d), logits = a fixed projection to 10.
 */
function pooledExtractor(): FeatureExtractor {
  torch.manualSeed(7);
  const projection = torch.keep(torch.randn([96, 10]).div(20));
  return {
    id: 'pooled-test',
    device: 'cpu',
    features: (images) => {
      const x = images.float().div(255);
      const coarse = torch.nnFunctional.adaptiveAvgPool2d(x, 4).flatten(1);
      return { pool3: torch.cat([coarse, coarse.mul(coarse)], 1), spatial: torch.nnFunctional.adaptiveAvgPool2d(x, 2).flatten(1) };
    },
    logits: (pool3) => pool3.matmul(projection),
    // A stand-in for the FID Inception: the report calls its score the Inception Score.
    classScore: 'inceptionScore',
  };
}

const extractor = pooledExtractor();

/** `n` smooth random RGB images [N, H, W, 3] (random colour fields blurred up from 4x4). */
function images(n: number, seed: number, size = 16): Tensor {
  torch.manualSeed(seed);
  const small = torch.rand([n, 3, 4, 4]).mul(255);
  const up = torch.nnFunctional.interpolate(small, { size: [size, size], mode: 'bilinear', alignCorners: false });
  return up.round().clamp(0, 255).to('uint8').permute(0, 2, 3, 1).contiguous();
}

const options = { extractor, isSplitSize: 12, batchSize: 7 };

test('identical batches: FID and sFID below 1e-3, precision = recall = 1; counts and sha256 reported', withTmp('eval', async (dir) => {
  const batch = images(24, 1);
  saveNpz(join(dir, 'ref.npz'), { arr_0: batch });
  saveNpz(join(dir, 'sample.npz'), { arr_0: batch });
  const result = await evaluate(join(dir, 'ref.npz'), join(dir, 'sample.npz'), options);
  assert.ok(Math.abs(result.fid) < 1e-3 && Math.abs(result.sfid!) < 1e-3, `FID ${result.fid}, sFID ${result.sfid}`);
  assert.equal(result.precision, 1);
  assert.equal(result.recall, 1);
  assert.ok(result.inceptionScore! >= 1);
  const sha256 = createHash('sha256').update(readFileSync(join(dir, 'ref.npz'))).digest('hex');
  assert.deepEqual(
    { ...result.reference, activationCache: null },
    { path: join(dir, 'ref.npz'), sha256, count: 24, statistics: 'computed', activationCache: null, cacheHit: false },
  );
  assert.deepEqual(result.sample, { path: join(dir, 'sample.npz'), sha256, count: 24 });
  assert.match(formatResult(result), /^FID +-?0\.0000$/m);
}));

test('a batch against a shuffled copy of itself: FID ≈ 0, precision = recall = 1; against noise: a large FID', withTmp('eval', async (dir) => {
  const batch = images(24, 2);
  saveNpz(join(dir, 'ref.npz'), { arr_0: batch });
  saveNpz(join(dir, 'shuffled.npz'), { arr_0: batch.indexSelect(0, torch.randperm(24)) });
  torch.manualSeed(3);
  saveNpz(join(dir, 'noise.npz'), { arr_0: torch.randint(0, 256, [24, 16, 16, 3], { dtype: 'uint8' }) });
  const shuffled = await evaluate(join(dir, 'ref.npz'), join(dir, 'shuffled.npz'), { ...options, cache: false });
  assert.ok(Math.abs(shuffled.fid) < 1e-3 && Math.abs(shuffled.sfid!) < 1e-3, `FID ${shuffled.fid}, sFID ${shuffled.sfid}`);
  assert.deepEqual([shuffled.precision, shuffled.recall], [1, 1]);
  const noise = await evaluate(join(dir, 'ref.npz'), join(dir, 'noise.npz'), { ...options, cache: false });
  assert.ok(noise.fid > 100 * Math.max(shuffled.fid, 1e-3) && noise.fid > 1, `noise FID ${noise.fid}`);
  assert.ok(noise.recall! < 0.5, `noise recall ${noise.recall}`);
}));

test('reference statistics in the file (mu, sigma, mu_s, sigma_s) are used unless recomputeRefStats', withTmp('eval', async (dir) => {
  const ref = images(24, 4);
  const sample = images(24, 5);
  saveNpz(join(dir, 'sample.npz'), { arr_0: sample });
  const sampleActs = await computeActivations(await openImageBatches(join(dir, 'sample.npz')), extractor);
  const pool3 = computeStatistics(sampleActs.pool3);
  const spatial = computeStatistics(sampleActs.spatial!);
  // Statistics record the network they are of (as fid-stats writes them); unrecorded ones are the FID Inception's.
  const network = { [EXTRACTOR_KEY]: asciiTensor(extractor.id) };
  saveNpz(join(dir, 'ref.npz'), { arr_0: ref, mu: pool3.mu, sigma: pool3.sigma, mu_s: spatial.mu, sigma_s: spatial.sigma, ...network });
  const fromFile = await evaluate(join(dir, 'ref.npz'), join(dir, 'sample.npz'), { ...options, cache: false });
  assert.equal(fromFile.reference.statistics, 'file');
  assert.ok(Math.abs(fromFile.fid) < 1e-3 && Math.abs(fromFile.sfid!) < 1e-3, 'the file\'s statistics are the sample\'s own');
  const recomputed = await evaluate(join(dir, 'ref.npz'), join(dir, 'sample.npz'), { ...options, cache: false, recomputeRefStats: true });
  assert.equal(recomputed.reference.statistics, 'computed');
  assert.ok(recomputed.fid > 0.01, `${recomputed.fid}`);
  assert.equal(recomputed.precision, fromFile.precision, 'precision/recall always read the reference images');
  // Statistics of another network (here: 2048-wide pool features, the extractor's are 96) are refused before the samples run.
  const wide = { mu: torch.zeros([2048], { dtype: 'float64' }), sigma: torch.eye(2048, { dtype: 'float64' }) };
  saveNpz(join(dir, 'other-net.npz'), { arr_0: ref, ...wide, mu_s: spatial.mu, sigma_s: spatial.sigma, ...network });
  const stages: string[] = [];
  await assert.rejects(
    evaluate(join(dir, 'other-net.npz'), join(dir, 'sample.npz'), { ...options, cache: false, onProgress: (stage) => stages.push(stage) }),
    (e: Error) => e.message === `${join(dir, 'other-net.npz')}: mu is [2048], but pooled-test gives 96-wide features (expected [96]): ` +
      'statistics of another network; evaluate with --recompute-ref-stats',
  );
  assert.ok(!stages.includes('sample'), 'no sample activations computed');
  saveNpz(join(dir, 'partial.npz'), { arr_0: ref, mu: pool3.mu, sigma: pool3.sigma, mu_s: spatial.mu });
  assert.throws(() => readStatistics(join(dir, 'partial.npz')), /partial\.npz: has mu, sigma, mu_s but not sigma_s; reference statistics need mu and sigma, and mu_s with sigma_s for sFID/);
  saveNpz(join(dir, 'spatial-only.npz'), { mu_s: spatial.mu, sigma_s: spatial.sigma });
  assert.throws(() => readStatistics(join(dir, 'spatial-only.npz')), /spatial-only\.npz: has mu_s, sigma_s but not mu, sigma;/);
}));

test('reference activations are cached next to the reference, keyed by its content hash and the network', withTmp('eval', async (dir) => {
  saveNpz(join(dir, 'ref.npz'), { arr_0: images(24, 6) });
  saveNpz(join(dir, 'sample.npz'), { arr_0: images(24, 7) });
  let computed = 0;
  const counting = { ...options, onProgress: (stage: string) => { if (stage === 'reference') computed++; } };
  const first = await evaluate(join(dir, 'ref.npz'), join(dir, 'sample.npz'), counting);
  const cache = first.reference.activationCache!;
  assert.equal(cache, join(dir, `ref.npz.acts-${first.reference.sha256.slice(0, 16)}-pooled-test.npz`));
  assert.ok(existsSync(cache));
  assert.equal(first.reference.cacheHit, false);
  const batchesBefore = computed;
  const second = await evaluate(join(dir, 'ref.npz'), join(dir, 'sample.npz'), counting);
  assert.equal(second.reference.cacheHit, true);
  assert.equal(computed, batchesBefore, 'the reference did not go through the network again');
  assert.deepEqual([second.fid, second.sfid, second.precision, second.recall, second.inceptionScore], [first.fid, first.sfid, first.precision, first.recall, first.inceptionScore]);
  saveNpz(join(dir, 'ref.npz'), { arr_0: images(24, 8) });
  const changed = await evaluate(join(dir, 'ref.npz'), join(dir, 'sample.npz'), counting);
  assert.equal(changed.reference.cacheHit, false, 'new content, new cache');
  assert.notEqual(changed.reference.activationCache, cache);
}));

test('a folder of PNG files reads as the same images as the .npz; fid-stats writes mu/sigma/mu_s/sigma_s', withTmp('eval', async (dir) => {
  const batch = images(9, 9);
  const folder = join(dir, 'pngs');
  mkdirSync(join(folder, 'sub'), { recursive: true });
  for (let i = 0; i < 9; i++) {
    const file = join(folder, i < 5 ? '' : 'sub', `${i}.png`);
    await sharp(batch.select(0, i).toArray() as Uint8Array, { raw: { width: 16, height: 16, channels: 3 } }).png().toFile(file);
  }
  saveNpz(join(dir, 'batch.npz'), { arr_0: batch });
  const fromFolder = await computeActivations(await openImageBatches(folder), extractor, { batchSize: 4 });
  const fromNpz = await computeActivations(await openImageBatches(join(dir, 'batch.npz')), extractor, { batchSize: 4 });
  assert.equal(fromFolder.pool3.sub(fromNpz.pool3).abs().max().item(), 0, 'PNG is lossless: identical features');
  await writeFidStatistics(folder, join(dir, 'stats.npz'), { extractor });
  const stats = readStatistics(join(dir, 'stats.npz'))!;
  assert.equal(stats.pool3.sigma.dtype, 'float64');
  assert.equal(stats.pool3.mu.sub(computeStatistics(fromNpz.pool3).mu).abs().max().item(), 0);
  assert.deepEqual(stats.spatial!.sigma.shape, [12, 12]);
}));

test('bad input is refused before any computation: no arr_0, wrong dtype, not 3 channels, too few samples', withTmp('eval', async (dir) => {
  const ref = join(dir, 'ref.npz');
  saveNpz(ref, { arr_0: images(24, 10) });
  const cases: [string, Record<string, Tensor>, RegExp][] = [
    ['stats-only.npz', { mu: torch.zeros([3]) }, /stats-only\.npz: no arr_0 \(an ADM batch holds its images as arr_0, uint8 \[N, H, W, 3\]\); the file holds: mu/],
    ['float.npz', { arr_0: torch.zeros([24, 16, 16, 3]) }, /float\.npz: arr_0 is float32; expected uint8 images \[N, H, W, 3\]/],
    ['gray.npz', { arr_0: torch.zeros([24, 16, 16, 1], { dtype: 'uint8' }) }, /gray\.npz: arr_0 \[24,16,16,1\] has 1 channels; expected 3 \(RGB\)/],
    ['nchw.npz', { arr_0: torch.zeros([24, 3, 16, 16], { dtype: 'uint8' }) }, /nchw\.npz: arr_0 \[24,3,16,16\] has 16 channels/],
    ['flat.npz', { arr_0: torch.zeros([24, 768], { dtype: 'uint8' }) }, /flat\.npz: arr_0 has shape \[24,768\]; expected uint8 images/],
  ];
  let ran = 0;
  for (const [name, arrays, error] of cases) {
    saveNpz(join(dir, name), arrays);
    await assert.rejects(evaluate(ref, join(dir, name), { ...options, onProgress: () => { ran++; } }), error);
  }
  saveNpz(join(dir, 'few.npz'), { arr_0: images(10, 11) });
  await assert.rejects(evaluate(ref, join(dir, 'few.npz'), { ...options, isSplitSize: 5, manifold: { k: 10 } }), /few\.npz: 10 images; the covariance and the 10-nearest-neighbour radii needs at least 11/);
  assert.equal(ran, 0, 'nothing was computed');
  const folder = join(dir, 'rgba');
  mkdirSync(folder);
  await sharp({ create: { width: 16, height: 16, channels: 4, background: { r: 1, g: 2, b: 3, alpha: 0.5 } } }).png().toFile(join(folder, 'a.png'));
  await assert.rejects(openImageBatches(folder), /rgba\/a\.png: the image has 4 channels; expected 3 \(RGB\)/);
  mkdirSync(join(dir, 'empty'));
  await assert.rejects(openImageBatches(join(dir, 'empty')), /empty: no \.png, \.jpg or \.jpeg files/);
  assert.deepEqual(readdirSync(dir).filter((f) => f.includes('.acts-')), [], 'no cache written for refused inputs');
}));

test('a fid-stats file is a reference: FID and sFID equal those against its images, IS the same, precision and recall n/a', withTmp('eval', async (dir) => {
  saveNpz(join(dir, 'ref.npz'), { arr_0: images(24, 11) });
  saveNpz(join(dir, 'sample.npz'), { arr_0: images(24, 12) });
  await writeFidStatistics(join(dir, 'ref.npz'), join(dir, 'stats.npz'), options);
  const full = await evaluate(join(dir, 'ref.npz'), join(dir, 'sample.npz'), { ...options, cache: false });
  const stats = await evaluate(join(dir, 'stats.npz'), join(dir, 'sample.npz'), options);
  assert.ok(Math.abs(stats.fid - full.fid) < 1e-9 && Math.abs(stats.sfid! - full.sfid!) < 1e-9, `FID ${stats.fid} vs ${full.fid}`);
  assert.equal(stats.inceptionScore, full.inceptionScore);
  assert.deepEqual([stats.precision, stats.recall, stats.reference.count, stats.reference.statistics], [null, null, null, 'file']);
  assert.match(formatResult(stats), /^Precision +n\/a$/m);
  assert.match(formatResult(stats), /reference: statistics only/);
  await assert.rejects(evaluate(join(dir, 'stats.npz'), join(dir, 'sample.npz'), { ...options, recomputeRefStats: true }), /holds statistics only \(no arr_0\)/);
}));

test('writeReferenceBatch: every image of a folder, ADM-center-cropped, as arr_0 uint8 NHWC in path order; a seeded subset; the evaluator reads it', withTmp('eval', async (dir) => {
  const photos = join(dir, 'photos');
  mkdirSync(join(photos, 'b'), { recursive: true });
  const wide = await sharp(Buffer.alloc(40 * 20 * 3, 200), { raw: { width: 40, height: 20, channels: 3 } }).png().toBuffer();
  await sharp(wide).toFile(join(photos, 'b', '1.png'));
  await sharp(Buffer.alloc(16 * 16, 50), { raw: { width: 16, height: 16, channels: 1 } }).png().toFile(join(photos, 'a.png'));
  for (let i = 0; i < 4; i++) await sharp(wide).jpeg().toFile(join(photos, `c${i}.jpg`));
  const { count } = await writeReferenceBatch(photos, join(dir, 'ref.npz'), { imageSize: 8 });
  assert.equal(count, 6);
  const batch = await openImageBatches(join(dir, 'ref.npz'));
  const { value: all } = await batch.batches(100).next();
  batch.close();
  assert.deepEqual(all!.shape, [6, 8, 8, 3]);
  const [grey, flat] = [all!.select(0, 0), all!.select(0, 1)];
  assert.ok(grey.eq(50).all().item(), 'a.png first: grey replicated to RGB');
  assert.ok(flat.eq(200).all().item(), 'b/1.png second: a 40x20 image cut to 8x8');
  const subset = await writeReferenceBatch(photos, join(dir, 'sub.npz'), { imageSize: 8, maxImages: 3, seed: 1 });
  assert.equal(subset.count, 3);
  await assert.rejects(writeReferenceBatch(join(dir, 'none'), join(dir, 'x.npz'), { imageSize: 8 }), /none: not a folder of images/);
  assert.ok(!existsSync(join(dir, 'x.npz')));
}));
