import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import * as torch from '../../src/torch/index.js';
import { saveSafetensors } from '../../src/io/index.js';
import { DinoVisionTransformer, resolveDinoConfig } from '../../src/models/dinov2.js';
import { HogTeacher } from '../../src/models/hog.js';
import { DataLoader, ImageFolder } from '../../src/data/index.js';
import { holdOutSplit } from '../../src/eval/linear-probe.js';
import { localDistantSimilarity } from '../../src/eval/spatial-structure.js';
import { loadCheckpoint } from '../../src/train/checkpoint.js';
import { runTeacherProbe, runTeacherTrain } from '../../src/pipelines/teacher.js';
import { buildProgram } from '../../src/cli/main.js';
import { subcommand } from '../../src/cli/parse.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '../..');
const REALS = join(ROOT, 'bin/reals.js');

function reals(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const { status, stdout, stderr } = spawnSync(process.execPath, [REALS, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { status, stdout, stderr };
}

test('teacher train --help lists the DINOv2-named flags with their defaults, and marks the required ones', () => {
  const teacher = subcommand(buildProgram(), 'teacher');
  const help = subcommand(teacher, 'train').helpInformation();
  const flags = [
    '--data-path', '--image-size', '--dino-model', '--global-crops-size', '--global-crops-scale', '--local-crops-number', '--local-crops-size',
    '--local-crops-scale', '--head-n-prototypes', '--head-hidden-dim', '--head-bottleneck-dim', '--teacher-temp', '--warmup-teacher-temp',
    '--momentum-teacher', '--koleo-loss-weight', '--ibot-loss-weight', '--mask-ratio-min-max', '--mask-sample-probability', '--lr',
    '--weight-decay', '--batch-size', '--max-steps', '--epochs', '--results-dir', '--resume', '--seed', '--ckpt-every', '--log-every',
    '--num-workers', '--probe-images', '--out',
  ];
  for (const flag of flags) assert.ok(help.includes(flag), flag);
  const compact = help.replace(/\s+/g, ' ');
  for (const shown of ['(default: 0.32,1.0)', '(default: 0.05,0.32)', '(default: 0.1,0.5)', '(default: 1024)', '(default: 0.04)', 'DINOv2: 0.07',
    '(default: 0.98)', '(default: 64)', '(default: 2000)', '0.004 x sqrt(batch-size / 1024)', '(default: "results")']) {
    assert.ok(compact.includes(shown), shown);
  }
  assert.equal(compact.match(/\(required\)/g)?.length, 2, '--data-path and --dino-model');
  const probe = subcommand(teacher, 'probe').helpInformation().replace(/\s+/g, ' ');
  assert.equal(probe.match(/\(required\)/g)?.length, 2, '--dino-model and --data-path; --dino-ckpt unless hog');
  assert.match(probe, /--lds-far-distance <n> .* \(default: 6\)/);
  assert.match(probe, /--hog-cell-size <px> .* \(default: 4\)/);
  assert.match(probe, /or hog \(/);
  assert.match(probe, /random-init backbone/);
});

test('a bad flag value is refused with a one-line error, before anything loads', () => {
  const scale = reals(['teacher', 'train', '--data-path', 'fashion-mnist', '--dino-model', 'x.json', '--global-crops-scale', '0.5,0.2']);
  assert.equal(scale.status, 1);
  assert.match(scale.stderr, /^error: option '--global-crops-scale <min,max>' argument '0\.5,0\.2' is invalid\. expected min,max with 0 <= min <= max <= 1, got '0\.5,0\.2'$/m);
  const model = reals(['teacher', 'train', '--data-path', 'fashion-mnist', '--dino-model', 'vit_tiny']);
  assert.equal(model.status, 1);
  assert.match(model.stderr, /^error: --dino-model vit_tiny: not one of dinov2_vits14, .*, nor a \.json config$/m);
  const crops = reals(['teacher', 'train', '--data-path', 'fashion-mnist', '--dino-model', 'dinov2_vits14']);
  assert.equal(crops.status, 1);
  assert.match(crops.stderr, /^error: --global-crops-size 32 is not a multiple of the patch size 14 of --dino-model dinov2_vits14$/m);
});

test('teacher probe and train read train/ under an ImageNet root; the probe reports the class count and the LDS of the backbone and of a random init of its config', async () => {
  const root = mkdtempSync(join(tmpdir(), 'reals-teacher-probe-'));
  try {
    // train/ holds 3 classes of 4 images, val/ 3 of 2: read as two classes "train" and "val", the root would give 2 classes and 18 images.
    torch.manualSeed(0);
    for (const [split, perClass] of [['train', 4], ['val', 2]] as const) {
      for (const name of ['a', 'b', 'c']) {
        mkdirSync(join(root, 'imagenet', split, name), { recursive: true });
        for (let i = 0; i < perClass; i++) {
          const pixels = torch.randint(0, 256, [32, 32, 3], { dtype: 'uint8' }).toArray() as Uint8Array;
          await sharp(pixels, { raw: { width: 32, height: 32, channels: 3 } }).png().toFile(join(root, 'imagenet', split, name, `${i}.png`));
        }
      }
    }
    const dinoModel = join(root, 'tiny.json');
    writeFileSync(dinoModel, JSON.stringify({ imgSize: 32, patchSize: 4, embedDim: 32, depth: 1, numHeads: 2 }));
    const checkpoint = (seed: number): string => {
      torch.manualSeed(seed);
      const path = join(root, `init-${seed}.safetensors`);
      saveSafetensors(path, Object.fromEntries(new DinoVisionTransformer(resolveDinoConfig(dinoModel)).stateDict()));
      return path;
    };
    const probe = (dinoCkpt: string) => runTeacherProbe({ dinoModel, dinoCkpt, dataPath: join(root, 'imagenet'), probeImages: 12, epochs: 2, seed: 0 });
    const sameInit = await probe(checkpoint(0));
    assert.equal(sameInit.classes, 3);
    assert.equal(sameInit.trainImages + sameInit.testImages, 12);
    assert.deepEqual([sameInit.ldsGrid, sameInit.ldsFarDistance, sameInit.ldsImages], [[8, 8], 6, sameInit.testImages]);
    // The random-init backbone is the config under torch.manualSeed(--seed): a checkpoint of that very init scores the same.
    assert.equal(sameInit.lds, sameInit.ldsRandomInit);
    assert.equal(sameInit.ldsGainStd, 0, 'the same images, paired in the same order');
    await assert.rejects(runTeacherProbe({ dinoModel, dinoCkpt: checkpoint(0), dataPath: join(root, 'imagenet'), ldsFarDistance: 15 }),
      /^Error: --lds-far-distance 15: the 8x8 patch grid \(input size 32, patch 4\) has no pairs that far apart \(at most 14\)$/);
    const otherInit = await probe(checkpoint(5));
    assert.equal(otherInit.ldsRandomInit, sameInit.ldsRandomInit);
    assert.notEqual(otherInit.lds, otherInit.ldsRandomInit);
    assert.ok(otherInit.ldsGainStd! > 0);
    // teacher train reads the same folder: its end-of-run probe splits the 12 images of train/.
    const trained = await runTeacherTrain({
      dataPath: join(root, 'imagenet'), dinoModel, maxSteps: 1, batchSize: 2, localCropsNumber: 2, headNPrototypes: 16, headHiddenDim: 16,
      headBottleneckDim: 8, probeImages: 12, resultsDir: join(root, 'results'), device: 'cpu', log: () => {},
    });
    assert.equal(trained.probeImages!.train + trained.probeImages!.test, 12);
    // A run checkpoint probes as the EMA teacher exported from it, so a long run's milestones need no export.
    const exported = await runTeacherProbe({ dinoModel, dinoCkpt: trained.checkpoint, dataPath: join(root, 'imagenet'), probeImages: 12, epochs: 2 });
    const fromRun = await runTeacherProbe({ dinoModel, dinoCkpt: trained.runCheckpoint, dataPath: join(root, 'imagenet'), probeImages: 12, epochs: 2 });
    assert.deepEqual(fromRun, exported);
    assert.notEqual(exported.lds, exported.ldsRandomInit);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

/** Writes `perClass` 32x32 PNGs per class under <root>/<class>/: strokes of the class's orientation over random colour noise. */
async function orientedStrokes(root: string, perClass: number): Promise<void> {
  const classes = { horizontal: (y: number) => y % 8 < 2, vertical: (_y: number, x: number) => x % 8 < 2, diagonal: (y: number, x: number) => (x + y) % 8 < 2 };
  torch.manualSeed(1);
  for (const [name, onStroke] of Object.entries(classes)) {
    mkdirSync(join(root, name), { recursive: true });
    for (let i = 0; i < perClass; i++) {
      const pixels = torch.randint(0, 64, [32, 32, 3], { dtype: 'uint8' }).toArray() as Uint8Array;
      for (let y = 0; y < 32; y++) for (let x = 0; x < 32; x++) if (onStroke(y, x)) pixels.fill(255, (y * 32 + x) * 3, (y * 32 + x) * 3 + 3);
      await sharp(pixels, { raw: { width: 32, height: 32, channels: 3 } }).png().toFile(join(root, name, `${i}.png`));
    }
  }
}

test('teacher probe --dino-model hog: HOG tokens on the align-train grid of the raw images; orientation classes separate; errors name the flag', async () => {
  const root = mkdtempSync(join(tmpdir(), 'reals-teacher-hog-'));
  try {
    await orientedStrokes(root, 10);
    const result = await runTeacherProbe({ dinoModel: 'hog', dataPath: root, probeImages: 30, epochs: 60, seed: 0 });
    // Global orientation histograms tell the three stroke directions apart whatever the noise.
    assert.deepEqual([result.accuracy, result.classes, result.trainImages, result.testImages], [1, 3, 24, 6]);
    assert.deepEqual([result.randomInitAccuracy, result.ldsRandomInit, result.ldsGainStd, result.ldsGrid, result.ldsImages], [null, null, null, [8, 8], 6]);
    // The LDS recounted from the held-out images as align train hands them to HOG: [-1, 1], no resizing or ImageNet
    // normalisation (which would change the strongest colour channel of these noisy pixels), 4-pixel cells.
    const { test: held } = holdOutSplit(new ImageFolder(root, { resolution: 32 }), 0.2, 0);
    const loader = new DataLoader(held, { batchSize: 6, shuffle: false, randomFlip: false });
    const perImage: number[] = [];
    for await (const batch of loader.iterate(0)) {
      perImage.push(...(localDistantSimilarity(new HogTeacher().forward(batch.images, [8, 8]).patch, [8, 8], 6).toArray() as Float32Array));
    }
    await loader.close();
    const mean = perImage.reduce((a, b) => a + b) / perImage.length;
    const std = Math.sqrt(perImage.reduce((a, b) => a + (b - mean) ** 2, 0) / perImage.length);
    // The same 6 float32 per-image values, summed in another order: a few ulps of the O(1) LDS.
    assert.ok(Math.abs(result.lds - mean) < 1e-6, `${result.lds} vs ${mean}`);
    assert.ok(Math.abs(result.ldsStd - std) < 1e-5 && std > 0, `${result.ldsStd} vs ${std}`);
    const coarse = await runTeacherProbe({ dinoModel: 'hog', dataPath: root, probeImages: 30, epochs: 1, hogCellSize: 8 });
    assert.deepEqual(coarse.ldsGrid, [4, 4]);
    await assert.rejects(runTeacherProbe({ dinoModel: 'hog', dinoCkpt: 'x.safetensors', dataPath: root }), /^Error: --dino-ckpt x\.safetensors: --dino-model hog has no weights$/);
    await assert.rejects(runTeacherProbe({ dinoModel: 'hog', dataPath: root, inputSize: 64 }), /^Error: --input-size 64: --dino-model hog reads the images at their own size, 32$/);
    await assert.rejects(runTeacherProbe({ dinoModel: 'hog', dataPath: root, hogCellSize: 5 }), /^Error: --hog-cell-size 5 does not divide the 32-pixel images into whole cells$/);
    await assert.rejects(runTeacherProbe({ dinoModel: 'dinov2_vits14', dataPath: root }), /^Error: --dino-ckpt is required with --dino-model dinov2_vits14$/);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('scripts/teacher-long.sh continues a run from its newest checkpoint exactly: stopped after step 3 and continued to 6 equals 6 straight', () => {
  const root = mkdtempSync(join(tmpdir(), 'reals-teacher-long-'));
  try {
    const pids = join(root, 'pids');
    const script = (): void => {
      const { status, stderr } = spawnSync('bash', [join(ROOT, 'scripts/teacher-long.sh'),
        '--batch-size', '4', '--local-crops-number', '2', '--head-n-prototypes', '16', '--head-hidden-dim', '16', '--head-bottleneck-dim', '8', '--log-every', '1'], {
        encoding: 'utf8', timeout: 120_000,
        env: { ...process.env, TEACHER_LONG_DIR: join(root, 'run'), TEACHER_LONG_STEPS: '6', TEACHER_LONG_CKPT_EVERY: '3', TEACHER_LONG_PIDS: pids },
      });
      assert.equal(status, 0, stderr);
    };
    script();
    const run = join(root, 'run', '000-teacher');
    const straight = loadCheckpoint(join(run, 'checkpoints', '0000006.safetensors'));
    const straightMetrics = readFileSync(join(run, 'metrics.jsonl'), 'utf8').trim().split('\n').map((line) => JSON.parse(line).loss as number);
    assert.equal(straightMetrics.length, 6);
    // The folder as a run killed after its step-3 checkpoint left it: the script finds that checkpoint and continues to the target.
    rmSync(join(run, 'checkpoints', '0000006.safetensors'));
    rmSync(join(run, 'checkpoints', 'last.safetensors'));
    symlinkSync('0000003.safetensors', join(run, 'checkpoints', 'last.safetensors'));
    rmSync(join(run, 'teacher'), { recursive: true });
    script();
    const continued = loadCheckpoint(join(run, 'checkpoints', '0000006.safetensors'));
    for (const group of ['student', 'teacher', 'opt', 'loss']) {
      for (const [key, tensor] of Object.entries(straight.groups[group]!)) assert.ok(tensor.eq(continued.groups[group]![key]!).all().item(), `${group}.${key}`);
    }
    assert.deepEqual(readFileSync(join(run, 'metrics.jsonl'), 'utf8').trim().split('\n').map((line) => JSON.parse(line).loss as number), straightMetrics);
    assert.ok(existsSync(join(run, 'teacher', 'dino-teacher.safetensors')));
    assert.equal(readFileSync(pids, 'utf8'), '', 'the trainer\'s PID is removed when it ends');
    const retarget = spawnSync('bash', [join(ROOT, 'scripts/teacher-long.sh')], {
      encoding: 'utf8', env: { ...process.env, TEACHER_LONG_DIR: join(root, 'run'), TEACHER_LONG_STEPS: '7', TEACHER_LONG_PIDS: pids },
    });
    assert.equal(retarget.status, 1);
    assert.match(retarget.stderr, /^teacher-long: .*000-teacher trains to 6 steps \(its schedules span them\), not TEACHER_LONG_STEPS 7$/m);
    // A folder without a checkpoint is not silently started again.
    rmSync(join(run, 'checkpoints'), { recursive: true });
    const refused = spawnSync('bash', [join(ROOT, 'scripts/teacher-long.sh')], { encoding: 'utf8', env: { ...process.env, TEACHER_LONG_DIR: join(root, 'run'), TEACHER_LONG_PIDS: pids } });
    assert.equal(refused.status, 1);
    assert.match(refused.stderr, /^teacher-long: .*000-teacher exists but holds no checkpoint to continue from; remove it to start again$/m);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
