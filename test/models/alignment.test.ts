import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '../../src/torch/index.js';
import type { Tensor } from '../../src/torch/index.js';
import { AlignmentHeads, alignmentLoss, resampleNotice, resampleTokens } from '../../src/models/alignment.js';
import { assertClose, loadFixture } from '../helpers.js';

const fx = loadFixture('models/alignment.json');

function heads(pooling: 'mean' | 'avgpool'): AlignmentHeads {
  const model = new AlignmentHeads({ ...fx.config, clsPooling: pooling });
  model.loadStateDict({ ...fx.mlp_patch, ...(pooling === 'mean' ? fx.mlp_cls_mean : fx.mlp_cls_avgpool) });
  return model;
}

test('state-dict keys are mlp_patch.* and mlp_cls.*, REPA\'s Sequential(Linear, SiLU, Linear, SiLU, Linear)', () => {
  const keys = [...new AlignmentHeads({ latentChannels: 4, featureDim: 8 }).stateDict().keys()];
  const mlp = (name: string) => [0, 2, 4].flatMap((i) => [`${name}.${i}.weight`, `${name}.${i}.bias`]);
  assert.deepEqual(keys, [...mlp('mlp_patch'), ...mlp('mlp_cls')]);
  const model = new AlignmentHeads({ latentChannels: 4, featureDim: 8, depth: 2, hiddenDim: 5, clsPooling: 'avgpool', clsPoolSize: 3 });
  assert.deepEqual([...model.stateDict()].map(([k, t]) => [k, t.shape]), [
    ['mlp_patch.0.weight', [5, 4]], ['mlp_patch.0.bias', [5]], ['mlp_patch.2.weight', [8, 5]], ['mlp_patch.2.bias', [8]],
    ['mlp_cls.0.weight', [5, 36]], ['mlp_cls.0.bias', [5]], ['mlp_cls.2.weight', [8, 5]], ['mlp_cls.2.bias', [8]],
  ]);
  assert.throws(() => new AlignmentHeads({ latentChannels: 4, featureDim: 8, depth: 0 }), /depth must be a positive integer, got 0/);
});

test('forward matches PyTorch on fixed weights: patch tokens per latent position (row-major), CLS after mean or avgpool pooling', () => {
  torch.noGrad(() => {
    const mean = heads('mean').forward(fx.z);
    assertClose(mean.patch, fx.patch, 1e-5, 1e-6, 'patch');
    assertClose(mean.cls, fx.cls_mean, 1e-5, 1e-6, 'cls (mean)');
    assertClose(heads('avgpool').forward(fx.z).cls, fx.cls_avgpool, 1e-5, 1e-6, 'cls (avgpool)');
  });
  assert.throws(() => heads('mean').forward(torch.zeros([1, 3, 2, 2])), /expected latents \[B, 4, h, w\], got \[1,3,2,2\]/);
});

test('alignment loss (1 - cosine + smooth-L1, weighted patch and CLS terms) and its gradient match PyTorch', () => {
  const z = (fx.z as Tensor).clone().requiresGrad_();
  const result = alignmentLoss(heads('mean').forward(z), { patch: fx.target_patch, cls: fx.target_cls },
    { patchWeight: 0.5, clsWeight: 0.25, smoothL1Weight: 0.1 });
  assertClose(result.patch, fx.patch_term, 1e-5, 1e-6, 'patch term');
  assertClose(result.cls, fx.cls_term, 1e-5, 1e-6, 'cls term');
  assertClose(result.loss, fx.loss, 1e-5, 1e-6, 'loss');
  result.loss.backward();
  assertClose(z.grad!, fx.z_grad, 1e-5, 1e-7, 'dloss/dz');
});

test('the loss is 0 with cosine 1 for aligned predictions and 1 with cosine 0 for orthogonal ones', () => {
  const target = { patch: torch.randn([2, 5, 6]), cls: torch.randn([2, 6]) };
  const same = alignmentLoss({ patch: target.patch.mul(3), cls: target.cls.mul(0.5) }, target);
  assert.ok(Math.abs(same.loss.item()) < 1e-6 && Math.abs(same.patchCosine.item() - 1) < 1e-6);
  const e = (i: number) => torch.eye(6).select(0, i);
  const orthogonal = alignmentLoss({ patch: e(0).expand(2, 5, 6), cls: e(1).expand(2, 6) }, { patch: e(2).expand(2, 5, 6), cls: e(3).expand(2, 6) });
  assert.ok(Math.abs(orthogonal.patch.item() - 1) < 1e-6 && Math.abs(orthogonal.clsCosine.item()) < 1e-6);
  assert.ok(Math.abs(orthogonal.loss.item() - 1) < 1e-6, 'default weights 0.5 + 0.5');
  assert.throws(() => alignmentLoss({ patch: target.patch, cls: target.cls }, { patch: target.patch.slice(1, 1), cls: target.cls }),
    /patch prediction \[2,5,6\] and target \[2,4,6\] differ/);
});

test('token grids are resampled to the latent grid as PyTorch: bilinear when growing, area when shrinking, unchanged when equal', () => {
  const grown = resampleTokens(fx.grid, [4, 4], [6, 5]);
  assertClose(grown, fx.grown, 1e-5, 1e-6, 'bilinear 4x4 -> 6x5');
  assert.ok(grown.isContiguous(), 'resampled tokens are contiguous (the cosine loss reads them along D)');
  assertClose(resampleTokens(fx.big, [8, 8], [3, 3]), fx.shrunk, 1e-5, 1e-6, 'area 8x8 -> 3x3');
  assert.equal(resampleTokens(fx.grid, [4, 4], [4, 4]), fx.grid);
  assert.throws(() => resampleTokens(fx.grid, [5, 5], [4, 4]), /expected tokens \[B, 5\*5, D\]/);
  assert.equal(resampleNotice([32, 32], [32, 32]), null);
  assert.match(resampleNotice([16, 16], [32, 32])!, /token grid 16x16 differs from the latent grid 32x32; patch tokens are bilinearly interpolated/);
  assert.match(resampleNotice([37, 37], [32, 32])!, /area-averaged to 32x32/);
});
