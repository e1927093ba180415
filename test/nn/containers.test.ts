import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '../../src/torch/index.js';
import { GELU, Linear, ModuleList, Sequential } from '../../src/nn/index.js';
import { checkParity, layers } from './parity.js';

test('Sequential(Linear, GELU(tanh), Linear) matches PyTorch with keys 0.weight ... 2.bias', () => {
  const seq = new Sequential(new Linear(5, 8), new GELU('tanh'), new Linear(8, 3));
  assert.deepEqual([...seq.stateDict().keys()], ['0.weight', '0.bias', '2.weight', '2.bias']);
  checkParity(seq, layers.sequential, 'Sequential');
});

test('ModuleList names children by index and supports push, at (negative too), length and iteration', () => {
  const list = new ModuleList([new Linear(2, 3)]);
  list.push(new Linear(3, 4), new Linear(4, 5));
  assert.equal(list.length, 3);
  assert.equal(list.at(-1).outFeatures, 5);
  assert.deepEqual([...list].map((m) => m.inFeatures), [2, 3, 4]);
  assert.deepEqual(list.namedChildren().map(([name]) => name), ['0', '1', '2']);
  assert.throws(() => list.at(3), /ModuleList: index 3 out of range for length 3/);
  assert.throws(() => list.forward(torch.zeros([1])), /ModuleList: forward\(\) is not implemented/);
});
