// The alignment heads of ReaLS (Xu et al. 2025, arXiv 2502.00359, DESIGN.md section 1): MLP_patch
// maps the latent at each position to the DINOv2 patch token of that position, MLP_cls maps a
// pooled latent to the DINOv2 CLS token, and the alignment loss pulls both predictions towards the
// frozen DINOv2 features. ReaLS publishes no code, so the choices are ours and stated here:
// - each MLP is REPA's projector (build_mlp in REPA's models/sit.py: Linear, SiLU, Linear, SiLU,
//   Linear as an nn.Sequential, keys `mlp_patch.0.weight`, `mlp_patch.2.weight`, ...), with a
//   configurable number of Linear layers and a hidden width of 1024 instead of REPA's 2048: REPA
//   projects 1152-wide transformer states, we project 4 latent channels;
// - MLP_patch runs on every latent position (a 1x1 convolution in effect), in the row-major order
//   of DINOv2's patch tokens;
// - MLP_cls pools after its first layer by default ('mean': the first Linear and SiLU run on every
//   position, their outputs are averaged, the other layers run on the average). Averaging the raw
//   latent first would leave MLP_cls 4 numbers to predict a 768-wide token from; averaging hidden
//   features is a DeepSets-style set function that sees every position and works at any latent
//   size with the same weights. 'avgpool' (adaptive average pooling of the latent to k x k,
//   flattened) is the alternative that keeps the coarse layout;
// - the loss per token is 1 - cosine similarity (REPA's negative cosine, shifted to be >= 0), with
//   an optional smooth-L1 term, averaged over tokens; patch and CLS terms have their own weights.
import { z } from 'zod';
import * as torch from '../torch/index.js';
import type { Tensor } from '../torch/index.js';
import * as nn from '../nn/index.js';
import { SafetensorsFile, loadSafetensors, saveSafetensors } from '../io/safetensors.js';
import type { Dim, OnnxGraph, Value } from '../onnx/graph.js';
import { exportModule } from '../onnx/modules.js';

const F = nn.F;

export type ClsPooling = 'mean' | 'avgpool';

export interface AlignmentConfig {
  /** Channels of the latent: the VAE's latentChannels. */
  latentChannels: number;
  /** Width of the DINOv2 tokens: its embedDim (384 ViT-S, 768 ViT-B, 1024 ViT-L, 1536 ViT-g). */
  featureDim: number;
  /** Width of the hidden layers (default 1024). */
  hiddenDim: number;
  /** Linear layers per MLP, with SiLU between them (default 3, REPA's projector). */
  depth: number;
  /** How MLP_cls pools the latent (default 'mean'; see the file comment). */
  clsPooling: ClsPooling;
  /** 'avgpool' pools the latent to clsPoolSize x clsPoolSize (default 4). */
  clsPoolSize: number;
}

export const ALIGNMENT_DEFAULTS = { hiddenDim: 1024, depth: 3, clsPooling: 'mean', clsPoolSize: 4 } as const;

/** Linear(in, hidden), SiLU, ..., Linear(hidden, out): `depth` Linear layers (REPA's build_mlp for depth 3). */
export function buildMlp(inFeatures: number, hiddenFeatures: number, outFeatures: number, depth: number): nn.Sequential {
  const layers: nn.Module[] = [];
  for (let i = 0; i < depth; i++) {
    if (i > 0) layers.push(new nn.SiLU());
    layers.push(new nn.Linear(i === 0 ? inFeatures : hiddenFeatures, i === depth - 1 ? outFeatures : hiddenFeatures));
  }
  return new nn.Sequential(...layers);
}

/** What the heads predict from a latent [B, C, h, w]. */
export interface AlignmentFeatures {
  /** [B, h*w, featureDim], row-major over the latent grid as DINOv2's patch tokens. */
  patch: Tensor;
  /** [B, featureDim] */
  cls: Tensor;
}

/** MLP_patch and MLP_cls; state-dict keys `mlp_patch.*` and `mlp_cls.*`. */
export class AlignmentHeads extends nn.Module {
  readonly config: AlignmentConfig;
  readonly mlpPatch: nn.Sequential;
  readonly mlpCls: nn.Sequential;

  constructor(config: Pick<AlignmentConfig, 'latentChannels' | 'featureDim'> & Partial<AlignmentConfig>) {
    super();
    const c: AlignmentConfig = { ...ALIGNMENT_DEFAULTS, ...config };
    for (const field of ['latentChannels', 'featureDim', 'hiddenDim', 'depth', 'clsPoolSize'] as const) {
      if (!Number.isInteger(c[field]) || c[field] < 1) throw new RangeError(`AlignmentHeads: ${field} must be a positive integer, got ${c[field]}`);
    }
    if (c.clsPooling !== 'mean' && c.clsPooling !== 'avgpool') {
      throw new RangeError(`AlignmentHeads: clsPooling must be 'mean' or 'avgpool', got '${String(c.clsPooling)}'`);
    }
    this.config = c;
    this.mlpPatch = this.addModule('mlp_patch', buildMlp(c.latentChannels, c.hiddenDim, c.featureDim, c.depth));
    const clsIn = c.clsPooling === 'avgpool' ? c.latentChannels * c.clsPoolSize ** 2 : c.latentChannels;
    this.mlpCls = this.addModule('mlp_cls', buildMlp(clsIn, c.hiddenDim, c.featureDim, c.depth));
  }

  /** Latents [B, C, h, w] → the predicted DINOv2 patch tokens (one per latent position) and CLS token. */
  override forward(z: Tensor): AlignmentFeatures {
    if (z.ndim !== 4 || z.size(1) !== this.config.latentChannels) {
      throw new Error(`AlignmentHeads: expected latents [B, ${this.config.latentChannels}, h, w], got [${z.shape}]`);
    }
    const tokens = z.flatten(2).transpose(1, 2);
    return { patch: this.mlpPatch.forward(tokens), cls: this.predictCls(z, tokens) };
  }

  private predictCls(z: Tensor, tokens: Tensor): Tensor {
    if (this.config.clsPooling === 'avgpool') return this.mlpCls.forward(F.adaptiveAvgPool2d(z, this.config.clsPoolSize).flatten(1));
    // The first Linear and its SiLU per position, the mean over positions, then the rest.
    const layers = [...this.mlpCls];
    const perPosition = Math.min(2, layers.length);
    let x = tokens;
    for (const layer of layers.slice(0, perPosition)) x = layer.forward(x) as Tensor;
    x = x.mean(1);
    for (const layer of layers.slice(perPosition)) x = layer.forward(x) as Tensor;
    return x;
  }
}

// --- targets ---------------------------------------------------------------------------------------

/**
 * DINOv2 patch tokens [B, from_h*from_w, D] resampled to the latent grid: [B, to_h*to_w, D]. When
 * both sides shrink, each target is the average of the tokens its cell covers (adaptive average
 * pooling, i.e. area interpolation); otherwise bilinear interpolation of the token map
 * (align_corners=False). Equal grids return the tokens unchanged. The result is contiguous: the
 * loss's cosine similarity over D on a transposed view took twice as long, forward and backward
 * (23 against 12 ms for [4, 1024, 384] on one CPU thread; the copy takes 2).
 */
export function resampleTokens(tokens: Tensor, from: [number, number], to: [number, number]): Tensor {
  const [B, N, D] = tokens.shape as [number, number, number];
  if (tokens.ndim !== 3 || N !== from[0] * from[1]) {
    throw new Error(`resampleTokens: expected tokens [B, ${from[0]}*${from[1]}, D], got [${tokens.shape}]`);
  }
  if (from[0] === to[0] && from[1] === to[1]) return tokens;
  const map = tokens.transpose(1, 2).reshape(B, D, from[0], from[1]);
  const shrinking = to[0] <= from[0] && to[1] <= from[1];
  const resized = shrinking ? F.adaptiveAvgPool2d(map, to) : F.interpolate(map, { size: to, mode: 'bilinear', alignCorners: false });
  return resized.flatten(2).transpose(1, 2).contiguous();
}

/** The one-line notice a trainer logs when the grids differ, or null when they agree. */
export function resampleNotice(from: [number, number], to: [number, number]): string | null {
  if (from[0] === to[0] && from[1] === to[1]) return null;
  const how = to[0] <= from[0] && to[1] <= from[1] ? 'area-averaged' : 'bilinearly interpolated';
  return `alignment: the DINOv2 token grid ${from[0]}x${from[1]} differs from the latent grid ${to[0]}x${to[1]}; patch tokens are ${how} to ${to[0]}x${to[1]}`;
}

// --- loss --------------------------------------------------------------------------------------------

export interface AlignmentLossOptions {
  /** Weight of the patch term (default 0.5, REPA's proj_coeff). */
  patchWeight?: number;
  /** Weight of the CLS term (default 0.5). */
  clsWeight?: number;
  /** Weight of smooth-L1 (beta 1) added to each term's 1 - cosine (default 0: cosine only). */
  smoothL1Weight?: number;
}

export interface AlignmentLoss {
  /** patchWeight * patch + clsWeight * cls */
  loss: Tensor;
  /** mean over tokens of 1 - cos (+ smoothL1Weight * smooth-L1) for the patch tokens */
  patch: Tensor;
  cls: Tensor;
  /** mean cosine similarity of the patch predictions and targets (detached), for logging */
  patchCosine: Tensor;
  clsCosine: Tensor;
}

/** The alignment loss between the heads' predictions and DINOv2's tokens (targets shaped like the predictions). */
export function alignmentLoss(prediction: AlignmentFeatures, target: AlignmentFeatures, options: AlignmentLossOptions = {}): AlignmentLoss {
  const { patchWeight = 0.5, clsWeight = 0.5, smoothL1Weight = 0 } = options;
  const term = (pred: Tensor, tgt: Tensor, what: string): [Tensor, Tensor] => {
    if (pred.shape.join() !== tgt.shape.join()) throw new Error(`alignmentLoss: ${what} prediction [${pred.shape}] and target [${tgt.shape}] differ`);
    const cosine = F.cosineSimilarity(pred, tgt, -1).mean();
    let loss = cosine.rsub(1);
    if (smoothL1Weight !== 0) loss = loss.add(F.smoothL1Loss(pred, tgt).mul(smoothL1Weight));
    return [loss, cosine.detach()];
  };
  const [patch, patchCosine] = term(prediction.patch, target.patch, 'patch');
  const [cls, clsCosine] = term(prediction.cls, target.cls, 'cls');
  return { loss: patch.mul(patchWeight).add(cls.mul(clsWeight)), patch, cls, patchCosine, clsCosine };
}

// --- file ------------------------------------------------------------------------------------------

const positiveInt = z.number().int().positive();
const alignmentConfigSchema = z.strictObject({
  latentChannels: positiveInt, featureDim: positiveInt, hiddenDim: positiveInt, depth: positiveInt,
  clsPooling: z.enum(['mean', 'avgpool']), clsPoolSize: positiveInt,
});

/** An AlignmentConfig read from outside (a file's metadata); the error names `where` and every bad field. */
export function parseAlignmentConfig(json: unknown, where: string): AlignmentConfig {
  const parsed = alignmentConfigSchema.safeParse(json);
  if (parsed.success) return parsed.data;
  throw new Error(`${where}: invalid AlignmentConfig: ${parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')}`);
}

/**
 * The heads as `align.safetensors` (what `reals align convert` writes beside the VAE): the
 * `mlp_patch.*` and `mlp_cls.*` weights, and the AlignmentConfig as JSON in the metadata entry
 * `config`, so that loadAlignmentHeads rebuilds them from the file alone.
 */
export function saveAlignmentHeads(path: string, heads: AlignmentHeads): void {
  torch.scope(() => saveSafetensors(path, Object.fromEntries(heads.stateDict()), { format: 'pt', config: JSON.stringify(heads.config) }));
}

/** Reads a file of saveAlignmentHeads; the heads come back in eval mode, on `device` when given. */
export function loadAlignmentHeads(path: string, options: { device?: torch.Device } = {}): AlignmentHeads {
  const file = SafetensorsFile.open(path);
  file.close();
  const text = file.metadata.config;
  if (text === undefined) throw new Error(`loadAlignmentHeads(${path}): no "config" metadata entry (not a file written by saveAlignmentHeads?)`);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new Error(`loadAlignmentHeads(${path}): metadata "config" is not JSON: ${text.slice(0, 80)}`);
  }
  const heads = new AlignmentHeads(parseAlignmentConfig(json, `loadAlignmentHeads(${path}) metadata "config"`));
  torch.scope(() => {
    try {
      heads.loadStateDict(loadSafetensors(path));
    } catch (error) {
      throw new Error(`loadAlignmentHeads(${path}): ${(error as Error).message}`, { cause: error });
    }
  });
  if (options.device !== undefined) heads.to(options.device);
  return heads.eval();
}

// --- ONNX export (src/onnx) ----------------------------------------------------------------------

/** AlignmentHeads.forward of latents [N, C, h, w] as graph nodes: patch [N, h w, featureDim] and cls [N, featureDim]. */
export function alignmentOnnx(heads: AlignmentHeads, g: OnnxGraph, z: Value): { patch: Value; cls: Value } {
  if (heads.config.clsPooling !== 'mean') throw new Error(`ONNX export: AlignmentHeads with clsPooling '${heads.config.clsPooling}' (only 'mean' exports)`);
  const [n, c] = z.shape as [Dim, number];
  const tokens = g.transpose(g.reshape(z, [n, c, -1]), [0, 2, 1]);
  const patch = exportModule(heads.mlpPatch, g, [tokens], 'mlp_patch');
  const layers = [...heads.mlpCls];
  const perPosition = Math.min(2, layers.length);
  let x = tokens;
  layers.slice(0, perPosition).forEach((layer, i) => { x = exportModule(layer, g, [x], `mlp_cls.${i}`); });
  x = g.squeeze(g.reduceMean(x, [1]), 1);
  layers.slice(perPosition).forEach((layer, i) => { x = exportModule(layer, g, [x], `mlp_cls.${perPosition + i}`); });
  return { patch, cls: x };
}
