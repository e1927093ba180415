import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as torch from '../../src/torch/index.js';
import type { Tensor } from '../../src/torch/index.js';
import { saveSafetensors } from '../../src/io/index.js';
import {
  LPIPS, lpipsPackageToTaming, lpipsToTorchvisionVgg16, torchvisionVgg16ToLpips,
} from '../../src/models/lpips.js';
import { NLayerDiscriminator, calculateAdaptiveWeight } from '../../src/models/discriminator.js';
import { FIXTURES, assertClose, assertSameDraw, loadFixture } from '../helpers.js';

const fx = loadFixture('models/lpips.json');
const LIN_FILE = join(FIXTURES, 'models', 'lpips_lin.pth');

/**
 * make_lpips.py's weight recipe: torch.manual_seed, then per key in sorted order (scaling-layer
 * buffers excepted) randn scaled by sqrt(2 / fan_in) (trunk convs), 0.1 (biases), |.| / sqrt(C) (lin).
 */
function seededLpips(): LPIPS {
  const model = new LPIPS();
  torch.manualSeed(fx.lpips_seed);
  const state = model.stateDict();
  const names = [...state.keys()].filter((k) => !k.startsWith('scaling_layer.')).sort();
  assert.deepEqual(names, fx.drawn_keys);
  torch.noGrad(() => {
    for (const name of names) {
      const p = state.get(name)!;
      const noise = torch.randn(p.shape);
      if (name.startsWith('lin')) p.copy_(noise.abs().mul(1 / Math.sqrt(p.size(1))));
      else if (p.ndim > 1) p.copy_(noise.mul(Math.sqrt(2 / (p.numel() / p.size(0)))));
      else p.copy_(noise.mul(0.1));
    }
  });
  assertSameDraw(names.map((k) => state.get(k)!), fx.weights, 'LPIPS weights');
  return model;
}

/** make_lpips.py's images: pairs (x0, x1 = x0 + noise) for the first two, (x0, y) for the last two. */
function images(): [Tensor, Tensor] {
  torch.manualSeed(fx.image_seed);
  const x0 = torch.rand([4, 3, 64, 64]).mul(2).sub(1);
  const x1 = x0.add(torch.randn([4, 3, 64, 64]).mul(0.2)).clamp(-1, 1);
  const y = torch.rand([4, 3, 64, 64]).mul(2).sub(1);
  const in1 = torch.cat([x1.narrow(0, 0, 2), y.narrow(0, 2, 2)]);
  assertSameDraw([x0], fx.images.in0, 'in0');
  assertSameDraw([in1], fx.images.in1, 'in1');
  return [x0, in1];
}

const model = seededLpips();
const [in0, in1] = images();

function tempDir(): string { return mkdtempSync(join(tmpdir(), 'reals-lpips-')); }

test('state-dict keys are taming\'s LPIPS keys: the lpips package\'s without its lins.K duplicates', () => {
  const keys = [...model.stateDict().keys()];
  const packageKeys: string[] = fx.lpips_package_keys;
  assert.deepEqual(keys, packageKeys.filter((k) => !k.startsWith('lins.')));
  assert.ok(keys.includes('net.slice3.14.weight') && keys.includes('lin4.model.1.weight') && keys.includes('scaling_layer.shift'));
  const z = torch.zeros([1]);
  assert.deepEqual([...lpipsPackageToTaming(new Map(packageKeys.map((k) => [k, z]))).keys()], keys);
  assert.deepEqual([...lpipsPackageToTaming(new Map([['lins.2.model.1.weight', z], ['net.slice1.0.bias', z]])).keys()],
    ['lin2.model.1.weight', 'net.slice1.0.bias'], 'lins.K without linK is renamed');
});

test('distances of four 64x64 pairs match the reference to 1e-5; normalize maps [0, 1] inputs; d(x, x) = 0', () => {
  torch.noGrad(() => {
    assertClose(model.forward(in0, in1), fx.distance, 1e-5, 1e-7, 'distance');
    const toUnit = (t: Tensor): Tensor => t.add(1).div(2);
    assertClose(model.forward(toUnit(in0), toUnit(in1), { normalize: true }), fx.distance_normalized, 1e-5, 1e-7, 'normalize: true');
    assert.equal(model.forward(in0.narrow(0, 0, 1), in0.narrow(0, 0, 1)).item(), 0);
    assert.throws(() => model.forward(in0, in1.narrow(0, 0, 2)), /LPIPS: the images' shapes differ: \[4,3,64,64\] vs \[2,3,64,64\]/);
  });
});

test('the model is frozen and in eval mode (dropout off), yet a loss on it backpropagates to the images', () => {
  assert.equal(model.training, false);
  assert.ok(model.parameters().every((p) => !p.requiresGrad));
  const x = in1.narrow(0, 0, 1).detach().requiresGrad_();
  const d = model.forward(in0.narrow(0, 0, 1), x);
  assert.equal(d.item(), model.forward(in0.narrow(0, 0, 1), x).item(), 'deterministic: no dropout in eval');
  d.sum().backward();
  assert.ok(x.grad !== null && x.grad.abs().sum().item() > 0);
});

test('adaptive weight of L1 + LPIPS vs the hinge generator loss equals the reference autograd computation', () => {
  const a = fx.adaptive;
  torch.manualSeed(a.seed);
  const disc = new NLayerDiscriminator({ ndf: 16 });
  const lastLayer = torch.randn([3, 8, 3, 3]).mul(0.1).requiresGrad_();
  const h = torch.randn([2, 8, 32, 32]);
  const inputs = torch.rand([2, 3, 32, 32]).mul(2).sub(1);
  const reconstructions = torch.nnFunctional.conv2d(h, lastLayer, null, { padding: 1 });
  const recLoss = inputs.sub(reconstructions).abs().add(model.forward(inputs, reconstructions).mul(1.0));
  const nllLoss = recLoss.mean();
  const gLoss = disc.forward(reconstructions).mean().neg();
  assertClose(nllLoss, a.nll_loss, 1e-5, 0, 'nll_loss');
  assertClose(gLoss, a.g_loss, 1e-5, 0, 'g_loss');
  assertClose(calculateAdaptiveWeight(nllLoss, gLoss, lastLayer, 0.5), a.d_weight, 1e-5, 0, 'd_weight');
});

test('torchvisionVgg16ToLpips puts features.N in the slice holding layer N, and lpipsToTorchvisionVgg16 inverts it', () => {
  const z = torch.zeros([1]);
  const torchvision = new Map([
    ['features.0.weight', z], ['features.2.bias', z], ['features.5.weight', z], ['features.14.bias', z],
    ['features.17.weight', z], ['features.28.bias', z], ['classifier.0.weight', z], ['classifier.6.bias', z],
  ]);
  const mapped = torchvisionVgg16ToLpips(torchvision);
  assert.deepEqual([...mapped.keys()], [
    'net.slice1.0.weight', 'net.slice1.2.bias', 'net.slice2.5.weight', 'net.slice3.14.bias', 'net.slice4.17.weight', 'net.slice5.28.bias',
  ]);
  assert.deepEqual([...lpipsToTorchvisionVgg16(mapped).keys()], [...torchvision.keys()].filter((k) => k.startsWith('features.')));

  const state = model.stateDict();
  const trunk = new Map([...state].filter(([k]) => k.startsWith('net.')));
  const roundTrip = torchvisionVgg16ToLpips(lpipsToTorchvisionVgg16(state));
  assert.deepEqual([...roundTrip.keys()], [...trunk.keys()]);
  for (const [k, t] of roundTrip) assert.equal(t, trunk.get(k), k);
  assert.equal(roundTrip.size, 26, '13 convs, weight and bias');

  assert.throws(() => torchvisionVgg16ToLpips(new Map([['features.30.weight', z], ['fc.weight', z]])),
    /not torchvision vgg16 keys .*\[features\.30\.weight, fc\.weight\]/);
});

test('fromPretrained: a torchvision vgg16 state dict plus the legacy-format lin .pth give the same distances', () => {
  const dir = tempDir();
  try {
    const vgg = join(dir, 'vgg16.safetensors');
    const tensors = Object.fromEntries(lpipsToTorchvisionVgg16(model.stateDict()));
    saveSafetensors(vgg, { ...tensors, 'classifier.6.bias': torch.zeros([1000]) });
    const loaded = LPIPS.fromPretrained({ vgg16: vgg, lin: LIN_FILE });
    assert.equal(loaded.training, false);
    torch.noGrad(() => assertClose(loaded.forward(in0, in1), fx.distance, 1e-5, 1e-7, 'distance'));

    const partial = join(dir, 'partial.safetensors');
    saveSafetensors(partial, { 'features.0.weight': tensors['features.0.weight']!, 'features.0.bias': tensors['features.0.bias']! });
    assert.throws(() => LPIPS.fromPretrained({ vgg16: partial, lin: LIN_FILE }),
      (error: Error) => error.message.startsWith(`${partial}: missing keys [features.2.weight, features.2.bias, features.5.weight`)
        && error.message.includes('features.28.bias]'));
    const noLin = join(dir, 'lin.safetensors');
    saveSafetensors(noLin, { 'lin0.model.1.weight': torch.zeros([1, 64, 1, 1]), 'lin1.model.1.weight': torch.zeros([1, 12, 1, 1]) });
    assert.throws(() => LPIPS.fromPretrained({ vgg16: vgg, lin: noLin }),
      new RegExp(`^Error: ${noLin}: missing keys \\[lin2\\.model\\.1\\.weight, lin3\\.model\\.1\\.weight, lin4\\.model\\.1\\.weight\\]`));
    assert.throws(() => LPIPS.fromPretrained({ vgg16: vgg, lin: vgg }), new RegExp(`^Error: ${vgg}: expected only lin\\{0\\.\\.4\\}\\.model\\.1\\.weight`));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('loadCheckpoint takes the lpips package\'s full state dict (lins.K included); bad keys are named with the file', () => {
  const dir = tempDir();
  try {
    const state = model.stateDict();
    const packageLayout = Object.fromEntries(state);
    for (let k = 0; k < 5; k++) packageLayout[`lins.${k}.model.1.weight`] = state.get(`lin${k}.model.1.weight`)!;
    const file = join(dir, 'lpips.safetensors');
    saveSafetensors(file, packageLayout);
    const loaded = new LPIPS().loadCheckpoint(file);
    for (const [k, t] of loaded.stateDict()) assert.equal(t.sub(state.get(k)!).abs().max().item(), 0, k);

    delete packageLayout['net.slice5.28.bias'];
    packageLayout['lin5.model.1.weight'] = torch.zeros([1, 512, 1, 1]);
    saveSafetensors(file, packageLayout);
    assert.throws(() => new LPIPS().loadCheckpoint(file), (error: Error) => {
      assert.ok(error.message.startsWith(`${file}: `), error.message);
      assert.match(error.message, /missing keys \[net\.slice5\.28\.bias\], unexpected keys \[lin5\.model\.1\.weight\]/);
      return true;
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
