import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  ConstantLR, CosineAnnealingLR, LambdaLR, LinearWarmupLR, WarmupCosineLR, type LRScheduler, type ScheduledOptimizer,
} from '../../src/optim/index.js';
import { loadFixture } from '../helpers.js';

const fixture = loadFixture('optim_schedules.json');
const baseLrs = fixture.base_lrs as number[];

function optimizer(): ScheduledOptimizer { return { paramGroups: baseLrs.map((lr) => ({ lr })) }; }

/** The lrs before each step (as the fixture records them), checked against the groups' lr too. */
function trace(sched: LRScheduler, steps: number): number[][] {
  const out: number[][] = [];
  for (let i = 0; i < steps; i++) {
    assert.deepEqual(sched.optimizer.paramGroups.map((g) => g.lr), sched.getLastLr());
    out.push(sched.getLastLr());
    sched.step();
  }
  return out;
}

// PyTorch steps its schedules recursively (lr_t from lr_{t-1}); ours are closed forms, so the two
// differ by rounding only.
function assertLrsClose(actual: number[][], expected: number[][], what: string): void {
  assert.equal(actual.length, expected.length);
  actual.forEach((lrs, t) => lrs.forEach((lr, g) => {
    const want = expected[t]![g]!;
    assert.ok(Math.abs(lr - want) <= 1e-12 * Math.abs(want), `${what}: step ${t} group ${g}: ${lr} vs ${want}`);
  }));
}

test('LambdaLR and LinearWarmupLR match torch LambdaLR with a warm-up lambda', () => {
  const { warmup, lrs } = fixture.lambda_warmup as { warmup: number; lrs: number[][] };
  assertLrsClose(trace(new LambdaLR(optimizer(), (e) => Math.min(1, (e + 1) / warmup)), lrs.length), lrs, 'LambdaLR');
  assertLrsClose(trace(new LinearWarmupLR(optimizer(), { warmupSteps: warmup }), lrs.length), lrs, 'LinearWarmupLR');
  const perGroup = trace(new LambdaLR(optimizer(), [() => 1, (e) => 0.5 ** e]), 3);
  assert.deepEqual(perGroup, [[0.1, 0.02], [0.1, 0.01], [0.1, 0.005]]);
});

test('ConstantLR matches torch ConstantLR', () => {
  const { factor, total_iters: totalIters, lrs } = fixture.constant as { factor: number; total_iters: number; lrs: number[][] };
  assertLrsClose(trace(new ConstantLR(optimizer(), { factor, totalIters }), lrs.length), lrs, 'ConstantLR');
});

test('CosineAnnealingLR matches torch CosineAnnealingLR over 2.5 periods', () => {
  const { t_max: tMax, eta_min: etaMin, lrs } = fixture.cosine as { t_max: number; eta_min: number; lrs: number[][] };
  assertLrsClose(trace(new CosineAnnealingLR(optimizer(), { tMax, etaMin }), lrs.length), lrs, 'CosineAnnealingLR');
});

test('WarmupCosineLR matches torch SequentialLR(LinearLR warm-up, CosineAnnealingLR) and then stays at minLr', () => {
  const { warmup, total, eta_min: minLr, lrs } = fixture.warmup_cosine as { warmup: number; total: number; eta_min: number; lrs: number[][] };
  const sched = new WarmupCosineLR(optimizer(), { warmupSteps: warmup, totalSteps: total, minLr });
  assertLrsClose(trace(sched, lrs.length), lrs, 'WarmupCosineLR');
  assert.deepEqual(trace(sched, 3), [[minLr, minLr], [minLr, minLr], [minLr, minLr]]);
  assert.throws(() => new WarmupCosineLR(optimizer(), { warmupSteps: 5, totalSteps: 5 }), /totalSteps must be an integer above warmupSteps \(5\), got 5/);
});

test('scheduler stateDict/loadStateDict resumes the schedule where it was; bad state dicts are refused', () => {
  const a = new CosineAnnealingLR(optimizer(), { tMax: 10 });
  for (let i = 0; i < 4; i++) a.step();
  const saved = JSON.parse(JSON.stringify(a.stateDict()));
  assert.deepEqual(saved, { last_epoch: 4, base_lrs: baseLrs, _last_lr: a.getLastLr() });
  const b = new CosineAnnealingLR(optimizer(), { tMax: 10 });
  b.loadStateDict(saved);
  assert.deepEqual(b.getLastLr(), a.getLastLr());
  a.step();
  b.step();
  assert.deepEqual(b.getLastLr(), a.getLastLr());
  assert.throws(() => b.loadStateDict({ ...saved, base_lrs: [0.1] }), /base_lrs has 1 values, the optimizer has 2 param groups/);
  assert.throws(() => b.loadStateDict({ ...saved, last_epoch: 'x' }), /CosineAnnealingLR\.loadStateDict: bad 'last_epoch'/);
});

test('a scheduler resuming at lastEpoch >= 0 needs initialLr in every group, as PyTorch', () => {
  assert.throws(() => new LambdaLR(optimizer(), () => 1, 3), /paramGroups\[0\] has no initialLr/);
  const opt = { paramGroups: [{ lr: 0.5, initialLr: 1 }] };
  assert.deepEqual(new LambdaLR(opt, (e) => 1 / e, 3).getLastLr(), [0.25]);
});
