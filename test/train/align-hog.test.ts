// `reals align train --dino-model hog` through the pipelines the CLI calls: a tiny run with no
// teacher weights and no usable --dino-input-size, its checkpoint's teacher record, `align convert`
// and align.safetensors read back with the HOG token width.
import { before, after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, realpathSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as torch from '../../src/torch/index.js';
import { writeJsonFileAtomic } from '../../src/io/index.js';
import { AutoencoderKL, configToDiffusers } from '../../src/models/autoencoder-kl.js';
import { loadAlignmentHeads } from '../../src/models/alignment.js';
import { loadCheckpoint } from '../../src/train/index.js';
import { parseMetrics } from '../../src/runlog/index.js';
import { ALIGN_HEADS_NAME } from '../../src/train/align-convert.js';
import { runAlignConvert, runAlignTrain, type AlignTrainRunOptions } from '../../src/pipelines/align.js';
import { alignTrainCommand } from '../../src/cli/align.js';

let dir: string;
let common: AlignTrainRunOptions;

before(() => {
  dir = realpathSync(mkdtempSync(join(tmpdir(), 'reals-align-hog-')));
  // 8x8 latents of the 32 px (padded) Fashion-MNIST images: HOG cells of 4 px.
  writeJsonFileAtomic(join(dir, 'vae.json'), configToDiffusers(new AutoencoderKL({
    blockOutChannels: [8, 16, 16], downBlockTypes: Array(3).fill('DownEncoderBlock2D'), upBlockTypes: Array(3).fill('UpDecoderBlock2D'), normNumGroups: 4,
  }).config));
  common = {
    // --dino-input-size 100 is no multiple of DINOv2's 14: HOG must not read it.
    dataPath: 'fashion-mnist', dinoModel: 'hog', dinoInputSize: 100, vaeConfig: join(dir, 'vae.json'), lpipsWeight: 0,
    batchSize: 4, numWorkers: 0, mlpHidden: 16, logEvery: 1, lr: 3e-3, precision: 'fp32', offline: true, log: () => {},
  };
});

after(() => rmSync(dir, { recursive: true, force: true }));

test('--dino-model hog: trains with no weights, records the teacher, converts, and the heads load with 18-wide tokens', async () => {
  const steps = 30;
  const result = await runAlignTrain({ ...common, maxSteps: steps, resultsDir: join(dir, 'runs') });
  const { metadata } = loadCheckpoint(result.checkpoint!);
  assert.deepEqual(metadata.teacher, { model: 'hog', embedDim: 18, orientations: 9, scales: [1, 2] });
  assert.equal((metadata.heads_config as { featureDim: number }).featureDim, 18);

  // The heads learn the HOG tokens: the mean cosine climbs well above that of the random heads.
  const records = parseMetrics(readFileSync(join(result.runDir, 'metrics.jsonl'), 'utf8'));
  assert.equal(records.length, steps);
  const first = records[0]!.values.patch_cos!;
  const last = records.slice(-5).reduce((sum, r) => sum + r.values.patch_cos!, 0) / 5;
  assert.ok(last > first + 0.3, `patch_cos ${first} at step 1, ${last} over the last 5 steps`);

  const out = join(dir, 'vae');
  await runAlignConvert({ ckpt: result.checkpoint!, outputDir: out, dataPath: 'fashion-mnist', numSamples: 8, batchSize: 8, log: () => {} });
  const heads = loadAlignmentHeads(join(out, ALIGN_HEADS_NAME));
  assert.equal(heads.config.featureDim, 18);
  torch.noGrad(() => {
    const predicted = heads.forward(torch.randn([2, 4, 8, 8]));
    assert.deepEqual(predicted.patch.shape, [2, 64, 18]);
    assert.deepEqual(predicted.cls?.shape, [2, 18]);
  });
});

test('--dino-model hog refuses --dino-ckpt, and --help names hog', async () => {
  await assert.rejects(runAlignTrain({ ...common, dinoCkpt: 'dinov2_vitb14.pth', maxSteps: 1, resultsDir: join(dir, 'refused') }),
    /--dino-ckpt dinov2_vitb14.pth: --dino-model hog has no weights/);
  const help = alignTrainCommand().helpInformation().replace(/\s+/g, ' ');
  assert.ok(help.includes('or hog (histograms of oriented gradients on the latent grid\'s cells: no weights, 18-wide tokens; docs/alignment.md)'), help);
  assert.ok(help.includes('(not used by hog) (default: the teacher\'s own'), help);
});
