import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as torch from '../../src/torch/index.js';
import type { Tensor } from '../../src/torch/index.js';
import { createDiffusion } from '../../src/diffusion/index.js';
import { DiT } from '../../src/models/sit.js';
import { NpzFile } from '../../src/io/index.js';
import { loadGenerator, type GeneratorSpec } from '../../src/train/sit.js';
import { sampleLatents } from '../../src/sampling/sample.js';
import { batchSeed, sampleLabels } from '../../src/sampling/labels.js';
import { createOnnxSampler } from '../../src/sampling/onnx-backend.js';
import { buildProgram } from '../../src/cli/main.js';
import { FIXTURES, loadFixture, tinyVae } from '../helpers.js';

torch.setNumThreads(1);
const OFFICIAL = join(FIXTURES, 'models', 'sit_checkpoint.pt');
const TINY: GeneratorSpec = {
  name: 'SiT-tiny', kind: 'SiT',
  config: { depth: 2, hiddenSize: 16, patchSize: 2, numHeads: 2, inputSize: 4, inChannels: 4, mlpRatio: 4, classDropoutProb: 0.1, numClasses: 3, learnSigma: true },
};

test('--label-sampling random draws the labels of SiT\'s sample_ddp.py (randint after the noise, from the batch seed); balanced cycles', () => {
  for (const c of loadFixture('label_sampling.json').cases) {
    const indices = Array.from({ length: c.n }, (_, i) => 100 + i);
    assert.deepEqual(sampleLabels(indices, c.num_classes, 'random', c.seed, c.shape), Array.from(c.labels.toArray() as BigInt64Array, Number),
      `seed ${c.seed}, noise [${c.n}, ${c.shape}], ${c.num_classes} classes`);
  }
  assert.deepEqual(sampleLabels([0, 1, 2, 3, 4, 5, 6], 3, 'balanced', 0, [4, 4, 4]), [0, 1, 2, 0, 1, 2, 0]);
});

test('a guided batch with random labels draws as sample_ddp.py: noise, labels, then the sampler\'s draws (DDPM on the doubled batch)', () => {
  torch.manualSeed(0);
  const network = new DiT({ depth: 1, hiddenSize: 16, patchSize: 2, numHeads: 2, inputSize: 4, inChannels: 4, numClasses: 5, learnSigma: true }).eval();
  torch.noGrad(() => { for (const p of network.parameters()) if (p.abs().sum().item() === 0) p.normal_(0, 0.05); });
  const [seed, steps, cfgScale] = [11, 4, 3];
  const latents = sampleLatents({ model: network, method: 'ddpm', steps, cfgScale, labelSampling: 'random' }, [0, 1, 2, 3], seed);
  const reference = torch.noGrad(() => {
    torch.manualSeed(seed);
    const z = torch.randn([4, 4, 4, 4]);
    const y = torch.randint(0, 5, [4]);
    const model = (x: Tensor, t: Tensor, kwargs: Record<string, unknown>) => network.forwardWithCfg(x, t, kwargs.y as Tensor, cfgScale);
    const diffusion = createDiffusion({ timestepRespacing: String(steps) });
    return diffusion.pSampleLoop(model, [8, 4, 4, 4], { noise: torch.cat([z, z]), clipDenoised: false, modelKwargs: { y: torch.cat([y, torch.full([4], 5).to('int64')]) } }).slice(0, 0, 4);
  });
  assert.deepEqual(latents.toArray(), reference.toArray());
});

test('the onnxruntime backend draws the same random labels and SDE noise as libtorch on the doubled batch', async () => {
  const { model } = loadGenerator(OFFICIAL, { spec: TINY });
  const vae = tinyVae();
  const normalization = { source: 'mean_std.json' as const, mean: [0, 0, 0, 0], std: [1, 1, 1, 1] };
  const sde = { diffusionForm: 'sigma' as const, diffusionNorm: 1, lastStep: 'Mean' as const, lastStepSize: 0.04 };
  const onnx = await createOnnxSampler({
    model, vae, normalization, mode: 'sde', steps: 5, cfgScale: 2, guidanceLow: 0, guidanceHigh: 1, transport: {}, sde, labelSampling: 'random',
  });
  try {
    const seed = batchSeed(3, 0);
    const fromOnnx = await onnx.latents([0, 1, 2], seed);
    const fromTorch = sampleLatents({ model, method: 'sde', steps: 5, cfgScale: 2, sde: { samplingMethod: 'Euler', ...sde }, labelSampling: 'random', precision: 'fp32' }, [0, 1, 2], seed);
    // float32 through two runtimes, 5 steps of a 2-block network: differences are roundings, far below the noise's scale of 1.
    assert.ok(fromOnnx.sub(fromTorch).abs().max().item() < 1e-4);
    const balanced = sampleLatents({ model, method: 'sde', steps: 5, cfgScale: 2, sde: { samplingMethod: 'Euler', ...sde }, precision: 'fp32' }, [0, 1, 2], seed);
    assert.ok(balanced.sub(fromTorch).abs().max().item() > 1e-2, 'random labels change the samples');
  } finally {
    await onnx.release();
  }
});

test('reals sample --label-sampling random samples into its own folder and records the choice in sampling.json; older records read as balanced', async () => {
  const root = mkdtempSync(join(tmpdir(), 'reals-labels-'));
  try {
    const vaePath = join(root, 'vae');
    tinyVae().savePretrained(vaePath);
    const modelJson = join(root, 'tiny.json');
    writeFileSync(modelJson, JSON.stringify({ depth: 2, hiddenSize: 16, patchSize: 2, numHeads: 2 }));
    const flags = ['--model', modelJson, '--ckpt', OFFICIAL, '--vae-path', vaePath, '--sample-dir', join(root, 'samples'), '--image-size', '8', '--num-classes', '3',
      '--per-proc-batch-size', '2', '--num-fid-samples', '2', '--num-sampling-steps', '2', '--sampling-method', 'euler', '--precision', 'fp32'];
    const reals = (...args: string[]) => buildProgram().parseAsync(['node', 'reals', 'sample', 'ode', ...flags, ...args]);
    await reals('--label-sampling', 'random');
    const name = 'tiny-sit_checkpoint-cfg-1.0-2-ODE-2-euler-interval-0.0-1.0-seed-0';
    const settings = (suffix: string) => JSON.parse(readFileSync(join(root, 'samples', `${name}${suffix}`, 'sampling.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(settings('-random-labels').labelSampling, 'random');
    await reals();
    const balanced = settings('');
    assert.equal(balanced.labelSampling, 'balanced');
    // A folder drawn before the setting existed has no labelSampling: it is continued as balanced, and refused as random.
    const { labelSampling: _, ...older } = balanced;
    writeFileSync(join(root, 'samples', name, 'sampling.json'), JSON.stringify(older));
    await reals('--num-fid-samples', '4');
    const file = NpzFile.open(join(root, 'samples', `${name}.npz`));
    assert.deepEqual(file.header('arr_0').shape, [4, 8, 8, 3]);
    file.close();
    const ode = buildProgram().commands.find((c) => c.name() === 'sample')!.commands.find((c) => c.name() === 'ode')!;
    assert.match(ode.helpInformation().replace(/\s+/g, ' '), /--label-sampling <how> .*\(choices: "balanced", "random", default: "balanced"\)/);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
