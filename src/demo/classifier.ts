// The evaluation network of the demo: a small CNN trained on Fashion-MNIST, separate from the
// teacher the VAE is aligned with (scoring samples with the teacher's own features would favour
// the aligned VAE). Its penultimate features play the role Inception's pool_3 plays in the ADM
// evaluator (FID, precision, recall); its predictions say which class a sample looks like.
// The network is src/models/classifier.ts's, at 32 px over the 10 classes.
import { join } from 'node:path';
import * as torch from '../torch/index.js';
import type { Tensor } from '../torch/index.js';
import { saveSafetensors } from '../io/index.js';
import { ImageClassifier } from '../models/classifier.js';
import type { FeatureExtractor } from '../eval/activations.js';
import { classifierExtractor as imageClassifierExtractor } from '../eval/features.js';
import { trainSupervised, type SupervisedResult, type SupervisedRunOptions } from './supervised.js';

/** ImageClassifier on Fashion-MNIST: 3-channel 32 px images, 10 classes, `featureDim` features. */
export class FashionClassifier extends ImageClassifier {
  constructor(featureDim = 128) {
    super({ numClasses: 10, imageSize: 32, featureDim });
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
  return imageClassifierExtractor(model, { name: 'demo-classifier', description: 'the demo\'s Fashion-MNIST classifier (32 px, 10 classes)', device: 'cpu' });
}
