import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import * as torch from '../../src/torch/index.js';
import { saveSafetensors } from '../../src/io/index.js';
import { DinoVisionTransformer, resolveDinoConfig } from '../../src/models/dinov2.js';
import { runTeacherProbe, runTeacherTrain } from '../../src/train/teacher-pipeline.js';
import { buildProgram } from '../../src/cli/main.js';
import { subcommand } from '../../src/cli/parse.js';

const REALS = join(dirname(fileURLToPath(import.meta.url)), '../../bin/reals.js');

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
  assert.equal(probe.match(/\(required\)/g)?.length, 3);
  assert.match(probe, /--lds-far-distance <n> .* \(default: 6\)/);
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
    await assert.rejects(runTeacherProbe({ dinoModel, dinoCkpt: checkpoint(0), dataPath: join(root, 'imagenet'), ldsFarDistance: 15 }),
      /^Error: --lds-far-distance 15: the 8x8 patch grid \(input size 32, patch 4\) has no pairs that far apart \(at most 14\)$/);
    const otherInit = await probe(checkpoint(5));
    assert.equal(otherInit.ldsRandomInit, sameInit.ldsRandomInit);
    assert.notEqual(otherInit.lds, otherInit.ldsRandomInit);
    // teacher train reads the same folder: its end-of-run probe splits the 12 images of train/.
    const trained = await runTeacherTrain({
      dataPath: join(root, 'imagenet'), dinoModel, maxSteps: 1, batchSize: 2, localCropsNumber: 2, headNPrototypes: 16, headHiddenDim: 16,
      headBottleneckDim: 8, probeImages: 12, resultsDir: join(root, 'results'), device: 'cpu', log: () => {},
    });
    assert.equal(trained.probeImages!.train + trained.probeImages!.test, 12);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
