// The latent-channel study's cell (src/demo/study.ts) at the seconds-long test profile: one
// (channels, seed) cell end to end, its metrics file, the skip of a finished cell, a resumed cell
// and a cell rerun from scratch equal to the first to the last digit, and the table over cells.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as torch from '../../src/torch/index.js';
import { CheckpointManager } from '../../src/train/index.js';
import sharp from 'sharp';
import { CHANNEL_STUDY_PROFILES, onlyRunDir, runChannelCell, writeChannelStudyReport, type ChannelCellMetrics } from '../../src/demo/index.js';

const profile = CHANNEL_STUDY_PROFILES.test;

/** Every number a cell measures (not its times). */
function measured(m: ChannelCellMetrics): unknown {
  return { classifier: m.classifier, reconstruction: m.reconstruction, vae: m.vae, sit: m.sit, curve: m.curve };
}

test('a channel-study cell writes its metrics, is skipped once done, resumes or reruns to the same numbers, and is tabled', async () => {
  const root = mkdtempSync(join(tmpdir(), 'reals-study-'));
  try {
    const work = join(root, 'work');
    const out = join(root, 'out');
    const cell = { profile, channels: 8, seed: 0, work, out, log: () => {} };
    const first = await runChannelCell(cell);
    assert.equal(first.skipped, false);
    assert.equal(first.path, join(out, 'c8-seed0.json'));
    const m = JSON.parse(readFileSync(first.path, 'utf8')) as ChannelCellMetrics;
    assert.deepEqual(m, first.metrics);
    assert.equal(m.study, 'latent-channels');
    assert.equal(m.channels, 8);
    assert.equal(m.seed, 0);
    assert.deepEqual(m.profile, profile);
    assert.match(m.classifier.sha256, /^[0-9a-f]{64}$/);
    assert.ok(m.classifier.testAccuracy >= 0 && m.classifier.testAccuracy <= 1);
    assert.equal(m.classifier.testImages, profile.referenceImages);
    // 32x32 images through an f4 VAE of width 8.
    assert.deepEqual(m.reconstruction.latentShape, [8, 8, 8]);
    assert.equal(m.reconstruction.images, profile.ifid.images);
    assert.equal(m.reconstruction.t, 0.5);
    assert.equal(m.reconstruction.interpolation, 'linear');
    assert.match(m.reconstruction.extractor, /^demo-classifier-/);
    for (const value of [m.reconstruction.rfid, m.reconstruction.ifid, m.reconstruction.meanNeighbourDistance, m.vae.finalLoss, m.sit.finalLoss]) {
      assert.ok(Number.isFinite(value) && value > 0, `${value} is not a positive number`);
    }
    // The four checkpoints at 25/50/75/100% of the 4 SiT steps, each scored on every sample against every reference image.
    assert.deepEqual(m.curve.map((p) => p.step), [1, 2, 3, 4]);
    for (const p of m.curve) {
      assert.ok(Number.isFinite(p.fid) && p.fid > 0);
      for (const fraction of [p.precision, p.recall, p.classAccuracy]) assert.ok(fraction >= 0 && fraction <= 1);
      assert.equal(p.samples, profile.samples);
      assert.equal(p.reference, profile.referenceImages);
    }
    assert.equal(m.stages.length, 8);
    const commands = m.stages.map((s) => s.command).filter((c): c is string => c !== null);
    assert.equal(commands.filter((c) => /^reals (align train|sit train|sample ode) /.test(c) && c.includes(' --precision fp32')).length, 6);
    assert.equal(m.environment.precision, 'fp32');
    assert.equal(m.environment.threads, 1);
    // This checkout's commit, as git names it (the tests run from a clone).
    const head = spawnSync('git', ['describe', '--always', '--dirty', '--abbrev=40'], { encoding: 'utf8' }).stdout.trim();
    assert.match(head, /^[0-9a-f]{40}(-dirty)?$/);
    assert.equal(m.environment.commit, head);
    assert.equal(m.environment.cpuFamilyModel, torch.cpuFamilyModel());
    assert.equal(m.environment.openblasCore, torch.openblasCoreName());
    assert.ok(m.wallSeconds > 0 && m.cpuSeconds! > 0);

    // Done: a second run reads the file and runs nothing.
    const mtime = statSync(first.path).mtimeMs;
    const again = await runChannelCell(cell);
    assert.equal(again.skipped, true);
    assert.deepEqual(again.metrics, m);
    assert.equal(statSync(first.path).mtimeMs, mtime);

    // Killed after the SiT's step-3 checkpoint: the SiT resumes from it and the last two checkpoints are sampled again.
    const cellDir = join(work, profile.name, 'c8-seed0');
    unlinkSync(first.path);
    for (const stage of ['sit-train', 'score-step3', 'score-step4']) unlinkSync(join(cellDir, 'stages', `${stage}.json`));
    // As a process killed before it wrote step 4 (with `last` gone, the newest checkpoint, step 3's, is resumed).
    const checkpoints = join(onlyRunDir(join(cellDir, 'sit')), 'checkpoints');
    for (const name of [CheckpointManager.fileName(4), 'last.safetensors']) unlinkSync(join(checkpoints, name));
    const resumed = await runChannelCell(cell);
    assert.equal(resumed.skipped, false);
    assert.deepEqual(measured(resumed.metrics), measured(m));

    // From scratch (the cached classifier kept): the same numbers to the last digit.
    unlinkSync(first.path);
    rmSync(cellDir, { recursive: true });
    const rerun = await runChannelCell(cell);
    assert.deepEqual(measured(rerun.metrics), measured(m));

    // The table: one row per channel count, with the cell files' own numbers, and the plot.
    const c4 = (await runChannelCell({ ...cell, channels: 4 })).metrics;
    assert.equal((await writeChannelStudyReport(out)).cells, 2);
    const readme = readFileSync(join(out, 'README.md'), 'utf8');
    for (const cellMetrics of [c4, m]) {
      const { rfid, ifid } = cellMetrics.reconstruction;
      const fids = cellMetrics.curve.map((p) => p.fid.toFixed(2)).join(' | ');
      assert.ok(readme.includes(`| ${cellMetrics.channels} | 0 | ${rfid.toFixed(2)} | ${ifid.toFixed(2)} | ${fids} |`), `no row for C=${cellMetrics.channels}`);
    }
    const png = await sharp(join(out, 'channels.png')).metadata();
    assert.equal(png.format, 'png');
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
