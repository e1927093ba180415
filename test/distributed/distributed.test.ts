import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '../../src/torch/index.js';
import { runScenario, freePort } from './run-ranks.js';

const dist = torch.distributed;

test('collectives on two Gloo ranks: allReduce (5 ops), broadcast, allGather, barrier, rank queries', { timeout: 30_000 }, async () => {
  const { code, output, reports } = await runScenario('collectives');
  assert.equal(code, 0, output);
  for (const [rank, report] of reports.entries()) {
    assert.ok(report, `rank ${rank} wrote no report\n${output}`);
    assert.deepEqual(report.identity, { rank, worldSize: 2, localRank: rank, backend: 'gloo' });
    // Rank r contributes [r + 1, 10 (r + 1)].
    assert.deepEqual(report.reduced, { sum: [3, 30], avg: [1.5, 15], product: [2, 200], max: [2, 20], min: [1, 10] });
    assert.deepEqual(report.ints, [1, 14]);
    assert.deepEqual(report.broadcasted, [1, 1, 1], 'broadcast from rank 1');
    assert.deepEqual(report.gathered, [[0, 5], [1, 6]], 'allGather: outputs[r] is rank r\'s [r, r^2 + 5]');
    assert.equal(report.initializedAfterDestroy, false);
  }
});

test('a collective that one rank skips throws on the other after the group timeout', { timeout: 30_000 }, async () => {
  const { code, output, reports } = await runScenario('timeout');
  assert.equal(code, 0, output);
  const report = reports[0];
  assert.ok(report, `rank 0 wrote no report\n${output}`);
  assert.match(report.error, /^distributed\.allReduce on rank 0 of 2 failed \(timeout 2 s; another rank stalled, died or is in another collective\): .*timed out/i);
  assert.ok(report.elapsedMs >= 1900 && report.elapsedMs < 10_000, `threw after ${report.elapsedMs} ms with a 2000 ms timeout`);
});

test('a training step whose collective times out names the rank and the step (the group timeout defaults to 5 minutes, REALS_DIST_TIMEOUT_S)', { timeout: 30_000 }, async () => {
  const { code, output, reports } = await runScenario('stall');
  assert.equal(code, 0, output);
  const report = reports[0];
  assert.ok(report, `rank 0 wrote no report\n${output}`);
  assert.equal(report.name, 'CollectiveError');
  assert.match(report.error, /^distributed\.allReduce on rank 0 of 2 at step 3 \(epoch 0\) failed \(timeout 1\.5 s; another rank stalled/);
  assert.ok(report.elapsedMs < 10_000, `failed after ${report.elapsedMs} ms`);

  const saved = process.env.REALS_DIST_TIMEOUT_S;
  try {
    delete process.env.REALS_DIST_TIMEOUT_S;
    assert.equal(dist.defaultTimeoutMs(), 5 * 60 * 1000);
    process.env.REALS_DIST_TIMEOUT_S = '2.5';
    assert.equal(dist.defaultTimeoutMs(), 2500);
    process.env.REALS_DIST_TIMEOUT_S = '10m';
    assert.throws(() => dist.defaultTimeoutMs(), /REALS_DIST_TIMEOUT_S must be a number of seconds .*got '10m'/);
  } finally {
    if (saved === undefined) delete process.env.REALS_DIST_TIMEOUT_S;
    else process.env.REALS_DIST_TIMEOUT_S = saved;
  }
});

test('initProcessGroup names the missing or invalid torchrun variable', () => {
  const names = ['MASTER_ADDR', 'MASTER_PORT', 'RANK', 'WORLD_SIZE', 'LOCAL_RANK'];
  const saved = Object.fromEntries(names.map((n) => [n, process.env[n]]));
  const setEnv = (values: Record<string, string | undefined>): void => {
    for (const n of names) {
      if (values[n] === undefined) delete process.env[n];
      else process.env[n] = values[n];
    }
  };
  const complete = { MASTER_ADDR: '127.0.0.1', MASTER_PORT: '29500', RANK: '1', WORLD_SIZE: '2', LOCAL_RANK: '1' };
  try {
    for (const missing of names) {
      setEnv({ ...complete, [missing]: undefined });
      assert.throws(() => dist.initProcessGroup(), new RegExp(`environment variable ${missing} is not set`));
    }
    setEnv({ ...complete, RANK: 'one' });
    assert.throws(() => dist.initProcessGroup(), /environment variable RANK must be an integer in \[0, 1\], got 'one'/);
    setEnv({ ...complete, RANK: '2' });
    assert.throws(() => dist.initProcessGroup(), /environment variable RANK must be an integer in \[0, 1\], got '2'/);
    setEnv({ ...complete, MASTER_PORT: '70000' });
    assert.throws(() => dist.initProcessGroup(), /MASTER_PORT must be an integer in \[1, 65535\]/);
    setEnv({});
    assert.throws(() => dist.initProcessGroup({ ...complete, rank: 0, worldSize: 0, localRank: 0, masterPort: 1 }), /options.worldSize must be/);
  } finally {
    setEnv(saved);
  }
  assert.equal(dist.isInitialized(), false);
  assert.throws(() => dist.getRank(), /not initialized; call initProcessGroup\(\) first/);
  assert.throws(() => dist.allReduce(torch.ones([1])), /distributed.allReduce: .*not initialized/);
});

test('launchedWorldSize: WORLD_SIZE, 1 when unset; a value that is not a positive integer is an error, not one rank running alone', () => {
  const saved = process.env.WORLD_SIZE;
  try {
    delete process.env.WORLD_SIZE;
    assert.equal(dist.launchedWorldSize(), 1);
    process.env.WORLD_SIZE = '4';
    assert.equal(dist.launchedWorldSize(), 4);
    for (const bad of ['', 'two', '0', '-1', '2.5']) {
      process.env.WORLD_SIZE = bad;
      assert.throws(() => dist.launchedWorldSize(), new Error(`environment variable WORLD_SIZE must be a positive integer (the number of ranks), got '${bad}'`));
    }
  } finally {
    if (saved === undefined) delete process.env.WORLD_SIZE;
    else process.env.WORLD_SIZE = saved;
  }
});

test('a one-rank group works without a launcher, and rejects bad arguments by name', async () => {
  dist.initProcessGroup({ backend: 'gloo', rank: 0, worldSize: 1, localRank: 0, masterAddr: '127.0.0.1', masterPort: await freePort(), timeoutMs: 10_000 });
  try {
    assert.throws(() => dist.initProcessGroup(), /already initialized/);
    const t = torch.tensor([1.5, -2]);
    dist.allReduce(t, 'sum');
    dist.broadcast(t, 0);
    assert.deepEqual(t.tolist(), [1.5, -2]);
    assert.throws(() => dist.broadcast(t, 1), /broadcast\(src\): rank 1 is not in \[0, 1\)/);
    assert.throws(() => dist.allGather([t, t.clone()], t), /expected 1 output tensors \(one per rank\), got 2/);
  } finally {
    dist.destroyProcessGroup();
  }
  assert.equal(dist.isInitialized(), false);
});

test('GLOO_SOCKET_IFNAME selects the network interface, as in torch.distributed', async () => {
  const saved = process.env.GLOO_SOCKET_IFNAME;
  process.env.GLOO_SOCKET_IFNAME = 'nosuchif0';
  try {
    const port = await freePort();
    assert.throws(
      () => dist.initProcessGroup({ backend: 'gloo', rank: 0, worldSize: 1, localRank: 0, masterAddr: '127.0.0.1', masterPort: port, timeoutMs: 10_000 }),
      new RegExp(`^Error: initProcessGroup: rank 0 of 1 could not join the gloo group at 127.0.0.1:${port} \\(rendezvous timeout 300000 ms\\): .*nosuchif0`),
    );
  } finally {
    if (saved === undefined) delete process.env.GLOO_SOCKET_IFNAME;
    else process.env.GLOO_SOCKET_IFNAME = saved;
  }
  assert.equal(dist.isInitialized(), false);
});
