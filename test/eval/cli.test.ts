import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as torch from '../../src/torch/index.js';
import { saveNpz, saveSafetensors } from '../../src/io/index.js';
import { FIDInceptionV3 } from '../../src/models/inception.js';
import { loadNpz } from '../../src/io/npz.js';

const REALS = join(dirname(fileURLToPath(import.meta.url)), '../../bin/reals.js');

function reals(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const run = spawnSync(process.execPath, [REALS, ...args], { encoding: 'utf8', timeout: 110_000 });
  return { status: run.status, stdout: run.stdout, stderr: run.stderr };
}

/** FIDInceptionV3 with seeded He-scaled random weights (the real ones cannot be downloaded here), saved as safetensors. */
function randomWeights(path: string): void {
  const model = new FIDInceptionV3();
  torch.manualSeed(0);
  torch.noGrad(() => {
    for (const [name, p] of model.stateDict()) {
      if (!p.isFloatingPoint()) continue;
      if (p.ndim > 1) p.copy_(torch.randn(p.shape).mul(Math.sqrt(2 / (p.numel() / p.size(0)))));
      else if (name.endsWith('running_var') || name.endsWith('bn.weight')) p.fill_(1);
      else p.copy_(torch.randn(p.shape).mul(0.1));
    }
  });
  saveSafetensors(path, Object.fromEntries(model.stateDict()));
}

test('reals evaluate and fid-stats with the FID Inception (random weights): a batch against its shuffled copy', { timeout: 240_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'reals-eval-cli-'));
  try {
    const weights = join(dir, 'inception.safetensors');
    randomWeights(weights);
    torch.manualSeed(1);
    const batch = torch.nnFunctional.interpolate(torch.rand([8, 3, 4, 4]).mul(255), { size: [32, 32], mode: 'bilinear', alignCorners: false })
      .round().to('uint8').permute(0, 2, 3, 1).contiguous();
    const [ref, sample, json] = [join(dir, 'ref.npz'), join(dir, 'sample.npz'), join(dir, 'out.json')];
    saveNpz(ref, { arr_0: batch });
    saveNpz(sample, { arr_0: batch.indexSelect(0, torch.tensor([3, 1, 7, 0, 5, 2, 6, 4])) });

    const run = reals(['evaluate', ref, sample, '--inception-weights', weights, '--json', json, '--is-split-size', '4', '--batch-size', '4']);
    assert.equal(run.status, 0, run.stderr);
    for (const row of ['Inception Score', 'FID', 'sFID', 'Precision', 'Recall']) assert.match(run.stdout, new RegExp(`^${row} +-?\\d+\\.\\d{4}$`, 'm'));
    const result = JSON.parse(readFileSync(json, 'utf8'));
    assert.ok(Math.abs(result.fid) < 1e-3, `FID ${result.fid}`);
    assert.ok(Math.abs(result.sfid) < 1e-3, `sFID ${result.sfid}`);
    assert.deepEqual([result.precision, result.recall], [1, 1]);
    assert.ok(result.inceptionScore >= 1, `IS ${result.inceptionScore}`);
    const sha = (path: string): string => createHash('sha256').update(readFileSync(path)).digest('hex');
    assert.deepEqual([result.reference.count, result.reference.sha256, result.sample.count, result.sample.sha256], [8, sha(ref), 8, sha(sample)]);
    assert.equal(result.reference.statistics, 'computed');
    assert.ok(existsSync(result.reference.activationCache), 'the reference activations were cached');

    const stats = join(dir, 'stats.npz');
    const fidStats = reals(['fid-stats', sample, '--out', stats, '--inception-weights', weights]);
    assert.equal(fidStats.status, 0, fidStats.stderr);
    const written = loadNpz(stats);
    assert.deepEqual(Object.keys(written), ['mu', 'sigma', 'mu_s', 'sigma_s', 'extractor_id']);
    assert.equal(Buffer.from(written.extractor_id!.toArray() as Uint8Array).toString('ascii'), result.featureNetwork.id, 'the statistics name their network');
    assert.match(result.featureNetwork.id, /^inception-[0-9a-f]{16}$/);
    assert.match(run.stdout, /^features: inception-[0-9a-f]{16}: the FID Inception/m);
    assert.deepEqual([written.mu!.shape, written.sigma!.shape, written.mu_s!.shape, written.sigma_s!.shape], [[2048], [2048, 2048], [2023], [2023, 2023]]);

    const bad = join(dir, 'bad.json');
    const refused = reals(['evaluate', ref, stats, '--inception-weights', weights, '--json', bad]);
    assert.notEqual(refused.status, 0);
    assert.match(refused.stderr, /stats\.npz: no arr_0/);
    assert.equal(existsSync(bad), false, 'nothing written to --json');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
