// Every exported graph against reals' libtorch forward on the same inputs, run by onnxruntime-node,
// to a relative error of 1e-4 (the largest |difference| over the largest |value|).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as ort from 'onnxruntime-node';
import * as torch from '../../src/torch/index.js';
import type { Tensor } from '../../src/torch/index.js';
import * as nn from '../../src/nn/index.js';
import { AutoencoderKL } from '../../src/models/autoencoder-kl.js';
import { DiT, SiT } from '../../src/models/sit.js';
import { OnnxGraph, exportModule, decodeModel } from '../../src/onnx/index.js';
import { exportGenerator, exportVaeDecoder, exportVaeEncoder, exportSegmentationReadout, exportAlignmentHeads, exportDepthReadout } from '../../src/models/onnx-export.js';
import { AlignmentHeads } from '../../src/models/alignment.js';
import { LinearDepthHead, LinearSegmentationHead, depthMap, layerFromTokens, segmentationLogits } from '../../src/models/heads.js';

torch.setNumThreads(1);

/** Random weights everywhere (adaLN-Zero's zero init would make the output 0). */
function randomized<M extends nn.Module>(model: M): M {
  torch.noGrad(() => { for (const p of model.parameters()) p.copy_(torch.randnLike(p).mul(0.2)); });
  return model.eval() as M;
}

async function run(bytes: Uint8Array, feeds: Record<string, Tensor>): Promise<Record<string, Tensor>> {
  const session = await ort.InferenceSession.create(bytes);
  const inputs: Record<string, ort.Tensor> = {};
  for (const [name, t] of Object.entries(feeds)) {
    inputs[name] = new ort.Tensor(t.dtype === 'int64' ? 'int64' : 'float32', t.contiguous().toArray() as Float32Array | BigInt64Array, t.shape);
  }
  const outputs = await session.run(inputs);
  await session.release();
  return Object.fromEntries(Object.entries(outputs).map(([name, o]) => [name, torch.fromArray(o.data as Float32Array, [...o.dims])]));
}

function assertClose(actual: Tensor, expected: Tensor, what: string): void {
  assert.deepEqual(actual.shape, expected.shape, `${what}: shape`);
  const error = torch.noGrad(() => actual.sub(expected).abs().max().item() / expected.abs().max().item());
  assert.ok(error < 1e-4, `${what}: relative error ${error}`);
}

const TINY = { depth: 2, hiddenSize: 32, patchSize: 2, numHeads: 4, inputSize: 8, inChannels: 4, numClasses: 5 };

test('SiT and DiT forwards, and SiT\'s classifier-free guidance, export with a dynamic batch and match libtorch', async () => {
  torch.manualSeed(0);
  for (const [Model, name] of [[SiT, 'SiT'], [DiT, 'DiT']] as const) {
    const model = randomized(new Model(TINY));
    const { forward, cfg } = exportGenerator(model, { cfgChannels: 3 });
    assert.equal((decodeModel(forward).opsetImport as { version: number }[])[0]!.version, 17);
    for (const batch of [1, 3]) {
      const x = torch.randn([batch, 4, 8, 8]);
      const t = torch.rand([batch]);
      const y = torch.randint(0, 5, [batch]);
      const expected = torch.noGrad(() => model.forward(x, t, y));
      assertClose((await run(forward, { x, t, y })).out!, expected, `${name} forward, batch ${batch}`);
      const scale = 3.5;
      const guided = torch.noGrad(() => model.forwardWithCfg(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, torch.full([batch], 5, { dtype: 'int64' })]), scale).slice(0, 0, batch));
      assertClose((await run(cfg, { x, t, y, cfg_scale: torch.tensor([scale]) })).out!, guided, `${name} forward_with_cfg, batch ${batch}`);
    }
  }
});

test('the VAE decoder and encoder export and match libtorch (GroupNorm, attention, up- and downsampling)', async () => {
  torch.manualSeed(1);
  const vae = randomized(new AutoencoderKL({
    blockOutChannels: [8, 16], downBlockTypes: ['DownEncoderBlock2D', 'DownEncoderBlock2D'], upBlockTypes: ['UpDecoderBlock2D', 'UpDecoderBlock2D'],
    normNumGroups: 4, layersPerBlock: 1, latentChannels: 4,
  }));
  const decoder = exportVaeDecoder(vae, { latentSize: 4 });
  const encoder = exportVaeEncoder(vae, { imageSize: 8 });
  for (const batch of [1, 2]) {
    const z = torch.randn([batch, 4, 4, 4]);
    assertClose((await run(decoder, { z })).image!, torch.noGrad(() => vae.decode(z)), `decode, batch ${batch}`);
    const x = torch.rand([batch, 3, 8, 8]).mul(2).sub(1);
    assertClose((await run(encoder, { image: x })).moments!, torch.noGrad(() => vae.encode(x).parameters), `encode, batch ${batch}`);
  }
});

test('the segmentation readout (alignment MLPs, BatchNorm and the 1x1 classifier of a linear head) matches libtorch', async () => {
  torch.manualSeed(2);
  const heads = randomized(new AlignmentHeads({ latentChannels: 4, featureDim: 12, hiddenDim: 16 }));
  const head = new LinearSegmentationHead({ inChannels: [12, 12], inIndex: [0, 1], clsToken: true, numClasses: 5 });
  torch.noGrad(() => {
    head.bn.runningMean!.copy_(torch.randn([24]));
    head.bn.runningVar!.copy_(torch.rand([24]).add(0.5));
    head.convSeg.weight.copy_(torch.randn([5, 24, 1, 1]));
  });
  head.eval();
  const bytes = exportSegmentationReadout(heads, head, { latentSize: 4 });
  const z = torch.randn([2, 4, 4, 4]);
  const expected = torch.noGrad(() => {
    const { patch, cls } = heads.forward(z);
    return segmentationLogits(head, [layerFromTokens(patch, cls, [4, 4])], [4, 4]);
  });
  assertClose((await run(bytes, { z })).logits!, expected, 'readout logits');

  const mlps = await run(exportAlignmentHeads(heads, { latentSize: 4 }), { z });
  const { patch, cls } = torch.noGrad(() => heads.forward(z));
  assertClose(mlps.patch!, patch, 'alignment MLPs: patch tokens');
  assertClose(mlps.cls!, cls!, 'alignment MLPs: CLS token');

  // The hub's depth head layout (CLS on, upsample 4, 256 bins) and the regression variant.
  for (const config of [{}, { classify: false }, { normStrategy: 'softmax' as const, binsStrategy: 'SID' as const, minDepth: 0.1, maxDepth: 1 }]) {
    const depthHead = new LinearDepthHead({ inIndex: [0], channels: 24, ...config });
    torch.noGrad(() => { depthHead.convDepth.weight.copy_(torch.randn(depthHead.convDepth.weight.shape).mul(0.1)); });
    depthHead.eval();
    const depth = await run(exportDepthReadout(heads, depthHead, { latentSize: 4 }), { z });
    const reference = torch.noGrad(() => depthMap(depthHead, [layerFromTokens(patch, cls, [4, 4])], [16, 16]));
    assertClose(depth.depth!, reference, `depth readout ${JSON.stringify(config)}`);
  }
});

test('patch-only heads with iREPA\'s conv3 projector export (a Conv, no cls output) and match libtorch, alone and in a readout', async () => {
  torch.manualSeed(3);
  const heads = randomized(new AlignmentHeads({ latentChannels: 4, featureDim: 12, patchProj: 'conv3', clsHead: false }));
  const z = torch.randn([2, 4, 4, 4]);
  const outputs = await run(exportAlignmentHeads(heads, { latentSize: 4 }), { z });
  assert.deepEqual(Object.keys(outputs), ['patch']);
  const { patch } = torch.noGrad(() => heads.forward(z));
  assertClose(outputs.patch!, patch, 'conv3 patch tokens');
  // A head that reads no CLS token runs on them; one that does is refused by name.
  const head = new LinearSegmentationHead({ inChannels: [12], inIndex: [0], clsToken: false, numClasses: 3 });
  torch.noGrad(() => { head.convSeg.weight.copy_(torch.randn([3, 12, 1, 1])); });
  head.eval();
  const expected = torch.noGrad(() => segmentationLogits(head, [layerFromTokens(patch, null, [4, 4])], [4, 4]));
  assertClose((await run(exportSegmentationReadout(heads, head, { latentSize: 4 }), { z })).logits!, expected, 'patch-only readout logits');
  const withCls = new LinearSegmentationHead({ inChannels: [12, 12], inIndex: [0, 1], clsToken: true, numClasses: 3 }).eval();
  assert.throws(() => exportSegmentationReadout(heads, withCls, { latentSize: 4 }), /the head reads a CLS token and none is given/);
});

test('a module without an exporter is an error naming its class and path', () => {
  const graph = new OnnxGraph('test');
  const x = graph.input('x', 'float32', ['N', 4]);
  const model = new nn.Sequential(new nn.Linear(4, 4), new nn.Tanh());
  assert.throws(() => exportModule(model, graph, [x], ''), /ONNX export: no exporter for module Tanh at '1'/);
});
