// A latent cache and a tiny SiT config for tests that start `reals sit train` runs (stop signals,
// cluster launchers): made by the first test that asks, removed when the file's tests end.
import { after } from 'node:test';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as torch from '../src/torch/index.js';
import { buildProgram } from '../src/cli/main.js';
import { encodePng } from '../src/runlog/index.js';
import { tinyVae } from './helpers.js';

export interface SitLatents { cache: string; model: string }

/** 12 random 8x8 images (3 classes) cached through tinyVae, and a depth-2, 16-wide SiT config. */
async function makeSitLatents(root: string): Promise<SitLatents> {
  const vae = join(root, 'vae');
  tinyVae().savePretrained(vae);
  const images = join(root, 'images');
  torch.manualSeed(3);
  for (const c of ['a', 'b', 'c']) {
    mkdirSync(join(images, c), { recursive: true });
    for (let i = 0; i < 4; i++) writeFileSync(join(images, c, `${i}.png`), await encodePng(torch.randint(0, 256, [8, 8, 3], { dtype: 'uint8' })));
  }
  const cache = join(root, 'cache');
  await buildProgram().parseAsync(['node', 'reals', 'cache-latents', '--data-path', images, '--vae-path', vae, '--out', cache,
    '--image-size', '8', '--num-workers', '0', '--precision', 'fp32']);
  const model = join(root, 'tiny.json');
  writeFileSync(model, JSON.stringify({ depth: 2, hiddenSize: 16, patchSize: 2, numHeads: 2 }));
  return { cache, model };
}

/** The getter of a test file's SitLatents (call once, at the file's top level: it registers the clean-up). */
export function sitLatentsFixture(prefix: string): () => Promise<SitLatents> {
  const root = mkdtempSync(join(tmpdir(), prefix));
  let made: Promise<SitLatents> | null = null;
  after(async () => {
    await made;
    rmSync(root, { recursive: true, force: true });
  });
  return () => (made ??= makeSitLatents(root));
}

/** `reals sit train` on the fixture's cache: batch 4, fp32, CPU, a log line per step. */
export function sitTrainArgs(latents: SitLatents, results: string, maxSteps: number, ckptEvery: number): string[] {
  return ['sit', 'train', '--latents-path', latents.cache, '--model', latents.model, '--results-dir', results, '--global-batch-size', '4', '--no-flip',
    '--precision', 'fp32', '--device', 'cpu', '--log-every', '1', '--ckpt-every', String(ckptEvery), '--max-steps', String(maxSteps)];
}
