// The class names travel from the data to the page: cache-latents records the class folders in
// index.json, sit train records them in its checkpoints (from the cache, or from --data-path),
// reals export web writes them into model.json, and the page's class menu shows them (in
// Chromium), numbers only where a checkpoint records none.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { chromium } from 'playwright-core';
import * as torch from '../../src/torch/index.js';
import { loadGenerator } from '../../src/train/index.js';
import { writeRunReport } from '../../src/pipelines/index.js';
import { LatentCache } from '../../src/data/index.js';
import { encodePng } from '../../src/runlog/index.js';
import { saveNpz } from '../../src/io/index.js';
import { runCacheLatents, runGeneratorTrain } from '../../src/pipelines/generator.js';
import { runExportWeb } from '../../src/pipelines/export.js';
import { serveStatic } from '../../src/web/site.js';
import { classOptionText } from '../../src/web/generate.js';
import { tinyVae, withTmp } from '../helpers.js';

const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const CLASSES = ['apple', 'banana', 'cherry'];

test('the class menu shows a recorded name, else the number', () => {
  assert.deepEqual([0, 1, 2].map((k) => classOptionText(k, ['cat', 'dog'])), ['cat', 'dog', '2']);
  assert.equal(classOptionText(0, []), '0');
});

test('class names: data folders -> latent cache -> sit train checkpoint -> model.json -> the page\'s class menu in chromium', { timeout: 240_000 }, withTmp('reals-classes-', async (root) => {
  const data = join(root, 'data');
  for (const [c, name] of CLASSES.entries()) {
    for (const split of ['train', 'val']) mkdirSync(join(data, split, name), { recursive: true });
    for (let i = 0; i < 2; i++) writeFileSync(join(data, 'train', name, `${i}.png`), await encodePng(torch.full([8, 8, 3], 60 * c + 20 * i, { dtype: 'uint8' })));
  }
  const vaePath = join(root, 'vae');
  tinyVae().savePretrained(vaePath);
  const cache = join(root, 'cache');
  const quiet = { log: () => {}, progressStream: { write: () => true } as unknown as NodeJS.WritableStream };
  await runCacheLatents({ dataPath: data, vaePath, out: cache, imageSize: 8, ...quiet });
  assert.deepEqual(JSON.parse(readFileSync(join(cache, 'index.json'), 'utf8')).classNames, CLASSES, 'the train/ class folders, in label order');
  const opened = LatentCache.open(cache);
  assert.deepEqual(opened.classNames, CLASSES);
  opened.close();

  const model = join(root, 'tiny.json');
  writeFileSync(model, JSON.stringify({ depth: 1, hiddenSize: 16, patchSize: 2, numHeads: 2 }));
  const train = { vaePath, model, globalBatchSize: 2, maxSteps: 1, ckptEvery: 1, ...quiet };
  const fromCache = await runGeneratorTrain('SiT', { ...train, latentsPath: cache, resultsDir: join(root, 'results') });
  const fromImages = await runGeneratorTrain('SiT', { ...train, dataPath: data, imageSize: 8, resultsDir: join(root, 'results') });
  for (const { checkpoint, model: trained } of [fromCache, fromImages]) {
    const loaded = loadGenerator(checkpoint!, { spec: { name: 'SiT-tiny', kind: 'SiT', config: trained.config } });
    assert.deepEqual(loaded.classNames, CLASSES, checkpoint!);
  }

  // reals report names the rows of a sample batch by the names the SiT run's checkpoints record (the run has --latents-path, no --data-path).
  const samples = join(root, 'samples', 'drawn');
  mkdirSync(samples, { recursive: true });
  writeFileSync(join(samples, 'sampling.json'), JSON.stringify({ labelSampling: 'balanced' }));
  saveNpz(`${samples}.npz`, { arr_0: torch.zeros([6, 8, 8, 3], { dtype: 'uint8' }) });
  const report = await writeRunReport({ runs: [fromCache.runDir, samples], out: join(root, 'report') });
  assert.match(readFileSync(report.html, 'utf8'), new RegExp(`named from the checkpoints of ${basename(fromCache.runDir)}\\.`));

  const site = join(root, 'site');
  await runExportWeb({ ckpt: fromCache.checkpoint!, vaePath, out: site, log: () => {} });
  assert.deepEqual(JSON.parse(readFileSync(join(site, 'models', 'model.json'), 'utf8')).generator.classNames, CLASSES);

  assert.ok(existsSync(CHROMIUM), `${CHROMIUM}: no chromium (scripts/setup.sh installs Debian's; CHROMIUM names another)`);
  const { server, url } = await serveStatic(site, { port: 0 });
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  try {
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on('pageerror', (error) => errors.push(error.message));
    await page.goto(url);
    await page.waitForFunction(() => document.querySelectorAll('#class option').length > 0, null, { timeout: 120_000 });
    const options = await page.$$eval('#class option', (all) => all.map((o) => [o.textContent, (o as HTMLOptionElement).value]));
    assert.deepEqual(options, CLASSES.map((name, k) => [name, String(k)]));
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
    server.close();
  }
}));
