import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { FIXTURES } from '../helpers.js';
import { decodeImage, centerCropArr, roundHalfEven, hflip, crop, writeNormalized, pixelLimitFor, loadImageInto } from '../../src/data/image.js';
import { deflateSync, crc32 } from 'node:zlib';

const DATA = join(FIXTURES, 'data');
const expected = JSON.parse(readFileSync(join(DATA, 'expected.json'), 'utf8')) as {
  cases: { file: string; size: number; golden: string; box_halvings: number }[];
  decoded: Record<string, { mode: string; width: number; height: number; sha256: string }>;
  unit: number[];
};

test("decodeImage gives the bytes of PIL's Image.open(f).convert('RGB') (JPEG, PNG; RGB, 16-bit RGB, grey, RGBA, palette, CMYK)", async () => {
  const modes = new Set<string>();
  for (const [file, want] of Object.entries(expected.decoded)) {
    const image = await decodeImage(join(DATA, file));
    assert.deepEqual([image.width, image.height, image.channels], [want.width, want.height, 3], file);
    assert.equal(createHash('sha256').update(image.data).digest('hex'), want.sha256, `${file} (PIL mode ${want.mode}) decodes to other pixels than PIL`);
    modes.add(want.mode);
  }
  assert.deepEqual([...modes].sort(), ['CMYK', 'L', 'P', 'RGB', 'RGB;16', 'RGBA']);
});

test('centerCropArr equals ADM center_crop_arr under Pillow 9.4 pixel for pixel (BOX halving, bicubic down and up, both orientations)', async () => {
  const halvings = new Set<number>();
  const orientations = new Set<string>();
  for (const { file, size, golden, box_halvings } of expected.cases) {
    const image = await decodeImage(join(DATA, file));
    const want = await decodeImage(join(DATA, golden));
    const got = centerCropArr(image, size);
    assert.deepEqual([got.width, got.height], [size, size], `${file} @ ${size}`);
    const differing = got.data.reduce((n, v, i) => n + (v !== want.data[i] ? 1 : 0), 0);
    assert.equal(differing, 0, `${file} @ ${size}: ${differing} of ${got.data.length} bytes differ from PIL`);
    halvings.add(box_halvings);
    orientations.add(image.width > image.height ? 'landscape' : 'portrait');
  }
  assert.deepEqual([...halvings].sort(), [0, 1, 2], 'cases cover no, one and two BOX halvings');
  assert.equal(orientations.size, 2);
});

test("roundHalfEven is Python's round: 32.5 -> 32, 27.5 -> 28, -1.5 -> -2", () => {
  assert.equal(roundHalfEven(52 * (25 / 40)), 32);
  assert.equal(roundHalfEven(27.5), 28);
  assert.equal(roundHalfEven(2.5000001), 3);
  assert.equal(roundHalfEven(2.4999999), 2);
  assert.equal(roundHalfEven(-0.5), 0);
  assert.equal(roundHalfEven(-1.5), -2);
});

test('hflip mirrors columns and keeps channel order; twice is the identity', () => {
  const image = { data: Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]), width: 2, height: 2, channels: 3 };
  assert.deepEqual(Array.from(hflip(image).data), [4, 5, 6, 1, 2, 3, 10, 11, 12, 7, 8, 9]);
  assert.deepEqual(hflip(hflip(image)).data, image.data);
});

test('crop takes the window and refuses one outside the image', () => {
  const image = { data: Uint8Array.from({ length: 12 }, (_, i) => i), width: 4, height: 3, channels: 1 };
  assert.deepEqual(Array.from(crop(image, 1, 1, 2, 2).data), [5, 6, 9, 10]);
  assert.throws(() => crop(image, 3, 0, 2, 2), /window 2x2 at \(3, 0\) is outside the 4x3 image/);
});

test("writeNormalized scales as numpy's arr.astype(float32) / 127.5 - 1 (exact float32) into CHW", () => {
  const all = { data: Uint8Array.from({ length: 256 }, (_, i) => i), width: 256, height: 1, channels: 1 };
  const out = new Float32Array(256);
  writeNormalized(all, out, 0);
  assert.deepEqual(Array.from(out), expected.unit);
  assert.equal(out[0], -1);
  assert.equal(out[255], 1);
  const rgb = { data: Uint8Array.from([0, 255, 51, 255, 0, 102]), width: 2, height: 1, channels: 3 };
  const chw = new Float32Array(8);
  writeNormalized(rgb, chw, 2);
  assert.deepEqual(Array.from(chw), [0, 0, -1, 1, 1, -1, expected.unit[51]!, expected.unit[102]!]);
});

test('decodeImage names the file of a truncated JPEG', async () => {
  const bytes = readFileSync(join(DATA, 'cat_301x217.jpg'));
  const path = join(mkdtempSync(join(tmpdir(), 'reals-image-')), 'truncated.jpg');
  writeFileSync(path, bytes.subarray(0, bytes.length >> 1));
  await assert.rejects(decodeImage(path), (error: Error) => error.message.includes(path) && /premature end/i.test(error.message));
});

/** A 1-bit grey PNG of width x height zero pixels: a few kilobytes that inflate to width * height / 8 bytes. */
function blankPng(width: number, height: number): Buffer {
  const chunk = (type: string, data: Buffer) => {
    const body = Buffer.concat([Buffer.from(type, 'latin1'), data]);
    const out = Buffer.alloc(body.length + 8);
    out.writeUInt32BE(data.length, 0);
    body.copy(out, 4);
    out.writeUInt32BE(crc32(body), body.length + 4);
    return out;
  };
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header.set([1, 0, 0, 0, 0], 8);
  const rows = Buffer.alloc(height * (1 + Math.ceil(width / 8)));
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', header), chunk('IDAT', deflateSync(rows, { level: 9 })), chunk('IEND', Buffer.alloc(0))]);
}

test('a decompression-bomb PNG (20000x20000 in 48 KB) is refused for training at 256 px before it is decoded, naming the file and the limit', async () => {
  const path = join(mkdtempSync(join(tmpdir(), 'reals-bomb-')), 'bomb.png');
  writeFileSync(path, blankPng(20_000, 20_000));
  assert.equal(pixelLimitFor(256), 4096 * 4096);
  assert.equal(pixelLimitFor(1024), 256 * 1024 * 1024);
  const before = process.memoryUsage().rss;
  await assert.rejects(loadImageInto(path, 256, false, new Float32Array(3 * 256 * 256), 0),
    { message: `decodeImage(${path}): 20000x20000 pixels is over the limit of 16777216 (a decompression bomb, or an image far larger than the training resolution needs)` });
  assert.ok(process.memoryUsage().rss - before < 200e6, 'no gigabytes allocated');
  const small = join(dirname(path), 'small.png');
  writeFileSync(small, blankPng(300, 200));
  assert.deepEqual([(await decodeImage(small, { maxPixels: pixelLimitFor(32) })).width], [300], 'a photograph-sized image decodes');
});
