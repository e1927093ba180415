import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, realpathSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as torch from '../../src/torch/index.js';
import type { Tensor } from '../../src/torch/index.js';
import { AutoencoderKL } from '../../src/models/autoencoder-kl.js';
import { DINOV2_CONFIGS, DinoVisionTransformer } from '../../src/models/dinov2.js';
import { AlignmentHeads } from '../../src/models/alignment.js';
import { NLayerDiscriminator } from '../../src/models/discriminator.js';
import { DataLoader, FashionMNIST, ImageFolder, type InMemoryDataset } from '../../src/data/index.js';
import { FIXTURES } from '../helpers.js';
import { loadCheckpoint, NonFiniteLossError } from '../../src/train/index.js';
import { parseMetrics } from '../../src/runlog/index.js';
import { trainAlignment, type AlignTrainOptions, type BatchSource } from '../../src/train/align.js';

const fashion = new FashionMNIST({ train: false, channels: 3 });

/** The first `n` Fashion-MNIST test images (32x32, grey replicated to RGB). */
function subset(n: number): InMemoryDataset {
  return { length: n, itemShape: fashion.itemShape, image: (i) => fashion.image(i), label: (i) => fashion.label(i) };
}

/**
 * A VAE with 3 blocks (latents 4 x 8 x 8 for 32 px images), a random DINOv2 teacher whose 112 px
 * input gives 8 x 8 tokens of width 32, small heads and a small discriminator, drawn after `seed`.
 */
function tinyModels(seed: number): Pick<AlignTrainOptions, 'vae' | 'dino' | 'dinoInputSize' | 'heads' | 'discriminator' | 'lpips' | 'lpipsWeight'> {
  torch.manualSeed(seed);
  return {
    vae: new AutoencoderKL({
      blockOutChannels: [16, 32, 32], downBlockTypes: Array(3).fill('DownEncoderBlock2D'), upBlockTypes: Array(3).fill('UpDecoderBlock2D'),
      normNumGroups: 8, latentChannels: 4,
    }),
    dino: new DinoVisionTransformer({ ...DINOV2_CONFIGS.dinov2_vits14!, imgSize: 112, embedDim: 32, depth: 2, numHeads: 2 }),
    dinoInputSize: 112,
    heads: new AlignmentHeads({ latentChannels: 4, featureDim: 32, hiddenDim: 64 }),
    discriminator: new NLayerDiscriminator({ ndf: 8, nLayers: 2 }),
    lpips: null,
    lpipsWeight: 0,
  };
}

function tempDir(): string { return realpathSync(mkdtempSync(join(tmpdir(), 'reals-align-'))); }

const quiet = { log: () => {}, progressStream: { write: () => true, isTTY: false } as unknown as NodeJS.WritableStream };

function metricsOf(runDir: string): { step: number; values: Record<string, number> }[] {
  return parseMetrics(readFileSync(join(runDir, 'metrics.jsonl'), 'utf8')).map(({ step, values }) => ({ step, values }));
}

const mean = (values: number[]): number => values.reduce((a, b) => a + b, 0) / values.length;

test('a short Fashion-MNIST run with tiny models: reconstruction falls, patch and CLS cosines rise, the GAN starts at discStart', async () => {
  const dir = tempDir();
  const data = new DataLoader(fashion, { batchSize: 8, seed: 0 });
  const steps = 30;
  const result = await trainAlignment({
    ...tinyModels(0), data, resultsDir: dir, maxEpoch: 1, maxSteps: steps, lr: 1e-3, discStart: 20, logEvery: 1, imageEvery: 10, ckptEvery: 100, ...quiet,
  });
  assert.equal(result.step, steps);
  const records = metricsOf(result.runDir);
  assert.deepEqual(records.map((r) => r.step), Array.from({ length: steps }, (_, i) => i + 1));
  const series = (name: string) => records.map((r) => r.values[name]!);
  const [rec, patch, cls, dLoss] = [series('rec'), series('patch_cos'), series('cls_cos'), series('d_loss')];
  assert.ok(mean(rec.slice(-5)) < 0.5 * mean(rec.slice(0, 3)), `reconstruction fell: ${rec.map((v) => v.toFixed(3))}`);
  assert.ok(mean(patch.slice(-5)) > patch[0]! + 0.3, `patch cosine rose well above step 1's: ${patch.map((v) => v.toFixed(3))}`);
  assert.ok(mean(cls.slice(-5)) > cls[0]! + 0.2, `CLS cosine rose well above step 1's: ${cls.map((v) => v.toFixed(3))}`);
  assert.ok(dLoss.slice(0, 20).every((v) => v === 0) && dLoss.slice(20).every((v) => v > 0), 'the discriminator trains from step 20 on');
  assert.ok(series('d_weight').slice(20).every((v) => v > 0), 'the adaptive GAN weight is positive');

  // The final checkpoint holds every group; the TensorBoard file got scalars and images.
  const checkpoint = loadCheckpoint(result.checkpoint!);
  assert.equal(checkpoint.metadata.step, steps);
  assert.deepEqual(Object.keys(checkpoint.groups).sort(), ['disc', 'ema', 'model', 'opt', 'opt_disc']);
  for (const key of ['encoder.conv_in.weight', 'decoder.conv_out.weight', 'mlp_patch.0.weight', 'mlp_cls.4.bias']) {
    assert.ok(checkpoint.groups.model![key] && checkpoint.groups.ema![key], `model.${key} and ema.${key}`);
  }
  const events = readdirSync(result.runDir).filter((name) => name.startsWith('events.out.tfevents.'));
  assert.equal(events.length, 1);
  assert.ok(readFileSync(join(result.runDir, events[0]!)).includes('train/reconstructions'), 'reconstruction images logged');
  // Beside TensorBoard: the same images as PNGs, the run's flags and its log.
  assert.deepEqual(readdirSync(join(result.runDir, 'reconstructions')), ['0000010.png', '0000020.png', '0000030.png']);
  assert.deepEqual([...readFileSync(join(result.runDir, 'reconstructions', '0000010.png')).subarray(1, 4)], [...Buffer.from('PNG')]);
  const args = JSON.parse(readFileSync(join(result.runDir, 'args.json'), 'utf8'));
  assert.equal(args.lr, 1e-3, 'the settings that ran');
  assert.equal(args.lr, (checkpoint.metadata.args as Record<string, unknown>).lr);
  assert.match(readFileSync(join(result.runDir, 'log.txt'), 'utf8'), /^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] /m);
  await data.close();
  rmSync(dir, { recursive: true, force: true });
});

test('a short run on a folder of real photographs (JPEG and PNG, ImageFolder + ADM crop + worker decoding): reconstruction falls, cosines rise', async () => {
  const dir = tempDir();
  const root = join(dir, 'photos');
  // Class folders as ImageNet's train/<wnid>/: real photographs committed for the data tests.
  const classes: Record<string, string[]> = {
    cat: ['cat_301x217.jpg', 'cat_cmyk_45x33.jpg'],
    coffee: ['coffee_103x157.png', 'coffee_52x40.png'],
    rocket: ['rocket_217x389.jpg', 'camera_75x61.png'],
  };
  for (const [name, files] of Object.entries(classes)) {
    mkdirSync(join(root, name), { recursive: true });
    for (const file of files) copyFileSync(join(FIXTURES, 'data', file), join(root, name, file));
  }
  const data = new DataLoader(new ImageFolder(root, { resolution: 32 }), { batchSize: 6, seed: 0, numWorkers: 1 });
  const steps = 25;
  const result = await trainAlignment({
    ...tinyModels(0), data, resultsDir: dir, maxEpoch: steps, maxSteps: steps, lr: 1e-3, discStart: 1000, logEvery: 1, imageEvery: 100, ckptEvery: 100, ...quiet,
  });
  assert.equal(result.step, steps);
  const records = metricsOf(result.runDir);
  const series = (name: string) => records.map((r) => r.values[name]!);
  const [rec, patch, cls] = [series('rec'), series('patch_cos'), series('cls_cos')];
  assert.ok(mean(rec.slice(-5)) < 0.6 * mean(rec.slice(0, 3)), `reconstruction fell: ${rec.map((v) => v.toFixed(3))}`);
  assert.ok(mean(patch.slice(-5)) > patch[0]! + 0.2, `patch cosine rose: ${patch.map((v) => v.toFixed(3))}`);
  assert.ok(mean(cls.slice(-5)) > cls[0]! + 0.2, `CLS cosine rose: ${cls.map((v) => v.toFixed(3))}`);
  await data.close();
  rmSync(dir, { recursive: true, force: true });
});

test('stopping at step 3 and resuming gives exactly the losses and weights of an uninterrupted run, across an epoch boundary', async () => {
  const dir = tempDir();
  // 32 images in batches of 8: 4 batches per epoch, so steps 5 and 6 come from epoch 1.
  const run = (seed: number, options: Partial<AlignTrainOptions>) => trainAlignment({
    ...tinyModels(seed), data: new DataLoader(subset(32), { batchSize: 8, seed: 3 }), resultsDir: dir, maxEpoch: 10,
    lr: 1e-3, discStart: 2, logEvery: 1, ckptEvery: 3, imageEvery: 100, ...quiet, ...options,
  });
  const whole = await run(0, { maxSteps: 6 });
  const first = await run(0, { maxSteps: 3 });
  assert.equal(first.step, 3);
  // Other initial weights: everything trained must come from the checkpoint (the frozen teacher comes from its own file).
  const resumed = await run(1, { maxSteps: 6, resume: first.runDir, dino: tinyModels(0).dino });
  assert.equal(resumed.runDir, first.runDir);
  assert.equal(resumed.step, 6);

  const wholeMetrics = metricsOf(whole.runDir);
  assert.equal(wholeMetrics.length, 6);
  assert.deepEqual(metricsOf(resumed.runDir), wholeMetrics, 'metrics.jsonl (every loss at every step) is identical');
  const a = loadCheckpoint(whole.checkpoint!);
  const b = loadCheckpoint(resumed.checkpoint!);
  assert.equal(b.metadata.epoch, 1);
  for (const group of ['model', 'ema', 'opt', 'disc', 'opt_disc']) {
    const keys = Object.keys(a.groups[group]!);
    assert.deepEqual(Object.keys(b.groups[group]!), keys, group);
    for (const key of keys) assert.ok(a.groups[group]![key]!.eq(b.groups[group]![key]!).all().item(), `${group}.${key} differs`);
  }
  rmSync(dir, { recursive: true, force: true });
});

test('--lr and --ema-decay given on resume replace the checkpoint\'s (with a note) and the metadata records them; not given, the checkpoint\'s go on', async () => {
  const dir = tempDir();
  const notes: string[] = [];
  const run = (options: Partial<AlignTrainOptions>) => trainAlignment({
    ...tinyModels(0), data: new DataLoader(subset(16), { batchSize: 8, seed: 3 }), resultsDir: dir, maxEpoch: 10,
    discStart: 0, logEvery: 1, ckptEvery: 2, imageEvery: 100, ...quiet, log: (line) => notes.push(line), ...options,
  });
  const first = await run({ maxSteps: 2, lr: 1e-3 });
  const lrOf = (optimizer: unknown) => (optimizer as { param_groups: { lr: number }[] }).param_groups.map((g) => g.lr);
  const changed = await run({ maxSteps: 3, resume: first.runDir, lr: 2e-3, emaDecay: 0.9 });
  for (const line of ['note: resuming with lr 0.002 for the optimizer, where the checkpoint\'s was 0.001',
    'note: resuming with lr 0.002 for the discriminator\'s optimizer, where the checkpoint\'s was 0.001', 'note: resuming with EMA decay 0.9, where the checkpoint\'s was 0.9999']) {
    assert.ok(notes.includes(line), `${line}\n${notes.join('\n')}`);
  }
  let meta = loadCheckpoint(changed.checkpoint!).metadata as Record<string, unknown> & { args: Record<string, unknown> };
  assert.deepEqual([lrOf(meta.optimizer), lrOf(meta.optimizer_disc), meta.args.lr, meta.ema_decay, meta.args.emaDecay], [[2e-3], [2e-3], 2e-3, 0.9, 0.9]);
  notes.length = 0;
  const kept = await run({ maxSteps: 4, resume: first.runDir });
  assert.ok(!notes.some((line) => line.includes('resuming with')), notes.join('\n'));
  meta = loadCheckpoint(kept.checkpoint!).metadata as typeof meta;
  assert.deepEqual([lrOf(meta.optimizer), meta.args.lr, meta.ema_decay], [[2e-3], 2e-3, 0.9], 'the checkpoint\'s settings went on');
  rmSync(dir, { recursive: true, force: true });
});

test('a NaN loss stops the run with a message naming the step, keeping the last good checkpoint', async () => {
  const dir = tempDir();
  const loader = new DataLoader(subset(64), { batchSize: 8, seed: 0 });
  // The fifth batch is poisoned.
  const data: BatchSource = {
    batchSize: loader.batchSize,
    length: loader.length,
    async *iterate(epoch: number, startBatch: number) {
      for await (const batch of loader.iterate(epoch, startBatch)) {
        yield { images: batch.batchIndex === 4 ? batch.images.clone().fill_(NaN) : batch.images, batchIndex: batch.batchIndex };
      }
    },
  };
  await assert.rejects(
    trainAlignment({ ...tinyModels(0), data, resultsDir: dir, maxEpoch: 1, lr: 1e-3, ckptEvery: 2, logEvery: 1, discStart: 0, ...quiet }),
    (error: unknown) => error instanceof NonFiniteLossError && error.step === 5 && /is NaN at step 5: stopping; the last good checkpoint is \/.*\/000-align\/checkpoints\/0000004\.safetensors$/.test(error.message),
  );
  const runDir = join(dir, '000-align');
  const names = readdirSync(join(runDir, 'checkpoints')).sort();
  assert.deepEqual(names.filter((n) => /^\d+\.safetensors$/.test(n)), ['0000002.safetensors', '0000004.safetensors']);
  const last = loadCheckpoint(join(runDir, 'checkpoints', 'last.safetensors'));
  assert.equal(last.metadata.step, 4);
  for (const [key, t] of Object.entries(last.groups.model!)) assert.ok((t as Tensor).isfinite().all().item(), `model.${key} is finite`);
  assert.deepEqual(metricsOf(runDir).map((r) => r.step), [1, 2, 3, 4], 'no record for the failed step');
  rmSync(dir, { recursive: true, force: true });
});

test('inconsistent settings are refused before training, naming the problem', async () => {
  const dir = tempDir();
  const data = new DataLoader(subset(8), { batchSize: 8 });
  const base = { data, resultsDir: dir, maxEpoch: 1, ...quiet };
  await assert.rejects(trainAlignment({ ...tinyModels(0), dinoInputSize: 100, ...base }), { message: '--dino-input-size 100 is not divisible by the teacher\'s patch size 14' });
  await assert.rejects(trainAlignment({ ...tinyModels(0), lpipsWeight: 1, ...base }), { message: '--lpips-weight 1 needs an LPIPS model (or set it to 0)' });
  await assert.rejects(trainAlignment({ ...tinyModels(0), heads: new AlignmentHeads({ latentChannels: 4, featureDim: 16 }), ...base }),
    /the heads predict 16-wide tokens, the DINOv2 model gives 32/);
  assert.equal(existsSync(join(dir, '000-align')), false, 'no run folder was created');
  rmSync(dir, { recursive: true, force: true });
});
