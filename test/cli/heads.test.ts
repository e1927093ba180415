import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import * as torch from '../../src/torch/index.js';
import { loadNpy, saveNpz, saveSafetensors } from '../../src/io/index.js';
import { AutoencoderKL } from '../../src/models/autoencoder-kl.js';
import { AlignmentHeads, saveAlignmentHeads } from '../../src/models/alignment.js';
import { DINOV2_CONFIGS, DinoVisionTransformer } from '../../src/models/dinov2.js';
import { LinearDepthHead, LinearSegmentationHead, readHeadCheckpoint, saveHead } from '../../src/models/heads.js';
import { encodePng } from '../../src/runlog/images.js';
import { runCompare, runDense, runTrainLinear } from '../../src/pipelines/index.js';
import { buildProgram } from '../../src/cli/main.js';

let dir = '';
const D = 8;
const SIDE = 16;

/** An image whose left half is red and right half blue, with some noise. */
function halves(seed: number): torch.Tensor {
  torch.manualSeed(seed);
  const image = torch.zeros([SIDE, SIDE, 3]);
  image.index(':', torch.slice(0, SIDE / 2), 0).fill_(220);
  image.index(':', torch.slice(SIDE / 2), 2).fill_(220);
  return image.add(torch.rand([SIDE, SIDE, 3]).mul(30)).clamp(0, 255).to('uint8');
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'reals-heads-cli-'));
  torch.manualSeed(0);
  new AutoencoderKL({
    blockOutChannels: [8, 16], downBlockTypes: Array(2).fill('DownEncoderBlock2D'), upBlockTypes: Array(2).fill('UpDecoderBlock2D'), normNumGroups: 4,
  }).savePretrained(join(dir, 'vae'));
  saveAlignmentHeads(join(dir, 'align.safetensors'), new AlignmentHeads({ latentChannels: 4, featureDim: D, hiddenDim: 16 }));
  const teacher = { imgSize: 56, embedDim: D, depth: 2, numHeads: 2 };
  writeFileSync(join(dir, 'teacher.json'), JSON.stringify(teacher));
  saveSafetensors(join(dir, 'teacher.safetensors'), Object.fromEntries(new DinoVisionTransformer({ ...DINOV2_CONFIGS.dinov2_vits14!, ...teacher }).stateDict()));
  saveHead(join(dir, 'seg.safetensors'), new LinearSegmentationHead({ inChannels: [D, D], inIndex: [0, 1], clsToken: true, numClasses: 3 }));
  saveHead(join(dir, 'seg6.safetensors'), new LinearSegmentationHead({ inChannels: [6], inIndex: [0], clsToken: false, numClasses: 3 }));
  saveHead(join(dir, 'depth.safetensors'), new LinearDepthHead({ inIndex: [0], channels: 2 * D, nBins: 8 }));
  mkdirSync(join(dir, 'images'));
  mkdirSync(join(dir, 'masks'));
  const mask = torch.zeros([SIDE, SIDE, 1], { dtype: 'uint8' });
  mask.index(':', torch.slice(0, SIDE / 2), 0).fill_(1);
  for (let i = 0; i < 10; i++) {
    writeFileSync(join(dir, 'images', `im${i}.png`), await encodePng(halves(i)));
    writeFileSync(join(dir, 'masks', `im${i}.png`), await encodePng(mask));
  }
});

after(() => rmSync(dir, { recursive: true, force: true }));

const common = () => ({
  vaePath: join(dir, 'vae'), alignCkpt: join(dir, 'align.safetensors'), dinoModel: join(dir, 'teacher.json'),
  dinoCkpt: join(dir, 'teacher.safetensors'), dinoInputSize: 28, imageSize: SIDE, batchSize: 2,
});

test('the commands are registered: reals segment, reals depth, reals heads compare|train-linear', () => {
  const program = buildProgram();
  const names = program.commands.map((c) => c.name());
  assert.ok(names.includes('segment') && names.includes('depth') && names.includes('heads'));
  assert.deepEqual(program.commands.find((c) => c.name() === 'heads')!.commands.map((c) => c.name()), ['compare', 'train-linear']);
});

test('reals segment --depth-head on images through the MLPs: a mask and a depth PNG per image, --raw arrays, a 3-column grid', async () => {
  const out = join(dir, 'seg-out');
  const images = [join(dir, 'images', 'im0.png'), join(dir, 'images', 'im1.png'), join(dir, 'images', 'im2.png')];
  const result = await runDense({
    ...common(), features: 'mlp', inputs: images, segHead: join(dir, 'seg.safetensors'), depthHead: join(dir, 'depth.safetensors'),
    out, raw: true, latentsNormalized: false,
  });
  assert.equal(result.images, 3);
  for (const name of ['im0', 'im1', 'im2']) {
    for (const file of [`${name}_mask.png`, `${name}_depth.png`]) {
      const meta = await sharp(join(out, file)).metadata();
      assert.deepEqual([meta.width, meta.height, meta.channels], [SIDE, SIDE, 3], file);
    }
    const labels = loadNpy(join(out, `${name}_labels.npy`));
    assert.deepEqual([labels.dtype, labels.shape], ['int64', [SIDE, SIDE]]);
    assert.ok(labels.ge(0).logicalAnd(labels.lt(3)).all().item());
    const depth = loadNpy(join(out, `${name}_depth.npy`));
    assert.ok(depth.ge(0.001).logicalAnd(depth.le(10)).all().item(), 'depth within [min, max]');
  }
  // make_grid: 3 columns x 3 rows of 16 px cells with 2 px padding.
  const grid = await sharp(join(out, 'grid.png')).metadata();
  assert.deepEqual([grid.width, grid.height], [3 * (SIDE + 2) + 2, 3 * (SIDE + 2) + 2]);
});

test('reals segment on 10 images lays grid.png out near square: 3 inputs a row, each image | mask, 4 rows', async () => {
  const out = join(dir, 'seg-grid');
  const names = Array.from({ length: 10 }, (_, i) => `im${i}`);
  await runDense({
    ...common(), features: 'mlp', inputs: names.map((name) => join(dir, 'images', `${name}.png`)), segHead: join(dir, 'seg.safetensors'),
    out, raw: false, latentsNormalized: false,
  });
  const grid = sharp(join(out, 'grid.png'));
  const meta = await grid.metadata();
  assert.deepEqual([meta.width, meta.height], [6 * (SIDE + 2) + 2, 4 * (SIDE + 2) + 2]);
  // Input k's mask is the cell right of its image, in row floor(k / 3).
  for (const k of [0, 4, 9]) {
    const cell = { left: 2 + (2 * (k % 3) + 1) * (SIDE + 2), top: 2 + Math.floor(k / 3) * (SIDE + 2), width: SIDE, height: SIDE };
    const inGrid = await sharp(join(out, 'grid.png')).extract(cell).raw().toBuffer();
    assert.deepEqual(inGrid, await sharp(join(out, `${names[k]}_mask.png`)).raw().toBuffer(), `input ${k}'s mask`);
  }
});

test('reals depth on a latent .npz (found by shape) with DINOv2 features writes one depth map per latent', async () => {
  const out = join(dir, 'depth-out');
  saveNpz(join(dir, 'lat.npz'), { labels: torch.zeros([3], { dtype: 'int64' }), latents: torch.randn([3, 4, SIDE / 2, SIDE / 2]) });
  const result = await runDense({
    ...common(), features: 'dino', inputs: [join(dir, 'lat.npz')], depthHead: join(dir, 'depth.safetensors'), out, raw: false, latentsNormalized: false,
  });
  assert.equal(result.images, 3);
  assert.ok(existsSync(join(out, 'lat_0002_depth.png')) && !existsSync(join(out, 'lat_0002_mask.png')));
  saveNpz(join(dir, 'bad.npz'), { a: torch.randn([2, 3, 4, 4]) });
  await assert.rejects(runDense({ ...common(), features: 'mlp', inputs: [join(dir, 'bad.npz')], depthHead: join(dir, 'depth.safetensors'), out, raw: false, latentsNormalized: false }),
    /bad\.npz: expected one float array \[N, 4, h, w\] \(--latents-key picks one\); it holds a: float32 \[2,3,4,4\]/);
});

test('a head whose input width does not match the MLP output width is refused, naming both widths', async () => {
  await assert.rejects(runDense({
    ...common(), features: 'mlp', inputs: [join(dir, 'images')], segHead: join(dir, 'seg6.safetensors'), out: join(dir, 'x'), raw: false, latentsNormalized: false,
  }), /seg6\.safetensors: reads 6-wide input, but the alignment MLPs output 8-wide features/);
});

test('reals heads compare scores the MLP route against the DINOv2 route', async () => {
  const result = await runCompare({ ...common(), inputs: [join(dir, 'images')], segHead: join(dir, 'seg.safetensors'), depthHead: join(dir, 'depth.safetensors') });
  assert.equal(result.images, 10);
  const { mIoU, pixelAgreement } = result.segmentation!;
  assert.ok(mIoU >= 0 && mIoU <= 1 && pixelAgreement >= 0 && pixelAgreement <= 1, JSON.stringify(result));
  assert.ok(Number.isFinite(result.depth!.rmse) && result.depth!.rmse >= 0 && result.depth!.rmse <= 10, JSON.stringify(result));
});

test('reals heads train-linear fits a head on a labelled folder (left half class 1) that scores well on held-out images', async () => {
  const out = join(dir, 'fitted.safetensors');
  const result = await runTrainLinear({
    ...common(), features: 'latent', dataPath: dir, out, maxImages: 10, holdout: 0.2, steps: 120, batchSize: 4, lr: 0.05, seed: 0,
  });
  assert.deepEqual([result.train, result.heldOut], [8, 2]);
  assert.ok(result.pixelAccuracy > 0.9, JSON.stringify(result));
  const ckpt = readHeadCheckpoint(out);
  assert.deepEqual(ckpt.config, { inChannels: [4, 4], inIndex: [0, 1], clsToken: true, numClasses: 2, resizeFactors: null });
});
