import { before, after, test } from 'node:test';
import assert from 'node:assert/strict';
import { CommanderError } from 'commander';
import { existsSync, mkdtempSync, readFileSync, readdirSync, realpathSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as torch from '../../src/torch/index.js';
import type { Tensor } from '../../src/torch/index.js';
import { AutoencoderKL, type AutoencoderKLConfig } from '../../src/models/autoencoder-kl.js';
import { DINOV2_CONFIGS, DinoVisionTransformer } from '../../src/models/dinov2.js';
import { ALIGNMENT_DEFAULTS, AlignmentHeads, loadAlignmentHeads, parseAlignmentConfig, type AlignmentConfig } from '../../src/models/alignment.js';
import { NLayerDiscriminator } from '../../src/models/discriminator.js';
import { DataLoader, FashionMNIST, type InMemoryDataset } from '../../src/data/index.js';
import { loadCheckpoint, saveCheckpoint } from '../../src/train/index.js';
import { trainAlignment } from '../../src/train/align.js';
import { ALIGN_HEADS_NAME, convertAlignment, loadAlignedModels } from '../../src/train/align-convert.js';
import { alignCommand, alignConvertCommand } from '../../src/cli/align.js';
import { runAlignConvert, type AlignConvertRunOptions } from '../../src/pipelines/align.js';
import { assertClose } from '../helpers.js';

const fashion = new FashionMNIST({ train: false, channels: 3 });
const images: InMemoryDataset = { length: 32, itemShape: fashion.itemShape, image: (i) => fashion.image(i), label: (i) => fashion.label(i) };

// Latents 4 x 8 x 8 for 32 px images; heads with non-default pooling so that the config must travel.
const VAE_CONFIG: Partial<AutoencoderKLConfig> = {
  blockOutChannels: [8, 16, 16], downBlockTypes: Array(3).fill('DownEncoderBlock2D'), upBlockTypes: Array(3).fill('UpDecoderBlock2D'),
  normNumGroups: 4, latentChannels: 4, scalingFactor: 0.5,
};
const HEADS_CONFIG: AlignmentConfig = { ...ALIGNMENT_DEFAULTS, latentChannels: 4, featureDim: 32, hiddenDim: 24, depth: 2, clsPooling: 'avgpool', clsPoolSize: 2 };
const quiet = { write: () => true, isTTY: false } as unknown as NodeJS.WritableStream;

let dir: string;
let ckpt: string;

before(async () => {
  dir = realpathSync(mkdtempSync(join(tmpdir(), 'reals-align-convert-')));
  torch.manualSeed(0);
  // A teacher whose 56 px input gives 4 x 4 tokens; an EMA decay of 0.5 makes ema.* differ clearly from model.*.
  const result = await trainAlignment({
    vae: new AutoencoderKL(VAE_CONFIG),
    dino: new DinoVisionTransformer({ ...DINOV2_CONFIGS.dinov2_vits14!, imgSize: 56, embedDim: 32, depth: 1, numHeads: 2 }),
    dinoInputSize: 56,
    heads: new AlignmentHeads(HEADS_CONFIG),
    discriminator: new NLayerDiscriminator({ ndf: 8, nLayers: 1 }),
    lpips: null, lpipsWeight: 0, discStart: 1000,
    data: new DataLoader(images, { batchSize: 8, seed: 0 }), resultsDir: dir, maxEpoch: 1, maxSteps: 3, lr: 1e-3, emaDecay: 0.5,
    args: { dataPath: 'fashion-mnist', imageSize: 32 }, log: () => {}, progressStream: quiet,
  });
  ckpt = result.checkpoint!;
});

after(() => rmSync(dir, { recursive: true, force: true }));

/** The VAE and heads built by hand from the checkpoint's `group`.* tensors. */
function fromGroup(group: 'model' | 'ema'): { vae: AutoencoderKL; heads: AlignmentHeads } {
  const weights = loadCheckpoint(ckpt).groups[group]!;
  const isHead = (key: string) => /^mlp_(patch|cls)\./.test(key);
  const vae = new AutoencoderKL(VAE_CONFIG);
  vae.loadDiffusersStateDict(Object.fromEntries(Object.entries(weights).filter(([k]) => !isHead(k))));
  const heads = new AlignmentHeads(HEADS_CONFIG);
  heads.loadStateDict(Object.fromEntries(Object.entries(weights).filter(([k]) => isHead(k))));
  return { vae: vae.eval(), heads: heads.eval() };
}

/** mean_std.json computed directly: the same seeded order, batches and noise, all latents at once in float64. */
async function directStats(vae: AutoencoderKL, numSamples: number, batchSize: number, seed: number): Promise<{ mean: number[]; std: number[] }> {
  torch.manualSeed(seed);
  const latents: Tensor[] = [];
  for await (const { images: x } of new DataLoader(images, { batchSize, seed, randomFlip: false }).iterate(0)) {
    const seen = latents.reduce((n, z) => n + z.size(0), 0);
    if (seen >= numSamples) break;
    latents.push(torch.noGrad(() => vae.encode(x.slice(0, 0, numSamples - seen)).sample()));
  }
  const z = torch.cat(latents).double();
  return { mean: Array.from(z.mean([0, 2, 3]).toArray() as Float64Array), std: Array.from(z.std([0, 2, 3], { correction: 0 }).toArray() as Float64Array) };
}

const same = (a: Tensor, b: Tensor): boolean => a.shape.join() === b.shape.join() && Boolean(a.eq(b).all().item());

function sameOutputs(a: AutoencoderKL, b: AutoencoderKL, x: Tensor): boolean {
  return torch.noGrad(() => {
    const [pa, pb] = [a.encode(x).parameters, b.encode(x).parameters];
    const z = pa.slice(1, 0, 4);
    return same(pa, pb) && same(a.decode(z), b.decode(z));
  });
}

test('convert writes a diffusers folder with the checkpoint\'s model.* or ema.* VAE, its mean_std.json and align.safetensors', async () => {
  const x = torch.rand([3, 3, 32, 32]).mul(2).sub(1);
  const outputs: Record<string, AutoencoderKL> = {};
  for (const group of ['model', 'ema'] as const) {
    const out = join(dir, `vae-${group}`);
    const models = loadAlignedModels(ckpt, { useEma: group === 'ema' });
    assert.equal(models.step, 3);
    // The run's arguments, with the optimizer settings that ran.
    assert.deepEqual(models.args, { dataPath: 'fashion-mnist', imageSize: 32, lr: 1e-3, betas: [0.5, 0.9], emaDecay: 0.5 });
    const result = await convertAlignment({ ...models, dataset: images, numSamples: 20, batchSize: 8, seed: 5, outputDir: out, device: 'cpu', progressStream: quiet });
    assert.equal(result.images, 20);
    assert.deepEqual(readdirSync(out).sort(), [ALIGN_HEADS_NAME, 'config.json', 'diffusion_pytorch_model.safetensors', 'mean_std.json']);

    const expected = fromGroup(group);
    const loaded = AutoencoderKL.fromPretrained(out);
    const stats = JSON.parse(readFileSync(join(out, 'mean_std.json'), 'utf8')) as { mean: number[]; std: number[] };
    // config.json carries the statistics as diffusers' latents_mean/latents_std, with scaling_factor 1
    // so that (z - latents_mean) * scaling_factor / latents_std is ReaLS's (z - mean) / std.
    assert.deepEqual(loaded.config, { ...expected.vae.config, latentsMean: stats.mean, latentsStd: stats.std, scalingFactor: 1, shiftFactor: null });
    assert.ok(sameOutputs(loaded, expected.vae, x), `${group}: encode and decode equal the checkpoint's weights'`);
    outputs[group] = loaded;

    // Over sampled latents of the 20 images, channel by channel, as computed directly.
    assert.deepEqual(Object.keys(stats), ['mean', 'std']);
    assert.equal(stats.mean.length, 4);
    assert.deepEqual(loaded.latentStats, stats);
    const direct = await directStats(expected.vae, 20, 8, 5);
    assertClose(torch.tensor(stats.mean, { dtype: 'float64' }), torch.tensor(direct.mean, { dtype: 'float64' }), 1e-10, 1e-12, `${group} mean`);
    assertClose(torch.tensor(stats.std, { dtype: 'float64' }), torch.tensor(direct.std, { dtype: 'float64' }), 1e-10, 1e-12, `${group} std`);

    const heads = loadAlignmentHeads(join(out, ALIGN_HEADS_NAME));
    assert.deepEqual(heads.config, HEADS_CONFIG);
    const z = torch.randn([2, 4, 8, 8]);
    torch.noGrad(() => {
      const [got, want] = [heads.forward(z), expected.heads.forward(z)];
      assert.ok(same(got.patch, want.patch) && same(got.cls!, want.cls!), `${group}: the heads give the checkpoint's outputs`);
    });
  }
  assert.ok(!sameOutputs(outputs.model!, outputs.ema!, x), 'the EMA weights differ from the trained ones');
});

test('`reals align convert` reads Fashion-MNIST at the run\'s image size and reports what it wrote', async () => {
  const out = join(dir, 'cli');
  const lines: string[] = [];
  const options: AlignConvertRunOptions = { ckpt, outputDir: out, dataPath: 'fashion-mnist', numSamples: 12, useEma: true, batchSize: 8, log: (line) => lines.push(line) };
  const result = await runAlignConvert(options);
  assert.equal(result.images, 12);
  assert.match(lines[0]!, /^ema weights of step 3; latents of 12 images: mean \[.*\], std \[.*\]$/);
  assert.match(lines[1]!, /mean_std\.json, align\.safetensors$/);
  assert.deepEqual(AutoencoderKL.fromPretrained(out).latentStats, result.stats);
});

test('bad input is a clear error and writes nothing', async () => {
  assert.ok(alignCommand().commands.some((c) => c.name() === 'convert'), '`align convert` is registered');
  const run = async (args: string[]): Promise<string> => {
    let stderr = '';
    const command = alignConvertCommand().exitOverride().configureOutput({ writeErr: (s) => { stderr += s; }, writeOut: () => {} });
    // Flag errors are commander's (written to stderr); the pipeline's reject, and main() prints them as `error: <message>`.
    await assert.rejects(command.parseAsync(args, { from: 'user' }), (error: Error) => {
      if (!(error instanceof CommanderError)) stderr += `error: ${error.message}\n`;
      return true;
    });
    return stderr;
  };
  const out = join(dir, 'never');
  const base = ['--output-dir', out, '--data-path', 'fashion-mnist', '--num-samples', '4'];
  assert.match(await run(base), /error: required option '--ckpt <file>' not specified/);
  assert.match(await run(['--ckpt', join(dir, 'none.safetensors'), ...base]), /error: .*none\.safetensors: no such checkpoint file/);
  assert.match(await run(['--ckpt', ckpt, ...base.slice(0, -1), '0']), /--num-samples.*expected an integer >= 1, got '0'/);
  assert.match(await run(['--ckpt', ckpt, '--output-dir', out, '--data-path', join(dir, 'no-images'), '--num-samples', '4']),
    /error: ImageFolder: .*no-images is not a folder/);

  const plain = join(dir, 'plain.safetensors');
  saveCheckpoint(plain, { tensors: { model: { w: torch.zeros([1]) } }, metadata: { step: 1, epoch: 0, args: {} } });
  assert.match(await run(['--ckpt', plain, ...base]), /plain\.safetensors: no "vae_config" metadata: not a checkpoint of `reals align train`/);
  assert.match(await run(['--ckpt', ckpt, ...base.slice(0, -1), '70000']), /^error: --num-samples 70000 exceeds the 60000 images of --data-path$/m);
  assert.equal(existsSync(out), false, 'no output folder was created');

  const models = loadAlignedModels(ckpt);
  await assert.rejects(convertAlignment({ ...models, dataset: images, numSamples: 33, outputDir: out }), { message: '--num-samples 33 exceeds the 32 images of --data-path' });
  assert.throws(() => loadAlignmentHeads(plain), /loadAlignmentHeads\(.*plain\.safetensors\): no "config" metadata entry/);
  assert.throws(() => parseAlignmentConfig({ ...HEADS_CONFIG, depth: 0, clsPooling: 'max' }, 'where'),
    /^Error: where: invalid AlignmentConfig: depth: .*; clsPooling: /);
});
