import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import * as torch from '../../src/torch/index.js';
import { PLOT_COLORS, makeGrid, saveImageGrid, savePlot } from '../../src/runlog/images.js';

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'reals-images-'));
  try {
    await fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * torchvision's make_grid written out pixel by pixel: image k at grid row floor(k / xmaps) and
 * column k % xmaps, its top-left corner at (row * (H + padding) + padding, col * (W + padding) +
 * padding); save_image's value: trunc(clamp((x + 1) / 2 * 255 + 0.5, 0, 255)) in float32.
 */
function expectedGrid(images: Float32Array, [n, c, h, w]: number[], nrow: number, padding: number): { data: Uint8Array; shape: number[] } {
  const xmaps = Math.min(nrow, n!);
  const ymaps = Math.ceil(n! / xmaps);
  const height = ymaps * (h! + padding) + padding;
  const width = xmaps * (w! + padding) + padding;
  const outC = c === 1 ? 3 : c!;
  const data = new Uint8Array(height * width * outC);
  for (let k = 0; k < n!; k++) {
    const top = Math.floor(k / xmaps) * (h! + padding) + padding;
    const left = (k % xmaps) * (w! + padding) + padding;
    for (let ch = 0; ch < outC; ch++) {
      for (let y = 0; y < h!; y++) {
        for (let x = 0; x < w!; x++) {
          const v = Math.min(Math.max(images[((k * c! + (c === 1 ? 0 : ch)) * h! + y) * w! + x]!, -1), 1);
          const scaled = Math.fround(Math.fround(Math.fround(Math.fround(v + 1) / 2) * 255) + 0.5);
          data[((top + y) * width + left + x) * outC + ch] = Math.trunc(Math.min(Math.max(scaled, 0), 255));
        }
      }
    }
  }
  return { data, shape: [height, width, outC] };
}

test('makeGrid places each image where torchvision.utils.make_grid does, scaled as save_image', () => {
  torch.manualSeed(3);
  for (const [shape, nrow, padding] of [[[5, 3, 4, 6], 2, 2], [[3, 1, 5, 3], 8, 1], [[7, 3, 2, 2], 3, 0]] as [number[], number, number][]) {
    const images = torch.randn(shape).mul(0.8);
    const grid = makeGrid(images, { nrow, padding });
    const expected = expectedGrid(images.toArray() as Float32Array, shape, nrow, padding);
    assert.deepEqual(grid.shape, expected.shape, `grid of ${shape} nrow ${nrow} padding ${padding}`);
    assert.equal(grid.dtype, 'uint8');
    assert.deepEqual(grid.toArray(), expected.data, `pixels of ${shape}`);
  }
});

test('makeGrid keeps uint8 images as they are and returns a single image unpadded', () => {
  const images = torch.arange(0, 2 * 3 * 2 * 2).reshape(2, 3, 2, 2).mul(7).to('uint8');
  const grid = makeGrid(images, { padding: 1 });
  assert.deepEqual(grid.shape, [4, 7, 3]);
  assert.deepEqual(grid.index(1, 1).tolist(), [0, 28, 56], 'first pixel of image 0, channels 0..2');
  assert.deepEqual(grid.index(2, 5).tolist(), [3 * 7 + 84, 7 * 7 + 84, 11 * 7 + 84], 'last pixel of image 1');
  const single = makeGrid(torch.ones([1, 3, 4, 5]));
  assert.deepEqual(single.shape, [4, 5, 3]);
  assert.deepEqual([...new Set(single.toArray() as Uint8Array)], [255]);
  assert.throws(() => makeGrid(torch.ones([3, 4, 5])), /\[N, C, H, W\], got \[3,4,5\]/);
  assert.throws(() => makeGrid(torch.ones([2, 3, 4, 5], { dtype: 'int64' })), /floating point or uint8, got int64/);
});

test('saveImageGrid writes a PNG holding the grid', () => withDir(async (dir) => {
  torch.manualSeed(4);
  const images = torch.rand([6, 3, 8, 8]).mul(2).sub(1);
  const path = join(dir, 'samples.png');
  await saveImageGrid(path, images, { nrow: 3 });
  const { data, info } = await sharp(path).raw().toBuffer({ resolveWithObject: true });
  assert.deepEqual([info.height, info.width, info.channels, info.format], [22, 32, 3, 'raw']);
  assert.deepEqual(new Uint8Array(data), makeGrid(images, { nrow: 3 }).toArray());
}));

function hex(color: string): [number, number, number] {
  return [1, 3, 5].map((i) => parseInt(color.slice(i, i + 2), 16)) as [number, number, number];
}

test('savePlot draws each series in its colour, along its curve, with a legend', () => withDir(async (dir) => {
  const path = join(dir, 'loss.png');
  const steps = Array.from({ length: 50 }, (_, i) => i * 100);
  const rising = steps.map((s) => [s, 1 + s / 1000] as [number, number]);
  const falling = steps.map((s) => [s, 5 / (1 + s / 1000)] as [number, number]);
  await savePlot(path, [{ name: 'rising', points: rising }, { name: 'falling', points: falling }], { title: 'loss', width: 640, height: 400 });
  const { data, info } = await sharp(path).raw().toBuffer({ resolveWithObject: true });
  assert.deepEqual([info.width, info.height], [640, 400]);
  const pixel = (x: number, y: number) => [0, 1, 2].map((c) => data[(y * info.width + x) * info.channels + c]!);
  const near = (p: number[], color: [number, number, number]) => p.every((v, c) => Math.abs(v - color[c]!) <= 30);

  // Mean row of each series' pixels per column of the plot area (the legend is to its right).
  const rows = (color: [number, number, number]) => {
    const mean: number[] = [];
    for (let x = 0; x < 0.7 * info.width; x++) {
      const ys = Array.from({ length: info.height }, (_, y) => y).filter((y) => near(pixel(x, y), color));
      if (ys.length > 0) mean.push(ys.reduce((a, b) => a + b) / ys.length);
    }
    return mean;
  };
  const up = rows(hex(PLOT_COLORS[0]!));
  const down = rows(hex(PLOT_COLORS[1]!));
  assert.ok(up.length > 200 && down.length > 200, `curves span the plot (${up.length}, ${down.length} columns)`);
  assert.ok(up[0]! - up.at(-1)! > 100, 'the rising curve climbs (rows decrease)');
  assert.ok(down.at(-1)! - down[0]! > 100, 'the falling curve descends');
  const legend = (color: [number, number, number]) => {
    let count = 0;
    for (let y = 0; y < info.height; y++) for (let x = Math.floor(0.75 * info.width); x < info.width; x++) if (near(pixel(x, y), color)) count++;
    return count;
  };
  assert.ok(legend(hex(PLOT_COLORS[0]!)) >= 150 && legend(hex(PLOT_COLORS[1]!)) >= 150, 'a 20x10 swatch per series');

  await savePlot(join(dir, 'log.png'), [{ name: 'loss', points: [[0, 1e-3], [10, 1]] }], { logY: true });
  const log = await sharp(join(dir, 'log.png')).metadata();
  assert.deepEqual([log.width, log.height], [800, 450]);
  // A legend longer than the plot is tall makes the picture taller: 30 rows of 20 px below the 40 px title.
  const many = Array.from({ length: 30 }, (_, i) => ({ name: `series ${i}`, points: [[0, i], [1, i + 1]] as [number, number][] }));
  await savePlot(join(dir, 'many.png'), many);
  assert.equal((await sharp(join(dir, 'many.png')).metadata()).height, 40 + 30 * 20 + 20);
  await assert.rejects(savePlot(path, [{ name: 'loss', points: [[0, 0], [1, 1]] }], { logY: true }), /"loss" has value 0 at step 0, which a log scale cannot show/);
  await assert.rejects(savePlot(path, [{ name: 'loss', points: [[0, NaN]] }]), /"loss" has a non-finite point \(0, NaN\)/);
  await assert.rejects(savePlot(path, [{ name: 'loss', points: [] }]), /no points/);
}));
