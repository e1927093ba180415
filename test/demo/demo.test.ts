import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import type { Command } from 'commander';
import { buildProgram } from '../../src/cli/main.js';
import {
  DEMO_PROFILES, RESULT_FILES, TABLE_ROWS, VARIANTS, formatValues, parseFlags, runDemo, type DemoResult,
} from '../../src/demo/index.js';

let out: string;
let result: DemoResult;
let report: string;

before(async () => {
  out = mkdtempSync(join(tmpdir(), 'reals-demo-'));
  result = await runDemo({ profile: DEMO_PROFILES.test, out, log: () => {} });
  report = readFileSync(join(out, 'report.md'), 'utf8');
});

after(() => rmSync(out, { recursive: true, force: true }));

/** The cells of the Markdown table rows whose first cell is `label`: the comparison table's, then the per-seed table's. */
function tableRows(markdown: string, label: string): string[][] {
  return markdown.split('\n').filter((l) => l.startsWith(`| ${label} |`)).map((line) => line.slice(2, -2).split(' | '));
}

function tableRow(markdown: string, label: string): string[] {
  const row = tableRows(markdown, label)[0];
  assert.ok(row !== undefined, `report.md has no table row "${label}"`);
  return row;
}

function readJson(path: string): Record<string, number> {
  return JSON.parse(readFileSync(path, 'utf8')) as Record<string, number>;
}

test('every number of the comparison table equals the value in the run\'s result files', () => {
  assert.ok(existsSync(join(out, 'report.html')));
  const seeds = DEMO_PROFILES.test.seeds;
  assert.ok(seeds.length > 1, 'the test profile runs several seeds, so that the mean ± std cells are checked too');
  for (const row of TABLE_ROWS) {
    const [cells, perSeed] = tableRows(report, row.label);
    assert.ok(cells !== undefined && perSeed !== undefined, `report.md lacks the rows "${row.label}"`);
    VARIANTS.forEach((variant, i) => {
      const file = RESULT_FILES[row.file];
      const values = seeds
        .map((seed) => join(out, `seed-${seed}`, variant, file))
        .filter((path) => existsSync(path))
        .map((path) => readJson(path)[row.field]!);
      const expected = values.length === 0 ? '—' : formatValues(values, row.decimals);
      assert.equal(cells[i + 1], expected, `${row.label}, ${variant}`);
      const expectedPerSeed = values.length === 0 ? seeds.map(() => '—') : values.map((v) => v.toFixed(row.decimals));
      assert.deepEqual(perSeed.slice(1 + i * seeds.length, 1 + (i + 1) * seeds.length), expectedPerSeed, `${row.label}, ${variant}, per seed`);
    });
    // The verdict: which VAE's mean is better, and whether the gap exceeds the two standard deviations together.
    if (row.file !== 'headMlp') {
      const [plain, reals] = VARIANTS.map((variant) => seeds.map((seed) => readJson(join(out, `seed-${seed}`, variant, RESULT_FILES[row.file]))[row.field]!));
      const stats = (v: number[]) => { const m = (v[0]! + v[1]!) / 2; return { m, s: Math.abs(v[0]! - v[1]!) / Math.SQRT2 }; };
      const [p, r] = [stats(plain!), stats(reals!)];
      const winner = (row.better === 'lower' ? r.m < p.m : r.m > p.m) ? 'ReaLS' : 'plain';
      const spread = Math.abs(r.m - p.m) > p.s + r.s ? 'beyond the spread' : 'within the spread';
      assert.equal(cells[3], `${row.better} is better: ${r.m === p.m ? 'tie' : `${winner}, ${spread}`}`, row.label);
    }
  }
  assert.match(report, /Over 2 seeds, \d+ of the \d+ differences \(either way\) exceed the sum of the two standard deviations/);
  // The ReaLS VAE has the MLP head, the plain VAE has none.
  assert.ok(existsSync(join(out, 'seed-0', 'reals', RESULT_FILES.headMlp)));
  assert.ok(!existsSync(join(out, 'seed-0', 'plain', RESULT_FILES.headMlp)));
  const teacher = readJson(join(out, 'teacher', 'result.json'));
  const classifier = readJson(join(out, 'classifier', 'result.json'));
  assert.ok(report.includes(`test accuracy ${teacher.testAccuracy!.toFixed(3)}`));
  assert.ok(report.includes(`test accuracy ${classifier.testAccuracy!.toFixed(3)}`));
  const html = readFileSync(join(out, 'report.html'), 'utf8');
  for (const row of TABLE_ROWS) assert.ok(html.includes(`<td>${tableRow(report, row.label)[2]}</td>`), row.label);
});

test('formatValues gives one value as it is and several as mean ± sample standard deviation', () => {
  assert.equal(formatValues([0.5], 3), '0.500');
  assert.equal(formatValues([1, 2, 3], 2), '2.00 ± 1.00');
});

test('the figures the report shows exist and decode as PNG images', async () => {
  const images = [...report.matchAll(/!\[[^\]]*\]\(([^)]+)\)/g)].map((m) => m[1]!);
  assert.ok(images.length >= 10, `only ${images.length} images in report.md`);
  for (const kind of ['samples-plain-ode', 'samples-reals-sde', 'reconstructions-plain', 'curves-vae-reconstruction', 'curves-sit']) {
    assert.ok(images.some((src) => src.includes(kind)), `no ${kind} figure`);
  }
  for (const src of images) {
    const meta = await sharp(join(out, src)).metadata();
    assert.equal(meta.format, 'png', src);
    assert.ok(meta.width! > 0 && meta.height! > 0, src);
  }
});

/** The words of a line written by commandLine (single quotes where the shell needs them). */
function shellWords(line: string): string[] {
  return [...line.matchAll(/'((?:[^']|'\\'')*)'|(\S+)/g)].map((m) => (m[1] !== undefined ? m[1].replaceAll("'\\''", "'") : m[2]!));
}

test('the reproduce section lists reals commands that exist and whose flags parse', () => {
  const code = report.slice(report.lastIndexOf('```bash'));
  const lines = code.split('\n').filter((l) => l.startsWith('reals '));
  assert.equal(lines.length, result.steps.filter((s) => s.command !== null).length);
  const names = new Set<string>();
  for (const line of lines) {
    const [, ...words] = shellWords(line);
    let command: Command = buildProgram();
    const path: string[] = [];
    while (words.length > 0 && !words[0]!.startsWith('-')) {
      const next = command.commands.find((c) => c.name() === words[0]);
      if (next === undefined) break;
      command = next;
      path.push(words.shift()!);
    }
    assert.ok(path.length > 0 && command.commands.length === 0, `${line}: not a reals command`);
    names.add(path.join(' '));
    const flags = parseFlags<Record<string, unknown>>(command, words);
    assert.ok(Object.keys(flags).length > 0, line);
  }
  assert.deepEqual([...names].sort(), ['align convert', 'align train', 'heads train-linear', 'sample ode', 'sample sde', 'sit train']);
  // The step table gives every step a time.
  for (const step of result.steps) assert.ok(report.includes(`| ${step.name} | ${step.seconds.toFixed(1)} s |`), step.name);
});

test('a command line with a bad flag does not parse', () => {
  const program = buildProgram();
  const train = program.commands.find((c) => c.name() === 'align')!.commands.find((c) => c.name() === 'train')!;
  assert.throws(() => parseFlags(train, ['--data-path', 'fashion-mnist', '--dino-ckpt', 'x', '--max-steps', 'many']), /max-steps/);
});
