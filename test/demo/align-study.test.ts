// The alignment study (src/demo/align-study.ts, align-report.ts, paired.ts) at the seconds-long
// test profile: cells of two arms over two seeds fine-tune their seed's one stage-1 VAE with only
// the arm's flags differing, are skipped once done, and are tabled as paired differences from the
// control (checked against the numbers in the files); the Student-t quantiles against SciPy's.
import { test } from 'node:test';
import { createHash } from 'node:crypto';
import assert from 'node:assert/strict';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import {
  ALIGN_STUDY_PROFILES, formatPaired, intervalVerdict, pairedDifference, pairedInterval, readAlignCellFolders, readAlignCells, runAlignCell, studentTCdf, studentTQuantile,
  teacherUse, writeAlignStudyReport, type AlignCellMetrics,
} from '../../src/demo/index.js';

/** A command line's flags: `--name value` pairs (a flag followed by another flag maps to ''). */
function flags(command: string): Map<string, string> {
  const words = command.split(' ');
  const map = new Map<string, string>();
  words.forEach((word, i) => {
    if (word.startsWith('--')) map.set(word, words[i + 1]?.startsWith('--') === false ? words[i + 1]! : '');
  });
  return map;
}

test('Student-t quantiles and CDF equal SciPy\'s (scipy.stats.t.ppf(0.975, df), t.cdf(1.3, 4))', () => {
  const scipy: [number, number][] = [[1, 12.706204736432095], [2, 4.302652729911275], [3, 3.182446305284263], [5, 2.5705818366147395],
    [10, 2.2281388519649385], [30, 2.0422724563012373], [100, 1.9839715184496334]];
  for (const [df, q] of scipy) assert.ok(Math.abs(studentTQuantile(0.975, df) - q) < 1e-9 * q, `df ${df}: ${studentTQuantile(0.975, df)} vs ${q}`);
  assert.ok(Math.abs(studentTCdf(1.3, 4) - 0.868274201764388) < 1e-12);
  assert.ok(Math.abs(studentTCdf(-1.3, 4) - (1 - 0.868274201764388)) < 1e-12);
  assert.throws(() => studentTQuantile(1, 3), /0 < p < 1/);
});

test('paired differences: over the shared seeds, mean, sample sd, t interval, wins and the verdict', () => {
  const d = pairedDifference(new Map([[0, 10], [1, 12], [2, 9]]), new Map([[0, 11], [1, 11], [2, 11], [3, 5]]), 'lower')!;
  assert.deepEqual(d.seeds, [0, 1, 2]);
  assert.deepEqual(d.differences, [-1, 1, -2]);
  assert.ok(Math.abs(d.mean + 2 / 3) < 1e-12);
  const sd = Math.sqrt(7 / 3);
  assert.ok(Math.abs(d.std - sd) < 1e-12);
  const half = 4.302652729911275 * sd / Math.sqrt(3);
  assert.ok(Math.abs(d.interval![0] - (-2 / 3 - half)) < 1e-9 && Math.abs(d.interval![1] - (-2 / 3 + half)) < 1e-9);
  assert.deepEqual(d.wins, [0, 2]);
  assert.equal(intervalVerdict(d, 'lower'), 0);
  assert.equal(formatPaired(d, 2), `-0.67 ± 1.53 [${(-2 / 3 - half).toFixed(2)}, +${(-2 / 3 + half).toFixed(2)}]`);
  // Lower is better and every seed lower by about 2: the interval lies below 0, a win; for "higher is better" the same numbers lose.
  const clear = pairedDifference(new Map([[0, 8], [1, 9.1], [2, 7.9]]), new Map([[0, 10], [1, 11], [2, 10]]), 'lower')!;
  assert.equal(intervalVerdict(clear, 'lower'), 1);
  assert.equal(intervalVerdict(clear, 'higher'), -1);
  assert.equal(pairedDifference(new Map([[0, 1]]), new Map([[1, 1]]), 'lower'), null);
  assert.equal(pairedDifference(new Map([[0, 1]]), new Map([[0, 2]]), 'lower')!.interval, null);
});

test('alignment cells share their seed\'s stage-1 VAE, differ only in the arm\'s flags, are skipped once done, and are tabled and merged as paired differences', async () => {
  const root = mkdtempSync(join(tmpdir(), 'reals-align-study-'));
  try {
    const work = join(root, 'work');
    const out = join(root, 'out');
    const profile = ALIGN_STUDY_PROFILES.test;
    const cells = new Map<string, AlignCellMetrics>();
    for (const seed of [0, 1]) {
      for (const arm of ['control', 'cos'] as const) {
        const run = await runAlignCell({ profile, channels: 4, arm, teacher: 'hog', seed, work, out, log: () => {} });
        assert.equal(run.skipped, false);
        assert.deepEqual(JSON.parse(readFileSync(run.path, 'utf8')), run.metrics);
        cells.set(`${arm}${seed}`, run.metrics);
      }
    }
    const control = cells.get('control0')!;
    const cos = cells.get('cos0')!;
    assert.equal(control.study, 'alignment');
    assert.deepEqual(control.teacher, { name: 'none', dinoModel: 'hog', dinoCkpt: null, sha256: null });
    assert.deepEqual(cos.teacher, { name: 'hog', dinoModel: 'hog', dinoCkpt: null, sha256: null });
    assert.deepEqual(cos.armOptions, { alignLoss: 'cos', patchWeight: 0.25, clsWeight: 0.25 });
    assert.equal(control.finetune.finalAlign, null);
    assert.ok(Number.isFinite(cos.finetune.finalAlign) && cos.finetune.finalAlign! > 0);
    // One stage-1 VAE per seed: the same records in both arms; the fine-tuning starts from its folder.
    const stageOne = (m: AlignCellMetrics) => m.stages.filter((s) => s.name.startsWith('stage 1: '));
    assert.equal(stageOne(control).length, 2);
    assert.deepEqual(stageOne(cos), stageOne(control));
    const finetune = (m: AlignCellMetrics) => flags(m.stages.find((s) => s.name.startsWith('fine-tune'))!.command!);
    const [c, r] = [finetune(control), finetune(cos)];
    assert.equal(c.get('--vae-ckpt'), join(work, 'test', 'c4-seed0', 'vae-diffusers'));
    // The two fine-tunings differ in the arm's flags and their run folders alone.
    const differing = [...new Set([...c.keys(), ...r.keys()])].filter((key) => c.get(key) !== r.get(key)).sort();
    assert.deepEqual(differing, ['--align-loss', '--cls-weight', '--patch-weight', '--results-dir']);
    assert.deepEqual([c.get('--patch-weight'), c.get('--cls-weight'), r.get('--patch-weight'), r.get('--cls-weight'), r.get('--align-loss')], ['0', '0', '0.25', '0.25', 'cos']);
    // The cells measure different VAEs.
    assert.notEqual(control.reconstruction.rfid, cos.reconstruction.rfid);

    const again = await runAlignCell({ profile, channels: 4, arm: 'cos', teacher: 'hog', seed: 0, work, out, log: () => {} });
    assert.equal(again.skipped, true);

    assert.equal((await writeAlignStudyReport(out)).cells, 4);
    const readme = readFileSync(join(out, 'README.md'), 'utf8');
    const finalFid = (m: AlignCellMetrics) => m.curve.at(-1)!.fid;
    const expected = pairedDifference(new Map([[0, finalFid(cos)], [1, finalFid(cells.get('cos1')!)]]),
      new Map([[0, finalFid(control)], [1, finalFid(cells.get('control1')!)]]), 'lower')!;
    const row = readme.split('\n').find((line) => line.startsWith('| 4 | cos (hog) | 0, 1 |'));
    assert.ok(row !== undefined, 'no paired row for cos (hog)');
    assert.ok(row.includes(formatPaired(expected, 2)), `${row} lacks ${formatPaired(expected, 2)}`);
    assert.ok(row.endsWith(`| ${expected.wins.length}/2${expected.wins.length > 0 ? ` (seeds ${expected.wins.join(', ')})` : ''} |`), row);

    // demo merge: cells split over two folders pool to the same tables; a demo run's folder among them is refused.
    const [a, b, merged] = [join(root, 'a'), join(root, 'b'), join(root, 'merged')];
    mkdirSync(a);
    mkdirSync(b);
    for (const name of ['c4-control-seed0.json', 'c4-cos-hog-seed0.json']) cpSync(join(out, name), join(a, name));
    for (const name of ['c4-control-seed1.json', 'c4-cos-hog-seed1.json']) cpSync(join(out, name), join(b, name));
    assert.deepEqual(readAlignCellFolders([a, b]), [a, b]);
    mkdirSync(merged);
    await writeAlignStudyReport(merged, [a, b]);
    assert.equal(readFileSync(join(merged, 'README.md'), 'utf8'), readme);
    assert.ok(readme.includes('the protocol is\ndocs/study/alignment/PROTOCOL.md in the reals repository.'), readme.slice(0, 300));
    // A protocol in the folder above is linked relative to the report (a CPU's own set of cells).
    writeFileSync(join(root, 'PROTOCOL.md'), '# protocol\n');
    await writeAlignStudyReport(merged, [a, b]);
    assert.ok(readFileSync(join(merged, 'README.md'), 'utf8').includes('the protocol is\n[PROTOCOL.md](../PROTOCOL.md).'));
    const demoRun = join(root, 'demo-run');
    mkdirSync(demoRun);
    writeFileSync(join(demoRun, 'metrics.json'), '{}');
    assert.equal(readAlignCellFolders([demoRun]), null);
    assert.throws(() => readAlignCellFolders([a, demoRun]), /demo-run is not a folder of alignment cells/);
    // The same cell in two folders is refused.
    await assert.rejects(writeAlignStudyReport(merged, [a, out]), /is also in/);
    // So is an arm whose stage-1 VAE is not its control's (another kernel set trains other bits).
    const stray = JSON.parse(readFileSync(join(a, 'c4-cos-hog-seed0.json'), 'utf8')) as AlignCellMetrics;
    stray.stageOne.finalLoss *= 1 + 2 ** -40;
    writeFileSync(join(a, 'c4-cos-hog-seed0.json'), JSON.stringify(stray));
    assert.throws(() => readAlignCells([a]), /c4-cos-hog-seed0\.json: stage-1 VAE .* is not .*c4-control-seed0\.json's .* \(C=4 seed 0\): its arms would not pair$/);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('the report\'s primary-endpoint grids: each arm and teacher at C = 4 and C = 8 against the control, recomputed from the cell files, and the Bonferroni correction over each width\'s ten comparisons', async () => {
  const study = join('docs', 'study', 'alignment');
  const out = mkdtempSync(join(tmpdir(), 'reals-align-grid-'));
  try {
    const cells = readAlignCells([study]);
    await writeAlignStudyReport(out, [study]);
    const readme = readFileSync(join(out, 'README.md'), 'utf8');
    const fid = (name: string) => {
      const bySeed = new Map(cells.filter((m) => `c${m.channels}-${m.arm}${m.teacher.name === 'none' ? '' : `-${m.teacher.name}`}` === name).map((m) => [m.seed, m.curve.at(-1)!.fid]));
      assert.ok(bySeed.size > 0, name);
      return bySeed;
    };
    const signed = (v: number) => `${v >= 0 ? '+' : '−'}${Math.abs(v).toFixed(2)}`;
    const entry = (name: string) => {
      const d = pairedDifference(fid(name), fid(`${name.split('-')[0]}-control`), 'lower')!;
      const text = `${signed(d.mean)} [${signed(d.interval![0])}, ${signed(d.interval![1])}]`;
      return `${d.interval![1] < 0 ? `**${text}**` : text} ${d.wins.length}/${d.seeds.length}`;
    };
    const teachers = ['hog', 'supervised', 'ssl'];
    // Both widths are complete: every arm with every teacher, 6 seeds each.
    for (const width of ['c4', 'c8']) {
      const grid = readme.slice(readme.indexOf(`### C = ${width.slice(1)}`));
      assert.ok(grid.startsWith(`### C = ${width.slice(1)}\n\n| arm − control | ${teachers.join(' | ')} |\n`), grid.slice(0, 200));
      for (const arm of ['cos', 'vf', 'patch']) {
        for (const t of teachers) assert.equal(fid(`${width}-${arm}-${t}`).size, 6, `${width}-${arm}-${t}`);
        assert.ok(grid.includes(`\n| ${arm} | ${teachers.map((t) => entry(`${width}-${arm}-${t}`)).join(' | ')} |\n`), `${width} ${arm}: ${grid.slice(0, 900)}`);
      }
      assert.ok(grid.includes(`\n- eq (no teacher): ${entry(`${width}-eq`)}\n`));
    }
    // A plot a width, linked from the report: 10 arms each (the PNG is tall enough for their legend).
    for (const width of [4, 8]) {
      assert.ok(readme.includes(`](alignment-c${width}.png)`));
      const plot = await sharp(join(out, `alignment-c${width}.png`)).metadata();
      assert.equal(plot.format, 'png');
      assert.ok(plot.height! >= 40 + 10 * 20 + 20, String(plot.height));
    }
    const grid = readme.slice(readme.indexOf('### C = 8'));
    // The winning rows print bold; the correction is over the ten comparisons at C = 8 (99.5%), and none survives it.
    assert.match(grid, /\| vf \| \*\*−0\.83 \[−1\.53, −0\.13\]\*\* 5\/6 \|/);
    assert.ok(grid.includes('- Bonferroni-corrected for the 10 comparisons at C = 8 (99.5% intervals): none excludes 0.'), grid);
    // At C = 4, EQ-VAE loses beyond even the corrected interval (the ten comparisons there: 99.5%).
    const atFour = readme.slice(readme.indexOf('### C = 4'), readme.indexOf('### C = 8'));
    const corrected = pairedInterval(pairedDifference(fid('c4-eq'), fid('c4-control'), 'lower')!, 1 - 0.05 / 10)!;
    assert.ok(corrected[0] > 0, 'eq loses beyond the corrected interval');
    assert.ok(atFour.includes('- Bonferroni-corrected for the 10 comparisons at C = 4 (99.5% intervals): ') &&
      atFour.includes(`eq [${signed(corrected[0])}, ${signed(corrected[1])}]`), atFour);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

test('a teacher whose files are missing is refused with the command that makes it', () => {
  assert.throws(() => teacherUse('supervised', '/nonexistent-work'), /teachers\/supervised\/dino-model\.json: the supervised teacher is not there; node --import tsx scripts\/teacher-study\.ts measure supervised/);
  assert.throws(() => teacherUse('ssl', '/nonexistent-work', '/nonexistent-export'), /teacher-long\/000-teacher\/teacher\/dino-model\.json: .*scripts\/teacher-long\.sh/);
});

test('the self-supervised teacher is the committed export when there is one, else the long run\'s own', () => {
  const root = mkdtempSync(join(tmpdir(), 'reals-ssl-teacher-'));
  try {
    const committed = join(root, 'committed');
    const work = join(root, 'work');
    const runExport = join(work, 'teacher-long', '000-teacher', 'teacher');
    for (const [dir, bytes] of [[committed, 'committed'], [runExport, 'run']] as const) {
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, 'dino-model.json'), '{}');
      writeFileSync(join(dir, 'dino-teacher.safetensors'), bytes);
    }
    const sha = (text: string) => createHash('sha256').update(text).digest('hex');
    assert.deepEqual(teacherUse('ssl', work, committed), {
      name: 'ssl', dinoModel: join(committed, 'dino-model.json'), dinoCkpt: join(committed, 'dino-teacher.safetensors'), sha256: sha('committed'),
    });
    assert.equal(teacherUse('ssl', work, join(root, 'none')).sha256, sha('run'));
    rmSync(join(committed, 'dino-model.json'));
    assert.throws(() => teacherUse('ssl', work, committed), /committed\/dino-model\.json: the ssl teacher is not there; it is committed there/);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
