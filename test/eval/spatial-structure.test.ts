import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '../../src/torch/index.js';
import { DinoVisionTransformer, resolveDinoConfig } from '../../src/models/dinov2.js';
import { FashionMNIST } from '../../src/data/index.js';
import { localDistantSimilarity, spatialStructure } from '../../src/eval/spatial-structure.js';
import { loadFixture } from '../helpers.js';

const fixture = loadFixture('eval/spatial_structure.json');

test('LDS equals a pair-by-pair float64 reference (make_spatial_structure.py) on non-square grids', () => {
  for (const name of ['random', 'smooth']) {
    const { tokens, height, width, far_distance: farDistance, lds } = fixture[name];
    const got = localDistantSimilarity(tokens, [height, width], farDistance).toArray() as Float32Array;
    const expected = lds.toArray() as Float64Array;
    // float32 cosines of <= 16-d unit vectors, averaged over <= 600 pairs: a few float32 ulps of 1.
    got.forEach((v, i) => assert.ok(Math.abs(v - expected[i]!) < 1e-5, `${name}[${i}]: ${v} vs ${expected[i]}`));
  }
});

test('LDS of two orthogonal half-images on a 2x12 grid is the hand count 32/34 - 4/98', () => {
  // Columns 0-5 hold e1, columns 6-11 e2. Near pairs: 22 horizontal (2 cross the halves) + 12
  // vertical, so 32 of 34 have cosine 1. Far pairs (distance >= 6): 42 within a row and 56 across
  // the rows; only the 4 corner-to-corner pairs inside a half (distance 5 + 1) have cosine 1.
  const half = (column: number): number[] => (column < 6 ? [1, 0] : [0, 1]);
  const tokens = torch.tensor([0, 1].flatMap(() => Array.from({ length: 12 }, (_, c) => half(c)).flat()), { shape: [1, 24, 2] });
  const lds = localDistantSimilarity(tokens, [2, 12], 6).item();
  assert.ok(Math.abs(lds - (32 / 34 - 4 / 98)) < 1e-6, `${lds}`);
});

test('tokens that are a smooth function of position give a high LDS, constant tokens 0, i.i.d. tokens about 0', () => {
  const side = 16;
  const angle = (2 * Math.PI) / 40;
  const smooth = Array.from({ length: side * side }, (_, k) => {
    const [row, column] = [Math.floor(k / side), k % side];
    return [Math.cos(angle * row), Math.sin(angle * row), Math.cos(angle * column), Math.sin(angle * column)];
  });
  const smoothLds = localDistantSimilarity(torch.tensor(smooth.flat(), { shape: [1, side * side, 4] }), [side, side]).item();
  assert.ok(smoothLds > 0.25, `smooth tokens: LDS ${smoothLds}`);
  assert.ok(Math.abs(localDistantSimilarity(torch.ones([2, side * side, 8]), [side, side]).sum().item()) < 1e-6);
  torch.manualSeed(0);
  // 256-d Gaussian tokens: each cosine has std 1/16; the near mean (480 pairs) over 8 images has std
  // about 1e-3, so 0.02 is many standard deviations wide and still far below the smooth case.
  const random = localDistantSimilarity(torch.randn([8, side * side, 256]), [side, side]).mean().item();
  assert.ok(Math.abs(random) < 0.02, `i.i.d. tokens: LDS ${random}`);
});

test('a grid with no distant pairs, or tokens that do not fill the grid, is refused', () => {
  assert.throws(() => localDistantSimilarity(torch.ones([1, 9, 4]), [3, 3], 6), /farDistance 6 must be an integer in \[2, 4\] \(the 3x3 grid's largest distance\)/);
  assert.throws(() => localDistantSimilarity(torch.ones([1, 10, 4]), [3, 3], 2), /expected tokens \[B, 3x3 = 9, D\], got \[1,10,4\]/);
});

test('spatialStructure measures the final-norm patch tokens of a backbone on its own grid, reproducibly', async () => {
  const config = { ...resolveDinoConfig('dinov2_vits14'), imgSize: 32, patchSize: 4, embedDim: 32, depth: 2, numHeads: 2 };
  torch.manualSeed(3);
  const backbone = new DinoVisionTransformer(config);
  const images = new FashionMNIST({ channels: 3, train: false });
  const first = await spatialStructure({ backbone, images, count: 16 });
  const again = await spatialStructure({ backbone, images, count: 16 });
  assert.deepEqual(first.grid, [8, 8]);
  assert.equal(first.images, 16);
  assert.equal(first.lds, again.lds);
  assert.ok(Number.isFinite(first.lds) && Math.abs(first.lds) < 1, `${first.lds}`);
  // Another subset of images gives another mean: the images are really read.
  const other = await spatialStructure({ backbone, images, count: 16, seed: 1 });
  assert.notEqual(other.lds, first.lds);
});
