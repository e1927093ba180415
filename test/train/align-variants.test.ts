// The alignment variants of `reals align train` (--align-loss, --teacher-norm, --patch-proj,
// --cls-weight 0) through the pipelines the CLI calls: a tiny run, its checkpoint's metadata and
// keys, its per-term metrics, `align convert` and align.safetensors read back.
import { before, after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as torch from '../../src/torch/index.js';
import { saveSafetensors, SafetensorsFile, writeJsonFileAtomic } from '../../src/io/index.js';
import { AutoencoderKL, configToDiffusers } from '../../src/models/autoencoder-kl.js';
import { DINOV2_CONFIGS, DinoVisionTransformer } from '../../src/models/dinov2.js';
import { loadAlignmentHeads } from '../../src/models/alignment.js';
import { loadCheckpoint } from '../../src/train/index.js';
import { parseMetrics } from '../../src/runlog/index.js';
import { ALIGN_HEADS_NAME, loadAlignedModels } from '../../src/train/align-convert.js';
import { runAlignConvert, runAlignTrain, type AlignTrainRunOptions } from '../../src/pipelines/align.js';
import { alignTrainCommand } from '../../src/cli/align.js';
import { assertClose } from '../helpers.js';

let dir: string;
let common: AlignTrainRunOptions;

before(() => {
  dir = realpathSync(mkdtempSync(join(tmpdir(), 'reals-align-variants-')));
  torch.manualSeed(0);
  // A teacher whose 56 px input gives 4x4 tokens of width 32; a VAE with 8x8 latents of 28 px Fashion-MNIST images.
  const teacherConfig = { imgSize: 56, embedDim: 32, depth: 1, numHeads: 2 };
  writeFileSync(join(dir, 'teacher.json'), JSON.stringify(teacherConfig));
  saveSafetensors(join(dir, 'teacher.safetensors'), Object.fromEntries(new DinoVisionTransformer({ ...DINOV2_CONFIGS.dinov2_vits14!, ...teacherConfig }).stateDict()));
  writeJsonFileAtomic(join(dir, 'vae.json'), configToDiffusers(new AutoencoderKL({
    blockOutChannels: [8, 16, 16], downBlockTypes: Array(3).fill('DownEncoderBlock2D'), upBlockTypes: Array(3).fill('UpDecoderBlock2D'), normNumGroups: 4,
  }).config));
  common = {
    dataPath: 'fashion-mnist', dinoModel: join(dir, 'teacher.json'), dinoCkpt: join(dir, 'teacher.safetensors'), dinoInputSize: 56,
    vaeConfig: join(dir, 'vae.json'), lpipsWeight: 0, batchSize: 4, numWorkers: 0, mlpHidden: 16, logEvery: 1, maxSteps: 3, lr: 1e-3,
    precision: 'fp32', log: () => {},
  };
});

after(() => rmSync(dir, { recursive: true, force: true }));

/** Trains, converts, and returns the checkpoint, the per-step metrics and the output folder. */
async function trainAndConvert(name: string, variant: Partial<AlignTrainRunOptions>) {
  const result = await runAlignTrain({ ...common, ...variant, resultsDir: join(dir, name) });
  const records = parseMetrics(readFileSync(join(result.runDir, 'metrics.jsonl'), 'utf8'));
  const out = join(dir, `${name}-vae`);
  await runAlignConvert({ ckpt: result.checkpoint!, outputDir: out, dataPath: 'fashion-mnist', numSamples: 8, batchSize: 8, useEma: true, log: () => {} });
  return { checkpoint: loadCheckpoint(result.checkpoint!), records, out, path: result.checkpoint!, runDir: result.runDir };
}

// float32 sums of a few terms: the logged total equals the logged terms' combination to rounding.
const near = (a: number, b: number, what: string) => assert.ok(Math.abs(a - b) <= 1e-5 * Math.max(1, Math.abs(b)), `${what}: ${a} vs ${b}`);

test('--align-loss vf --teacher-norm spatial --patch-proj conv3 --cls-weight 0: recorded everywhere, no CLS weights, vf terms logged', async () => {
  const { checkpoint, records, out, path, runDir } = await trainAndConvert('vf-conv3', {
    alignLoss: 'vf', teacherNorm: 'spatial', teacherNormAlpha: 0.6, patchProj: 'conv3', clsWeight: 0, discStart: 1, vfMarginCos: 0.4,
  });
  const config = {
    latentChannels: 4, featureDim: 32, hiddenDim: 16, depth: 3, clsPooling: 'mean', clsPoolSize: 4, patchProj: 'conv3', clsHead: false, teacherNorm: 'spatial', teacherNormAlpha: 0.6, alignLoss: 'vf',
  };
  assert.deepEqual(checkpoint.metadata.heads_config, config);
  const args = checkpoint.metadata.args as Record<string, unknown>;
  assert.deepEqual(
    [args.alignLoss, args.teacherNorm, args.teacherNormAlpha, args.patchProj, args.clsWeight, args.vfMarginCos, args.vfMarginDistmat, args.vfWeightCos, args.vfWeightDistmat, args.vfWeight, args.vfAdaptive],
    ['vf', 'spatial', 0.6, 'conv3', 0, 0.4, 0.25, 1, 1, 0.1, true],
  );
  for (const group of ['model', 'ema', 'opt'] as const) {
    const keys = Object.keys(checkpoint.groups[group]!);
    assert.ok(!keys.some((k) => /mlp_cls|mlp_patch/.test(k)), `${group}.*: no MLP weights`);
  }
  assert.deepEqual(checkpoint.groups.model!['conv_patch.weight']!.shape, [32, 4, 3, 3]);

  // Per step: align = vf_weight * (align_cos + align_distmat), the adaptive weight positive; no CLS term.
  assert.equal(records.length, 3);
  for (const { step, values } of records) {
    assert.deepEqual(Object.keys(values).filter((k) => k.startsWith('align') || k.endsWith('_cos') || k === 'vf_weight').sort(),
      ['align', 'align_cos', 'align_distmat', 'patch_cos', 'vf_weight'], `step ${step}: the logged terms`);
    assert.ok(values.vf_weight! > 0 && values.align_distmat! > 0 && values.align_cos! > 0, `step ${step}: ${JSON.stringify(values)}`);
    near(values.align!, values.vf_weight! * (values.align_cos! + values.align_distmat!), `step ${step}: align`);
    if (step > 1) assert.ok(values.d_weight! > 0, 'from --disc-start 1 on, the GAN\'s adaptive weight runs beside vf\'s');
  }
  const events = readFileSync(join(runDir, readdirSync(runDir).find((n) => n.startsWith('events.out.tfevents.'))!));
  for (const tag of ['train/align_cos', 'train/align_distmat', 'train/vf_weight']) assert.ok(events.includes(tag), `TensorBoard has ${tag}`);

  // align.safetensors: the conv projector alone, the config read back, the checkpoint's EMA outputs.
  const file = SafetensorsFile.open(join(out, ALIGN_HEADS_NAME));
  file.close();
  assert.deepEqual(file.keys().sort(), ['conv_patch.bias', 'conv_patch.weight']);
  const heads = loadAlignmentHeads(join(out, ALIGN_HEADS_NAME));
  assert.deepEqual(heads.config, config);
  const z = torch.randn([2, 4, 8, 8]);
  torch.noGrad(() => {
    const got = heads.forward(z);
    assert.equal(got.cls, null);
    assertClose(got.patch, loadAlignedModels(path, { useEma: true }).heads.forward(z).patch, 0, 0, 'align.safetensors = the checkpoint\'s ema heads');
  });
});

test('--align-loss vf --no-vf-adaptive with MLP_patch and MLP_cls: align = vf-weight * vf + cls-weight * cls', async () => {
  const { checkpoint, records, out } = await trainAndConvert('vf-fixed', { alignLoss: 'vf', vfAdaptive: false, vfWeight: 0.2, vfWeightDistmat: 2, clsWeight: 0.3 });
  assert.deepEqual(checkpoint.metadata.heads_config, {
    latentChannels: 4, featureDim: 32, hiddenDim: 16, depth: 3, clsPooling: 'mean', clsPoolSize: 4, patchProj: 'mlp', clsHead: true, teacherNorm: 'none', teacherNormAlpha: 1, alignLoss: 'vf',
  });
  for (const { step, values } of records) {
    near(values.vf_weight!, 0.2, 'the fixed vf weight');
    near(values.align!, 0.2 * (values.align_cos! + 2 * values.align_distmat!) + 0.3 * values.align_cls!, `step ${step}: align`);
  }
  const heads = loadAlignmentHeads(join(out, ALIGN_HEADS_NAME));
  assert.ok([...heads.stateDict().keys()].some((k) => k.startsWith('mlp_cls.')) && heads.config.alignLoss === 'vf');
});

test('the default cos loss logs its per-token cosine and CLS terms: align = 0.5 align_cos + 0.5 align_cls', async () => {
  const result = await runAlignTrain({ ...common, maxSteps: 2, resultsDir: join(dir, 'cos') });
  const records = parseMetrics(readFileSync(join(result.runDir, 'metrics.jsonl'), 'utf8'));
  for (const { step, values } of records) {
    assert.equal(values.align_distmat, undefined);
    assert.equal(values.vf_weight, undefined);
    near(values.align!, 0.5 * values.align_cos! + 0.5 * values.align_cls!, `step ${step}: align`);
    near(values.align_cos!, 1 - values.patch_cos!, `step ${step}: the cosine term is 1 - the mean cosine`);
  }
});

test('--help lists the variants\' flags with their defaults', () => {
  const help = alignTrainCommand().helpInformation().replace(/\s+/g, ' ');
  for (const shown of [
    '--align-loss <l>', '(choices: "cos", "vf", default: "cos")', '--teacher-norm <n>', '(choices: "none", "spatial", default: "none")',
    '--patch-proj <p>', '(choices: "mlp", "conv3", default: "mlp")', '--teacher-norm-alpha <a>', '(default: 1)', '--vf-margin-cos <m>', '(default: 0.5)', '--vf-margin-distmat <m>', '(default: 0.25)',
    '--vf-weight-cos <w>', '--vf-weight-distmat <w>', '--vf-weight <w>', '(default: 0.1)', '--no-vf-adaptive', '(default: adaptive)', '0: no MLP_cls at all',
  ]) {
    assert.ok(help.includes(shown), shown);
  }
});
