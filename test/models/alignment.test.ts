import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '../../src/torch/index.js';
import type { Tensor } from '../../src/torch/index.js';
import { join } from 'node:path';
import * as nn from '../../src/nn/index.js';
import {
  AlignmentHeads, alignmentLoss, loadAlignmentHeads, parseAlignmentConfig, resampleNotice, resampleTokens, saveAlignmentHeads, spatialNormalize, vfLoss,
} from '../../src/models/alignment.js';
import { calculateAdaptiveWeight } from '../../src/models/discriminator.js';
import { assertClose, loadFixture, withTmp } from '../helpers.js';

const fx = loadFixture('models/alignment.json');
const vf = loadFixture('models/align_vf.json');
const F = nn.F;

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
    assertClose(mean.cls!, fx.cls_mean, 1e-5, 1e-6, 'cls (mean)');
    assertClose(heads('avgpool').forward(fx.z).cls!, fx.cls_avgpool, 1e-5, 1e-6, 'cls (avgpool)');
  });
  assert.throws(() => heads('mean').forward(torch.zeros([1, 3, 2, 2])), /expected latents \[B, 4, h, w\], got \[1,3,2,2\]/);
});

test('alignment loss (1 - cosine + smooth-L1, weighted patch and CLS terms) and its gradient match PyTorch', () => {
  const z = (fx.z as Tensor).clone().requiresGrad_();
  const result = alignmentLoss(heads('mean').forward(z), { patch: fx.target_patch, cls: fx.target_cls },
    { patchWeight: 0.5, clsWeight: 0.25, smoothL1Weight: 0.1 });
  assertClose(result.patch, fx.patch_term, 1e-5, 1e-6, 'patch term');
  assertClose(result.cls!, fx.cls_term, 1e-5, 1e-6, 'cls term');
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
  assert.ok(Math.abs(orthogonal.patch.item() - 1) < 1e-6 && Math.abs(orthogonal.clsCosine!.item()) < 1e-6);
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

// --- the variants (fixtures: test/fixtures/make_align_vf.py) -------------------------------------
// Tolerances: float32 throughout; each loss is a mean of at most 2 * 30 * 30 terms and each
// gradient entry sums about a hundred products, so PyTorch and libtorch agree to a few ulps
// (relative 1e-5); a wrong margin, weight, axis or normalisation moves them by 1e-2 or more.

test('vf loss: the margin cosine and margin distance-matrix terms match PyTorch from VA-VAE\'s formulas, with each margin and weight where it belongs', () => {
  const defaults = vfLoss(vf.prediction, vf.target);
  assertClose(defaults.cos, vf.cos_term, 1e-5, 1e-7, 'cosine term (margin 0.5)');
  assertClose(defaults.distmat, vf.distmat_term, 1e-5, 1e-7, 'distance-matrix term (margin 0.25)');
  assertClose(defaults.loss, vf.vf, 1e-5, 1e-7, 'vf = cos + distmat');
  const custom = vfLoss(vf.pred2, vf.target2, { cosMargin: 0.1, distmatMargin: 0.05, cosWeight: 0.7, distmatWeight: 1.3 });
  assertClose(custom.cos, vf.cos2, 1e-5, 1e-7, 'cosine term (margin 0.1)');
  assertClose(custom.distmat, vf.distmat2, 1e-5, 1e-7, 'distance-matrix term (margin 0.05)');
  assertClose(custom.loss, vf.vf2, 1e-5, 1e-7, '0.7 cos + 1.3 distmat');
  assert.throws(() => vfLoss(vf.prediction, vf.target.slice(1, 0, 29)), /vfLoss: prediction \[2,30,12\] and target \[2,29,12\] must be the same/);
});

test('iREPA\'s spatial normalisation of teacher tokens matches PyTorch: per image and channel over positions', () => {
  const normalized = spatialNormalize(vf.features);
  assertClose(normalized, vf.target, 1e-5, 1e-6, 'spatially normalised tokens');
  assertClose(spatialNormalize(vf.features, 0.6), vf.target_alpha, 1e-5, 1e-6, 'alpha 0.6 of the mean subtracted');
  const std = normalized.std(1);
  assert.ok(normalized.mean(1).abs().max().item() < 1e-5 && std.sub(1).abs().max().item() < 1e-5, 'zero mean, unit std over positions');
  assert.throws(() => spatialNormalize(torch.zeros([2, 1, 4])), /expected tokens \[B, N >= 2, D\], got \[2,1,4\]/);
});

test('VA-VAE\'s adaptive weight at the encoder\'s last layer and the gradients of nll + weight * vf match PyTorch (conv3 projector, spatial targets, no CLS)', () => {
  const encLast = new nn.Conv2d(3, 4, 3, { padding: 1 });
  encLast.loadStateDict(vf.enc_last);
  const decoder = new nn.Conv2d(4, 3, 3, { padding: 1 });
  decoder.loadStateDict(vf.decoder);
  const projector = new AlignmentHeads({ latentChannels: 4, featureDim: 12, patchProj: 'conv3', clsHead: false, alignLoss: 'vf', teacherNorm: 'spatial' });
  projector.loadStateDict(vf.conv_patch);
  // The trainer's composition: the weight is a function of the vf term (it needs its gradient).
  const z = encLast.forward(vf.x);
  const nll = F.l1Loss(decoder.forward(z), vf.x);
  assertClose(nll, vf.nll, 1e-5, 1e-7, 'nll');
  const predicted = projector.forward(z);
  assert.equal(predicted.cls, null);
  assertClose(predicted.patch, vf.prediction, 1e-5, 1e-6, 'conv3 projector tokens (row-major positions)');
  const align = alignmentLoss(predicted, { patch: spatialNormalize(vf.features), cls: null }, {
    alignLoss: 'vf', patchWeight: (patch) => calculateAdaptiveWeight(nll, patch, encLast.weight, 0.1, 1e8),
  });
  assert.equal(align.cls, null);
  assertClose(align.patch, vf.vf, 1e-5, 1e-7, 'vf term');
  assertClose(align.patchWeight as Tensor, vf.vf_weight, 1e-5, 0, 'adaptive weight');
  const total = nll.add(align.loss);
  assertClose(total, vf.total, 1e-5, 1e-7, 'nll + weight * vf');
  total.backward();
  assertClose(encLast.weight.grad!, vf.enc_last_grad, 1e-5, 1e-6, 'd total / d encoder last layer');
  assertClose((projector.patchProjector as nn.Conv2d).weight.grad!, vf.conv_patch_grad, 1e-5, 1e-6, 'd total / d conv_patch.weight');
});

test('conv3 and patch-only heads: keys conv_patch.* and no mlp_cls.*, a config that round-trips through align.safetensors', withTmp('align-heads', (dir) => {
  const heads = new AlignmentHeads({ latentChannels: 4, featureDim: 8, hiddenDim: 5, patchProj: 'conv3', clsHead: false, teacherNorm: 'spatial', alignLoss: 'vf' });
  assert.deepEqual([...heads.stateDict()].map(([k, t]) => [k, t.shape]), [['conv_patch.weight', [8, 4, 3, 3]], ['conv_patch.bias', [8]]]);
  const withCls = new AlignmentHeads({ latentChannels: 4, featureDim: 8, hiddenDim: 5, depth: 1, patchProj: 'conv3' });
  assert.deepEqual([...withCls.stateDict().keys()], ['conv_patch.weight', 'conv_patch.bias', 'mlp_cls.0.weight', 'mlp_cls.0.bias']);
  const path = join(dir, 'align.safetensors');
  saveAlignmentHeads(path, heads);
  const loaded = loadAlignmentHeads(path);
  assert.deepEqual(loaded.config, heads.config);
  const z = torch.randn([2, 4, 3, 5]);
  torch.noGrad(() => assertClose(loaded.forward(z).patch, heads.forward(z).patch, 0, 0, 'reloaded forward'));
  // A config written before the variants existed reads as the heads it describes.
  const old = { latentChannels: 4, featureDim: 8, hiddenDim: 5, depth: 3, clsPooling: 'mean', clsPoolSize: 4 };
  assert.deepEqual(parseAlignmentConfig(old, 'old'), { ...old, patchProj: 'mlp', clsHead: true, teacherNorm: 'none', teacherNormAlpha: 1, alignLoss: 'cos' });
  assert.throws(() => parseAlignmentConfig({ ...old, patchProj: 'conv5' }, 'file.safetensors'), /file\.safetensors: invalid AlignmentConfig: patchProj: /);
  assert.throws(() => new AlignmentHeads({ latentChannels: 4, featureDim: 8, teacherNorm: 'zscore' as 'spatial' }), /teacherNorm must be 'none' or 'spatial', got 'zscore'/);
  assert.throws(() => new AlignmentHeads({ latentChannels: 4, featureDim: 8, teacherNormAlpha: 1.5 }), /teacherNormAlpha must be in \[0, 1\], got 1.5/);
  assert.throws(() => alignmentLoss(heads.forward(z), { patch: torch.zeros([2, 15, 8]), cls: torch.zeros([2, 8]) }), /the prediction has no CLS token and the target one/);
}));

test('the cos loss with no CLS head is the weighted patch term alone, logged per term', () => {
  const target = { patch: torch.randn([2, 5, 6]), cls: null };
  const prediction = { patch: torch.randn([2, 5, 6]), cls: null };
  const result = alignmentLoss(prediction, target, { patchWeight: 0.3 });
  const expected = F.cosineSimilarity(prediction.patch, target.patch, -1).mean().rsub(1);
  assertClose(result.patch, expected, 1e-6, 1e-7, 'patch term');
  assertClose(result.patchCosTerm, expected, 0, 0, 'the cosine term is the patch term');
  assertClose(result.loss, expected.mul(0.3), 1e-6, 1e-7, '0.3 * patch');
  assert.equal(result.distmat, null);
  assert.equal(result.clsCosine, null);
});
