import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { FIXTURES } from '../helpers.js';
import * as torch from '../../src/torch/index.js';
import { DistributedSampler, MT19937, randperm } from '../../src/data/sampler.js';

const expected = JSON.parse(readFileSync(join(FIXTURES, 'data', 'expected.json'), 'utf8')) as {
  samplers: { shuffle: boolean; drop_last: boolean; epoch: number; rank: number; indices: number[] }[];
};

test('MT19937 seeded with 5489 gives the reference sequence (10000th output 4123659995)', () => {
  const rng = new MT19937(5489);
  assert.equal(rng.next(), 3499211612);
  for (let i = 2; i < 10000; i++) rng.next();
  assert.equal(rng.next(), 4123659995);
});

test("randperm(n, seed) equals libtorch's randperm after manual_seed(seed)", () => {
  const state = torch.getRngState();
  try {
    for (const [n, seed] of [[10, 0], [1000, 7], [3, 123456789]] as const) {
      torch.manualSeed(seed);
      const want = Array.from(torch.randperm(n).toArray() as BigInt64Array, Number);
      assert.deepEqual(randperm(n, seed), want, `n ${n}, seed ${seed}`);
    }
  } finally {
    torch.setRngState(state);
  }
});

test("DistributedSampler equals torch's (11 items, 3 ranks, shuffle, drop_last, set_epoch)", () => {
  assert.equal(expected.samplers.length, 24);
  for (const { shuffle, drop_last, epoch, rank, indices } of expected.samplers) {
    const sampler = new DistributedSampler(11, { rank, worldSize: 3, shuffle, seed: 7, dropLast: drop_last });
    assert.deepEqual(sampler.indices(epoch), indices, `shuffle ${shuffle}, dropLast ${drop_last}, epoch ${epoch}, rank ${rank}`);
    assert.equal(sampler.numSamples, indices.length);
  }
});

test('DistributedSampler refuses a rank outside the world', () => {
  assert.throws(() => new DistributedSampler(4, { rank: 2, worldSize: 2 }), /rank 2 is not in \[0, 2\)/);
});
