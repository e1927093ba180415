// A small image classifier whose penultimate features score samples where no Inception weights
// are at hand (`reals classifier train`, `reals evaluate --features <checkpoint>`) and in the demo
// (Fashion-MNIST): conv-ReLU-pool three times, Linear-ReLU to the features, Linear to the classes.
// Its checkpoint is one safetensors file: the state dict and the config and class names in its metadata.
import * as torch from '../torch/index.js';
import type { Tensor } from '../torch/index.js';
import * as nn from '../nn/index.js';
import { SafetensorsFile, loadSafetensors, saveSafetensors } from '../io/index.js';

const F = torch.nnFunctional;

export interface ImageClassifierConfig {
  numClasses: number;
  /** Side of the square images it takes; a multiple of 8 (three 2x poolings). */
  imageSize: number;
  /** Width of the features (the Linear-ReLU before the class layer). */
  featureDim: number;
}

/** The metadata key of a classifier checkpoint that holds its config and class names. */
export const CLASSIFIER_METADATA_KEY = 'classifier';

/** conv-ReLU-pool x3 (side / 8 pixels left), flattened, Linear-ReLU to `featureDim` features, Linear to the classes. */
export class ImageClassifier extends nn.Module {
  readonly conv1: nn.Conv2d;
  readonly conv2: nn.Conv2d;
  readonly conv3: nn.Conv2d;
  readonly fc1: nn.Linear;
  readonly fc: nn.Linear;

  constructor(readonly config: ImageClassifierConfig) {
    super();
    const { numClasses, imageSize, featureDim } = config;
    if (!(Number.isInteger(imageSize) && imageSize >= 8 && imageSize % 8 === 0)) throw new Error(`ImageClassifier: imageSize ${imageSize} must be a positive multiple of 8`);
    if (!(Number.isInteger(numClasses) && numClasses >= 2)) throw new Error(`ImageClassifier: numClasses ${numClasses} must be an integer of at least 2`);
    const side = imageSize / 8;
    this.conv1 = this.addModule('conv1', new nn.Conv2d(3, 32, 3, { padding: 1 }));
    this.conv2 = this.addModule('conv2', new nn.Conv2d(32, 64, 3, { padding: 1 }));
    this.conv3 = this.addModule('conv3', new nn.Conv2d(64, 64, 3, { padding: 1 }));
    this.fc1 = this.addModule('fc1', new nn.Linear(64 * side * side, featureDim));
    this.fc = this.addModule('fc', new nn.Linear(featureDim, numClasses));
  }

  /** Images [B, 3, imageSize, imageSize] in [-1, 1] to features [B, featureDim]. */
  features(x: Tensor): Tensor {
    return this.featureMaps(x).features;
  }

  /** The last conv block's pooled map flattened ([B, 64 * (imageSize / 8)²], the counterpart of Inception's spatial features) and the features. */
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

  /** Writes the weights with the config and `classes` (folder names, in label order) in the metadata. */
  save(path: string, classes: readonly string[], extra: Record<string, string> = {}): void {
    torch.scope(() => {
      const weights = Object.fromEntries([...this.stateDict()].map(([k, t]) => [k, t.cpu()]));
      saveSafetensors(path, weights, { ...extra, [CLASSIFIER_METADATA_KEY]: JSON.stringify({ ...this.config, classes }) });
    });
  }

  /** A classifier written by `save`; an error names the file when it holds none. */
  static load(path: string): { model: ImageClassifier; classes: string[] } {
    const file = SafetensorsFile.open(path);
    let recorded: (ImageClassifierConfig & { classes: string[] }) | undefined;
    try {
      const text = file.metadata[CLASSIFIER_METADATA_KEY];
      if (text === undefined) throw new Error(`${path}: no "${CLASSIFIER_METADATA_KEY}" metadata; not a checkpoint of reals classifier train`);
      recorded = JSON.parse(text) as ImageClassifierConfig & { classes: string[] };
    } finally {
      file.close();
    }
    const { classes, ...config } = recorded;
    const model = new ImageClassifier(config);
    const weights = loadSafetensors(path);
    try {
      model.loadStateDict(weights);
    } catch (error) {
      throw new Error(`${path}: ${(error as Error).message}`, { cause: error });
    } finally {
      for (const t of Object.values(weights)) t.dispose();
    }
    return { model: model.eval(), classes };
  }
}
