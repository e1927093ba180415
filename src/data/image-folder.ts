// torchvision.datasets.ImageFolder: `root/<class>/**/<image>`, classes sorted by name to labels
// 0..N-1, files in sorted os.walk order. ImageNet's `train/` and (prepared) `val/` both have this
// layout, with WordNet ids (n01440764, ...) as class names.
import { join } from 'node:path';
import { readDirectory, statPath } from './files.js';
import { centerCropArr, decodeImage, pixelLimitFor, type RawImage } from './image.js';
import type { ImageFileDataset } from './loader.js';

/** torchvision's IMG_EXTENSIONS less the ones libvips does not read here (.ppm, .pgm, .bmp). */
export const IMAGE_EXTENSIONS: readonly string[] = ['.jpg', '.jpeg', '.png', '.tif', '.tiff', '.webp'];

export interface ImageFolderOptions {
  /** Side of the ADM center crop every image is brought to. */
  resolution: number;
  /**
   * Class folder names in label order, e.g. those of `train/` when reading `val/`, so that labels
   * agree between splits; default: every subfolder of root, sorted.
   */
  classes?: readonly string[];
}

// Python compares str by code point; for the ASCII names of datasets that is UTF-16 order.
const byName = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

function isDirectory(path: string): boolean {
  return statPath(path)?.isDirectory() ?? false;
}

/**
 * sorted(os.walk(top, followlinks=True)) as [folder, file names] pairs: folders ordered by path,
 * each with its non-folder entries; names as os.fsdecode gives them. A folder reached a second
 * time through a link is not walked again (os.walk would loop until the path is too long).
 */
function walk(top: string, seen = new Set<string>()): [string, string[]][] {
  const stats = statPath(top);
  if (stats === undefined || seen.has(`${stats.dev}:${stats.ino}`)) return [];
  seen.add(`${stats.dev}:${stats.ino}`);
  const files: string[] = [];
  const out: [string, string[]][] = [[top, files]];
  for (const { name, entry } of readDirectory(top)) {
    const path = join(top, name);
    if (entry.isDirectory() || (entry.isSymbolicLink() && isDirectory(path))) out.push(...walk(path, seen));
    else files.push(name);
  }
  return out.sort((a, b) => byName(a[0], b[0]));
}

/** The class folders of `root` in label order (sorted by name), as ImageFolder reads them. */
export function classFolders(root: string): string[] {
  return readDirectory(root).map(({ name }) => name).filter((name) => isDirectory(join(root, name))).sort(byName);
}

export class ImageFolder implements ImageFileDataset {
  readonly root: string;
  readonly resolution: number;
  /** Class names; a class's label is its index here. */
  readonly classes: readonly string[];
  readonly classToIdx: ReadonlyMap<string, number>;
  /** (path, label) per item, in torchvision's order. */
  readonly samples: readonly (readonly [string, number])[];

  constructor(root: string, options: ImageFolderOptions) {
    if (!isDirectory(root)) throw new Error(`ImageFolder: ${root} is not a folder`);
    if (!Number.isInteger(options.resolution) || options.resolution < 1) {
      throw new RangeError(`ImageFolder(${root}): resolution ${options.resolution} must be a positive integer`);
    }
    this.root = root;
    this.resolution = options.resolution;
    this.classes = options.classes ? [...options.classes] : classFolders(root);
    if (this.classes.length === 0) throw new Error(`ImageFolder: no class folders in ${root}`);
    this.classToIdx = new Map(this.classes.map((name, i) => [name, i]));
    const samples: [string, number][] = [];
    const empty: string[] = [];
    this.classes.forEach((name, label) => {
      const folder = join(root, name);
      if (!isDirectory(folder)) throw new Error(`ImageFolder: class folder ${folder} does not exist`);
      const before = samples.length;
      for (const [dir, files] of walk(folder)) {
        for (const file of files.sort(byName)) {
          const lower = file.toLowerCase();
          if (IMAGE_EXTENSIONS.some((ext) => lower.endsWith(ext))) samples.push([join(dir, file), label]);
        }
      }
      if (samples.length === before) empty.push(name);
    });
    if (empty.length > 0) {
      throw new Error(`ImageFolder(${root}): found no valid file for the classes ${empty.join(', ')}; supported extensions are ${IMAGE_EXTENSIONS.join(', ')}`);
    }
    this.samples = samples;
  }

  get length(): number { return this.samples.length; }

  path(index: number): string { return this.sample(index)[0]; }

  label(index: number): number { return this.sample(index)[1]; }

  /** Item `index` decoded and center-cropped on this thread (the loader decodes in workers instead). */
  async get(index: number): Promise<{ image: RawImage; label: number }> {
    const [path, label] = this.sample(index);
    return { image: centerCropArr(await decodeImage(path, { maxPixels: pixelLimitFor(this.resolution) }), this.resolution), label };
  }

  private sample(index: number): readonly [string, number] {
    const sample = this.samples[index];
    if (sample === undefined) throw new RangeError(`ImageFolder(${this.root}): index ${index} is outside [0, ${this.samples.length})`);
    return sample;
  }
}
