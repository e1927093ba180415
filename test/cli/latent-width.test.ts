// Latent width (issue 25, item 6): VAEs of 16 and 32 latent channels through the whole chain,
// driven by the commands' library functions on tiny models and 16 images of 32 px: align train
// (plain, weight 0; then aligned, fine-tuned from it), align convert, cache-latents, sit train,
// sample ode/sde with guidance, heads train-linear and segment, export onnx and the web page's
// generation; and `reals demo --latent-channels`. Also the RAE width warning of the generator trainer.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as torch from '../../src/torch/index.js';
import { loadNpz, saveSafetensors } from '../../src/io/index.js';
import { DinoVisionTransformer, resolveDinoConfig } from '../../src/models/dinov2.js';
import { loadAlignmentHeads } from '../../src/models/alignment.js';
import { readHeadCheckpoint } from '../../src/models/heads.js';
import { encodePng } from '../../src/runlog/images.js';
import { loadCheckpoint } from '../../src/train/checkpoint.js';
import { LatentCache } from '../../src/data/latents.js';
import { runAlignConvert, runAlignTrain } from '../../src/pipelines/align.js';
import { runCacheLatents, runGeneratorTrain } from '../../src/pipelines/generator.js';
import { runSample } from '../../src/pipelines/sample.js';
import { runExportWeb } from '../../src/pipelines/export.js';
import { runDense, runTrainLinear } from '../../src/pipelines/index.js';
import { AutoencoderKL } from '../../src/models/autoencoder-kl.js';
import { decodeImage } from '../../src/data/image.js';
import { generateInNode } from '../web/node-page.js';
import type { DemoResult } from '../../src/demo/index.js';
import { demoCommand } from '../../src/cli/demo.js';
import { buildProgram } from '../../src/cli/main.js';
import { tinyVae, withTmp } from '../helpers.js';

torch.setNumThreads(1);
const CONFIGS = join(dirname(fileURLToPath(import.meta.url)), '../../configs');
const SIDE = 32;
const quiet = () => {};

/**
 * 16 images of 32 px in two classes (left or right half bright) as an ImageNet-layout folder, and
 * the same images with their half as the mask (images/ + masks/) for the heads.
 */
async function writeImages(dir: string): Promise<{ data: string; labelled: string }> {
  const data = join(dir, 'data');
  const labelled = join(dir, 'labelled');
  for (const folder of [join(data, 'left'), join(data, 'right'), join(labelled, 'images'), join(labelled, 'masks')]) mkdirSync(folder, { recursive: true });
  torch.manualSeed(1);
  for (let i = 0; i < 16; i++) {
    const side = i % 2 === 0 ? 'left' : 'right';
    const columns = side === 'left' ? torch.slice(0, SIDE / 2) : torch.slice(SIDE / 2);
    const image = torch.rand([SIDE, SIDE, 3]).mul(40);
    image.index(':', columns).add_(180);
    const mask = torch.zeros([SIDE, SIDE, 1], { dtype: 'uint8' });
    mask.index(':', columns).fill_(1);
    const png = await encodePng(image.clamp(0, 255).to('uint8'));
    writeFileSync(join(data, side, `${i}.png`), png);
    writeFileSync(join(labelled, 'images', `${i}.png`), png);
    writeFileSync(join(labelled, 'masks', `${i}.png`), await encodePng(mask));
  }
  return { data, labelled };
}

/** The shipped tiny teacher (32 px, patch 4: 8x8 tokens, one per latent position of an f4 VAE) with random weights. */
function teacherFiles(dir: string): { dinoModel: string; dinoCkpt: string } {
  const dinoModel = join(CONFIGS, 'teacher', 'vit-tiny.json');
  torch.manualSeed(2);
  const dinoCkpt = join(dir, 'teacher.safetensors');
  saveSafetensors(dinoCkpt, Object.fromEntries(new DinoVisionTransformer(resolveDinoConfig(dinoModel)).stateDict()));
  return { dinoModel, dinoCkpt };
}

for (const channels of [16, 32]) {
  test(`${channels} latent channels: align train (plain, then aligned) -> convert -> cache-latents -> sit train -> sample ode/sde -> heads -> export onnx/web`,
    { timeout: 300_000 }, withTmp(`width-${channels}`, async (dir) => {
      const { data, labelled } = await writeImages(dir);
      const teacher = teacherFiles(dir);
      const vaeConfig = join(CONFIGS, 'vae', `f4-c${channels}-tiny.json`);
      const align = {
        dataPath: data, imageSize: SIDE, ...teacher, dinoInputSize: SIDE, vaeConfig, lpipsWeight: 0, discStart: 100, mlpHidden: 16,
        batchSize: 4, maxSteps: 2, numWorkers: 0, lr: 1e-3, precision: 'fp32' as const, log: quiet,
      };
      const convert = (ckpt: string, outputDir: string) => runAlignConvert({ ckpt, outputDir, dataPath: data, numSamples: 8, numWorkers: 0, log: quiet });

      // The plain VAE (the "pretrained" stand-in), then ReaLS fine-tuned from its folder.
      const plain = await runAlignTrain({ ...align, patchWeight: 0, clsWeight: 0, resultsDir: join(dir, 'plain') });
      const plainConverted = await convert(plain.checkpoint!, join(dir, 'vae-plain'));
      assert.equal(plainConverted.stats.mean.length, channels);
      const aligned = await runAlignTrain({ ...align, vaeCkpt: join(dir, 'vae-plain'), patchWeight: 0.5, clsWeight: 0.5, resultsDir: join(dir, 'aligned') });
      assert.equal((loadCheckpoint(aligned.checkpoint!).metadata.vae_config as { latent_channels: number }).latent_channels, channels);
      const vaePath = join(dir, 'vae');
      const stats = await convert(aligned.checkpoint!, vaePath);
      const meanStd = JSON.parse(readFileSync(join(vaePath, 'mean_std.json'), 'utf8')) as { mean: number[]; std: number[] };
      assert.deepEqual([meanStd.mean.length, meanStd.std.length], [channels, channels], 'mean_std.json: one entry per channel');
      assert.ok(meanStd.std.every((s) => s > 0));
      assert.deepEqual(meanStd, { mean: stats.stats.mean, std: stats.stats.std });
      const vae = AutoencoderKL.fromPretrained(vaePath).eval();
      assert.equal(vae.config.latentChannels, channels);
      assert.equal(loadAlignmentHeads(join(vaePath, 'align.safetensors')).config.latentChannels, channels);

      // cache-latents and SiT training on the cache (the shipped tiny-2: 128 wide, at least the 4 x 32 of a patch-2 token).
      const latentsPath = join(dir, 'latents');
      await runCacheLatents({ dataPath: data, vaePath, out: latentsPath, imageSize: SIDE, batchSize: 8, numWorkers: 0, precision: 'fp32' });
      const cache = LatentCache.open(latentsPath);
      assert.deepEqual(cache.index.settings.latentShape, [channels, SIDE / 4, SIDE / 4]);
      cache.close();
      const lines: string[] = [];
      const sit = await runGeneratorTrain('SiT', {
        model: join(CONFIGS, 'generator', 'tiny-2.json'), latentsPath, vaePath, globalBatchSize: 4, maxSteps: 2, ckptEvery: 2, logEvery: 1,
        resultsDir: join(dir, 'sit'), numWorkers: 0, precision: 'fp32', log: (line) => lines.push(line),
      });
      assert.equal(sit.model.config.inChannels, channels);
      assert.ok(!lines.some((line) => /token dimension/.test(line)), 'no width warning for a 128-wide SiT');

      // Sampling: the default guidance covers every channel (3 of them is the 4-channel convention).
      assert.equal(sit.model.cfgChannels, 'all');
      const sample = (mode: 'ode' | 'sde', extra: { cfgChannels?: 'all'; sampleDir: string }) => runSample(mode, {
        ckpt: sit.checkpoint!, vaePath, numFidSamples: 2, perProcBatchSize: 1, numSamplingSteps: 4, cfgScale: 2,
        samplingMethod: mode === 'ode' ? 'heun2' : 'Euler', globalSeed: 3, precision: 'fp32', log: quiet, ...extra,
      });
      const byDefault = await sample('ode', { sampleDir: join(dir, 'samples') });
      const all = await sample('ode', { cfgChannels: 'all', sampleDir: join(dir, 'samples-all') });
      const images = loadNpz(byDefault.npz!).arr_0!;
      assert.deepEqual(images.shape, [2, SIDE, SIDE, 3]);
      assert.ok(images.eq(loadNpz(all.npz!).arr_0!).all().item(), 'the default guides all channels');
      const sde = await sample('sde', { sampleDir: join(dir, 'samples') });
      assert.deepEqual(loadNpz(sde.npz!).arr_0!.shape, [2, SIDE, SIDE, 3]);

      // The heads: a linear head on the alignment MLPs' features, and one on the raw latents.
      const segmentationHead = { inIndex: [0, 1], clsToken: true, numClasses: 2, resizeFactors: null };
      const head = join(dir, 'head.safetensors');
      const mlp = await runTrainLinear({
        dataPath: labelled, vaePath, alignCkpt: join(vaePath, 'align.safetensors'), features: 'mlp', out: head, imageSize: SIDE,
        maxImages: 16, holdout: 0.25, steps: 20, batchSize: 4, seed: 0, log: quiet,
      });
      assert.deepEqual([mlp.train, mlp.heldOut], [12, 4]);
      assert.deepEqual(readHeadCheckpoint(head).config, { ...segmentationHead, inChannels: [64, 64] }, 'the teacher\'s width, the MLPs\' output');
      await runTrainLinear({
        dataPath: labelled, vaePath, features: 'latent', out: join(dir, 'latent-head.safetensors'), imageSize: SIDE,
        maxImages: 16, holdout: 0.25, steps: 20, batchSize: 4, seed: 0, log: quiet,
      });
      assert.deepEqual(readHeadCheckpoint(join(dir, 'latent-head.safetensors')).config, { ...segmentationHead, inChannels: [channels, channels] }, 'the latents\' width');
      const segmented = await runDense({
        inputs: [byDefault.sampleDir], vaePath, alignCkpt: join(vaePath, 'align.safetensors'), segHead: head, out: join(dir, 'segment'),
        imageSize: SIDE, features: 'mlp', log: quiet,
      });
      assert.equal(segmented.images, 2);
      assert.ok(existsSync(join(dir, 'segment', '000000_mask.png')), readdirSync(join(dir, 'segment')).join(', '));

      // export web: the manifest, and the page's generation (onnxruntime-node here) against `reals sample` on libtorch for its seed.
      const site = join(dir, 'site');
      const exported = await runExportWeb({ ckpt: sit.checkpoint!, vaePath, alignCkpt: join(vaePath, 'align.safetensors'), head, out: site, log: quiet });
      assert.equal(exported.manifest.vae.latentChannels, channels);
      assert.equal(exported.manifest.generator.cfgChannels, 'all');
      assert.equal(exported.manifest.vae.normalization.mean.length, channels);
      const page = await generateInNode(site, { classLabel: 0, cfgScale: 2, guidanceLow: 0, guidanceHigh: 1, steps: 4, method: 'heun2', seed: 3 });
      assert.equal(page.labels!.length, (SIDE / 4) ** 2);
      // Sample 0 (class 0, one per batch) has the page's noise for the seed. Within two of 255
      // levels: onnxruntime's and libtorch's kernels differ in the last float32 bits, which the
      // truncation to 8 bits can carry across a level boundary.
      const png = await decodeImage(join(byDefault.sampleDir, '000000.png'));
      const worst = png.data.reduce((m, v, i) => Math.max(m, Math.abs(v - page.pixels[i]!)), 0);
      assert.ok(worst <= 2, `the page's image differs from reals sample's by up to ${worst} levels`);
    }));
}

test('a SiT narrower than its tokens (patch^2 x channels) gets one warning naming the RAE rule when the trainer builds it', withTmp('width-warning', async (dir) => {
  const { data } = await writeImages(dir);
  tinyVae(32).savePretrained(join(dir, 'vae'));
  await runCacheLatents({ dataPath: data, vaePath: join(dir, 'vae'), out: join(dir, 'latents'), imageSize: SIDE, batchSize: 8, numWorkers: 0, precision: 'fp32' });
  const train = async (hiddenSize: number): Promise<string[]> => {
    const model = join(dir, `w${hiddenSize}.json`);
    writeFileSync(model, JSON.stringify({ depth: 1, hiddenSize, patchSize: 2, numHeads: 2 }));
    const lines: string[] = [];
    await runGeneratorTrain('SiT', {
      model, latentsPath: join(dir, 'latents'), vaePath: join(dir, 'vae'), globalBatchSize: 4, maxSteps: 2, logEvery: 1,
      resultsDir: join(dir, 'sit'), precision: 'fp32', log: (line) => lines.push(line),
    });
    return lines.filter((line) => /token dimension/.test(line));
  };
  // tinyVae(32) halves 32 px into 16x16 latents of 32 channels: patch-2 tokens of 2^2 x 32 = 128 numbers.
  const narrow = await train(64);
  assert.equal(narrow.length, 1, 'once per run, not per step');
  assert.match(narrow[0]!, /^warning: SiT-w64's hidden size 64 is below its token dimension 128 \(patch 2\^2 x 32 latent channels\); RAE \(arXiv 2510\.11690\)/);
  assert.deepEqual(await train(128), [], 'a SiT as wide as its tokens');
}));

test('reals demo --latent-channels 16 runs every latent space at 16 channels; the report says so and repeats the flag', { timeout: 300_000 }, withTmp('width-demo', async (out) => {
  const help = demoCommand().helpInformation();
  assert.match(help, /--latent-channels <n> .*default: the profile's, 8\)/s);
  await buildProgram().parseAsync(['node', 'reals', 'demo', '--profile', 'test', '--seeds', '0', '--latent-channels', '16', '--out', out]);
  const result = JSON.parse(readFileSync(join(out, 'metrics.json'), 'utf8')) as DemoResult;
  assert.equal(result.spaces.length, 3, 'pretrained, control and ReaLS');
  for (const space of result.spaces) {
    const vae = AutoencoderKL.fromPretrained(join(out, 'seed-0', space.id, 'vae-diffusers'));
    assert.equal(vae.config.latentChannels, 16, space.id);
    assert.equal(vae.latentStats!.mean.length, 16, `${space.id}: mean_std.json`);
    assert.ok(Number.isFinite(result.runs['0']![space.id]!.sampling.ode.fid), `${space.id}: an FID`);
  }
  const report = readFileSync(join(out, 'report.md'), 'utf8');
  assert.match(report, /the same architecture \(16 latent channels\)/);
  assert.match(report, /# this whole run: reals demo --profile test --seeds 0 .* --latent-channels 16 --out /);
}));
