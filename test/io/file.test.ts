import { test, mock } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { createHash } from 'node:crypto';
import { syncBuiltinESMExports } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Command } from 'commander';
import { checkWritableDir, ensureWritableDir, makeDirs, load } from '../../src/io/index.js';
import { fileSha256, readAt, writeAll } from '../../src/io/file.js';
import { buildProgram } from '../../src/cli/main.js';

const { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } = fs;
const HERE = dirname(fileURLToPath(import.meta.url));

test('an output folder under /proc (where recursive mkdirSync spins) fails at once, naming the flag, the folder and why', () => {
  const start = performance.now();
  assert.throws(() => ensureWritableDir('/proc/reals-out/results', '--results-dir'),
    /^Error: --results-dir \/proc\/reals-out\/results: cannot create the folder \/proc\/reals-out: ENOENT \(its parent exists but takes no new folders \(a virtual file system such as \/proc\?\)\)$/);
  assert.ok(performance.now() - start < 1000);
  const dir = mkdtempSync(join(tmpdir(), 'reals-file-'));
  try {
    writeFileSync(join(dir, 'file'), '');
    assert.throws(() => ensureWritableDir(join(dir, 'file', 'sub'), '--sample-dir'), /^Error: --sample-dir .*file\/sub: cannot reach .*file\/sub: ENOTDIR \(a part of the path is a file\)$/);
    makeDirs(join(dir, 'a', 'b', 'c'));
    ensureWritableDir(join(dir, 'a', 'b', 'c'));
    assert.deepEqual(fs.readdirSync(join(dir, 'a', 'b', 'c')), [], 'the probe file is removed');
    // A read-only file system: EROFS, where Node's recursive mkdir reported ENOENT.
    const erofs = mock.method(fs, 'mkdirSync', () => { throw Object.assign(new Error('EROFS: read-only file system, mkdir'), { code: 'EROFS' }); });
    syncBuiltinESMExports();
    try {
      assert.throws(() => ensureWritableDir(join(dir, 'ro', 'x'), '--output-dir'), /--output-dir .*ro\/x: cannot create the folder .*\/ro: EROFS \(a read-only file system\)$/);
    } finally {
      erofs.mock.restore();
      syncBuiltinESMExports();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('read and write errors that say only "read" or "write" (EISDIR, ENOSPC) name the path', () => {
  const dir = mkdtempSync(join(tmpdir(), 'reals-file-'));
  try {
    assert.throws(() => load(dir), new RegExp(`^Error: ${dir}: not a regular file \\(a folder\\)`));
    const dirFd = openSync(dir, 'r');
    try {
      assert.throws(() => readAt(dirFd, 0, 4, dir), new RegExp(`^Error: ${dir}: EISDIR: illegal operation on a directory, read \\(a folder where a file was expected\\)`));
    } finally {
      closeSync(dirFd);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const fd = openSync('/dev/full', 'w');
  try {
    assert.throws(() => writeAll(fd, new Uint8Array(16), 'out.npz'), (e: NodeJS.ErrnoException) =>
      e.code === 'ENOSPC' && /^out\.npz: ENOSPC: no space left on device, write \(the device is full\)$/.test(e.message));
  } finally {
    closeSync(fd);
  }
});

/** The CLI with errors thrown instead of exiting. */
function program(): Command {
  const root = buildProgram();
  const quiet = (c: Command): void => {
    c.exitOverride().configureOutput({ writeErr: () => {}, writeOut: () => {} });
    c.commands.forEach(quiet);
  };
  quiet(root);
  return root;
}

test('sit train, align train, align convert and sample refuse an output folder under /proc before loading anything', async () => {
  const cases: [string[], RegExp][] = [
    [['sit', 'train', '--results-dir', '/proc/reals-x', '--latents-path', 'missing'], /--results-dir \/proc\/reals-x: cannot create the folder/],
    [['align', 'train', '--results-dir', '/proc/reals-x', '--data-path', 'missing', '--dino-ckpt', 'missing'], /--results-dir \/proc\/reals-x: cannot create the folder/],
    [['align', 'convert', '--output-dir', '/proc/reals-x', '--ckpt', 'missing', '--data-path', 'missing', '--num-samples', '10'], /--output-dir \/proc\/reals-x: cannot create the folder/],
    [['sample', 'ode', '--sample-dir', '/proc/reals-x', '--ckpt', 'missing', '--vae-path', 'missing'], /--sample-dir \/proc\/reals-x: cannot create the folder/],
  ];
  for (const [argv, expected] of cases) {
    const start = performance.now();
    await assert.rejects(program().parseAsync(argv, { from: 'user' }), (e: Error) => expected.test(e.message), argv.join(' '));
    assert.ok(performance.now() - start < 2000, `${argv.join(' ')}: ${performance.now() - start} ms`);
  }
});

test('checkWritableDir checks a folder could be made and written, and leaves nothing behind', () => {
  const dir = mkdtempSync(join(tmpdir(), 'reals-file-'));
  try {
    checkWritableDir(join(dir, 'x', 'y'), '--output-dir');
    checkWritableDir(dir, '--output-dir');
    assert.deepEqual(fs.readdirSync(dir), []);
    assert.throws(() => checkWritableDir('/proc/reals-x/y', '--output-dir'), /^Error: --output-dir \/proc\/reals-x\/y: cannot create the folder \/proc\/reals-x: ENOENT/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('ranks checking one missing folder at once (each makes and removes it) all pass: a folder gone between two looks is looked at again', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'reals-file-'));
  const results = join(dir, 'results');
  const script = `import { checkWritableDir } from ${JSON.stringify(pathToFileURL(join(HERE, '../../src/io/index.js')).href)};
for (let i = 0; i < 3000; i++) checkWritableDir(process.argv[1], '--results-dir');`;
  try {
    const runs = await Promise.all([0, 1, 2].map(() => new Promise<string>((resolve) => {
      const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script, results], { stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString(); });
      child.on('close', (code) => resolve(`exit ${code}${stderr.split('\n').find((line) => line.startsWith('Error')) ?? ''}`));
    })));
    assert.deepEqual(runs, ['exit 0', 'exit 0', 'exit 0']);
    // One rank's probe file can keep another from removing the folder it made: at most that, empty.
    assert.deepEqual(fs.readdirSync(dir).filter((name) => name !== 'results' || fs.readdirSync(results).length > 0), []);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the checkpoint and array loaders read regular files only: a FIFO or /dev/zero named like one is an error at once, not a hang', async () => {
  const { execFileSync } = await import('node:child_process');
  const { SafetensorsFile, loadNpy, loadNpz } = await import('../../src/io/index.js');
  const dir = fs.mkdtempSync(join(tmpdir(), 'reals-fifo-'));
  try {
    const loaders: [string, (path: string) => unknown][] = [
      ['model.safetensors', (path) => SafetensorsFile.open(path)], ['model.pt', (path) => load(path)],
      ['array.npy', (path) => loadNpy(path)], ['batch.npz', (path) => loadNpz(path)],
    ];
    for (const [name, open] of loaders) {
      const fifo = join(dir, name);
      execFileSync('mkfifo', [fifo]);
      assert.throws(() => open(fifo), new RegExp(`${name}: not a regular file \\(a FIFO\\)`), name);
      fs.rmSync(fifo);
      fs.symlinkSync('/dev/zero', fifo);
      assert.throws(() => open(fifo), new RegExp(`${name}: not a regular file \\(a device\\)`), name);
      fs.rmSync(fifo);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('fileSha256 hashes the bytes of a file across its read chunks, and refuses a folder', () => {
  const dir = mkdtempSync(join(tmpdir(), 'reals-sha-'));
  try {
    const path = join(dir, 'blob');
    // 16 MiB + 3 bytes: two chunks, the second short; the digest is Node's of the whole buffer.
    const bytes = new Uint8Array((16 << 20) + 3).map((_, i) => (i * 2654435761) >>> 24);
    writeFileSync(path, bytes);
    assert.equal(fileSha256(path), createHash('sha256').update(bytes).digest('hex'));
    writeFileSync(path, '');
    assert.equal(fileSha256(path), 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
    assert.throws(() => fileSha256(dir), /reals-sha-.*: not a regular file \(a folder\)$/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
