import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '../../src/torch/index.js';
import { Linear, Embedding, Dropout, Flatten, Identity } from '../../src/nn/index.js';
import { checkParity, layers } from './parity.js';

test('Linear matches PyTorch on 3-D input: output, input and weight gradients', () => {
  checkParity(new Linear(5, 3), layers.linear, 'Linear');
});

test('Linear(bias: false) has no bias parameter or state-dict key', () => {
  const linear = new Linear(4, 2, { bias: false });
  assert.equal(linear.bias, null);
  assert.deepEqual([...linear.stateDict().keys()], ['weight']);
  assert.deepEqual(linear.forward(torch.ones([1, 4])).shape, [1, 2]);
});

test('Embedding matches PyTorch; the paddingIdx row gets a zero gradient', () => {
  const embedding = new Embedding(10, 4, { paddingIdx: 2 });
  checkParity(embedding, layers.embedding, 'Embedding');
  assert.equal(embedding.weight.grad!.select(0, 2).abs().sum().item(), 0);
});

test('Embedding normalizes a negative paddingIdx, zeroes that row at init and rejects one out of range', () => {
  const embedding = new Embedding(5, 3, { paddingIdx: -1 });
  assert.equal(embedding.paddingIdx, 4);
  assert.deepEqual(embedding.weight.select(0, 4).tolist(), [0, 0, 0]);
  assert.throws(() => new Embedding(5, 3, { paddingIdx: 5 }), /paddingIdx 5 is outside \[-5, 5\)/);
});

test('Dropout zeroes about p of the elements and scales the rest by 1/(1-p) in training, identity in eval', () => {
  torch.manualSeed(0);
  const dropout = new Dropout(0.25);
  const x = torch.ones([4000]);
  const y = dropout.forward(x);
  const zeros = y.eq(0).sum().item();
  assert.ok(Math.abs(zeros / 4000 - 0.25) < 0.03, `zero fraction ${zeros / 4000}`);
  assert.equal(y.eq(1 / 0.75).sum().item() + zeros, 4000);
  dropout.eval();
  assert.equal(dropout.forward(x).eq(1).all().item(), 1);
  assert.throws(() => new Dropout(1.5), /p must be in \[0, 1\], got 1.5/);
});

test('Flatten keeps the batch dim by default; Identity returns its input', () => {
  const x = torch.zeros([2, 3, 4, 5]);
  assert.deepEqual(new Flatten().forward(x).shape, [2, 60]);
  assert.deepEqual(new Flatten(0, 2).forward(x).shape, [24, 5]);
  assert.equal(new Identity().forward(x), x);
});
