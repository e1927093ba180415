import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { PassThrough } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { launch, resolveCommand } from '../../src/pipelines/launch.js';
import { runLaunch, runScenario, freePort, isAlive, WORKER } from './run-ranks.js';

const REALS = join(dirname(fileURLToPath(import.meta.url)), '../../bin/reals.js');

/** Runs the reals CLI; killed (SIGTERM, which it forwards to its ranks) after `limitMs`. */
function cli(args: string[], limitMs = 25_000): Promise<{ code: number | null; signal: NodeJS.Signals | null; output: string; seconds: number }> {
  return new Promise((resolve) => {
    const start = Date.now();
    const child = spawn(process.execPath, [REALS, ...args], { stdio: ['ignore', 'pipe', 'pipe'], timeout: limitMs });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => { output += chunk.toString(); });
    child.stderr.on('data', (chunk: Buffer) => { output += chunk.toString(); });
    child.on('close', (code, signal) => resolve({ code, signal, output, seconds: (Date.now() - start) / 1000 }));
  });
}

test('reals launch: when a rank dies during a collective, launch exits non-zero within seconds and no rank is left', { timeout: 30_000 }, async () => {
  const outDir = mkdtempSync(join(tmpdir(), 'reals-dist-dead-'));
  const port = await freePort();
  const { code, signal, output, seconds } = await cli(['launch', '--nproc-per-node', '2', '--master-port', String(port), '--', 'node', '--import', 'tsx', WORKER, 'dead', outDir]);
  assert.equal(signal, null, `launch was killed by the test's time limit\n${output}`);
  assert.notEqual(code, 0, output);
  assert.ok(seconds < 20, `took ${seconds} s`);
  assert.match(output, /^\[rank 0\] rank 0 joined$/m);
  assert.match(output, /^\[rank 1\] rank 1 joined$/m);
  const pids = [0, 1].map((rank) => Number(readFileSync(join(outDir, `pid${rank}`), 'utf8')));
  rmSync(outDir, { recursive: true, force: true });
  for (const pid of pids) assert.equal(isAlive(pid), false, `pid ${pid} still runs`);
});

test('launch: a rank that ignores SIGTERM gets SIGKILL after the grace period; the exit code is the failing rank\'s', { timeout: 30_000 }, async () => {
  const { code, output, seconds, pids } = await runScenario('stubborn', { graceMs: 1000 });
  assert.equal(code, 3, output);
  assert.match(output, /^\[rank 0\] rank 0 ignores SIGTERM$/m);
  assert.ok(seconds < 20, `took ${seconds} s`);
  for (const pid of pids) assert.equal(isAlive(pid), false, `pid ${pid} still runs`);
});

test('launch: each rank gets torchrun\'s variables, and its output lines are prefixed with its rank', { timeout: 30_000 }, async () => {
  const script = "const e = process.env; console.log(JSON.stringify([e.RANK, e.LOCAL_RANK, e.WORLD_SIZE, e.LOCAL_WORLD_SIZE, e.GROUP_RANK, e.MASTER_ADDR, e.MASTER_PORT, e.OMP_NUM_THREADS]));";
  const { code, output } = await runLaunch({ command: ['node', '-e', script], nprocPerNode: 2, nnodes: 3, nodeRank: 1, masterAddr: '10.1.2.3', masterPort: 1234 });
  assert.equal(code, 0, output);
  const threads = process.env.OMP_NUM_THREADS ?? '1';
  const lines = output.trim().split('\n').sort();
  assert.deepEqual(lines, [
    `[rank 2] ${JSON.stringify(['2', '0', '6', '2', '1', '10.1.2.3', '1234', threads])}`,
    `[rank 3] ${JSON.stringify(['3', '1', '6', '2', '1', '10.1.2.3', '1234', threads])}`,
  ]);
});

test('launch: a command that is not `node` or a path runs as a reals subcommand, unprefixed with one rank', { timeout: 30_000 }, async () => {
  assert.deepEqual(resolveCommand(['node', 'x.js']), ['node', ['x.js']]);
  assert.deepEqual(resolveCommand(['./train.sh', '-v']), ['./train.sh', ['-v']]);
  assert.deepEqual(resolveCommand(['sit', 'train']), [process.execPath, [REALS, 'sit', 'train']]);
  const { code, output } = await runLaunch({ command: ['launch', '--help'], nprocPerNode: 1 });
  assert.equal(code, 0, output);
  assert.match(output, /^Usage: reals launch \[options\] -- <command\.\.\.>$/m);
  assert.match(output, /--nproc-per-node <n> +processes \(ranks\) to start on this node \(default: 1\)/);
  assert.match(output, /--master-port <port> +free TCP port on the master node \(default: 29500\)/);
});

test('launch: SIGTERM sent to the launcher reaches every rank; launch resolves to 128 + 15', { timeout: 30_000 }, async () => {
  const sink = new PassThrough();
  let output = '';
  const bothUp = new Promise<void>((resolve) => sink.on('data', (chunk: Buffer) => {
    output += chunk.toString();
    if ((output.match(/ up$/gm) ?? []).length === 2) resolve();
  }));
  const handlersBefore = process.listenerCount('SIGTERM');
  const running = launch({ command: ['node', '-e', "console.log('up'); setInterval(() => {}, 1000)"], nprocPerNode: 2, stdout: sink, stderr: sink });
  await bothUp;
  process.kill(process.pid, 'SIGTERM');
  assert.equal(await running, 143);
  assert.equal(process.listenerCount('SIGTERM'), handlersBefore, 'launch removed its signal handler');
});

test('launch: bad options and commands that cannot start are reported by name', { timeout: 30_000 }, async () => {
  await assert.rejects(launch({ command: ['node'], nprocPerNode: 0 }), /launch: nprocPerNode must be an integer in \[1, /);
  await assert.rejects(launch({ command: ['node'], nprocPerNode: 1, nnodes: 2, nodeRank: 2 }), /launch: nodeRank must be an integer in \[0, 1\]/);
  await assert.rejects(launch({ command: [], nprocPerNode: 1 }), /launch: no command given/);
  const { code, output } = await runLaunch({ command: ['/nonexistent/program'], nprocPerNode: 1 });
  assert.equal(code, 127);
  assert.match(output, /launch: rank 0 could not start `\/nonexistent\/program`: spawn \/nonexistent\/program ENOENT/);
  const bad = await cli(['launch', '--nproc-per-node', 'two', '--', 'env']);
  assert.equal(bad.code, 1);
  assert.match(bad.output, /option '--nproc-per-node <n>' argument 'two' is invalid\. expected an integer >= 1, got 'two'/);
});

test('two launchers with --nnodes 2 (2 ranks each) train exactly as one launch of 4 ranks', { timeout: 60_000 }, async () => {
  const single = await runScenario('train', { nprocPerNode: 4 });
  assert.equal(single.code, 0, single.output);
  const outDir = mkdtempSync(join(tmpdir(), 'reals-dist-nodes-'));
  try {
    const masterPort = await freePort();
    const command = ['node', '--import', 'tsx', WORKER, 'train', outDir];
    const codes = await Promise.all([0, 1].map((nodeRank) => runLaunch({ command, nprocPerNode: 2, nnodes: 2, nodeRank, masterPort }, 50_000)));
    assert.deepEqual(codes.map((c) => c.code), [0, 0], codes.map((c) => c.output).join('\n'));
    const reports = [0, 1, 2, 3].map((r) => JSON.parse(readFileSync(join(outDir, `rank${r}.json`), 'utf8')));
    assert.deepEqual(reports, single.reports, 'the same weights on every rank, to the last bit');
    assert.deepEqual(reports[3], reports[0]);
  } finally {
    rmSync(outDir, { recursive: true, force: true });
  }
});

test('SIGKILL to one node\'s launcher: its ranks die with it, and the other node\'s ranks and launcher exit non-zero within seconds', { timeout: 60_000 }, async () => {
  const outDir = mkdtempSync(join(tmpdir(), 'reals-dist-kill-'));
  try {
    const masterPort = String(await freePort());
    const nodeArgs = (nodeRank: number) => ['launch', '--nnodes', '2', '--node-rank', String(nodeRank), '--nproc-per-node', '2',
      '--master-addr', '127.0.0.1', '--master-port', masterPort, '--', 'node', '--import', 'tsx', WORKER, 'barriers', outDir];
    const node1 = spawn(process.execPath, [REALS, ...nodeArgs(1)], { stdio: 'ignore' });
    const node0 = cli(nodeArgs(0), 50_000);
    const joined = () => [0, 1, 2, 3].every((r) => existsSync(join(outDir, `joined${r}`)));
    for (let waited = 0; !joined(); waited += 100) {
      assert.ok(waited < 40_000, 'the 4 ranks did not join');
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const node1Ranks = [2, 3].map((r) => Number(readFileSync(join(outDir, `pid${r}`), 'utf8')));
    const killedAt = Date.now();
    node1.kill('SIGKILL');
    const { code, signal, output } = await node0;
    const seconds = (Date.now() - killedAt) / 1000;
    assert.equal(signal, null, `node 0's launcher was killed by the test's time limit\n${output}`);
    assert.notEqual(code, 0, output);
    assert.ok(seconds < 15, `node 0 took ${seconds} s to stop (the collective timeout is 20 s)`);
    for (const r of [0, 1]) {
      const report = JSON.parse(readFileSync(join(outDir, `rank${r}.json`), 'utf8')) as { error: string };
      assert.match(report.error, /barrier/i, `rank ${r}: ${report.error}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
    for (const pid of node1Ranks) assert.equal(isAlive(pid), false, `node 1's rank (pid ${pid}) outlived its launcher`);
  } finally {
    rmSync(outDir, { recursive: true, force: true });
  }
});
