import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import * as torch from '../../src/torch/index.js';
import { ImageClassifier } from '../../src/models/classifier.js';
import { buildProgram } from '../../src/cli/main.js';
import { classifierTrainCommand } from '../../src/cli/classifier.js';
import { runClassifierTrain } from '../../src/pipelines/classifier.js';
import { featureExtractor } from '../../src/eval/index.js';
import { withTmp } from '../helpers.js';

torch.setNumThreads(1);

const COLOURS = { red: [200, 40, 40], green: [40, 200, 40], blue: [40, 40, 200] } as const;

/** `count` 16x16 PNGs per class: the class's colour with per-pixel noise, under `root`/<class>/. */
async function writeClasses(root: string, count: number, seed: number): Promise<void> {
  torch.manualSeed(seed);
  for (const [name, rgb] of Object.entries(COLOURS)) {
    mkdirSync(join(root, name), { recursive: true });
    for (let i = 0; i < count; i++) {
      const noise = torch.randint(-40, 41, [16, 16, 3]).toArray() as BigInt64Array;
      const pixels = Buffer.from(Array.from(noise, (v, j) => Math.min(255, Math.max(0, rgb[j % 3]! + Number(v)))));
      await sharp(pixels, { raw: { width: 16, height: 16, channels: 3 } }).png().toFile(join(root, name, `${i}.png`));
    }
  }
}

test('reals classifier train: trains on train/, measures val/, writes a checkpoint --features reads', withTmp('classifier', async (dir) => {
  const data = join(dir, 'data');
  await writeClasses(join(data, 'train'), 6, 1);
  await writeClasses(join(data, 'val'), 3, 2);
  const out = join(dir, 'out');
  await buildProgram().parseAsync(['node', 'reals', 'classifier', 'train', '--data-path', data, '--out', out, '--image-size', '16',
    '--steps', '30', '--batch-size', '6', '--num-workers', '0', '--device', 'cpu']);
  const result = JSON.parse(readFileSync(join(out, 'result.json'), 'utf8'));
  assert.deepEqual(result.classes, ['blue', 'green', 'red']);
  assert.deepEqual([result.trainImages, result.valImages], [18, 9]);
  assert.ok(existsSync(join(out, 'metrics.jsonl')));
  // The val accuracy recounted from the PNGs (16 px: the center crop keeps them as they are) with the saved weights.
  const { model, classes } = ImageClassifier.load(join(out, 'classifier.safetensors'));
  assert.deepEqual(classes, result.classes);
  let correct = 0;
  for (const [label, name] of classes.entries()) {
    for (let i = 0; i < 3; i++) {
      const raw = await sharp(join(data, 'val', name, `${i}.png`)).raw().toBuffer();
      const x = torch.fromArray(new Uint8Array(raw), [1, 16, 16, 3], 'uint8').permute(0, 3, 1, 2).float().div(127.5).sub(1);
      if (torch.noGrad(() => model.forward(x).argmax(1).item()) === label) correct++;
    }
  }
  assert.equal(result.valAccuracy, correct / 9);
  assert.ok(result.valAccuracy > 0.9, `colours are separable: val accuracy ${result.valAccuracy}`);
  const extractor = await featureExtractor({ features: join(out, 'classifier.safetensors'), device: 'cpu' });
  assert.match(extractor.description!, /the classifier .*classifier\.safetensors \(3 classes, 16 px\)/);
}));

test('classifier train: a flat val/ gives no accuracy and says why; bad sizes and single classes are one-line errors; --help shows the defaults', withTmp('classifier', async (dir) => {
  await writeClasses(join(dir, 'train'), 2, 3);
  mkdirSync(join(dir, 'val'));
  const lines: string[] = [];
  const result = await runClassifierTrain({ dataPath: dir, out: join(dir, 'out'), imageSize: 16, steps: 2, batchSize: 3, numWorkers: 0, device: 'cpu', log: (l) => lines.push(l) });
  assert.equal(result.valAccuracy, null);
  assert.match(lines[0]!, /classifier: 3 classes, 6 images in .*train at 16 px; no accuracy measured \(.*val lacks the class folders blue, green, red\)/);
  await assert.rejects(runClassifierTrain({ dataPath: dir, out: join(dir, 'out'), imageSize: 60 }), /^Error: --image-size 60: must be a multiple of 8/);
  await writeClasses(join(dir, 'one'), 1, 4);
  await assert.rejects(runClassifierTrain({ dataPath: join(dir, 'one', 'red'), out: join(dir, 'out') }), /ImageFolder: no class folders/);
  const help = classifierTrainCommand().helpInformation().replace(/\s+/g, ' ');
  for (const shown of ['--image-size <n>', '(default: 64)', '--steps <n> optimizer steps (default: 2000)', '--batch-size <n> images per step (default: 64)', '(default: 0.001)', '--feature-dim <n>', '(default: 128)']) {
    assert.ok(help.includes(shown), shown);
  }
}));
