// `reals report`: one page for an alignment run, a teacher run and a sample folder. The sample
// grid must put class k's samples (each class a solid colour) in row k beside the class folder's
// name, constant values draw no curve, the learning rate comes from metrics.jsonl or args.json,
// every reconstruction is on the page, and Chromium opens the page with every image loaded and no
// console error. Bad input is one line naming the path.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import sharp from 'sharp';
import { chromium } from 'playwright-core';
import * as torch from '../../src/torch/index.js';
import { saveNpz } from '../../src/io/index.js';
import { MetricsLog, encodePng } from '../../src/runlog/index.js';
import { main } from '../../src/cli/main.js';
import { withTmp } from '../helpers.js';

const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const OUTPUT = join(dirname(fileURLToPath(import.meta.url)), '../../tmp/test-output/report');
const CLASSES = ['cat', 'dog', 'zebra'];
const COLOURS = [[220, 20, 20], [20, 200, 20], [20, 20, 230]];
const SIDE = 8;
const PER_CLASS = 4;

/** Runs `reals ARGS` in this process; returns stderr and the exit code. */
async function reals(args: string[]): Promise<{ stderr: string; exitCode: number | undefined }> {
  const [write, log] = [process.stderr.write.bind(process.stderr), console.log];
  let stderr = '';
  process.stderr.write = ((chunk: string | Uint8Array) => { stderr += String(chunk); return true; }) as typeof process.stderr.write;
  console.log = () => {};
  process.exitCode = undefined;
  try {
    await main(['node', 'reals', ...args]);
    return { stderr, exitCode: process.exitCode };
  } finally {
    [process.stderr.write, console.log] = [write, log];
    process.exitCode = undefined;
  }
}

function writeMetrics(path: string, records: [number, Record<string, number>][]): void {
  const log = new MetricsLog(path);
  records.forEach(([step, values], i) => log.log(step, values, 1000 + 60 * i));
  log.close();
}

/** An alignment run (constant lr in args.json, two reconstructions, lpips always 0), a teacher run (lr logged), a sample folder and a data folder. */
async function makeRuns(root: string): Promise<{ align: string; teacher: string; samples: string; data: string }> {
  const data = join(root, 'data');
  for (const split of ['train', 'val']) for (const name of CLASSES) mkdirSync(join(data, split, name), { recursive: true });
  const align = join(root, 'results', '000-align');
  mkdirSync(join(align, 'checkpoints'), { recursive: true });
  mkdirSync(join(align, 'reconstructions'));
  writeFileSync(join(align, 'args.json'), JSON.stringify({ dataPath: data, lr: 1e-4, patchWeight: 0.5, batchSize: 4 }));
  writeMetrics(join(align, 'metrics.jsonl'), [1, 2, 3, 4].map((step) => [step, { loss: 1 / step, lpips: 0, patch_cos: 0.1 * step }]));
  for (const step of [2, 4]) {
    writeFileSync(join(align, 'checkpoints', `000000${step}.safetensors`), '');
    const image = torch.full([16, 8, 3], 40 * step).to('uint8');
    writeFileSync(join(align, 'reconstructions', `000000${step}.png`), await encodePng(image));
  }
  const teacher = join(root, 'results', '001-teacher');
  mkdirSync(teacher);
  writeFileSync(join(teacher, 'args.json'), JSON.stringify({ dataPath: data, probeImages: 10 }));
  writeMetrics(join(teacher, 'metrics.jsonl'), [1, 2, 3].map((step) => [step, { loss: 2 - 0.1 * step, lr: 1e-3 * step }]));

  // Samples in reals' class-balanced order: sample i has class i mod 3, painted its colour.
  const samples = join(root, 'samples', 'SiT-tiny-0000004-cfg-1.0');
  mkdirSync(samples, { recursive: true });
  writeFileSync(join(samples, 'sampling.json'), JSON.stringify({ method: 'ode', steps: 4, cfgScale: 1 }));
  // One short of 4 each: the last class gets 3, and a blank cell ends its row.
  const count = CLASSES.length * PER_CLASS - 1;
  const pixels = new Uint8Array(count * SIDE * SIDE * 3);
  for (let i = 0; i < count; i++) for (let p = 0; p < SIDE * SIDE; p++) pixels.set(COLOURS[i % CLASSES.length]!, (i * SIDE * SIDE + p) * 3);
  saveNpz(`${samples}.npz`, { arr_0: torch.fromArray(pixels, [count, SIDE, SIDE, 3], 'uint8') });
  return { align, teacher, samples, data };
}

test('reals report draws the runs: curves, learning rate, reconstructions, a sample row per named class, the args; chromium loads it cleanly', { timeout: 120_000 }, withTmp('reals-report-', async (root) => {
  const { align, teacher, samples } = await makeRuns(root);
  const out = join(root, 'report');
  const { stderr, exitCode } = await reals(['report', join(root, 'results'), samples, '--out', out]);
  assert.equal(exitCode, undefined, stderr);
  const html = readFileSync(join(out, 'report.html'), 'utf8');
  const figures = readdirSync(join(out, 'figures')).sort();
  // lpips stays 0 in the one run that logs it: a sentence, not a curve.
  assert.deepEqual(figures, [
    'learning-rate.png', 'metric-loss.png', 'metric-patch_cos.png', 'reconstructions-000-align-0000002.png', 'reconstructions-000-align-0000004.png',
    'samples-SiT-tiny-0000004-cfg-1.0.png',
  ]);
  assert.match(html, /Constant over every run \(no curve\): <code>lpips<\/code> 0/);
  assert.match(html, /Constant, args\.json's <code>lr<\/code> \(these trainers have no schedule\): 000-align\./);
  assert.match(html, new RegExp(`named from the --data-path of 000-align, ${join(root, 'data')}`));
  for (const run of [align, teacher, samples]) assert.ok(html.includes(run), `the runs table names ${run}`);
  assert.match(html, /<td>align train<\/td>/);
  assert.match(html, /<td>teacher train<\/td>/);
  assert.match(html, /<td>2, 4<\/td>/, 'the alignment run\'s checkpoints');
  assert.match(html, /<td>patchWeight<\/td><td><code>0\.5<\/code><\/td><td>—<\/td>/);
  assert.equal((await sharp(join(out, 'figures', 'reconstructions-000-align-0000004.png')).raw().toBuffer())[0], 160, 'the step-4 reconstruction is copied as it was');

  // The grid: a column per sample of a class (4), 8 px samples enlarged 4x (cells of 10 px with make_grid's padding), right of the names' column.
  const { data, info } = await sharp(join(out, 'figures', 'samples-SiT-tiny-0000004-cfg-1.0.png')).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  const factor = 4;
  const gridWidth = (PER_CLASS * (SIDE + 2) + 2) * factor;
  assert.equal(info.height, (CLASSES.length * (SIDE + 2) + 2) * factor);
  const labelWidth = info.width - gridWidth;
  assert.equal(labelWidth, 16 + 7 * 'zebra'.length);
  const pixel = (x: number, y: number) => [...data.subarray((y * info.width + x) * 3, (y * info.width + x) * 3 + 3)];
  CLASSES.forEach((_, row) => {
    const y = (2 + row * (SIDE + 2) + SIDE / 2) * factor;
    for (let column = 0; column < PER_CLASS; column++) {
      const x = labelWidth + (2 + column * (SIDE + 2) + SIDE / 2) * factor;
      const blank = row === CLASSES.length - 1 && column === PER_CLASS - 1;
      assert.deepEqual(pixel(x, y), blank ? [0, 0, 0] : COLOURS[row], `row ${row}, column ${column}`);
    }
    // The name is drawn in the white column at the row's height.
    const dark = Array.from({ length: labelWidth }, (_, x) => pixel(x, y)).filter(([r, g, b]) => r! + g! + b! < 300).length;
    assert.ok(dark > 0, `row ${row} has its class name`);
  });

  assert.ok(existsSync(CHROMIUM), `${CHROMIUM}: no chromium (scripts/setup.sh installs Debian's; CHROMIUM names another)`);
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  try {
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on('console', (message) => { if (message.type() === 'error') errors.push(message.text()); });
    page.on('pageerror', (error) => errors.push(error.message));
    await page.goto(pathToFileURL(join(out, 'report.html')).href);
    const images = await page.$$eval('img', (all) => all.map((img) => ({ src: img.getAttribute('src'), loaded: img.complete && img.naturalWidth > 0 })));
    assert.equal(images.length, figures.length);
    assert.deepEqual(images.filter((i) => !i.loaded), []);
    assert.deepEqual(errors, []);
    mkdirSync(OUTPUT, { recursive: true });
    await page.screenshot({ path: join(OUTPUT, 'report.png'), fullPage: true });
  } finally {
    await browser.close();
  }
}));

test('reals report: class names from --data-path fashion-mnist; bad paths are one line naming them', withTmp('reals-report-bad-', async (root) => {
  const missing = join(root, 'nothing');
  const gone = await reals(['report', missing, '--out', join(root, 'out')]);
  assert.equal(gone.exitCode, 1);
  assert.equal(gone.stderr, `error: report: ${missing}: no such file or folder\n`);
  mkdirSync(join(root, 'empty'));
  const empty = await reals(['report', join(root, 'empty')]);
  assert.match(empty.stderr, new RegExp(`^error: report: ${join(root, 'empty')} is neither a run folder .*\\n$`));
  const { samples } = await makeRuns(root);
  mkdirSync(join(root, 'lonely'));
  const noNpz = await reals(['report', join(root, 'lonely', 'x.npz')]);
  assert.match(noNpz.stderr, /no such file or folder/);
  const out = join(root, 'fm');
  const fm = await reals(['report', samples, '--data-path', 'fashion-mnist', '--out', out]);
  assert.equal(fm.exitCode, undefined, fm.stderr);
  assert.match(readFileSync(join(out, 'report.html'), 'utf8'), /named from --data-path fashion-mnist/);
}));
