import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FIXTURES } from '../helpers.js';
import { ImageFolder } from '../../src/data/image-folder.js';
import { centerCropArr, decodeImage } from '../../src/data/image.js';

const DATA = join(FIXTURES, 'data');

/** An ImageNet-like tree: train/<wnid>/*.JPEG, with a nested folder, a non-image and an upper-case extension. */
function imagenetTree(): string {
  const root = mkdtempSync(join(tmpdir(), 'reals-imagefolder-'));
  const files: Record<string, string> = {
    'n02123045/n02123045_10.JPEG': 'cat_301x217.jpg',
    'n02123045/n02123045_2.JPEG': 'cat_301x217.jpg',
    'n02123045/extra/n02123045_1.png': 'coffee_52x40.png',
    'n04266014/n04266014_7.jpeg': 'rocket_217x389.jpg',
    'n01440764/a.png': 'camera_75x61.png',
  };
  for (const [to, from] of Object.entries(files)) {
    mkdirSync(join(root, 'train', to, '..'), { recursive: true });
    copyFileSync(join(DATA, from), join(root, 'train', to));
  }
  writeFileSync(join(root, 'train', 'n01440764', 'notes.txt'), 'not an image');
  writeFileSync(join(root, 'train', 'LICENSE'), 'a file next to the class folders');
  return root;
}

test("ImageFolder: classes sorted to labels 0..N-1, files in torchvision's sorted os.walk order", () => {
  const root = imagenetTree();
  const ds = new ImageFolder(join(root, 'train'), { resolution: 32 });
  assert.deepEqual(ds.classes, ['n01440764', 'n02123045', 'n04266014']);
  assert.equal(ds.classToIdx.get('n04266014'), 2);
  const train = join(root, 'train');
  assert.deepEqual(ds.samples, [
    [join(train, 'n01440764/a.png'), 0],
    [join(train, 'n02123045/n02123045_10.JPEG'), 1],
    [join(train, 'n02123045/n02123045_2.JPEG'), 1],
    [join(train, 'n02123045/extra/n02123045_1.png'), 1],
    [join(train, 'n04266014/n04266014_7.jpeg'), 2],
  ]);
  assert.equal(ds.length, 5);
  assert.equal(ds.label(4), 2);
  assert.throws(() => ds.path(5), /index 5 is outside \[0, 5\)/);
});

test("ImageFolder: val/ read with train's classes keeps train's labels; a missing class or an empty one is an error", () => {
  const root = imagenetTree();
  const train = new ImageFolder(join(root, 'train'), { resolution: 32 });
  mkdirSync(join(root, 'val', 'n04266014'), { recursive: true });
  copyFileSync(join(DATA, 'rocket_217x389.jpg'), join(root, 'val', 'n04266014', 'ILSVRC2012_val_00000001.JPEG'));
  assert.throws(() => new ImageFolder(join(root, 'val'), { resolution: 32, classes: train.classes }), /class folder .*n01440764 does not exist/);
  const own = new ImageFolder(join(root, 'val'), { resolution: 32 });
  assert.equal(own.label(0), 0, 'val alone has one class');
  mkdirSync(join(root, 'val', 'n01440764'));
  mkdirSync(join(root, 'val', 'n02123045'));
  assert.throws(() => new ImageFolder(join(root, 'val'), { resolution: 32, classes: train.classes }), /no valid file for the classes n01440764, n02123045/);
  copyFileSync(join(DATA, 'camera_75x61.png'), join(root, 'val', 'n01440764', 'x.png'));
  copyFileSync(join(DATA, 'cat_301x217.jpg'), join(root, 'val', 'n02123045', 'y.JPEG'));
  const val = new ImageFolder(join(root, 'val'), { resolution: 32, classes: train.classes });
  assert.deepEqual(val.samples.map(([, label]) => label), [0, 1, 2]);
  assert.throws(() => new ImageFolder(join(root, 'nowhere'), { resolution: 32 }), /nowhere is not a folder/);
});

test('ImageFolder.get decodes and center-crops an item', async () => {
  const ds = new ImageFolder(join(imagenetTree(), 'train'), { resolution: 32 });
  const { image, label } = await ds.get(1);
  assert.equal(label, 1);
  assert.deepEqual(image, centerCropArr(await decodeImage(join(DATA, 'cat_301x217.jpg')), 32));
});
