import { test, mock } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as torch from '../../src/torch/index.js';
import { saveSafetensors } from '../../src/io/safetensors.js';
import { AdamW } from '../../src/optim/index.js';
import {
  CheckpointManager, LAST_LINK, LAST_POINTER, NonFiniteCheckpointError, loadCheckpoint, loadOptimizer, optimizerToCheckpoint, restoreTrainingRng, rngStateBase64,
  saveCheckpoint, setRngStateBase64, trainingRngMetadata, type Checkpoint,
} from '../../src/train/checkpoint.js';

const { existsSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, statSync, truncateSync, writeFileSync } = fs;
const HERE = dirname(fileURLToPath(import.meta.url));

async function withDir(fn: (dir: string) => void | Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'reals-ckpt-'));
  try {
    await fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const small = (step: number) => ({ tensors: { model: { w: torch.full([2], step) } }, metadata: { args: {}, step, epoch: 0 } });

test('a checkpoint round-trips tensors by group, dtypes and metadata', () => withDir((dir) => {
  const path = join(dir, 'ckpt.safetensors');
  const model = new Map([['blocks.0.weight', torch.randn([3, 4])], ['pos_embed', torch.randn([1, 2], { dtype: 'float64' })]]);
  const ema = { 'blocks.0.weight': torch.randn([3, 4]).half() };
  const extra = { counts: torch.tensor([1, 2, 3], { dtype: 'int64' }), mask: torch.tensor([true, false], { dtype: 'bool' }) };
  const args = { model: 'SiT-XL/2', lr: 1e-4, 'global-batch-size': 256, path: null };
  saveCheckpoint(path, { tensors: { model, ema, extra }, metadata: { args, step: 1234, epoch: 5, note: { text: 'ok' } } });

  const loaded = loadCheckpoint(path);
  assert.deepEqual(Object.keys(loaded.groups).sort(), ['ema', 'extra', 'model']);
  assert.deepEqual(Object.keys(loaded.groups.model!).sort(), ['blocks.0.weight', 'pos_embed']);
  for (const [key, t] of model) assert.deepEqual(loaded.groups.model![key]!.toArray(), t.toArray(), key);
  assert.equal(loaded.groups.ema!['blocks.0.weight']!.dtype, 'float16');
  assert.deepEqual(loaded.groups.ema!['blocks.0.weight']!.toArray(), ema['blocks.0.weight'].toArray());
  assert.deepEqual(loaded.groups.extra!.counts!.tolist(), [1, 2, 3]);
  assert.deepEqual(loaded.groups.extra!.mask!.tolist(), [true, false]);
  assert.deepEqual(loaded.metadata, { args, step: 1234, epoch: 5, note: { text: 'ok' } });
  assert.equal(loaded.path, path);

  assert.throws(() => saveCheckpoint(path, { tensors: { 'a.b': { w: torch.ones([1]) } }, metadata: { args: {}, step: 0, epoch: 0 } }), /group name "a\.b"/);
}));

test('bad metadata, ungrouped tensors and truncated files are refused naming the file and field', () => withDir((dir) => {
  const path = join(dir, 'bad.safetensors');
  saveSafetensors(path, { 'model.w': torch.ones([2]) }, { args: '{}', step: '"12"', epoch: '1' });
  assert.throws(() => loadCheckpoint(path), (e: Error) => e.message.startsWith(`loadCheckpoint(${path}): metadata "step":`) && /number/.test(e.message));
  saveSafetensors(path, { 'model.w': torch.ones([2]) }, { args: '{}', step: '12' });
  assert.throws(() => loadCheckpoint(path), new RegExp(`metadata "epoch"`));
  saveSafetensors(path, { 'model.w': torch.ones([2]) }, { args: '{', step: '12', epoch: '0' });
  assert.throws(() => loadCheckpoint(path), /metadata "args" is not JSON/);
  saveSafetensors(path, { w: torch.ones([2]) }, { args: '{}', step: '12', epoch: '0' });
  assert.throws(() => loadCheckpoint(path), /tensor "w" has no group prefix/);

  saveCheckpoint(path, { tensors: { model: { w: torch.ones([1000]) } }, metadata: { args: {}, step: 1, epoch: 0 } });
  truncateSync(path, statSync(path).size - 10);
  assert.throws(() => loadCheckpoint(path), new RegExp(`${path}: the file is truncated`));
  truncateSync(path, 100);
  assert.throws(() => loadCheckpoint(path), /truncated/);
}));

test('the RNG state round-trips: draws after a restore equal the draws after the save', () => {
  torch.manualSeed(7);
  torch.randn([5]);
  const state = rngStateBase64();
  const after = torch.randn([6]).toArray();
  torch.randn([100]);
  setRngStateBase64(state);
  assert.deepEqual(torch.randn([6]).toArray(), after);
});

test("a trainer's RNG metadata restores its draws; another rank count or missing CUDA states reseed with a note", () => {
  const cpuPlace = { distributed: false, rank: 0, worldSize: 1, device: 'cpu' };
  torch.manualSeed(11);
  torch.randn([3]);
  const metadata = { step: 7, epoch: 0, args: {}, ...trainingRngMetadata(cpuPlace) };
  assert.deepEqual(metadata.rng_ranks, [metadata.rng]);
  assert.equal(metadata.cuda_rng_ranks, undefined, 'no CUDA states when training on the CPU');
  const expected = torch.randn([4]).tolist();
  const checkpoint: Checkpoint = { path: 'run/0000007.safetensors', groups: {}, metadata };
  const notes: string[] = [];
  torch.randn([100]);
  restoreTrainingRng(checkpoint, cpuPlace, 0, (line) => notes.push(line));
  assert.deepEqual(torch.randn([4]).tolist(), expected);
  assert.equal(notes.length, 0, notes.join('\n'));

  // Two ranks now: each rank is reseeded from (seed, rank, step), so ranks differ and the note says why.
  const draws = [0, 1].map((rank) => {
    restoreTrainingRng(checkpoint, { distributed: true, rank, worldSize: 2, device: 'cpu' }, 3, (line) => notes.push(line));
    return torch.randn([4]).tolist();
  });
  assert.notDeepEqual(draws[0], draws[1]);
  assert.match(notes[0]!, /run\/0000007\.safetensors: it holds the RNG states of 1 ranks, this run has 2; the random draws are reseeded/);
  restoreTrainingRng(checkpoint, { distributed: true, rank: 1, worldSize: 2, device: 'cpu' }, 3, () => {});
  assert.deepEqual(torch.randn([4]).tolist(), draws[1], 'the reseed is a function of seed, rank and step');

  // Resuming on a GPU from a CPU-trained checkpoint: its CUDA draws cannot continue, so it reseeds and says so.
  torch.manualSeed(5);
  restoreTrainingRng(checkpoint, { ...cpuPlace, device: 'cuda:0' }, 0, (line) => notes.push(line));
  assert.match(notes.at(-1)!, /no CUDA RNG states for 1 rank\(s\) \(was it trained on the CPU\?\)/);
  assert.throws(() => restoreTrainingRng({ ...checkpoint, metadata: { step: 1, epoch: 0, args: {} } }, cpuPlace, 0, () => {}),
    /resume from run\/0000007\.safetensors: no RNG state \(metadata "rng"\)/);
});

test('a CUDA generator state is refused naming the device where there is none', { skip: torch.cuda.isAvailable() ? 'CUDA present' : false }, () => {
  assert.throws(() => torch.cuda.getRngState('cuda:0'), /getRngState\(device\): no CUDA device 0 \(0 present\)/);
  assert.throws(() => torch.cuda.getRngState('gpu'), /expected a CUDA device \('cuda', 'cuda:N' or N\), got 'gpu'/);
});

test('an optimizer saved in a checkpoint resumes with the same updates', () => withDir((dir) => {
  torch.manualSeed(0);
  const w0 = torch.randn([4, 3]);
  const run = () => {
    const w = w0.clone().requiresGrad_();
    return { w, opt: new AdamW([w], { lr: 0.1, weightDecay: 0.01 }) };
  };
  const stepOnce = ({ w, opt }: ReturnType<typeof run>, seed: number) => {
    torch.manualSeed(seed);
    const target = torch.randn([4, 3]);
    opt.zeroGrad();
    w.sub(target).pow(2).sum().backward();
    opt.step();
  };
  const a = run();
  for (let i = 0; i < 3; i++) stepOnce(a, i);
  const path = join(dir, 'opt.safetensors');
  const opt = optimizerToCheckpoint(a.opt);
  saveCheckpoint(path, { tensors: { model: { w: a.w }, opt: opt.tensors }, metadata: { args: {}, step: 3, epoch: 0, optimizer: opt.metadata } });
  assert.ok(readFileSync(path).includes('"opt.state.0.exp_avg"'), 'optimizer tensors are saved as opt.state.<index>.<key>');

  const loaded = loadCheckpoint(path);
  const b = run();
  torch.noGrad(() => b.w.copy_(loaded.groups.model!.w!));
  loadOptimizer(b.opt, loaded);
  stepOnce(a, 3);
  stepOnce(b, 3);
  assert.deepEqual(b.w.toArray(), a.w.toArray());

  // A second optimizer under other names (e.g. a discriminator's).
  const c = run();
  saveCheckpoint(path, { tensors: { opt_disc: optimizerToCheckpoint(a.opt).tensors }, metadata: { args: {}, step: 4, epoch: 0, optimizer_disc: optimizerToCheckpoint(a.opt).metadata } });
  const second = loadCheckpoint(path);
  assert.throws(() => loadOptimizer(c.opt, second), /holds no optimizer state \(metadata "optimizer"\)/);
  loadOptimizer(c.opt, second, { group: 'opt_disc', key: 'optimizer_disc' });
  torch.noGrad(() => c.w.copy_(a.w));
  stepOnce(a, 4);
  stepOnce(c, 4);
  assert.deepEqual(c.w.toArray(), a.w.toArray());
}));

test('CheckpointManager names checkpoints by step, keeps the last K and points last.safetensors at the newest', () => withDir((dir) => {
  const manager = new CheckpointManager(join(dir, 'checkpoints'), { keepLast: 2 });
  assert.equal(manager.latest(), null);
  for (const step of [1000, 2000, 3000]) assert.equal(manager.save(small(step)), join(dir, 'checkpoints', CheckpointManager.fileName(step)));
  assert.equal(CheckpointManager.fileName(400000), '0400000.safetensors');
  assert.deepEqual(readdirSync(manager.dir).sort(), ['0002000.safetensors', '0003000.safetensors', LAST_LINK]);
  assert.deepEqual(manager.list().map((c) => c.step), [2000, 3000]);
  assert.equal(manager.latest(), join(manager.dir, '0003000.safetensors'));
  assert.equal(readlinkSync(join(manager.dir, LAST_LINK)), '0003000.safetensors', 'a relative link, valid if the folder moves');
  assert.equal(loadCheckpoint(join(manager.dir, LAST_LINK)).metadata.step, 3000);

  const all = new CheckpointManager(join(dir, 'all'));
  for (let step = 10_000_000; step > 0; step -= 2_500_000) all.save(small(step));
  assert.deepEqual(all.list().map((c) => c.step), [2_500_000, 5_000_000, 7_500_000, 10_000_000], 'numeric order past 7 digits');
  assert.equal(readlinkSync(join(all.dir, LAST_LINK)), '2500000.safetensors', 'last is the one saved last');
  assert.throws(() => new CheckpointManager(dir, { keepLast: 0 }), /keepLast must be at least 1/);
}));

test('a checkpoint records its tensors\' CRC-32s: a flipped byte is refused naming the tensor; the metadata reads as it was saved', () => withDir((dir) => {
  const path = join(dir, 'ckpt.safetensors');
  saveCheckpoint(path, { tensors: { model: { w: torch.arange(64).float() } }, metadata: { args: { lr: 1 }, step: 7, epoch: 0 } });
  assert.deepEqual(loadCheckpoint(path).metadata, { args: { lr: 1 }, step: 7, epoch: 0 });
  const bytes = readFileSync(path);
  bytes[bytes.length - 9]! ^= 0x04;
  writeFileSync(path, bytes);
  assert.throws(() => loadCheckpoint(path), (e: Error) => e.message.startsWith(`${path}: tensor "model.w" is corrupt: its bytes have CRC-32 0x`));
}));

test('a checkpoint holding a NaN or an infinity is not written: the last good one stays the latest', () => withDir((dir) => {
  const manager = new CheckpointManager(dir);
  manager.save(small(1));
  for (const [bad, value] of [['opt.exp_avg_sq', Infinity], ['ema.w', NaN], ['model.w', -Infinity]] as const) {
    const [group, key] = bad.split('.') as [string, string];
    const contents = small(2);
    const tensors: Record<string, Record<string, torch.Tensor>> = { ...contents.tensors, ema: { w: torch.ones([3]) }, opt: { exp_avg_sq: torch.ones([2, 2]).double() } };
    tensors[group]![key]!.narrow(0, 1, 1).fill_(value);
    assert.throws(
      () => manager.save({ ...contents, tensors }),
      (e: unknown) => e instanceof NonFiniteCheckpointError && e.tensor === bad && e.step === 2 &&
        e.message === `saveCheckpoint(${join(dir, '0000002.safetensors')}): tensor "${bad}" holds NaN or infinite values at step 2: not written, ` +
          `stopping; the last good checkpoint is ${join(dir, '0000001.safetensors')}`,
    );
  }
  assert.deepEqual(readdirSync(dir).sort(), ['0000001.safetensors', LAST_LINK], 'no file, no temporary file, last unchanged');
  assert.equal(readlinkSync(join(dir, LAST_LINK)), '0000001.safetensors');
  // Integer and bool tensors, and empty ones, are not floating-point values to check.
  manager.save({ tensors: { model: { n: torch.tensor([1, 2], { dtype: 'int64' }), b: torch.tensor([true]), e: torch.zeros([0]) } }, metadata: { args: {}, step: 3, epoch: 0 } });
  assert.equal(manager.latest(), join(dir, '0000003.safetensors'));
}));

test('where symbolic links are not supported, last.txt names the newest checkpoint', () => withDir((dir) => {
  const refuse = mock.method(fs, 'symlinkSync', () => {
    throw Object.assign(new Error('operation not permitted'), { code: 'EPERM' });
  });
  syncBuiltinESMExports();
  try {
    const manager = new CheckpointManager(dir);
    manager.save(small(5));
    manager.save(small(6));
    assert.equal(readFileSync(join(dir, LAST_POINTER), 'utf8'), '0000006.safetensors\n');
    assert.ok(!existsSync(join(dir, LAST_LINK)));
  } finally {
    refuse.mock.restore();
    syncBuiltinESMExports();
  }
}));

test('kill -9 during a save leaves the previous checkpoint as the latest, and the partial file is refused', () => withDir(async (dir) => {
  const child = spawn(process.execPath, ['--import', 'tsx', join(HERE, 'save-child.ts'), dir], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_code, signal) => resolve(signal)));
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (data: Buffer) => { if (data.toString().includes('saved 1000')) resolve(); });
    child.on('exit', () => reject(new Error('the child exited before saving step 1000')));
  });
  const partial = join(dir, `0002000.safetensors.tmp-${child.pid}`);
  const deadline = Date.now() + 30_000;
  while (!(existsSync(partial) && statSync(partial).size > 0)) {
    if (Date.now() > deadline) throw new Error(`${partial} never appeared`);
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
  child.kill('SIGKILL');
  assert.equal(await exited, 'SIGKILL');

  const expectedBytes = 64 * 4 * (1 << 20);
  assert.ok(statSync(partial).size < expectedBytes, 'killed before the write finished');
  assert.throws(() => loadCheckpoint(partial), /truncated/);
  const manager = new CheckpointManager(dir);
  assert.ok(!existsSync(partial), 'the dead process\'s temporary file is removed');
  assert.deepEqual(manager.list().map((c) => c.step), [1000]);
  const latest = loadCheckpoint(manager.latest()!);
  assert.equal(latest.metadata.step, 1000);
  assert.deepEqual(latest.groups.model!.w!.tolist(), [1000, 1000, 1000, 1000]);
  assert.equal(readlinkSync(join(dir, LAST_LINK)), '0001000.safetensors');

  // A temporary file of a live process (another save in progress) is left alone.
  const live = join(dir, `0003000.safetensors.tmp-${process.pid}`);
  writeFileSync(live, 'x');
  new CheckpointManager(dir);
  assert.ok(existsSync(live));
}));
