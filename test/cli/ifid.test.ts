import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import * as torch from '../../src/torch/index.js';
import { saveSafetensors } from '../../src/io/index.js';
import { FIDInceptionV3 } from '../../src/models/inception.js';
import { ImageClassifier } from '../../src/models/classifier.js';
import { ImageFolder } from '../../src/data/index.js';
import { featureExtractor, interpolatedFid } from '../../src/eval/index.js';
import { loadVaeFolder } from '../../src/data/inputs.js';
import { buildProgram } from '../../src/cli/main.js';
import { subcommand } from '../../src/cli/parse.js';
import { FIXTURES, withTmp } from '../helpers.js';

const REALS = join(dirname(fileURLToPath(import.meta.url)), '../../bin/reals.js');

function reals(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const { status, stdout, stderr } = spawnSync(process.execPath, [REALS, ...args], { encoding: 'utf8', timeout: 350_000 });
  return { status, stdout, stderr };
}

test('ifid --help lists every flag with its default and marks the required ones', () => {
  const help = subcommand(buildProgram(), 'ifid').helpInformation().replace(/\s+/g, ' ');
  for (const flag of ['--vae-path', '--data-path', '--image-size', '--num-images', '--t', '--interpolation', '--batch-size', '--seed', '--inception-weights',
    '--features', '--dino-model', '--dino-ckpt', '--num-workers', '--device', '--json', '--offline', '--revision']) assert.ok(help.includes(flag), flag);
  assert.match(help, /--features <network> the feature network: inception .* The JSON names the network \(featureNetwork\) \(default: "inception"\)/);
  // The same flag text as evaluate's: one definition.
  const evaluateHelp = subcommand(buildProgram(), 'evaluate').helpInformation().replace(/\s+/g, ' ');
  assert.ok(evaluateHelp.includes(help.match(/--features <network> the feature network: inception .*?\. Only inception reports an Inception Score \(inceptionScore\)\./)![0]));
  for (const shown of ['(default: 256)', '(default: 10000)', '(default: 0.5)', '(choices: "linear", "slerp", default: "linear")', '(default: 32)', '(default: 0)']) {
    assert.ok(help.includes(shown), shown);
  }
  assert.equal(help.match(/\(required\)/g)?.length, 2, '--vae-path and --data-path');
});

test('a bad value is refused in one line naming the flag', () => {
  const t = reals(['ifid', '--vae-path', 'v', '--data-path', 'd', '--t', '1.5']);
  assert.equal(t.status, 1);
  assert.match(t.stderr, /^error: option '--t <t>' argument '1\.5' is invalid\. expected a number in \[0, 1\], got '1\.5'$/m);
  const vae = reals(['ifid', '--vae-path', '/nonexistent/vae', '--data-path', 'fashion-mnist']);
  assert.equal(vae.status, 1);
  assert.match(vae.stderr, /^error: --vae-path \/nonexistent\/vae: no such folder/m);
});

// One run (about a minute on a shared 2-core machine: the Inception at 299 px); the numbers' parity and reproducibility are test/eval/ifid.test.ts's.
test('reals ifid on an ImageNet root with a tiny VAE: JSON on stdout and in --json, finite', { timeout: 400_000 }, withTmp('ifid-cli', async (dir) => {
  // The FID Inception as constructed (its initial weights): the real ones cannot be downloaded here.
  const weights = join(dir, 'inception.safetensors');
  saveSafetensors(weights, Object.fromEntries(new FIDInceptionV3().stateDict()));
  torch.manualSeed(0);
  for (const split of ['train', 'val']) {
    mkdirSync(join(dir, 'imagenet', split, 'a'), { recursive: true });
    for (let i = 0; i < 3; i++) {
      const pixels = torch.randint(0, 256, [16, 16, 3], { dtype: 'uint8' }).toArray() as Uint8Array;
      await sharp(pixels, { raw: { width: 16, height: 16, channels: 3 } }).png().toFile(join(dir, 'imagenet', split, 'a', `${i}.png`));
    }
  }
  const run = reals(['ifid', '--vae-path', join(FIXTURES, 'autoencoder_kl', 'legacy_bin'), '--data-path', join(dir, 'imagenet'), '--image-size', '16',
    '--num-images', '100', '--batch-size', '2', '--inception-weights', weights, '--device', 'cpu', '--num-workers', '0', '--json', join(dir, 'ifid.json')]);
  assert.equal(run.status, 0, run.stderr);
  const result = JSON.parse(run.stdout);
  assert.deepEqual(JSON.parse(readFileSync(join(dir, 'ifid.json'), 'utf8')), result);
  // train/ only: 3 images, not the 6 of train/ and val/.
  assert.equal(result.images, 3);
  assert.deepEqual([result.t, result.interpolation, result.latentShape], [0.5, 'linear', [4, 8, 8]]);
  for (const key of ['ifid', 'rfid', 'meanNeighbourDistance']) assert.ok(Number.isFinite(result[key]) && result[key] >= 0, `${key} ${result[key]}`);
}));

test('reals ifid --features <classifier checkpoint>: the distances in its features, the network named in the JSON; another network\'s flags refused', withTmp('ifid-features', async (dir) => {
  torch.manualSeed(0);
  mkdirSync(join(dir, 'images', 'a'), { recursive: true });
  for (let i = 0; i < 4; i++) {
    const pixels = torch.randint(0, 256, [16, 16, 3], { dtype: 'uint8' }).toArray() as Uint8Array;
    await sharp(pixels, { raw: { width: 16, height: 16, channels: 3 } }).png().toFile(join(dir, 'images', 'a', `${i}.png`));
  }
  const checkpoint = join(dir, 'classifier.safetensors');
  new ImageClassifier({ numClasses: 2, imageSize: 16, featureDim: 8 }).save(checkpoint, ['x', 'y']);
  const vae = join(FIXTURES, 'autoencoder_kl', 'legacy_bin');
  const args = ['--vae-path', vae, '--data-path', join(dir, 'images'), '--image-size', '16', '--num-images', '4', '--batch-size', '2', '--device', 'cpu', '--num-workers', '0'];
  await buildProgram().parseAsync(['node', 'reals', 'ifid', ...args, '--features', checkpoint, '--json', join(dir, 'ifid.json')]);
  const result = JSON.parse(readFileSync(join(dir, 'ifid.json'), 'utf8'));
  const extractor = await featureExtractor({ features: checkpoint, device: 'cpu' });
  assert.deepEqual(result.featureNetwork, { id: extractor.id, description: extractor.description });
  assert.equal(result.extractor, extractor.id);
  const direct = await interpolatedFid({ vae: loadVaeFolder(vae), dataset: new ImageFolder(join(dir, 'images'), { resolution: 16 }), count: 4, extractor, batchSize: 2, numWorkers: 0 });
  assert.deepEqual([result.ifid, result.rfid], [direct.ifid, direct.rfid]);
  await assert.rejects(buildProgram().parseAsync(['node', 'reals', 'ifid', ...args, '--features', checkpoint, '--dino-model', 'dinov2_vits14']),
    /^Error: --dino-model: not used by --features .*classifier\.safetensors$/);
}));
