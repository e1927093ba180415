import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as torch from '../../src/torch/index.js';
import * as nn from '../../src/nn/index.js';
import type { Tensor } from '../../src/torch/index.js';
import { saveSafetensors } from '../../src/io/index.js';
import {
  NLayerDiscriminator, adoptWeight, calculateAdaptiveWeight, hingeDLoss, vanillaDLoss, weightsInit,
} from '../../src/models/discriminator.js';
import { FIXTURES, assertClose, assertSameDraw, loadFixture } from '../helpers.js';

const fx = loadFixture('models/discriminator.json');
const CKPT = join(FIXTURES, 'models', 'discriminator_taming.ckpt');

test('state-dict keys and shapes are taming\'s NLayerDiscriminator(input_nc=3, ndf=64, n_layers=3)', () => {
  const disc = new NLayerDiscriminator();
  assert.deepEqual([...disc.stateDict()].map(([k, t]) => [k, t.shape]), fx.keys);
  assert.deepEqual(disc.config, { inputNc: 3, ndf: 64, nLayers: 3 });
});

test('after the same seed, construction draws the weights of NLayerDiscriminator().apply(weights_init)', () => {
  torch.manualSeed(fx.disc_seed);
  const disc = new NLayerDiscriminator();
  assertSameDraw([...disc.stateDict().values()], fx.weights, 'weights');
  const bn = disc.main.at(3) as nn.BatchNorm2d;
  assert.ok(Math.abs(bn.weight!.mean().item() - 1) < 0.01 && bn.bias!.abs().max().item() === 0, 'BatchNorm weight ~ N(1, 0.02), bias 0');
  const conv = disc.main.at(2) as nn.Conv2d;
  assert.ok(Math.abs(conv.weight.std().item() - 0.02) < 0.001, 'conv weight ~ N(0, 0.02)');
});

test('logits in train mode (batch statistics), the running statistics it leaves, and logits in eval mode match the reference', () => {
  torch.manualSeed(fx.disc_seed);
  const disc = new NLayerDiscriminator();
  const x = torch.randn([2, 3, 64, 64]);
  assertSameDraw([x], fx.input, 'input');
  torch.noGrad(() => {
    assertClose(disc.forward(x), fx.train_logits, 1e-5, 1e-6, 'train logits');
    const state = disc.stateDict();
    for (const [key, expected] of Object.entries(fx.running as Record<string, Tensor>)) {
      assertClose(state.get(key)!, expected, 1e-5, 1e-6, key);
    }
    disc.eval();
    assertClose(disc.forward(x.flip(-1)), fx.eval_logits, 1e-5, 1e-6, 'eval logits');
  });
});

test('hinge and vanilla discriminator losses match the reference and their closed forms', () => {
  torch.manualSeed(fx.loss_seed);
  const real = torch.randn([2, 1, 6, 6]);
  const fake = torch.randn([2, 1, 6, 6]);
  assertClose(hingeDLoss(real, fake), fx.hinge, 1e-6, 0, 'hinge');
  assertClose(vanillaDLoss(real, fake), fx.vanilla, 1e-6, 0, 'vanilla');
  const t = (values: number[]): Tensor => torch.tensor(values, { dtype: 'float32' });
  assert.equal(hingeDLoss(t([2, 1]), t([-1, -3])).item(), 0, 'margins met: no loss');
  assert.equal(hingeDLoss(t([0, 0.5]), t([0, 1])).item(), 0.5 * (0.75 + 1.5));
  assert.ok(Math.abs(vanillaDLoss(t([0]), t([0])).item() - Math.log(2)) < 1e-7);
});

test('adoptWeight gives value before the threshold step and weight from it on', () => {
  assert.equal(adoptWeight(0.5, 9, 10), 0);
  assert.equal(adoptWeight(0.5, 10, 10), 0.5);
  assert.equal(adoptWeight(0.5, 3, 10, 0.1), 0.1);
  assert.equal(adoptWeight(0.5, 0), 0.5);
});

test('calculateAdaptiveWeight: ||grad nll|| / (||grad g|| + 1e-4), clamped to 1e4, detached, scaled; graphs kept', () => {
  const t = (values: number[]): Tensor => torch.tensor(values, { dtype: 'float32' });
  const w = t([1, 2]).requiresGrad_();
  const nll = w.mul(t([3, 4])).sum();
  const g = w.mul(t([6, 8])).sum();
  const dWeight = calculateAdaptiveWeight(nll, g, w, 2);
  assert.ok(Math.abs(dWeight.item() - (5 / (10 + 1e-4)) * 2) < 1e-6, String(dWeight.item()));
  assert.equal(dWeight.requiresGrad, false);
  nll.add(g).backward();
  assert.deepEqual(w.grad!.tolist(), [9, 12], 'both graphs were retained');

  const flat = w.mul(t([0, 0])).sum();
  assert.equal(calculateAdaptiveWeight(w.mul(t([3, 4])).sum(), flat, w, 0.5).item(), 1e4 * 0.5);
  assert.throws(() => calculateAdaptiveWeight(nll, g, torch.zeros([2]).requiresGrad_()), /differentiated Tensors appears to not have been used in the graph/);
});

test('fromCheckpoint loads the discriminator out of a taming/Lightning checkpoint (loss.discriminator.*)', () => {
  const disc = NLayerDiscriminator.fromCheckpoint(CKPT, { ndf: 8, nLayers: 2 }).eval();
  assert.equal(disc.stateDict().get('main.3.num_batches_tracked')!.item(), 42);
  torch.noGrad(() => assertClose(disc.forward(fx.ckpt_x), fx.ckpt_logits, 1e-5, 1e-6, 'logits'));

  assert.throws(() => NLayerDiscriminator.fromCheckpoint(CKPT), (error: Error) => {
    assert.ok(error.message.startsWith(`${CKPT}: loadStateDict(NLayerDiscriminator): `), error.message);
    assert.match(error.message, /missing keys \[main\.9\.weight, main\.9\.bias, main\.9\.running_mean.*main\.11\.bias\], unexpected keys \[main\.8\.bias\]/);
    assert.match(error.message, /shape mismatch \[main\.0\.weight: checkpoint \[8,3,4,4\] vs model \[64,3,4,4\]/);
    return true;
  });
  assert.throws(() => NLayerDiscriminator.fromCheckpoint(CKPT, {}, { prefix: 'discriminator.' }), new RegExp(`^Error: ${CKPT}: no keys under the prefix 'discriminator\\.'`));
});

test('fromCheckpoint takes a plain state dict file, and weightsInit re-initializes like taming\'s weights_init', () => {
  torch.manualSeed(1);
  const source = new NLayerDiscriminator({ ndf: 4, nLayers: 1 });
  const dir = mkdtempSync(join(tmpdir(), 'reals-disc-'));
  try {
    const file = join(dir, 'disc.safetensors');
    saveSafetensors(file, Object.fromEntries(source.stateDict()));
    const loaded = NLayerDiscriminator.fromCheckpoint(file, { ndf: 4, nLayers: 1 });
    for (const [k, t] of loaded.stateDict()) assert.equal(t.sub(source.stateDict().get(k)!).abs().max().item(), 0, k);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const firstConv = source.main.at(0) as nn.Conv2d;
  const bias = firstConv.bias!.clone();
  source.apply(weightsInit);
  assert.equal(firstConv.bias!.sub(bias).abs().max().item(), 0, 'conv biases are left alone');
});
