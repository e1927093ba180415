// A small folder of real photographs in ImageNet's layout (train/CLASS/*.png, val/CLASS/*.png) for
// the README's offline walkthrough: random square crops of five of Debian's python3-skimage sample
// photographs, one class per photograph, resized to 64x64. Deterministic: the same seed writes the
// same files byte for byte.
//   node --import tsx scripts/make-photo-folder.ts OUT [--train 300] [--val 50] [--size 64] [--seed 0]
//     [--skimage-data /usr/lib/python3/dist-packages/skimage/data]
import { existsSync, mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import sharp from 'sharp';

/** Colour photographs of python3-skimage's data/ folder, each a class named after its subject. */
const PHOTOS: Record<string, string> = {
  astronaut: 'astronaut.png',
  cat: 'chelsea.png',
  coffee: 'coffee.png',
  rocket: 'rocket.jpg',
  hubble: 'hubble_deep_field.jpg',
};

/** mulberry32: a small seeded generator, so the crops need no dependency and never change. */
function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function wholeNumber(flag: string, value: string, min: number): number {
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed < min) throw new Error(`make-photo-folder: ${flag} must be a whole number >= ${min}, got ${value}`);
  return parsed;
}

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    train: { type: 'string', default: '300' },
    val: { type: 'string', default: '50' },
    size: { type: 'string', default: '64' },
    seed: { type: 'string', default: '0' },
    'skimage-data': { type: 'string', default: '/usr/lib/python3/dist-packages/skimage/data' },
  },
});
const out = positionals[0];
if (out === undefined) throw new Error('make-photo-folder: give the output folder, e.g. scripts/make-photo-folder.ts photos64');
if (existsSync(out) && readdirSync(out).length > 0) throw new Error(`make-photo-folder: ${out} is not empty`);
const counts = { train: wholeNumber('--train', values.train, 0), val: wholeNumber('--val', values.val, 0) };
const size = wholeNumber('--size', values.size, 1);
const random = seededRandom(wholeNumber('--seed', values.seed, 0));

for (const [className, file] of Object.entries(PHOTOS)) {
  const path = join(values['skimage-data'], file);
  if (!existsSync(path)) throw new Error(`make-photo-folder: ${path} is missing (install python3-skimage or pass --skimage-data)`);
  const photo = sharp(path).removeAlpha();
  const { width, height } = await photo.metadata();
  if (width === undefined || height === undefined) throw new Error(`make-photo-folder: ${path} has no size`);
  const shortSide = Math.min(width, height);
  for (const split of ['train', 'val'] as const) {
    const dir = join(out, split, className);
    mkdirSync(dir, { recursive: true });
    for (let index = 0; index < counts[split]; index += 1) {
      // A quarter to two thirds of the short side: each crop shows part of the subject, so a class
      // is a distribution of views, not one picture repeated.
      const side = Math.round(shortSide * (0.25 + random() * 0.42));
      const left = Math.floor(random() * (width - side + 1));
      const top = Math.floor(random() * (height - side + 1));
      const mirror = random() < 0.5;
      let crop = photo.clone().extract({ left, top, width: side, height: side }).resize(size, size, { kernel: 'lanczos3' });
      if (mirror) crop = crop.flop();
      await crop.png().toFile(join(dir, `${className}_${String(index).padStart(4, '0')}.png`));
    }
  }
}
console.log(`${out}: ${Object.keys(PHOTOS).length} classes, ${counts.train} train and ${counts.val} val ${size}x${size} crops each`);
