import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import * as torch from '../../src/torch/index.js';
import { CheckpointManager } from '../../src/train/checkpoint.js';
import { spawn } from 'node:child_process';
import { hostname } from 'node:os';
import { NonFiniteLossError, RunDirBusyError, RUN_LOCK, checkFinite, createRunDir, lockRunDir, resolveResume } from '../../src/train/run-dir.js';

function withDir(fn: (dir: string) => void): void {
  const dir = mkdtempSync(join(tmpdir(), 'reals-run-'));
  try {
    fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('createRunDir numbers runs by the entries already there, as DiT: results/NNN-<model with / as ->', () => withDir((dir) => {
  const results = join(dir, 'results');
  const first = createRunDir(results, 'SiT-XL/2');
  assert.deepEqual(first, { path: join(results, '000-SiT-XL-2'), checkpoints: join(results, '000-SiT-XL-2', 'checkpoints') });
  assert.ok(existsSync(first.checkpoints));
  writeFileSync(join(results, '.DS_Store'), '');
  writeFileSync(join(results, 'notes.txt'), '');
  assert.equal(createRunDir(results, 'align').path, join(results, '002-align'), 'dot files do not count, other entries do');
  mkdirSync(join(results, '003-x'));
  rmSync(join(results, 'notes.txt'));
  assert.throws(() => createRunDir(results, 'x'), /003-x already exists/);
}));

test('resolveResume finds the checkpoint a run folder\'s last.safetensors names (else the newest), a checkpoints folder or a file', () => withDir((dir) => {
  const run = createRunDir(join(dir, 'results'), 'SiT-B/2');
  const manager = new CheckpointManager(run.checkpoints);
  for (const step of [100, 200]) manager.save({ tensors: { model: { w: torch.ones([1]) } }, metadata: { args: {}, step, epoch: 0 } });
  const newest = join(run.checkpoints, '0000200.safetensors');
  assert.deepEqual(resolveResume(run.path), { checkpoint: newest, runDir: resolve(run.path) });
  assert.deepEqual(resolveResume(run.checkpoints), { checkpoint: newest, runDir: resolve(run.path) });
  const older = join(run.checkpoints, '0000100.safetensors');
  assert.deepEqual(resolveResume(older), { checkpoint: older, runDir: resolve(run.path) });
  // Through `last`, the checkpoint saved last, not the highest step: step 100 saved again after 200.
  manager.save({ tensors: { model: { w: torch.ones([1]) } }, metadata: { args: {}, step: 100, epoch: 0 } });
  assert.deepEqual(resolveResume(run.path), { checkpoint: older, runDir: resolve(run.path) });
  rmSync(older);
  assert.throws(() => resolveResume(run.path), /checkpoints: last\.safetensors names 0000100\.safetensors, which is not there; resume from a checkpoint file instead/);
  rmSync(join(run.checkpoints, 'last.safetensors'));
  assert.deepEqual(resolveResume(run.path).checkpoint, newest, 'no last (a folder another tool wrote): the highest step');

  const loose = join(dir, 'elsewhere');
  mkdirSync(loose);
  writeFileSync(join(loose, 'model.safetensors'), '');
  assert.deepEqual(resolveResume(join(loose, 'model.safetensors')), { checkpoint: join(loose, 'model.safetensors'), runDir: resolve(loose) });
  assert.throws(() => resolveResume(loose), /--resume .*elsewhere: no checkpoint \(NNNNNNN\.safetensors\) in/);
  assert.throws(() => resolveResume(join(dir, 'missing')), /missing: no such file or folder/);
}));

test('checkFinite stops on the first NaN or infinite loss, naming it and the step', () => withDir(() => {
  checkFinite({ loss: 0.5, loss_align: -1e30 }, 10);
  assert.throws(() => checkFinite({ loss: 0.5, loss_diff: NaN }, 1234), (e: unknown) => {
    assert.ok(e instanceof NonFiniteLossError);
    assert.deepEqual([e.loss, e.value, e.step], ['loss_diff', NaN, 1234]);
    assert.match(e.message, /^loss "loss_diff" is NaN at step 1234: stopping/);
    return true;
  });
  assert.throws(() => checkFinite({ d_loss: -Infinity }, 7), /loss "d_loss" is -Infinity at step 7/);
}));

test('checkFinite names the checkpoint a --resume would continue from, or that there is none yet', () => withDir((dir) => {
  const manager = new CheckpointManager(join(dir, 'checkpoints'));
  assert.throws(() => checkFinite({ loss: NaN }, 3, manager), { message: 'loss "loss" is NaN at step 3: stopping; no checkpoint was saved before it' });
  manager.save({ tensors: { model: { w: torch.ones([2]) } }, metadata: { args: {}, step: 4, epoch: 0 } });
  assert.throws(() => checkFinite({ loss: Infinity }, 9, manager),
    { message: `loss "loss" is Infinity at step 9: stopping; the last good checkpoint is ${join(dir, 'checkpoints', '0000004.safetensors')}` });
}));

test('lockRunDir: a folder locked by another live process on this host is a RunDirBusyError with its pid; once that process is gone the lock is taken over', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'reals-lock-'));
  const other = spawn('sleep', ['30']);
  try {
    writeFileSync(join(dir, RUN_LOCK), JSON.stringify({ pid: other.pid, host: hostname(), started: new Date().toISOString() }));
    assert.throws(() => lockRunDir(dir), (error: unknown) => error instanceof RunDirBusyError && error.pid === other.pid && /in use by a running trainer/.test(error.message));
    const exited = new Promise((done) => other.once('exit', done));
    other.kill();
    await exited;
    const lock = lockRunDir(dir);
    assert.ok(existsSync(lock.path));
    lock.release();
    assert.ok(!existsSync(lock.path));
  } finally {
    other.kill();
    rmSync(dir, { recursive: true, force: true });
  }
});
