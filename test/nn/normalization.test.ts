import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '../../src/torch/index.js';
import { BatchNorm2d, GroupNorm, LayerNorm } from '../../src/nn/index.js';
import { assertClose } from '../helpers.js';
import { checkParity, layers } from './parity.js';

test('GroupNorm(2, 4, eps 1e-6) matches PyTorch (output and gradients)', () => {
  checkParity(new GroupNorm(2, 4, { eps: 1e-6 }), layers.group_norm, 'GroupNorm');
});

test('LayerNorm matches PyTorch with affine, without affine over two dims, and with bias: false', () => {
  checkParity(new LayerNorm(6), layers.layer_norm, 'LayerNorm');
  const noAffine = new LayerNorm([2, 6], { elementwiseAffine: false, eps: 1e-6 });
  assert.equal(noAffine.parameters().length, 0);
  checkParity(noAffine, layers.layer_norm_no_affine, 'LayerNorm(elementwiseAffine: false)');
  const noBias = new LayerNorm(6, { bias: false });
  assert.deepEqual([...noBias.stateDict().keys()], ['weight']);
  checkParity(noBias, layers.layer_norm_no_bias, 'LayerNorm(bias: false)');
});

test('BatchNorm2d in training matches PyTorch: output, gradients, updated running stats, num_batches_tracked', () => {
  const bn = new BatchNorm2d(3, { momentum: 0.2 });
  checkParity(bn, layers.batch_norm_train, 'BatchNorm2d(train)');
  const after = layers.batch_norm_train.after as Record<string, torch.Tensor>;
  assertClose(bn.runningMean!, after.running_mean!, 1e-5, 1e-6, 'running_mean');
  assertClose(bn.runningVar!, after.running_var!, 1e-5, 1e-6, 'running_var');
  assert.equal(bn.numBatchesTracked!.dtype, 'int64');
  assert.equal(bn.numBatchesTracked!.item(), 1);

  bn.eval();
  const { x, y } = layers.batch_norm_eval;
  assertClose(bn.forward(x), y, 1e-5, 1e-6, 'BatchNorm2d(eval) output');
  assertClose(bn.runningMean!, after.running_mean!, 0, 0, 'running_mean unchanged in eval');
  assert.equal(bn.numBatchesTracked!.item(), 1);
});

test('BatchNorm2d with momentum null keeps the cumulative average of batch statistics, as PyTorch', () => {
  const bn = new BatchNorm2d(3, { momentum: null });
  const { inputs, after } = layers.batch_norm_cma as { inputs: torch.Tensor[]; after: Record<string, torch.Tensor> };
  for (const x of inputs) bn.forward(x);
  assertClose(bn.runningMean!, after.running_mean!, 1e-5, 1e-6, 'running_mean');
  assertClose(bn.runningVar!, after.running_var!, 1e-5, 1e-6, 'running_var');
  assert.equal(bn.numBatchesTracked!.item(), 3);
});

test('BatchNorm2d without running stats has no buffers and normalizes with batch statistics in eval too', () => {
  const bn = new BatchNorm2d(2, { trackRunningStats: false, affine: false });
  assert.deepEqual([...bn.stateDict().keys()], []);
  bn.eval();
  const y = bn.forward(torch.randn([8, 2, 3, 3]).mul(3).add(5));
  assert.ok(y.mean([0, 2, 3]).abs().max().item() < 1e-5);
  assert.throws(() => bn.forward(torch.zeros([2, 2])), /BatchNorm2d: expected 4-D input \[N, C, H, W\], got shape \[2,2\]/);
});

test('GroupNorm rejects channels not divisible by groups', () => {
  assert.throws(() => new GroupNorm(3, 4), /GroupNorm: numChannels 4 must be divisible by numGroups 3/);
});
