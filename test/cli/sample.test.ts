import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as torch from '../../src/torch/index.js';
import { AutoencoderKL } from '../../src/models/autoencoder-kl.js';
import { DiT } from '../../src/models/sit.js';
import { createDiffusion, generateLatents } from '../../src/diffusion/index.js';
import type { Tensor } from '../../src/torch/index.js';
import { NpzFile, loadSafetensors } from '../../src/io/index.js';
import { encodePng } from '../../src/runlog/images.js';
import { loadGenerator, type GeneratorSpec } from '../../src/train/sit.js';
import { sampleLatents } from '../../src/sampling/sample.js';
import { batchSeed } from '../../src/sampling/labels.js';
import { denormalizeLatents, latentNormalization, type LatentNormalization } from '../../src/data/latent-normalization.js';
import { buildProgram } from '../../src/cli/main.js';
import { launch } from '../../src/pipelines/launch.js';
import { SAMPLE_RUN_DEFAULTS, sampleFolderName } from '../../src/pipelines/sample.js';
import { PassThrough } from 'node:stream';
import { FIXTURES, loadFixture, assertClose, tinyVae } from '../helpers.js';

torch.setNumThreads(1);
const OFFICIAL = join(FIXTURES, 'models', 'sit_checkpoint.pt');
/** make_sit.py's "tiny" network as reals names it from a tiny.json --model file. */
const TINY: GeneratorSpec = {
  name: 'SiT-tiny', kind: 'SiT',
  config: { depth: 2, hiddenSize: 16, patchSize: 2, numHeads: 2, inputSize: 4, inChannels: 4, mlpRatio: 4, classDropoutProb: 0.1, numClasses: 3, learnSigma: true },
};

function reals(...args: string[]): Promise<unknown> {
  return buildProgram().parseAsync(['node', 'reals', ...args]);
}

/** A tiny random diffusers VAE folder: 3 -> 4 channels, downsampling by 2. */
function vaeFolder(dir: string): string {
  tinyVae().savePretrained(dir);
  return dir;
}

function tinyJson(root: string): string {
  const path = join(root, 'tiny.json');
  writeFileSync(path, JSON.stringify({ depth: 2, hiddenSize: 16, patchSize: 2, numHeads: 2 }));
  return path;
}

test('the official-format checkpoint samples as SiT\'s own sampler does for the same seeds and labels (ODE and SDE, with and without CFG)', () => {
  const { cases } = loadFixture('sample_reference.json');
  const { model } = loadGenerator(OFFICIAL, { spec: TINY });
  for (const c of cases) {
    const o = c.options;
    const latents = sampleLatents({
      model, method: c.mode, steps: o.num_steps, cfgScale: c.cfg_scale,
      ode: { samplingMethod: o.sampling_method, atol: o.atol, rtol: o.rtol, reverse: o.reverse },
      sde: { samplingMethod: o.sampling_method, diffusionForm: o.diffusion_form, diffusionNorm: o.diffusion_norm, lastStep: o.last_step, lastStepSize: o.last_step_size },
    }, [0, 1, 2, 3], batchSeed(c.seed * 1 + 0, 0));
    assertClose(latents, c.samples, 1e-4, 1e-5, `${c.mode} ${o.sampling_method} cfg ${c.cfg_scale}`);
  }
});

/** What `reals sample` runs in by default ('auto': bf16 on CPUs with AMX or AVX512-BF16, else fp32). */
const DEFAULT_PRECISION = torch.resolvePrecision('auto', 'cpu');

/** The PNG pixels of latents as sampleImages decodes them, in DEFAULT_PRECISION, NHWC. */
function decodeAs(vae: AutoencoderKL, latents: Tensor, normalization: LatentNormalization): Tensor {
  return torch.noGrad(() => torch.withPrecision(DEFAULT_PRECISION, 'cpu', () => vae.decode(denormalizeLatents(latents, normalization))).float())
    .mul(127.5).add(128).clamp(0, 255).to('uint8').permute(0, 2, 3, 1).contiguous();
}

test('reals sample ode writes one PNG per sample, an ADM .npz of them and a grid (ddpm: from a DiT); a checkpoint of another size fails first', async () => {
  const root = mkdtempSync(join(tmpdir(), 'reals-sample-'));
  const vaePath = vaeFolder(join(root, 'vae'));
  const model = tinyJson(root);
  const common = ['--ckpt', OFFICIAL, '--vae-path', vaePath, '--sample-dir', join(root, 'samples'), '--image-size', '8', '--num-classes', '3'];
  await assert.rejects(reals('sample', 'ode', '--model', 'SiT-S/2', ...common), /--ckpt .*sit_checkpoint\.pt does not fit --model SiT-S\/2/);
  assert.equal(existsSync(join(root, 'samples')), false, 'nothing written before the error');

  await reals('sample', 'ode', '--model', model, ...common, '--per-proc-batch-size', '3', '--num-fid-samples', '5', '--cfg-scale', '4',
    '--num-sampling-steps', '6', '--global-seed', '2');
  const name = 'tiny-sit_checkpoint-cfg-4.0-3-ODE-6-dopri5-interval-0.0-1.0-seed-2';
  const dir = join(root, 'samples', name);
  assert.deepEqual(readdirSync(dir).sort(), ['000000.png', '000001.png', '000002.png', '000003.png', '000004.png', '000005.png', 'sampling.json']);
  assert.ok(existsSync(join(root, 'samples', `${name}.png`)), 'grid');
  const npz = NpzFile.open(join(root, 'samples', `${name}.npz`));
  assert.deepEqual(npz.keys(), ['arr_0']);
  const arr = npz.get('arr_0');
  npz.close();
  assert.deepEqual([arr.dtype, arr.shape], ['uint8', [5, 8, 8, 3]]);

  // Sample 0 is the first of batch 0 of the only rank, drawn with seed 2 * 1 + 0 and decoded as sample_ddp.py does.
  const vae = AutoencoderKL.fromPretrained(vaePath);
  const { model: network } = loadGenerator(OFFICIAL, { spec: TINY });
  const latents = sampleLatents({ model: network, method: 'ode', steps: 6, cfgScale: 4, precision: DEFAULT_PRECISION }, [0, 1, 2], batchSeed(2, 0));
  const expected = decodeAs(vae, latents, latentNormalization(vaePath, vae));
  assert.deepEqual(arr.slice(0, 0, 3).toArray(), expected.toArray());

  // The onnxruntime backend draws the same samples (to within a level of 8-bit rounding) into its own folder.
  const euler = [...common, '--model', model, '--per-proc-batch-size', '3', '--num-fid-samples', '3', '--cfg-scale', '4', '--num-sampling-steps', '6',
    '--sampling-method', 'euler', '--precision', 'fp32'];
  await reals('sample', 'ode', ...euler);
  await reals('sample', 'ode', ...euler, '--backend', 'onnxruntime');
  const run = (suffix: string) => {
    const file = NpzFile.open(join(root, 'samples', `tiny-sit_checkpoint-cfg-4.0-3-ODE-6-euler-interval-0.0-1.0-seed-0${suffix}.npz`));
    const images = file.get('arr_0').to('int32');
    file.close();
    return images;
  };
  const difference = torch.noGrad(() => run('-onnxruntime').sub(run('')).abs().max().item());
  assert.ok(difference <= 1, `onnxruntime and libtorch PNGs differ by ${difference} levels`);
  await assert.rejects(reals('sample', 'ode', ...common, '--model', model, '--backend', 'onnxruntime'), /--backend onnxruntime runs the ODE sampler with --sampling-method euler or heun2, and the SDE with Euler \(got ode dopri5\)/);
  const sde = [...common, '--model', model, '--per-proc-batch-size', '2', '--num-fid-samples', '2', '--num-sampling-steps', '6', '--precision', 'fp32'];
  await reals('sample', 'sde', ...sde);
  await reals('sample', 'sde', ...sde, '--backend', 'onnxruntime');
  const sdeRun = (suffix: string) => {
    const file = NpzFile.open(join(root, 'samples', `tiny-sit_checkpoint-cfg-1.0-2-SDE-6-Euler-sigma-Mean-0.04-interval-0.0-1.0-seed-0${suffix}.npz`));
    const images = file.get('arr_0').to('int32');
    file.close();
    return images;
  };
  const sdeDifference = torch.noGrad(() => sdeRun('-onnxruntime').sub(sdeRun('')).abs().max().item());
  assert.ok(sdeDifference <= 1, `onnxruntime and libtorch SDE PNGs differ by ${sdeDifference} levels`);

  // The same file read as a DiT (same keys; DiT keeps the learned-variance channels) samples with DDPM.
  await assert.rejects(reals('sample', 'ddpm', '--model', 'SiT-XL/2', ...common), /--model SiT-XL\/2: not one of DiT-XL\/2, /);
  await reals('sample', 'ddpm', '--model', model, ...common, '--per-proc-batch-size', '2', '--num-fid-samples', '2', '--num-sampling-steps', '5');
  const ddpm = NpzFile.open(join(root, 'samples', 'tiny-sit_checkpoint-cfg-1.0-2-DDPM-5-interval-0.0-1.0-seed-0.npz'));
  assert.deepEqual(ddpm.header('arr_0').shape, [2, 8, 8, 3]);
  ddpm.close();
  rmSync(root, { recursive: true });
});

test('cache-latents, sit train from the cache, extract-ema and sample sde run end to end through the CLI', async () => {
  const root = mkdtempSync(join(tmpdir(), 'reals-cli-sit-'));
  const vaePath = vaeFolder(join(root, 'vae'));
  const images = join(root, 'images');
  torch.manualSeed(1);
  for (const c of ['a', 'b', 'c']) {
    mkdirSync(join(images, c), { recursive: true });
    for (let i = 0; i < 3; i++) writeFileSync(join(images, c, `${i}.png`), await encodePng(torch.randint(0, 256, [10, 8, 3], { dtype: 'uint8' })));
  }
  const cache = join(root, 'cache');
  await reals('cache-latents', '--data-path', images, '--vae-path', vaePath, '--out', cache, '--image-size', '8', '--flip', '--num-workers', '0');
  const model = tinyJson(root);
  const results = join(root, 'results');
  await reals('sit', 'train', '--latents-path', cache, '--model', model, '--results-dir', results, '--global-batch-size', '4',
    '--max-steps', '3', '--ckpt-every', '2', '--log-every', '1');
  const run = join(results, '000-SiT-tiny-Linear-velocity-None');
  assert.deepEqual(readdirSync(join(run, 'checkpoints')).filter((f) => /^\d+\.safetensors$/.test(f)), ['0000002.safetensors', '0000003.safetensors']);
  assert.ok(existsSync(join(run, 'metrics.jsonl')));
  assert.ok(readdirSync(run).some((f) => f.startsWith('events.out.tfevents')), 'TensorBoard events');

  const ckpt = join(run, 'checkpoints', '0000003.safetensors');
  await reals('extract-ema', '--ckpt', ckpt, '--out', join(root, 'ema.safetensors'));
  const ema = loadSafetensors(join(root, 'ema.safetensors'));
  const trained = loadGenerator(ckpt, { spec: TINY }).model.stateDict();
  assert.deepEqual(Object.keys(ema).sort(), [...trained.keys()].sort());
  for (const [key, t] of trained) assert.deepEqual(ema[key]!.toArray(), t.toArray(), key);

  await reals('sample', 'sde', '--model', model, '--ckpt', ckpt, '--vae-path', vaePath, '--sample-dir', join(root, 'samples'),
    '--per-proc-batch-size', '2', '--num-fid-samples', '3', '--num-sampling-steps', '4');
  const npz = NpzFile.open(join(root, 'samples', 'tiny-0000003-cfg-1.0-2-SDE-4-Euler-sigma-Mean-0.04-interval-0.0-1.0-seed-0.npz'));
  assert.deepEqual(npz.header('arr_0').shape, [3, 8, 8, 3]);
  npz.close();
  // Without --model the checkpoint says what it is (network, latent size, classes); ODE as SiT's sample.py spells it.
  await reals('sample', 'ODE', '--ckpt', ckpt, '--vae-path', vaePath, '--sample-dir', join(root, 'samples'),
    '--per-proc-batch-size', '2', '--num-fid-samples', '2', '--num-sampling-steps', '3', '--sampling-method', 'euler');
  const recorded = NpzFile.open(join(root, 'samples', 'SiT-tiny-0000003-cfg-1.0-2-ODE-3-euler-interval-0.0-1.0-seed-0.npz'));
  assert.deepEqual(recorded.header('arr_0').shape, [2, 8, 8, 3]);
  recorded.close();
  await assert.rejects(reals('sample', 'ode', '--ckpt', ckpt, '--vae-path', vaePath, '--image-size', '16', '--sample-dir', join(root, 'x')),
    /--image-size 16: --ckpt .*0000003\.safetensors was trained on 4x4 latents \(8x8 images through --vae-path\)/);
  await assert.rejects(reals('sample', 'ddpm', '--ckpt', ckpt, '--vae-path', vaePath, '--sample-dir', join(root, 'x')),
    /holds a SiT; sample it with ode or sde/);
  // Training from raw images encodes them at every step.
  await reals('sit', 'train', '--data-path', images, '--vae-path', vaePath, '--image-size', '8', '--num-classes', '3', '--model', model,
    '--results-dir', results, '--global-batch-size', '4', '--max-steps', '2', '--num-workers', '0');
  assert.ok(existsSync(join(results, '001-SiT-tiny-Linear-velocity-None', 'checkpoints', '0000002.safetensors')));
  // Bad input fails before any step: a torn shard, a VAE folder that cannot say how to normalize.
  const shard = join(cache, 'shard-00000.npz');
  truncateSync(shard, statSync(shard).size - 100);
  await assert.rejects(reals('sit', 'train', '--latents-path', cache, '--model', model, '--results-dir', results),
    /latent cache shard .*cache\/shard-00000\.npz is unreadable \(torn or truncated\?\)/);
  const config = JSON.parse(readFileSync(join(vaePath, 'config.json'), 'utf8'));
  delete config.scaling_factor;
  writeFileSync(join(vaePath, 'config.json'), JSON.stringify(config));
  await assert.rejects(reals('sit', 'train', '--data-path', images, '--vae-path', vaePath, '--model', model, '--results-dir', results),
    /no mean_std\.json and no scaling_factor in config\.json/);
  assert.deepEqual(readdirSync(results).sort(), ['000-SiT-tiny-Linear-velocity-None', '001-SiT-tiny-Linear-velocity-None'], 'no run folder for the failures');
  // A model of another size asked of our checkpoint: a clear error.
  await assert.rejects(reals('sample', 'ode', '--model', 'SiT-S/2', '--ckpt', ckpt, '--vae-path', vaePath, '--sample-dir', join(root, 'x')),
    /holds a SiT SiT-tiny, not the SiT SiT-S\/2 asked for/);
  rmSync(root, { recursive: true });
});

test('under reals launch, sit train splits the global batch over 2 ranks and sample gives rank r the seed global * 2 + r', async () => {
  const root = mkdtempSync(join(tmpdir(), 'reals-ddp-sit-'));
  const vaePath = vaeFolder(join(root, 'vae'));
  const images = join(root, 'images');
  torch.manualSeed(2);
  for (const c of ['a', 'b']) {
    mkdirSync(join(images, c), { recursive: true });
    for (let i = 0; i < 4; i++) writeFileSync(join(images, c, `${i}.png`), await encodePng(torch.randint(0, 256, [8, 8, 3], { dtype: 'uint8' })));
  }
  const cache = join(root, 'cache');
  await reals('cache-latents', '--data-path', images, '--vae-path', vaePath, '--out', cache, '--image-size', '8', '--num-workers', '0');
  const model = tinyJson(root);
  let output = '';
  const sink = new PassThrough().on('data', (chunk: Buffer) => { output += chunk.toString(); });
  process.env.OMP_NUM_THREADS = '1';
  const masterPort = 20000 + Math.floor(Math.random() * 20000);
  const ranks = (command: string[]) => launch({ command, nprocPerNode: 2, masterPort, stdout: sink, stderr: sink });
  const results = join(root, 'results');
  assert.equal(await ranks(['sit', 'train', '--latents-path', cache, '--model', model, '--results-dir', results, '--global-batch-size', '4',
    '--max-steps', '2', '--log-every', '1']), 0, output);
  const ckpt = join(results, '000-SiT-tiny-Linear-velocity-None', 'checkpoints', '0000002.safetensors');
  assert.ok(existsSync(ckpt), output);
  // Resuming with every rank's RNG state continues as the uninterrupted run (which crosses an epoch: 2 batches per rank).
  const train = ['sit', 'train', '--latents-path', cache, '--model', model, '--global-batch-size', '4', '--log-every', '1', '--max-steps', '3'];
  assert.equal(await ranks([...train, '--results-dir', results, '--resume', join(results, '000-SiT-tiny-Linear-velocity-None')]), 0, output);
  assert.equal(await ranks([...train, '--results-dir', join(root, 'whole')]), 0, output);
  const losses = (dir: string) => readFileSync(join(dir, '000-SiT-tiny-Linear-velocity-None', 'metrics.jsonl'), 'utf8').trim().split('\n')
    .map((line) => { const { step, loss } = JSON.parse(line); return [step, loss]; });
  assert.equal(losses(results).length, 3);
  assert.deepEqual(losses(results), losses(join(root, 'whole')));

  assert.equal(await ranks(['sample', 'ode', '--model', model, '--ckpt', ckpt, '--vae-path', vaePath, '--sample-dir', join(root, 'samples'),
    '--per-proc-batch-size', '2', '--num-fid-samples', '4', '--num-sampling-steps', '3', '--sampling-method', 'euler', '--global-seed', '1']), 0, output);
  const npz = NpzFile.open(join(root, 'samples', 'tiny-0000002-cfg-1.0-2-ODE-3-euler-interval-0.0-1.0-seed-1.npz'));
  const arr = npz.get('arr_0');
  npz.close();
  // Rank r draws samples r, r + 2 from seed 1 * 2 + r.
  const vae = AutoencoderKL.fromPretrained(vaePath);
  const { model: network, normalization } = loadGenerator(ckpt, { spec: TINY });
  for (const rank of [0, 1]) {
    const latents = sampleLatents({ model: network, method: 'ode', steps: 3, ode: { samplingMethod: 'euler' }, precision: DEFAULT_PRECISION }, [rank, rank + 2], batchSeed(1 * 2 + rank, 0));
    const expected = decodeAs(vae, latents, normalization!);
    assert.deepEqual(arr.index(torch.tensor([rank, rank + 2])).toArray(), expected.toArray(), `rank ${rank}`);
  }
  rmSync(root, { recursive: true });
});

test('sample ddpm with --cfg-scale draws as DiT\'s sample.py: the noise twice, labels then null, p_sample_loop on all 2B rows, the first half', () => {
  torch.manualSeed(0);
  const network = new DiT({ depth: 1, hiddenSize: 16, patchSize: 2, numHeads: 2, inputSize: 4, inChannels: 4, numClasses: 3, learnSigma: true }).eval();
  // Non-zero output layers: adaLN-Zero's init would make every sample the noise.
  torch.noGrad(() => { for (const p of network.parameters()) if (p.abs().sum().item() === 0) p.normal_(0, 0.05); });
  const [indices, seed, steps, cfgScale] = [[0, 1, 2], 7, 5, 4];
  const latents = sampleLatents({ model: network, method: 'ddpm', steps, cfgScale }, indices, seed);
  // sample.py: z = randn(n, ...); z = cat([z, z]); y = cat([y, null]); p_sample_loop(forward_with_cfg, ...); chunk(2)[0].
  const reference = torch.noGrad(() => {
    torch.manualSeed(seed);
    const z = torch.randn([3, 4, 4, 4]);
    const y = torch.tensor([0, 1, 2, 3, 3, 3], { dtype: 'int64' });
    const diffusion = createDiffusion({ timestepRespacing: String(steps) });
    const model = (x: Tensor, t: Tensor, kwargs: Record<string, unknown>) => network.forwardWithCfg(x, t, kwargs.y as Tensor, cfgScale);
    return diffusion.pSampleLoop(model, [6, 4, 4, 4], { noise: torch.cat([z, z]), clipDenoised: false, modelKwargs: { y } }).slice(0, 0, 3);
  });
  assert.deepEqual(latents.toArray(), reference.toArray());
  const alone = generateLatents({ model: network, labels: indices, shape: [4, 4, 4], seed, method: 'ddpm', steps, cfgScale });
  assert.ok(alone.sub(latents).abs().max().item() > 1e-3, 'the guided batch alone draws other noise');
});

test('batch seeds: the first batch keeps the reference rule, later batches draw different noise (libtorch keeps 32 seed bits)', () => {
  assert.equal(batchSeed(7, 0), 7);
  const draws = [0, 1, 2].map((b) => {
    torch.manualSeed(batchSeed(7, b));
    return torch.randn([4]);
  });
  assert.ok(draws[0]!.ne(draws[1]!).all().item() && draws[1]!.ne(draws[2]!).all().item(), 'batches 0, 1 and 2 have their own noise');
  const seeds = new Set<number>();
  for (let rank = 0; rank < 8; rank++) for (let b = 0; b < 2000; b++) seeds.add(batchSeed(rank, b));
  assert.equal(seeds.size, 8 * 2000, 'no two (rank, batch) pairs share a seed');
  for (const seed of seeds) assert.ok(Number.isInteger(seed) && seed >= 0 && seed < 2 ** 32);
});

test('the sample folder name carries --cfg-channels when given, so guiding 3 and all channels never share a folder', () => {
  const options = { ...SAMPLE_RUN_DEFAULTS, model: 'SiT-XL/2', ckpt: 'results/000-SiT-XL-2/checkpoints/0400000.safetensors', vaePath: 'vae', cfgScale: 1.8, guidanceHigh: 0.75 };
  const base = 'SiT-XL-2-0400000-cfg-1.8-4-ODE-250-dopri5-interval-0.0-0.75-seed-0';
  assert.equal(sampleFolderName('ode', options, 'dopri5'), base);
  assert.equal(sampleFolderName('ode', { ...options, cfgChannels: 'all' }, 'dopri5'), `${base}-cfg-channels-all`);
  assert.equal(sampleFolderName('ode', { ...options, cfgChannels: 3 }, 'dopri5'), `${base}-cfg-channels-3`);
});
