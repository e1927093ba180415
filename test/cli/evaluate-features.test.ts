import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as torch from '../../src/torch/index.js';
import { saveNpz, NpzFile } from '../../src/io/npz.js';
import { ImageClassifier } from '../../src/models/classifier.js';
import { EXTRACTOR_KEY } from '../../src/eval/index.js';
import { buildProgram } from '../../src/cli/main.js';
import { evaluateCommand } from '../../src/cli/evaluate.js';
import { withTmp } from '../helpers.js';

torch.setNumThreads(1);

const reals = (...args: string[]) => buildProgram().parseAsync(['node', 'reals', ...args]);

test('reals evaluate and fid-stats --features <classifier>: the JSON and the stats file name the network; a REF of another network is refused', withTmp('evaluate-features', async (dir) => {
  torch.manualSeed(0);
  for (const [name, seed] of [['a', 1], ['b', 2]] as const) {
    new ImageClassifier({ numClasses: 3, imageSize: 16, featureDim: 8 }).save(join(dir, `${name}.safetensors`), ['x', 'y', 'z']);
    torch.manualSeed(seed);
    saveNpz(join(dir, `${name}.npz`), { arr_0: torch.randint(0, 256, [8, 16, 16, 3], { dtype: 'uint8' }) });
  }
  const features = ['--features', join(dir, 'a.safetensors'), '--device', 'cpu'];
  await reals('evaluate', join(dir, 'a.npz'), join(dir, 'b.npz'), ...features, '--json', join(dir, 'result.json'), '--is-split-size', '8');
  const result = JSON.parse(readFileSync(join(dir, 'result.json'), 'utf8'));
  assert.match(result.featureNetwork.id, /^classifier-[0-9a-f]{16}$/);
  assert.match(result.featureNetwork.description, /the classifier .*a\.safetensors \(3 classes, 16 px\)/);
  assert.ok(result.classifierScore >= 1 && result.sfid !== null && result.fid > 0);
  assert.equal('inceptionScore' in result, false, 'a classifier\'s score is not called the Inception Score');
  await reals('fid-stats', join(dir, 'a.npz'), '--out', join(dir, 'a-stats.npz'), ...features);
  const stats = NpzFile.open(join(dir, 'a-stats.npz'));
  assert.equal(Buffer.from(stats.get(EXTRACTOR_KEY).toArray() as Uint8Array).toString('ascii'), result.featureNetwork.id);
  stats.close();
  await assert.rejects(reals('evaluate', join(dir, 'a-stats.npz'), join(dir, 'b.npz'), '--features', join(dir, 'b.safetensors'), '--device', 'cpu'),
    new RegExp(`a-stats\\.npz: its statistics are of ${result.featureNetwork.id}, not of classifier-[0-9a-f]{16} \\(--features\\)`));
}));

test('reals evaluate --help lists --features (default inception), --dino-model and --dino-ckpt, and says which networks give which score over classes', () => {
  const help = evaluateCommand().helpInformation().replace(/\s+/g, ' ');
  assert.match(help, /--features <network> .*dinov2 \(FD_DINOv2 as dgm-eval: 224 px bicubic, ImageNet mean\/std, CLS token; no score over classes, no sFID\).* \(default: "inception"\)/);
  assert.match(help, /reals classifier train \(the Inception Score's formula over its classes, reported as classifierScore, "Classifier Score"\)/);
  assert.match(help, /Only inception reports an Inception Score \(inceptionScore\)/);
  assert.match(help, /--dino-model <name> the DINOv2 of --features dinov2 \(default: dinov2_vitl14, dgm-eval's\)/);
  assert.match(help, /--dino-ckpt <file>/);
});
