// Bad input is refused before any work starts, by a one-line error naming the flag, field or file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as torch from '../../src/torch/index.js';
import { AutoencoderKL, configFromDiffusers } from '../../src/models/autoencoder-kl.js';
import { resolveDinoConfig } from '../../src/models/dinov2.js';
import { encodePng } from '../../src/runlog/images.js';
import { resolveGeneratorSpec, runCacheLatents, runGeneratorTrain } from '../../src/pipelines/generator.js';
import { runSample } from '../../src/pipelines/sample.js';
import { FIXTURES, tinyVae } from '../helpers.js';

torch.setNumThreads(1);
const REALS = join(dirname(fileURLToPath(import.meta.url)), '../../bin/reals.js');

function reals(args: string[]): { status: number | null; stderr: string } {
  const { status, stderr } = spawnSync(process.execPath, [REALS, ...args], { encoding: 'utf8', timeout: 90_000 });
  return { status, stderr };
}

/** A tiny random diffusers VAE folder: 3 -> 4 channels, downsampling by 2. */
function vaeFolder(dir: string): string {
  tinyVae().savePretrained(dir);
  return dir;
}

test('--device and --json are checked when the flags are parsed: a bad name, a missing CUDA device, an unwritable folder', () => {
  const root = mkdtempSync(join(tmpdir(), 'reals-validate-'));
  const results = join(root, 'results');
  const train = ['sit', 'train', '--data-path', root, '--vae-path', root, '--results-dir', results];
  const gpu = reals([...train, '--device', 'gpu0']);
  assert.equal(gpu.status, 1);
  assert.match(gpu.stderr, /^error: option '--device <device>' argument 'gpu0' is invalid\. gpu0: expected cpu, cuda or cuda:N$/m);
  if (!torch.cuda.isAvailable()) {
    const cuda = reals([...train, '--device', 'cuda:1']);
    assert.match(cuda.stderr, /argument 'cuda:1' is invalid\. cuda:1: this libtorch build has no CUDA device$/m);
  }
  const json = reals(['evaluate', 'ref.npz', 'sample.npz', '--json', '/proc/reals/out.json']);
  assert.equal(json.status, 1);
  assert.match(json.stderr, /^error: option '--json <file>' argument '\/proc\/reals\/out\.json' is invalid\. the folder of \/proc\/reals: /m);
  const folder = reals(['evaluate', 'ref.npz', 'sample.npz', '--json', root]);
  assert.match(folder.stderr, /is invalid\. .* is a folder$/m);
  assert.equal(existsSync(results), false, 'nothing written');
  rmSync(root, { recursive: true });
});

test('--num-classes below the data\'s labels and --cfg-channels above the latent channels are refused before any step or sample', async () => {
  const root = mkdtempSync(join(tmpdir(), 'reals-validate-'));
  const vaePath = vaeFolder(join(root, 'vae'));
  const data = join(root, 'data');
  for (const [c, name] of ['a', 'b', 'c'].entries()) {
    mkdirSync(join(data, name), { recursive: true });
    writeFileSync(join(data, name, '0.png'), await encodePng(torch.full([8, 8, 3], 40 * c, { dtype: 'uint8' })));
  }
  const resultsDir = join(root, 'results');
  await assert.rejects(
    runGeneratorTrain('SiT', { dataPath: data, vaePath, resultsDir, model: 'SiT-S/2', imageSize: 8, numClasses: 2, globalBatchSize: 1, log: () => {} }),
    { message: `--num-classes 2: --data-path ${data} has labels up to 2 (3 classes)` },
  );
  assert.equal(existsSync(resultsDir), false, 'no run folder made');
  const sampleDir = join(root, 'samples');
  await assert.rejects(
    runSample('ode', { model: 'SiT-S/2', ckpt: join(FIXTURES, 'models', 'sit_checkpoint.pt'), vaePath, sampleDir, cfgChannels: 5, log: () => {} }),
    { message: `--cfg-channels 5: the latents have 4 channels (--vae-path ${vaePath}); give at most 4, or all` },
  );
  assert.equal(existsSync(sampleDir), false, 'no sample folder made');
  rmSync(root, { recursive: true });
});

test('errors name the flag at fault: --image-size the VAE cannot divide, --global-batch-size above the data, a VAE of another width than --ckpt', async () => {
  const root = mkdtempSync(join(tmpdir(), 'reals-validate-'));
  const vaePath = vaeFolder(join(root, 'vae'));
  const data = join(root, 'data');
  for (const [c, name] of ['a', 'b', 'c'].entries()) {
    mkdirSync(join(data, name), { recursive: true });
    writeFileSync(join(data, name, '0.png'), await encodePng(torch.full([8, 8, 3], 40 * c, { dtype: 'uint8' })));
  }
  const model = join(root, 'tiny.json');
  writeFileSync(model, JSON.stringify({ depth: 1, hiddenSize: 16, patchSize: 2, numHeads: 2 }));
  const resultsDir = join(root, 'results');
  const train = { dataPath: data, vaePath, resultsDir, model, globalBatchSize: 1, log: () => {}, progressStream: { write: () => true } as unknown as NodeJS.WritableStream };
  // 9 px through a factor-2 VAE: the image size is wrong, not the SiT's patch size.
  await assert.rejects(runGeneratorTrain('SiT', { ...train, imageSize: 9 }), { message: "--image-size 9 is not divisible by the VAE's downsampling factor 2" });
  await assert.rejects(runCacheLatents({ dataPath: data, vaePath, out: join(root, 'cache'), imageSize: 9 }), { message: "--image-size 9 is not divisible by the VAE's downsampling factor 2" });
  await assert.rejects(runGeneratorTrain('SiT', { ...train, imageSize: 8, globalBatchSize: 4 }), {
    message: '--global-batch-size 4: the data gives no full batch of 4 on each of the 1 rank(s); lower it, or give more images',
  });
  const { checkpoint } = await runGeneratorTrain('SiT', { ...train, imageSize: 8, maxSteps: 1, ckptEvery: 1 });
  const wide = join(root, 'vae16');
  tinyVae(16).savePretrained(wide);
  await assert.rejects(runSample('ode', { ckpt: checkpoint!, vaePath: wide, sampleDir: join(root, 'samples'), allowVaeMismatch: true, numFidSamples: 1, log: () => {} }), {
    message: `--vae-path ${wide}: the VAE has 16 latent channels, --ckpt ${checkpoint} takes 4`,
  });
  rmSync(root, { recursive: true });
});

test('a model config file with a negative or absurd size is refused by field, before any tensor is allocated', () => {
  const root = mkdtempSync(join(tmpdir(), 'reals-validate-'));
  const sit = (fields: object) => {
    const path = join(root, 'model.json');
    writeFileSync(path, JSON.stringify({ depth: 2, hiddenSize: 16, patchSize: 2, numHeads: 2, ...fields }));
    return () => resolveGeneratorSpec(path, 'SiT', { inputSize: 4, inChannels: 4, numClasses: 3, classDropoutProb: 0.1 });
  };
  const path = join(root, 'model.json');
  assert.throws(sit({ hiddenSize: -16 }), { message: `--model ${path}: "hiddenSize" must be an integer in [1, 16384], got -16` });
  assert.throws(sit({ depth: 1e9 }), { message: `--model ${path}: "depth" must be an integer in [1, 256], got 1000000000` });
  assert.throws(sit({ hiddenSize: 18, numHeads: 4 }), { message: `--model ${path}: "hiddenSize" 18 does not split into numHeads 4 heads` });
  assert.doesNotThrow(sit({}));

  const dino = join(root, 'dino.json');
  writeFileSync(dino, JSON.stringify({ imgSize: 32, patchSize: 4, embedDim: 1e7 * 64, depth: 4, numHeads: 4 }));
  assert.throws(() => resolveDinoConfig(dino), { message: `--dino-model ${dino}: "embedDim" must be an integer in [1, 16384], got 640000000` });
  writeFileSync(dino, JSON.stringify({ imgSize: 32, patchSize: 4, embedDim: 64, depth: 4, numHeads: 4, numRegisterTokens: -1 }));
  assert.throws(() => resolveDinoConfig(dino), /"numRegisterTokens" must be an integer in \[0, 256\], got -1/);

  assert.throws(() => configFromDiffusers({ block_out_channels: [64, 1e9] }, 'vae/config.json'),
    /^Error: vae\/config\.json: invalid AutoencoderKL config: block_out_channels\.1: /);
  assert.throws(() => configFromDiffusers({ latent_channels: -4 }, 'vae/config.json'), /latent_channels: /);
  rmSync(root, { recursive: true });
});
