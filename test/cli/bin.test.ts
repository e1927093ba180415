// bin/reals.js picks what to run: in a checkout, dist/ when every source has its compiled file
// written after it (no tsx compile at start), else the sources through tsx; without src/ (an
// installed package), dist/. A copy of the script runs over stand-in src/ and dist/ trees whose
// main() says which one it is.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { withTmp } from '../helpers.js';

const REPO = join(dirname(fileURLToPath(import.meta.url)), '../..');

test('bin/reals.js runs dist/ when it is fresher than every source, the sources through tsx when one is newer or uncompiled', withTmp('reals-bin-', (root) => {
  mkdirSync(join(root, 'bin'));
  copyFileSync(join(REPO, 'bin', 'reals.js'), join(root, 'bin', 'reals.js'));
  symlinkSync(join(REPO, 'node_modules'), join(root, 'node_modules'));
  writeFileSync(join(root, 'package.json'), JSON.stringify({ type: 'module' }));
  const write = (file: string, text: string, secondsAgo: number) => {
    mkdirSync(dirname(join(root, file)), { recursive: true });
    writeFileSync(join(root, file), text);
    const time = Date.now() / 1000 - secondsAgo;
    utimesSync(join(root, file), time, time);
  };
  const module = (from: string) => `export async function main(argv${from === 'src' ? ': string[]' : ''}) { console.log('${from}', argv.slice(2).join(' ')); }\n`;
  const run = () => spawnSync(process.execPath, [join(root, 'bin', 'reals.js'), '--help'], { encoding: 'utf8' }).stdout.trim();

  write('src/cli/main.ts', module('src'), 100);
  write('src/train/report.ts', 'export {};\n', 100);
  write('dist/cli/main.js', module('dist'), 50);
  write('dist/train/report.js', 'export {};\n', 50);
  assert.equal(run(), 'dist --help');
  write('src/train/report.ts', 'export const edited = 1;\n', 0);
  assert.equal(run(), 'src --help', 'a source edited after the build');
  write('src/train/report.ts', 'export {};\n', 100);
  write('src/train/new-module.ts', 'export {};\n', 100);
  assert.equal(run(), 'src --help', 'a source the build has not compiled');
  rmSync(join(root, 'src'), { recursive: true });
  assert.equal(run(), 'dist --help', 'an installed package');
}));
