// The layer rules (.dependency-cruiser.cjs) have teeth: in a scratch copy of the rules, a data file
// that imports a pipeline fails with the data layer's rule, a pipeline importing data passes, a
// circle fails as one. The scratch folder is removed. (`npm test` cruises this repository's src/
// with the same rules before the suites: `npm run layers`.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '../..');
const DEPCRUISE = join(ROOT, 'node_modules/.bin/depcruise');

function cruise(cwd: string): { status: number | null; output: string } {
  const run = spawnSync(DEPCRUISE, ['src', '--config', '.dependency-cruiser.cjs', '--output-type', 'err'], { cwd, encoding: 'utf8' });
  return { status: run.status, output: run.stdout + run.stderr };
}

/** The rules and `files` (path under src/ → text) in a scratch folder, cruised, then removed. */
function cruiseScratch(files: Record<string, string>): { status: number | null; output: string } {
  const dir = mkdtempSync(join(tmpdir(), 'reals-layers-'));
  try {
    copyFileSync(join(ROOT, '.dependency-cruiser.cjs'), join(dir, '.dependency-cruiser.cjs'));
    for (const [path, text] of Object.entries(files)) {
      mkdirSync(dirname(join(dir, 'src', path)), { recursive: true });
      writeFileSync(join(dir, 'src', path), text);
    }
    return cruise(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('a data file importing a pipeline fails with the data layer\'s rule', () => {
  const { status, output } = cruiseScratch({
    'data/cache.ts': "import { runSample } from '../pipelines/sample.js';\nexport const run = runSample;\n",
    'pipelines/sample.ts': 'export function runSample(): void {}\n',
  });
  assert.notEqual(status, 0, output);
  assert.match(output, /error no-upward-import-from-data: src\/data\/cache\.ts → src\/pipelines\/sample\.ts/);
});

test('a type-only upward import fails too', () => {
  const { status, output } = cruiseScratch({
    'torch/tensor.ts': "import type { Module } from '../nn/module.js';\nexport type Owner = Module;\n",
    'nn/module.ts': 'export interface Module { name: string }\n',
  });
  assert.notEqual(status, 0, output);
  assert.match(output, /error no-upward-import-from-torch: src\/torch\/tensor\.ts → src\/nn\/module\.ts/);
});

test('a pipeline importing data passes', () => {
  const { status, output } = cruiseScratch({
    'pipelines/sample.ts': "import { cache } from '../data/cache.js';\nexport const run = cache;\n",
    'data/cache.ts': 'export function cache(): void {}\n',
  });
  assert.equal(status, 0, output);
});

test('an import circle within one room fails as one', () => {
  const { status, output } = cruiseScratch({
    'sampling/sample.ts': "import type { Backend } from './backend.js';\nexport type Options = { backend: Backend };\nexport const labels = 1;\n",
    'sampling/backend.ts': "import { labels } from './sample.js';\nexport interface Backend { labels: typeof labels }\n",
  });
  assert.notEqual(status, 0, output);
  assert.match(output, /error no-circular: src\/sampling\/(sample|backend)\.ts/);
});

test('a folder outside the layers fails', () => {
  const { status, output } = cruiseScratch({
    'extras/helper.ts': "import { cache } from '../data/cache.js';\nexport const helper = cache;\n",
    'data/cache.ts': 'export function cache(): void {}\n',
  });
  assert.notEqual(status, 0, output);
  assert.match(output, /error no-folder-outside-the-layers: src\/extras\/helper\.ts/);
});
