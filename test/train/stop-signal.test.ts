// A stop signal saves the run: `reals sit train` as a child process gets SIGTERM after a few
// steps, saves a checkpoint at the step it finished, releases run.lock, prints one line with the
// step and the --resume command, and exits 143; the resumed run ends with the weights of a run
// never interrupted. A second signal ends it at once; on two ranks, one signalled rank stops both.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as torch from '../../src/torch/index.js';
import { AutoencoderKL, configToDiffusers } from '../../src/models/autoencoder-kl.js';
import { DINOV2_CONFIGS, DinoVisionTransformer } from '../../src/models/dinov2.js';
import { saveSafetensors } from '../../src/io/index.js';
import { loadCheckpoint } from '../../src/train/index.js';
import { parseMetrics } from '../../src/runlog/index.js';
import { RUN_LOCK } from '../../src/train/run-dir.js';
import { resumeCommand } from '../../src/train/stop.js';
import { freePort } from '../distributed/run-ranks.js';
import { sitLatentsFixture, sitTrainArgs } from '../sit-latents.js';
import { writeColourClasses } from '../colour-classes.js';
import { withTmp } from '../helpers.js';

torch.setNumThreads(1);
const REALS = join(dirname(fileURLToPath(import.meta.url)), '../../bin/reals.js');
const RUN = '000-SiT-tiny-Linear-velocity-None';
const STOPPED = /^stopped by (SIGTERM(?: \(sent to another rank\))?) after step (\d+): checkpoint (\S+); continue with: (.*)$/m;

const fixtures = sitLatentsFixture('reals-stop-data-');
const trainArgs = (cache: string, model: string, results: string, maxSteps: number): string[] => sitTrainArgs({ cache, model }, results, maxSteps, 100000);

interface Child { process: ChildProcess; stdout: string; output: string; exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }> }

function start(args: string[], env: NodeJS.ProcessEnv = {}): Child {
  const child = spawn(process.execPath, [REALS, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, OMP_NUM_THREADS: '1', ...env } });
  const run: Child = {
    process: child, stdout: '', output: '',
    exit: new Promise((resolve) => child.on('close', (code, signal) => resolve({ code, signal }))),
  };
  child.stdout!.on('data', (chunk: Buffer) => { run.stdout += chunk.toString(); run.output += chunk.toString(); });
  child.stderr!.on('data', (chunk: Buffer) => { run.output += chunk.toString(); });
  return run;
}

/** Waits until the run's metrics.jsonl holds `steps` records (the child has trained that many steps). */
async function stepsDone(runDir: string, steps: number, child: Child): Promise<void> {
  const metrics = join(runDir, 'metrics.jsonl');
  for (let waited = 0; !(existsSync(metrics) && parseMetrics(readFileSync(metrics, 'utf8')).length >= steps); waited += 50) {
    assert.ok(waited < 120_000, `no ${steps} steps in 120 s\n${child.output}`);
    assert.equal(child.process.exitCode, null, `the run ended early\n${child.output}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

function checkpointSteps(runDir: string): number[] {
  return readdirSync(join(runDir, 'checkpoints')).filter((f) => /^\d+\.safetensors$/.test(f)).map((f) => Number(f.slice(0, 7)));
}

/** Waits until `runDir` has logged `steps` steps (watching `child`), sends it `signals` in order, and waits for its exit. */
async function signalAfter(child: Child, runDir: string, steps: number, ...signals: NodeJS.Signals[]): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  await stepsDone(runDir, steps, child);
  for (const signal of signals) child.process.kill(signal);
  return child.exit;
}

/**
 * Starts `args`, sends SIGTERM after `steps` steps, and checks the stop: exit 143, one line naming
 * SIGTERM, the step (at least `steps`) and its checkpoint, the only one in `runDir`; no step logged
 * after it; run.lock released; the command that continues it. Returns the step and that command.
 */
async function stopsAndSaves(args: string[], runDir: string, steps = 2): Promise<{ step: number; command: string }> {
  const child = start(args);
  assert.deepEqual(await signalAfter(child, runDir, steps, 'SIGTERM'), { code: 143, signal: null }, child.output);
  const lines = child.stdout.split('\n').filter((line) => line.startsWith('stopped'));
  assert.equal(lines.length, 1, child.output);
  const [, by, stepText, checkpoint, command] = STOPPED.exec(lines[0]!)!;
  const step = Number(stepText);
  assert.equal(by, 'SIGTERM');
  assert.ok(step >= steps, `stopped after step ${step}`);
  assert.deepEqual(checkpointSteps(runDir), [step], 'one checkpoint, of the step the run stopped after');
  assert.equal(checkpoint, join(runDir, 'checkpoints', `${String(step).padStart(7, '0')}.safetensors`));
  assert.equal(loadCheckpoint(checkpoint!).metadata.step, step);
  assert.equal(existsSync(join(runDir, RUN_LOCK)), false, 'run.lock released');
  assert.equal(parseMetrics(readFileSync(join(runDir, 'metrics.jsonl'), 'utf8')).at(-1)!.step, step, 'no step after the checkpoint was logged');
  assert.equal(command, `reals ${args.join(' ')} --resume ${runDir}`);
  return { step, command: command! };
}

/**
 * Runs the printed `command` (its first word, reals, dropped) with `extra` flags and `whole`, a run
 * never stopped, to the same end, and checks their checkpoints `a` and `b` hold the same tensors of
 * `groups`, bit for bit.
 */
async function resumesAsWhole(command: string, extra: string[], whole: string[], checkpoints: { a: string; b: string }, groups: string[]): Promise<void> {
  const runs = [start([...command.split(' ').slice(1), ...extra]), start(whole)];
  for (const c of runs) assert.deepEqual(await c.exit, { code: 0, signal: null }, c.output);
  const a = loadCheckpoint(checkpoints.a);
  const b = loadCheckpoint(checkpoints.b);
  for (const group of groups) {
    assert.deepEqual(Object.keys(a.groups[group]!).sort(), Object.keys(b.groups[group]!).sort());
    for (const [key, t] of Object.entries(b.groups[group]!)) assert.deepEqual(a.groups[group]![key]!.toArray(), t.toArray(), `${group}.${key}`);
  }
}

const stepFile = (step: number) => `${String(step).padStart(7, '0')}.safetensors`;

test('resumeCommand: the reals command line with --resume in place of any earlier one, shell-quoted; under a launcher, inside reals launch', () => {
  const argv = ['/usr/bin/node', '/x/bin/reals.js', 'sit', 'train', '--resume', 'old', '--model', 'SiT-S/2', '--data-path', "my images's", '--resume=older'];
  assert.equal(resumeCommand('results/000-SiT', argv, {}), "reals sit train --model SiT-S/2 --data-path 'my images'\\''s' --resume results/000-SiT");
  assert.equal(resumeCommand('r', argv, { WORLD_SIZE: '4', LOCAL_WORLD_SIZE: '4' }), "reals launch --nproc-per-node 4 -- sit train --model SiT-S/2 --data-path 'my images'\\''s' --resume r");
  assert.match(resumeCommand('r', argv, { WORLD_SIZE: '4', LOCAL_WORLD_SIZE: '2', MASTER_ADDR: '10.0.0.1', MASTER_PORT: '29500' }),
    /^reals launch --nproc-per-node 2 --nnodes 2 --node-rank <this node's> --master-addr 10\.0\.0\.1 --master-port 29500 -- sit train /);
  const selfLaunched = ['/usr/bin/node', '/x/bin/reals.js', 'align', 'train', '--gpus-per-node', '2'];
  assert.equal(resumeCommand('r', selfLaunched, { WORLD_SIZE: '2', LOCAL_WORLD_SIZE: '2' }), 'reals align train --gpus-per-node 2 --resume r');
  // A script calling the library, or a reals command that is not a trainer: the flag alone.
  assert.equal(resumeCommand('r', ['/usr/bin/node', '/x/train.ts'], {}), '--resume r');
  assert.equal(resumeCommand('r', ['/usr/bin/node', '/x/bin/reals.js', 'demo', '--out', 'o'], {}), '--resume r');
});

test('SIGTERM during sit train: the step finishes, a checkpoint of it is written, run.lock released, one line, exit 143; resuming ends as an uninterrupted run, bit for bit', { timeout: 300_000 }, withTmp('stop', async (root) => {
  const { cache, model } = await fixtures();
  const results = join(root, 'stopped');
  const run = join(results, RUN);
  const { step, command } = await stopsAndSaves(trainArgs(cache, model, results, 1_000_000), run, 3);
  // The printed command, run to 3 steps past the stop, against a run never stopped.
  const end = step + 3;
  await resumesAsWhole(command, ['--max-steps', String(end)], trainArgs(cache, model, join(root, 'whole'), end),
    { a: join(run, 'checkpoints', stepFile(end)), b: join(root, 'whole', RUN, 'checkpoints', stepFile(end)) }, ['model', 'ema', 'opt']);
}));

test('a second signal ends sit train at once, without the stop\'s checkpoint', { timeout: 300_000 }, withTmp('stop-twice', async (root) => {
  const { cache, model } = await fixtures();
  const results = join(root, 'results');
  const child = start(trainArgs(cache, model, results, 1_000_000));
  const { code, signal } = await signalAfter(child, join(results, RUN), 2, 'SIGTERM', 'SIGINT');
  // Both pending at once, Linux hands over the lower-numbered first (SIGINT), so either may be the second.
  assert.ok(signal === 'SIGINT' || signal === 'SIGTERM', `ended by ${signal ?? `exit code ${code}`}, not by the second signal's default action\n${child.output}`);
  assert.doesNotMatch(child.stdout, STOPPED);
  assert.deepEqual(checkpointSteps(join(results, RUN)), []);
}));

test('2 ranks, SIGTERM to rank 1 only: both stop after the same step, rank 0 saves it and prints the line, both exit 143', { timeout: 300_000 }, withTmp('stop-ranks', async (root) => {
  const { cache, model } = await fixtures();
  const results = join(root, 'results');
  const port = String(await freePort());
  const ranks = [0, 1].map((rank) => start(trainArgs(cache, model, results, 1_000_000), {
    RANK: String(rank), LOCAL_RANK: String(rank), WORLD_SIZE: '2', LOCAL_WORLD_SIZE: '2', MASTER_ADDR: '127.0.0.1', MASTER_PORT: port,
  }));
  const run = join(results, RUN);
  await signalAfter(ranks[1]!, run, 3, 'SIGTERM');
  const exits = await Promise.all(ranks.map((r) => r.exit));
  assert.deepEqual(exits, [{ code: 143, signal: null }, { code: 143, signal: null }], ranks.map((r) => r.output).join('\n'));
  const [, by, stepText, checkpoint, command] = STOPPED.exec(ranks[0]!.stdout)!;
  assert.equal(by, 'SIGTERM (sent to another rank)');
  assert.doesNotMatch(ranks[1]!.stdout, STOPPED, 'one line, from rank 0');
  const step = Number(stepText);
  assert.deepEqual(checkpointSteps(run), [step]);
  const saved = loadCheckpoint(checkpoint!).metadata;
  assert.deepEqual([saved.step, saved.world_size, saved.rng_ranks?.length], [step, 2, 2]);
  assert.equal(existsSync(join(run, RUN_LOCK)), false, 'run.lock released');
  assert.match(command!, new RegExp(`^reals launch --nproc-per-node 2 -- sit train .* --resume ${run}$`));
}));

test('SIGTERM to reals launch reaches both ranks: rank 0 saves the step they stopped after, launch exits 143', { timeout: 300_000 }, withTmp('stop-launch', async (root) => {
  const { cache, model } = await fixtures();
  const results = join(root, 'results');
  const launcher = start(['launch', '--nproc-per-node', '2', '--master-port', String(await freePort()), '--', ...trainArgs(cache, model, results, 1_000_000)]);
  const run = join(results, RUN);
  assert.deepEqual(await signalAfter(launcher, run, 3, 'SIGTERM'), { code: 143, signal: null }, launcher.output);
  const lines = launcher.stdout.split('\n').filter((line) => line.includes('stopped by'));
  assert.equal(lines.length, 1, launcher.output);
  // launch signals both ranks; the ranks agree to stop at the next step, and a rank whose own
  // handler has not run by then (it runs between steps) names the signal as another rank's.
  const [, step] = /^\[rank 0\] stopped by SIGTERM(?: \(sent to another rank\))? after step (\d+): /.exec(lines[0]!) ?? assert.fail(lines[0]);
  assert.deepEqual(checkpointSteps(run), [Number(step)]);
  assert.equal(existsSync(join(run, RUN_LOCK)), false, 'run.lock released');
}));

test('SIGTERM during align train and teacher train: the same stop, checkpoint and line', { timeout: 300_000 }, withTmp('stop-trainers', async (root) => {
  torch.manualSeed(0);
  const teacherConfig = { imgSize: 56, embedDim: 32, depth: 1, numHeads: 2 };
  writeFileSync(join(root, 'teacher.json'), JSON.stringify(teacherConfig));
  const teacher = new DinoVisionTransformer({ ...DINOV2_CONFIGS.dinov2_vits14!, ...teacherConfig });
  saveSafetensors(join(root, 'teacher.safetensors'), Object.fromEntries(teacher.stateDict()));
  const vae = new AutoencoderKL({
    blockOutChannels: [8, 16, 16], downBlockTypes: Array(3).fill('DownEncoderBlock2D'), upBlockTypes: Array(3).fill('UpDecoderBlock2D'), normNumGroups: 4,
  });
  writeFileSync(join(root, 'vae.json'), JSON.stringify(configToDiffusers(vae.config)));
  await stopsAndSaves([
    'align', 'train', '--data-path', 'fashion-mnist', '--dino-model', join(root, 'teacher.json'), '--dino-ckpt', join(root, 'teacher.safetensors'),
    '--dino-input-size', '56', '--vae-config', join(root, 'vae.json'), '--lpips-weight', '0', '--batch-size', '2', '--num-workers', '0',
    '--results-dir', join(root, 'align'), '--mlp-hidden', '16', '--log-every', '1', '--ckpt-every', '100000', '--precision', 'fp32',
  ], join(root, 'align', '000-align'));

  writeFileSync(join(root, 'vit.json'), JSON.stringify({ imgSize: 32, patchSize: 8, embedDim: 16, depth: 1, numHeads: 2 }));
  await stopsAndSaves([
    'teacher', 'train', '--data-path', 'fashion-mnist', '--dino-model', join(root, 'vit.json'), '--local-crops-number', '0',
    '--head-n-prototypes', '32', '--head-hidden-dim', '16', '--head-bottleneck-dim', '8', '--batch-size', '4', '--num-workers', '0',
    '--results-dir', join(root, 'teacher'), '--log-every', '1', '--ckpt-every', '100000', '--max-steps', '100000', '--precision', 'fp32', '--device', 'cpu',
  ], join(root, 'teacher', '000-teacher'));
}));

test('SIGTERM during classifier train: the same stop; the printed command resumed to 3 steps past it equals a run never stopped, bit for bit', { timeout: 300_000 }, withTmp('stop-classifier', async (root) => {
  const data = join(root, 'data');
  await writeColourClasses(data, 4, 6, 8);
  const args = (out: string, steps: number) => ['classifier', 'train', '--data-path', data, '--out', out, '--image-size', '8', '--steps', String(steps),
    '--batch-size', '5', '--feature-dim', '8', '--log-every', '1', '--ckpt-every', '100000', '--num-workers', '0', '--device', 'cpu'];
  const out = join(root, 'stopped');
  const whole = join(root, 'whole');
  const { step, command } = await stopsAndSaves(args(out, 1_000_000), out);
  const end = step + 3;
  await resumesAsWhole(command, ['--steps', String(end)], args(whole, end),
    { a: join(out, 'checkpoints', stepFile(end)), b: join(whole, 'checkpoints', stepFile(end)) }, ['model', 'opt']);
  assert.deepEqual(readFileSync(join(out, 'classifier.safetensors')), readFileSync(join(whole, 'classifier.safetensors')));
}));
