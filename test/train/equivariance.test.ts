import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as torch from '../../src/torch/index.js';
import type { Tensor } from '../../src/torch/index.js';
import * as nn from '../../src/nn/index.js';
import { saveSafetensors, writeJsonFileAtomic } from '../../src/io/index.js';
import { configToDiffusers } from '../../src/models/autoencoder-kl.js';
import { DINOV2_CONFIGS, DinoVisionTransformer } from '../../src/models/dinov2.js';
import { AlignmentHeads } from '../../src/models/alignment.js';
import { NLayerDiscriminator } from '../../src/models/discriminator.js';
import { DataLoader, FashionMNIST } from '../../src/data/index.js';
import { loadCheckpoint } from '../../src/train/index.js';
import { parseMetrics } from '../../src/runlog/index.js';
import { trainAlignment, type AlignTrainOptions } from '../../src/train/align.js';
import { loadAlignedModels } from '../../src/train/align-convert.js';
import { alignTrainCommand } from '../../src/cli/align.js';
import {
  drawEquivarianceTransform, equivarianceLoss, minScaledLatentSide, rot90, scaledLatentSide, transformImage, transformLatent, type EquivarianceTransform,
} from '../../src/train/equivariance.js';
import { assertCloseToScale, float32Tolerance, loadFixture, tinyVae } from '../helpers.js';

const F = nn.F;
const fx = loadFixture('train/equivariance.json');
const REALS = join(dirname(fileURLToPath(import.meta.url)), '../../bin/reals.js');

// float32 throughout, as the fixture, compared to the outputs' scale: bilinear resampling sums 4
// products; the term and its gradients add a transposed convolution over 4 channels and the loss's
// mean over the image's elements, three sums in sequence that other kernels may order otherwise.
// A wrong corner alignment, size or turn is off by 1e-2 or more.
const RESAMPLE_TOLERANCE = float32Tolerance(4);
const termTolerance = (image: Tensor) => float32Tolerance(image.numel(), 3);

interface FixtureCase {
  name: string; latent_size: [number, number]; factor: number; numerator: number; turns: number; min_side: number; loss: 'mse' | 'l1';
  z: Tensor; x: Tensor; weight: Tensor; bias: Tensor; scaled_size: [number, number]; z_t: Tensor; x_t: Tensor; term: Tensor; grad_z: Tensor; grad_weight: Tensor;
}

test('rot90 turns as torch.rot90(x, k, dims=[-1, -2]) for k = 0..3, on a non-square input', () => {
  (fx.rotations as Tensor[]).forEach((expected, k) => assert.ok(rot90(fx.rot_input, k).eq(expected).all().item(), `k = ${k}`));
});

test('the latent and image transforms equal PyTorch\'s interpolate + rot90, incl. the reference\'s scale_factor calls and the LPIPS floor', () => {
  for (const c of fx.cases as FixtureCase[]) {
    const size = c.latent_size.map((side) => scaledLatentSide(side, c.numerator, c.min_side));
    assert.deepEqual(size, c.scaled_size, c.name);
    const t: EquivarianceTransform = { latentSize: c.scaled_size, quarterTurns: c.turns };
    assertCloseToScale(transformLatent(c.z, t), c.z_t, RESAMPLE_TOLERANCE, `${c.name}: T(z)`);
    assertCloseToScale(transformImage(c.x, t, c.factor), c.x_t, RESAMPLE_TOLERANCE, `${c.name}: T(x)`);
  }
});

test('the term reconstruction(T(x), decode(T(z))) and its gradients w.r.t. the latent and the decoder equal PyTorch\'s', () => {
  for (const c of fx.cases as FixtureCase[]) {
    const z = c.z.clone().requiresGrad_(true);
    const weight = c.weight.clone().requiresGrad_(true);
    const term = equivarianceLoss({
      z, x: c.x, transform: { latentSize: c.scaled_size, quarterTurns: c.turns }, downsamplingFactor: c.factor,
      decode: (latent) => F.convTranspose2d(latent, weight, c.bias, { stride: c.factor }).tanh(),
      reconstructionTerms: (image, decoded) => (c.loss === 'mse' ? F.mseLoss(decoded, image) : F.l1Loss(decoded, image)),
    });
    const tolerance = termTolerance(c.x_t);
    assertCloseToScale(term, c.term, tolerance, `${c.name}: term`);
    const [gradZ, gradWeight] = torch.autograd.grad(term, [z, weight]);
    assertCloseToScale(gradZ!, c.grad_z, tolerance, `${c.name}: d/dz`);
    assertCloseToScale(gradWeight!, c.grad_weight, tolerance, `${c.name}: d/dweight`);
  }
});

test('the per-step draws equal PyTorch\'s torch.randint draws for the seed: numerator in 8..31, then quarter turns in 1..3', () => {
  torch.manualSeed(fx.draw_seed);
  for (const [numerator, turns] of fx.draws as [number, number][]) {
    const t = drawEquivarianceTransform([32, 64], { rotate: true, minSide: 1 });
    assert.deepEqual(t, { latentSize: [numerator, 2 * numerator], quarterTurns: turns });
  }
  // Without turns, only the numerator is drawn, and every one of 8..31 comes up.
  torch.manualSeed(0);
  const seen = new Set<number>();
  for (let i = 0; i < 500; i++) {
    const t = drawEquivarianceTransform([32, 32], { rotate: false, minSide: 1 });
    assert.equal(t.quarterTurns, 0);
    seen.add(t.latentSize[0]);
  }
  assert.deepEqual([...seen].sort((a, b) => a - b), Array.from({ length: 24 }, (_, i) => 8 + i));
});

test('a latent too small to downscale is refused with the sizes named', () => {
  assert.equal(minScaledLatentSide([8, 8], 4, true, 'eq'), 4, 'LPIPS\'s 16 px at f4');
  assert.equal(minScaledLatentSide([2, 3], 8, false, 'eq'), 1);
  assert.throws(() => minScaledLatentSide([4, 4], 4, true, 'trainAlignment: eqWeight'),
    /^Error: trainAlignment: eqWeight: a 4x4 latent leaves no room to downscale; LPIPS needs 16 px, 4 latent positions at 4x/);
  assert.throws(() => minScaledLatentSide([1, 5], 8, false, 'eq'), /a 1x5 latent leaves no room to downscale; use larger images/);
});

const fashion = new FashionMNIST({ train: false, channels: 3 });
const quiet = { log: () => {}, progressStream: { write: () => true, isTTY: false } as unknown as NodeJS.WritableStream };
const tempDir = (): string => realpathSync(mkdtempSync(join(tmpdir(), 'reals-eq-')));
const metricsOf = (runDir: string) => parseMetrics(readFileSync(join(runDir, 'metrics.jsonl'), 'utf8')).map(({ step, values }) => ({ step, values }));

/** helpers' tinyVae (16 x 16 latents for 32 px images), a teacher with 8 x 8 tokens of width 16, small heads and discriminator. */
function tinyModels(): Pick<AlignTrainOptions, 'vae' | 'dino' | 'dinoInputSize' | 'heads' | 'discriminator' | 'lpips' | 'lpipsWeight'> {
  const vae = tinyVae(4);
  torch.manualSeed(1);
  return {
    vae, dino: new DinoVisionTransformer({ ...DINOV2_CONFIGS.dinov2_vits14!, imgSize: 112, embedDim: 16, depth: 1, numHeads: 2 }), dinoInputSize: 112,
    heads: new AlignmentHeads({ latentChannels: 4, featureDim: 16, hiddenDim: 16 }), discriminator: new NLayerDiscriminator({ ndf: 8, nLayers: 1 }),
    lpips: null, lpipsWeight: 0,
  };
}

test('eqWeight 0 logs and trains as a run without it; eqWeight W adds W times the logged eq term and nothing else at step 1', async () => {
  const dir = tempDir();
  const run = async (options: Partial<AlignTrainOptions>) => {
    const result = await trainAlignment({
      ...tinyModels(), data: new DataLoader(fashion, { batchSize: 4, seed: 0 }), resultsDir: dir, maxEpoch: 1, maxSteps: 2, lr: 1e-3, logEvery: 1, ...quiet, ...options,
    });
    return { metrics: metricsOf(result.runDir), model: loadCheckpoint(result.checkpoint!).groups.model! };
  };
  const plain = await run({});
  const zero = await run({ eqWeight: 0 });
  assert.deepEqual(zero.metrics, plain.metrics, 'the same losses at every step, and no eq record');
  assert.ok(!('eq' in plain.metrics[0]!.values));
  for (const [key, t] of Object.entries(plain.model)) assert.ok(t.eq(zero.model[key]!).all().item(), `model.${key}`);

  const weight = 0.5;
  const eq = await run({ eqWeight: weight });
  const [base, withEq] = [plain.metrics[0]!.values, eq.metrics[0]!.values];
  assert.ok(withEq.eq! > 0, `eq ${withEq.eq}`);
  // The draw comes after the posterior sample: step 1 has the same latent, so every other term is the same.
  for (const name of ['rec', 'kl', 'align', 'patch_cos']) assert.equal(withEq[name], base[name], name);
  // float32 sums of terms of size ~1: a few ulps.
  assert.ok(Math.abs(withEq.loss! - (base.loss! + weight * withEq.eq!)) < 1e-6, `loss ${withEq.loss} = ${base.loss} + ${weight} * ${withEq.eq}`);
  assert.notDeepEqual(eq.metrics[1]!.values.rec, plain.metrics[1]!.values.rec, 'the term moved the weights');
  rmSync(dir, { recursive: true, force: true });
});

function reals(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const { status, stdout, stderr } = spawnSync(process.execPath, [REALS, ...args], { encoding: 'utf8', timeout: 300_000, env: { ...process.env, OMP_NUM_THREADS: '1' } });
  return { status, stdout, stderr };
}

test('`reals align train --eq-weight` (teacher-free: alignment weights 0) trains, resumes exactly, records the flag and converts', () => {
  const help = alignTrainCommand().helpInformation();
  const eqHelp = help.slice(help.indexOf('--eq-weight <w>'), help.indexOf('--no-eq-rotation'));
  assert.ok(eqHelp.length > 0 && eqHelp.includes('(default: 0)'), eqHelp);

  const dir = tempDir();
  torch.manualSeed(0);
  const teacherConfig = { imgSize: 56, embedDim: 16, depth: 1, numHeads: 2 };
  writeFileSync(join(dir, 'teacher.json'), JSON.stringify(teacherConfig));
  saveSafetensors(join(dir, 'teacher.safetensors'), Object.fromEntries(new DinoVisionTransformer({ ...DINOV2_CONFIGS.dinov2_vits14!, ...teacherConfig }).stateDict()));
  writeJsonFileAtomic(join(dir, 'vae.json'), configToDiffusers(tinyVae(4).config));
  const common = (results: string) => [
    'align', 'train', '--data-path', 'fashion-mnist', '--dino-model', join(dir, 'teacher.json'), '--dino-ckpt', join(dir, 'teacher.safetensors'),
    '--image-size', '32', '--dino-input-size', '56', '--vae-config', join(dir, 'vae.json'), '--lpips-weight', '0', '--batch-size', '4', '--num-workers', '0',
    '--mlp-hidden', '16', '--log-every', '1', '--ckpt-every', '2', '--disc-start', '2', '--lr', '1e-3', '--precision', 'fp32',
    '--patch-weight', '0', '--cls-weight', '0', '--eq-weight', '0.5', '--results-dir', join(dir, results),
  ];
  const whole = reals([...common('whole'), '--max-steps', '4']);
  assert.equal(whole.status, 0, whole.stderr);
  const first = reals([...common('parts'), '--max-steps', '2']);
  assert.equal(first.status, 0, first.stderr);
  const runDir = join(dir, 'parts', '000-align');
  const resumed = reals([...common('parts'), '--max-steps', '4', '--resume', runDir]);
  assert.equal(resumed.status, 0, resumed.stderr);

  const wholeRun = join(dir, 'whole', '000-align');
  const records = metricsOf(wholeRun);
  assert.deepEqual(records.map((r) => r.step), [1, 2, 3, 4]);
  assert.ok(records.every((r) => r.values.eq! > 0 && r.values.align === 0), 'eq logged at every step, no alignment');
  assert.deepEqual(metricsOf(runDir), records, 'the resumed run logs exactly the uninterrupted one\'s losses');
  const [a, b] = [loadCheckpoint(join(wholeRun, 'checkpoints', 'last.safetensors')), loadCheckpoint(join(runDir, 'checkpoints', 'last.safetensors'))];
  for (const group of ['model', 'ema', 'opt', 'disc', 'opt_disc']) {
    for (const [key, t] of Object.entries(a.groups[group]!)) assert.ok(t.eq(b.groups[group]![key]!).all().item(), `${group}.${key}`);
  }
  const args = a.metadata.args as Record<string, unknown>;
  assert.deepEqual([args.eqWeight, args.eqRotation], [0.5, true]);
  assert.equal(loadAlignedModels(join(runDir, 'checkpoints', 'last.safetensors')).args.eqWeight, 0.5);

  const out = join(dir, 'vae');
  const converted = reals(['align', 'convert', '--ckpt', join(runDir, 'checkpoints', 'last.safetensors'), '--output-dir', out, '--data-path', 'fashion-mnist',
    '--num-samples', '8', '--batch-size', '4', '--num-workers', '0']);
  assert.equal(converted.status, 0, converted.stderr);
  for (const name of ['config.json', 'diffusion_pytorch_model.safetensors', 'mean_std.json']) assert.ok(existsSync(join(out, name)), name);
  rmSync(dir, { recursive: true, force: true });
});
