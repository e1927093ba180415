// `reals export onnx` end to end: the files, the manifest, and the graphs against libtorch.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import * as torch from '../../src/torch/index.js';
import { AlignmentHeads, saveAlignmentHeads } from '../../src/models/alignment.js';
import { LinearSegmentationHead, saveHead } from '../../src/models/heads.js';
import { loadGenerator, type GeneratorSpec } from '../../src/train/sit.js';
import { buildProgram } from '../../src/cli/main.js';
import { FIXTURES, tinyVae } from '../helpers.js';

torch.setNumThreads(1);
const OFFICIAL = join(FIXTURES, 'models', 'sit_checkpoint.pt');
const TINY: GeneratorSpec = {
  name: 'SiT-tiny', kind: 'SiT',
  config: { depth: 2, hiddenSize: 16, patchSize: 2, numHeads: 2, inputSize: 4, inChannels: 4, mlpRatio: 4, classDropoutProb: 0.1, numClasses: 3, learnSigma: true },
};

test('reals export onnx writes the generator, CFG, VAE and readout graphs and a manifest; the generator graph computes what libtorch does', async () => {
  const root = mkdtempSync(join(tmpdir(), 'reals-export-'));
  tinyVae().savePretrained(join(root, 'vae'));
  writeFileSync(join(root, 'tiny.json'), JSON.stringify({ depth: 2, hiddenSize: 16, patchSize: 2, numHeads: 2 }));
  saveAlignmentHeads(join(root, 'align.safetensors'), new AlignmentHeads({ latentChannels: 4, featureDim: 8, hiddenDim: 16 }));
  saveHead(join(root, 'head.safetensors'), new LinearSegmentationHead({ inChannels: [8, 8], inIndex: [0, 1], clsToken: true, numClasses: 3 }).eval());
  const out = join(root, 'onnx');
  const reals = (...args: string[]) => buildProgram().parseAsync(['node', 'reals', 'export', 'onnx', ...args]);
  await reals('--ckpt', OFFICIAL, '--model', join(root, 'tiny.json'), '--image-size', '8', '--num-classes', '3', '--vae-path', join(root, 'vae'),
    '--align-ckpt', join(root, 'align.safetensors'), '--head', join(root, 'head.safetensors'), '--out', out);
  assert.deepEqual(readdirSync(out).sort(), ['alignment.onnx', 'generator.onnx', 'generator_cfg.onnx', 'model.json', 'readout.onnx', 'vae_decoder.onnx', 'vae_encoder.onnx']);
  const manifest = JSON.parse(readFileSync(join(out, 'model.json'), 'utf8'));
  assert.equal(manifest.generator.kind, 'SiT');
  assert.equal(manifest.generator.cfgChannels, 3);
  assert.deepEqual([manifest.vae.latentSize, manifest.vae.imageSize, manifest.readout.numClasses], [4, 8, 3]);

  const { model } = loadGenerator(OFFICIAL, { spec: TINY });
  const session = await ort.InferenceSession.create(join(out, 'generator.onnx'));
  const x = torch.randn([2, 4, 4, 4]);
  const t = torch.tensor([0.25, 0.75]);
  const y = torch.tensor([0, 2], { dtype: 'int64' });
  const result = await session.run({
    x: new ort.Tensor('float32', x.toArray() as Float32Array, x.shape), t: new ort.Tensor('float32', t.toArray() as Float32Array, [2]),
    y: new ort.Tensor('int64', y.toArray() as BigInt64Array, [2]),
  });
  await session.release();
  const expected = torch.noGrad(() => model.forward(x, t, y));
  const actual = torch.fromArray(result.out!.data as Float32Array, [...result.out!.dims]);
  const error = torch.noGrad(() => actual.sub(expected).abs().max().item() / expected.abs().max().item());
  assert.ok(error < 1e-4, `relative error ${error}`);

  await assert.rejects(reals('--ckpt', OFFICIAL, '--model', join(root, 'tiny.json'), '--image-size', '8', '--num-classes', '3', '--vae-path', join(root, 'vae'),
    '--head', join(root, 'head.safetensors'), '--out', join(root, 'x')), /--head needs --align-ckpt/);
  rmSync(root, { recursive: true });
});
