// The feature networks `reals evaluate` and `reals fid-stats` can score with (`--features`): the
// FID Inception (ADM's five numbers), DINOv2 as dgm-eval computes FD_DINOv2 (Stein et al. 2023:
// the image resized to 224 x 224 by PIL's bicubic, ImageNet mean/std, the final norm's CLS token
// of ViT-L/14), and the networks a user trains offline: a `reals teacher train` backbone (its CLS
// token at its own input size) or a `reals classifier train` classifier (its penultimate features
// and logits). Only the FID Inception gives an Inception Score; a classifier gives the same formula
// over its own classes as `classifierScore`, DINOv2 and a teacher no score over classes (no
// logits). Only Inception and the classifier give spatial features (sFID). Every extractor's id names the network and hashes its weights.
import { existsSync } from 'node:fs';
import * as torch from '../torch/index.js';
import type { Device, Tensor } from '../torch/index.js';
import { stateDictHash } from '../nn/module.js';
import { SafetensorsFile } from '../io/index.js';
import { DINOV2_CONFIGS, DinoVisionTransformer, preprocessImages, type DinoV2Config } from '../models/dinov2.js';
import { CLASSIFIER_METADATA_KEY, ImageClassifier } from '../models/classifier.js';
import { resize } from '../data/resample.js';
import { fetchDinov2Checkpoint } from '../hub/index.js';
import type { FeatureExtractor } from './activations.js';
import { fidInceptionExtractor } from './evaluate.js';

/** dgm-eval's DINOv2 input side (DINOv2Encoder.transform: Resize((224, 224), BICUBIC)). */
export const DGM_EVAL_DINOV2_INPUT = 224;
/** dgm-eval's default DINOv2 (arch vitl14), the FD_DINOv2 of recent papers. */
export const DEFAULT_FEATURES_DINO_MODEL = 'dinov2_vitl14';
/** The named feature networks of --features; anything else is a checkpoint file. */
export const FEATURE_NETWORKS = ['inception', 'dinov2'] as const;

/**
 * uint8 images [B, 3, H, W] resized to `size`² by PIL's bicubic (src/data/resample.ts, pixel for
 * pixel; as torchvision's Resize on PIL images), uint8 [B, 3, size, size] on the CPU; images of
 * that size already are returned as they are.
 */
export function resizeImagesPil(images: Tensor, size: number): Tensor {
  const [n, channels, height, width] = images.shape as [number, number, number, number];
  if (height === size && width === size) return images;
  const hwc = images.permute(0, 2, 3, 1).contiguous().cpu();
  const pixels = hwc.toArray() as Uint8Array;
  hwc.dispose();
  const per = height * width * channels;
  const out = new Uint8Array(n * size * size * channels);
  for (let i = 0; i < n; i++) {
    const resized = resize({ data: pixels.subarray(i * per, (i + 1) * per), width, height, channels }, size, size, 'bicubic');
    out.set(resized.data, i * size * size * channels);
  }
  return torch.scope(() => torch.fromArray(out, [n, size, size, channels], 'uint8').permute(0, 3, 1, 2).contiguous());
}

/**
 * A DINOv2-architecture network as a FeatureExtractor: images resized to `inputSize` (PIL bicubic),
 * scaled to [0, 1], normalized by the ImageNet mean and std, and the final norm's CLS token
 * (dgm-eval's DINOv2Encoder with clean_resize off). No spatial features, no logits.
 */
export function dinov2Extractor(model: DinoVisionTransformer, options: { name: string; inputSize: number; description: string; device?: Device }): FeatureExtractor {
  const { name, inputSize, device = 'cpu' } = options;
  if (inputSize % model.config.patchSize !== 0) throw new Error(`${name}: input size ${inputSize} is not a multiple of the patch size ${model.config.patchSize}`);
  const onDevice = model.to(device).eval();
  return {
    id: `${name}-${stateDictHash(model).slice(0, 16)}`,
    description: options.description,
    device,
    // preprocessImages takes [-1, 1]; at inputSize its bicubic resize is the identity.
    features: (images) => ({ pool3: onDevice.forward(preprocessImages(resizeImagesPil(images, inputSize).to(device).float().div(127.5).sub(1), inputSize)) }),
  };
}

/**
 * A classifier of `reals classifier train` as a FeatureExtractor: images resized to its side (PIL
 * bicubic) and read to [-1, 1] as it was trained; its penultimate features are the pooled ones,
 * its last conv block's map the spatial ones, its class layer gives the logits (the Classifier Score:
 * the Inception Score's formula over its classes).
 */
export function classifierExtractor(model: ImageClassifier, options: { name?: string; description: string; device?: Device }): FeatureExtractor {
  const { name = 'classifier', device = 'cpu' } = options;
  const onDevice = model.to(device).eval();
  const side = model.config.imageSize;
  return {
    id: `${name}-${stateDictHash(model).slice(0, 16)}`,
    description: options.description,
    device,
    features: (images) => {
      const { spatial, features } = onDevice.featureMaps(resizeImagesPil(images, side).to(device).float().div(127.5).sub(1));
      return { pool3: features, spatial };
    },
    logits: (pool3) => onDevice.fc.forward(pool3),
  };
}

export interface FeatureNetworkOptions {
  /** inception (default), dinov2, or a checkpoint of `reals classifier train` or `reals teacher train`. */
  features?: string;
  /** The FID Inception's weights (default $REALS_INCEPTION_WEIGHTS, else the torch hub cache). */
  inceptionWeights?: string;
  /** The DINOv2 of --features dinov2 (default dinov2_vitl14). */
  dinoModel?: string;
  /** Its weights (default the torch-hub checkpoint, fetched into its cache unless offline). */
  dinoCkpt?: string;
  device?: string;
  offline?: boolean;
}

/** A checkpoint file's feature network: a classifier (its metadata's `classifier`) or a teacher backbone (its metadata's DinoV2Config). */
function checkpointExtractor(path: string, device: Device): FeatureExtractor {
  if (!existsSync(path)) throw new Error(`--features ${path}: not ${FEATURE_NETWORKS.join(' or ')}, and no such file`);
  const metadata = (() => {
    const file = SafetensorsFile.open(path);
    try {
      return file.metadata;
    } finally {
      file.close();
    }
  })();
  if (metadata[CLASSIFIER_METADATA_KEY] !== undefined) {
    const { model, classes } = ImageClassifier.load(path);
    return classifierExtractor(model, {
      device, description: `the classifier ${path} (${classes.length} classes, ${model.config.imageSize} px): penultimate ${model.config.featureDim}-wide features, its conv map as sFID's, its logits for the Classifier Score (IS's formula over its classes)`,
    });
  }
  if (metadata.config === undefined) {
    throw new Error(`--features ${path}: neither a classifier of reals classifier train (no "${CLASSIFIER_METADATA_KEY}" metadata) nor a teacher backbone of reals teacher train ` +
      '(no "config" metadata; give the backbone its done: line names, not a training checkpoint)');
  }
  const config: DinoV2Config = { ...DINOV2_CONFIGS.dinov2_vits14!, ...(JSON.parse(metadata.config) as Partial<DinoV2Config>) };
  const model = new DinoVisionTransformer(config).loadCheckpoint(path);
  return dinov2Extractor(model, {
    name: 'teacher', inputSize: config.imgSize, device,
    description: `the teacher ${path} (ViT ${config.embedDim}-wide, depth ${config.depth}, patch ${config.patchSize}): the final norm's CLS token at ${config.imgSize} px; no class logits (no score over classes), no spatial features (no sFID)`,
  });
}

/** The feature network `options.features` names, on `options.device` (default: cuda when available). */
export async function featureExtractor(options: FeatureNetworkOptions = {}): Promise<FeatureExtractor> {
  const { features = 'inception' } = options;
  const unused = [
    features !== 'inception' && options.inceptionWeights !== undefined ? '--inception-weights' : null,
    features !== 'dinov2' && options.dinoModel !== undefined ? '--dino-model' : null,
    features !== 'dinov2' && options.dinoCkpt !== undefined ? '--dino-ckpt' : null,
  ].filter((flag) => flag !== null);
  if (unused.length > 0) throw new Error(`${unused.join(', ')}: not used by --features ${features}`);
  torch.checkDevice(options.device);
  const device = options.device ?? (torch.cuda.isAvailable() ? 'cuda' : 'cpu');
  if (features === 'inception') return fidInceptionExtractor({ ...options, device });
  if (features === 'dinov2') {
    const name = options.dinoModel ?? DEFAULT_FEATURES_DINO_MODEL;
    const config = DINOV2_CONFIGS[name];
    if (config === undefined) throw new Error(`--dino-model ${name}: not one of ${Object.keys(DINOV2_CONFIGS).join(', ')}`);
    const weights = options.dinoCkpt ?? await fetchDinov2Checkpoint(name, { offline: options.offline });
    return dinov2Extractor(new DinoVisionTransformer(config).loadCheckpoint(weights), {
      name, inputSize: DGM_EVAL_DINOV2_INPUT, device,
      description: `DINOv2 ${name} as dgm-eval's FD_DINOv2: ${DGM_EVAL_DINOV2_INPUT} px PIL bicubic, ImageNet mean/std, the final norm's CLS token; no class logits (no score over classes), no spatial features (no sFID)`,
    });
  }
  return checkpointExtractor(features, device);
}
