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
// The variants of ReaLS's peers (docs/alignment.md, "Losses and targets"):
// - `patchProj: 'conv3'`: iREPA's projector (arXiv 2512.10794; End2End-Diffusion/iREPA's
//   ProjectionLayer 'conv'), one 3x3 convolution with padding 1 on the latent grid in place of
//   MLP_patch, keys `conv_patch.weight` and `conv_patch.bias`;
// - `clsHead: false`: no MLP_cls at all (patch-only alignment), so no `mlp_cls.*` weights exist;
// - `teacherNorm: 'spatial'`: iREPA's spatial normalisation of the targets (spatialNormalize, teacherNormAlpha);
// - `alignLoss: 'vf'`: VA-VAE's vision-foundation loss (vfLoss) on the patch tokens.
// teacherNorm and alignLoss do not change the modules; they are recorded so that a reader knows
// what the predictions were trained to match.
import { z } from 'zod';
import * as torch from '../torch/index.js';
import type { Tensor } from '../torch/index.js';
import * as nn from '../nn/index.js';
import { SafetensorsFile, loadSafetensors, saveSafetensors } from '../io/safetensors.js';
import type { Dim, OnnxGraph, Value } from '../onnx/graph.js';
import { exportModule } from '../onnx/modules.js';

const F = nn.F;

export type ClsPooling = 'mean' | 'avgpool';
export type PatchProjection = 'mlp' | 'conv3';
export type TeacherNorm = 'none' | 'spatial';
export type AlignLossKind = 'cos' | 'vf';

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
  /** The patch projector: MLP_patch per position ('mlp', default) or iREPA's 3x3 convolution ('conv3'). */
  patchProj: PatchProjection;
  /** Whether MLP_cls exists (default true); false for patch-only alignment. */
  clsHead: boolean;
  /** The patch targets were DINOv2's tokens ('none', default) or spatially normalised ones ('spatial', spatialNormalize). */
  teacherNorm: TeacherNorm;
  /** The share of the spatial mean that 'spatial' subtracts (default 1; iREPA's training scripts default to 0.6 and 0.8). */
  teacherNormAlpha: number;
  /** The patch loss the heads were trained with: ReaLS's cosine ('cos', default) or VA-VAE's ('vf'). */
  alignLoss: AlignLossKind;
}

export const ALIGNMENT_DEFAULTS = {
  hiddenDim: 1024, depth: 3, clsPooling: 'mean', clsPoolSize: 4, patchProj: 'mlp', clsHead: true, teacherNorm: 'none', teacherNormAlpha: 1, alignLoss: 'cos',
} as const;

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
  /** [B, featureDim]; null for heads without MLP_cls (clsHead false). */
  cls: Tensor | null;
}

/**
 * The patch projector and MLP_cls; state-dict keys `mlp_patch.*` (or `conv_patch.*` with patchProj
 * 'conv3') and `mlp_cls.*` (none when clsHead is false).
 */
export class AlignmentHeads extends nn.Module {
  readonly config: AlignmentConfig;
  readonly patchProjector: nn.Sequential | nn.Conv2d;
  readonly mlpCls: nn.Sequential | null;

  constructor(config: Pick<AlignmentConfig, 'latentChannels' | 'featureDim'> & Partial<AlignmentConfig>) {
    super();
    const c: AlignmentConfig = { ...ALIGNMENT_DEFAULTS, ...config };
    for (const field of ['latentChannels', 'featureDim', 'hiddenDim', 'depth', 'clsPoolSize'] as const) {
      if (!Number.isInteger(c[field]) || c[field] < 1) throw new RangeError(`AlignmentHeads: ${field} must be a positive integer, got ${c[field]}`);
    }
    if (!(c.teacherNormAlpha >= 0 && c.teacherNormAlpha <= 1)) throw new RangeError(`AlignmentHeads: teacherNormAlpha must be in [0, 1], got ${c.teacherNormAlpha}`);
    const choices = { clsPooling: ['mean', 'avgpool'], patchProj: ['mlp', 'conv3'], teacherNorm: ['none', 'spatial'], alignLoss: ['cos', 'vf'] } as const;
    for (const [field, allowed] of Object.entries(choices) as [keyof typeof choices, readonly string[]][]) {
      if (!allowed.includes(c[field])) throw new RangeError(`AlignmentHeads: ${field} must be ${allowed.map((a) => `'${a}'`).join(' or ')}, got '${String(c[field])}'`);
    }
    this.config = c;
    this.patchProjector = c.patchProj === 'conv3'
      ? this.addModule('conv_patch', new nn.Conv2d(c.latentChannels, c.featureDim, 3, { padding: 1 }))
      : this.addModule('mlp_patch', buildMlp(c.latentChannels, c.hiddenDim, c.featureDim, c.depth));
    const clsIn = c.clsPooling === 'avgpool' ? c.latentChannels * c.clsPoolSize ** 2 : c.latentChannels;
    this.mlpCls = c.clsHead ? this.addModule('mlp_cls', buildMlp(clsIn, c.hiddenDim, c.featureDim, c.depth)) : null;
  }

  /** Latents [B, C, h, w] → the predicted DINOv2 patch tokens (one per latent position) and CLS token. */
  override forward(z: Tensor): AlignmentFeatures {
    if (z.ndim !== 4 || z.size(1) !== this.config.latentChannels) {
      throw new Error(`AlignmentHeads: expected latents [B, ${this.config.latentChannels}, h, w], got [${z.shape}]`);
    }
    const tokens = z.flatten(2).transpose(1, 2);
    // The conv's map [B, D, h, w] as tokens, contiguous for the losses along D (see resampleTokens).
    const patch = this.patchProjector instanceof nn.Conv2d
      ? this.patchProjector.forward(z).flatten(2).transpose(1, 2).contiguous()
      : this.patchProjector.forward(tokens);
    return { patch, cls: this.mlpCls === null ? null : this.predictCls(this.mlpCls, z, tokens) };
  }

  private predictCls(mlpCls: nn.Sequential, z: Tensor, tokens: Tensor): Tensor {
    if (this.config.clsPooling === 'avgpool') return mlpCls.forward(F.adaptiveAvgPool2d(z, this.config.clsPoolSize).flatten(1));
    // The first Linear and its SiLU per position, the mean over positions, then the rest.
    const layers = [...mlpCls];
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

/**
 * iREPA's spatial normalisation (arXiv 2512.10794, End2End-Diffusion/iREPA `spatial_zscore`) of
 * tokens [B, N, D]: per image and channel, subtract `alpha` times the mean over the N positions and
 * divide by their standard deviation (with Bessel's correction, as torch.std) plus `eps`. With
 * alpha 1 what is left is the tokens' spatial contrast: the global (per-image) component each
 * channel shares across positions is removed.
 */
export function spatialNormalize(tokens: Tensor, alpha = 1, eps = 1e-6): Tensor {
  if (tokens.ndim !== 3 || tokens.size(1) < 2) throw new Error(`spatialNormalize: expected tokens [B, N >= 2, D], got [${tokens.shape}]`);
  const centered = tokens.sub(tokens.mean(1, true).mul(alpha));
  return centered.div(tokens.std(1, { keepdim: true }).add(eps));
}

// --- loss --------------------------------------------------------------------------------------------

/** VA-VAE's vision-foundation loss settings (hustvl/LightningDiT vavae/configs/f16d32_vfdinov2.yaml). */
export interface VfLossOptions {
  /** m1 of the per-token term relu(1 - m1 - cos) (default 0.5, the reference's cos_margin). */
  cosMargin?: number;
  /** m2 of the distance-matrix term relu(|cos_ij(z) - cos_ij(f)| - m2) (default 0.25, distmat_margin). */
  distmatMargin?: number;
  /** Weights of the two terms in their sum (defaults 1 and 1, cos_weight and distmat_weight). */
  cosWeight?: number;
  distmatWeight?: number;
}

export const VF_LOSS_DEFAULTS: Required<VfLossOptions> = { cosMargin: 0.5, distmatMargin: 0.25, cosWeight: 1, distmatWeight: 1 };

export interface VfLoss {
  /** cosWeight * cos + distmatWeight * distmat */
  loss: Tensor;
  /** mean over tokens of relu(1 - cosMargin - cos(prediction, target)) */
  cos: Tensor;
  /** mean over images and position pairs (i, j) of relu(|cos(p_i, p_j) - cos(t_i, t_j)| - distmatMargin) */
  distmat: Tensor;
}

/**
 * VA-VAE's vision-foundation loss (Yao et al. 2025, arXiv 2501.01423, section 3; LightningDiT's
 * vavae/ldm/modules/losses/contperceptual.py) between projected latent tokens and teacher tokens,
 * both [B, N, D]: the margin cosine term per token plus the margin distance-matrix term, which
 * matches the N x N matrices of cosine similarities among the positions of one image.
 */
export function vfLoss(prediction: Tensor, target: Tensor, options: VfLossOptions = {}): VfLoss {
  const o = { ...VF_LOSS_DEFAULTS, ...options };
  if (prediction.ndim !== 3 || prediction.shape.join() !== target.shape.join()) {
    throw new Error(`vfLoss: prediction [${prediction.shape}] and target [${target.shape}] must be the same [B, N, D]`);
  }
  const cos = F.relu(F.cosineSimilarity(prediction, target, -1).rsub(1 - o.cosMargin)).mean();
  const gram = (x: Tensor): Tensor => {
    const unit = F.normalize(x, { dim: -1 });
    return unit.matmul(unit.transpose(1, 2));
  };
  const distmat = F.relu(gram(prediction).sub(gram(target)).abs().sub(o.distmatMargin)).mean();
  return { loss: cos.mul(o.cosWeight).add(distmat.mul(o.distmatWeight)), cos, distmat };
}

export interface AlignmentLossOptions {
  /** The patch term: ReaLS's 1 - cosine ('cos', default) or VA-VAE's vfLoss ('vf'). */
  alignLoss?: AlignLossKind;
  /**
   * Weight of the patch term (default 0.5, REPA's proj_coeff), or a function of the patch term that
   * returns it (an adaptive weight such as VA-VAE's, which needs the term's gradient).
   */
  patchWeight?: number | ((patch: Tensor) => Tensor | number);
  /** Weight of the CLS term (default 0.5). */
  clsWeight?: number;
  /** Weight of smooth-L1 (beta 1) added to each 1 - cosine term (default 0: cosine only). */
  smoothL1Weight?: number;
  /** The vf loss's margins and term weights. */
  vf?: VfLossOptions;
}

export interface AlignmentLoss {
  /** patchWeight * patch + clsWeight * cls */
  loss: Tensor;
  /** The patch term's weight as applied (the adaptive one's value when patchWeight is a function). */
  patchWeight: Tensor | number;
  /** 'cos': mean over tokens of 1 - cos (+ smoothL1Weight * smooth-L1); 'vf': vfLoss's loss */
  patch: Tensor;
  /** The per-token cosine part of `patch`: 1 - cos (+ smooth-L1), or vf's margin cosine term. */
  patchCosTerm: Tensor;
  /** vf's distance-matrix term; null for 'cos'. */
  distmat: Tensor | null;
  /** The CLS term 1 - cos (+ smooth-L1); null without a CLS prediction. */
  cls: Tensor | null;
  /** mean cosine similarity of the patch predictions and targets (detached), for logging */
  patchCosine: Tensor;
  clsCosine: Tensor | null;
}

/**
 * The alignment loss between the heads' predictions and the teacher's tokens (targets shaped like
 * the predictions). A prediction without CLS (clsHead false) takes a target without CLS.
 */
export function alignmentLoss(prediction: AlignmentFeatures, target: AlignmentFeatures, options: AlignmentLossOptions = {}): AlignmentLoss {
  const { alignLoss = 'cos', patchWeight = 0.5, clsWeight = 0.5, smoothL1Weight = 0 } = options;
  const check = (pred: Tensor, tgt: Tensor, what: string): void => {
    if (pred.shape.join() !== tgt.shape.join()) throw new Error(`alignmentLoss: ${what} prediction [${pred.shape}] and target [${tgt.shape}] differ`);
  };
  const cosineTerm = (pred: Tensor, tgt: Tensor, what: string): [Tensor, Tensor] => {
    check(pred, tgt, what);
    const cosine = F.cosineSimilarity(pred, tgt, -1).mean();
    let loss = cosine.rsub(1);
    if (smoothL1Weight !== 0) loss = loss.add(F.smoothL1Loss(pred, tgt).mul(smoothL1Weight));
    return [loss, cosine.detach()];
  };
  if ((prediction.cls === null) !== (target.cls === null)) {
    throw new Error(`alignmentLoss: the prediction has ${prediction.cls === null ? 'no' : 'a'} CLS token and the target ${target.cls === null ? 'none' : 'one'}`);
  }
  let patch: Tensor;
  let patchCosTerm: Tensor;
  let distmat: Tensor | null = null;
  let patchCosine: Tensor;
  if (alignLoss === 'vf') {
    check(prediction.patch, target.patch, 'patch');
    const vf = vfLoss(prediction.patch, target.patch, options.vf);
    ({ loss: patch, cos: patchCosTerm, distmat } = vf);
    patchCosine = torch.noGrad(() => F.cosineSimilarity(prediction.patch, target.patch, -1).mean());
  } else {
    [patch, patchCosine] = cosineTerm(prediction.patch, target.patch, 'patch');
    patchCosTerm = patch;
  }
  const appliedPatchWeight = typeof patchWeight === 'function' ? patchWeight(patch) : patchWeight;
  let loss = patch.mul(appliedPatchWeight);
  let cls: Tensor | null = null;
  let clsCosine: Tensor | null = null;
  if (prediction.cls !== null) {
    [cls, clsCosine] = cosineTerm(prediction.cls, target.cls!, 'cls');
    loss = loss.add(cls.mul(clsWeight));
  }
  return { loss, patchWeight: appliedPatchWeight, patch, patchCosTerm, distmat, cls, patchCosine, clsCosine };
}

// --- file ------------------------------------------------------------------------------------------

const positiveInt = z.number().int().positive();
const alignmentConfigSchema = z.strictObject({
  latentChannels: positiveInt, featureDim: positiveInt, hiddenDim: positiveInt, depth: positiveInt,
  clsPooling: z.enum(['mean', 'avgpool']), clsPoolSize: positiveInt,
  // Files written before these options existed hold the heads they default to.
  patchProj: z.enum(['mlp', 'conv3']).default(ALIGNMENT_DEFAULTS.patchProj), clsHead: z.boolean().default(ALIGNMENT_DEFAULTS.clsHead),
  teacherNorm: z.enum(['none', 'spatial']).default(ALIGNMENT_DEFAULTS.teacherNorm),
  teacherNormAlpha: z.number().min(0).max(1).default(ALIGNMENT_DEFAULTS.teacherNormAlpha), alignLoss: z.enum(['cos', 'vf']).default(ALIGNMENT_DEFAULTS.alignLoss),
});

/** An AlignmentConfig read from outside (a file's metadata); the error names `where` and every bad field. */
export function parseAlignmentConfig(json: unknown, where: string): AlignmentConfig {
  const parsed = alignmentConfigSchema.safeParse(json);
  if (parsed.success) return parsed.data;
  throw new Error(`${where}: invalid AlignmentConfig: ${parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')}`);
}

/**
 * The heads as `align.safetensors` (what `reals align convert` writes beside the VAE): the
 * `mlp_patch.*` (or `conv_patch.*`) and `mlp_cls.*` (if any) weights, and the AlignmentConfig as JSON in the metadata entry
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

/**
 * AlignmentHeads.forward of latents [N, C, h, w] as graph nodes: patch [N, h w, featureDim] and cls
 * [N, featureDim] (null for heads without MLP_cls).
 */
export function alignmentOnnx(heads: AlignmentHeads, g: OnnxGraph, z: Value): { patch: Value; cls: Value | null } {
  const { mlpCls, patchProjector, config } = heads;
  if (mlpCls !== null && config.clsPooling !== 'mean') throw new Error(`ONNX export: AlignmentHeads with clsPooling '${config.clsPooling}' (only 'mean' exports)`);
  const [n, c] = z.shape as [Dim, number];
  const tokens = g.transpose(g.reshape(z, [n, c, -1]), [0, 2, 1]);
  const patch = patchProjector instanceof nn.Conv2d
    ? g.transpose(g.reshape(exportModule(patchProjector, g, [z], 'conv_patch'), [n, config.featureDim, -1]), [0, 2, 1])
    : exportModule(patchProjector, g, [tokens], 'mlp_patch');
  if (mlpCls === null) return { patch, cls: null };
  const layers = [...mlpCls];
  const perPosition = Math.min(2, layers.length);
  let x = tokens;
  layers.slice(0, perPosition).forEach((layer, i) => { x = exportModule(layer, g, [x], `mlp_cls.${i}`); });
  x = g.squeeze(g.reduceMean(x, [1]), 1);
  layers.slice(perPosition).forEach((layer, i) => { x = exportModule(layer, g, [x], `mlp_cls.${perPosition + i}`); });
  return { patch, cls: x };
}
