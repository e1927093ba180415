import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { FIXTURES } from '../helpers.js';
import { resize, precomputeCoefficients, type ResampleFilter } from '../../src/data/resample.js';
import { decodeImage } from '../../src/data/image.js';

const DATA = join(FIXTURES, 'data');
const expected = JSON.parse(readFileSync(join(DATA, 'expected.json'), 'utf8')) as {
  resizes: { filter: ResampleFilter; width: number; height: number; base64: string }[];
};

test('resize equals Pillow 9.4 BOX and BICUBIC byte for byte on noise (down, up, odd ratios, 1x1)', async () => {
  const noise = await decodeImage(join(DATA, 'noise_23x17.png'));
  assert.equal(expected.resizes.length, 16);
  for (const { filter, width, height, base64 } of expected.resizes) {
    const out = resize(noise, width, height, filter);
    const want = Buffer.from(base64, 'base64');
    assert.equal(out.width, width);
    assert.equal(out.height, height);
    const differing = out.data.reduce((n, v, i) => n + (v !== want[i] ? 1 : 0), 0);
    assert.equal(differing, 0, `${filter} 23x17 -> ${width}x${height}: ${differing} of ${want.length} bytes differ from PIL`);
  }
});

test('fixed-point weights of each output pixel sum to 1 << 22 within rounding, bicubic lobes are negative', () => {
  for (const [inSize, outSize] of [[23, 11], [17, 50], [389, 64], [7, 7]] as const) {
    const { ksize, count, weights } = precomputeCoefficients(inSize, outSize, 'bicubic');
    for (let i = 0; i < outSize; i++) {
      const row = Array.from(weights.subarray(i * ksize, i * ksize + count[i]!));
      const sum = row.reduce((a, b) => a + b, 0);
      assert.ok(Math.abs(sum - (1 << 22)) <= ksize, `${inSize}->${outSize} pixel ${i}: weights sum to ${sum}`);
    }
  }
  const down = precomputeCoefficients(23, 11, 'bicubic');
  assert.ok(down.weights.some((w) => w < 0), 'bicubic has negative lobes');
});

test('resizing to the same size is an exact copy, not a view', () => {
  const image = { data: Uint8Array.from({ length: 4 * 3 * 3 }, (_, i) => (i * 37) % 256), width: 4, height: 3, channels: 3 };
  for (const filter of ['box', 'bicubic'] as const) {
    const out = resize(image, 4, 3, filter);
    assert.deepEqual(out.data, image.data);
    assert.notEqual(out.data, image.data);
  }
});

test('resize refuses a non-integer size and a buffer of the wrong length', () => {
  const image = { data: new Uint8Array(12), width: 2, height: 2, channels: 3 };
  assert.throws(() => resize(image, 1.5, 2, 'box'), /output size 1.5x2/);
  assert.throws(() => resize({ ...image, height: 3 }, 1, 1, 'box'), /12 bytes do not hold a 2x3x3 image/);
});

test('channels resample independently: 1- and 4-channel images give the channels of the RGB result', async () => {
  const rgb = await decodeImage(join(DATA, 'noise_23x17.png'));
  const plane = (ch: number): Uint8Array => rgb.data.filter((_, i) => i % 3 === ch);
  const rgba = new Uint8Array(23 * 17 * 4);
  for (let p = 0; p < 23 * 17; p++) rgba.set([rgb.data[3 * p]!, rgb.data[3 * p + 1]!, rgb.data[3 * p + 2]!, 255 - rgb.data[3 * p]!], 4 * p);
  for (const [filter, width, height] of [['bicubic', 9, 40], ['box', 5, 3], ['bicubic', 1, 2]] as const) {
    const want = resize(rgb, width, height, filter).data;
    for (let ch = 0; ch < 3; ch++) {
      const grey = resize({ data: plane(ch), width: 23, height: 17, channels: 1 }, width, height, filter);
      assert.deepEqual(grey.data, want.filter((_, i) => i % 3 === ch), `${filter} ${width}x${height} channel ${ch} alone`);
    }
    const four = resize({ data: rgba, width: 23, height: 17, channels: 4 }, width, height, filter).data;
    assert.deepEqual(four.filter((_, i) => i % 4 !== 3), want, `${filter} ${width}x${height} as RGBA`);
  }
});
