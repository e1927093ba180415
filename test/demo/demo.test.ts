import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import type { Command } from 'commander';
import { buildProgram } from '../../src/cli/main.js';
import {
  ALIGNMENT_FINDING, DEFAULT_CELLS, DEMO_PROFILES, RESULT_FILES, baselineOf, compare, curveStepsOf, demoCommandLine, describeComparison, findingSentence,
  formatValues, headlineSentence, latentSpaces, mergeDemoRuns, onlyRunDir, readDemoResult, runDemo, tableRows, type DemoCells, type DemoResult, type TableRow,
} from '../../src/demo/index.js';
import { parseFlags } from '../../src/cli/parse.js';
import { loadCheckpoint, resolveResume } from '../../src/train/index.js';

// Both ViT teachers, both protocols, the cos loss: six latent spaces over two seeds.
const CELLS: DemoCells = { teachers: ['ssl', 'supervised'], protocols: ['finetune', 'scratch'], alignWeights: [0.5], losses: ['cos'] };
let out: string;
let result: DemoResult;
let report: string;
// The default cells (the HOG teacher, the vf loss), one seed.
let defaultOut: string;
let defaultResult: DemoResult;
let defaultReport: string;

before(async () => {
  out = mkdtempSync(join(tmpdir(), 'reals-demo-'));
  result = await runDemo({ profile: DEMO_PROFILES.test, cells: CELLS, out, log: () => {} });
  report = readFileSync(join(out, 'report.md'), 'utf8');
  defaultOut = mkdtempSync(join(tmpdir(), 'reals-demo-default-'));
  defaultResult = await runDemo({ profile: DEMO_PROFILES.test, seeds: [0], out: defaultOut, log: () => {} });
  defaultReport = readFileSync(join(defaultOut, 'report.md'), 'utf8');
});

after(() => {
  rmSync(out, { recursive: true, force: true });
  rmSync(defaultOut, { recursive: true, force: true });
});

/** The cells of the Markdown table rows whose first cell is `label`: the main table's, the comparison's, then the per-seed table's. */
function tableRowsOf(markdown: string, label: string): string[][] {
  return markdown.split('\n').filter((l) => l.startsWith(`| ${label} |`)).map((line) => line.slice(2, -2).split(' | '));
}

function readJson(path: string): unknown {
  return JSON.parse(readFileSync(path, 'utf8'));
}

/** The value of `row` for one latent space and seed, read back from the files the run wrote (not from its in-memory result). */
function fileValue(dir: string, seed: number, space: string, row: TableRow): number | null {
  const folder = join(dir, `seed-${seed}`, space);
  const headMlp = join(folder, RESULT_FILES.headMlp);
  return row.value({
    reconstruction: readJson(join(folder, RESULT_FILES.reconstruction)) as never,
    curve: readJson(join(folder, RESULT_FILES.curve)) as never,
    sampling: { ode: readJson(join(folder, RESULT_FILES.ode)) as never, sde: readJson(join(folder, RESULT_FILES.sde)) as never },
    sitFinalLoss: (readJson(join(folder, RESULT_FILES.sit)) as { finalLoss: number }).finalLoss,
    headLatent: readJson(join(folder, RESULT_FILES.headLatent)) as never,
    headMlp: existsSync(headMlp) ? readJson(headMlp) as never : null,
  });
}

function checkTables(dir: string, markdown: string, run: DemoResult): void {
  const seeds = run.profile.seeds;
  const rows = tableRows(curveStepsOf(run));
  // Reconstruction (2), FID at each scored step, the SDE FID, precision/recall/class accuracy per sampler (6), the SiT loss, the heads (3).
  assert.equal(rows.length, 13 + curveStepsOf(run).length);
  const reals = run.spaces.filter((s) => s.role === 'reals');
  for (const row of rows) {
    const [cells, comparison, perSeed] = tableRowsOf(markdown, row.label);
    assert.ok(cells !== undefined && comparison !== undefined && perSeed !== undefined, `report.md lacks the rows "${row.label}"`);
    const valuesOf = (space: string) => seeds.map((seed) => fileValue(dir, seed, space, row)).filter((v): v is number => v !== null);
    run.spaces.forEach((space, i) => {
      const values = valuesOf(space.id);
      assert.equal(cells[i + 1], values.length === 0 ? '—' : formatValues(values, row.decimals), `${row.label}, ${space.id}`);
      const expectedPerSeed = values.length === 0 ? seeds.map(() => '—') : values.map((v) => v.toFixed(row.decimals));
      assert.deepEqual(perSeed.slice(1 + i * seeds.length, 1 + (i + 1) * seeds.length), expectedPerSeed, `${row.label}, ${space.id}, per seed`);
    });
    // The verdict against the baseline, recomputed here from the seeds' values (mean, sample standard deviation).
    reals.forEach((space, i) => {
      const [mine, theirs] = [valuesOf(space.id), valuesOf(baselineOf(space))];
      if (mine.length === 0 || theirs.length === 0) return assert.equal(comparison[i + 1], '—');
      const stats = (v: number[]) => {
        const m = v.reduce((x, y) => x + y, 0) / v.length;
        return { m, s: Math.sqrt(v.reduce((x, y) => x + (y - m) ** 2, 0) / (v.length - 1)) };
      };
      const [a, b] = [stats(mine), stats(theirs)];
      const winner = (row.better === 'lower' ? a.m < b.m : a.m > b.m) ? 'ReaLS' : baselineOf(space);
      const spread = Math.abs(a.m - b.m) > a.s + b.s ? 'beyond the spread' : 'within the spread';
      assert.equal(comparison[i + 1], a.m === b.m ? 'tie' : `${winner}, ${spread}`, `${row.label}, ${space.id}`);
    });
  }
}

test('the run compares the pretrained VAE, the control and a ReaLS VAE per teacher and protocol', () => {
  assert.deepEqual(result.spaces.map((s) => s.id), [
    'pretrained', 'control', 'reals-finetune-ssl-w0p5', 'reals-finetune-supervised-w0p5', 'reals-scratch-ssl-w0p5', 'reals-scratch-supervised-w0p5',
  ]);
  assert.deepEqual(latentSpaces({ teachers: ['ssl'], protocols: ['finetune'], alignWeights: [0.5], losses: ['cos'] }).map((s) => s.role), ['pretrained', 'control', 'reals']);
  // Scored at each fraction of the SiT steps, the last being the final step.
  assert.deepEqual(curveStepsOf(result), DEMO_PROFILES.test.sitEvalFractions.map((f) => f * DEMO_PROFILES.test.sit.steps));
  // A fine-tuning run starts from the stage-1 diffusers folder and trains for the stage-2 steps; the control without alignment.
  const commands = result.steps.map((s) => s.command ?? '');
  const control = commands.find((c) => c.startsWith('reals align train') && c.includes('/control/'))!;
  assert.match(control, /--vae-ckpt \S+\/seed-0\/pretrained\/vae-diffusers/);
  assert.match(control, /--patch-weight 0 --cls-weight 0/);
  assert.match(control, new RegExp(`--lr ${DEMO_PROFILES.test.finetune.lr} `));
  const finetuned = commands.find((c) => c.startsWith('reals align train') && c.includes('/reals-finetune-ssl-w0p5/'))!;
  assert.equal(finetuned.replace(/reals-finetune-ssl-w0p5/g, 'X').replace(/teacher-ssl/g, 'T').replace('--patch-weight 0.5 --cls-weight 0.5', 'W'),
    control.replace(/control/g, 'X').replace(/teacher-ssl/g, 'T').replace('--patch-weight 0 --cls-weight 0', 'W'),
    'ReaLS and the control differ only in the alignment weight');
  const scratch = commands.find((c) => c.startsWith('reals align train') && c.includes('/reals-scratch-ssl-w0p5/'))!;
  assert.doesNotMatch(scratch, /--vae-ckpt/);
});

test('a vf space per teacher and protocol, beside one cos space per weight; cos ids stay as the committed runs name them', () => {
  const spaces = latentSpaces({ teachers: ['hog', 'ssl'], protocols: ['finetune', 'scratch'], alignWeights: [0.25, 1], losses: ['vf', 'cos'] });
  assert.deepEqual(spaces.map((s) => s.id), [
    'pretrained', 'control',
    'reals-finetune-ssl-w0p25', 'reals-finetune-ssl-w1', 'reals-finetune-ssl-vf', 'reals-finetune-hog-w0p25', 'reals-finetune-hog-w1', 'reals-finetune-hog-vf',
    'reals-scratch-ssl-w0p25', 'reals-scratch-ssl-w1', 'reals-scratch-ssl-vf', 'reals-scratch-hog-w0p25', 'reals-scratch-hog-w1', 'reals-scratch-hog-vf',
  ]);
  const vf = spaces.find((s) => s.id === 'reals-finetune-hog-vf')!;
  assert.deepEqual(vf, {
    id: 'reals-finetune-hog-vf', label: 'ReaLS (fine-tuned, HOG teacher, VA-VAE\'s vf loss)', role: 'reals', protocol: 'finetune', teacher: 'hog', loss: 'vf', alignWeight: null,
  });
  assert.equal(spaces.find((s) => s.id === 'reals-scratch-ssl-w1')!.label, 'ReaLS (from scratch, self-supervised teacher, weight 1)');
  assert.deepEqual(spaces.slice(0, 2).map((s) => s.loss), [null, null]);
  // vf alone needs no weight.
  assert.deepEqual(latentSpaces({ ...DEFAULT_CELLS, alignWeights: [] }).map((s) => s.id), ['pretrained', 'control', 'reals-finetune-hog-vf']);
});

test('the default run aligns to the untrained HOG teacher with the vf loss, and its control differs only in the loss', () => {
  assert.deepEqual(defaultResult.cells, DEFAULT_CELLS);
  assert.deepEqual(defaultResult.spaces.map((s) => s.id), ['pretrained', 'control', 'reals-finetune-hog-vf']);
  assert.equal(defaultResult.profile.vae.latentChannels, 8);
  const hog = defaultResult.teachers.hog!;
  assert.deepEqual({ ...hog, probeAccuracy: 0 }, {
    kind: 'hog', testAccuracy: null, probeAccuracy: 0, randomProbeAccuracy: null, params: 0, checkpoint: null, configPath: 'hog',
  });
  assert.ok(hog.probeAccuracy > 0.1, `HOG's linear probe beats chance: ${hog.probeAccuracy}`);
  assert.deepEqual(readJson(join(defaultOut, 'teacher-hog', 'result.json')), hog);
  assert.ok(defaultReport.includes(`**HOG teacher** (\`--dino-model hog\``) && defaultReport.includes(`linear-probe accuracy ${hog.probeAccuracy.toFixed(3)} on its features`));
  assert.ok(!defaultResult.steps.some((s) => s.command?.startsWith('reals teacher train')), 'nothing trains a HOG teacher');
  const commands = defaultResult.steps.map((s) => s.command ?? '').filter((c) => c.startsWith('reals align train'));
  const control = commands.find((c) => c.includes('/control/'))!;
  const vf = commands.find((c) => c.includes('/reals-finetune-hog-vf/'))!;
  assert.match(vf, /--dino-model hog /);
  assert.doesNotMatch(vf, /--dino-ckpt/);
  assert.match(vf, /--patch-weight 0 --cls-weight 0 .*--align-loss vf/);
  assert.equal(vf.replace(/reals-finetune-hog-vf/g, 'X').replace(' --align-loss vf', ''), control.replace(/control/g, 'X'),
    'the vf space and the control differ only in --align-loss vf');
  // The alignment MLPs of the vf loss have no CLS head: the linear head and the page's readout read the patch tokens alone.
  assert.ok(defaultResult.runs['0']!['reals-finetune-hog-vf']!.headMlp!.mIoU >= 0);
  assert.ok(defaultResult.webPage !== null && 'dir' in defaultResult.webPage, JSON.stringify(defaultResult.webPage));
  assert.ok(existsSync(join(defaultResult.webPage.dir, 'models', 'readout.onnx')));
  assert.ok(defaultReport.includes(`# this whole run: reals demo --profile test --seeds 0 --teacher hog --protocol finetune --loss vf --align-weight 0.25 --latent-channels 8 --out ${defaultOut}`));
});

test('in the alignment study\'s regime the headline states the study\'s finding first, then this run\'s numbers as neither confirming nor refuting it', () => {
  const firstParagraph = defaultReport.split('\n\n')[1]!;
  assert.equal(firstParagraph, headlineSentence(defaultResult));
  const f = ALIGNMENT_FINDING;
  const finding = findingSentence();
  assert.ok(firstParagraph.startsWith(finding), firstParagraph);
  for (const words of ['at 8 latent channels', 'VA-VAE\'s vf loss winning', 'with it and the training-free HOG teacher', '0.83 lower FID than the fair control', '1,400 SiT steps',
    'paired difference −0.83', '95% interval [−1.53, −0.13]', 'lower on 5 of 6 seeds', 'Bonferroni-corrected for the 4 arms', '[−1.86, +0.20] and spans 0',
    'the supervised ViT −1.13, 95% interval [−2.21, −0.05], lower on 5 of 6 seeds (below 0)', 'the self-supervised ViT −1.38, 95% interval [−3.62, +0.86], lower on 5 of 6 seeds (spanning 0)',
    'at 4 channels (the paper\'s width), HOG −0.62', 'the self-supervised ViT −1.72, 95% interval [−3.12, −0.32], lower on 5 of 6 seeds (below 0)', 'All 5 means are below 0']) {
    assert.ok(finding.includes(words), `the finding lacks "${words}": ${finding}`);
  }
  assert.ok(finding.includes(`${f.wins} of ${f.seeds} seeds`));
  const rows = tableRows(curveStepsOf(defaultResult));
  const fid = (space: string, label: string) => fileValue(defaultOut, 0, space, rows.find((r) => r.label === label)!)!.toFixed(2);
  const odeLabel = rows.find((r) => r.label.startsWith('ODE samples: FID') && r.label.endsWith('(final)'))!.label;
  const numbers = `${fid('reals-finetune-hog-vf', odeLabel)} vs ${fid('control', odeLabel)} (ODE) and ${fid('reals-finetune-hog-vf', 'SDE samples: FID (final)')} vs ` +
    `${fid('control', 'SDE samples: FID (final)')} (SDE)`;
  assert.ok(firstParagraph.endsWith(`${numbers}.`), firstParagraph);
  assert.ok(firstParagraph.includes('This run, one seed at the `test` profile\'s smaller budget (20 samples per checkpoint, against the study\'s 2,000 on each of 6 paired seeds), ' +
    'cannot confirm or refute it: at equal SiT steps (4), ReaLS (fine-tuned, HOG teacher, VA-VAE\'s vf loss) '), firstParagraph);
  // Out of the regime (here 4 latent channels), the sentence of any other cell.
  const narrow = { ...defaultResult, profile: { ...defaultResult.profile, vae: { ...defaultResult.profile.vae, latentChannels: 4 } } };
  assert.match(headlineSentence(narrow), /^\*\*At equal SiT steps \(4\), ReaLS \(fine-tuned, HOG teacher, VA-VAE's vf loss\) (beat|did not beat) the control on FID/);
  assert.ok(!headlineSentence(narrow).includes('alignment study'));
  assert.ok(!headlineSentence(result).includes('alignment study'));
});

test('every number of the tables equals the value in the run\'s result files', () => {
  assert.ok(existsSync(join(out, 'report.html')));
  assert.ok(DEMO_PROFILES.test.seeds.length > 1, 'the test profile runs several seeds, so that the mean ± std cells are checked too');
  checkTables(out, report, result);
  for (const space of result.spaces) {
    assert.equal(existsSync(join(out, 'seed-0', space.id, RESULT_FILES.headMlp)), space.role === 'reals', space.id);
  }
  const classifier = readJson(join(out, 'classifier', 'result.json')) as { testAccuracy: number };
  assert.ok(report.includes(`test accuracy ${classifier.testAccuracy.toFixed(3)}`));
  for (const kind of ['ssl', 'supervised'] as const) {
    const teacher = result.teachers[kind]!;
    assert.ok(report.includes(`linear-probe accuracy ${teacher.probeAccuracy.toFixed(3)}`), kind);
  }
  const html = readFileSync(join(out, 'report.html'), 'utf8');
  for (const row of tableRows(curveStepsOf(result))) assert.ok(html.includes(`<td>${tableRowsOf(report, row.label)[0]![1]}</td>`), row.label);
});

test('the report opens with whether ReaLS beat the control on FID at equal SiT steps, and against the spread', () => {
  const firstParagraph = report.split('\n\n')[1]!;
  assert.equal(firstParagraph, headlineSentence(result));
  const rows = tableRows(curveStepsOf(result));
  const fid = (space: string, label: string) => result.profile.seeds.map((seed) => fileValue(out, seed, space, rows.find((r) => r.label === label)!)!);
  const odeLabel = rows.find((r) => r.label.startsWith('ODE samples: FID') && r.label.endsWith('(final)'))!.label;
  const [ode, sde] = [odeLabel, 'SDE samples: FID (final)'].map((label) => compare(fid('reals-finetune-ssl-w0p5', label), fid('control', label), 'lower'));
  const verdict = ode!.better && sde!.better ? 'beat the control on FID:' : !ode!.better && !sde!.better ? 'did not beat the control on FID:'
    : `beat the control on FID with the ${ode!.better ? 'ODE' : 'SDE'} sampler only:`;
  assert.ok(firstParagraph.includes(`ReaLS (fine-tuned, self-supervised teacher, weight 0.5) ${verdict}`), firstParagraph);
  const where = (c: typeof ode) => (c!.beyondSpread ? 'beyond' : 'within');
  assert.ok(firstParagraph.includes(where(ode) === where(sde) ? `both differences are ${where(ode)} the seed spread (2 seeds)`
    : `the ODE difference is ${where(ode)} the seed spread, the SDE difference is ${where(sde)} the seed spread (2 seeds)`), firstParagraph);
  assert.equal(describeComparison({ better: true, tie: false, beyondSpread: null }, ['ReaLS', 'control']), 'ReaLS');
});

test('formatValues gives one value as it is and several as mean ± sample standard deviation', () => {
  assert.equal(formatValues([0.5], 3), '0.500');
  assert.equal(formatValues([1, 2, 3], 2), '2.00 ± 1.00');
});

test('the figures the report shows exist and decode as PNG images', async () => {
  const images = [...report.matchAll(/!\[[^\]]*\]\(([^)]+)\)/g)].map((m) => m[1]!);
  assert.ok(images.length >= 20, `only ${images.length} images in report.md`);
  for (const kind of ['curves-fid', 'curves-sit', 'curves-vae-reconstruction', 'curves-vae-alignment', 'samples-control-ode', 'samples-pretrained-sde', 'reconstructions-reals-finetune-ssl-w0p5']) {
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
  let checked = 0;
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
    // The demo called the library, not the command: what the trainers recorded as their options
    // is what the command line gives, defaults included.
    if (path.join(' ') === 'align train' || path.join(' ') === 'sit train') {
      const checkpoint = loadCheckpoint(resolveResume(onlyRunDir(flags.resultsDir as string)).checkpoint);
      const recorded = checkpoint.metadata.args;
      for (const group of Object.values(checkpoint.groups)) for (const t of Object.values(group)) t.dispose();
      const { gpusPerNode: _, ...given } = flags;
      for (const [key, value] of Object.entries(given)) assert.deepEqual(recorded[key], value, `${line}: --${key}`);
      checked++;
    }
  }
  assert.ok(checked > 0);
  assert.deepEqual([...names].sort(), ['align convert', 'align train', 'export web', 'heads train-linear', 'sample ode', 'sample sde', 'sit train', 'teacher train']);
  // The ReaLS SiT, decoder and head as a page, linked with the one command that serves it.
  assert.ok(result.webPage !== null && 'dir' in result.webPage, JSON.stringify(result.webPage));
  for (const file of ['index.html', 'app.js', 'models/model.json', 'models/generator_cfg.onnx', 'models/vae_decoder.onnx', 'models/readout.onnx']) {
    assert.ok(existsSync(join(result.webPage.dir, file)), file);
  }
  assert.ok(report.includes(`reals serve ${result.webPage.dir}`) && report.includes('(web/index.html)'));
  for (const step of result.steps) assert.ok(report.includes(`| ${step.name} | ${step.seconds.toFixed(1)} s |`), step.name);
  assert.ok(code.includes(`# this whole run: reals demo --profile test --seeds 0,1 --teacher ssl,supervised --protocol finetune,scratch --loss cos --align-weight 0.5 --latent-channels 8 --out ${out}`));
});

test('demo merge joins runs of other seeds and refuses a latent space whose numbers differ', async () => {
  const work = mkdtempSync(join(tmpdir(), 'reals-demo-merge-'));
  try {
    // A copy of the run that claims to be seeds 5 and 6: merged with the run, four seeds.
    const copy = join(work, 'copy');
    cpSync(out, copy, { recursive: true });
    const moved = JSON.parse(readFileSync(join(copy, 'metrics.json'), 'utf8')) as DemoResult;
    moved.profile.seeds = [5, 6];
    moved.runs = { 5: moved.runs['0']!, 6: moved.runs['1']! };
    for (const [from, to] of [[0, 5], [1, 6]]) cpSync(join(copy, `seed-${from}`), join(copy, `seed-${to}`), { recursive: true });
    writeFileSync(join(copy, 'metrics.json'), JSON.stringify(moved));
    const merged = await mergeDemoRuns([out, copy], join(work, 'merged'));
    assert.deepEqual(merged.profile.seeds, [0, 1, 5, 6]);
    assert.deepEqual(merged.spaces.map((s) => s.id), result.spaces.map((s) => s.id));
    checkTables(join(work, 'merged'), readFileSync(join(work, 'merged', 'report.md'), 'utf8'), merged);
    // The same seed with another number is refused, naming it.
    const changed = JSON.parse(readFileSync(join(copy, 'metrics.json'), 'utf8')) as DemoResult;
    changed.runs = { 0: changed.runs['5']! };
    changed.runs['0']!.control!.reconstruction.mse += 1;
    changed.profile.seeds = [0];
    writeFileSync(join(copy, 'metrics.json'), JSON.stringify(changed));
    await assert.rejects(mergeDemoRuns([out, copy], join(work, 'bad')), /seed-0\/control has other numbers/);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
});

test('a metrics.json from before the vf loss reads as cos (and SD-VAE\'s 4 channels where it recorded no width), alone and merged', async () => {
  // A committed run of the reproduction study.
  const committed = readDemoResult(join('docs', 'study', 'ssl'));
  assert.deepEqual(committed.cells.losses, ['cos']);
  assert.deepEqual(committed.spaces.map((s) => s.loss), [null, null, 'cos', 'cos', 'cos', 'cos']);
  assert.deepEqual(committed.spaces.map((s) => s.id), latentSpaces(committed.cells).map((s) => s.id));
  assert.equal(committed.profile.vae.latentChannels, 4);
  assert.match(demoCommandLine(committed), / --protocol finetune,scratch --loss cos --align-weight 0.25,1 --latent-channels 4 --out /);
  const work = mkdtempSync(join(tmpdir(), 'reals-demo-old-'));
  try {
    const old = join(work, 'old');
    cpSync(out, old, { recursive: true });
    const stripped = JSON.parse(readFileSync(join(old, 'metrics.json'), 'utf8')) as DemoResult;
    const { losses: _, ...cells } = stripped.cells;
    const spaces = stripped.spaces.map(({ loss: __, ...space }) => space);
    writeFileSync(join(old, 'metrics.json'), JSON.stringify({ ...stripped, cells, spaces }));
    assert.ok(!readFileSync(join(old, 'metrics.json'), 'utf8').includes('"loss'));
    const merged = await mergeDemoRuns([old], join(work, 'merged'));
    assert.deepEqual(merged.cells.losses, ['cos']);
    assert.deepEqual(merged.spaces, result.spaces);
    checkTables(join(work, 'merged'), readFileSync(join(work, 'merged', 'report.md'), 'utf8'), merged);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
});

test('reals demo merge takes its own --out after the run folders', async () => {
  const program = buildProgram();
  const merge = program.commands.find((c) => c.name() === 'demo')!.commands.find((c) => c.name() === 'merge')!;
  merge.exitOverride();
  const missing = join(out, 'no-such-run');
  await assert.rejects(program.parseAsync(['node', 'reals', 'demo', 'merge', missing, '--out', join(out, 'merged')]), new RegExp(`${missing}: no metrics.json`));
});

test('a command line with a bad flag does not parse', () => {
  const program = buildProgram();
  const train = program.commands.find((c) => c.name() === 'align')!.commands.find((c) => c.name() === 'train')!;
  assert.throws(() => parseFlags(train, ['--data-path', 'fashion-mnist', '--dino-ckpt', 'x', '--max-steps', 'many']), /max-steps/);
  const demo = program.commands.find((c) => c.name() === 'demo')!;
  assert.throws(() => parseFlags(demo, ['--teacher', 'ssl,dino']), /--teacher.*expected one of ssl, supervised, hog, got 'dino'/);
  assert.throws(() => parseFlags(demo, ['--loss', 'vf,l2']), /--loss.*expected one of cos, vf, got 'l2'/);
  const defaults = parseFlags<{ loss: string[]; teacher: string[]; latentChannels?: number }>(demo, []);
  assert.deepEqual([defaults.loss, defaults.teacher, defaults.latentChannels], [['vf'], ['hog'], undefined]);
});
