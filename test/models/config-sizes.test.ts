// Parameter counts from a config, before anything is allocated: equal to the built models' counts,
// to the published ones, and a config.json that asks for more than the machine has is refused by name.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { AutoencoderKL, configFromDiffusers } from '../../src/models/autoencoder-kl.js';
import { DinoVisionTransformer, DINOV2_CONFIGS, resolveDinoConfig } from '../../src/models/dinov2.js';
import { SiT } from '../../src/models/sit.js';
import { autoencoderKLParameters, checkWeightsFit, dinov2Parameters, sitParameters } from '../../src/models/config-sizes.js';
import { resolveGeneratorSpec } from '../../src/pipelines/generator.js';
import { withTmp } from '../helpers.js';

const VAE_LAYOUT = { inChannels: 3, outChannels: 3, latentChannels: 4, midBlockAddAttention: true, useQuantConv: true, usePostQuantConv: true };

test('autoencoderKLParameters counts what AutoencoderKL builds, and SD-VAE\'s published 83,653,863', () => {
  for (const fields of [
    { blockOutChannels: [8, 8], layersPerBlock: 1, normNumGroups: 4 },
    { blockOutChannels: [8, 16, 32], layersPerBlock: 2, normNumGroups: 8, latentChannels: 16, midBlockAddAttention: false, useQuantConv: false, inChannels: 1 },
    { blockOutChannels: [16], layersPerBlock: 3, normNumGroups: 4, usePostQuantConv: false, outChannels: 2 },
  ]) {
    const blocks = fields.blockOutChannels.length;
    const config = configFromDiffusers({
      ...Object.fromEntries(Object.entries(fields).map(([k, v]) => [k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`), v])),
      down_block_types: Array(blocks).fill('DownEncoderBlock2D'), up_block_types: Array(blocks).fill('UpDecoderBlock2D'),
    });
    assert.equal(autoencoderKLParameters(config), new AutoencoderKL(config).numParameters(), JSON.stringify(fields));
  }
  assert.equal(autoencoderKLParameters({ ...VAE_LAYOUT, blockOutChannels: [128, 256, 512, 512], layersPerBlock: 2 }), 83_653_863);
});

test('sitParameters counts what SiT builds (pos_embed included, as DiT\'s train.py counts), and SiT-XL/2\'s 675,129,632', () => {
  for (const config of [
    { depth: 2, hiddenSize: 16, patchSize: 2, numHeads: 2, inputSize: 8, inChannels: 4, mlpRatio: 4, classDropoutProb: 0.1, numClasses: 3, learnSigma: true },
    { depth: 3, hiddenSize: 24, patchSize: 4, numHeads: 3, inputSize: 16, inChannels: 16, mlpRatio: 2.5, classDropoutProb: 0, numClasses: 10, learnSigma: false },
  ]) {
    assert.equal(sitParameters(config), new SiT(config).numParameters(), JSON.stringify(config));
  }
  const xl = { depth: 28, hiddenSize: 1152, patchSize: 2, numHeads: 16, inputSize: 32, inChannels: 4, mlpRatio: 4, classDropoutProb: 0.1, numClasses: 1000, learnSigma: true };
  assert.equal(sitParameters(xl), 675_129_632);
});

test('dinov2Parameters counts what DinoVisionTransformer builds, MLP and SwiGLU, with registers', () => {
  for (const fields of [
    { imgSize: 28, patchSize: 14, embedDim: 32, depth: 2, numHeads: 2 },
    { imgSize: 32, patchSize: 4, embedDim: 48, depth: 1, numHeads: 3, numRegisterTokens: 4, ffnLayer: 'swiglufused' as const, mlpRatio: 2.66 },
  ]) {
    const config = { ...DINOV2_CONFIGS.dinov2_vits14!, ...fields };
    assert.equal(dinov2Parameters(config), new DinoVisionTransformer(config).numParameters(), JSON.stringify(fields));
  }
});

test('a config whose weights pass the machine\'s memory is refused naming the file, before anything is allocated', withTmp('sizes', (dir) => {
  assert.throws(() => checkWeightsFit('x.json', 2 ** 30, 2 ** 31), /^Error: x\.json: the config makes 1\.07e\+9 parameters, 4\.0 GiB in float32, more than this machine's 2\.0 GiB of memory$/);
  checkWeightsFit('x.json', 2 ** 29, 2 ** 31);

  // Every field within its bound: 16384 channels, 4 blocks, 64 layers each (about 1e12 parameters).
  const vaeConfig = {
    _class_name: 'AutoencoderKL', block_out_channels: [16384, 16384, 16384, 16384], layers_per_block: 64,
    down_block_types: Array(4).fill('DownEncoderBlock2D'), up_block_types: Array(4).fill('UpDecoderBlock2D'),
  };
  const huge = (where: string) => new RegExp(`^Error: ${where.replaceAll('.', '\\.')}: the config makes [0-9.]+e\\+\\d+ parameters, [0-9.]+ GiB in float32, more than this machine's`);
  // configFromDiffusers is what AutoencoderKL.fromPretrained and --vae-config read a config.json
  // with; a regression here fails the assertion instead of allocating terabytes.
  assert.throws(() => configFromDiffusers(vaeConfig, join(dir, 'vae', 'config.json')), huge(join(dir, 'vae', 'config.json')));

  const sitJson = join(dir, 'sit.json');
  writeFileSync(sitJson, JSON.stringify({ depth: 256, hiddenSize: 16384, patchSize: 2, numHeads: 256 }));
  assert.throws(() => resolveGeneratorSpec(sitJson, 'SiT', { inputSize: 32, inChannels: 4, numClasses: 1000, classDropoutProb: 0.1 }), huge(`--model ${sitJson}`));
  const dinoJson = join(dir, 'dino.json');
  writeFileSync(dinoJson, JSON.stringify({ embedDim: 16384, depth: 256, numHeads: 256, mlpRatio: 64 }));
  assert.throws(() => resolveDinoConfig(dinoJson), huge(`--dino-model ${dinoJson}`));
}));
