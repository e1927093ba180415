// What the heads' pipelines (./heads.ts) read out of: the feature source of a latent (the
// alignment MLPs, `--features mlp`, or DINOv2 on the decoded image, `--features dino`, with the
// blocks the released heads were trained on), the head checkpoint that fits it, and the inputs
// (images encoded by the VAE, or latent files).
import { existsSync, readdirSync, statSync } from 'node:fs';
import { basename, extname, join } from 'node:path';
import * as torch from '../torch/index.js';
import type { Tensor } from '../torch/index.js';
import { load, loadNpz } from '../io/index.js';
import { AutoencoderKL } from '../models/autoencoder-kl.js';
import { loadAlignmentHeads, type AlignmentHeads } from '../models/alignment.js';
import { DinoVisionTransformer, preprocessImages, resolveDinoConfig } from '../models/dinov2.js';
import {
  LinearSegmentationHead, buildHead, layerFromTokens, layersRead, readHeadCheckpoint, vocPalette, type DenseHead, type LayerFeatures,
} from '../models/heads.js';
import { IMAGE_EXTENSIONS, loadImageInto } from '../data/index.js';
import { encodePosterior } from '../data/latents.js';


// --- models --------------------------------------------------------------------------------------------

/** Where the heads' features come from. */
export interface FeatureSource {
  /** Names the source in errors. */
  name: string;
  featureDim: number;
  maxLayers?: number;
  /** Whether each layer has a CLS token (alignment MLPs without MLP_cls, as the vf loss trains them, have none). */
  clsToken: boolean;
  /** Whether `layers` reads the decoded image (otherwise only z). */
  readsImage: boolean;
  layers(z: Tensor, decoded: Tensor, head: DenseHead): LayerFeatures[];
}

function mlpSource(mlps: AlignmentHeads): FeatureSource {
  return {
    name: 'the alignment MLPs', featureDim: mlps.config.featureDim, maxLayers: 1, clsToken: mlps.config.clsHead, readsImage: false,
    layers: (z) => {
      const { patch, cls } = mlps.forward(z);
      return [layerFromTokens(patch, cls, [z.size(2), z.size(3)])];
    },
  };
}

/** The latent itself as a feature map (CLS: its mean), for a head on a plain VAE's latents. */
export function latentSource(channels: number): FeatureSource {
  return { name: 'the latents', featureDim: channels, maxLayers: 1, clsToken: true, readsImage: false, layers: (z) => [{ patch: z, cls: z.mean([2, 3]) }] };
}

// dinov2/hub/depthers.py: the blocks the "linear4" depth heads read.
const DEPTH_LINEAR4_BLOCKS: Record<number, number[]> = { 12: [2, 5, 8, 11], 24: [4, 11, 17, 23], 40: [9, 19, 29, 39] };

function dinoSource(dino: DinoVisionTransformer, inputSize: number): FeatureSource {
  const depth = dino.config.depth;
  return {
    name: 'DINOv2', featureDim: dino.config.embedDim, clsToken: true, readsImage: true,
    layers: (_z, decoded, head) => {
      const count = layersRead(head);
      const segmentation = head instanceof LinearSegmentationHead;
      let blocks: number[];
      if (segmentation || count === 1) blocks = Array.from({ length: count }, (_, i) => depth - count + i);
      else if (count === 4 && DEPTH_LINEAR4_BLOCKS[depth] !== undefined) blocks = DEPTH_LINEAR4_BLOCKS[depth]!;
      else throw new Error(`a ${count}-layer depth head has no released block choice for a depth-${depth} DINOv2 (known: ${Object.keys(DEPTH_LINEAR4_BLOCKS).join(', ')} blocks)`);
      const outputs = dino.getIntermediateLayers(preprocessImages(decoded, inputSize), blocks, { reshape: true, returnClassToken: true, norm: segmentation });
      return outputs.map(([patch, cls]) => ({ patch, cls }));
    },
  };
}

interface SourceFlags { features: 'mlp' | 'dino'; alignCkpt?: string; dinoModel: string; dinoCkpt?: string; dinoInputSize: number }

/** Where DINOv2 features come from when they are asked for (`--features dino`, compare), and the precision of the networks. */
export interface DinoSourceSettings {
  /** A DINOV2_CONFIGS name or a .json of DinoV2Config fields. */
  dinoModel: string;
  /** Side the decoded image is resized to for DINOv2 (a multiple of 14). */
  dinoInputSize: number;
  /**
   * The VAE, the alignment MLPs and DINOv2 under bfloat16 autocast ('bf16'), or not ('fp32');
   * 'auto' (default) picks bf16 on bfloat16-capable CPUs. The heads read float32 features.
   */
  precision: torch.Precision;
}

export const DINO_SOURCE_DEFAULTS: DinoSourceSettings = { dinoModel: 'dinov2_vitb14', dinoInputSize: 448, precision: 'auto' };

/** The networks of a readout run on the CPU (the heads' pipelines take no device). */
export const DEVICE = 'cpu';

/** `source`'s features of z (and of its decoded image) computed in `precision`, in float32. */
export function layersIn(precision: torch.ResolvedPrecision, source: FeatureSource, z: Tensor, decoded: Tensor, head: DenseHead): LayerFeatures[] {
  return torch.withPrecision(precision, DEVICE, () => source.layers(z, decoded, head))
    .map(({ patch, cls }) => ({ patch: patch.float(), cls: cls === null ? null : cls.float() }));
}

/** vae.decode(z) in `precision`, in float32. */
export function decodeIn(precision: torch.ResolvedPrecision, vae: AutoencoderKL, z: Tensor): Tensor {
  return torch.withPrecision(precision, DEVICE, () => vae.decode(z)).float();
}

export function featureSource(flags: SourceFlags): FeatureSource {
  if (flags.features === 'mlp') {
    if (flags.alignCkpt === undefined) throw new Error('--features mlp needs --align-ckpt (align.safetensors from reals align convert)');
    if (!existsSync(flags.alignCkpt)) throw new Error(`--align-ckpt ${flags.alignCkpt}: no such file`);
    const mlps = loadAlignmentHeads(flags.alignCkpt);
    if (mlps.config.teacherNorm === 'spatial') {
      console.log(`--align-ckpt ${flags.alignCkpt}: trained on spatially normalised targets (--teacher-norm spatial), so its patch tokens are z-scored per image; ` +
        'DINOv2\'s released heads expect DINOv2\'s own tokens (fit a head on these features with `reals heads train-linear`)');
    }
    return mlpSource(mlps);
  }
  return dinoSource(loadDino(flags), flags.dinoInputSize);
}

function loadDino(flags: SourceFlags): DinoVisionTransformer {
  if (flags.dinoCkpt === undefined) throw new Error('DINOv2 features need --dino-ckpt (and --dino-model)');
  return new DinoVisionTransformer(resolveDinoConfig(flags.dinoModel)).loadCheckpoint(flags.dinoCkpt).eval();
}

export interface HeadFlags { minDepth?: number; maxDepth?: number }

export function loadHead(path: string, source: FeatureSource, flags: HeadFlags): { head: DenseHead; palette: [number, number, number][] } {
  const ckpt = readHeadCheckpoint(path);
  // The hub's KITTI heads are named dinov2_<arch>_kitti_linear[4]_head.pth and predict up to 80 m.
  const kitti = ckpt.task === 'depth' && ckpt.config === null && flags.maxDepth === undefined && basename(path).includes('_kitti_');
  if (kitti) console.log(`${path}: a KITTI depth head, depth range [0.001, 80] (--max-depth to change)`);
  const head = buildHead(ckpt, {
    featureDim: source.featureDim, source: source.name, maxLayers: source.maxLayers,
    minDepth: flags.minDepth, maxDepth: kitti ? 80 : flags.maxDepth,
  });
  const classes = head instanceof LinearSegmentationHead ? head.config.numClasses : 0;
  return { head, palette: ckpt.palette ?? vocPalette(classes) };
}

// --- inputs ----------------------------------------------------------------------------------------------

/** One input: an image file, or one latent of a latent file. */
type Item = { name: string; image: string } | { name: string; latent: Tensor };

const LATENT_EXTENSIONS = ['.npz', '.safetensors'];

/**
 * Image files (folders: their images, sorted) and latent files (.npz / .safetensors from reals
 * sample or cache-latents: the array named `latentsKey`, or the only float array [N, C, h, w]
 * with the VAE's C channels).
 */
export function collectItems(paths: readonly string[], latentChannels: number, latentsKey?: string): Item[] {
  const items: Item[] = [];
  for (const path of paths) {
    if (!existsSync(path)) throw new Error(`${path}: no such file or folder`);
    if (statSync(path).isDirectory()) {
      const files = readdirSync(path).filter((f) => IMAGE_EXTENSIONS.includes(extname(f).toLowerCase())).sort();
      if (files.length === 0) throw new Error(`${path}: a folder with no images (${IMAGE_EXTENSIONS.join(', ')})`);
      for (const f of files) items.push({ name: basename(f, extname(f)), image: join(path, f) });
    } else if (LATENT_EXTENSIONS.includes(extname(path).toLowerCase())) {
      const arrays = (path.endsWith('.npz') ? loadNpz(path) : load(path)) as Record<string, Tensor>;
      const fits = (t: Tensor): boolean => t.ndim === 4 && t.isFloatingPoint() && t.size(1) === latentChannels;
      const candidates = latentsKey !== undefined ? [latentsKey] : Object.keys(arrays).filter((k) => fits(arrays[k]!));
      const describe = Object.entries(arrays).map(([k, t]) => `${k}: ${t.dtype} [${t.shape}]`).join(', ');
      if (candidates.length !== 1 || arrays[candidates[0]!] === undefined || !fits(arrays[candidates[0]!]!)) {
        throw new Error(`${path}: expected ${latentsKey === undefined ? 'one' : `'${latentsKey}' to be a`} float array [N, ${latentChannels}, h, w] ` +
          `(--latents-key picks one); it holds ${describe}`);
      }
      const latents = arrays[candidates[0]!]!.float();
      const stem = basename(path, extname(path));
      for (let i = 0; i < latents.size(0); i++) items.push({ name: `${stem}_${String(i).padStart(4, '0')}`, latent: latents.index(i) });
    } else {
      items.push({ name: basename(path, extname(path)), image: path });
    }
  }
  return items;
}

/** Latents of a batch of items: images ADM-center-cropped to `imageSize` and encoded (posterior mode) in `precision`. */
export async function encodeItems(vae: AutoencoderKL, items: readonly Item[], imageSize: number, latentsNormalized: boolean, precision: torch.ResolvedPrecision): Promise<Tensor> {
  const pixels = new Float32Array(3 * imageSize * imageSize);
  const latents: Tensor[] = [];
  for (const item of items) {
    if ('latent' in item) {
      latents.push(latentsNormalized ? vae.denormalizeLatents(item.latent.unsqueeze(0)) : item.latent.unsqueeze(0));
    } else {
      await loadImageInto(item.image, imageSize, false, pixels, 0);
      const x = torch.fromArray(pixels, [1, 3, imageSize, imageSize]);
      latents.push(torch.noGrad(() => encodePosterior(vae, x, precision).mode()));
    }
  }
  const shapes = new Set(latents.map((z) => z.shape.join('x')));
  if (shapes.size > 1) throw new Error(`latents of different shapes in one batch: ${[...shapes].join(', ')} (${items.map((i) => i.name).join(', ')})`);
  return torch.cat(latents);
}

export function toUint8(images: Tensor): Tensor {
  return images.clamp(-1, 1).add(1).div(2).mul(255).add(0.5).clamp(0, 255).to('uint8');
}
