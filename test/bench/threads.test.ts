import test from 'node:test';
import assert from 'node:assert/strict';
import { threadsLine, tsThreads } from '../../bench/threads.js';

test('a governed TS side is labelled by the most threads it may take, a fixed one by its count', () => {
  assert.equal(tsThreads(2, false), 2);
  assert.equal(tsThreads(2, true), 'governed, at most 2');
});

test('the threads line says whether TS ran governed, and keeps the reference sides\' fixed counts', () => {
  const run = { precision: 'bf16' as const, precisionThreads: 2, fp32Threads: 1, cpp: true };
  assert.equal(threadsLine({ ...run, governed: false }),
    'threads: each side\'s default (TS and PyTorch 2 in bf16 rows, 1 in fp32 rows; PyTorch fp32 and C++ 1)');
  assert.equal(threadsLine({ ...run, governed: true }),
    'threads: TS governed, at most 2 in bf16 rows, 1 in fp32 rows (REALS_ADAPTIVE_THREADS=1: the cores the other processes leave free); ' +
    'PyTorch 2 in bf16 rows, 1 in fp32 rows; PyTorch fp32 and C++ 1');
  assert.equal(threadsLine({ ...run, governed: false, fixed: 3 }), 'threads 3 on every side');
});
