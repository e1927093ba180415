import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as torch from '../../src/torch/index.js';
import type { Tensor } from '../../src/torch/index.js';
import {
  LinearDepthHead, LinearSegmentationHead, buildHead, colorizeDepth, colorizeLabels, depthMap, depthRmse, fitSegmentationHead,
  layerFromTokens, readHeadCheckpoint, saveHead, segmentationLogits, segmentationScores, vocPalette, type LayerFeatures,
} from '../../src/models/heads.js';
import { saveSafetensors } from '../../src/io/index.js';
import { FIXTURES, assertClose, loadFixture } from '../helpers.js';

const fx = loadFixture('models/heads.json');
const D: number = fx.D;
const IMAGE = fx.image as [number, number];
const layers: LayerFeatures[] = fx.layers;
const patchesOnly = layers.map((l) => ({ patch: l.patch, cls: null }));
const SEG_PTH = join(FIXTURES, 'models/heads_seg_linear.pth');
const DEPTH_PTH = join(FIXTURES, 'models/heads_depth_linear.pth');

function stripped(state: Record<string, Tensor>): Record<string, Tensor> {
  return Object.fromEntries(Object.entries(state).map(([k, v]) => [k.replace(/^decode_head\./, ''), v]));
}

function loaded<T extends LinearSegmentationHead | LinearDepthHead>(head: T, state: Record<string, Tensor>): T {
  head.loadStateDict(stripped(state));
  head.eval();
  return head;
}

test('a released mmcv segmentation .pth loads through torch.load: decode_head.* keys, meta CLASSES and PALETTE', () => {
  const ckpt = readHeadCheckpoint(SEG_PTH);
  assert.equal(ckpt.task, 'segmentation');
  assert.deepEqual([...ckpt.stateDict.keys()],
    ['conv_seg.weight', 'conv_seg.bias', 'bn.weight', 'bn.bias', 'bn.running_mean', 'bn.running_var', 'bn.num_batches_tracked']);
  assert.deepEqual(ckpt.classes, ['wall', 'floor', 'tree', 'sky', 'road']);
  assert.deepEqual(ckpt.palette![2], [4, 200, 3]);
  const head = buildHead(ckpt, { featureDim: D, source: 'the test features' }) as LinearSegmentationHead;
  assert.deepEqual(head.config, { inChannels: [D], inIndex: [0], clsToken: false, numClasses: 5, resizeFactors: null });
  assert.equal(head.training, false);
});

test('segmentation "linear" head (BN + 1x1 conv on the last layer) matches PyTorch, before and after the resize to the image', () => {
  torch.noGrad(() => {
    const head = buildHead(readHeadCheckpoint(SEG_PTH), { featureDim: D, source: 'the test features' }) as LinearSegmentationHead;
    assertClose(head.forward([patchesOnly[3]!]), fx.cases.seg_linear.logits, 1e-5, 1e-6, 'logits');
    assertClose(segmentationLogits(head, [patchesOnly[3]!], IMAGE), fx.cases.seg_linear.resized, 1e-5, 1e-6, 'resized logits');
    // The same weights reading input 3 of the four layers, as the config's in_index [3] does.
    const indexed = new LinearSegmentationHead({ inChannels: [D], inIndex: [3], clsToken: false, numClasses: 5 });
    indexed.loadStateDict(head.stateDict());
    assertClose(indexed.eval().forward(patchesOnly), fx.cases.seg_linear.logits, 1e-5, 1e-6, 'in_index [3]');
  });
});

test('segmentation "ms" head (four layers concatenated), resize factors (bilinear up, area down) and a (patch, CLS) head match PyTorch', () => {
  torch.noGrad(() => {
    const ms = loaded(new LinearSegmentationHead({ inChannels: [D, D, D, D], inIndex: [0, 1, 2, 3], clsToken: false, numClasses: 3 }), fx.cases.seg_ms.state);
    assertClose(ms.forward(patchesOnly), fx.cases.seg_ms.logits, 1e-5, 1e-6, 'ms logits');
    assertClose(segmentationLogits(ms, patchesOnly, IMAGE), fx.cases.seg_ms.resized, 1e-5, 1e-6, 'ms resized');
    const factors = loaded(new LinearSegmentationHead({ inChannels: [D, D, D], inIndex: [0, 1, 2], clsToken: false, numClasses: 4, resizeFactors: [2, 1, 0.5] }),
      fx.cases.seg_factors.state);
    assertClose(factors.forward(patchesOnly.slice(0, 3)), fx.cases.seg_factors.logits, 1e-5, 1e-6, 'resize factors');
    const withCls = loaded(new LinearSegmentationHead({ inChannels: [D, D], inIndex: [0, 1], clsToken: true, numClasses: 4 }), fx.cases.seg_cls.state);
    assertClose(withCls.forward([layers[3]!]), fx.cases.seg_cls.logits, 1e-5, 1e-6, 'patch + CLS');
    assert.throws(() => withCls.forward([patchesOnly[3]!]), /reads \(patch, CLS\) pairs, but a layer has no CLS token/);
  });
});

test('depth "linear" head from a released .pth (CLS concatenated, upsample 4, 256 UD bins, linear norm) matches PyTorch, clamped and resized', () => {
  torch.noGrad(() => {
    const ckpt = readHeadCheckpoint(DEPTH_PTH);
    assert.equal(ckpt.task, 'depth');
    assert.deepEqual([...ckpt.stateDict.keys()], ['conv_depth.weight', 'conv_depth.bias']);
    const head = buildHead(ckpt, { featureDim: D, source: 'the test features', maxLayers: 1 }) as LinearDepthHead;
    assert.deepEqual(head.config, {
      clsToken: true, upsample: 4, classify: true, nBins: 256, binsStrategy: 'UD', normStrategy: 'linear', minDepth: 0.001, maxDepth: 10,
      scaleUp: false, inIndex: [0], channels: 2 * D,
    });
    assertClose(head.forward([layers[3]!]), fx.cases.depth_linear.depth, 1e-5, 1e-6, 'depth');
    assertClose(depthMap(head, [layers[3]!], IMAGE), fx.cases.depth_linear.resized, 1e-5, 1e-6, 'clamped, resized depth');
  });
});

test('depth "linear4" (four layers), SID bins with softmax, UD with sigmoid, and regression match PyTorch', () => {
  torch.noGrad(() => {
    const linear4 = loaded(new LinearDepthHead({ inIndex: [0, 1, 2, 3], channels: 8 * D, nBins: 32, maxDepth: 80 }), fx.cases.depth_linear4.state);
    assertClose(linear4.forward(layers), fx.cases.depth_linear4.depth, 1e-5, 1e-6, 'linear4');
    for (const [bins, norm] of [['SID', 'softmax'], ['UD', 'sigmoid']] as const) {
      const head = loaded(new LinearDepthHead({ inIndex: [0], channels: 2 * D, nBins: 16, binsStrategy: bins, normStrategy: norm, maxDepth: 1.5, upsample: 2 }),
        fx.cases[`depth_${bins}_${norm}`].state);
      assertClose(head.forward([layers[0]!]), fx.cases[`depth_${bins}_${norm}`].depth, 1e-5, 1e-6, `${bins}/${norm}`);
    }
    const regress = loaded(new LinearDepthHead({ inIndex: [0], channels: 2 * D, classify: false, upsample: 1 }), fx.cases.depth_regress.state);
    assertClose(regress.forward([layers[1]!]), fx.cases.depth_regress.depth, 1e-5, 1e-6, 'regression');
  });
});

test('a head whose input width does not match the feature width is refused, naming both widths; so is a multi-layer head on one layer', () => {
  assert.throws(() => buildHead(readHeadCheckpoint(SEG_PTH), { featureDim: 4, source: 'the alignment MLPs' }),
    /reads 6-wide input .*but the alignment MLPs output 4-wide features/);
  assert.throws(() => buildHead(readHeadCheckpoint(DEPTH_PTH), { featureDim: 5, source: 'the alignment MLPs' }),
    /reads 12-wide input .*patch \+ CLS per layer\), but the alignment MLPs output 5-wide features/);
  const ckpt = { ...readHeadCheckpoint(SEG_PTH), stateDict: new Map(Object.entries(stripped(fx.cases.seg_ms.state))) };
  assert.throws(() => buildHead(ckpt, { featureDim: D, source: 'the alignment MLPs', maxLayers: 1 }), /reads 4 layers, but the alignment MLPs give 1/);
  assert.throws(() => buildHead(ckpt, { featureDim: 9, source: 'DINOv2' }), /reads 24-wide input .*but DINOv2 output 9-wide features/);
});

test('saveHead writes safetensors with decode_head.* keys and the config; reading it back gives the same head and outputs', () => {
  const dir = mkdtempSync(join(tmpdir(), 'reals-heads-'));
  try {
    torch.noGrad(() => {
      const head = loaded(new LinearSegmentationHead({ inChannels: [D, D], inIndex: [0, 1], clsToken: true, numClasses: 4 }), fx.cases.seg_cls.state);
      const path = join(dir, 'head.safetensors');
      saveHead(path, head, { CLASSES: ['a', 'b', 'c', 'd'] });
      const ckpt = readHeadCheckpoint(path);
      assert.deepEqual(ckpt.config, head.config);
      assert.deepEqual(ckpt.classes, ['a', 'b', 'c', 'd']);
      const again = buildHead(ckpt, { featureDim: D, source: 'the test features', maxLayers: 1 });
      assertClose(again.forward([layers[3]!]), fx.cases.seg_cls.logits, 1e-5, 1e-6, 'reloaded');
      const bad = join(dir, 'bad.safetensors');
      saveSafetensors(bad, { 'decode_head.conv_seg.weight': torch.zeros([2, 3, 1, 1]) },
        { reals_head: JSON.stringify({ config: { ...head.config, numClasses: 0 }, meta: {} }) });
      assert.throws(() => readHeadCheckpoint(bad), /bad\.safetensors\): invalid metadata "reals_head": config\.numClasses/);
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('layerFromTokens lays row-major patch tokens [B, h*w, D] out as a map [B, D, h, w]', () => {
  const tokens = torch.arange(2 * 6 * 3).reshape(2, 6, 3).float();
  const layer = layerFromTokens(tokens, torch.zeros([2, 3]), [2, 3]);
  assert.deepEqual(layer.patch.shape, [2, 3, 2, 3]);
  // Position (row 1, column 2) is token 1 * 3 + 2 = 5.
  assert.deepEqual(layer.patch.index(1, ':', 1, 2).tolist(), tokens.index(1, 5).tolist());
  assert.throws(() => layerFromTokens(tokens, null, [2, 2]), /expected patch tokens \[B, 2\*2, D\], got \[2,6,3\]/);
});

test('fitSegmentationHead recovers a planted linear labelling (held-out pixel accuracy > 0.95) and does not on unrelated labels', () => {
  torch.manualSeed(0);
  const [n, d, g, classes] = [96, 8, 4, 3];
  const w = torch.randn([classes, d]);
  const make = (count: number): { layer: LayerFeatures; masks: Tensor } => {
    const patch = torch.randn([count, d, g, g]);
    const masks = patch.permute(0, 2, 3, 1).matmul(w.t()).argmax(-1);
    return { layer: { patch, cls: null }, masks };
  };
  const train = make(n);
  const heldOut = make(64);
  const fit = (masks: Tensor): LinearSegmentationHead => {
    const head = new LinearSegmentationHead({ inChannels: [d], inIndex: [0], clsToken: false, numClasses: classes });
    const losses = fitSegmentationHead(head, [train.layer], masks, { steps: 150, batchSize: 16, lr: 0.05 });
    assert.ok(losses.every(Number.isFinite));
    return head;
  };
  const predict = (head: LinearSegmentationHead): Tensor => torch.noGrad(() => segmentationLogits(head, [heldOut.layer], [g, g]).argmax(1));
  const planted = segmentationScores(predict(fit(train.masks)), heldOut.masks, classes);
  assert.ok(planted.pixelAccuracy > 0.95, `planted labelling: held-out accuracy ${planted.pixelAccuracy}`);
  const shuffled = train.masks.flatten().index(torch.randperm(train.masks.numel())).reshape(train.masks.shape);
  const chance = segmentationScores(predict(fit(shuffled)), heldOut.masks, classes);
  assert.ok(chance.pixelAccuracy < 0.6, `unrelated labels: held-out accuracy ${chance.pixelAccuracy}`);
});

test('segmentationScores: mIoU over classes present, pixel accuracy over pixels not ignored; depthRmse', () => {
  const target = torch.tensor([[[0, 0, 1, 255]]]);
  const prediction = torch.tensor([[[0, 1, 1, 2]]]);
  const scores = segmentationScores(prediction, target, 3);
  // class 0: 1 / 2, class 1: 1 / 2, class 2: absent from both (the ignored pixel does not count).
  assert.deepEqual(scores.iou.slice(0, 2), [0.5, 0.5]);
  assert.ok(Number.isNaN(scores.iou[2]!));
  assert.equal(scores.mIoU, 0.5);
  assert.equal(scores.pixelAccuracy, 2 / 3);
  assert.equal(depthRmse(torch.tensor([1, 2, 3, 4]).float(), torch.tensor([1, 2, 3, 6]).float()), 1);
});

test('pictures: the VOC palette, palette-coloured labels, Turbo-coloured depth (near red, far dark)', () => {
  const palette = vocPalette(16);
  assert.deepEqual([palette[0], palette[1], palette[2], palette[3], palette[15]], [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [192, 128, 128]]);
  const image = colorizeLabels(torch.tensor([[1, 2], [99, 0]]), palette.slice(0, 3));
  assert.deepEqual(image.tolist(), [[[128, 0, 0], [0, 128, 0]], [[0, 0, 0], [0, 0, 0]]]);
  assert.equal(image.dtype, 'uint8');
  const depth = colorizeDepth(torch.tensor([[0.5, 10]]));
  const [near, far] = (depth.tolist() as number[][][])[0]!;
  assert.ok(near![0]! > 100 && near![2]! < 50, `near ${near}`);
  assert.ok(far!.every((v) => v < 60), `far ${far}`);
});
