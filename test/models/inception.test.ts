import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as torch from '../../src/torch/index.js';
import type { Tensor } from '../../src/torch/index.js';
import { loadSafetensors, saveSafetensors } from '../../src/io/index.js';
import { FIDInceptionV3, FID_WEIGHTS_URL, resizeBilinearTF1, type InceptionFeatures } from '../../src/models/inception.js';
import { FIXTURES, assertClose, assertSameDraw, loadFixture } from '../helpers.js';

const fx = loadFixture('inception/expected.json');
const expected = loadSafetensors(join(FIXTURES, 'inception', 'expected.safetensors'));

/**
 * make_inception.py's weight recipe: torch.manualSeed(seed), then per key in sorted order (batch
 * counters skipped) randn * (2 / fan_in)^1/2 for conv weights, randn * fan_in^-1/2 for fc.weight,
 * 1 + 0.1 randn for BatchNorm weights, 1 + 0.1 |randn| for running variances, 0.1 randn otherwise.
 */
function build(): FIDInceptionV3 {
  const model = new FIDInceptionV3().eval();
  torch.manualSeed(fx.seed);
  const state = model.stateDict();
  torch.noGrad(() => torch.scope(() => {
    for (const name of [...state.keys()].sort()) {
      if (name.endsWith('num_batches_tracked')) continue;
      const p = state.get(name)!;
      const noise = torch.randn(p.shape);
      const fanIn = p.numel() / p.size(0);
      if (p.ndim === 4) p.copy_(noise.mul(Math.sqrt(2 / fanIn)));
      else if (p.ndim === 2) p.copy_(noise.mul(1 / Math.sqrt(fanIn)));
      else if (name.endsWith('bn.weight')) p.copy_(noise.mul(0.1).add(1));
      else if (name.endsWith('running_var')) p.copy_(noise.abs().mul(0.1).add(1));
      else p.copy_(noise.mul(0.1));
    }
  }));
  assertSameDraw([...state.values()].filter((p) => p.isFloatingPoint()), fx.weights, 'the weight recipe');
  return model;
}

const model = build();

function randomImages(seed: number, shape: number[], expectedSum: number): Tensor {
  torch.manualSeed(seed);
  const images = torch.randint(0, 256, shape, { dtype: 'uint8' });
  assert.equal(images.long().sum().item(), expectedSum, `randint after manualSeed(${seed}) drew other images than PyTorch`);
  return images;
}

/** Each output of the reference's forward (`<name>_<suffix>` in expected.safetensors) to 1e-5. */
function assertFeatures(actual: InceptionFeatures, suffix: string): void {
  const names: [keyof InceptionFeatures, string][] = [['pool3', 'pool_3'], ['spatial', 'spatial'], ['logitsUnbiased', 'logits_unbiased'], ['logits', 'logits']];
  // atol 1e-5: the fixture's forward ran on another CPU; libtorch's conv kernels differ there by up to
  // 2.1e-6 on near-zero spatial features (measured on an AMD EPYC against the Xeon-made fixture).
  for (const [field, key] of names) assertClose(actual[field], expected[`${key}_${suffix}`]!, 1e-5, 1e-5, `${field} (${suffix})`);
}

test('state-dict keys, shapes and order equal torchvision\'s Inception3 with the FID blocks', () => {
  assert.deepEqual([...model.stateDict()].map(([k, t]) => [k, t.shape]), fx.keys);
  assert.equal(model.stateDict().get('fc.weight')!.size(0), 1008);
});

test('two 64x64 uint8 images: pool_3, spatial (2023), logits match the reference to 1e-5', () => {
  torch.noGrad(() => {
    const features = model.forward(expected.images_64!);
    assert.deepEqual(features.pool3.shape, [2, 2048]);
    assert.deepEqual(features.spatial.shape, [2, 2023]);
    assert.deepEqual(features.logits.shape, [2, 1008]);
    assertFeatures(features, '64');
  });
});

test('a 299x299 image (no resize needed): features match the reference to 1e-5', () => {
  const image = randomImages(fx.input_seed_299, [1, 3, 299, 299], fx.image_299_sum);
  torch.noGrad(() => assertFeatures(model.forward(image), '299'));
});

test('spatial features are Mixed_6d.branch1x1\'s first 7 channels flattened in NHWC order', () => {
  torch.noGrad(() => {
    const images = expected.images_64!.narrow(0, 0, 1);
    const x = model.preprocess(images);
    let h = model.conv2d2b3x3.forward(model.conv2d2a3x3.forward(model.conv2d1a3x3.forward(x)));
    h = torch.nnFunctional.maxPool2d(h, 3, { stride: 2 });
    h = torch.nnFunctional.maxPool2d(model.conv2d4a3x3.forward(model.conv2d3b1x1.forward(h)), 3, { stride: 2 });
    for (const block of [model.mixed5b, model.mixed5c, model.mixed5d, model.mixed6a, model.mixed6b, model.mixed6c]) h = block.forward(h);
    const branch1x1 = model.mixed6d.branch1x1.forward(h);
    assert.deepEqual(branch1x1.shape, [1, 192, 17, 17]);
    const spatial = model.forward(images).spatial.view(17, 17, 7);
    for (const [row, col, channel] of [[0, 0, 0], [3, 11, 6], [16, 2, 4], [16, 16, 1]] as const) {
      assert.equal(spatial.index(row, col, channel).item(), branch1x1.index(0, channel, row, col).item(), `(h ${row}, w ${col}, c ${channel})`);
    }
  });
});

test('uint8 preprocessing: TF1 resize, then (x - 128) / 128', () => {
  const images = expected.images_64!;
  const x = model.preprocess(images);
  assert.deepEqual(x.shape, [2, 3, 299, 299]);
  assert.equal(x.sub(resizeBilinearTF1(images.float(), 299).sub(128).div(128)).abs().max().item(), 0);
  assert.throws(() => model.forward(images.float()), /FIDInceptionV3: expected uint8 images \[N, 3, H, W\], got float32 \[2,3,64,64\]/);
  assert.throws(() => model.forward(images.narrow(1, 0, 1)), /got uint8 \[2,1,64,64\]/);
});

test('resizeBilinearTF1 equals TensorFlow 1\'s ResizeBilinear (numpy after resize_bilinear_op.cc) exactly', () => {
  for (const [name, c] of Object.entries(fx.resize as Record<string, { input: Tensor; output: Tensor }>)) {
    const out = resizeBilinearTF1(c.input.float(), [c.output.size(2), c.output.size(3)]);
    assert.deepEqual(out.shape, c.output.shape, name);
    assert.equal(out.sub(c.output).abs().max().item(), 0, `${name}: not identical`);
  }
  torch.manualSeed(fx.resize_seed);
  for (const c of Object.values(fx.resize as Record<string, { input: Tensor }>)) torch.randint(0, 256, c.input.shape, { dtype: 'uint8' });
  for (const size of [64, 256]) {
    const images = torch.randint(0, 256, [1, 3, size, size], { dtype: 'uint8' });
    assert.equal(images.long().sum().item(), fx[`resize_${size}_input_sum`], `resize input ${size}: RNG differs`);
    const out = resizeBilinearTF1(images.float(), 299).slice(2, 0, null, 7).slice(3, 0, null, 7);
    assert.equal(out.sub(expected[`resize_${size}_every_7th`]!).abs().max().item(), 0, `${size} -> 299: not identical`);
  }
  assert.throws(() => resizeBilinearTF1(torch.zeros([3, 8, 8]), 4), /resizeBilinearTF1: expected floating-point \[N, C, H, W\], got float32 \[3,8,8\]/);
});

test('fromCheckpoint: weights without num_batches_tracked (as the converted TF weights) load, eval and frozen', () => {
  const dir = mkdtempSync(join(tmpdir(), 'reals-inception-'));
  try {
    const file = join(dir, 'weights.safetensors');
    const tensors = Object.fromEntries([...model.stateDict()].filter(([k]) => !k.endsWith('num_batches_tracked')));
    saveSafetensors(file, tensors);
    const loaded = FIDInceptionV3.fromCheckpoint(file);
    assert.equal(loaded.training, false);
    assert.ok(loaded.parameters().every((p) => !p.requiresGrad));
    torch.noGrad(() => {
      const images = expected.images_64!.narrow(0, 0, 1);
      const [a, b] = [loaded.forward(images), model.forward(images)];
      assert.equal(a.pool3.sub(b.pool3).abs().max().item(), 0);
      assert.equal(a.spatial.sub(b.spatial).abs().max().item(), 0);
      assert.equal(a.logits.sub(b.logits).abs().max().item(), 0);
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('fromCheckpoint errors name the file and every bad key; a missing file points to the weights URL', () => {
  const partial = join(FIXTURES, 'inception', 'partial_legacy.pth');
  assert.throws(() => FIDInceptionV3.fromCheckpoint(partial), (error: Error) => {
    assert.ok(error.message.startsWith(`${partial}: loadStateDict(FIDInceptionV3): missing keys [`), error.message);
    assert.match(error.message, /Conv2d_2a_3x3\.conv\.weight, Conv2d_2a_3x3\.bn\.weight/);
    assert.match(error.message, /fc\.weight, fc\.bias\]/);
    assert.doesNotMatch(error.message, /Conv2d_1a_3x3\.(conv|bn)\.|num_batches_tracked/, 'the legacy file\'s stem tensors and the counters are not missing');
    return true;
  });
  const state = new Map(model.stateDict());
  state.set('AuxLogits.fc.weight', torch.zeros([1000, 768]));
  state.set('fc.weight', torch.zeros([1000, 2048]));
  state.delete('Mixed_7c.branch_pool.bn.running_var');
  assert.throws(() => FIDInceptionV3.fromCheckpoint(state), (error: Error) => {
    assert.match(error.message, /^checkpoint: loadStateDict\(FIDInceptionV3\): /);
    assert.match(error.message, /missing keys \[Mixed_7c\.branch_pool\.bn\.running_var\]/);
    assert.match(error.message, /unexpected keys \[AuxLogits\.fc\.weight\]/);
    assert.match(error.message, /fc\.weight: checkpoint \[1000,2048\] vs model \[1008,2048\]/);
    return true;
  });
  assert.throws(() => FIDInceptionV3.fromCheckpoint('/nonexistent/pt_inception-2015-12-05-6726825d.pth'),
    new RegExp(`/nonexistent/pt_inception-2015-12-05-6726825d\\.pth: no such file .*${FID_WEIGHTS_URL.replaceAll('.', '\\.')}`));
});
