// Images as ADM's ImageDataset sees them (openai/guided-diffusion image_datasets.py): decoded to
// RGB as PIL's `Image.open(f).convert('RGB')`, center-cropped by `center_crop_arr`, optionally
// flipped left-right, and scaled to [-1, 1] as `arr.astype(np.float32) / 127.5 - 1`.
import sharp from 'sharp';
import { readRegularFile } from './files.js';
import { resize, type RawImage } from './resample.js';

export type { RawImage } from './resample.js';

/**
 * Decodes an image file (JPEG, PNG, WebP, GIF, TIFF) to 8-bit RGB with the pixels PIL's
 * `Image.open(path).convert('RGB')` gives: the embedded ICC profile and EXIF orientation are
 * ignored as PIL ignores them, grey is replicated, alpha is dropped without compositing, palettes
 * are expanded, 16-bit RGB keeps the high byte, CMYK goes through PIL's formula. Where PIL differs:
 * 16-bit grey PNGs (PIL's mode "I" clips values to 0..255, libvips keeps the high byte). Truncated
 * or corrupt pixel data is an error, as PIL's "image file is truncated". A path must name a
 * regular file of bounded size (readRegularFile; non-UTF-8 names as fsDecode spells them).
 */
export async function decodeImage(input: string | Buffer, options: { maxPixels?: number } = {}): Promise<RawImage> {
  const what = typeof input === 'string' ? input : 'buffer';
  const limitInputPixels = options.maxPixels ?? SHARP_PIXEL_LIMIT;
  try {
    const bytes = typeof input === 'string' ? await readRegularFile(input, imageFileBytes(limitInputPixels)) : input;
    const header = await sharp(bytes, { limitInputPixels: false }).metadata();
    if (header.width !== undefined && header.height !== undefined && header.width * header.height > limitInputPixels) {
      throw new Error(`${header.width}x${header.height} pixels is over the limit of ${limitInputPixels} (a decompression bomb, or an image far larger than the training resolution needs)`);
    }
    // libvips would convert CMYK through a CMYK profile; PIL uses a plain formula.
    const cmyk = header.space === 'cmyk';
    const image = sharp(bytes, { failOn: 'error', ignoreIcc: true, limitInputPixels });
    const { data, info } = await (cmyk ? image.pipelineColourspace('cmyk').toColourspace('cmyk') : image.removeAlpha().toColourspace('srgb'))
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true });
    const pixels = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    if (info.channels !== (cmyk ? 4 : 3)) throw new Error(`decoded to ${info.channels} channels, expected ${cmyk ? 'CMYK' : 'RGB'}`);
    return { data: cmyk ? cmykToRgb(pixels) : pixels, width: info.width, height: info.height, channels: 3 };
  } catch (error) {
    // libvips keeps one error buffer per process, so while other images decode at the same time a
    // failure's message can arrive repeated, or lost ("Unknown error"): keep each line once.
    const reason = [...new Set((error as Error).message.split('\n'))].join('; ');
    throw new Error(`decodeImage(${what}): ${reason}`, { cause: error });
  }
}

/**
 * The largest image file read for `maxPixels` pixels: the pixels stored uncompressed at four 16-bit
 * channels (a plain TIFF's worst case), plus 16 MiB of headers and metadata. A device or a huge
 * file named like an image is refused before it is read.
 */
function imageFileBytes(maxPixels: number): number {
  return maxPixels * 8 + 16 * 2 ** 20;
}

/** sharp's own default limit (0x3FFF squared). */
const SHARP_PIXEL_LIMIT = 0x3fff * 0x3fff;

/**
 * The most pixels an image may have to be decoded for training at `resolution`: 256 times the
 * crop's area, and at least 4096x4096, which admits every ImageNet photograph and refuses a
 * decompression bomb (a small PNG that inflates to gigabytes) before libvips allocates it.
 */
export function pixelLimitFor(resolution: number): number {
  return Math.max(256 * resolution * resolution, 4096 * 4096);
}

/** Pillow's cmyk2rgb (libImaging/Convert.c): each of C, M, Y scaled by 1 - K with MULDIV255 rounding. */
function cmykToRgb(cmyk: Uint8Array): Uint8Array {
  const rgb = new Uint8Array((cmyk.length / 4) * 3);
  for (let p = 0, q = 0; p < cmyk.length; p += 4) {
    const nk = 255 - cmyk[p + 3]!;
    for (let ch = 0; ch < 3; ch++) {
      const t = cmyk[p + ch]! * nk + 128;
      rgb[q++] = nk - (((t >> 8) + t) >> 8);
    }
  }
  return rgb;
}

/** Python's round() on a double: halves go to the even neighbour. */
export function roundHalfEven(x: number): number {
  const floor = Math.floor(x);
  const diff = x - floor;
  if (diff < 0.5) return floor;
  if (diff > 0.5) return floor + 1;
  return floor % 2 === 0 ? floor : floor + 1;
}

/**
 * ADM's `center_crop_arr`: halve with a BOX filter while the short side is at least twice `size`,
 * BICUBIC-resize so the short side is `size` (new sides rounded as Python's round), then take the
 * central size x size square with offsets `(side - size) // 2`.
 */
export function centerCropArr(image: RawImage, size: number): RawImage {
  let img = image;
  while (Math.min(img.width, img.height) >= 2 * size) {
    img = resize(img, Math.floor(img.width / 2), Math.floor(img.height / 2), 'box');
  }
  const scale = size / Math.min(img.width, img.height);
  img = resize(img, roundHalfEven(img.width * scale), roundHalfEven(img.height * scale), 'bicubic');
  return crop(img, Math.floor((img.width - size) / 2), Math.floor((img.height - size) / 2), size, size);
}

/** The width x height window whose top-left pixel is (left, top). */
export function crop(image: RawImage, left: number, top: number, width: number, height: number): RawImage {
  if (left < 0 || top < 0 || left + width > image.width || top + height > image.height) {
    throw new RangeError(`crop: window ${width}x${height} at (${left}, ${top}) is outside the ${image.width}x${image.height} image`);
  }
  const c = image.channels;
  const out = new Uint8Array(width * height * c);
  for (let y = 0; y < height; y++) {
    const from = ((top + y) * image.width + left) * c;
    out.set(image.data.subarray(from, from + width * c), y * width * c);
  }
  return { data: out, width, height, channels: c };
}

/** Mirrors left-right, as `arr[:, ::-1]`. */
export function hflip(image: RawImage): RawImage {
  const { width, height, channels: c } = image;
  const out = new Uint8Array(image.data.length);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const from = (y * width + x) * c;
      const to = (y * width + width - 1 - x) * c;
      for (let ch = 0; ch < c; ch++) out[to + ch] = image.data[from + ch]!;
    }
  }
  return { data: out, width, height, channels: c };
}

// v / 127.5 - 1 with float32 rounding after each operation, as numpy computes it on a float32
// array (a double result rounded to float32 is the correctly rounded float32 result).
const TO_UNIT = Float32Array.from({ length: 256 }, (_, v) => Math.fround(Math.fround(v / 127.5) - 1));

/**
 * One training item as ADM's ImageDataset makes it: decoded, center-cropped to `resolution`,
 * mirrored when `flip`, written as float32 CHW in [-1, 1] into `out` at `offset` (elements).
 */
export async function loadImageInto(path: string, resolution: number, flip: boolean, out: Float32Array, offset: number): Promise<void> {
  const cropped = centerCropArr(await decodeImage(path, { maxPixels: pixelLimitFor(resolution) }), resolution);
  writeNormalized(flip ? hflip(cropped) : cropped, out, offset);
}

/** Writes the image as float32 CHW in [-1, 1] into `out` at `offset` (in elements). */
export function writeNormalized(image: RawImage, out: Float32Array, offset: number): void {
  const { data, width, height, channels: c } = image;
  const plane = width * height;
  if (offset + plane * c > out.length) throw new RangeError(`writeNormalized: ${c}x${height}x${width} at ${offset} overflows ${out.length} elements`);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const from = (y * width + x) * c;
      const to = offset + y * width + x;
      for (let ch = 0; ch < c; ch++) out[to + ch * plane] = TO_UNIT[data[from + ch]!]!;
    }
  }
}
