import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '../../src/torch/index.js';
import { BatchNorm2d, Conv2d, ConvTranspose2d, Embedding, LayerNorm, Linear, init, type Module } from '../../src/nn/index.js';
import { assertClose, loadFixture } from '../helpers.js';

const fixture = loadFixture('nn_init.json');

test('default initialisations draw the same numbers as PyTorch 1.13 from the same seed', () => {
  const layers: Record<string, () => Module> = {
    linear: () => new Linear(6, 4),
    conv2d: () => new Conv2d(4, 6, 3, { groups: 2 }),
    conv_transpose2d: () => new ConvTranspose2d(4, 6, 3),
    embedding: () => new Embedding(5, 3, { paddingIdx: 1 }),
    layer_norm: () => new LayerNorm(3),
    batch_norm: () => new BatchNorm2d(2),
  };
  for (const [name, make] of Object.entries(layers)) {
    torch.manualSeed(7);
    const expected = fixture.seeded[name] as Record<string, torch.Tensor>;
    const sd = make().stateDict();
    assert.deepEqual([...sd.keys()], Object.keys(expected), name);
    for (const [key, value] of sd) assertClose(value, expected[key]!, 1e-6, 0, `${name}.${key}`);
  }
});

test('default Linear init: weight and bias within +-1/sqrt(fan_in), filling the range', () => {
  torch.manualSeed(0);
  const linear = new Linear(400, 300);
  const bound = 1 / Math.sqrt(400);
  const wMax = linear.weight.abs().max().item();
  assert.ok(wMax <= bound && wMax > 0.999 * bound, `max |w| ${wMax}, bound ${bound}`);
  assert.ok(Math.abs(linear.weight.std().item() - bound / Math.sqrt(3)) < 0.01 * bound);
  assert.ok(linear.bias!.abs().max().item() <= bound);
});

test('calculateGain and calculateFanInAndFanOut equal PyTorch\'s', () => {
  const gains = fixture.gains as Record<string, number>;
  assert.equal(init.calculateGain('linear'), gains.linear);
  assert.equal(init.calculateGain('sigmoid'), gains.sigmoid);
  assert.equal(init.calculateGain('tanh'), gains.tanh);
  assert.equal(init.calculateGain('relu'), gains.relu);
  assert.equal(init.calculateGain('selu'), gains.selu);
  assert.equal(init.calculateGain('leaky_relu'), gains.leaky_relu);
  assert.equal(init.calculateGain('leaky_relu', Math.sqrt(5)), gains.leaky_relu_sqrt5);
  assert.deepEqual(init.calculateFanInAndFanOut(torch.empty([6, 4, 3, 2])), { fanIn: 24, fanOut: 36 });
  assert.throws(() => init.calculateFanInAndFanOut(torch.empty([5])), /at least 2 dims, got shape \[5\]/);
});

/** Sample standard deviation of a 1e5-element tensor: its relative error is about 0.3%. */
const N = [100, 1000] as const;

test('kaimingUniform_ stays within gain * sqrt(3 / fan) and fills it; kaimingNormal_ has std gain / sqrt(fan)', () => {
  torch.manualSeed(0);
  const w = torch.empty([...N]);
  init.kaimingUniform_(w, { mode: 'fan_out', nonlinearity: 'relu' });
  const bound = Math.sqrt(2) * Math.sqrt(3 / 100);
  const max = w.abs().max().item();
  assert.ok(max <= bound && max > 0.999 * bound, `max ${max}, bound ${bound}`);
  assert.ok(Math.abs(w.std().item() / (bound / Math.sqrt(3)) - 1) < 0.01);
  init.kaimingNormal_(w, { a: 0.2 });
  const std = init.calculateGain('leaky_relu', 0.2) / Math.sqrt(1000);
  assert.ok(Math.abs(w.std().item() / std - 1) < 0.01, `std ${w.std().item()} vs ${std}`);
  assert.ok(Math.abs(w.mean().item()) < 0.01 * std);
});

test('xavierUniform_ and xavierNormal_ have std gain * sqrt(2 / (fan_in + fan_out))', () => {
  torch.manualSeed(0);
  const w = torch.empty([...N]);
  const std = 1.5 * Math.sqrt(2 / 1100);
  init.xavierUniform_(w, 1.5);
  assert.ok(w.abs().max().item() <= Math.sqrt(3) * std);
  assert.ok(Math.abs(w.std().item() / std - 1) < 0.01);
  init.xavierNormal_(w, 1.5);
  assert.ok(Math.abs(w.std().item() / std - 1) < 0.01);
});

test('truncNormal_ stays in [a, b] with the truncated normal\'s mean and std (scipy)', () => {
  torch.manualSeed(0);
  const { a, b, mean, std, expected_mean: expectedMean, expected_std: expectedStd } = fixture.trunc_normal;
  const w = init.truncNormal_(torch.empty([...N]), { mean, std, a, b });
  assert.ok(w.min().item() >= a && w.max().item() <= b);
  assert.ok(Math.abs(w.mean().item() - expectedMean) < 0.01, `mean ${w.mean().item()} vs ${expectedMean}`);
  assert.ok(Math.abs(w.std().item() / expectedStd - 1) < 0.01, `std ${w.std().item()} vs ${expectedStd}`);
});

test('uniform_, normal_, constant_, zeros_ and ones_ fill a parameter in place and leave it a leaf', () => {
  torch.manualSeed(0);
  const p = new Linear(1000, 100).weight;
  assert.equal(init.uniform_(p, 2, 3), p);
  assert.ok(p.min().item() >= 2 && p.max().item() < 3);
  init.normal_(p, 1, 0.5);
  assert.ok(Math.abs(p.mean().item() - 1) < 0.01 && Math.abs(p.std().item() - 0.5) < 0.005);
  init.constant_(p, 0.25);
  assert.equal(p.eq(0.25).all().item(), 1);
  init.zeros_(p);
  assert.equal(p.abs().sum().item(), 0);
  init.ones_(p);
  assert.equal(p.sum().item(), 1e5);
  assert.ok(p.isLeaf && p.requiresGrad);
});
