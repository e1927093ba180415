// The launchers people already have, simulated on loopback: SLURM's and Open MPI's variables read
// as one world, SLURM's host lists, torchrun's agent store (a TCPStore this test serves, as the
// agent does) joined by every rank under the restart's prefix, the error file, and a restart that
// continues the run.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as torch from '../../src/torch/index.js';
import { withoutLocalRankFlag } from '../../src/cli/main.js';
import { loadCheckpoint, resumeCommand } from '../../src/train/index.js';
import {
  applyClusterEnvironment, clusterEnvironment, elasticRestartRun, expandHostList, slurmPort, writeElasticErrorFile, ELASTIC_JOB_FILE,
} from '../../src/train/cluster-env.js';
import { freePort } from './run-ranks.js';
import { sitLatentsFixture, sitTrainArgs } from '../sit-latents.js';

torch.setNumThreads(1);
const REALS = join(dirname(fileURLToPath(import.meta.url)), '../../bin/reals.js');

test('expandHostList: SLURM host lists expand in order, ranges keeping their zero padding, bracket groups as a product', () => {
  assert.deepEqual(expandHostList('node[01-03,07],gpu5'), ['node01', 'node02', 'node03', 'node07', 'gpu5']);
  assert.deepEqual(expandHostList('gpu5'), ['gpu5']);
  assert.deepEqual(expandHostList('a,b-1,c.example.org'), ['a', 'b-1', 'c.example.org']);
  assert.deepEqual(expandHostList('x[9-11]'), ['x9', 'x10', 'x11']);
  assert.deepEqual(expandHostList('n[0098-0100]'), ['n0098', 'n0099', 'n0100']);
  assert.deepEqual(expandHostList('rack[1-2]-n[8,10]'), ['rack1-n8', 'rack1-n10', 'rack2-n8', 'rack2-n10']);
  assert.deepEqual(expandHostList('c[1-2]x,d[3]'), ['c1x', 'c2x', 'd3']);
  assert.throws(() => expandHostList('n[3-1]'), /SLURM host list 'n\[3-1\]': the range 3-1 runs backwards/);
  assert.throws(() => expandHostList('n[1-2'), /unbalanced brackets/);
  assert.throws(() => expandHostList('n1-2]'), /unbalanced brackets/);
  assert.throws(() => expandHostList('n[a-b]'), /'a-b' is not a number or a range lo-hi/);
});

test('slurmPort: 15000 plus the job id\'s last four digits, as Lightning; 12910 without a job id', () => {
  assert.equal(slurmPort('4242'), 19242);
  assert.equal(slurmPort('123456'), 18456);
  assert.equal(slurmPort('7'), 15007);
  assert.equal(slurmPort('1230000'), 15000);
  assert.equal(slurmPort(undefined), 12910);
});

const SLURM = { SLURM_PROCID: '5', SLURM_LOCALID: '1', SLURM_NTASKS: '8', SLURM_NODEID: '2', SLURM_JOB_NODELIST: 'node[07-09,12]', SLURM_JOB_ID: '31337' };

test('clusterEnvironment: SLURM\'s variables alone give the rank, world, local rank, node, and the first host with the job\'s port', () => {
  assert.deepEqual(clusterEnvironment(SLURM), {
    launcher: 'SLURM', rank: 5, worldSize: 8, localRank: 1, nodeRank: 2, masterAddr: 'node07', masterPort: 16337,
  });
  // The step's node list, where task 0 runs, over the job's; MASTER_ADDR/MASTER_PORT over both.
  assert.equal(clusterEnvironment({ ...SLURM, SLURM_STEP_NODELIST: 'node[09,12]' })!.masterAddr, 'node09');
  const given = clusterEnvironment({ ...SLURM, MASTER_ADDR: '10.0.0.1', MASTER_PORT: '2222' })!;
  assert.deepEqual([given.masterAddr, given.masterPort], ['10.0.0.1', 2222]);
  // torchrun's (or reals launch's, or the user's own) WORLD_SIZE wins; an interactive allocation is left alone.
  assert.equal(clusterEnvironment({ ...SLURM, WORLD_SIZE: '2', RANK: '0' }), null);
  assert.equal(clusterEnvironment({ ...SLURM, SLURM_JOB_NAME: 'interactive' }), null);
  assert.equal(clusterEnvironment({}), null);
  assert.equal(clusterEnvironment({ SLURM_PROCID: '0', SLURM_NTASKS: '1' }), null, 'one task is a world of 1, with no rendezvous');
  assert.throws(() => clusterEnvironment({ ...SLURM, SLURM_PROCID: '8' }), /^Error: SLURM: SLURM_PROCID=8, SLURM_NTASKS=8, SLURM_LOCALID=1 is not a rank of the world$/);
  assert.throws(() => clusterEnvironment({ ...SLURM, SLURM_LOCALID: undefined }), /environment variable SLURM_LOCALID must be a non-negative integer, got ''/);
  assert.throws(() => clusterEnvironment({ ...SLURM, SLURM_JOB_NODELIST: undefined }), /SLURM_JOB_NODELIST is not: set MASTER_ADDR/);
});

test('clusterEnvironment: Open MPI\'s OMPI_COMM_WORLD_* with MASTER_ADDR, which it requires; MASTER_PORT defaults to 29500', () => {
  const ompi = { OMPI_COMM_WORLD_RANK: '3', OMPI_COMM_WORLD_SIZE: '4', OMPI_COMM_WORLD_LOCAL_RANK: '1' };
  assert.deepEqual(clusterEnvironment({ ...ompi, MASTER_ADDR: 'head' }), {
    launcher: 'Open MPI', rank: 3, worldSize: 4, localRank: 1, nodeRank: null, masterAddr: 'head', masterPort: 29500,
  });
  assert.equal(clusterEnvironment({ ...ompi, MASTER_ADDR: 'head', MASTER_PORT: '1234' })!.masterPort, 1234);
  assert.equal(clusterEnvironment({ OMPI_COMM_WORLD_RANK: '0', OMPI_COMM_WORLD_SIZE: '1', OMPI_COMM_WORLD_LOCAL_RANK: '0' }), null, 'mpirun -np 1 needs no MASTER_ADDR');
  assert.throws(() => clusterEnvironment(ompi), /^Error: Open MPI started this process \(OMPI_COMM_WORLD_SIZE is set\): set MASTER_ADDR/);
  assert.throws(() => clusterEnvironment({ ...ompi, MASTER_ADDR: 'head', MASTER_PORT: 'x' }), /MASTER_PORT must be a non-negative integer, got 'x'/);
});

test('applyClusterEnvironment: sets torchrun\'s variables from SLURM\'s, and nothing when WORLD_SIZE is there', () => {
  const env: NodeJS.ProcessEnv = { ...SLURM };
  applyClusterEnvironment(env);
  assert.deepEqual([env.RANK, env.WORLD_SIZE, env.LOCAL_RANK, env.GROUP_RANK, env.MASTER_ADDR, env.MASTER_PORT], ['5', '8', '1', '2', 'node07', '16337']);
  const torchrun: NodeJS.ProcessEnv = { ...SLURM, RANK: '1', WORLD_SIZE: '2', LOCAL_RANK: '1', MASTER_ADDR: 'a', MASTER_PORT: '1' };
  assert.equal(applyClusterEnvironment(torchrun), null);
  assert.deepEqual([torchrun.RANK, torchrun.WORLD_SIZE], ['1', '2']);
});

test('withoutLocalRankFlag: --local-rank N, --local-rank=N and --local_rank are dropped before --, nothing else', () => {
  const head = ['node', 'reals'];
  assert.deepEqual(withoutLocalRankFlag([...head, '--local-rank=3', 'sit', 'train', '--lr', '1']), [...head, 'sit', 'train', '--lr', '1']);
  assert.deepEqual(withoutLocalRankFlag([...head, 'sit', 'train', '--local_rank', '0', '--lr', '1']), [...head, 'sit', 'train', '--lr', '1']);
  assert.deepEqual(withoutLocalRankFlag([...head, 'sit', '--local_rank=12']), [...head, 'sit']);
  assert.deepEqual(withoutLocalRankFlag([...head, 'launch', '--', 'x', '--local-rank=1']), [...head, 'launch', '--', 'x', '--local-rank=1']);
  // Not a rank: left for commander to refuse.
  assert.deepEqual(withoutLocalRankFlag([...head, 'sit', '--local-rank', 'x']), [...head, 'sit', '--local-rank', 'x']);
});

test('resumeCommand: ranks that srun, mpirun or torchrun started are told the trainer\'s own command; reals launch\'s ranks under srun, reals launch\'s', () => {
  const argv = ['/usr/bin/node', '/x/bin/reals.js', 'sit', 'train', '--model', 'SiT-S/2'];
  const ranks = { RANK: '0', WORLD_SIZE: '8', LOCAL_WORLD_SIZE: '4', MASTER_ADDR: 'node01', MASTER_PORT: '29500' };
  for (const launcher of [{ SLURM_PROCID: '0' }, { OMPI_COMM_WORLD_RANK: '0' }, { TORCHELASTIC_RESTART_COUNT: '0' }]) {
    assert.equal(resumeCommand('r', argv, { ...ranks, ...launcher }), 'reals sit train --model SiT-S/2 --resume r');
  }
  assert.match(resumeCommand('r', argv, { ...ranks, SLURM_PROCID: '0', REALS_LAUNCHER_PID: '12' }), /^reals launch --nproc-per-node 4 --nnodes 2 /);
});

test('writeElasticErrorFile: torch\'s record {"message": {"message": "<name>: <message>", "extraInfo": {py_callstack, timestamp}}}', () => {
  const dir = mkdtempSync(join(tmpdir(), 'reals-error-file-'));
  try {
    const path = join(dir, 'error.json');
    assert.equal(writeElasticErrorFile(new RangeError('bad flag'), {}), null);
    const before = Math.floor(Date.now() / 1000);
    assert.equal(writeElasticErrorFile(new RangeError('bad flag'), { TORCHELASTIC_ERROR_FILE: path }), path);
    const record = JSON.parse(readFileSync(path, 'utf8'));
    assert.deepEqual(Object.keys(record), ['message']);
    assert.deepEqual(Object.keys(record.message), ['message', 'extraInfo']);
    assert.equal(record.message.message, 'RangeError: bad flag');
    assert.match(record.message.extraInfo.py_callstack, /^RangeError: bad flag\n\s+at /);
    assert.equal(typeof record.message.extraInfo.timestamp, 'string');
    assert.ok(Math.abs(Number(record.message.extraInfo.timestamp) - before) <= 2);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('elasticRestartRun: on a restart, the newest run folder this torchrun job started that holds a checkpoint', () => {
  const results = mkdtempSync(join(tmpdir(), 'reals-restart-'));
  try {
    const job = { TORCHELASTIC_RUN_ID: 'job7', MASTER_ADDR: 'head', MASTER_PORT: '29400' };
    const run = (name: string, record: object | null, checkpoint: boolean): void => {
      mkdirSync(join(results, name, 'checkpoints'), { recursive: true });
      if (record !== null) writeFileSync(join(results, name, ELASTIC_JOB_FILE), JSON.stringify(record));
      if (checkpoint) writeFileSync(join(results, name, 'checkpoints', '0000002.safetensors'), '');
    };
    run('000-SiT', { runId: 'job7', store: 'head:29400' }, true);
    run('001-SiT', { runId: 'job7', store: 'head:29400' }, true);
    run('002-SiT', { runId: 'other', store: 'head:29400' }, true);
    run('003-SiT', null, true);
    run('004-SiT', { runId: 'job7', store: 'head:29400' }, false);
    assert.equal(elasticRestartRun(results, { ...job, TORCHELASTIC_RESTART_COUNT: '1' }), join(results, '001-SiT'));
    assert.equal(elasticRestartRun(results, { ...job, TORCHELASTIC_RESTART_COUNT: '0' }), null, 'a first attempt starts anew');
    assert.equal(elasticRestartRun(results, { ...job, MASTER_PORT: '1', TORCHELASTIC_RESTART_COUNT: '1' }), null, 'another job');
    assert.equal(elasticRestartRun(results, job), null, 'not under torchrun');
    assert.equal(elasticRestartRun(join(results, 'none'), { ...job, TORCHELASTIC_RESTART_COUNT: '1' }), null);
  } finally {
    rmSync(results, { recursive: true, force: true });
  }
});

test('TCPStore: a client reads what another sets through the server', async () => {
  const port = await freePort();
  const server = new torch.distributed.TCPStore('127.0.0.1', port, { isMaster: true, waitForWorkers: false });
  const client = new torch.distributed.TCPStore('127.0.0.1', port, { timeoutMs: 5000, waitForWorkers: false });
  client.set('/worker/attempt_0/x', 'value');
  assert.equal(server.get('/worker/attempt_0/x'), 'value');
});

// --- two ranks of `reals sit train`, started as SLURM and torchrun start them ----------------------

const fixtures = sitLatentsFixture('reals-cluster-data-');
const trainArgs = (cache: string, model: string, results: string, maxSteps: number): string[] => sitTrainArgs({ cache, model }, results, maxSteps, 2);

/** The environment of this test without any launcher's variables, so that each run names its own. */
function bareEnv(): NodeJS.ProcessEnv {
  const launcherVariable = /^(RANK|LOCAL_RANK|WORLD_SIZE|LOCAL_WORLD_SIZE|GROUP_RANK|MASTER_ADDR|MASTER_PORT|SLURM_.*|OMPI_.*|TORCHELASTIC_.*|REALS_LAUNCHER_PID)$/;
  return { ...Object.fromEntries(Object.entries(process.env).filter(([name]) => !launcherVariable.test(name))), OMP_NUM_THREADS: '1' };
}

/** Runs the reals CLI with `env`; killed after `limitMs`. */
function cli(args: string[], env: NodeJS.ProcessEnv, limitMs = 120_000): Promise<{ code: number | null; stderr: string; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [REALS, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env, timeout: limitMs });
    let output = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => { output += chunk.toString(); });
    child.stderr.on('data', (chunk: Buffer) => { output += chunk.toString(); stderr += chunk.toString(); });
    child.on('close', (code) => resolve({ code, stderr, output }));
  });
}

/** A SLURM job id whose Lightning port (slurmPort) nothing listens on now. */
async function jobIdWithFreePort(): Promise<string> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const last4 = String(Math.floor(Math.random() * 10000)).padStart(4, '0');
    const free = await new Promise<boolean>((resolve) => {
      const server = createServer();
      server.once('error', () => resolve(false));
      server.listen(slurmPort(last4), '127.0.0.1', () => server.close(() => resolve(true)));
    });
    if (free) return `77${last4}`;
  }
  throw new Error('no free port in 15000-24999');
}

function checkpointSteps(runDir: string): number[] {
  return readdirSync(join(runDir, 'checkpoints')).filter((f) => /^\d+\.safetensors$/.test(f)).map((f) => Number(f.slice(0, 7)));
}

test('srun of two tasks with only SLURM\'s variables: one world of 2 and one run folder', { timeout: 300_000 }, async () => {
  const root = mkdtempSync(join(tmpdir(), 'reals-slurm-'));
  try {
    const { cache, model } = await fixtures();
    const results = join(root, 'results');
    const jobId = await jobIdWithFreePort();
    const runs = await Promise.all([0, 1].map((task) => cli(trainArgs(cache, model, results, 2), {
      ...bareEnv(), SLURM_PROCID: String(task), SLURM_LOCALID: String(task), SLURM_NTASKS: '2', SLURM_NODEID: '0',
      SLURM_JOB_NODELIST: 'localhost', SLURM_JOB_ID: jobId,
    })));
    assert.deepEqual(runs.map((r) => r.code), [0, 0], runs.map((r) => r.output).join('\n'));
    assert.match(runs[0]!.stderr, new RegExp(`^note: SLURM: 2 task\\(s\\), this is rank 0 \\(local rank 0\\); rendezvous at localhost:${slurmPort(jobId)};`, 'm'));
    assert.doesNotMatch(runs[1]!.stderr, /note: SLURM/, 'the note is rank 0\'s');
    const folders = readdirSync(results);
    assert.deepEqual(folders, ['000-SiT-tiny-Linear-velocity-None']);
    const saved = loadCheckpoint(join(results, folders[0]!, 'checkpoints', '0000002.safetensors')).metadata;
    assert.deepEqual([saved.step, saved.world_size], [2, 2]);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('torchrun\'s agent store: both ranks join it as clients under /worker/attempt_N, ignore --local-rank, and a restart resumes the run', { timeout: 300_000 }, async () => {
  const root = mkdtempSync(join(tmpdir(), 'reals-torchrun-'));
  try {
    const { cache, model } = await fixtures();
    const results = join(root, 'results');
    const port = await freePort();
    // The agent's store: the ranks would fail to serve one on its port, and they must not.
    const agentStore = new torch.distributed.TCPStore('127.0.0.1', port, { isMaster: true, waitForWorkers: false });
    const attempt = (restart: number, maxSteps: number) => Promise.all([0, 1].map((rank) => cli(
      [`--local-rank=${rank}`, ...trainArgs(cache, model, results, maxSteps)],
      {
        ...bareEnv(), RANK: String(rank), LOCAL_RANK: String(rank), WORLD_SIZE: '2', LOCAL_WORLD_SIZE: '2', GROUP_RANK: '0',
        MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port), TORCHELASTIC_USE_AGENT_STORE: 'True',
        TORCHELASTIC_RESTART_COUNT: String(restart), TORCHELASTIC_RUN_ID: 'job-1', TORCHELASTIC_MAX_RESTARTS: '3',
        TORCHELASTIC_ERROR_FILE: join(root, `error-${restart}-${rank}.json`),
      },
    )));
    const first = await attempt(0, 2);
    assert.deepEqual(first.map((r) => r.code), [0, 0], first.map((r) => r.output).join('\n'));
    // Attempt 1 rendezvouses in the same store, where attempt 0's keys remain: under its own prefix it reads none of
    // them (two attempts under one prefix fail: the second's ranks connect to the first's dead addresses).
    const second = await attempt(1, 4);
    assert.deepEqual(second.map((r) => r.code), [0, 0], second.map((r) => r.output).join('\n'));
    const folders = readdirSync(results);
    assert.deepEqual(folders, ['000-SiT-tiny-Linear-velocity-None'], 'the restart continued the run folder');
    const run = join(results, folders[0]!);
    assert.match(second[0]!.stderr, new RegExp(`^note: torchrun restart 1: resuming ${run} from its last checkpoint$`, 'm'));
    assert.match(readFileSync(join(run, 'log.txt'), 'utf8'), /resuming in .* from step 2/);
    assert.deepEqual(JSON.parse(readFileSync(join(run, ELASTIC_JOB_FILE), 'utf8')), { runId: 'job-1', store: `127.0.0.1:${port}` });
    assert.deepEqual(checkpointSteps(run).sort(), [2, 4]);
    assert.equal(loadCheckpoint(join(run, 'checkpoints', '0000004.safetensors')).metadata.world_size, 2);
    assert.equal(existsSync(join(root, 'error-0-0.json')), false, 'no error file from a worker that succeeded');
    // Referenced here, so that the agent's store is not collected (and closed) while the ranks use it.
    void agentStore;
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('a failing worker under torchrun leaves torch\'s error record in TORCHELASTIC_ERROR_FILE and exits 1', { timeout: 60_000 }, async () => {
  const root = mkdtempSync(join(tmpdir(), 'reals-error-'));
  try {
    const errorFile = join(root, 'error.json');
    const missing = join(root, 'no-cache');
    const { code, stderr } = await cli(['sit', 'train', '--latents-path', missing, '--model', 'SiT-S/2', '--results-dir', join(root, 'results')],
      { ...bareEnv(), TORCHELASTIC_ERROR_FILE: errorFile, TORCHELASTIC_RESTART_COUNT: '0' }, 60_000);
    assert.equal(code, 1, stderr);
    const line = /^error: (.*)$/m.exec(stderr)![1]!;
    const record = JSON.parse(readFileSync(errorFile, 'utf8'));
    assert.match(record.message.message, /^\w*Error: /);
    assert.equal(record.message.message.slice(record.message.message.indexOf(': ') + 2), line);
    assert.match(record.message.extraInfo.py_callstack, /\n\s+at /);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
