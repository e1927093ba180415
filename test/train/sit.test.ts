import { test, mock } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { PassThrough } from 'node:stream';
import { hostname, tmpdir } from 'node:os';
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as torch from '../../src/torch/index.js';
import type { Tensor } from '../../src/torch/index.js';
import * as nn from '../../src/nn/index.js';
import * as optim from '../../src/optim/index.js';
import { DataLoader, ImageFolder } from '../../src/data/index.js';
import { generateLatents } from '../../src/diffusion/index.js';
import { loadCheckpoint, NonFiniteCheckpointError } from '../../src/train/index.js';
import { parseMetrics, saveImageGrid, encodePng } from '../../src/runlog/index.js';
import { trainGenerator, loadGenerator, runName, buildGenerator, type GeneratorSpec } from '../../src/train/sit.js';
import { sampleImages, SAMPLING_SETTINGS } from '../../src/sampling/sample.js';
import { tinyVae } from '../helpers.js';
import { NpzFile } from '../../src/io/index.js';
import { EncodedImages } from '../../src/data/latents.js';
import { IDENTITY, fashionMnist, memorySource } from './latent-data.js';

const { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } = fs;
const F = nn.F;
/** Where tests leave pictures to look at (ignored by git). */
const OUTPUT = join(dirname(fileURLToPath(import.meta.url)), '../../tmp/test-output/train');
const SIDE = 16;
// One thread: on a loaded machine a second one mostly waits for the first.
torch.setNumThreads(1);

function tinySpec(overrides: Partial<GeneratorSpec['config']> = {}): GeneratorSpec {
  return {
    name: 'SiT-tiny', kind: 'SiT',
    config: {
      depth: 2, hiddenSize: 64, patchSize: 4, numHeads: 4, inputSize: SIDE, inChannels: 1, mlpRatio: 4,
      classDropoutProb: 0.1, numClasses: 10, learnSigma: true, ...overrides,
    },
  };
}

/** A linear softmax classifier of 16x16 images trained with Adam; returns its accuracy function. */
function trainClassifier(x: Tensor, y: Tensor): (images: Tensor, labels: Tensor) => number {
  torch.manualSeed(0);
  const linear = new nn.Linear(SIDE * SIDE, 10);
  const opt = new optim.Adam(linear.parameters(), { lr: 1e-2 });
  const features = x.flatten(1);
  for (let step = 0; step < 150; step++) {
    torch.scope(() => {
      const index = torch.randint(0, x.size(0), [256]);
      F.crossEntropy(linear.forward(features.indexSelect(0, index)), y.indexSelect(0, index)).backward();
      opt.step();
      opt.zeroGrad();
    });
  }
  return (images, labels) => torch.noGrad(() => torch.scope(() =>
    linear.forward(images.flatten(1)).argmax(1).eq(labels).float().mean().item()));
}

test('a small SiT trained on Fashion-MNIST lowers its loss, and its EMA samples are recognisably of their classes', async () => {
  const root = mkdtempSync(join(tmpdir(), 'reals-sit-'));
  const train = fashionMnist(true, 8000);
  const result = await trainGenerator({
    spec: tinySpec(), data: memorySource(train.x, train.y, 64), resultsDir: root, lr: 3e-3, emaDecay: 0.98,
    maxSteps: 300, logEvery: 50, ckptEvery: 100_000, log: () => {}, progressStream: new PassThrough(),
  });
  assert.match(result.runDir, /000-SiT-tiny-Linear-velocity-None$/);
  const losses = parseMetrics(readFileSync(join(result.runDir, 'metrics.jsonl'), 'utf8')).map((r) => r.values.loss!);
  assert.ok(losses.at(-1)! < 0.75 * losses[0]!, `loss ${losses[0]} -> ${losses.at(-1)}`);

  const labels = torch.arange(0, 100).remainder(10);
  const samples = generateLatents({
    model: result.ema, labels, shape: [1, SIDE, SIDE], seed: 0, method: 'ode', steps: 30, cfgScale: 2, cfgChannels: 'all', ode: { samplingMethod: 'euler' },
  }).clamp(-1, 1);
  mkdirSync(OUTPUT, { recursive: true });
  await saveImageGrid(join(OUTPUT, 'sit-fashion-mnist-samples.png'), samples, { nrow: 10 });

  const accuracy = trainClassifier(train.x, train.y);
  const test = fashionMnist(false, 1000);
  const real = accuracy(test.x, test.y);
  const generated = accuracy(samples, labels);
  console.log(`classifier accuracy: real ${real.toFixed(3)}, samples ${generated.toFixed(3)} (chance 0.1); losses ${losses.map((l) => l.toFixed(3))}`);
  assert.ok(real > 0.7, `the classifier reaches ${real} on real test images`);
  assert.ok(generated > 0.35, `samples are classified as their labels ${generated} of the time (chance 0.1)`);
  rmSync(root, { recursive: true });
});

test('resuming from a checkpoint continues with the losses and weights of an uninterrupted run', async () => {
  const train = fashionMnist(true, 256);
  const spec = tinySpec({ hiddenSize: 16, numHeads: 2, depth: 1 });
  const quiet = { log: () => {}, progressStream: new PassThrough() };
  const run = (resultsDir: string, maxSteps: number, resume?: string) => trainGenerator({
    spec, data: memorySource(train.x, train.y, 32), resultsDir, resume, lr: 1e-3, maxSteps, logEvery: 1, ckptEvery: 5, ...quiet,
  });
  const root = mkdtempSync(join(tmpdir(), 'reals-sit-resume-'));
  const whole = await run(join(root, 'a'), 10); // crosses an epoch (8 batches)
  const first = await run(join(root, 'b'), 5);
  const resumed = await run(join(root, 'b'), 10, first.runDir);
  assert.equal(resumed.runDir, first.runDir);
  const loss = (dir: string) => parseMetrics(readFileSync(join(dir, 'metrics.jsonl'), 'utf8')).map((r) => [r.step, r.values.loss]);
  assert.deepEqual(loss(resumed.runDir), loss(whole.runDir));
  const [a, b] = [loadCheckpoint(whole.checkpoint!), loadCheckpoint(resumed.checkpoint!)];
  for (const [key, t] of Object.entries(a.groups.ema!)) assert.deepEqual(b.groups.ema![key]!.toArray(), t.toArray(), key);
  assert.equal(b.metadata.step, 10);
  assert.deepEqual((b.metadata as Record<string, unknown>).generator, spec);

  // The checkpoint rebuilds the network by itself; asking for another model is an error before anything runs.
  const loaded = loadGenerator(resumed.checkpoint!, { spec });
  assert.deepEqual(loaded.normalization, IDENTITY);
  assert.equal(loaded.model.training, false);
  assert.throws(() => loadGenerator(resumed.checkpoint!, { spec: { ...spec, name: 'SiT-S/2' } }), /holds a SiT SiT-tiny, not the SiT SiT-S\/2 asked for/);
  await assert.rejects(run(join(root, 'c'), 10, join(root, 'c-missing')), /--resume .*c-missing: no such file or folder/);
  await assert.rejects(
    trainGenerator({ spec: tinySpec({ hiddenSize: 32 }), data: memorySource(train.x, train.y, 32), resultsDir: root, resume: first.runDir, ...quiet }),
    /resume from .*: it trains .*"hiddenSize":16.*this run .*"hiddenSize":32/,
  );
  assert.equal(runName({ ...spec, kind: 'DiT', name: 'DiT-S/2' }, { pathType: 'Linear', prediction: 'velocity', lossWeight: null, trainEps: 0, sampleEps: 0 }), 'DiT-S/2');
  rmSync(root, { recursive: true });
});

test('resuming after a batch the loader left out (every image unreadable) continues with the losses of an uninterrupted run', async () => {
  const root = mkdtempSync(join(tmpdir(), 'reals-sit-skip-'));
  // 12 images of 8x8 in batches of 2, unshuffled: batch 1 (items 2 and 3) is two zero-byte PNGs.
  torch.manualSeed(1);
  for (const c of ['class_a', 'class_b']) mkdirSync(join(root, 'images', c), { recursive: true });
  for (let i = 0; i < 12; i++) {
    const path = join(root, 'images', i < 6 ? 'class_a' : 'class_b', `${i}.png`);
    writeFileSync(path, i === 2 || i === 3 ? '' : await encodePng(torch.randint(0, 256, [8, 8, 3], { dtype: 'uint8' })));
  }
  const vae = tinyVae(1);
  const spec = tinySpec({ hiddenSize: 16, numHeads: 2, depth: 1, inputSize: 4, numClasses: 2 });
  const quiet = { log: () => {}, progressStream: new PassThrough() };
  const warnings = mock.method(process, 'emitWarning', () => {});
  try {
    const run = (resultsDir: string, maxSteps: number, resume?: string) => trainGenerator({
      spec, resultsDir, resume, lr: 1e-3, maxSteps, logEvery: 1, ckptEvery: 3, ...quiet,
      data: new EncodedImages(new DataLoader(new ImageFolder(join(root, 'images'), { resolution: 8 }), { batchSize: 2, shuffle: false, numWorkers: 0 }), vae, IDENTITY),
    });
    const whole = await run(join(root, 'a'), 8); // 5 steps an epoch: crosses into the second
    const first = await run(join(root, 'b'), 3);
    const resumed = await run(join(root, 'b'), 8, first.runDir);
    const loss = (dir: string) => parseMetrics(readFileSync(join(dir, 'metrics.jsonl'), 'utf8')).map((r) => [r.step, r.values.loss]);
    assert.equal(loss(whole.runDir).length, 8);
    assert.deepEqual(loss(resumed.runDir), loss(whole.runDir));
    // The position saved is the next batch to read in the epoch, counting the one left out: items 8 and 9.
    assert.equal(loadCheckpoint(join(first.runDir, 'checkpoints', '0000003.safetensors')).metadata.batch, 4);
  } finally {
    warnings.mock.restore();
  }
  rmSync(root, { recursive: true });
});

test('resuming from an older checkpoint moves the abandoned later ones aside, a run folder resumes through last, a live run is locked, another batch layout is refused', async () => {
  const train = fashionMnist(true, 256);
  const spec = tinySpec({ hiddenSize: 16, numHeads: 2, depth: 1 });
  const notes: string[] = [];
  const run = (resultsDir: string, maxSteps: number, resume?: string, batchSize = 32) => trainGenerator({
    spec, data: memorySource(train.x, train.y, batchSize), resultsDir, resume, lr: 1e-3, maxSteps, logEvery: 1, ckptEvery: 2,
    log: (line) => notes.push(line), progressStream: new PassThrough(),
  });
  const root = mkdtempSync(join(tmpdir(), 'reals-sit-timeline-'));
  const whole = await run(join(root, 'a'), 6);
  const first = await run(join(root, 'b'), 6);
  const checkpoints = join(first.runDir, 'checkpoints');
  await run(join(root, 'b'), 4, join(checkpoints, '0000002.safetensors'));
  assert.deepEqual(readdirSync(checkpoints).sort(), ['0000002.safetensors', '0000004.safetensors', 'abandoned-after-0000002', 'last.safetensors']);
  assert.deepEqual(readdirSync(join(checkpoints, 'abandoned-after-0000002')).sort(), ['0000004.safetensors', '0000006.safetensors']);
  assert.ok(notes.some((line) => /^note: resuming from step 2: the later checkpoints of the abandoned run are moved to .*abandoned-after-0000002$/.test(line)), notes.join('\n'));
  // The folder resumes from the checkpoint saved last (step 4 of this timeline), not the abandoned step 6.
  const resumed = await run(join(root, 'b'), 6, first.runDir);
  assert.ok(notes.some((line) => line.startsWith(`resuming ${join(checkpoints, '0000004.safetensors')} at step 4`)), notes.join('\n'));
  const loss = (dir: string) => parseMetrics(readFileSync(join(dir, 'metrics.jsonl'), 'utf8')).map((r) => [r.step, r.values.loss]);
  assert.deepEqual(loss(resumed.runDir), loss(whole.runDir), 'one timeline: steps 1..6 once each, as the uninterrupted run');

  // A lock held by a live process refuses a second trainer; one of a process that is gone is taken over.
  assert.ok(!existsSync(join(first.runDir, 'run.lock')), 'released when the run ends');
  const holder = spawn('sleep', ['30']);
  try {
    writeFileSync(join(first.runDir, 'run.lock'), JSON.stringify({ pid: holder.pid, host: hostname(), started: '' }));
    await assert.rejects(run(join(root, 'b'), 8, first.runDir), new RegExp(`is in use by a running trainer, process ${holder.pid} \\(.*run\\.lock\\)`));
    assert.equal(loss(first.runDir).length, 6, 'the refused run changed nothing');
  } finally {
    holder.kill();
    await new Promise((resolve) => holder.once('exit', resolve));
  }
  await run(join(root, 'b'), 7, first.runDir);
  assert.ok(notes.some((line) => line.includes(`taking over the lock of process ${holder.pid}, which is no longer running`)), notes.join('\n'));

  await assert.rejects(run(join(root, 'b'), 9, first.runDir, 16),
    /resume from .*0000007\.safetensors: it was trained on 1 rank x 32 = global batch 32, this run is 1 rank x 16 = global batch 16; .*--global-batch-size on 1 rank/);
  rmSync(root, { recursive: true });
});

test('--lr given on resume replaces the checkpoint\'s with a note, and the checkpoint records the value that ran', async () => {
  const train = fashionMnist(true, 64);
  const spec = tinySpec({ hiddenSize: 16, numHeads: 2, depth: 1 });
  const notes: string[] = [];
  const run = (resultsDir: string, maxSteps: number, extra: { resume?: string; lr?: number }) => trainGenerator({
    spec, data: memorySource(train.x, train.y, 32), resultsDir, maxSteps, logEvery: 1, ckptEvery: 2,
    log: (line) => notes.push(line), progressStream: new PassThrough(), args: { lr: 'as given' }, ...extra,
  });
  const root = mkdtempSync(join(tmpdir(), 'reals-sit-lr-'));
  const first = await run(root, 2, { lr: 1e-3 });
  const resumed = await run(root, 3, { resume: first.runDir, lr: 3e-3 });
  assert.ok(notes.includes('note: resuming with lr 0.003 for the optimizer, where the checkpoint\'s was 0.001'), notes.join('\n'));
  const meta = loadCheckpoint(resumed.checkpoint!).metadata as Record<string, unknown> & { args: Record<string, unknown> };
  assert.deepEqual((meta.optimizer as { param_groups: { lr: number }[] }).param_groups.map((g) => g.lr), [3e-3]);
  assert.deepEqual([meta.args.lr, meta.args.weightDecay, meta.args.emaDecay], [3e-3, 0, 0.9999]);
  rmSync(root, { recursive: true });
});

test('a step that leaves a weight non-finite while its loss is finite writes no checkpoint and stops the run', async () => {
  const train = fashionMnist(true, 128);
  const spec = tinySpec({ hiddenSize: 16, numHeads: 2, depth: 1 });
  const root = mkdtempSync(join(tmpdir(), 'reals-sit-overflow-'));
  // As an infinite gradient would (a finite loss, then an update that overflows): the third step leaves one weight at +inf.
  const step = optim.AdamW.prototype.step;
  let steps = 0;
  const poisoned = mock.method(optim.AdamW.prototype, 'step', function (this: optim.AdamW) {
    step.call(this);
    if (++steps === 3) torch.noGrad(() => this.paramGroups[0]!.params[0]!.view(-1).narrow(0, 0, 1).fill_(Infinity));
  });
  try {
    await assert.rejects(
      trainGenerator({
        spec, data: memorySource(train.x, train.y, 32), resultsDir: root, lr: 1e-3, maxSteps: 4, ckptEvery: 1, logEvery: 1,
        log: () => {}, progressStream: new PassThrough(),
      }),
      (e: unknown) => e instanceof NonFiniteCheckpointError && e.step === 3 && /^model\./.test(e.tensor) &&
        /not written, stopping; the last good checkpoint is \/.*\/checkpoints\/0000002\.safetensors$/.test(e.message),
    );
  } finally {
    poisoned.mock.restore();
  }
  const runDir = join(root, readdirSync(root)[0]!);
  const checkpoints = join(runDir, 'checkpoints');
  assert.deepEqual(readdirSync(checkpoints).sort(), ['0000001.safetensors', '0000002.safetensors', 'last.safetensors'], 'nothing for step 3');
  const records = parseMetrics(readFileSync(join(runDir, 'metrics.jsonl'), 'utf8'));
  assert.ok(Number.isFinite(records.find((r) => r.step === 3)!.values.loss), 'the loss of step 3 was finite');
  const last = loadCheckpoint(join(checkpoints, 'last.safetensors'));
  assert.equal(last.metadata.step, 2);
  rmSync(root, { recursive: true });
});

test('DiT trains on the DDPM loss (MSE + VB of the learned variance) in a run folder named after the model', async () => {
  const train = fashionMnist(true, 64);
  const spec: GeneratorSpec = { ...tinySpec({ hiddenSize: 16, numHeads: 2, depth: 1 }), name: 'DiT-tiny', kind: 'DiT' };
  const root = mkdtempSync(join(tmpdir(), 'reals-dit-'));
  const result = await trainGenerator({
    spec, data: memorySource(train.x, train.y, 16), resultsDir: root, maxSteps: 3, logEvery: 1, log: () => {}, progressStream: new PassThrough(),
  });
  assert.match(result.runDir, /000-DiT-tiny$/);
  assert.equal(result.model.constructor.name, 'DiT');
  const losses = parseMetrics(readFileSync(join(result.runDir, 'metrics.jsonl'), 'utf8')).map((r) => r.values.loss!);
  assert.equal(losses.length, 3);
  // At the adaLN-Zero init the network outputs 0: the MSE to unit noise is about 1, plus the VB term.
  assert.ok(losses.every((l) => Number.isFinite(l) && l > 0.8), `losses ${losses}`);
  rmSync(root, { recursive: true });
});

test('a sample folder continues only with the settings its PNGs were drawn with; a PNG is never left half-written under its name, nor black for NaN', async () => {
  const root = mkdtempSync(join(tmpdir(), 'reals-sample-dir-'));
  const vae = tinyVae(1);
  const model = buildGenerator(tinySpec({ hiddenSize: 16, numHeads: 2, depth: 1, inputSize: 4 })).eval();
  const options = {
    model, vae, normalization: IDENTITY, method: 'ode' as const, steps: 3, ode: { samplingMethod: 'euler' as const }, batchSize: 2, seed: 0,
    log: () => {}, progressStream: new PassThrough(),
  };
  const arr0 = (npz: string): number[] => {
    const file = NpzFile.open(npz);
    try {
      return Array.from(file.get('arr_0').toArray() as Uint8Array);
    } finally {
      file.close();
    }
  };
  const whole = await sampleImages({ ...options, numSamples: 5, sampleDir: join(root, 'whole') });
  assert.deepEqual(readdirSync(whole.sampleDir).sort(), ['000000.png', '000001.png', '000002.png', '000003.png', '000004.png', '000005.png', SAMPLING_SETTINGS]);

  // The write of sample 3 fails as a crash would (after the PNG's bytes, before its rename): no 000003.png, and the rerun completes the folder.
  const dir = join(root, 'cut');
  const rename = fs.renameSync;
  const crash = mock.method(fs, 'renameSync', (from: fs.PathLike, to: fs.PathLike) => {
    if (String(to).endsWith('000003.png')) throw new Error('simulated crash');
    rename(from, to);
  });
  syncBuiltinESMExports();
  try {
    await assert.rejects(sampleImages({ ...options, numSamples: 5, sampleDir: dir }), /simulated crash/);
  } finally {
    crash.mock.restore();
    syncBuiltinESMExports();
  }
  assert.deepEqual(readdirSync(dir).filter((n) => n.endsWith('.png')).sort(), ['000000.png', '000001.png', '000002.png']);
  const kept = statSync(join(dir, '000000.png')).mtimeMs;
  const resumed = await sampleImages({ ...options, numSamples: 5, sampleDir: dir });
  assert.deepEqual(arr0(resumed.npz!), arr0(whole.npz!), 'the continued folder gives the uninterrupted samples');
  assert.equal(statSync(join(dir, '000000.png')).mtimeMs, kept, 'finished batches are not redrawn');

  // Other settings (another seed, guidance interval, generator) are refused, naming what differs; more samples extend the folder.
  await assert.rejects(sampleImages({ ...options, seed: 1, numSamples: 5, sampleDir: dir }), (e: Error) =>
    e.message === `${dir}: its samples were drawn with other settings (seed: 0 there, 1 now); use another sample folder, or delete this one`);
  await assert.rejects(sampleImages({ ...options, cfgScale: 2, guidanceHigh: 0.7, numSamples: 5, sampleDir: dir }),
    /other settings \(cfgScale: unset there, 2 now; guidanceHigh: unset there, 0\.7 now\)/);
  const retrained = buildGenerator(tinySpec({ hiddenSize: 16, numHeads: 2, depth: 1, inputSize: 4 })).eval();
  await assert.rejects(sampleImages({ ...options, model: retrained, numSamples: 5, sampleDir: dir }), /other settings \(model: "[0-9a-f]{64}" there, "[0-9a-f]{64}" now\)/);
  const more = await sampleImages({ ...options, numSamples: 8, sampleDir: dir });
  assert.equal(more.numSamples, 8);
  // A generator whose output is NaN gives an error, not black PNGs.
  const broken = buildGenerator(tinySpec({ hiddenSize: 16, numHeads: 2, depth: 1, inputSize: 4 })).eval();
  torch.noGrad(() => broken.stateDict().get('final_layer.linear.bias')!.fill_(NaN));
  await assert.rejects(sampleImages({ ...options, model: broken, numSamples: 3, sampleDir: join(root, 'nan') }), (e: Error) =>
    e.message === `${join(root, 'nan')}: samples 0, 1 (batch 0, seed 0) decoded to NaN or infinite values: the generator (--ckpt) or the VAE (--vae-path) is broken ` +
      '(a diverged checkpoint?); no PNG written for the batch');
  assert.deepEqual(readdirSync(join(root, 'nan')), [SAMPLING_SETTINGS]);
  // PNGs from elsewhere, with no record of how they were drawn, are not taken as samples.
  const foreign = join(root, 'foreign');
  mkdirSync(foreign);
  writeFileSync(join(foreign, '000000.png'), readFileSync(join(dir, '000000.png')));
  await assert.rejects(sampleImages({ ...options, numSamples: 2, sampleDir: foreign }), /foreign: it holds samples \(000000\.png, \.\.\.\) but no sampling\.json/);
  assert.equal(existsSync(join(foreign, SAMPLING_SETTINGS)), false);
  rmSync(root, { recursive: true });
});

test('a sample folder starts by removing the temporaries of killed runs (PNGs, .npz, grid), not those of live processes', async () => {
  const root = mkdtempSync(join(tmpdir(), 'reals-sample-tmp-'));
  const vae = tinyVae(1);
  const model = buildGenerator(tinySpec({ hiddenSize: 16, numHeads: 2, depth: 1, inputSize: 4 })).eval();
  const dead = spawn('true');
  await new Promise((resolve) => dead.once('exit', resolve));
  const sampleDir = join(root, 'samples');
  mkdirSync(sampleDir);
  const stale = [join(sampleDir, `000000.png.tmp-${dead.pid}`), `${sampleDir}.npz.tmp-${dead.pid}`, `${sampleDir}.png.tmp-${dead.pid}`];
  const running = spawn('sleep', ['30']);
  const live = [join(sampleDir, `000001.png.tmp-${running.pid}`), join(root, `other.npz.tmp-${dead.pid}`)];
  for (const path of [...stale, ...live]) writeFileSync(path, 'partial');
  const notes: string[] = [];
  await sampleImages({
    model, vae, normalization: IDENTITY, method: 'ode', steps: 3, ode: { samplingMethod: 'euler' }, batchSize: 2, seed: 0,
    numSamples: 2, sampleDir, log: (line) => notes.push(line), progressStream: new PassThrough(),
  });
  for (const path of stale) assert.ok(!existsSync(path), `${path} removed`);
  for (const path of live) assert.ok(existsSync(path), `${path} kept (a live process's, or another folder's)`);
  running.kill();
  assert.ok(notes.some((line) => line.startsWith('note: removed 3 temporary file(s) of an interrupted run')), notes.join('\n'));
  rmSync(root, { recursive: true });
});
