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

test('DDP refuses to start without a process group', () => {
  assert.equal(DDP, DistributedDataParallel);
  assert.throws(() => new DDP(new TinyMlp(0)), /DistributedDataParallel: call torch.distributed.initProcessGroup\(\) first/);
});
