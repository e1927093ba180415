import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import * as torch from '../../src/torch/index.js';
import type { Tensor } from '../../src/torch/index.js';
import { AutoencoderKL } from '../../src/models/autoencoder-kl.js';
import type { InMemoryDataset } from '../../src/data/index.js';
import type { FeatureExtractor } from '../../src/eval/activations.js';
import { interpolateLatents, interpolatedFid, nearestNeighbours, slerpLatents } from '../../src/eval/ifid.js';
import { FIXTURES, loadFixture } from '../helpers.js';

const fixture = loadFixture('eval/ifid.json');
const F = torch.nnFunctional;

const indices = (t: Tensor): number[] => Array.from(t.toArray() as BigInt64Array, Number);

test('nearestNeighbours equals a double loop over pairs (make_ifid.py), by L2 or cosine, in chunks or at once, with equal latents paired', () => {
  const { latents } = fixture.neighbours;
  for (const [metric, index, distance] of [['l2', fixture.neighbours.index, fixture.neighbours.distance], ['cosine', fixture.neighbours.cosine_index, fixture.neighbours.cosine_distance]] as const) {
    for (const chunkSize of [3, 1024]) {
      const got = nearestNeighbours(latents, { chunkSize, metric });
      assert.deepEqual(indices(got.index), indices(index), `${metric}, chunk ${chunkSize}`);
      // Euclidean distances of float32 latents recomputed in float64: equal to float64 rounding.
      const expected = distance.toArray() as Float64Array;
      (got.distance.toArray() as Float64Array).forEach((d, i) => assert.ok(Math.abs(d - expected[i]!) < 1e-12, `${metric} ${i}: ${d} vs ${expected[i]}`));
    }
    assert.deepEqual([indices(index)[2], indices(index)[7]], [7, 2], 'latents 2 and 7 are equal');
  }
  assert.notDeepEqual(indices(fixture.neighbours.index), indices(fixture.neighbours.cosine_index), 'the two metrics pick other neighbours here');
  assert.throws(() => nearestNeighbours(torch.zeros([1, 4])), /expected at least 2 latents \[N >= 2, \.\.\.\], got \[1,4\]/);
});

test('interpolateLatents is (1 - t) a + t b: a at t = 0, b at t = 1, the midpoint at 0.5', () => {
  const a = torch.tensor([1, -2, 4], { dtype: 'float32' });
  const b = torch.tensor([3, 6, -4], { dtype: 'float32' });
  assert.deepEqual(Array.from(interpolateLatents(a, b, 0).toArray() as Float32Array), [1, -2, 4]);
  assert.deepEqual(Array.from(interpolateLatents(a, b, 1).toArray() as Float32Array), [3, 6, -4]);
  assert.deepEqual(Array.from(interpolateLatents(a, b, 0.5).toArray() as Float32Array), [2, 2, 0]);
  assert.deepEqual(Array.from(interpolateLatents(a, b, 0.25).toArray() as Float32Array), [1.5, 0, 2]);
});

test('slerpLatents follows the arc: its ends at t = 0 and 1, the 45-degree point between orthogonal vectors, linear for parallel ones', () => {
  const a = torch.tensor([3, 0, 0, 4], { shape: [2, 1, 2], dtype: 'float32' });
  const b = torch.tensor([0, 3, 0, 8], { shape: [2, 1, 2], dtype: 'float32' });
  const values = (t: number): number[] => Array.from(slerpLatents(a, b, t).toArray() as Float32Array);
  assert.deepEqual(values(0), [3, 0, 0, 4]);
  assert.deepEqual(values(1), [0, 3, 0, 8]);
  // Row 1: orthogonal, both of length 3: at t = 0.5, 3 (cos 45°, sin 45°). Row 2: parallel, so (a + b) / 2.
  const half = values(0.5);
  [3 * Math.SQRT1_2, 3 * Math.SQRT1_2, 0, 6].forEach((v, i) => assert.ok(Math.abs(half[i]! - v) < 1e-6, `${i}: ${half[i]} vs ${v}`));
  assert.deepEqual(slerpLatents(a, b, 0.5).shape, [2, 1, 2]);
});

/** The fixture's feature network: uint8 pixels / 255, 4x4 average pooling, times a fixed [48, 8] matrix. */
function pooledProjection(projection: Tensor): FeatureExtractor {
  const features = (images: Tensor): { pool3: Tensor; spatial: Tensor } => {
    const pooled = F.avgPool2d(images.float().div(255), 4).flatten(1).matmul(projection);
    return { pool3: pooled, spatial: pooled };
  };
  return { id: 'pooled-projection', device: 'cpu', features, logits: () => { throw new Error('no classifier'); } };
}

const { pipeline } = fixture;
const images: InMemoryDataset = {
  length: 12,
  itemShape: [3, 16, 16],
  image: (i) => ({ data: pipeline.images.select(0, i).toArray() as Uint8Array, width: 16, height: 16, channels: 3 }),
  label: () => 0,
};
// The tiny VAE of make_autoencoder_kl.py (seed 2), as a diffusers folder.
const vae = AutoencoderKL.fromPretrained(join(FIXTURES, 'autoencoder_kl', 'legacy_bin'));

test('the latents, their pairs and the decoded midpoints equal PyTorch\'s', () => {
  const z = torch.noGrad(() => vae.encode(torch.tensor(Array.from(pipeline.images.toArray() as Uint8Array), { shape: [12, 16, 16, 3] })
    .permute(0, 3, 1, 2).float().div(127.5).sub(1)).mode());
  // A float32 encoder of 3x3 convs over <= 8 channels (sums of <= 72 products, ~6 in sequence):
  // another summation order (another CPU's kernels) stays within ~8 sqrt(72 * 6) 2^-24 = 1e-5 of the latents' scale.
  assert.ok(z.sub(pipeline.latents).abs().max().item() <= 1e-5 * pipeline.latents.abs().max().item());
  const { index } = nearestNeighbours(z);
  assert.deepEqual(indices(index), indices(pipeline.index));
  const decoded = torch.noGrad(() => vae.decode(interpolateLatents(z, z.indexSelect(0, index), 0.5)));
  const pixels = decoded.mul(127.5).add(128).clamp(0, 255).to('uint8');
  // Truncation to uint8 turns a 1e-5 difference into one level where a value sits on an integer.
  assert.ok(pixels.to('int32').sub(pipeline.decoded.to('int32')).abs().max().item() <= 1);
});

test('iFID and rFID of a tiny VAE equal the step-by-step PyTorch + scipy reference, and t = 0 gives the rFID', async () => {
  const extractor = pooledProjection(pipeline.projection);
  const result = await interpolatedFid({ vae, dataset: images, count: 100, extractor, batchSize: 5 });
  assert.equal(result.images, 12);
  assert.deepEqual(result.latentShape, [4, 8, 8]);
  // Equal pixels give features equal to float32 rounding and distances equal to ~1e-14; a value
  // that truncates to the other uint8 level (one in the reconstructions here) moves the distance
  // by ~1e-5. 1e-4 relative allows that and still fails for t = 0.45 instead of 0.5 (1.5% off).
  for (const [name, got, expected] of [['iFID', result.ifid, pipeline.ifid], ['rFID', result.rfid, pipeline.rfid]] as const) {
    assert.ok(Math.abs(got - expected) <= 1e-4 * expected, `${name} ${got} vs ${expected}`);
  }
  assert.ok(Math.abs(result.meanNeighbourDistance - pipeline.mean_neighbour_distance) < 1e-5 * pipeline.mean_neighbour_distance);
  assert.ok(result.ifid > result.rfid, 'midpoints between images are further from the data than reconstructions');
  const again = await interpolatedFid({ vae, dataset: images, count: 12, extractor, batchSize: 12, seed: 3 });
  // Another batching and order of the same images: the same sets, so the same numbers up to summation
  // order. The float32 features' last bits may depend on the batch (kernels chosen by shape), which
  // moved the iFID by 1.1e-9 of it on a Zen 5 EPYC; 1e-6 leaves a factor of ~1000 for other CPUs and
  // still fails a different pairing or set of images, which moves it by percents.
  assert.ok(Math.abs(again.ifid - result.ifid) < 1e-6 * result.ifid, `${again.ifid} vs ${result.ifid}`);
  const atZero = await interpolatedFid({ vae, dataset: images, count: 12, extractor, t: 0 });
  assert.ok(Math.abs(atZero.ifid - atZero.rfid) < 1e-12, `t = 0: ${atZero.ifid} vs ${atZero.rfid}`);
});

test('iFID with the authors\' pairing (largest cosine similarity) and spherical interpolation equals the reference', async () => {
  const { slerp } = fixture;
  const result = await interpolatedFid({ vae, dataset: images, count: 12, extractor: pooledProjection(pipeline.projection), interpolation: 'slerp', batchSize: 5 });
  assert.equal(result.interpolation, 'slerp');
  // As the linear case's bound above: equal pixels, or a value truncated to the other level.
  assert.ok(Math.abs(result.ifid - slerp.ifid) <= 1e-4 * slerp.ifid, `${result.ifid} vs ${slerp.ifid}`);
  assert.ok(Math.abs(result.meanNeighbourDistance - slerp.mean_neighbour_distance) < 1e-5 * slerp.mean_neighbour_distance);
  assert.ok(Math.abs(result.ifid - pipeline.ifid) > 1e-2 * pipeline.ifid, 'another pairing and path give another number');
});

test('too few images or a t outside [0, 1] is refused before any work', async () => {
  const extractor = pooledProjection(pipeline.projection);
  await assert.rejects(interpolatedFid({ vae, dataset: images, count: 1, extractor }), /iFID: needs at least 2 images \(a neighbour and a covariance\), got 1/);
  await assert.rejects(interpolatedFid({ vae, dataset: images, count: 12, extractor, t: 1.5 }), /iFID: t must be in \[0, 1\], got 1.5/);
  await assert.rejects(interpolatedFid({ vae, dataset: images, count: 12, extractor, interpolation: 'cubic' as 'linear' }), /iFID: interpolation must be linear or slerp, got cubic/);
});
