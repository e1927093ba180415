import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as torch from '../../src/torch/index.js';
import { saveSafetensors } from '../../src/io/index.js';
import { DINOV2_CONFIGS, DinoVisionTransformer, resolveDinoConfig } from '../../src/models/dinov2.js';
import { loadCheckpoint } from '../../src/train/index.js';
import { runAlignTrain, teacherInputSize } from '../../src/pipelines/align.js';
import { alignTrainCommand } from '../../src/cli/align.js';

torch.setNumThreads(1);

test('the teacher input size defaults to a .json teacher\'s own imgSize, else one token per latent position (448 for 256 px and f8)', () => {
  assert.deepEqual(teacherInputSize('dinov2_vitb14', DINOV2_CONFIGS.dinov2_vitb14!, 32).size, 448);
  assert.deepEqual(teacherInputSize('dinov2_vitl14_reg', DINOV2_CONFIGS.dinov2_vitl14_reg!, 8).size, 112, '64 px through an f8 VAE');
  const own = teacherInputSize('configs/teacher/vit-tiny.json', resolveDinoConfig('configs/teacher/vit-tiny.json'), 8);
  assert.equal(own.size, 32);
  assert.match(own.why, /the teacher's own imgSize \(configs\/teacher\/vit-tiny\.json\)/);
  assert.match(alignTrainCommand().helpInformation().replace(/\s+/g, ' '), /--dino-input-size <n> .*default: the teacher's own: a \.json teacher's imgSize, else patch size x latent side/);
});

test('align train without --dino-input-size runs a 32 px teacher at 32, says so, and records it', async () => {
  const dir = realpathSync(mkdtempSync(join(tmpdir(), 'reals-align-defaults-')));
  try {
    torch.manualSeed(0);
    const teacherConfig = { imgSize: 32, patchSize: 8, embedDim: 16, depth: 1, numHeads: 2 };
    writeFileSync(join(dir, 'teacher.json'), JSON.stringify(teacherConfig));
    saveSafetensors(join(dir, 'teacher.safetensors'), Object.fromEntries(new DinoVisionTransformer({ ...DINOV2_CONFIGS.dinov2_vits14!, ...teacherConfig }).stateDict()));
    const lines: string[] = [];
    const result = await runAlignTrain({
      dataPath: 'fashion-mnist', imageSize: 32, dinoModel: join(dir, 'teacher.json'), dinoCkpt: join(dir, 'teacher.safetensors'),
      vaeConfig: 'configs/vae/f8-c4-tiny.json', lpipsWeight: 0, batchSize: 2, numWorkers: 0, maxSteps: 1, mlpHidden: 16, precision: 'fp32',
      resultsDir: join(dir, 'results'), log: (line) => lines.push(line),
    });
    assert.ok(lines.some((line) => line.startsWith(`--dino-input-size 32: the teacher's own imgSize (${join(dir, 'teacher.json')})`)), lines.join('\n'));
    const { metadata } = loadCheckpoint(result.checkpoint!);
    assert.equal(metadata.args.dinoInputSize, 32);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('LPIPS weights that cannot be fetched name --lpips-weight 0', async () => {
  const dir = realpathSync(mkdtempSync(join(tmpdir(), 'reals-align-lpips-')));
  const torchHome = process.env.TORCH_HOME;
  process.env.TORCH_HOME = dir;
  try {
    await assert.rejects(runAlignTrain({ dataPath: 'fashion-mnist', dinoModel: 'hog', offline: true, resultsDir: join(dir, 'results') }),
      /^Error: LPIPS \(--lpips-weight 1\): offline .*cannot fetch https:\/\/download\.pytorch\.org\/models\/vgg16-397923af\.pth.*; or give --lpips-vgg and --lpips-lin, or train without LPIPS: --lpips-weight 0$/);
  } finally {
    if (torchHome === undefined) delete process.env.TORCH_HOME;
    else process.env.TORCH_HOME = torchHome;
    rmSync(dir, { recursive: true, force: true });
  }
});
