// A step that would not fit in memory is refused before it starts, with the estimate, the free
// memory and the flags to change (the kernel's OOM killer would end the run silently).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as torch from '../../src/torch/index.js';
import { DINOV2_CONFIGS, DinoVisionTransformer } from '../../src/models/dinov2.js';
import { saveSafetensors } from '../../src/io/index.js';
import { runAlignTrain } from '../../src/pipelines/align.js';
import { checkStepMemory, dinoForwardBytes } from '../../src/train/memory.js';

torch.setNumThreads(1);

test('checkStepMemory names the estimate by part, the free memory and the flags; it passes what fits and leaves CUDA alone', () => {
  const parts = { VAE: 3 * 2 ** 30, DINOv2: 9 * 2 ** 30 };
  assert.throws(() => checkStepMemory(parts, '--batch-size 8', 'cpu', 10 * 2 ** 30),
    { message: 'a training step needs about 12.0 GiB (VAE 3.0 GiB, DINOv2 9.0 GiB) but 10.0 GiB is free: lower --batch-size 8' });
  assert.doesNotThrow(() => checkStepMemory(parts, '--batch-size 8', 'cpu', 12 * 2 ** 30));
  assert.doesNotThrow(() => checkStepMemory(parts, '--batch-size 8', 'cuda:0', 1));
});

test('the DINOv2 estimate grows with the square of the token count: a patch-4 teacher at 448 px needs ~100 GiB at batch 8', () => {
  const teacher = { ...DINOV2_CONFIGS.dinov2_vits14!, imgSize: 32, patchSize: 4, embedDim: 64, depth: 4, numHeads: 4 };
  const at = (size: number) => dinoForwardBytes(teacher, 8, size);
  assert.ok(at(448) > 60 * 2 ** 30, `${at(448) / 2 ** 30} GiB`);
  assert.ok(at(32) < 50 * 2 ** 20, `${at(32) / 2 ** 20} MiB`);
  assert.ok(at(448) / at(224) > 14, 'attention dominates: 4x the tokens, ~16x the bytes');
});

test('align train with --dino-input-size 448 and a patch-4 teacher is refused before any step, naming --dino-input-size', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'reals-memory-'));
  try {
    const teacher = { imgSize: 32, patchSize: 4, embedDim: 32, depth: 1, numHeads: 2 };
    writeFileSync(join(dir, 'teacher.json'), JSON.stringify(teacher));
    saveSafetensors(join(dir, 'teacher.safetensors'), Object.fromEntries(new DinoVisionTransformer({ ...DINOV2_CONFIGS.dinov2_vits14!, ...teacher }).stateDict()));
    const resultsDir = join(dir, 'results');
    await assert.rejects(runAlignTrain({
      dataPath: 'fashion-mnist', imageSize: 32, dinoModel: join(dir, 'teacher.json'), dinoCkpt: join(dir, 'teacher.safetensors'),
      vaeConfig: 'sd-vae', lpipsWeight: 0, log: () => {}, resultsDir, dinoInputSize: 448,
    }), /^Error: a training step needs about [\d.]+ GiB \(VAE [\d.]+ GiB, DINOv2 at --dino-input-size [\d.]+ GiB\) but [\d.]+ GiB is free: lower --batch-size 8, --dino-input-size 448 or --image-size 32$/);
    assert.equal(existsSync(resultsDir), false, 'no run folder');
  } finally {
    rmSync(dir, { recursive: true });
  }
});
