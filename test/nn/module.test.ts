import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '../../src/torch/index.js';
import {
  BatchNorm2d, Conv2d, Dropout, GELU, LayerNorm, Linear, Module, ModuleList, Sequential, SiLU,
} from '../../src/nn/index.js';
import { assertClose } from '../helpers.js';
import { layers } from './parity.js';

// The TypeScript twin of make_nn.py's Net: fields camelCase, registered names PyTorch's.
class Block extends Module {
  norm1 = this.addModule('norm1', new LayerNorm(4, { elementwiseAffine: false }));
  attn = this.addModule('attn', new Linear(4, 12, { bias: false }));
  mlp = this.addModule('mlp', new Sequential(new Linear(4, 8), new GELU('tanh'), new Linear(8, 4)));
}

class Net extends Module {
  xEmbedder = this.addModule('x_embedder', new Conv2d(3, 4, 2, { stride: 2 }));
  posEmbed = this.registerParameter('pos_embed', torch.zeros([1, 4, 4]));
  freqs = this.registerBuffer('freqs', torch.arange(0, 4, 1, { dtype: 'float32' }));
  cache = this.registerBuffer('cache', torch.zeros([2]), { persistent: false });
  blocks = this.addModule('blocks', new ModuleList([new Block(), new Block()]));
  extra = this.registerParameter('extra', null);
  final = this.addModule('final', new Sequential(new BatchNorm2d(4), new SiLU(), new Linear(4, 2)));
  clsToken = this.registerParameter('cls_token', torch.zeros([1, 1, 4]));
}

const composite = layers.composite as { keys: string[]; shapes: number[][]; state: Record<string, torch.Tensor>; num_parameters: number };

test('stateDict keys, order and shapes equal PyTorch\'s for a composite module', () => {
  const sd = new Net().stateDict();
  assert.deepEqual([...sd.keys()], composite.keys);
  assert.deepEqual([...sd.values()].map((t) => t.shape), composite.shapes);
});

test('loadStateDict copies values in place; stateDict then returns them', () => {
  const net = new Net();
  const weight = net.xEmbedder.weight;
  net.loadStateDict(composite.state);
  assert.equal(net.xEmbedder.weight, weight);
  assert.ok(weight.requiresGrad && weight.isLeaf);
  for (const [key, value] of net.stateDict()) assertClose(value, composite.state[key]!, 0, 0, key);
  assert.equal(net.numParameters(), composite.num_parameters);
});

function corrupted(): Map<string, torch.Tensor> {
  const sd = new Map(Object.entries(composite.state));
  sd.delete('blocks.0.attn.weight');
  sd.set('blocks.2.attn.weight', torch.zeros([12, 4]));
  sd.set('pos_embed', torch.zeros([1, 8, 4]));
  return sd;
}

test('loadStateDict names missing, unexpected and wrong-shape keys in one error and copies nothing', () => {
  const net = new Net();
  const before = net.clsToken.clone();
  assert.throws(() => net.loadStateDict(corrupted()), {
    message: 'loadStateDict(Net): missing keys [blocks.0.attn.weight], unexpected keys [blocks.2.attn.weight], '
      + 'shape mismatch [pos_embed: checkpoint [1,8,4] vs model [1,4,4]]',
  });
  assertClose(net.clsToken, before, 0, 0, 'cls_token untouched');
});

test('loadStateDict(strict: false) returns missing and unexpected keys and loads the rest; shape mismatch still throws', () => {
  const net = new Net();
  const sd = corrupted();
  assert.throws(() => net.loadStateDict(sd, { strict: false }), /^Error: loadStateDict\(Net\): shape mismatch \[pos_embed: checkpoint \[1,8,4\] vs model \[1,4,4\]\]$/);
  sd.delete('pos_embed');
  const result = net.loadStateDict(sd, { strict: false });
  assert.deepEqual(result, { missingKeys: ['pos_embed', 'blocks.0.attn.weight'], unexpectedKeys: ['blocks.2.attn.weight'] });
  assertClose(net.clsToken, composite.state.cls_token!, 0, 0, 'cls_token loaded');
});

test('parameters, buffers and modules are listed by dotted name; non-persistent buffers are buffers but not state', () => {
  const net = new Net();
  assert.deepEqual(net.namedBuffers().map(([name]) => name),
    ['freqs', 'cache', 'final.0.running_mean', 'final.0.running_var', 'final.0.num_batches_tracked']);
  assert.ok(!net.stateDict().has('cache'));
  assert.deepEqual(net.namedParameters(false).map(([name]) => name), ['pos_embed', 'cls_token']);
  assert.deepEqual(net.namedChildren().map(([name]) => name), ['x_embedder', 'blocks', 'final']);
  assert.deepEqual(net.namedModules().map(([name]) => name).slice(0, 8),
    ['', 'x_embedder', 'blocks', 'blocks.0', 'blocks.0.norm1', 'blocks.0.attn', 'blocks.0.mlp', 'blocks.0.mlp.0']);
  assert.equal(net.modules().length, 1 + 1 + 1 + 2 * 7 + 4);
});

test('a parameter shared by two modules is listed and counted once, but has a key under each name', () => {
  const a = new Linear(3, 3);
  const seq = new Sequential(a, a);
  assert.equal(seq.parameters().length, 2);
  assert.equal(seq.numParameters(), 12);
  assert.deepEqual([...seq.stateDict().keys()], ['0.weight', '0.bias', '1.weight', '1.bias']);
});

test('train/eval switch Dropout and BatchNorm2d recursively', () => {
  torch.manualSeed(0);
  const model = new Sequential(new BatchNorm2d(3), new Dropout(0.5));
  const bn = model.at(0) as BatchNorm2d;
  const x = torch.randn([8, 3, 10, 10]).add(2);
  const yTrain = model.forward(x);
  assert.ok(yTrain.eq(0).sum().item() > 1000, 'dropout zeroes elements in training');
  assert.ok(bn.runningMean!.min().item() > 0.1, 'running mean moved towards the batch mean 2');
  const runningMean = bn.runningMean!.clone();

  model.eval();
  assert.deepEqual(model.modules().map((m) => m.training), [false, false, false]);
  const yEval = model.forward(x);
  const expected = x.sub(bn.runningMean!.view(1, 3, 1, 1)).div(bn.runningVar!.add(1e-5).sqrt().view(1, 3, 1, 1));
  assertClose(yEval, expected, 1e-5, 1e-6, 'eval: running statistics, no dropout');
  assertClose(bn.runningMean!, runningMean, 0, 0, 'eval leaves running stats');
  assert.equal(bn.numBatchesTracked!.item(), 1);
  model.train();
  assert.ok(model.training && bn.training && model.at(1).training);
});

test('to(float64) keeps each parameter object, its requiresGrad and grad; integer buffers stay int64', () => {
  const net = new Net();
  const held = net.parameters();
  const weight = net.xEmbedder.weight;
  net.clsToken.requiresGrad = false;
  weight.grad = torch.onesLike(weight);
  net.to('float64');
  assert.deepEqual(net.parameters(), held);
  for (const p of held) {
    assert.equal(p.dtype, 'float64');
    assert.ok(p.isLeaf);
    assert.equal(p.requiresGrad, p !== net.clsToken);
  }
  assert.equal(weight.grad!.dtype, 'float64');
  assert.equal(net.freqs.dtype, 'float64');
  assert.equal(net.cache.dtype, 'float64');
  const bn = net.final.at(0) as BatchNorm2d;
  assert.equal(bn.runningVar!.dtype, 'float64');
  assert.equal(bn.numBatchesTracked!.dtype, 'int64');

  // Gradients still reach the objects held before the move.
  net.zeroGrad();
  assert.ok(net.parameters().every((p) => p.grad === null));
  net.xEmbedder.forward(torch.ones([1, 3, 4, 4], { dtype: 'float64' })).sum().backward();
  assert.equal(weight.grad!.dtype, 'float64');
  assertClose(weight.grad!.sum([0, 2, 3]), torch.full([3], 16 * 4, { dtype: 'float64' }), 0, 0, 'grad of sum');
  net.to({ dtype: 'float32', device: 'cpu' });
  assert.equal(weight.dtype, 'float32');
  assert.throws(() => net.to('int64'), /Net.to: dtype must be floating point, got int64/);
});

test('zeroGrad, requiresGrad_, numParameters(trainableOnly) and apply', () => {
  const net = new Net();
  net.requiresGrad_(false);
  assert.equal(net.numParameters({ trainableOnly: true }), 0);
  net.blocks.requiresGrad_(true);
  assert.equal(net.numParameters({ trainableOnly: true }), 2 * (48 + 40 + 36));
  const visited: string[] = [];
  net.final.apply((m) => visited.push(m.constructor.name));
  assert.deepEqual(visited, ['BatchNorm2d', 'SiLU', 'Linear', 'Sequential']);
});

test('registration rejects dotted names and a name already used by another kind; the base forward throws', () => {
  const m = new Module();
  m.registerParameter('w', torch.zeros([1]));
  assert.throws(() => m.registerBuffer('w', torch.zeros([1])), /Module: 'w' is already registered as a parameter/);
  assert.throws(() => m.addModule('a.b', new Linear(1, 1)), /Module: invalid name 'a.b'/);
  assert.throws(() => m.forward(), /Module: forward\(\) is not implemented/);
});

test('registered tensors outlive torch.scope', () => {
  const linear = torch.scope(() => new Linear(2, 2));
  assert.ok(!linear.weight.isDisposed);
  assert.deepEqual(linear.forward(torch.ones([1, 2])).shape, [1, 2]);
});
