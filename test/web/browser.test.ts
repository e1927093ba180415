// The exported page in a real browser: Debian's chromium (installed by scripts/setup.sh), driven by
// playwright-core, loads the page from `reals serve`'s server on 127.0.0.1 and generates an image;
// its pixels must equal onnxruntime-node's run of the same shared code (src/web/generate.ts) on
// the same seed, to within one level of 255 (wasm and native kernels round a few float32 sums
// differently), the segmentation labels must be the same, and for a seed the page draws what
// `reals sample --backend onnxruntime` draws. Any console error fails the test.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import * as torch from '../../src/torch/index.js';
import { AlignmentHeads, saveAlignmentHeads } from '../../src/models/alignment.js';
import { LinearSegmentationHead, saveHead } from '../../src/models/heads.js';
import { runExportWeb } from '../../src/pipelines/export.js';
import { runSample } from '../../src/pipelines/sample.js';
import { decodeImage } from '../../src/data/image.js';
import { serveStatic } from '../../src/web/site.js';
import { generateInNode } from './node-page.js';
import { FIXTURES, tinyVae } from '../helpers.js';

const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const OUTPUT = join(dirname(fileURLToPath(import.meta.url)), '../../tmp/test-output/web');

test('the exported page samples, decodes and segments in chromium as onnxruntime-node does, with no console error', { timeout: 240_000 }, async () => {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM}: no chromium (scripts/setup.sh installs Debian's; CHROMIUM names another)`);
  const root = mkdtempSync(join(tmpdir(), 'reals-web-'));
  tinyVae().savePretrained(join(root, 'vae'));
  saveAlignmentHeads(join(root, 'align.safetensors'), new AlignmentHeads({ latentChannels: 4, featureDim: 8, hiddenDim: 16 }));
  const head = new LinearSegmentationHead({ inChannels: [8, 8], inIndex: [0, 1], clsToken: true, numClasses: 3 });
  torch.noGrad(() => head.convSeg.weight.copy_(torch.randn([3, 16, 1, 1])));
  saveHead(join(root, 'head.safetensors'), head.eval());
  const site = join(root, 'site');
  // The fixture is make_sit.py's tiny network; its config as a JSON --model.
  writeFileSync(join(root, 'tiny.json'), JSON.stringify({ depth: 2, hiddenSize: 16, patchSize: 2, numHeads: 2 }));
  await runExportWeb({
    ckpt: join(FIXTURES, 'models', 'sit_checkpoint.pt'), model: join(root, 'tiny.json'), vaePath: join(root, 'vae'), out: site, log: () => {},
    alignCkpt: join(root, 'align.safetensors'), head: join(root, 'head.safetensors'), imageSize: 8, numClasses: 3,
  });

  const { server, url } = await serveStatic(site, { port: 0 });
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  const errors: string[] = [];
  try {
    const page = await browser.newPage();
    page.on('console', (message) => { if (message.type() === 'error') errors.push(message.text()); });
    page.on('pageerror', (error) => errors.push(error.message));
    await page.goto(`${url}?class=2&cfg=3&low=0&high=0.7&steps=6&sampler=heun2&seed=7&auto=1`);
    await page.waitForFunction(() => window.reals?.status === 'done' || window.reals?.status === 'error', null, { timeout: 120_000 });
    const state = await page.evaluate(() => window.reals);
    assert.equal(state.status, 'done', `the page: ${state.error}`);
    mkdirSync(OUTPUT, { recursive: true });
    await page.screenshot({ path: join(OUTPUT, 'page.png'), fullPage: true });
    assert.match(await page.textContent('#backend') ?? '', /onnxruntime-web on (WebGPU|wasm)/);

    // The same generation in Node through onnxruntime-node.
    const expected = await generateInNode(site, { classLabel: 2, cfgScale: 3, guidanceLow: 0, guidanceHigh: 0.7, steps: 6, method: 'heun2', seed: 7 });
    assert.equal(state.result!.size, expected.size);
    const worst = state.result!.pixels.reduce((m, v, i) => Math.max(m, Math.abs(v - expected.pixels[i]!)), 0);
    assert.ok(worst <= 1, `the page's pixels differ from onnxruntime-node's by up to ${worst} levels`);
    assert.ok(expected.pixels.some((v) => v !== expected.pixels[0]), 'the image is not one flat colour');
    assert.deepEqual(state.result!.labels, Array.from(expected.labels!), 'the segmentation labels');

    // The page's seed is reals sample's: its sample 0 (class 0) with one sample per batch has the
    // noise of torch.manualSeed(global seed); torch.randn. Within two levels: onnxruntime's wasm
    // and native kernels, and libtorch's time grid against the page's, differ in the last bits.
    await page.goto(`${url}?class=0&cfg=3&low=0&high=0.7&steps=6&sampler=heun2&seed=7&auto=1`);
    await page.waitForFunction(() => window.reals?.status === 'done' || window.reals?.status === 'error', null, { timeout: 120_000 });
    const pagePixels = (await page.evaluate(() => window.reals.result!.pixels));
    const samples = join(root, 'samples');
    const sampled = await runSample('ode', {
      ckpt: join(FIXTURES, 'models', 'sit_checkpoint.pt'), model: join(root, 'tiny.json'), vaePath: join(root, 'vae'), imageSize: 8, numClasses: 3,
      backend: 'onnxruntime', samplingMethod: 'heun2', numSamplingSteps: 6, cfgScale: 3, guidanceLow: 0, guidanceHigh: 0.7, globalSeed: 7,
      perProcBatchSize: 1, numFidSamples: 1, sampleDir: samples, precision: 'fp32', log: () => {},
    });
    const png = await decodeImage(join(sampled.sampleDir, '000000.png'));
    const fromSample = png.data.reduce((m, v, i) => Math.max(m, Math.abs(v - pagePixels[i]!)), 0);
    assert.ok(fromSample <= 2, `the page and reals sample --backend onnxruntime differ by up to ${fromSample} levels for seed 7`);
    assert.deepEqual(errors, [], 'no console errors');
  } finally {
    await browser.close();
    server.close();
    rmSync(root, { recursive: true, force: true });
  }
});
