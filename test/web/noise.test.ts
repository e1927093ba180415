import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '../../src/torch/index.js';
import { seededNormal } from '../../src/web/noise.js';

test('the page\'s noise is libtorch\'s torch.manualSeed(seed); torch.randn(n) (to the last bit of its float32 Sleef math), tails and 64-bit seeds included', () => {
  for (const [seed, n] of [[0, 16], [7, 64], [1234, 4096], [3, 100], [2 ** 33 + 5, 50]] as const) {
    torch.manualSeed(seed);
    const expected = torch.randn([n]).toArray() as Float32Array;
    const actual = seededNormal(seed, n);
    const worst = actual.reduce((m, v, i) => Math.max(m, Math.abs(v - expected[i]!)), 0);
    // Below 3e-7: one or two units in the last place of values of order 1.
    assert.ok(worst < 3e-7, `seed ${seed}, ${n} values: differ by up to ${worst}`);
  }
  assert.throws(() => seededNormal(0, 8), /draws of at least 16 values, got 8/);
});
