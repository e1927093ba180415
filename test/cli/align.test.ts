import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as torch from '../../src/torch/index.js';
import { saveSafetensors, writeJsonFileAtomic } from '../../src/io/index.js';
import { AutoencoderKL, configToDiffusers } from '../../src/models/autoencoder-kl.js';
import { DINOV2_CONFIGS, DinoVisionTransformer } from '../../src/models/dinov2.js';
import { loadCheckpoint } from '../../src/train/index.js';
import { alignTrainCommand } from '../../src/cli/align.js';
import { resolveDinoConfig } from '../../src/models/dinov2.js';
import { resolveVaeConfig } from '../../src/models/autoencoder-kl.js';
import { loadStartingVae } from '../../src/data/inputs.js';

const REALS = join(dirname(fileURLToPath(import.meta.url)), '../../bin/reals.js');

function reals(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const { status, stdout, stderr } = spawnSync(process.execPath, [REALS, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { status, stdout, stderr };
}

test('--help lists the reference flags with their defaults', () => {
  const help = alignTrainCommand().helpInformation();
  for (const flag of ['--data-path', '--gpus-per-node', '--dino-model', '--dino-ckpt', '--vae-ckpt', '--disc-ckpt', '--max-epoch', '--batch-size', '--results-dir', '--resume']) {
    assert.ok(help.includes(flag), flag);
  }
  for (const shown of ['--dino-input-size <n>', '448 for 256 px and an f8 VAE', '(default: 0.00005)', '(default: 0.000001)', '"dinov2_vitb14"', 'dinov2_vitl14_reg', 'dinov2_vitg14_reg']) {
    assert.ok(help.includes(shown), shown);
  }
});

test('--dino-input-size 100 is refused with a clear error before anything loads', () => {
  const { status, stderr } = reals(['align', 'train', '--data-path', 'fashion-mnist', '--dino-ckpt', 'nonexistent.pth', '--dino-input-size', '100']);
  assert.equal(status, 1);
  assert.match(stderr, /^error: --dino-input-size 100 is not divisible by the DINOv2 patch size 14 \(448 = 32 x 14/m);
});

test('configs resolve by name or from JSON files, and unknown ones are named', () => {
  const dir = realpathSync(mkdtempSync(join(tmpdir(), 'reals-align-cli-')));
  assert.equal(resolveDinoConfig('dinov2_vitl14_reg').numRegisterTokens, 4);
  writeFileSync(join(dir, 'teacher.json'), JSON.stringify({ embedDim: 36, depth: 1 }));
  assert.deepEqual(resolveDinoConfig(join(dir, 'teacher.json')), { ...DINOV2_CONFIGS.dinov2_vits14!, embedDim: 36, depth: 1 });
  writeFileSync(join(dir, 'bad.json'), JSON.stringify({ embed_dim: 32 }));
  assert.throws(() => resolveDinoConfig(join(dir, 'bad.json')), /unknown fields \[embed_dim\]/);
  assert.throws(() => resolveDinoConfig('dinov3'), /--dino-model dinov3: not one of dinov2_vits14, .*nor a \.json config/);
  assert.equal(resolveVaeConfig('sd-vae').latentChannels, 4);
  writeJsonFileAtomic(join(dir, 'vae.json'), configToDiffusers(new AutoencoderKL({ blockOutChannels: [8], normNumGroups: 4 }).config));
  assert.deepEqual(resolveVaeConfig(join(dir, 'vae.json')).blockOutChannels, [8]);
  assert.throws(() => resolveVaeConfig('sd-vae-2'), /--vae-config sd-vae-2: not one of sd-vae, sdxl-vae, flux-vae, nor a config.json/);
  rmSync(dir, { recursive: true, force: true });
});

test('--vae-ckpt loads a diffusers folder or a diffusers-named state dict, and names CompVis-named files', () => {
  const dir = realpathSync(mkdtempSync(join(tmpdir(), 'reals-align-cli-')));
  const vae = new AutoencoderKL({ blockOutChannels: [8], normNumGroups: 4 });
  vae.savePretrained(join(dir, 'folder'));
  writeJsonFileAtomic(join(dir, 'vae.json'), configToDiffusers(vae.config));
  const weights = Object.fromEntries(vae.stateDict());
  saveSafetensors(join(dir, 'vae.safetensors'), weights);
  const same = (other: AutoencoderKL) => [...other.stateDict()].every(([key, t]) => t.eq(weights[key]!).all().item());
  assert.ok(same(loadStartingVae(join(dir, 'folder'), 'sd-vae')), 'folder (its own config.json)');
  assert.ok(same(loadStartingVae(join(dir, 'vae.safetensors'), join(dir, 'vae.json'))), 'state dict + --vae-config');
  assert.deepEqual(loadStartingVae(undefined, join(dir, 'vae.json')).config, vae.config, 'from scratch');
  saveSafetensors(join(dir, 'ldm.safetensors'), { 'encoder.down.0.block.0.conv1.weight': torch.zeros([1]) });
  assert.throws(() => loadStartingVae(join(dir, 'ldm.safetensors'), join(dir, 'vae.json')), /holds latent-diffusion \(CompVis\) key names/);
  assert.throws(() => loadStartingVae(join(dir, 'none.ckpt'), 'sd-vae'), /--vae-ckpt .*none\.ckpt: no such file or folder/);
  rmSync(dir, { recursive: true, force: true });
});

test('`reals align train` trains a tiny VAE on Fashion-MNIST from a state-dict file, then resumes from the run folder', () => {
  const dir = realpathSync(mkdtempSync(join(tmpdir(), 'reals-align-cli-')));
  torch.manualSeed(0);
  // A teacher whose 56 px input gives 4x4 tokens, resampled to the VAE's 8x8 latents.
  const teacherConfig = { imgSize: 56, embedDim: 32, depth: 1, numHeads: 2 };
  writeFileSync(join(dir, 'teacher.json'), JSON.stringify(teacherConfig));
  const teacher = new DinoVisionTransformer({ ...DINOV2_CONFIGS.dinov2_vits14!, ...teacherConfig });
  saveSafetensors(join(dir, 'teacher.safetensors'), Object.fromEntries(teacher.stateDict()));
  const vae = new AutoencoderKL({
    blockOutChannels: [8, 16, 16], downBlockTypes: Array(3).fill('DownEncoderBlock2D'), upBlockTypes: Array(3).fill('UpDecoderBlock2D'), normNumGroups: 4,
  });
  writeJsonFileAtomic(join(dir, 'vae.json'), configToDiffusers(vae.config));
  saveSafetensors(join(dir, 'vae.safetensors'), Object.fromEntries(vae.stateDict()));
  vae.savePretrained(join(dir, 'vae'));

  const common = [
    'align', 'train', '--data-path', 'fashion-mnist', '--dino-model', join(dir, 'teacher.json'), '--dino-ckpt', join(dir, 'teacher.safetensors'),
    '--dino-input-size', '56', '--lpips-weight', '0', '--batch-size', '4', '--num-workers', '0', '--results-dir', join(dir, 'results'),
    '--mlp-hidden', '32', '--log-every', '1', '--ckpt-every', '2', '--disc-start', '1', '--lr', '1e-3',
  ];
  const first = reals([...common, '--vae-ckpt', join(dir, 'vae.safetensors'), '--vae-config', join(dir, 'vae.json'), '--max-steps', '3']);
  assert.equal(first.status, 0, first.stderr);
  assert.match(first.stdout, /token grid 4x4 differs from the latent grid 8x8; patch tokens are bilinearly interpolated to 8x8/);
  const runDir = join(dir, 'results', '000-align');
  assert.match(first.stdout, new RegExp(`done: step 3, checkpoint ${join(runDir, 'checkpoints', '0000003.safetensors')}`));
  const args = loadCheckpoint(join(runDir, 'checkpoints', '0000003.safetensors')).metadata.args;
  assert.equal(args.dinoInputSize, 56);
  assert.equal(args.lr, 1e-3);

  const resumed = reals([...common, '--vae-ckpt', join(dir, 'vae'), '--max-steps', '4', '--resume', runDir]);
  assert.equal(resumed.status, 0, resumed.stderr);
  assert.match(resumed.stdout, /resuming .*0000003\.safetensors at step 3 \(epoch 0, batch 3\)/);
  assert.deepEqual(readdirSync(join(runDir, 'checkpoints')).filter((n) => /^\d+\.safetensors$/.test(n)).sort(),
    ['0000002.safetensors', '0000003.safetensors', '0000004.safetensors']);
  // The architecture each start ran with: --vae-config beside a state dict, a diffusers folder's own config.json (not --vae-config's default).
  assert.equal(args.vaeConfig, join(dir, 'vae.json'));
  const resumedArgs = loadCheckpoint(join(runDir, 'checkpoints', '0000004.safetensors')).metadata.args;
  assert.equal(resumedArgs.vaeConfig, join(dir, 'vae', 'config.json'));
  assert.deepEqual(JSON.parse(readFileSync(join(runDir, 'args.json'), 'utf8')).vaeConfig, resumedArgs.vaeConfig);
  // A --vae-config given beside the folder: recorded when it says what the folder's config.json does, else a note and the folder's.
  const agreeing = reals([...common, '--results-dir', join(dir, 'agreeing'), '--vae-ckpt', join(dir, 'vae'), '--vae-config', join(dir, 'vae.json'), '--max-steps', '1']);
  assert.equal(agreeing.status, 0, agreeing.stderr);
  assert.doesNotMatch(agreeing.stdout, /--vae-config .* is not used/);
  assert.equal(loadCheckpoint(join(dir, 'agreeing', '000-align', 'checkpoints', 'last.safetensors')).metadata.args.vaeConfig, join(dir, 'vae.json'));
  const other = reals([...common, '--results-dir', join(dir, 'other'), '--vae-ckpt', join(dir, 'vae'), '--vae-config', 'sd-vae', '--max-steps', '1']);
  assert.equal(other.status, 0, other.stderr);
  assert.match(other.stdout, new RegExp(`note: --vae-config sd-vae is not used: --vae-ckpt ${join(dir, 'vae')} has its own config\\.json \\(.*blockOutChannels: \\[128,256,512,512\\], not the folder's \\[8,16,16\\]`));
  assert.equal(loadCheckpoint(join(dir, 'other', '000-align', 'checkpoints', 'last.safetensors')).metadata.args.vaeConfig, join(dir, 'vae', 'config.json'));
  // align convert reads the checkpoint it converts as before.
  const converted = reals(['align', 'convert', '--ckpt', join(runDir, 'checkpoints', '0000004.safetensors'), '--output-dir', join(dir, 'converted'),
    '--data-path', 'fashion-mnist', '--num-samples', '8', '--num-workers', '0', '--device', 'cpu']);
  assert.equal(converted.status, 0, converted.stderr);
  assert.deepEqual(JSON.parse(readFileSync(join(dir, 'converted', 'config.json'), 'utf8')).block_out_channels, [8, 16, 16]);
  rmSync(dir, { recursive: true, force: true });
});

test('--gpus-per-node 2 trains as two DDP ranks of which only rank 0 logs and writes', () => {
  const dir = realpathSync(mkdtempSync(join(tmpdir(), 'reals-align-ddp-')));
  torch.manualSeed(0);
  const teacherConfig = { imgSize: 56, embedDim: 16, depth: 1, numHeads: 2 };
  writeFileSync(join(dir, 'teacher.json'), JSON.stringify(teacherConfig));
  saveSafetensors(join(dir, 'teacher.safetensors'), Object.fromEntries(new DinoVisionTransformer({ ...DINOV2_CONFIGS.dinov2_vits14!, ...teacherConfig }).stateDict()));
  writeJsonFileAtomic(join(dir, 'vae.json'), configToDiffusers(new AutoencoderKL({
    blockOutChannels: [8, 16, 16], downBlockTypes: Array(3).fill('DownEncoderBlock2D'), upBlockTypes: Array(3).fill('UpDecoderBlock2D'), normNumGroups: 4,
  }).config));
  const { status, stdout, stderr } = reals([
    'align', 'train', '--gpus-per-node', '2', '--data-path', 'fashion-mnist', '--dino-model', join(dir, 'teacher.json'),
    '--dino-ckpt', join(dir, 'teacher.safetensors'), '--dino-input-size', '56', '--vae-config', join(dir, 'vae.json'), '--lpips-weight', '0',
    '--batch-size', '2', '--num-workers', '0', '--results-dir', join(dir, 'results'), '--mlp-hidden', '16', '--disc-start', '1', '--max-steps', '2',
  ]);
  assert.equal(status, 0, stderr);
  assert.match(stdout, /^\[rank 0\] done: step 2, checkpoint /m);
  assert.doesNotMatch(stdout + stderr, /\[rank 1\]/, 'rank 1 prints nothing');
  assert.deepEqual(readdirSync(join(dir, 'results')), ['000-align'], 'one run folder');
  assert.equal(loadCheckpoint(join(dir, 'results', '000-align', 'checkpoints', 'last.safetensors')).metadata.step, 2);
  rmSync(dir, { recursive: true, force: true });
});
