// bfloat16 autocast against float32: how far training, the samplers and the VAE move, on models
// that learned something (random weights say little about rounding in a trained network).
// The bounds are stated next to each assertion; the measured values print with the test.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, mkdtempSync, rmSync } from 'node:fs';
import { PassThrough } from 'node:stream';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as torch from '../../src/torch/index.js';
import type { Tensor } from '../../src/torch/index.js';
import * as nn from '../../src/nn/index.js';
import * as optim from '../../src/optim/index.js';
import { generateLatents } from '../../src/diffusion/index.js';
import { loadCheckpoint } from '../../src/train/index.js';
import { parseMetrics } from '../../src/runlog/index.js';
import { trainGenerator, type GeneratorSpec } from '../../src/train/sit.js';
import { encodePosterior } from '../../src/data/latents.js';
import { fashionMnist, memorySource } from './latent-data.js';
import { AutoencoderKL } from '../../src/models/autoencoder-kl.js';

const F = nn.F;
torch.setNumThreads(1);

const SPEC: GeneratorSpec = {
  name: 'SiT-tiny', kind: 'SiT',
  config: { depth: 2, hiddenSize: 64, patchSize: 4, numHeads: 4, inputSize: 16, inChannels: 1, mlpRatio: 4, classDropoutProb: 0.1, numClasses: 10, learnSigma: true },
};

const relativeDistance = (a: Tensor, b: Tensor): number => torch.noGrad(() => a.sub(b).norm().item() / b.norm().item());

test('bf16 training reaches the fp32 loss, keeps float32 master weights and Adam state, and records its precision; the samplers stay close to fp32', async () => {
  const root = mkdtempSync(join(tmpdir(), 'reals-precision-'));
  const train = fashionMnist(true, 4096, 2);
  const run = (precision: torch.Precision) => trainGenerator({
    spec: SPEC, data: memorySource(train.x, train.y, 64), resultsDir: join(root, precision), lr: 3e-3, emaDecay: 0.98,
    maxSteps: 240, logEvery: 1, ckptEvery: 240, precision, log: () => {}, progressStream: new PassThrough(),
  });
  const [fp32, bf16] = [await run('fp32'), await run('bf16')];
  const losses = (dir: string) => parseMetrics(readFileSync(join(dir, 'metrics.jsonl'), 'utf8')).map((r) => r.values.loss!);
  // The last 80 steps' mean: both runs draw the same batches, times and noise, so what differs is
  // rounding (bfloat16 keeps 8 significant bits, about 0.4% per product) and where it led the weights.
  const tail = (values: number[]) => values.slice(-80).reduce((s, v) => s + v, 0) / 80;
  const [lossFp32, lossBf16] = [tail(losses(fp32.runDir)), tail(losses(bf16.runDir))];
  const first = losses(fp32.runDir)[0]!;
  console.log(`SiT-tiny, 240 steps: mean loss of the last 80 fp32 ${lossFp32.toFixed(4)}, bf16 ${lossBf16.toFixed(4)} (first ${first.toFixed(4)})`);
  assert.ok(lossFp32 < 0.8 * first, 'the model learns');
  // 2%: a fifth of the way the loss itself fell over these steps would have to be lost to rounding.
  assert.ok(Math.abs(lossBf16 - lossFp32) < 0.02 * lossFp32, `bf16 ${lossBf16} vs fp32 ${lossFp32}`);

  const saved = loadCheckpoint(bf16.checkpoint!);
  assert.equal(saved.metadata.precision, 'bf16');
  assert.equal(loadCheckpoint(fp32.checkpoint!).metadata.precision, 'fp32');
  for (const group of ['model', 'ema', 'opt'] as const) {
    for (const [key, t] of Object.entries(saved.groups[group]!)) {
      if (t.isFloatingPoint()) assert.equal(t.dtype, 'float32', `${group}.${key} stays float32`);
    }
  }

  // The samplers on the same starting noise: the network in bf16, the state and updates float32.
  const labels = torch.arange(0, 40).remainder(10);
  const sample = (method: 'ode' | 'sde', precision: torch.Precision) => generateLatents({
    model: fp32.ema, labels, shape: [1, 16, 16], seed: 0, method, steps: 30, cfgScale: 2, cfgChannels: 'all', precision,
    ...(method === 'ode' ? { ode: { samplingMethod: 'heun2' as const } } : { sde: { samplingMethod: 'Euler' as const } }),
  });
  for (const method of ['ode', 'sde'] as const) {
    const [a, b] = [sample(method, 'fp32'), sample(method, 'bf16')];
    assert.equal(b.dtype, 'float32');
    const distance = relativeDistance(b, a);
    console.log(`${method}: bf16 samples are ${distance.toFixed(4)} (relative L2) from fp32`);
    // 3%: thirty network calls, each ~0.4% off, enter a contracting flow; 3% of the norm is below
    // the pixel-level step of an 8-bit image of these [-1, 1] latents on most pixels.
    assert.ok(distance < 0.03, `${method}: ${distance}`);
  }
  rmSync(root, { recursive: true });
});

test('a trained VAE reconstructs in bf16 within 1.1 times its fp32 error', () => {
  const train = fashionMnist(true, 2048, 1).x;
  const heldOut = fashionMnist(false, 256, 1).x;
  torch.manualSeed(0);
  const vae = new AutoencoderKL({
    inChannels: 1, outChannels: 1, latentChannels: 4, layersPerBlock: 1, normNumGroups: 8, blockOutChannels: [16, 32],
    downBlockTypes: ['DownEncoderBlock2D', 'DownEncoderBlock2D'], upBlockTypes: ['UpDecoderBlock2D', 'UpDecoderBlock2D'],
  });
  const opt = new optim.Adam(vae.parameters(), { lr: 2e-3 });
  for (let step = 0; step < 150; step++) {
    torch.scope(() => {
      const x = train.indexSelect(0, torch.randint(0, train.size(0), [32]));
      const posterior = vae.encode(x);
      F.mseLoss(vae.decode(posterior.sample()), x).add(posterior.kl().mean().mul(1e-6)).backward();
      opt.step();
      opt.zeroGrad();
    });
  }
  vae.eval();
  const error = (precision: torch.ResolvedPrecision): number => torch.noGrad(() => torch.scope(() => {
    const z = encodePosterior(vae, heldOut, precision).mode();
    const reconstruction = torch.withPrecision(precision, 'cpu', () => vae.decode(z)).float();
    return F.mseLoss(reconstruction, heldOut).item();
  }));
  const [fp32, bf16] = [error('fp32'), error('bf16')];
  const variance = torch.noGrad(() => heldOut.var().item());
  console.log(`VAE reconstruction MSE on 256 held-out images: fp32 ${fp32.toFixed(5)}, bf16 ${bf16.toFixed(5)} (ratio ${(bf16 / fp32).toFixed(3)}; image variance ${variance.toFixed(3)})`);
  assert.ok(fp32 < 0.25 * variance, 'the VAE learned to reconstruct');
  // 1.1: bf16 rounding adds an error of ~0.4% of each activation, uncorrelated with the VAE's own
  // error; squared, it adds well under a tenth of an MSE that is a few percent of the variance.
  assert.ok(bf16 < 1.1 * fp32, `bf16 ${bf16} vs fp32 ${fp32}`);
});
