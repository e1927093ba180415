// Pillow's resampling (src/libImaging/Resample.c, Pillow 9.4 as in Debian bookworm) ported
// operation for operation, so `resize` equals `PIL.Image.resize(size, resample)` pixel for pixel on
// 8-bit images: separable filters, coefficients in double normalized to sum 1 then rounded to
// 22-bit fixed point, the horizontal pass first (on the rows the vertical pass needs), then the
// vertical pass, each rounding to uint8.

/** Pixels in row-major HWC order, 8 bits per channel. */
export interface RawImage {
  readonly data: Uint8Array;
  readonly width: number;
  readonly height: number;
  readonly channels: number;
}

export type ResampleFilter = 'box' | 'bicubic';

interface Filter { readonly support: number; readonly weight: (x: number) => number }

const FILTERS: Record<ResampleFilter, Filter> = {
  box: { support: 0.5, weight: (x) => (x > -0.5 && x <= 0.5 ? 1 : 0) },
  bicubic: { support: 2, weight: bicubic },
};

// Keys' cubic convolution with a = -0.5, in Pillow's exact evaluation order.
function bicubic(x: number): number {
  const a = -0.5;
  if (x < 0) x = -x;
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
  return 0;
}

// 32 bits minus 8 for the result minus 2 for overflow of filters with negative lobes.
const PRECISION_BITS = 32 - 8 - 2;
const ONE = 1 << PRECISION_BITS;
const HALF = 1 << (PRECISION_BITS - 1);

/** Per output pixel: the first input pixel, how many it reads, and its fixed-point weights. */
export interface Coefficients { readonly ksize: number; readonly first: Int32Array; readonly count: Int32Array; readonly weights: Int32Array }

/** Pillow's precompute_coeffs followed by normalize_coeffs_8bpc, for the box (0, inSize). */
export function precomputeCoefficients(inSize: number, outSize: number, filter: ResampleFilter): Coefficients {
  const { support: filterSupport, weight } = FILTERS[filter];
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1);
  const support = filterSupport * filterScale;
  const ksize = Math.ceil(support) * 2 + 1;
  const first = new Int32Array(outSize);
  const count = new Int32Array(outSize);
  const weights = new Int32Array(outSize * ksize);
  const k = new Float64Array(ksize);
  const ss = 1 / filterScale;
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    // C's (int) cast truncates toward zero.
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const n = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
    let ww = 0;
    for (let x = 0; x < n; x++) {
      k[x] = weight((x + xmin - center + 0.5) * ss);
      ww += k[x]!;
    }
    for (let x = 0; x < n; x++) {
      const w = ww !== 0 ? k[x]! / ww : k[x]!;
      weights[xx * ksize + x] = w < 0 ? Math.trunc(-0.5 + w * ONE) : Math.trunc(0.5 + w * ONE);
    }
    first[xx] = xmin;
    count[xx] = n;
  }
  return { ksize, first, count, weights };
}

// clip8: an arithmetic shift (floor) of the accumulator, then clamping to 0..255. Accumulators are
// int32 as in C, where Pillow's headroom bits keep them from overflowing.
function clip8(ss: number): number {
  const v = ss >> PRECISION_BITS;
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

/**
 * `PIL.Image.resize((width, height), resample=filter)` for an 8-bit image, each channel on its own
 * as PIL does for modes L, RGB and CMYK (PIL premultiplies RGBA and LA by alpha first; this does not).
 */
export function resize(image: RawImage, width: number, height: number, filter: ResampleFilter): RawImage {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new RangeError(`resize: output size ${width}x${height} must be positive integers`);
  }
  const { width: inWidth, height: inHeight, channels: c } = image;
  if (image.data.length !== inWidth * inHeight * c) {
    throw new RangeError(`resize: ${image.data.length} bytes do not hold a ${inWidth}x${inHeight}x${c} image`);
  }
  const vertical = precomputeCoefficients(inHeight, height, filter);
  // As ImagingResampleInner: the horizontal pass only computes the rows the vertical pass reads.
  const rowFirst = vertical.first[0]!;
  const rowLast = vertical.first[height - 1]! + vertical.count[height - 1]!;
  let current = image;
  let rowOffset = 0;
  if (width !== inWidth) {
    current = resampleHorizontal(image, width, rowFirst, rowLast - rowFirst, precomputeCoefficients(inWidth, width, filter));
    rowOffset = rowFirst;
  }
  if (height !== inHeight) return resampleVertical(current, height, rowOffset, vertical);
  return current === image ? { ...image, data: image.data.slice() } : current;
}

function resampleHorizontal(image: RawImage, width: number, rowStart: number, rows: number, co: Coefficients): RawImage {
  const { data, width: inWidth, channels: c } = image;
  const out = new Uint8Array(width * rows * c);
  const { ksize, first, count, weights } = co;
  if (c === 3) {
    // The common case with one accumulator per channel, as Pillow's own loop.
    for (let y = 0; y < rows; y++) {
      const rowIn = (y + rowStart) * inWidth * 3;
      let o = y * width * 3;
      for (let xx = 0; xx < width; xx++) {
        let p = rowIn + first[xx]! * 3;
        const end = xx * ksize + count[xx]!;
        let s0 = HALF;
        let s1 = HALF;
        let s2 = HALF;
        for (let k = xx * ksize; k < end; k++, p += 3) {
          const w = weights[k]!;
          s0 = (s0 + Math.imul(data[p]!, w)) | 0;
          s1 = (s1 + Math.imul(data[p + 1]!, w)) | 0;
          s2 = (s2 + Math.imul(data[p + 2]!, w)) | 0;
        }
        out[o++] = clip8(s0);
        out[o++] = clip8(s1);
        out[o++] = clip8(s2);
      }
    }
    return { data: out, width, height: rows, channels: c };
  }
  for (let y = 0; y < rows; y++) {
    const rowIn = (y + rowStart) * inWidth * c;
    const rowOut = y * width * c;
    for (let xx = 0; xx < width; xx++) {
      const start = rowIn + first[xx]! * c;
      const n = count[xx]!;
      const kOffset = xx * ksize;
      for (let ch = 0; ch < c; ch++) {
        let ss = HALF;
        for (let x = 0; x < n; x++) ss = (ss + Math.imul(data[start + x * c + ch]!, weights[kOffset + x]!)) | 0;
        out[rowOut + xx * c + ch] = clip8(ss);
      }
    }
  }
  return { data: out, width, height: rows, channels: c };
}

function resampleVertical(image: RawImage, height: number, rowOffset: number, co: Coefficients): RawImage {
  const { data, width, channels: c } = image;
  const stride = width * c;
  const out = new Uint8Array(height * stride);
  const { ksize, first, count, weights } = co;
  for (let yy = 0; yy < height; yy++) {
    const start = (first[yy]! - rowOffset) * stride;
    const k0 = yy * ksize;
    const end = k0 + count[yy]!;
    const rowOut = yy * stride;
    // Four bytes of the row per pass over the taps, then the rest one by one.
    let i = 0;
    for (; i + 4 <= stride; i += 4) {
      let s0 = HALF;
      let s1 = HALF;
      let s2 = HALF;
      let s3 = HALF;
      for (let k = k0, p = start + i; k < end; k++, p += stride) {
        const w = weights[k]!;
        s0 = (s0 + Math.imul(data[p]!, w)) | 0;
        s1 = (s1 + Math.imul(data[p + 1]!, w)) | 0;
        s2 = (s2 + Math.imul(data[p + 2]!, w)) | 0;
        s3 = (s3 + Math.imul(data[p + 3]!, w)) | 0;
      }
      out[rowOut + i] = clip8(s0);
      out[rowOut + i + 1] = clip8(s1);
      out[rowOut + i + 2] = clip8(s2);
      out[rowOut + i + 3] = clip8(s3);
    }
    for (; i < stride; i++) {
      let ss = HALF;
      for (let k = k0, p = start + i; k < end; k++, p += stride) ss = (ss + Math.imul(data[p]!, weights[k]!)) | 0;
      out[rowOut + i] = clip8(ss);
    }
  }
  return { data: out, width, height, channels: c };
}
