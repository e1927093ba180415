// Fashion-MNIST as in-memory "latents" for the generator-training tests.
import * as torch from '../../src/torch/index.js';
import type { Tensor } from '../../src/torch/index.js';
import * as nn from '../../src/nn/index.js';
import { FashionMNIST, randperm } from '../../src/data/index.js';
import type { LatentBatch, LatentSource } from '../../src/data/latents.js';
import type { LatentNormalization } from '../../src/data/latent-normalization.js';

export const IDENTITY: LatentNormalization = { source: 'scaling_factor', mean: [0], std: [1] };

/** Fashion-MNIST images (32x32, in [-1, 1], 1 channel), average-pooled by `pool` (2: 16x16). */
export function fashionMnist(train: boolean, n: number, pool = 2): { x: Tensor; y: Tensor } {
  const dataset = new FashionMNIST({ train });
  const pixels = new Float32Array(n * 32 * 32);
  const labels = new BigInt64Array(n);
  for (let i = 0; i < n; i++) {
    const image = dataset.image(i);
    for (let p = 0; p < 32 * 32; p++) pixels[i * 1024 + p] = image.data[p]! / 127.5 - 1;
    labels[i] = BigInt(dataset.label(i));
  }
  const x = torch.fromArray(pixels, [n, 1, 32, 32]);
  return { x: pool > 1 ? nn.F.avgPool2d(x, pool) : x, y: torch.tensor(labels) };
}

/** An in-memory LatentSource over (x, y), permuted per epoch with data's randperm. */
export function memorySource(x: Tensor, y: Tensor, batchSize: number): LatentSource {
  const n = x.size(0);
  return {
    batchSize, latentShape: x.shape.slice(1), normalization: IDENTITY,
    length: Math.floor(n / batchSize),
    async *iterate(epoch: number, startBatch: number): AsyncGenerator<LatentBatch> {
      const order = randperm(n, epoch);
      for (let b = startBatch; b < Math.floor(n / batchSize); b++) {
        const index = torch.tensor(order.slice(b * batchSize, (b + 1) * batchSize));
        yield { latents: x.indexSelect(0, index), labels: y.indexSelect(0, index), batchIndex: b };
      }
    },
    async close() {},
  };
}
