import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { ImageFolder } from '../../src/data/index.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '../..');
const SCRIPT = join(ROOT, 'scripts/make-photo-folder.ts');
const SKIMAGE_DATA = '/usr/lib/python3/dist-packages/skimage/data';
const skip = existsSync(join(SKIMAGE_DATA, 'astronaut.png')) ? false : `Debian's python3-skimage is not installed (${SKIMAGE_DATA}); apt-get install python3-skimage`;

function makeFolder(out: string, ...flags: string[]): { status: number | null; stderr: string } {
  return spawnSync(process.execPath, ['--import', 'tsx', SCRIPT, out, ...flags], { cwd: ROOT, encoding: 'utf8', timeout: 120_000 });
}

/** Every file under `dir`, relative, sorted, with its bytes. */
function filesOf(dir: string, prefix = ''): [string, Buffer][] {
  return readdirSync(join(dir, prefix), { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name)).flatMap((entry) => {
    const path = join(prefix, entry.name);
    return entry.isDirectory() ? filesOf(dir, path) : [[path, readFileSync(join(dir, path))] as [string, Buffer]];
  });
}

test('make-photo-folder.ts: an ImageNet-layout folder of 5 classes of 64x64 RGB crops, train and val counts as asked, the same bytes from the same seed', { skip }, async () => {
  const root = mkdtempSync(join(tmpdir(), 'photo-folder-'));
  try {
    for (const run of ['a', 'b']) assert.equal(makeFolder(join(root, run), '--train', '3', '--val', '2').status, 0);
    const train = new ImageFolder(join(root, 'a', 'train'), { resolution: 64 });
    assert.deepEqual(train.classes, ['astronaut', 'cat', 'coffee', 'hubble', 'rocket']);
    assert.equal(train.length, 15);
    assert.equal(new ImageFolder(join(root, 'a', 'val'), { resolution: 64 }).length, 10);
    const first = await sharp(join(root, 'a', 'train', 'cat', 'cat_0000.png')).metadata();
    assert.deepEqual([first.width, first.height, first.channels], [64, 64, 3]);
    assert.deepEqual(filesOf(join(root, 'b')), filesOf(join(root, 'a')));
    // A different seed cuts different crops.
    assert.equal(makeFolder(join(root, 'c'), '--train', '3', '--val', '2', '--seed', '1').status, 0);
    assert.notDeepEqual(filesOf(join(root, 'c')), filesOf(join(root, 'a')));
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('make-photo-folder.ts: a bad count or a used folder is a one-line error naming the flag or folder', { skip }, () => {
  const root = mkdtempSync(join(tmpdir(), 'photo-folder-'));
  try {
    assert.match(makeFolder(join(root, 'x'), '--train', 'abc').stderr, /--train must be a whole number >= 0, got abc/);
    assert.match(makeFolder(join(root, 'x'), '--size', '0').stderr, /--size must be a whole number >= 1, got 0/);
    assert.equal(makeFolder(join(root, 'y'), '--train', '1', '--val', '0').status, 0);
    assert.match(makeFolder(join(root, 'y')).stderr, /make-photo-folder: .*y is not empty/);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
