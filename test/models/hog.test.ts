import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '../../src/torch/index.js';
import type { Tensor } from '../../src/torch/index.js';
import { HogTeacher, hogCells } from '../../src/models/hog.js';
import { DataLoader, FashionMNIST } from '../../src/data/index.js';
import { localDistantSimilarity } from '../../src/eval/spatial-structure.js';
import { assertClose, loadFixture } from '../helpers.js';

const fx = loadFixture('models/hog.json');
interface HogCase { images_u8: Tensor; cell_size: number; cells: Tensor; patch: Tensor; cls: Tensor; float32: boolean }
const cases = Object.entries(fx.cases as Record<string, HogCase>);

/** The images as reals' loader gives them (float32 v / 127.5 - 1), the values skimage read. */
const toUnit = (u8: Tensor): Tensor => u8.float().div(127.5).sub(1);

/**
 * A cell's value sums cellSize^2 votes; skimage sums them in a C float, each addition rounding by at
 * most 2^-24 of the running sum, so its histogram is off by up to cellSize^2 * 2^-24 of the cell's
 * total, which the L2 normalisation maps to at most that in absolute terms (totals <= the norm). Our
 * float32 run has the same bound plus a rounding or two per vote (difference, hypot): 4x covers both
 * and the fixture's float32 storage. A vote in the wrong bin or cell moves a value by
 * magnitude / cellSize^2 of the norm: 1e-3 or more for any visible edge.
 */
const tolerance = (cellSize: number): number => 4 * cellSize ** 2 * 2 ** -24;

test('hogCells equals skimage.feature.hog (1x1-cell blocks, L2) on Fashion-MNIST and photographs, in float64 and float32', () => {
  torch.noGrad(() => {
    for (const [name, c] of cases) {
      const images = toUnit(c.images_u8);
      const cell: [number, number] = [c.cell_size, c.cell_size];
      assertClose(hogCells(images.double(), cell, fx.orientations), c.cells, 0, tolerance(c.cell_size), `${name} (float64)`);
      // The fixture marks the photographs whose nearly tied colour channels float32 may resolve either way.
      if (c.float32) assertClose(hogCells(images, cell, fx.orientations), c.cells, 0, tolerance(c.cell_size), `${name} (float32)`);
    }
  });
});

test('HogTeacher: per latent position the cell and 2x2-cell block histograms, concatenated and normalised; CLS the normalised mean', () => {
  torch.noGrad(() => {
    const teacher = new HogTeacher();
    assert.equal(teacher.embedDim, 2 * fx.orientations);
    for (const [name, c] of cases.filter(([, c]) => c.float32)) {
      const images = toUnit(c.images_u8);
      const grid: [number, number] = [images.size(2) / c.cell_size, images.size(3) / c.cell_size];
      const { patch, cls } = teacher.forward(images, grid);
      assert.equal(patch.dtype, 'float32');
      assertClose(patch, c.patch, 0, tolerance(c.cell_size), `${name} patch`);
      assertClose(cls, c.cls, 0, tolerance(c.cell_size), `${name} cls`);
    }
  });
});

test('HogTeacher on a grid a level does not divide: the last blocks hold the cells that remain', () => {
  torch.noGrad(() => {
    const [, fashion] = cases.find(([name]) => name === 'fashion_mnist_cell4')!;
    const images = toUnit(fashion.images_u8).slice(2, 2, 30).slice(3, 2, 30); // the 28x28 originals: a 7x7 grid of 4 px cells
    const { patch } = new HogTeacher().forward(images, [7, 7]);
    assert.deepEqual(patch.shape, [2, 49, 18]);
    // The corner's 2x2 block holds only the corner cell, so its two levels agree.
    const corner = patch.select(1, 48);
    assertClose(corner.slice(1, 9, 18), corner.slice(1, 0, 9), 0, 1e-7, 'corner levels');
    assert.ok(corner.abs().sum().item() > 0, 'the corner cell has gradients');
  });
});

test('HogTeacher: flat images give zero tokens, no NaN; bad grids and configs are refused with what is wrong', () => {
  torch.noGrad(() => {
    const { patch, cls } = new HogTeacher({ scales: [1, 2, 4] }).forward(torch.full([1, 3, 16, 16], 0.3), [4, 4]);
    assert.deepEqual(patch.shape, [1, 16, 27]);
    assert.equal(patch.abs().max().item(), 0);
    assert.equal(cls.abs().max().item(), 0);
  });
  const teacher = new HogTeacher();
  assert.throws(() => teacher.forward(torch.zeros([1, 3, 32, 32]), [5, 5]), /the latent grid 5x5 does not divide the 32x32 images into whole cells/);
  assert.throws(() => teacher.forward(torch.zeros([3, 32, 32]), [4, 4]), /expected images \[B, C, H, W\], got \[3,32,32\]/);
  assert.throws(() => new HogTeacher({ scales: [] }), /scales must be positive integers, got \[\]/);
  assert.throws(() => new HogTeacher({ orientations: 0 }), /orientations must be a positive integer, got 0/);
});

test('the default levels [1, 2] give HOG tokens more spatial structure (iREPA\'s LDS) than the cell alone or with 4x4 blocks too', async () => {
  // 1,000 Fashion-MNIST test images at 32 px on an 8x8 grid measured 0.243, 0.301 and 0.267.
  const loader = new DataLoader(new FashionMNIST({ train: false }), { batchSize: 500, shuffle: false, numWorkers: 0 });
  try {
    for await (const { images } of loader.iterate(0, 0)) {
      const lds = (scales: number[]): number => torch.noGrad(() =>
        localDistantSimilarity(new HogTeacher({ scales }).forward(images, [8, 8]).patch, [8, 8]).mean().item());
      const [cell, withBlocks, withLarger] = [lds([1]), lds([1, 2]), lds([1, 2, 4])];
      assert.ok(withBlocks > cell + 0.03 && withBlocks > withLarger + 0.01, `LDS: [1] ${cell}, [1, 2] ${withBlocks}, [1, 2, 4] ${withLarger}`);
      images.dispose();
      break;
    }
  } finally {
    await loader.close();
  }
});
