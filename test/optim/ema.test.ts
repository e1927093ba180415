import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '../../src/torch/index.js';
import { EMA } from '../../src/optim/index.js';
import { assertClose, F32_UNIT_ROUNDOFF } from '../helpers.js';

type Tensor = torch.Tensor;

function values(t: Tensor): number[] { return Array.from(t.toArray() as Float64Array); }

test('EMA.update is ema = decay * ema + (1 - decay) * param, decay 0.9999 by default', () => {
  torch.manualSeed(0);
  const model = [torch.randn([3, 4], { dtype: 'float64' }), torch.randn([5], { dtype: 'float64' })];
  const ema = [torch.randn([3, 4], { dtype: 'float64' }), torch.randn([5], { dtype: 'float64' })];
  const before = ema.map(values);
  const averager = new EMA(ema, model);
  assert.equal(averager.decay, 0.9999);
  for (const decay of [0.9999, 0.5]) {
    const start = ema.map(values);
    averager.update(decay === 0.9999 ? undefined : decay);
    ema.forEach((e, i) => {
      const p = values(model[i]!);
      values(e).forEach((v, j) => {
        const expected = decay * start[i]![j]! + (1 - decay) * p[j]!;
        assert.ok(Math.abs(v - expected) <= 1e-15 * Math.max(1, Math.abs(expected)), `ema[${i}][${j}] = ${v}, expected ${expected}`);
      });
    });
  }
  assert.notDeepEqual(ema.map(values), before);
});

function fakeModule(w: Tensor, b: Tensor, runningMean: Tensor): { namedParameters(): [string, Tensor][]; namedBuffers(): [string, Tensor][] } {
  return { namedParameters: () => [['w', w], ['b', b]], namedBuffers: () => [['running_mean', runningMean]] };
}

test('EMA over objects with namedParameters pairs tensors by name, copies buffers, and copyFrom copies parameters', () => {
  const model = fakeModule(torch.full([2], 4), torch.full([1], 2), torch.full([3], 7));
  const emaTensors = [torch.zeros([1]), torch.zeros([2]), torch.zeros([3])] as const;
  const ema = { namedParameters: (): [string, Tensor][] => [['b', emaTensors[0]], ['w', emaTensors[1]]], namedBuffers: (): [string, Tensor][] => [['running_mean', emaTensors[2]]] };
  const averager = new EMA(ema, model, { decay: 0.75 });
  averager.update();
  assert.deepEqual(emaTensors[1].tolist(), [1, 1]);
  assert.deepEqual(emaTensors[0].tolist(), [0.5]);
  assert.deepEqual(emaTensors[2].tolist(), [7, 7, 7]);
  averager.copyFrom();
  assert.deepEqual(emaTensors[1].tolist(), [4, 4]);
  assert.deepEqual(emaTensors[0].tolist(), [2]);
});

test('EMA refuses ema and model tensors that do not correspond', () => {
  const w = torch.zeros([2]);
  const b = torch.zeros([1]);
  const rm = torch.zeros([3]);
  const other = { namedParameters: (): [string, Tensor][] => [['w', torch.zeros([2])], ['bias', torch.zeros([1])]] };
  assert.throws(() => new EMA(other, fakeModule(w, b, rm)).update(), /EMA: the ema parameters lack \[b\] and have extra \[bias\]/);
  const wrongShape = fakeModule(torch.zeros([3]), b, rm);
  assert.throws(() => new EMA(wrongShape, fakeModule(w, b, rm)).copyFrom(), /EMA: parameters 'w' has shape \[3\] in the ema and \[2\] in the model/);
  assert.throws(() => new EMA([w], [w, b]).update(), /EMA: the ema parameters lack \[1\]/);
  assert.throws(() => new EMA([w], fakeModule(w, b, rm)), /EMA: give two tensor lists or two objects/);
  assert.throws(() => new EMA([w], [w], { decay: 1.5 }), /EMA: decay must be in \[0, 1\], got 1.5/);
});

// src/optim/ema.ts sends contiguous float32 CPU tensors through the addon's one-pass kernel
// (native/src/optim.cc) and other layouts through libtorch's mul_ and add_, so a tensor and its
// transposed copy (a non-contiguous view of the same values) take the two paths with the same numbers.
test('the one-pass EMA kernel gives what mul_ and add_ give (20 updates of two decays, a tail)', () => {
  const [rows, cols] = [37, 29]; // 1,073 elements: 67 vectors of 16 and a partial one
  torch.manualSeed(3);
  const start = torch.randn([rows, cols]);
  const fusedEma = start.clone();
  const opsEma = start.t().contiguous().t();
  assert.ok(!opsEma.isContiguous());
  const steps = 20;
  for (let step = 0; step < steps; step++) {
    const param = torch.randn([rows, cols]).mul(4);
    const decay = step % 2 === 0 ? 0.9999 : 0.75;
    new EMA([fusedEma], [param]).update(decay);
    new EMA([opsEma], [param.t().contiguous().t()]).update(decay);
  }
  // The same float32 operations; libtorch may contract the tail's multiply-add that the kernel rounds
  // twice, or the other way: a rounding of a value below 4 (|randn| * 4 < 20 here: 2^-24 * 32) per update.
  assertClose(fusedEma, opsEma, 0, steps * 32 * F32_UNIT_ROUNDOFF, 'ema');
  const differs = fusedEma.sub(start).abs().max().item();
  assert.ok(differs > 1, `the EMA moved (max change ${differs})`);
  if (torch.native.fusedActivations()) {
    assert.equal(torch.fusedEmaStep(fusedEma, start, 0.5), true);
    assert.equal(torch.fusedEmaStep(opsEma, start, 0.5), false);
  }
});
