import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import * as torch from '../../src/torch/index.js';
import type { Tensor } from '../../src/torch/index.js';
import { saveSafetensors } from '../../src/io/index.js';
import { saveNpz } from '../../src/io/npz.js';
import { DINOV2_CONFIGS, DinoVisionTransformer, type DinoV2Config } from '../../src/models/dinov2.js';
import { ImageClassifier } from '../../src/models/classifier.js';
import { resize } from '../../src/data/resample.js';
import { evaluate, featureExtractor, dinov2Extractor, formatResult, writeFidStatistics } from '../../src/eval/index.js';
import { FIXTURES, assertClose, assertCloseToScale, float32Tolerance, loadFixture, withTmp } from '../helpers.js';

torch.setNumThreads(1);

/** make_dinov2.py's "plain" network (models/dinov2_plain_hub.pth), as a teacher's config records it. */
const PLAIN: DinoV2Config = {
  ...DINOV2_CONFIGS.dinov2_vits14!, imgSize: 28, patchSize: 14, embedDim: 32, depth: 2, numHeads: 2,
  ffnLayer: 'mlp', numRegisterTokens: 0, interpolateAntialias: false, interpolateOffset: 0.1,
};
const plain = (): DinoVisionTransformer => new DinoVisionTransformer(PLAIN).loadCheckpoint(join(FIXTURES, 'models', 'dinov2_plain_hub.pth'));
const nchw = (nhwc: Tensor): Tensor => nhwc.permute(0, 3, 1, 2).contiguous();
// float32 through 2 blocks whose longest sums run over the 128-wide MLP: normwise roundings of that
// depth (and of x / 127.5 - 1 against x / 255 before the normalization), far below a wrong weight's.
const DINO_TOLERANCE = float32Tolerance(128, 6);

const { cases } = loadFixture('eval/dinov2_features.json');

test('dinov2 features: dgm-eval\'s FD_DINOv2 input (x / 255, ImageNet mean/std) and the final norm\'s CLS token equal PyTorch\'s (own grid and interpolated)', () => {
  for (const c of cases) {
    const extractor = dinov2Extractor(plain(), { name: 'dinov2_test', inputSize: c.size, description: 'test' });
    const { pool3, spatial } = torch.noGrad(() => extractor.features(nchw(c.images)));
    assertCloseToScale(pool3, c.cls, DINO_TOLERANCE, `${c.size} px`);
    assert.equal(spatial, undefined, 'no spatial features');
    assert.equal(extractor.logits, undefined, 'no logits');
    assert.match(extractor.id, /^dinov2_test-[0-9a-f]{16}$/);
  }
});

test('dinov2 features resize other sizes to the input size with PIL\'s bicubic (src/data/resample.ts), not torch\'s interpolate', () => {
  torch.manualSeed(3);
  const images = torch.randint(0, 256, [2, 37, 37, 3], { dtype: 'uint8' });
  const pixels = images.toArray() as Uint8Array;
  const per = 37 * 37 * 3;
  const resized = torch.cat([0, 1].map((i) => torch.fromArray(resize({ data: pixels.subarray(i * per, (i + 1) * per), width: 37, height: 37, channels: 3 }, 28, 28, 'bicubic').data, [1, 28, 28, 3], 'uint8')));
  const extractor = dinov2Extractor(plain(), { name: 'dinov2_test', inputSize: 28, description: 'test' });
  torch.noGrad(() => assert.equal(extractor.features(nchw(images)).pool3.sub(extractor.features(nchw(resized)).pool3).abs().max().item(), 0));
});

test('--features <teacher backbone> reads the config in its metadata and gives its CLS token at its own size; offline DINOv2 and unknown files are one-line errors', withTmp('features', async (dir) => {
  const path = join(dir, 'teacher.safetensors');
  saveSafetensors(path, Object.fromEntries(plain().stateDict()), { config: JSON.stringify(PLAIN), source: 'reals teacher train (EMA teacher backbone)' });
  const extractor = await featureExtractor({ features: path, device: 'cpu' });
  assert.match(extractor.id, /^teacher-[0-9a-f]{16}$/);
  assert.match(extractor.description!, /CLS token at 28 px; no class logits \(no score over classes\), no spatial features \(no sFID\)/);
  const c = cases.find((x: { size: number }) => x.size === 28);
  torch.noGrad(() => assertCloseToScale(extractor.features(nchw(c.images)).pool3, c.cls, DINO_TOLERANCE, 'teacher'));

  const torchHome = process.env.TORCH_HOME;
  process.env.TORCH_HOME = dir;
  try {
    await assert.rejects(featureExtractor({ features: 'dinov2', offline: true }),
      /offline .*cannot fetch https:\/\/dl\.fbaipublicfiles\.com\/dinov2\/dinov2_vitl14\/dinov2_vitl14_pretrain\.pth; download it by hand to .*\/hub\/checkpoints\/dinov2_vitl14_pretrain\.pth/);
  } finally {
    if (torchHome === undefined) delete process.env.TORCH_HOME;
    else process.env.TORCH_HOME = torchHome;
  }
  await assert.rejects(featureExtractor({ features: join(dir, 'none.safetensors') }), /^Error: --features .*none\.safetensors: not inception or dinov2, and no such file$/);
  await assert.rejects(featureExtractor({ features: path, dinoModel: 'dinov2_vitb14' }), /--dino-model: not used by --features/);
  saveSafetensors(join(dir, 'bare.safetensors'), { w: torch.zeros([1]) });
  await assert.rejects(featureExtractor({ features: join(dir, 'bare.safetensors') }), /neither a classifier of reals classifier train .* nor a teacher backbone/);
}));

test('--features <classifier>: its penultimate features, its conv map as spatial, its logits; other sizes resized as PIL does', withTmp('features', async (dir) => {
  torch.manualSeed(1);
  const model = new ImageClassifier({ numClasses: 4, imageSize: 16, featureDim: 12 });
  const path = join(dir, 'classifier.safetensors');
  model.save(path, ['a', 'b', 'c', 'd']);
  const extractor = await featureExtractor({ features: path, device: 'cpu' });
  assert.match(extractor.id, /^classifier-[0-9a-f]{16}$/);
  const images = torch.randint(0, 256, [3, 3, 16, 16], { dtype: 'uint8' });
  torch.noGrad(() => {
    const expected = model.featureMaps(images.float().div(127.5).sub(1));
    const got = extractor.features(images);
    assertClose(got.pool3, expected.features, 0, 0, 'features');
    assertClose(got.spatial!, expected.spatial, 0, 0, 'spatial');
    assertClose(extractor.logits!(got.pool3), model.fc.forward(expected.features), 0, 0, 'logits');
    assert.deepEqual(extractor.features(torch.randint(0, 256, [2, 3, 24, 24], { dtype: 'uint8' })).pool3.shape, [2, 12]);
  });
}));

/** n random uint8 images [N, 28, 28, 3]. */
function batch(n: number, seed: number): Tensor {
  torch.manualSeed(seed);
  return torch.randint(0, 256, [n, 28, 28, 3], { dtype: 'uint8' });
}

test('evaluate with a network without logits or spatial features reports no score over classes and sFID as n/a, names the network, and refuses a REF of another network', withTmp('features', async (dir) => {
  const teacherPath = join(dir, 'teacher.safetensors');
  saveSafetensors(teacherPath, Object.fromEntries(plain().stateDict()), { config: JSON.stringify(PLAIN) });
  const teacher = await featureExtractor({ features: teacherPath, device: 'cpu' });
  saveNpz(join(dir, 'ref.npz'), { arr_0: batch(8, 1) });
  saveNpz(join(dir, 'sample.npz'), { arr_0: batch(8, 2) });
  const result = await evaluate(join(dir, 'ref.npz'), join(dir, 'sample.npz'), { extractor: teacher, isSplitSize: 8 });
  assert.equal('inceptionScore' in result || 'classifierScore' in result, false, 'no score over classes');
  assert.equal(result.sfid, null);
  assert.ok(result.fid > 0);
  assert.deepEqual(result.featureNetwork, { id: teacher.id, description: teacher.description });
  const text = formatResult(result);
  assert.match(text, new RegExp(`^features: ${teacher.id}: the teacher `, 'm'));
  assert.doesNotMatch(text, /Score/);
  assert.match(text, /^sFID +n\/a$/m);
  assert.match(text, /n\/a for this network: no score over classes \(no class logits\), sFID \(no spatial features\)/);

  // fid-stats records the network; the same network reads the file, another is refused naming both.
  await writeFidStatistics(join(dir, 'ref.npz'), join(dir, 'ref-stats.npz'), { extractor: teacher });
  const fromStats = await evaluate(join(dir, 'ref-stats.npz'), join(dir, 'sample.npz'), { extractor: teacher, isSplitSize: 8 });
  assert.ok(Math.abs(fromStats.fid - result.fid) < 1e-6 * result.fid, `${fromStats.fid} vs ${result.fid}`);
  torch.manualSeed(5);
  const classifierPath = join(dir, 'classifier.safetensors');
  new ImageClassifier({ numClasses: 3, imageSize: 16, featureDim: 8 }).save(classifierPath, ['a', 'b', 'c']);
  const classifier = await featureExtractor({ features: classifierPath, device: 'cpu' });
  await assert.rejects(evaluate(join(dir, 'ref-stats.npz'), join(dir, 'sample.npz'), { extractor: classifier, isSplitSize: 8 }),
    new RegExp(`ref-stats\\.npz: its statistics are of ${teacher.id}, not of ${classifier.id} \\(--features\\): FIDs of two feature networks cannot be compared`));
  // An ADM reference's statistics record no network: the FID Inception's, refused for any other.
  saveNpz(join(dir, 'adm.npz'), { mu: torch.zeros([32]).double(), sigma: torch.eye(32).double() });
  await assert.rejects(evaluate(join(dir, 'adm.npz'), join(dir, 'sample.npz'), { extractor: teacher, isSplitSize: 8 }),
    /adm\.npz: its statistics are of an unrecorded network \(ADM's reference batches: the FID Inception\), not of teacher-/);
  // The classifier has logits and spatial features: all five numbers, its score over classes named for it, not Inception's.
  const scored = await evaluate(join(dir, 'ref.npz'), join(dir, 'sample.npz'), { extractor: classifier, isSplitSize: 8 });
  assert.ok(scored.classifierScore! >= 1 && scored.classifierScore! <= 3 && scored.sfid !== null, JSON.stringify(scored));
  assert.equal('inceptionScore' in scored, false);
  const scoredText = formatResult(scored);
  assert.match(scoredText, new RegExp(`^features: ${classifier.id}: the classifier `, 'm'));
  assert.match(scoredText, /^Classifier Score: the Inception Score's formula over this classifier's classes, not an Inception Score$/m);
  assert.match(scoredText, new RegExp(`^Classifier Score +${scored.classifierScore!.toFixed(4)}$`, 'm'));
  assert.doesNotMatch(scoredText, /^Inception Score/m);
}));
