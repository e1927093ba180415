// Image batches to evaluate: an ADM `.npz` (arr_0, uint8 [N, H, W, 3], as guided-diffusion's
// sampling scripts write it and its evaluator reads it) streamed in chunks, or a folder of PNG/JPEG
// files; the content hashes that name them in reports and activation caches; and writing an ADM
// reference batch from a folder of photographs.
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, statSync } from 'node:fs';
import { relative } from 'node:path';
import sharp from 'sharp';
import * as torch from '../torch/index.js';
import type { Tensor } from '../torch/index.js';
import { NpzFile, NpzWriter } from '../io/npz.js';
import { centerCropArr, decodeImage, pixelLimitFor } from '../data/image.js';
import { IMAGE_EXTENSIONS as FOLDER_IMAGE_EXTENSIONS } from '../data/image-folder.js';
import { randperm } from '../data/sampler.js';
import { fsEncode, listRegularFiles, readRegularFile, statPath } from '../data/files.js';

/** The array of an ADM batch file that holds the images. */
export const IMAGES_KEY = 'arr_0';

const IMAGE_EXTENSIONS = /\.(png|jpe?g)$/i;
/** The largest sample image file read: an uncompressed 16-bit RGBA PNG of 4096 x 4096 and its headers. */
const SAMPLE_FILE_BYTES = 4096 * 4096 * 8 + 2 ** 24;

/** A set of RGB images of one size, read in batches of uint8 [B, H, W, 3] (NHWC, as ADM's arr_0). */
export interface ImageBatches {
  readonly path: string;
  readonly count: number;
  batches(batchSize: number): AsyncGenerator<Tensor>;
  close(): void;
}

/** The images of an ADM .npz (arr_0) or of a folder of .png/.jpg/.jpeg files (sorted by path). */
export async function openImageBatches(path: string): Promise<ImageBatches> {
  return statSync(path).isDirectory() ? openFolder(path) : openNpz(path);
}

function openNpz(path: string): ImageBatches {
  const file = NpzFile.open(path);
  try {
    if (!file.has(IMAGES_KEY)) {
      throw new Error(`${path}: no ${IMAGES_KEY} (an ADM batch holds its images as ${IMAGES_KEY}, uint8 [N, H, W, 3]); the file holds: ${file.keys().join(', ') || 'nothing'}`);
    }
    const { dtype, shape } = file.header(IMAGES_KEY);
    if (dtype !== 'uint8') throw new Error(`${path}: ${IMAGES_KEY} is ${dtype}; expected uint8 images [N, H, W, 3]`);
    if (shape.length !== 4) throw new Error(`${path}: ${IMAGES_KEY} has shape [${shape}]; expected uint8 images [N, H, W, 3]`);
    if (shape[3] !== 3) throw new Error(`${path}: ${IMAGES_KEY} [${shape}] has ${shape[3]} channels; expected 3 (RGB) in the last dimension`);
  } catch (error) {
    file.close();
    throw error;
  }
  return {
    path,
    count: file.header(IMAGES_KEY).shape[0]!,
    batches: (batchSize) => file.rows(IMAGES_KEY, batchSize),
    close: () => file.close(),
  };
}

function listImages(dir: string): string[] {
  return listRegularFiles(dir).filter((file) => IMAGE_EXTENSIONS.test(file)).sort();
}

async function decodeRgb(file: string, size: { width: number; height: number } | undefined): Promise<{ data: Buffer; width: number; height: number }> {
  const bytes = await readRegularFile(file, SAMPLE_FILE_BYTES).catch((error: Error) => {
    throw new Error(`${file}: cannot read the image (${error.message})`, { cause: error });
  });
  const { data, info } = await sharp(bytes).raw().toBuffer({ resolveWithObject: true }).catch((error: Error) => {
    throw new Error(`${file}: cannot decode the image (${error.message})`, { cause: error });
  });
  if (info.channels !== 3) throw new Error(`${file}: the image has ${info.channels} channels; expected 3 (RGB)`);
  if (size !== undefined && (info.width !== size.width || info.height !== size.height)) {
    throw new Error(`${file}: the image is ${info.width}x${info.height}, the folder's first image ${size.width}x${size.height}; all must have one size`);
  }
  return { data, width: info.width, height: info.height };
}

async function openFolder(dir: string): Promise<ImageBatches> {
  const files = listImages(dir);
  if (files.length === 0) throw new Error(`${dir}: no .png, .jpg or .jpeg files`);
  const first = await decodeRgb(files[0]!, undefined);
  const size = { width: first.width, height: first.height };
  return {
    path: dir,
    count: files.length,
    async *batches(batchSize: number) {
      for (let start = 0; start < files.length; start += batchSize) {
        const images = await Promise.all(files.slice(start, start + batchSize).map((file) => decodeRgb(file, size)));
        yield torch.fromArray(Buffer.concat(images.map((image) => image.data)), [images.length, size.height, size.width, 3], 'uint8');
      }
    },
    close: () => {},
  };
}

async function hashFile(file: string, hash: ReturnType<typeof createHash>): Promise<void> {
  for await (const chunk of createReadStream(fsEncode(file), { highWaterMark: 1 << 22 })) hash.update(chunk as Buffer);
}

/**
 * SHA-256 (hex) of a file's bytes, or of a folder's images: each image file's path relative to the
 * folder, a NUL byte, its size and bytes, in sorted order.
 */
export async function contentHash(path: string): Promise<string> {
  const hash = createHash('sha256');
  if (statSync(path).isDirectory()) {
    for (const file of listImages(path)) {
      hash.update(`${relative(path, file)}\0${statPath(file)!.size}\0`);
      await hashFile(file, hash);
    }
  } else {
    await hashFile(path, hash);
  }
  return hash.digest('hex');
}

export interface ReferenceBatchOptions {
  /** Side of the ADM center crop (center_crop_arr) every image is cut to. */
  imageSize: number;
  /** At most this many images: a random subset (seeded), written in path order. Default all. */
  maxImages?: number;
  seed?: number;
  onProgress?: (done: number, total: number) => void;
}

/**
 * Writes an ADM reference batch from a folder of images (searched recursively, in path order):
 * each decoded to RGB as PIL's convert('RGB') and center-cropped as ADM's center_crop_arr, stored
 * as arr_0 uint8 [N, imageSize, imageSize, 3], the layout the evaluator reads as its reference.
 * The file is written under a temporary name and renamed when complete.
 */
export async function writeReferenceBatch(folder: string, out: string, options: ReferenceBatchOptions): Promise<{ count: number }> {
  const { imageSize, maxImages, seed = 0 } = options;
  if (!Number.isInteger(imageSize) || imageSize < 1) throw new Error(`--image-size ${imageSize}: must be a positive integer`);
  if (!existsSync(folder) || !statSync(folder).isDirectory()) throw new Error(`${folder}: not a folder of images`);
  let files = listRegularFiles(folder).filter((file) => FOLDER_IMAGE_EXTENSIONS.some((ext) => file.toLowerCase().endsWith(ext))).sort();
  if (files.length === 0) throw new Error(`${folder}: no image files (${FOLDER_IMAGE_EXTENSIONS.join(', ')})`);
  if (maxImages !== undefined && maxImages < files.length) {
    const chosen = randperm(files.length, seed).slice(0, maxImages).sort((a, b) => a - b);
    files = chosen.map((i) => files[i]!);
  }
  const writer = new NpzWriter(out);
  try {
    writer.begin(IMAGES_KEY, 'uint8', [files.length, imageSize, imageSize, 3]);
    for (const [i, file] of files.entries()) {
      writer.append(centerCropArr(await decodeImage(file, { maxPixels: pixelLimitFor(imageSize) }), imageSize).data);
      options.onProgress?.(i + 1, files.length);
    }
    writer.close();
  } catch (error) {
    writer.abort();
    throw error;
  }
  return { count: files.length };
}
