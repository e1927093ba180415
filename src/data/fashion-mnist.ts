// Fashion-MNIST (Xiao et al. 2017) from Debian's dataset-fashion-mnist: gzipped IDX files of 28x28
// grey images, zero-padded to 32x32 (2 pixels each side) so that they patchify like 32x32 images,
// with 1 channel or the grey replicated to 3.
import { existsSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { join } from 'node:path';
import { readRegularFileSync } from './files.js';
import type { RawImage } from './resample.js';
import type { InMemoryDataset } from './loader.js';

/** Where Debian's dataset-fashion-mnist installs the files. */
export const FASHION_MNIST_ROOT = '/usr/share/datasets/fashion-mnist';

/** Label names, as torchvision.datasets.FashionMNIST.classes. */
export const FASHION_MNIST_CLASSES: readonly string[] = [
  'T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot',
];

/** The largest IDX file read, before and after gunzip (Fashion-MNIST's training images take 47 MB). */
const MAX_IDX_BYTES = 2 ** 28;

/** An IDX file (LeCun's MNIST format) of unsigned bytes: its dimensions and data. */
export interface IdxArray { readonly shape: readonly number[]; readonly data: Uint8Array }

/**
 * Reads an IDX file of unsigned bytes, gunzipping it when it ends in .gz: two zero bytes, type
 * 0x08, the number of dimensions, each dimension as a big-endian uint32, then the data.
 */
export function readIdx(path: string): IdxArray {
  let bytes: Buffer;
  try {
    const raw = readRegularFileSync(path, MAX_IDX_BYTES);
    bytes = path.endsWith('.gz') ? gunzipSync(raw, { maxOutputLength: MAX_IDX_BYTES }) : raw;
  } catch (error) {
    const reason = (error as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE' ? `inflates past ${MAX_IDX_BYTES} bytes` : (error as Error).message;
    throw new Error(`readIdx(${path}): ${reason}`, { cause: error });
  }
  if (bytes.length < 4 || bytes[0] !== 0 || bytes[1] !== 0) throw new Error(`readIdx(${path}): not an IDX file (bad magic)`);
  if (bytes[2] !== 0x08) throw new Error(`readIdx(${path}): element type 0x${bytes[2]!.toString(16)} is not unsigned byte (0x08)`);
  const ndim = bytes[3]!;
  const shape = Array.from({ length: ndim }, (_, i) => bytes.readUInt32BE(4 + 4 * i));
  const offset = 4 + 4 * ndim;
  const numel = shape.reduce((a, b) => a * b, 1);
  if (bytes.length !== offset + numel) {
    throw new Error(`readIdx(${path}): shape [${shape}] needs ${numel} bytes of data, the file has ${bytes.length - offset}`);
  }
  return { shape, data: new Uint8Array(bytes.buffer, bytes.byteOffset + offset, numel) };
}

export interface FashionMNISTOptions {
  /** Folder of the four .gz files (default Debian's). */
  root?: string;
  /** The 60,000 training images, or the 10,000 test images (default true). */
  train?: boolean;
  /** 1 (grey) or 3 (grey replicated to RGB); default 1. */
  channels?: 1 | 3;
}

const SIZE = 28;
const PAD = 2;
const PADDED = SIZE + 2 * PAD;

export class FashionMNIST implements InMemoryDataset {
  readonly channels: 1 | 3;
  readonly itemShape: readonly [number, number, number];
  private readonly images: Uint8Array;
  private readonly labels: Uint8Array;

  constructor(options: FashionMNISTOptions = {}) {
    const root = options.root ?? FASHION_MNIST_ROOT;
    const prefix = options.train ?? true ? 'train' : 't10k';
    const imagesPath = join(root, `${prefix}-images-idx3-ubyte.gz`);
    const labelsPath = join(root, `${prefix}-labels-idx1-ubyte.gz`);
    for (const path of [imagesPath, labelsPath]) {
      if (!existsSync(path)) throw new Error(`FashionMNIST: ${path} is missing; install Debian's dataset-fashion-mnist or pass root`);
    }
    const images = readIdx(imagesPath);
    const labels = readIdx(labelsPath);
    if (images.shape.length !== 3 || images.shape[1] !== SIZE || images.shape[2] !== SIZE) {
      throw new Error(`FashionMNIST: ${imagesPath} holds [${images.shape}], expected [N, 28, 28]`);
    }
    if (labels.shape.length !== 1 || labels.shape[0] !== images.shape[0]) {
      throw new Error(`FashionMNIST: ${labelsPath} holds [${labels.shape}] labels for ${images.shape[0]} images`);
    }
    this.images = images.data;
    this.labels = labels.data;
    this.channels = options.channels ?? 1;
    this.itemShape = [this.channels, PADDED, PADDED];
  }

  get length(): number { return this.labels.length; }

  label(index: number): number {
    this.check(index);
    return this.labels[index]!;
  }

  /** Item `index` as a 32x32 HWC image: the 28x28 picture framed by 2 pixels of 0 on each side. */
  image(index: number): RawImage {
    this.check(index);
    const c = this.channels;
    const data = new Uint8Array(PADDED * PADDED * c);
    const source = index * SIZE * SIZE;
    for (let y = 0; y < SIZE; y++) {
      for (let x = 0; x < SIZE; x++) {
        const v = this.images[source + y * SIZE + x]!;
        const to = ((y + PAD) * PADDED + x + PAD) * c;
        for (let ch = 0; ch < c; ch++) data[to + ch] = v;
      }
    }
    return { data, width: PADDED, height: PADDED, channels: c };
  }

  private check(index: number): void {
    if (!Number.isInteger(index) || index < 0 || index >= this.labels.length) {
      throw new RangeError(`FashionMNIST: index ${index} is outside [0, ${this.labels.length})`);
    }
  }
}
