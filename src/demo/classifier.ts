// The evaluation network of the demo: a small CNN trained on Fashion-MNIST, separate from the
// teacher the VAE is aligned with (scoring samples with the teacher's own features would favour
// the aligned VAE). Its penultimate features play the role Inception's pool_3 plays in the ADM
// evaluator (FID, precision, recall); its predictions say which class a sample looks like.
import { join } from 'node:path';
import * as torch from '../torch/index.js';
import type { Tensor } from '../torch/index.js';
import * as nn from '../nn/index.js';
import { saveSafetensors } from '../io/index.js';
import type { FeatureExtractor } from '../eval/activations.js';
import { trainSupervised, type SupervisedResult, type SupervisedRunOptions } from './supervised.js';

const F = torch.nnFunctional;

/** conv-ReLU-pool x3 (32 → 4 pixels), flattened, Linear-ReLU to `featureDim` features, Linear to 10 classes. */
export class FashionClassifier extends nn.Module {
  readonly conv1: nn.Conv2d;
  readonly conv2: nn.Conv2d;
  readonly conv3: nn.Conv2d;
  readonly fc1: nn.Linear;
  readonly fc: nn.Linear;

  constructor(readonly featureDim = 128) {
    super();
    this.conv1 = this.addModule('conv1', new nn.Conv2d(3, 32, 3, { padding: 1 }));
    this.conv2 = this.addModule('conv2', new nn.Conv2d(32, 64, 3, { padding: 1 }));
    this.conv3 = this.addModule('conv3', new nn.Conv2d(64, 64, 3, { padding: 1 }));
    this.fc1 = this.addModule('fc1', new nn.Linear(64 * 4 * 4, featureDim));
    this.fc = this.addModule('fc', new nn.Linear(featureDim, 10));
  }

  /** Images [B, 3, 32, 32] in [-1, 1] to features [B, featureDim]. */
  features(x: Tensor): Tensor {
    return this.featureMaps(x).features;
  }

  /** The last conv block's pooled map flattened ([B, 64 * 4 * 4], the counterpart of Inception's spatial features) and the features. */
  featureMaps(x: Tensor): { spatial: Tensor; features: Tensor } {
    let h = F.maxPool2d(F.relu(this.conv1.forward(x)), 2);
    h = F.maxPool2d(F.relu(this.conv2.forward(h)), 2);
    const spatial = F.maxPool2d(F.relu(this.conv3.forward(h)), 2).flatten(1);
    return { spatial, features: F.relu(this.fc1.forward(spatial)) };
  }

  override forward(x: Tensor): Tensor { return this.fc.forward(this.features(x)); }

  /** Features and predicted classes of `images`, 256 at a time. */
  describe(images: Tensor): { features: Tensor; predicted: Tensor } {
    return torch.noGrad(() => torch.scope(() => {
      const features: Tensor[] = [];
      const predicted: Tensor[] = [];
      for (let start = 0; start < images.size(0); start += 256) {
        const f = this.features(images.slice(0, start, start + 256));
        features.push(f);
        predicted.push(this.fc.forward(f).argmax(1));
      }
      return { features: torch.cat(features), predicted: torch.cat(predicted) };
    }));
  }
}

export type ClassifierOptions = SupervisedRunOptions;

export interface ClassifierResult extends SupervisedResult { checkpoint: string; model: FashionClassifier }

export async function trainClassifier(options: ClassifierOptions): Promise<ClassifierResult> {
  torch.manualSeed(options.seed);
  const model = new FashionClassifier();
  const result = await trainSupervised({ ...options, model, label: 'classifier', logits: (images: Tensor) => model.forward(images) });
  const checkpoint = join(options.dir, 'classifier.safetensors');
  saveSafetensors(checkpoint, Object.fromEntries(model.stateDict()));
  return { ...result, checkpoint, model };
}

/**
 * The classifier as the FID network of the eval layer (iFID's `extractor`): uint8 pixels as the
 * ADM batches hold them, read back to [-1, 1] as the demo scores samples; its id hashes the weights.
 */
export function classifierExtractor(model: FashionClassifier): FeatureExtractor {
  const id = `demo-classifier-${nn.stateDictHash(model).slice(0, 16)}`;
  return {
    id,
    device: 'cpu',
    features: (images) => {
      const { spatial, features } = model.featureMaps(images.float().div(127.5).sub(1));
      return { pool3: features, spatial };
    },
    logits: (pool3) => model.fc.forward(pool3),
  };
}
