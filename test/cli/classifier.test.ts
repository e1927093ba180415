import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import * as torch from '../../src/torch/index.js';
import { ImageClassifier } from '../../src/models/classifier.js';
import { buildProgram } from '../../src/cli/main.js';
import { classifierTrainCommand } from '../../src/cli/classifier.js';
import { runClassifierTrain } from '../../src/pipelines/classifier.js';
import { featureExtractor } from '../../src/eval/index.js';
import { loadCheckpoint } from '../../src/train/index.js';
import { parseMetrics } from '../../src/runlog/index.js';
import { withTmp } from '../helpers.js';
import { writeColourClasses } from '../colour-classes.js';

torch.setNumThreads(1);

test('reals classifier train: trains on train/, measures val/, writes a checkpoint --features reads', withTmp('classifier', async (dir) => {
  const data = join(dir, 'data');
  await writeColourClasses(join(data, 'train'), 6, 1);
  await writeColourClasses(join(data, 'val'), 3, 2);
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
  await writeColourClasses(join(dir, 'train'), 2, 3);
  mkdirSync(join(dir, 'val'));
  const lines: string[] = [];
  const result = await runClassifierTrain({ dataPath: dir, out: join(dir, 'out'), imageSize: 16, steps: 2, batchSize: 3, numWorkers: 0, device: 'cpu', log: (l) => lines.push(l) });
  assert.equal(result.valAccuracy, null);
  assert.match(lines[0]!, /classifier: 3 classes, 6 images in .*train at 16 px; no accuracy measured \(.*val lacks the class folders blue, green, red\)/);
  await assert.rejects(runClassifierTrain({ dataPath: dir, out: join(dir, 'out'), imageSize: 60 }), /^Error: --image-size 60: must be a multiple of 8/);
  await writeColourClasses(join(dir, 'one'), 1, 4);
  await assert.rejects(runClassifierTrain({ dataPath: join(dir, 'one', 'red'), out: join(dir, 'out') }), /ImageFolder: no class folders/);
  const help = classifierTrainCommand().helpInformation().replace(/\s+/g, ' ');
  for (const shown of ['--image-size <n>', '(default: 64)', '--steps <n> optimizer steps (default: 2000)', '--batch-size <n> images per step (default: 64)', '(default: 0.001)', '--feature-dim <n>', '(default: 128)',
    '--ckpt-every <n> steps between checkpoints in --out/checkpoints (the last step is saved too) (default: 500)', '--log-every <n>', '--resume <path>']) {
    assert.ok(help.includes(shown), shown);
  }
}));

/** Every tensor of a checkpoint, by group and key, as arrays (bit-for-bit comparison). */
function checkpointArrays(path: string): Record<string, unknown> {
  const { groups } = loadCheckpoint(path);
  return Object.fromEntries(Object.entries(groups).flatMap(([group, tensors]) => Object.entries(tensors).map(([key, t]) => [`${group}.${key}`, t.toArray()])));
}

const lossRecords = (out: string) => parseMetrics(readFileSync(join(out, 'metrics.jsonl'), 'utf8')).map(({ step, values }) => ({ step, values }));

test('classifier train --resume: 4 steps, then resumed to 9, equals 9 straight bit for bit (weights, Adam state, losses, result); mismatched runs are refused', withTmp('classifier-resume', async (dir) => {
  const data = join(dir, 'data');
  await writeColourClasses(data, 4, 5, 8);
  // 12 images in batches of 5: batches of 5, 5, 2 an epoch, so step 4 stops inside the second epoch.
  const base = { dataPath: data, imageSize: 8, batchSize: 5, featureDim: 8, numWorkers: 0, device: 'cpu', logEvery: 2, ckptEvery: 3, log: () => {} };
  const straight = join(dir, 'straight');
  const whole = await runClassifierTrain({ ...base, out: straight, steps: 9 });
  const out = join(dir, 'resumed');
  await runClassifierTrain({ ...base, out, steps: 4 });
  const lines: string[] = [];
  const resumed = await runClassifierTrain({ ...base, resume: out, steps: 9, log: (line) => lines.push(line) });
  assert.match(lines.join('\n'), /resuming .*resumed\/checkpoints\/0000004\.safetensors at step 4/);
  assert.deepEqual(checkpointArrays(join(out, 'checkpoints', '0000009.safetensors')), checkpointArrays(join(straight, 'checkpoints', '0000009.safetensors')));
  assert.deepEqual(lossRecords(out), lossRecords(straight));
  assert.deepEqual(readFileSync(join(out, 'classifier.safetensors')), readFileSync(join(straight, 'classifier.safetensors')));
  assert.deepEqual({ ...resumed, checkpoint: '' }, { ...whole, checkpoint: '' });
  assert.equal(loadCheckpoint(join(out, 'checkpoints', '0000009.safetensors')).metadata.step, 9);

  await assert.rejects(runClassifierTrain({ ...base, out, steps: 9 }), /^Error: --out .*resumed: holds the checkpoints of an earlier run; continue it with --resume/);
  await assert.rejects(runClassifierTrain({ ...base, out: straight, resume: out, steps: 9 }), /^Error: --out .*straight: --resume .* continues the run in .*resumed; give that folder/);
  await assert.rejects(runClassifierTrain({ ...base, resume: out, steps: 9, seed: 1 }), /resume from .*0000009\.safetensors: it was trained with --seed 0 \(the batch order\), this run has --seed 1/);
  await assert.rejects(runClassifierTrain({ ...base, resume: out, steps: 9, featureDim: 16 }), /resume from .*: it trains featureDim 8, this run 16/);
  await assert.rejects(runClassifierTrain({ ...base, resume: out, steps: 9, batchSize: 4 }), /resume from .*: it was trained on 1 rank x 5 = global batch 5, this run is 1 rank x 4/);
  await assert.rejects(runClassifierTrain({ ...base, resume: out, steps: 8 }), /^Error: --steps 8: .*0000009\.safetensors is at step 9 already; give at least 9/);
  renameSync(join(data, 'blue'), join(data, 'cyan'));
  await assert.rejects(runClassifierTrain({ ...base, resume: out, steps: 9 }), /resume from .*: it trains classes \["blue","green","red"\], this run \["cyan","green","red"\]/);
  renameSync(join(data, 'cyan'), join(data, 'blue'));
  // A --lr given replaces the checkpoint's, with a note; not given, the checkpoint's goes on (recorded in args.json).
  const more: string[] = [];
  await runClassifierTrain({ ...base, resume: out, steps: 10, lr: 5e-4, log: (line) => more.push(line) });
  assert.ok(more.includes('note: resuming with lr 0.0005 for the optimizer, where the checkpoint\'s was 0.001'), more.join('\n'));
  await runClassifierTrain({ ...base, resume: out, steps: 11 });
  assert.equal(JSON.parse(readFileSync(join(out, 'args.json'), 'utf8')).lr, 5e-4);
}));
