// The starting noise of the web page: libtorch's CPU `torch.manualSeed(seed); torch.randn(n)` for
// float32, written out so that the page and `reals sample` draw the same latents for a seed. As
// ATen's normal_fill: an mt19937 seeded with the seed's low 32 bits, n uniforms (24 random bits
// each), then Box-Muller on blocks of 16 (the first 8 as radii, the last 8 as angles), and when n
// is not a multiple of 16 the last 16 values drawn again and transformed. libtorch's AVX2 kernel
// computes the logarithms and sines in float32 (Sleef), so values may differ from these in the
// last bit. n must be at least 16 (libtorch draws smaller tensors another way). No Node or libtorch
// imports (the Mersenne twister is the data layer's, written for DistributedSampler's permutations).
import { MT19937 } from '../data/sampler.js';

/** uniform_real_distribution<float>(0, 1): the low 24 bits of one draw, times 2^-24. */
function uniform(generator: MT19937): number {
  return (generator.next() & 0xffffff) * 2 ** -24;
}

/** ATen's normal_fill_16: data[j], data[j + 8] from the uniforms there (mean 0, std 1). */
function boxMuller16(data: Float32Array, offset: number): void {
  for (let j = 0; j < 8; j++) {
    const u1 = Math.fround(1 - data[offset + j]!);
    const u2 = data[offset + j + 8]!;
    const radius = Math.fround(Math.sqrt(Math.fround(-2 * Math.fround(Math.log(u1)))));
    const theta = Math.fround(Math.fround(2 * Math.PI) * u2);
    data[offset + j] = Math.fround(radius * Math.fround(Math.cos(theta)));
    data[offset + j + 8] = Math.fround(radius * Math.fround(Math.sin(theta)));
  }
}

/** `count` N(0, 1) float32 samples as libtorch's CPU torch.randn after torch.manualSeed(seed). */
export function seededNormal(seed: number, count: number): Float32Array {
  if (!Number.isSafeInteger(seed) || seed < 0) throw new Error(`seededNormal: the seed must be a non-negative integer, got ${seed}`);
  if (!Number.isInteger(count) || count < 16) throw new Error(`seededNormal: draws of at least 16 values, got ${count}`);
  // libtorch keeps the low 32 bits of a seed.
  const generator = new MT19937(Number(BigInt(seed) & 0xffffffffn));
  const data = new Float32Array(count);
  for (let i = 0; i < count; i++) data[i] = uniform(generator);
  for (let i = 0; i + 16 <= count; i += 16) boxMuller16(data, i);
  if (count % 16 !== 0) {
    const tail = count - 16;
    for (let i = 0; i < 16; i++) data[tail + i] = uniform(generator);
    boxMuller16(data, tail);
  }
  return data;
}
