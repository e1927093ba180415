// The alignment study's finding that the demo's headline states (src/demo/study-finding.ts),
// recomputed from the committed cell files with the study's own tables' code: a new or changed
// cell that moves a number makes this fail.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import {
  ALIGNMENT_FINDING, ALIGNMENT_FINDING_CPU, ALIGNMENT_FINDING_OPENBLAS, ALIGNMENT_FINDING_LOSS_RESULTS, ALIGNMENT_REPLICATION, ALIGN_ARMS, DEFAULT_CELLS, DEMO_PROFILES, armDifferences, headlineSpace, intervalVerdict, isFindingRegime, latentSpaces, pairedInterval,
  readAlignCells,
} from '../../src/demo/index.js';

const STUDY = join('docs', 'study', 'alignment');

test('the finding equals the paired difference of the committed cells at the primary endpoint, with its Bonferroni correction', () => {
  const f = ALIGNMENT_FINDING;
  const cells = readAlignCells([STUDY]);
  const profile = cells[0]!.profile;
  // The primary endpoint is the SiT's last checkpoint.
  assert.equal(profile.base.sit.steps, f.sitSteps);
  assert.equal(cells[0]!.curve.at(-1)!.step, f.sitSteps);
  assert.equal(profile.base.samples, f.samples);
  const rows = armDifferences(cells);
  const row = rows.find((r) => r.group.channels === f.channels && r.group.arm === f.loss && r.group.teacher === f.teacher);
  assert.ok(row !== undefined, `no ${f.loss} (${f.teacher}) cells at C=${f.channels} in ${STUDY}`);
  const d = row.differences.get(`FID @${f.sitSteps}`)!;
  const round = (values: readonly number[]) => values.map((v) => v.toFixed(2));
  assert.deepEqual(round([d.mean, ...d.interval!]), round([f.fidDifference, ...f.interval]));
  assert.deepEqual([d.seeds.length, d.wins.length], [f.seeds, f.wins]);
  assert.equal(intervalVerdict(d, 'lower'), 1, 'a win: the interval lies below 0');
  // The arms compared with the control at that width: those with this teacher and the teacher-free ones.
  const arms = rows.filter((r) => r.group.channels === f.channels && (r.group.teacher === f.teacher || ALIGN_ARMS[r.group.arm].teacherFree));
  assert.equal(arms.length, f.arms, arms.map((r) => `${r.group.arm} (${r.group.teacher})`).join(', '));
  const corrected = pairedInterval(d, 1 - 0.05 / f.arms)!;
  assert.deepEqual(round(corrected), round(f.correctedInterval));
  assert.ok(corrected[0] < 0 && corrected[1] > 0, 'the corrected interval spans 0');
});

test('the finding\'s loss in the study\'s other cells equals their paired differences at the primary endpoint: every teacher at both widths', () => {
  const f = ALIGNMENT_FINDING;
  const rows = armDifferences(readAlignCells([STUDY]));
  const round = (values: readonly number[]) => values.map((v) => v.toFixed(2));
  const listed = ALIGNMENT_FINDING_LOSS_RESULTS.map((r) => `${r.channels} ${r.teacher}`);
  assert.deepEqual(listed, ['8 supervised', '8 ssl', '4 hog', '4 supervised', '4 ssl']);
  // Every row of the finding's arm in the study is the finding or listed.
  const rowsOfArm = rows.filter((r) => r.group.arm === f.loss).map((r) => `${r.group.channels} ${r.group.teacher}`);
  assert.deepEqual(rowsOfArm.filter((name) => name !== `${f.channels} ${f.teacher}`).sort(), [...listed].sort());
  for (const t of ALIGNMENT_FINDING_LOSS_RESULTS) {
    const row = rows.find((r) => r.group.channels === t.channels && r.group.arm === f.loss && r.group.teacher === t.teacher)!;
    const d = row.differences.get(`FID @${f.sitSteps}`)!;
    assert.deepEqual(round([d.mean, ...d.interval!]), round([t.fidDifference, ...t.interval]), `${t.channels} ${t.teacher}`);
    assert.deepEqual([d.seeds.length, d.wins.length], [t.seeds, t.wins], `${t.channels} ${t.teacher}`);
  }
});

test('the finding\'s cells ran on its CPU, every cell of its set with its kernels, and the replication equals the paired difference of the other CPU\'s cells so far', () => {
  const f = ALIGNMENT_FINDING;
  const r = ALIGNMENT_REPLICATION;
  // lscpu's model name, without the trademark signs: "Intel(R) Xeon(R) Processor" is an Intel Xeon.
  const cpuOf = (cell: { environment: { cpu: string } }) => cell.environment.cpu.replaceAll('(R)', '');
  for (const cell of readAlignCells([STUDY])) {
    const finding = cell.channels === f.channels && (cell.arm === 'control' || (cell.arm === f.loss && cell.teacher.name === f.teacher));
    if (finding) assert.ok(cpuOf(cell).startsWith(ALIGNMENT_FINDING_CPU), cell.environment.cpu);
    // Cells from before the kernel set was recorded ran on the Xeon, which picks it.
    const kernels = cell.environment.openblasCore ?? (cpuOf(cell).startsWith(ALIGNMENT_FINDING_CPU) ? ALIGNMENT_FINDING_OPENBLAS : null);
    assert.equal(kernels, ALIGNMENT_FINDING_OPENBLAS, `C=${cell.channels} ${cell.arm} seed ${cell.seed}: ${cell.environment.cpu}`);
  }
  const cells = readAlignCells([join(STUDY, 'epyc')]);
  for (const cell of cells) assert.ok(cpuOf(cell).startsWith(r.cpu), cell.environment.cpu);
  const row = armDifferences(cells).find((x) => x.group.channels === f.channels && x.group.arm === f.loss && x.group.teacher === f.teacher)!;
  const d = row.differences.get(`FID @${f.sitSteps}`)!;
  const round = (values: readonly number[]) => values.map((v) => v.toFixed(2));
  assert.deepEqual(round([d.mean]), round([r.fidDifference]));
  assert.deepEqual(d.interval === null ? null : round(d.interval), r.interval === null ? null : round(r.interval));
  assert.deepEqual([d.seeds.length, d.wins.length], [r.seeds, r.wins]);
});

test('the demo\'s default, and no other loss, teacher or width, runs the finding\'s regime', () => {
  const space = headlineSpace(latentSpaces(DEFAULT_CELLS))!;
  for (const profile of Object.values(DEMO_PROFILES)) assert.ok(isFindingRegime(space, profile.vae.latentChannels), profile.name);
  assert.ok(!isFindingRegime(space, 4));
  assert.ok(!isFindingRegime(headlineSpace(latentSpaces({ ...DEFAULT_CELLS, losses: ['cos'] }))!, 8));
  assert.ok(!isFindingRegime(headlineSpace(latentSpaces({ ...DEFAULT_CELLS, teachers: ['ssl'] }))!, 8));
  assert.ok(!isFindingRegime(headlineSpace(latentSpaces({ ...DEFAULT_CELLS, protocols: ['scratch'] }))!, 8));
});
