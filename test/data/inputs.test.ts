import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as torch from '../../src/torch/index.js';
import { encodePng } from '../../src/runlog/images.js';
import { loadImageDataset, trainingFolder } from '../../src/data/inputs.js';

test('an ImageNet root (train/ and val/ of class folders) trains on train/; a plain class folder, or train/ without val/, is taken as it is', async () => {
  const root = mkdtempSync(join(tmpdir(), 'reals-inputs-'));
  const png = await encodePng(torch.full([8, 8, 3], 100, { dtype: 'uint8' }));
  for (const [split, classes] of [['train', ['n01', 'n02']], ['val', ['n01', 'n02']]] as const) {
    for (const c of classes) {
      mkdirSync(join(root, 'imagenet', split, c), { recursive: true });
      for (let i = 0; i < (split === 'train' ? 3 : 1); i++) writeFileSync(join(root, 'imagenet', split, c, `${i}.png`), png);
    }
  }
  assert.equal(trainingFolder(join(root, 'imagenet')), join(root, 'imagenet', 'train'));
  const dataset = loadImageDataset(join(root, 'imagenet'), 8, 3);
  assert.equal(dataset.length, 6, 'the 6 training images, not the 2 splits as 2 classes');
  assert.deepEqual([dataset.label(0), dataset.label(5)], [0, 1]);

  mkdirSync(join(root, 'plain', 'train'), { recursive: true });
  writeFileSync(join(root, 'plain', 'train', '0.png'), png);
  assert.equal(trainingFolder(join(root, 'plain')), join(root, 'plain'), 'no val/: train/ is one class');
  assert.equal(trainingFolder(join(root, 'imagenet', 'train')), join(root, 'imagenet', 'train'));
  rmSync(root, { recursive: true });
});
