import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '../../src/torch/index.js';
import { Conv2d, ConvTranspose2d } from '../../src/nn/index.js';
import { checkParity, layers } from './parity.js';

test('Conv2d with stride 2, padding (1, 2), dilation (1, 2), groups 2 matches PyTorch (output and gradients)', () => {
  const conv = new Conv2d(4, 6, [3, 2], { stride: 2, padding: [1, 2], dilation: [1, 2], groups: 2 });
  assert.deepEqual(conv.weight.shape, [6, 2, 3, 2]);
  checkParity(conv, layers.conv2d, 'Conv2d');
});

test('ConvTranspose2d with stride 2, padding 1, outputPadding 1, groups 2 matches PyTorch and doubles H and W', () => {
  const conv = new ConvTranspose2d(4, 4, 3, { stride: 2, padding: 1, outputPadding: 1, groups: 2 });
  assert.deepEqual(conv.weight.shape, [4, 2, 3, 3]);
  checkParity(conv, layers.conv_transpose2d, 'ConvTranspose2d');
  assert.deepEqual(conv.forward(torch.zeros([1, 4, 5, 7])).shape, [1, 4, 10, 14]);
});

test('conv layers reject channels not divisible by groups and outputPadding not below stride', () => {
  assert.throws(() => new Conv2d(3, 6, 3, { groups: 2 }), /Conv2d: inChannels 3 must be divisible by groups 2/);
  assert.throws(() => new ConvTranspose2d(4, 4, 3, { stride: 2, outputPadding: 2 }), /outputPadding \[2,2\] must be smaller than stride \[2,2\]/);
});
