// Class folders of noisy solid colours (red, green, blue), which a small classifier separates in a
// few steps: for the tests of `reals classifier train` and of its stop and resume.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import * as torch from '../src/torch/index.js';

const COLOURS = { red: [200, 40, 40], green: [40, 200, 40], blue: [40, 40, 200] } as const;

/** `count` PNGs of side x side pixels per class: the class's colour with per-pixel noise, under `root`/<class>/. */
export async function writeColourClasses(root: string, count: number, seed: number, side = 16): Promise<void> {
  torch.manualSeed(seed);
  for (const [name, rgb] of Object.entries(COLOURS)) {
    mkdirSync(join(root, name), { recursive: true });
    for (let i = 0; i < count; i++) {
      const noise = torch.randint(-40, 41, [side, side, 3]).toArray() as BigInt64Array;
      const pixels = Buffer.from(Array.from(noise, (v, j) => Math.min(255, Math.max(0, rgb[j % 3]! + Number(v)))));
      await sharp(pixels, { raw: { width: side, height: side, channels: 3 } }).png().toFile(join(root, name, `${i}.png`));
    }
  }
}
