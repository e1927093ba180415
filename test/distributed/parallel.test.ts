import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '../../src/torch/index.js';
import { DistributedDataParallel, DDP } from '../../src/nn/parallel.js';
import { assertClose } from '../helpers.js';
import { runScenario } from './run-ranks.js';
import { TinyMlp, trainingData, train, TRAIN_STEPS } from './tiny-model.js';

test('DDP on two ranks, each on half the batch, ends with the parameters of one process on the whole batch', { timeout: 30_000 }, async () => {
  // Ranks start from different weights (seeds 100 and 101); DDP must start both from rank 0's.
  const { code, output, reports } = await runScenario('train');
  assert.equal(code, 0, output);
  const { x, y } = trainingData();
  const reference = new TinyMlp(100);
  train(reference, x, y, TRAIN_STEPS, () => {});
  const expected = reference.parameters();
  for (const [rank, report] of reports.entries()) {
    assert.ok(report, `rank ${rank} wrote no report\n${output}`);
    for (const [i, p] of expected.entries()) {
      assertClose(torch.tensor(report.params[i], { dtype: 'float64' }).view(p.shape), p.detach(), 1e-6, 1e-12, `rank ${rank} parameter ${i}`);
    }
    assert.deepEqual(report.buffers, [reference.scale.tolist()], `rank ${rank} buffer (copied from rank 0)`);
  }
  assert.deepEqual(reports[0]!.params, reports[1]!.params, 'both ranks hold bit-identical parameters');
  // The reference moved away from its start, so equality above is not trivial.
  assert.ok(new TinyMlp(100).w1.sub(reference.w1).abs().max().item() > 1e-3);
});

test('trainGenerator on two ranks whose shards yield different numbers of batches: the ranks end each epoch together, no hang', { timeout: 30_000 }, async () => {
  const { code, output, seconds, reports } = await runScenario('uneven');
  assert.equal(code, 0, output);
  assert.ok(seconds < 25, `took ${seconds} s`);
  const [r0, r1] = reports as [Record<string, any>, Record<string, any>];
  assert.ok(r0 !== undefined && r1 !== undefined, output);
  // Rank 1 has 3 batches an epoch, rank 0 has 4: each epoch ends for both after 3, over 2 epochs.
  assert.equal(r0.step, 6);
  assert.equal(r1.step, 6);
  assert.match(r0.checkpoint, /0000006\.safetensors$/);
  assert.deepEqual(r0.params, r1.params, 'the ranks stayed in step: identical weights');
  // Each rank's own position is saved; resuming from step 3 (rank 0 next at batch 3, rank 1 at 4) ends as the whole run did.
  assert.deepEqual(r0.positions, [3, 4]);
  assert.equal(r0.resumedStep, 6);
  assert.deepEqual(r0.resumedParams, r0.params, 'resumed run ends with the weights of the uninterrupted one');
  assert.ok(r0.notes.some((line: string) => /^note: epoch 0 ends after 3 batches on every rank: another rank has no more/.test(line)), r0.notes.join('\n'));
});

test('DDP refuses to start without a process group', () => {
  assert.equal(DDP, DistributedDataParallel);
  assert.throws(() => new DDP(new TinyMlp(0)), /DistributedDataParallel: call torch.distributed.initProcessGroup\(\) first/);
});
