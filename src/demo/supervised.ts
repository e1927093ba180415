// Supervised training of the demo's two Fashion-MNIST classifiers (the ViT teacher that stands in
// for DINOv2, and the CNN whose features score the samples): src/train/supervised.ts's loop on
// the training set, and the accuracy on the first test images.
import * as torch from '../torch/index.js';
import type { Tensor } from '../torch/index.js';
import type * as nn from '../nn/index.js';
import { FashionMNIST, writeNormalized } from '../data/index.js';
import { trainWithCrossEntropy } from '../train/supervised.js';

/** The first `count` Fashion-MNIST images (3 channels, 32x32, [-1, 1]) and their labels. */
export function fashionMnistTensors(count: number, train: boolean): { images: Tensor; labels: Tensor } {
  const data = new FashionMNIST({ channels: 3, train });
  const n = Math.min(count, data.length);
  const [c, h, w] = data.itemShape;
  const pixels = new Float32Array(n * c * h * w);
  const labels = new BigInt64Array(n);
  for (let i = 0; i < n; i++) {
    writeNormalized(data.image(i), pixels, i * c * h * w);
    labels[i] = BigInt(data.label(i));
  }
  return { images: torch.fromArray(pixels, [n, c, h, w]), labels: torch.fromArray(labels, [n], 'int64') };
}

/** The settings of one supervised training run (the teacher's and the classifier's). */
export interface SupervisedRunOptions {
  steps: number;
  batchSize: number;
  lr: number;
  seed: number;
  /** Test images the accuracy is measured on. */
  testImages: number;
  /** Gets metrics.jsonl (the loss every logEvery steps) and the trained weights. */
  dir: string;
}

export interface SupervisedOptions extends SupervisedRunOptions {
  /** Trained parameters: the network and its classification layer. */
  model: nn.Module;
  /** Images [B, 3, 32, 32] in [-1, 1] to logits [B, 10]. */
  logits: (images: Tensor) => Tensor;
  label: string;
  logEvery?: number;
}

export interface SupervisedResult { steps: number; finalLoss: number; testAccuracy: number; testImages: number }

export async function trainSupervised(options: SupervisedOptions): Promise<SupervisedResult> {
  const { steps, finalLoss } = await trainWithCrossEntropy({
    ...options, data: new FashionMNIST({ channels: 3 }), loader: { numWorkers: 0, randomFlip: false },
  });
  const test = fashionMnistTensors(options.testImages, false);
  const predicted = predictInBatches(options.logits, test.images);
  const testAccuracy = predicted.eq(test.labels).float().mean().item();
  for (const t of [test.images, test.labels, predicted]) t.dispose();
  return { steps, finalLoss, testAccuracy, testImages: options.testImages };
}

/** argmax of `logits` over `images`, 256 at a time, without gradients. */
export function predictInBatches(logits: (images: Tensor) => Tensor, images: Tensor): Tensor {
  return torch.noGrad(() => torch.scope(() => {
    const out: Tensor[] = [];
    for (let start = 0; start < images.size(0); start += 256) out.push(logits(images.slice(0, start, start + 256)).argmax(1));
    return torch.cat(out);
  }));
}
