import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '../../src/torch/index.js';
import type { InMemoryDataset } from '../../src/data/index.js';
import { DINOV2_CONFIGS, DinoVisionTransformer, preprocessImages } from '../../src/models/dinov2.js';
import { holdOutSplit, linearProbe, probeFeatures, subsetOf } from '../../src/eval/linear-probe.js';

torch.setNumThreads(1);
const CONFIG = { ...DINOV2_CONFIGS.dinov2_vits14!, imgSize: 16, patchSize: 4, embedDim: 16, depth: 1, numHeads: 2 };

/** Noise in [0, 96) that depends only on (seed, image, pixel). */
function noise(seed: number, i: number, p: number): number {
  let h = Math.imul(seed * 1000003 + i, 0x9e3779b1) ^ p;
  h = Math.imul(h ^ (h >>> 15), 0x85ebca6b);
  return ((h ^ (h >>> 13)) >>> 0) % 96;
}

/** n 16x16 grey RGB images: class 0 bright (128-224), class 1 dark (32-128), noisy; labels alternate. */
function brightOrDark(n: number, seed: number): InMemoryDataset {
  return {
    length: n, itemShape: [3, 16, 16],
    image: (i) => {
      const data = new Uint8Array(16 * 16 * 3);
      for (let p = 0; p < 16 * 16; p++) data.fill((i % 2 === 0 ? 128 : 32) + noise(seed, i, p), p * 3, p * 3 + 3);
      return { data, width: 16, height: 16, channels: 3 };
    },
    label: (i) => i % 2,
  };
}

test('probeFeatures is the final-norm CLS token next to the mean final-norm patch token (DINOv2 linear eval, avgpool)', () => {
  torch.manualSeed(0);
  const backbone = new DinoVisionTransformer(CONFIG).eval();
  const images = torch.rand([3, 3, 16, 16]).mul(2).sub(1);
  const features = probeFeatures(backbone, images, 16);
  assert.deepEqual(features.shape, [3, 32]);
  const f = torch.noGrad(() => backbone.forwardFeatures(preprocessImages(images, 16)));
  assert.ok(features.slice(1, 0, 16).sub(f.xNormClstoken).abs().max().item() < 1e-6);
  assert.ok(features.slice(1, 16).sub(f.xNormPatchtokens.mean(1)).abs().max().item() < 1e-6);
});

test('holdOutSplit is a seeded partition; subsetOf keeps images and labels', () => {
  const data = brightOrDark(10, 0);
  const a = holdOutSplit(data, 0.2, 3);
  const b = holdOutSplit(data, 0.2, 3);
  assert.equal(a.test.length, 2);
  assert.equal(a.train.length, 8);
  const first = (d: InMemoryDataset) => Array.from({ length: d.length }, (_, i) => d.image(i).data[0]! * 2 + d.label(i));
  assert.deepEqual(first(a.test as InMemoryDataset), first(b.test as InMemoryDataset));
  const subset = subsetOf(data, [7, 2]) as InMemoryDataset;
  assert.deepEqual([subset.label(0), subset.label(1)], [1, 0]);
  assert.throws(() => subset.image(2), /index 2 is outside \[0, 2\)/);
  assert.throws(() => holdOutSplit(brightOrDark(1, 0), 0.2, 0), /cannot hold out/);
});

test('linearProbe: a separable task scores ~1, the same images with shuffled labels ~chance; seeded', async () => {
  torch.manualSeed(0);
  const backbone = new DinoVisionTransformer(CONFIG);
  const options = { backbone, train: brightOrDark(200, 1), test: brightOrDark(100, 2), epochs: 30, seed: 0 };
  const separable = await linearProbe(options);
  assert.deepEqual({ trainImages: separable.trainImages, testImages: separable.testImages }, { trainImages: 200, testImages: 100 });
  assert.ok(separable.accuracy >= 0.95, `accuracy ${separable.accuracy}`);
  assert.equal((await linearProbe(options)).accuracy, separable.accuracy, 'the same seed gives the same accuracy');
  const scrambled = (d: InMemoryDataset): InMemoryDataset => ({ ...d, image: d.image, label: (i) => ((i * 7919) >> 3) % 2 });
  const chance = await linearProbe({ ...options, train: scrambled(brightOrDark(200, 1)), test: scrambled(brightOrDark(100, 2)) });
  assert.ok(chance.accuracy < 0.7, `accuracy ${chance.accuracy} with labels unrelated to the images`);
  assert.equal(backbone.training, true, 'the backbone goes back to its mode');
  await assert.rejects(linearProbe({ ...options, inputSize: 18 }), /inputSize 18 is not a multiple of the patch size 4/);
});
