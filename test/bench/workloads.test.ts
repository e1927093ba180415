import test from 'node:test';
import assert from 'node:assert/strict';
import { WORKLOADS, type Setup } from '../../bench/workloads.js';

/** A setup whose afterStep counts its calls (in the bench it is torch.adaptThreads). */
function counting(batch: number): { setup: Setup; steps: () => number } {
  let steps = 0;
  return { setup: { batch, device: 'cpu', precision: 'fp32', afterStep: () => { steps++; } }, steps: () => steps };
}

test('the loop items give the thread governor its look after every step, as the trainers and samplers do; the per-op items do not', async () => {
  for (const item of ['sit.tiny.train.step', 'sit.tiny.sample', 'mlp.step']) {
    const { setup, steps } = counting(2);
    await WORKLOADS[item]!(setup)(3);
    assert.equal(steps(), 3, item);
  }
  const { setup, steps } = counting(0);
  await WORKLOADS['add']!(setup)(200);
  assert.equal(steps(), 0);
});
