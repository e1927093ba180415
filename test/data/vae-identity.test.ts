// A generator is never decoded by the wrong VAE: the latent cache and the generator checkpoint
// record the VAE's identity (config and weights hash), and `reals sample` refuses another VAE,
// here one of another downsampling factor with the same 4 channels, unless --allow-vae-mismatch.
import { test, mock } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as torch from '../../src/torch/index.js';
import { AutoencoderKL } from '../../src/models/autoencoder-kl.js';
import { buildProgram } from '../../src/cli/main.js';
import { NpzFile, SafetensorsFile, loadSafetensors, saveSafetensors } from '../../src/io/index.js';
import { CRC32_KEY } from '../../src/io/safetensors.js';
import { loadCheckpoint } from '../../src/train/index.js';
import { encodePng } from '../../src/runlog/index.js';
import { LATENT_INDEX } from '../../src/data/latents.js';
import { describeVae, sameVae, vaeIdentity } from '../../src/data/vae-identity.js';
import { tinyVae } from '../helpers.js';

torch.setNumThreads(1);

function reals(...args: string[]): Promise<unknown> {
  return buildProgram().parseAsync(['node', 'reals', ...args]);
}

/** The shapes of arr_0 in each .npz of a sample folder. */
function sampleShapes(dir: string): number[][] {
  return readdirSync(dir).filter((f) => f.endsWith('.npz')).map((f) => {
    const npz = NpzFile.open(join(dir, f));
    const shape = npz.header('arr_0').shape;
    npz.close();
    return shape;
  });
}

test('identity: equal for the same weights and architecture whatever the normalization; another factor, or other weights, differ', () => {
  const a = vaeIdentity(tinyVae());
  assert.equal(a.sha256.length, 64);
  assert.ok(sameVae(a, vaeIdentity(tinyVae())));
  assert.ok(sameVae(a, { ...a, config: { ...a.config, scaling_factor: 0.5 } }), 'the normalization is the checkpoint\'s own');
  assert.ok(!sameVae(a, { ...a, config: { ...a.config, norm_num_groups: 2 } }), 'same weights, another function');
  torch.manualSeed(1);
  const retrained = new AutoencoderKL(tinyVae().config);
  assert.ok(!sameVae(a, vaeIdentity(retrained)));
  assert.match(describeVae(a), new RegExp(`^f2, 4 latent channels, block_out_channels \\[8,8\\], weights sha256 ${a.sha256.slice(0, 12)}$`));
});

test('sit train records the VAE (from the cache, or --vae-path); reals sample refuses a VAE of another factor unless --allow-vae-mismatch; a checkpoint without the record samples with a note', { timeout: 300_000 }, async () => {
  const root = mkdtempSync(join(tmpdir(), 'reals-vae-identity-'));
  const warn = mock.method(console, 'warn', () => {});
  try {
    const vaeA = join(root, 'vae-f2');
    tinyVae().savePretrained(vaeA);
    // Another downsampling factor (4), the same 4 latent channels and normalization.
    const vaeB = join(root, 'vae-f4');
    torch.manualSeed(0);
    new AutoencoderKL({
      blockOutChannels: [8, 8, 8], downBlockTypes: Array(3).fill('DownEncoderBlock2D'), upBlockTypes: Array(3).fill('UpDecoderBlock2D'),
      normNumGroups: 4, layersPerBlock: 1, latentChannels: 4,
    }).savePretrained(vaeB);
    const identityA = vaeIdentity(AutoencoderKL.fromPretrained(vaeA));
    const images = join(root, 'images');
    torch.manualSeed(4);
    for (const c of ['a', 'b', 'c']) {
      mkdirSync(join(images, c), { recursive: true });
      for (let i = 0; i < 2; i++) writeFileSync(join(images, c, `${i}.png`), await encodePng(torch.randint(0, 256, [8, 8, 3], { dtype: 'uint8' })));
    }
    const cache = join(root, 'cache');
    await reals('cache-latents', '--data-path', images, '--vae-path', vaeA, '--out', cache, '--image-size', '8', '--num-workers', '0', '--precision', 'fp32');
    assert.deepEqual(JSON.parse(readFileSync(join(cache, LATENT_INDEX), 'utf8')).vae, identityA);
    // Continuing the cache with other weights of the same architecture (same settings, same latent shape) is refused.
    const retrained = join(root, 'vae-f2-retrained');
    torch.manualSeed(5);
    new AutoencoderKL(tinyVae().config).savePretrained(retrained);
    await assert.rejects(reals('cache-latents', '--data-path', images, '--vae-path', retrained, '--out', cache, '--image-size', '8', '--precision', 'fp32'),
      /cacheLatents: .*cache holds the latents of another VAE \(f2, .*\) than --vae-path .*vae-f2-retrained \(f2, .*\); use another --out folder$/);

    const model = join(root, 'tiny.json');
    writeFileSync(model, JSON.stringify({ depth: 1, hiddenSize: 16, patchSize: 2, numHeads: 2 }));
    const results = join(root, 'results');
    const train = ['--model', model, '--results-dir', results, '--global-batch-size', '2', '--max-steps', '1', '--precision', 'fp32'];
    await reals('sit', 'train', '--latents-path', cache, ...train);
    const ckpt = join(results, '000-SiT-tiny-Linear-velocity-None', 'checkpoints', '0000001.safetensors');
    assert.deepEqual(loadCheckpoint(ckpt).metadata.vae, identityA);
    await reals('sit', 'train', '--data-path', images, '--vae-path', vaeA, '--image-size', '8', '--num-workers', '0', ...train);
    assert.deepEqual(loadCheckpoint(join(results, '001-SiT-tiny-Linear-velocity-None', 'checkpoints', '0000001.safetensors')).metadata.vae, identityA);
    await assert.rejects(reals('sit', 'train', '--latents-path', cache, '--vae-path', vaeB, ...train),
      /--latents-path .*cache holds the latents of another VAE \(f2, .*\) than --vae-path .*vae-f4 \(f4, /);

    const sample = (vae: string, dir: string, ...extra: string[]) => reals('sample', 'ode', '--ckpt', ckpt, '--vae-path', vae, '--sample-dir', join(root, dir),
      '--per-proc-batch-size', '2', '--num-fid-samples', '2', '--num-sampling-steps', '2', '--sampling-method', 'euler', '--precision', 'fp32', ...extra);
    await sample(vaeA, 'matching');
    assert.deepEqual(sampleShapes(join(root, 'matching')), [[2, 8, 8, 3]]);
    await assert.rejects(sample(vaeB, 'refused'), new RegExp(
      `--ckpt .*0000001\\.safetensors was trained on the latents of another VAE \\(f2, 4 latent channels, block_out_channels \\[8,8\\], weights sha256 ${identityA.sha256.slice(0, 12)}\\) ` +
      'than --vae-path .*vae-f4 \\(f4, 4 latent channels, block_out_channels \\[8,8,8\\], weights sha256 [0-9a-f]{12}\\): .*pass --allow-vae-mismatch'));
    assert.deepEqual(readdirSync(root).filter((f) => f === 'refused'), [], 'nothing written');
    warn.mock.resetCalls();
    await sample(vaeB, 'allowed', '--allow-vae-mismatch');
    assert.deepEqual(sampleShapes(join(root, 'allowed')), [[2, 16, 16, 3]]);
    assert.match(String(warn.mock.calls.at(-1)?.arguments[0]), /^note: --ckpt .* was trained on the latents of another VAE .*; decoding with it anyway \(--allow-vae-mismatch\)$/);

    // The web page decodes in the browser: reals export refuses the other VAE the same way.
    await assert.rejects(reals('export', 'onnx', '--ckpt', ckpt, '--vae-path', vaeB, '--out', join(root, 'onnx-refused')),
      /--ckpt .*0000001\.safetensors was trained on the latents of another VAE .*pass --allow-vae-mismatch/);
    assert.ok(!existsSync(join(root, 'onnx-refused', 'generator.onnx')), 'no graph written');
    await reals('export', 'onnx', '--ckpt', ckpt, '--vae-path', vaeA, '--out', join(root, 'onnx'));
    assert.ok(existsSync(join(root, 'onnx', 'generator.onnx')));

    // A checkpoint from before the record: its metadata without `vae`.
    const old = join(root, 'old.safetensors');
    const header = SafetensorsFile.open(ckpt);
    header.close();
    const metadata = Object.fromEntries(Object.entries(header.metadata).filter(([key]) => key !== 'vae' && key !== CRC32_KEY));
    saveSafetensors(old, loadSafetensors(ckpt), metadata, { checksums: true });
    assert.equal(loadCheckpoint(old).metadata.vae, undefined);
    warn.mock.resetCalls();
    await reals('sample', 'ode', '--ckpt', old, '--vae-path', vaeA, '--sample-dir', join(root, 'old'), '--per-proc-batch-size', '2', '--num-fid-samples', '2',
      '--num-sampling-steps', '2', '--sampling-method', 'euler', '--precision', 'fp32');
    assert.deepEqual(sampleShapes(join(root, 'old')), [[2, 8, 8, 3]]);
    const notes = warn.mock.calls.map((call) => String(call.arguments[0])).filter((line) => line.includes('does not record the VAE'));
    assert.equal(notes.length, 1);
    assert.match(notes[0]!, /^note: --ckpt .*old\.safetensors does not record the VAE it was trained on .*: --vae-path .*vae-f2 is not checked against it$/);
  } finally {
    warn.mock.restore();
    rmSync(root, { recursive: true, force: true });
  }
});
