// DINOv2's linear dense heads (facebookresearch/dinov2), reading features from any source: DINOv2
// itself, or the alignment MLPs of a ReaLS latent (DESIGN.md section 1).
// - Segmentation: dinov2/eval/segmentation/models/decode_heads/linear_head.py, `BNHead` over mmseg's
//   BaseDecodeHead: the inputs are flattened ((patch, CLS) pairs become two inputs, a (B, D) CLS a
//   1x1 map), the `inIndex` ones are optionally rescaled by `resizeFactors`, resized bilinearly to
//   the first one's grid, concatenated, batch-normalized (`bn`, SyncBN in training) and classified
//   by the 1x1 `conv_seg`. The released ADE20K / VOC2012 "linear" heads read the last of the four
//   layers the configs take (out_indices [8, 9, 10, 11] for ViT-S/B), "ms" heads all four, patch
//   tokens only and after the final LayerNorm (the notebook calls get_intermediate_layers with
//   reshape=True and the defaults return_class_token=False, norm=True).
// - Depth: dinov2/hub/depth/decode_heads.py, `BNHead` over DepthBaseDecodeHead: each layer's CLS is
//   broadcast over its patch map and concatenated to it, the layers are resized to `upsample` times
//   the first grid and concatenated, the 1x1 `conv_depth` gives logits over `nBins` depth bins
//   (UD: linspace(min, max); SID: logspace(min, max), base 10, exactly as upstream), normalized
//   ('linear': relu + 0.1, then divided by the sum) into weights of the bin centres. Upstream's depth
//   BNHead has no BatchNorm (its `self.bn` is commented out), so neither has this one. The hub heads
//   read layers without the final norm (norm=False) with the CLS token: "linear" the last block,
//   "linear4" blocks [2, 5, 8, 11] (ViT-S/B). NYU heads use depths [0.001, 10], KITTI [0.001, 80]
//   (hub/depthers.py: the DPT depther's ranges; its linear depther passes 10 for both datasets).
// - Encoder-decoder glue as mmseg's EncoderDecoder.encode_decode and the hub's DepthEncoderDecoder:
//   logits / depth resized to the image bilinearly (align_corners false), depth clamped first.
// Checkpoints: the released `.pth` files are mmcv checkpoints ({meta, state_dict}) whose head keys
// start with `decode_head.` (decode_head.bn.weight, .running_mean, decode_head.conv_seg.weight,
// decode_head.conv_depth.weight, ...); heads fitted here are safetensors files with the same keys
// and their config in the metadata.
// One file past 500 lines, as STYLE's rule for models: the heads, their loaders and their fitting read top to bottom.
import { z } from 'zod';
import * as torch from '../torch/index.js';
import type { Tensor } from '../torch/index.js';
import * as nn from '../nn/index.js';
import * as optim from '../optim/index.js';
import { load, SafetensorsFile, saveSafetensors } from '../io/index.js';
import type { Dim, OnnxGraph, Value } from '../onnx/graph.js';
import { exportModule } from '../onnx/modules.js';

const F = nn.F;

/** One backbone layer: its patch tokens as a map and (where the source has it) its CLS token. */
export interface LayerFeatures {
  /** [B, D, h, w] */
  patch: Tensor;
  /** [B, D] */
  cls: Tensor | null;
}

/** Patch tokens [B, h*w, D] in row-major grid order (DINOv2's, and MLP_patch's) and CLS [B, D] as a layer. */
export function layerFromTokens(patch: Tensor, cls: Tensor | null, grid: [number, number]): LayerFeatures {
  const [B, N, D] = patch.shape as [number, number, number];
  if (patch.ndim !== 3 || N !== grid[0] * grid[1]) {
    throw new Error(`layerFromTokens: expected patch tokens [B, ${grid[0]}*${grid[1]}, D], got [${patch.shape}]`);
  }
  if (cls !== null && (cls.ndim !== 2 || cls.size(0) !== B || cls.size(1) !== D)) {
    throw new Error(`layerFromTokens: expected a CLS token [${B}, ${D}], got [${cls.shape}]`);
  }
  return { patch: patch.transpose(1, 2).reshape(B, D, grid[0], grid[1]), cls };
}

function describeLayers(layers: readonly LayerFeatures[]): string {
  return layers.map((l) => `(patch [${l.patch.shape}], cls ${l.cls === null ? 'none' : `[${l.cls.shape}]`})`).join(', ');
}

function checkLayers(what: string, layers: readonly LayerFeatures[], clsToken: boolean): void {
  for (const layer of layers) {
    if (layer.patch.ndim !== 4) throw new Error(`${what}: expected patch maps [B, D, h, w], got ${describeLayers(layers)}`);
    if (clsToken && layer.cls === null) throw new Error(`${what}: reads (patch, CLS) pairs, but a layer has no CLS token: ${describeLayers(layers)}`);
  }
}

// --- segmentation ------------------------------------------------------------------------------------

export interface SegmentationHeadConfig {
  /** Channels of each input the head reads (mmseg in_channels); their sum is the BatchNorm width. */
  inChannels: number[];
  /** Which of the flattened inputs (per layer: the patch map, then the CLS token when `clsToken`) the head reads. */
  inIndex: number[];
  /** Whether the backbone hands over (patch, CLS) pairs (get_intermediate_layers' return_class_token). */
  clsToken: boolean;
  numClasses: number;
  /** Per read input: a scale applied before the concatenation (>= 1 bilinear, < 1 area); null: none. */
  resizeFactors: number[] | null;
}

/** mmseg's default BatchNorm (SyncBN in training) and a 1x1 classifier: keys bn.* and conv_seg.*. */
export class LinearSegmentationHead extends nn.Module {
  readonly config: SegmentationHeadConfig;
  readonly channels: number;
  readonly bn: nn.BatchNorm2d;
  readonly convSeg: nn.Conv2d;

  constructor(config: Omit<SegmentationHeadConfig, 'resizeFactors'> & { resizeFactors?: number[] | null }) {
    super();
    this.config = { resizeFactors: null, ...config };
    const { inChannels, inIndex, resizeFactors, numClasses } = this.config;
    if (inChannels.length !== inIndex.length || inIndex.length === 0) {
      throw new Error(`LinearSegmentationHead: inChannels [${inChannels}] and inIndex [${inIndex}] must be non-empty and of one length`);
    }
    if (resizeFactors !== null && resizeFactors.length !== inIndex.length) {
      throw new Error(`LinearSegmentationHead: resizeFactors [${resizeFactors}] needs one factor per input of inIndex [${inIndex}]`);
    }
    if (!Number.isInteger(numClasses) || numClasses < 1) throw new RangeError(`LinearSegmentationHead: numClasses must be a positive integer, got ${numClasses}`);
    this.channels = inChannels.reduce((a, b) => a + b, 0);
    this.bn = this.addModule('bn', new nn.BatchNorm2d(this.channels));
    this.convSeg = this.addModule('conv_seg', new nn.Conv2d(this.channels, numClasses, 1));
    // mmseg's BaseDecodeHead.init_weights: normal_init(conv_seg, mean=0, std=0.01, bias=0).
    torch.noGrad(() => {
      nn.init.normal_(this.convSeg.weight, 0, 0.01);
      nn.init.zeros_(this.convSeg.bias!);
    });
  }

  /** BNHead._transform_inputs with input_transform 'resize_concat': [B, channels, h, w]. */
  transformInputs(layers: readonly LayerFeatures[]): Tensor {
    const { inIndex, inChannels, resizeFactors, clsToken } = this.config;
    checkLayers('LinearSegmentationHead', layers, clsToken);
    const flat = layers.flatMap((l) => (clsToken ? [l.patch, l.cls!.unsqueeze(-1).unsqueeze(-1)] : [l.patch]));
    let inputs = inIndex.map((i) => {
      const x = flat[i];
      if (x === undefined) throw new Error(`LinearSegmentationHead: inIndex [${inIndex}] reads input ${i} of ${flat.length}: ${describeLayers(layers)}`);
      return x;
    });
    inputs.forEach((x, k) => {
      if (x.size(1) !== inChannels[k]) {
        throw new Error(`LinearSegmentationHead: input ${inIndex[k]} is ${x.size(1)} channels wide, the head reads ${inChannels[k]} (inChannels [${inChannels}])`);
      }
    });
    if (resizeFactors !== null) {
      inputs = inputs.map((x, k) => {
        const f = resizeFactors[k]!;
        if (f >= 1) return F.interpolate(x, { scaleFactor: f, mode: 'bilinear', alignCorners: false });
        // F.interpolate(mode='area') is adaptive average pooling to floor(size * f).
        return F.adaptiveAvgPool2d(x, [Math.floor(x.size(2) * f), Math.floor(x.size(3) * f)]);
      });
    }
    const size = [inputs[0]!.size(2), inputs[0]!.size(3)];
    return torch.cat(inputs.map((x) => F.interpolate(x, { size, mode: 'bilinear', alignCorners: false })), 1);
  }

  /** Class logits [B, numClasses, h, w] on the grid of the first input read. */
  override forward(layers: readonly LayerFeatures[]): Tensor {
    return this.convSeg.forward(this.bn.forward(this.transformInputs(layers)));
  }
}

/** Logits resized to the image, as EncoderDecoder.encode_decode: [B, numClasses, H, W]. */
export function segmentationLogits(head: LinearSegmentationHead, layers: readonly LayerFeatures[], size: [number, number]): Tensor {
  return F.interpolate(head.forward(layers), { size, mode: 'bilinear', alignCorners: false });
}

// --- depth ------------------------------------------------------------------------------------------

export type BinsStrategy = 'UD' | 'SID';
export type NormStrategy = 'linear' | 'softmax' | 'sigmoid';

export interface DepthHeadConfig {
  /** Which layers the head reads. */
  inIndex: number[];
  /** Width of the concatenated input: per read layer D, or 2D with the CLS token. */
  channels: number;
  /** Whether each layer's CLS token is concatenated to its patch map (the hub heads: true). */
  clsToken: boolean;
  /** Output grid = upsample x the first layer's grid (hub: 4). */
  upsample: number;
  /** Depth as a weighted mean of bins (classify, hub: true) or one regressed channel. */
  classify: boolean;
  nBins: number;
  binsStrategy: BinsStrategy;
  normStrategy: NormStrategy;
  minDepth: number;
  maxDepth: number;
  /** Regression only: sigmoid * maxDepth instead of relu + minDepth. */
  scaleUp: boolean;
}

/** The hub's linear depth head (`_make_dinov2_linear_depth_head`): CLS on, upsample 4, 256 UD bins, 'linear' norm. */
export const DEPTH_HEAD_DEFAULTS = {
  clsToken: true, upsample: 4, classify: true, nBins: 256, binsStrategy: 'UD', normStrategy: 'linear', minDepth: 0.001, maxDepth: 10, scaleUp: false,
} as const;

/** A 1x1 conv to depth-bin logits: keys conv_depth.*. */
export class LinearDepthHead extends nn.Module {
  readonly config: DepthHeadConfig;
  readonly convDepth: nn.Conv2d;

  constructor(config: Pick<DepthHeadConfig, 'inIndex' | 'channels'> & Partial<DepthHeadConfig>) {
    super();
    const c: DepthHeadConfig = { ...DEPTH_HEAD_DEFAULTS, ...config };
    if (c.inIndex.length === 0) throw new Error('LinearDepthHead: inIndex is empty');
    if (!['UD', 'SID'].includes(c.binsStrategy)) throw new RangeError(`LinearDepthHead: binsStrategy must be 'UD' or 'SID', got '${c.binsStrategy}'`);
    if (!['linear', 'softmax', 'sigmoid'].includes(c.normStrategy)) {
      throw new RangeError(`LinearDepthHead: normStrategy must be 'linear', 'softmax' or 'sigmoid', got '${c.normStrategy}'`);
    }
    if (!(c.minDepth < c.maxDepth)) throw new RangeError(`LinearDepthHead: minDepth ${c.minDepth} must be below maxDepth ${c.maxDepth}`);
    this.config = c;
    this.convDepth = this.addModule('conv_depth', new nn.Conv2d(c.channels, c.classify ? c.nBins : 1, 1));
  }

  /** _forward_feature + _transform_inputs ('resize_concat'): [B, channels, h * upsample, w * upsample]. */
  transformInputs(layers: readonly LayerFeatures[]): Tensor {
    const { inIndex, clsToken, upsample, channels } = this.config;
    checkLayers('LinearDepthHead', layers, clsToken);
    const inputs = inIndex.map((i) => {
      const layer = layers[i];
      if (layer === undefined) throw new Error(`LinearDepthHead: inIndex [${inIndex}] reads layer ${i} of ${layers.length}: ${describeLayers(layers)}`);
      return clsToken ? torch.cat([layer.patch, layer.cls!.unsqueeze(-1).unsqueeze(-1).expandAs(layer.patch)], 1) : layer.patch;
    });
    const size = [inputs[0]!.size(2) * upsample, inputs[0]!.size(3) * upsample];
    const x = torch.cat(inputs.map((t) => F.interpolate(t, { size, mode: 'bilinear', alignCorners: false })), 1);
    if (x.size(1) !== channels) {
      throw new Error(`LinearDepthHead: the layers give ${x.size(1)} channels, the head reads ${channels}: ${describeLayers(layers)}`);
    }
    return x;
  }

  /** The depth of each bin [nBins]: minDepth to maxDepth evenly spaced ('UD'), or 10 to the powers so spaced ('SID', aten::logspace as the reference). */
  bins(dtype: torch.DType, device: torch.Device): Tensor {
    const c = this.config;
    return c.binsStrategy === 'UD'
      ? torch.linspace(c.minDepth, c.maxDepth, c.nBins, { dtype, device })
      : torch.callOp('aten::logspace', c.minDepth, c.maxDepth, c.nBins, 10, torch.dtypeCode(dtype), undefined, device);
  }

  /** DepthBaseDecodeHead.depth_pred: [B, 1, h, w]. */
  depthPred(feat: Tensor): Tensor {
    const c = this.config;
    if (!c.classify) {
      const out = this.convDepth.forward(feat);
      return c.scaleUp ? out.sigmoid().mul(c.maxDepth) : F.relu(out).add(c.minDepth);
    }
    let logit = this.convDepth.forward(feat);
    const bins = this.bins(feat.dtype, feat.device);
    if (c.normStrategy === 'linear') {
      // As AdaBins: relu, + 0.1, normalized to sum 1 over the bins.
      logit = F.relu(logit).add(0.1);
      logit = logit.div(logit.sum(1, true));
    } else if (c.normStrategy === 'softmax') {
      logit = F.softmax(logit, 1);
    } else {
      logit = logit.sigmoid();
      logit = logit.div(logit.sum(1, true));
    }
    return logit.mul(bins.view(1, -1, 1, 1)).sum(1, true);
  }

  override forward(layers: readonly LayerFeatures[]): Tensor { return this.depthPred(this.transformInputs(layers)); }
}

/** Depth clamped to [minDepth, maxDepth] and resized to the image, as DepthEncoderDecoder.encode_decode: [B, 1, H, W]. */
export function depthMap(head: LinearDepthHead, layers: readonly LayerFeatures[], size: [number, number]): Tensor {
  const depth = head.forward(layers).clamp(head.config.minDepth, head.config.maxDepth);
  return F.interpolate(depth, { size, mode: 'bilinear', alignCorners: false });
}

// --- checkpoints -------------------------------------------------------------------------------------

export type DenseHead = LinearSegmentationHead | LinearDepthHead;

/** A head file read but not yet built: its `decode_head.*` tensors (prefix dropped), what it is, and mmseg's meta. */
export interface HeadCheckpoint {
  path: string;
  task: 'segmentation' | 'depth';
  stateDict: Map<string, Tensor>;
  /** The config stored by saveHead; null for released .pth heads (inferred by buildHead). */
  config: SegmentationHeadConfig | DepthHeadConfig | null;
  /** mmseg's meta.CLASSES and meta.PALETTE, when the checkpoint has them. */
  classes: string[] | null;
  palette: [number, number, number][] | null;
}

const HEAD_METADATA_KEY = 'reals_head';

const positiveInt = z.number().int().positive();
const storedHeadSchema = z.strictObject({
  config: z.union([
    z.strictObject({
      inChannels: z.array(positiveInt).min(1), inIndex: z.array(z.number().int().nonnegative()).min(1), clsToken: z.boolean(),
      numClasses: positiveInt, resizeFactors: z.array(z.number().positive()).nullable(),
    }),
    z.strictObject({
      inIndex: z.array(z.number().int().nonnegative()).min(1), channels: positiveInt, clsToken: z.boolean(), upsample: positiveInt,
      classify: z.boolean(), nBins: positiveInt, binsStrategy: z.enum(['UD', 'SID']), normStrategy: z.enum(['linear', 'softmax', 'sigmoid']),
      minDepth: z.number(), maxDepth: z.number(), scaleUp: z.boolean(),
    }),
  ]),
  meta: z.record(z.string(), z.unknown()),
});

function parseStoredHead(text: string, path: string): { config: SegmentationHeadConfig | DepthHeadConfig; meta: Record<string, unknown> } {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new Error(`readHeadCheckpoint(${path}): metadata "${HEAD_METADATA_KEY}" is not JSON: ${text.slice(0, 80)}`);
  }
  const parsed = storedHeadSchema.safeParse(json);
  if (parsed.success) return parsed.data;
  throw new Error(`readHeadCheckpoint(${path}): invalid metadata "${HEAD_METADATA_KEY}": ` +
    parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; '));
}

/**
 * Reads a head: a released mmcv `.pth` ({meta, state_dict}, or a bare state dict) through
 * torch.load, or a safetensors file written by saveHead. Only `decode_head.*` keys belong to the
 * head (the hub loads them with strict=False next to the backbone's).
 */
export function readHeadCheckpoint(path: string): HeadCheckpoint {
  let raw = load(path);
  let config: HeadCheckpoint['config'] = null;
  let meta: Record<string, unknown> = {};
  if (path.endsWith('.safetensors')) {
    const file = SafetensorsFile.open(path);
    file.close();
    const stored = file.metadata[HEAD_METADATA_KEY];
    if (stored !== undefined) ({ config, meta } = parseStoredHead(stored, path));
  } else {
    if (raw instanceof Map) raw = Object.fromEntries(raw);
    if (raw !== null && typeof raw === 'object' && 'state_dict' in raw) {
      const record = raw as { state_dict: unknown; meta?: unknown };
      if (record.meta !== null && typeof record.meta === 'object') meta = record.meta as Record<string, unknown>;
      raw = record.state_dict;
    }
  }
  if (raw === null || typeof raw !== 'object') throw new Error(`readHeadCheckpoint(${path}): expected a state dict or an mmcv checkpoint {meta, state_dict}`);
  const stateDict = new Map<string, Tensor>();
  for (const [key, value] of Object.entries(raw as Record<string, unknown>)) {
    if (!key.startsWith('decode_head.')) continue;
    if (!(value instanceof torch.Tensor)) throw new Error(`readHeadCheckpoint(${path}): ${key} is not a tensor`);
    stateDict.set(key.slice('decode_head.'.length), value);
  }
  const task = stateDict.has('conv_seg.weight') ? 'segmentation' : stateDict.has('conv_depth.weight') ? 'depth' : null;
  if (task === null) {
    const keys = Object.keys(raw as object);
    throw new Error(`readHeadCheckpoint(${path}): neither decode_head.conv_seg.weight (segmentation) nor decode_head.conv_depth.weight (depth) ` +
      `among its keys [${keys.slice(0, 12).join(', ')}${keys.length > 12 ? ', ...' : ''}]`);
  }
  if (config !== null && ('numClasses' in config) !== (task === 'segmentation')) {
    throw new Error(`readHeadCheckpoint(${path}): holds ${task} weights but a ${task === 'segmentation' ? 'depth' : 'segmentation'} head config`);
  }
  const classes = Array.isArray(meta.CLASSES) && meta.CLASSES.every((c) => typeof c === 'string') ? (meta.CLASSES as string[]) : null;
  const palette = Array.isArray(meta.PALETTE) && meta.PALETTE.every((c) => Array.isArray(c) && c.length === 3)
    ? (meta.PALETTE as [number, number, number][]) : null;
  return { path, task, stateDict, config, classes, palette };
}

export interface BuildHeadOptions {
  /** Width D of the features the head will read. */
  featureDim: number;
  /** Names the feature source in errors ('the alignment MLPs', 'DINOv2 ViT-S/14'). */
  source: string;
  /** Layers the source can give (the alignment MLPs: 1). */
  maxLayers?: number;
  /** Depth range for released depth heads, which do not store it (default 0.001..10, NYU; KITTI: 80). */
  minDepth?: number;
  maxDepth?: number;
}

/**
 * Builds and loads a head for features of width `featureDim`. A released head's config follows
 * from its weights as the dinov2 configs build it: a segmentation head reads k layers of patch
 * tokens (bn width k * D, "linear" k = 1, "ms" k = 4), a depth head k layers of (patch, CLS)
 * (conv_depth width 2 * k * D, "linear" 1, "linear4" 4). A width that fits no k is an error that
 * names both widths.
 */
export function buildHead(checkpoint: HeadCheckpoint, options: BuildHeadOptions): DenseHead {
  const { featureDim: D, source } = options;
  const { stateDict } = checkpoint;
  const where = `head ${checkpoint.path}`;
  let head: DenseHead;
  if (checkpoint.task === 'segmentation') {
    const [numClasses, width] = stateDict.get('conv_seg.weight')!.shape as [number, number];
    let config = checkpoint.config as SegmentationHeadConfig | null;
    if (config === null) {
      const layers = width / D;
      if (!Number.isInteger(layers)) {
        throw new Error(`${where}: reads ${width}-wide input (decode_head.conv_seg.weight [${stateDict.get('conv_seg.weight')!.shape}]), ` +
          `but ${source} output ${D}-wide features (${width} is not a whole number of ${D}-wide layers)`);
      }
      config = { inChannels: Array(layers).fill(D), inIndex: [...Array(layers).keys()], clsToken: false, numClasses, resizeFactors: null };
    }
    checkWidths(where, config.inChannels, D, source);
    head = new LinearSegmentationHead(config);
  } else {
    const [outChannels, width] = stateDict.get('conv_depth.weight')!.shape as [number, number];
    let config = checkpoint.config as DepthHeadConfig | null;
    if (config === null) {
      const layers = width / (2 * D);
      if (!Number.isInteger(layers)) {
        throw new Error(`${where}: reads ${width}-wide input (decode_head.conv_depth.weight [${stateDict.get('conv_depth.weight')!.shape}], ` +
          `patch + CLS per layer), but ${source} output ${D}-wide features (${width} is not a whole number of 2 x ${D}-wide layers)`);
      }
      config = {
        ...DEPTH_HEAD_DEFAULTS, inIndex: [...Array(layers).keys()], channels: width, classify: outChannels > 1, nBins: outChannels,
        minDepth: options.minDepth ?? DEPTH_HEAD_DEFAULTS.minDepth, maxDepth: options.maxDepth ?? DEPTH_HEAD_DEFAULTS.maxDepth,
      };
    }
    const perLayer = config.clsToken ? 2 * D : D;
    if (config.channels !== perLayer * config.inIndex.length) {
      throw new Error(`${where}: reads ${config.channels}-wide input, but ${config.inIndex.length} layer(s) of ${source}'s ${D}-wide features ` +
        `give ${perLayer * config.inIndex.length}`);
    }
    head = new LinearDepthHead(config);
  }
  const layers = layersRead(head);
  if (options.maxLayers !== undefined && layers > options.maxLayers) {
    throw new Error(`${where}: reads ${layers} layers, but ${source} give ${options.maxLayers} (a multi-layer head needs DINOv2 features: --features dino)`);
  }
  try {
    head.loadStateDict(stateDict);
  } catch (error) {
    throw new Error(`${where}: ${(error as Error).message}`, { cause: error });
  }
  return head.eval();
}

function checkWidths(where: string, inChannels: number[], D: number, source: string): void {
  const bad = inChannels.filter((c) => c !== D);
  if (bad.length > 0) throw new Error(`${where}: reads ${bad[0]}-wide input, but ${source} output ${D}-wide features`);
}

/** How many backbone layers a head reads (the last index it reads, plus one). */
export function layersRead(head: DenseHead): number {
  const last = Math.max(...head.config.inIndex);
  return head instanceof LinearSegmentationHead && head.config.clsToken ? Math.floor(last / 2) + 1 : last + 1;
}

/** Writes a head as safetensors: `decode_head.*` keys, and its task and config in the metadata. */
export function saveHead(path: string, head: DenseHead, meta: { CLASSES?: string[]; PALETTE?: [number, number, number][] } = {}): void {
  const tensors: Record<string, Tensor> = {};
  for (const [key, t] of head.stateDict()) tensors[`decode_head.${key}`] = t.contiguous();
  saveSafetensors(path, tensors, { [HEAD_METADATA_KEY]: JSON.stringify({ config: head.config, meta }) });
}

// --- fitting a linear head ---------------------------------------------------------------------------

export interface FitSegmentationOptions {
  steps: number;
  batchSize: number;
  /** AdamW learning rate (the dinov2 linear configs: 1e-3, weight decay 1e-4). */
  lr?: number;
  weightDecay?: number;
  /** Label ignored by the loss (mmseg: 255). */
  ignoreIndex?: number;
  /** Called after each step with the loss. */
  onStep?: (step: number, loss: number) => void;
}

/**
 * Trains a segmentation head in place on features of N images and masks [N, H, W] (int64 class
 * indices), as mmseg trains BNHead: logits resized bilinearly to the mask, cross entropy that
 * skips `ignoreIndex`, AdamW, BatchNorm on batch statistics; minibatches drawn with torch's RNG.
 * The features are fixed (the backbone is frozen), so they are given as tensors over all N.
 */
export function fitSegmentationHead(head: LinearSegmentationHead, layers: readonly LayerFeatures[], masks: Tensor, options: FitSegmentationOptions): number[] {
  const { steps, batchSize, lr = 1e-3, weightDecay = 1e-4, ignoreIndex = 255 } = options;
  const n = masks.size(0);
  if (masks.ndim !== 3 || masks.dtype !== 'int64') throw new Error(`fitSegmentationHead: expected masks int64 [N, H, W], got ${masks.dtype} [${masks.shape}]`);
  for (const l of layers) {
    if (l.patch.size(0) !== n || (l.cls !== null && l.cls.size(0) !== n)) {
      throw new Error(`fitSegmentationHead: ${n} masks but features for ${l.patch.size(0)} images: ${describeLayers(layers)}`);
    }
  }
  const size: [number, number] = [masks.size(1), masks.size(2)];
  const optimizer = new optim.AdamW(head.parameters(), { lr, weightDecay });
  const losses: number[] = [];
  head.train();
  for (let step = 0; step < steps; step++) {
    const loss = torch.scope(() => {
      const index = torch.randperm(n).slice(0, 0, Math.min(batchSize, n));
      const batch = layers.map((l) => ({ patch: l.patch.indexSelect(0, index), cls: l.cls === null ? null : l.cls.indexSelect(0, index) }));
      const logits = segmentationLogits(head, batch, size);
      const value = F.crossEntropy(logits, masks.indexSelect(0, index), { ignoreIndex });
      optimizer.zeroGrad();
      value.backward();
      optimizer.step();
      return value.item();
    });
    losses.push(loss);
    options.onStep?.(step, loss);
  }
  head.eval();
  return losses;
}

// --- metrics -----------------------------------------------------------------------------------------

export interface SegmentationScores {
  /** Mean over classes present in the prediction or the target of intersection / union. */
  mIoU: number;
  /** Fraction of the pixels (not ignored) whose labels agree. */
  pixelAccuracy: number;
  /** Per class IoU; NaN for a class in neither. */
  iou: number[];
}

/** mIoU and pixel accuracy of predicted labels against target labels ([N, H, W] int64), mmseg's way (classes absent from both are skipped). */
export function segmentationScores(prediction: Tensor, target: Tensor, numClasses: number, ignoreIndex = 255): SegmentationScores {
  if (prediction.shape.join() !== target.shape.join()) throw new Error(`segmentationScores: prediction [${prediction.shape}] and target [${target.shape}] differ`);
  return torch.scope(() => {
    const valid = target.ne(ignoreIndex);
    const p = prediction.index(valid);
    const t = target.index(valid);
    const count = (x: Tensor): number[] => Array.from(torch.callOp('aten::bincount', x, null, numClasses).toArray() as BigInt64Array, Number);
    const intersection = count(p.index(p.eq(t)));
    const predicted = count(p);
    const actual = count(t);
    const iou = intersection.map((inter, c) => {
      const union = predicted[c]! + actual[c]! - inter;
      return union === 0 ? NaN : inter / union;
    });
    const present = iou.filter((v) => !Number.isNaN(v));
    const total = t.numel();
    return {
      mIoU: present.length === 0 ? NaN : present.reduce((a, b) => a + b, 0) / present.length,
      pixelAccuracy: total === 0 ? NaN : intersection.reduce((a, b) => a + b, 0) / total,
      iou,
    };
  });
}

/** Root mean squared difference of two depth maps of one shape. */
export function depthRmse(prediction: Tensor, target: Tensor): number {
  if (prediction.shape.join() !== target.shape.join()) throw new Error(`depthRmse: prediction [${prediction.shape}] and target [${target.shape}] differ`);
  return torch.scope(() => prediction.double().sub(target.double()).square().mean().sqrt().item());
}

// --- pictures ----------------------------------------------------------------------------------------

/**
 * The PASCAL VOC colour map (class c's RGB bits interleaved from c's bits, as VOCdevkit's
 * labelcolormap), for heads whose checkpoint carries no PALETTE.
 */
export function vocPalette(numClasses: number): [number, number, number][] {
  return Array.from({ length: numClasses }, (_, c) => {
    const rgb: [number, number, number] = [0, 0, 0];
    for (let bit = 7, id = c; id > 0; bit--, id >>= 3) {
      for (let k = 0; k < 3; k++) rgb[k]! |= ((id >> k) & 1) << bit;
    }
    return rgb;
  });
}

/** Labels [H, W] (int64) as a uint8 RGB image [H, W, 3] through `palette`; labels outside it are black. */
export function colorizeLabels(labels: Tensor, palette: readonly (readonly [number, number, number])[]): Tensor {
  return torch.scope(() => {
    const table = torch.tensor([...palette.flat(), 0, 0, 0], { dtype: 'uint8', shape: [palette.length + 1, 3] });
    const index = labels.where(labels.ge(0).logicalAnd(labels.lt(palette.length)), palette.length);
    return table.indexSelect(0, index.flatten()).reshape(labels.size(0), labels.size(1), 3);
  });
}

// Google's Turbo colour map as its published polynomial fit (Mikhailov 2019; degree-5 fit by R. Du).
const TURBO = [
  [0.13572138, 4.6153926, -42.66032258, 132.13108234, -152.94239396, 59.28637943],
  [0.09140261, 2.19418839, 4.84296658, -14.18503333, 4.27729857, 2.82956604],
  [0.1066733, 12.64194608, -60.58204836, 110.36276771, -89.90310912, 27.34824973],
];

/** A depth map [H, W] as a uint8 RGB image [H, W, 3]: near is red, far is blue (Turbo over [min, max] of the map unless given). */
export function colorizeDepth(depth: Tensor, range?: [number, number]): Tensor {
  return torch.scope(() => {
    const d = depth.double();
    const [low, high] = range ?? [d.min().item(), d.max().item()];
    const x = d.sub(low).div(Math.max(high - low, 1e-12)).clamp(0, 1).rsub(1);
    const channels = TURBO.map((c) => {
      let acc = torch.zerosLike(x);
      for (let k = c.length - 1; k >= 0; k--) acc = acc.mul(x).add(c[k]!);
      return acc.clamp(0, 1).mul(255).round();
    });
    return torch.stack(channels, -1).to('uint8');
  });
}

// --- ONNX export (src/onnx) ----------------------------------------------------------------------

/** The CLS token [N, D] over the grid of `patch` [N, D, h, w], as bilinear resizing of its 1 x 1 map gives. */
function clsMapOnnx(g: OnnxGraph, cls: Value, patch: Value): Value {
  const [n, d, h, w] = patch.shape as [Dim, number, number, number];
  return g.mul(g.reshape(cls, [n, d, 1, 1]), g.tensor(torch.ones([1, 1, h, w]), 'cls_grid'));
}

/**
 * LinearSegmentationHead.forward of one layer's (patch map [N, D, h, w], CLS [N, D]) as graph nodes,
 * for heads that read inputs of that one layer at their own size (resizeFactors null): the CLS
 * token is broadcast over the grid, as bilinear resizing of its 1 x 1 map gives.
 */
export function segmentationHeadOnnx(head: LinearSegmentationHead, g: OnnxGraph, patch: Value, cls: Value | null): Value {
  const { inIndex, resizeFactors, clsToken } = head.config;
  if (resizeFactors !== null) throw new Error('ONNX export: a LinearSegmentationHead with resizeFactors (only heads without exports)');
  if (clsToken && cls === null) throw new Error('ONNX export: the head reads a CLS token and none is given');
  const flat = clsToken ? [patch, cls!] : [patch];
  const inputs = inIndex.map((i) => {
    const x = flat[i];
    if (x === undefined) throw new Error(`ONNX export: the head reads input ${i} of one layer's ${flat.length}`);
    return x === cls ? clsMapOnnx(g, cls, patch) : x;
  });
  const joined = inputs.length === 1 ? inputs[0]! : g.concat(inputs, 1);
  return exportModule(head.convSeg, g, [exportModule(head.bn, g, [joined], 'bn')], 'conv_seg');
}

/**
 * depthMap's depth before the resize to the image, as graph nodes: LinearDepthHead.forward of one
 * layer's (patch map [N, D, h, w], CLS [N, D]) then the clamp to [minDepth, maxDepth]: [N, 1, h up, w up].
 */
export function depthHeadOnnx(head: LinearDepthHead, g: OnnxGraph, patch: Value, cls: Value | null): Value {
  const c = head.config;
  if (c.inIndex.length !== 1 || c.inIndex[0] !== 0) throw new Error(`ONNX export: a LinearDepthHead reading layers [${c.inIndex}] (one layer, the first, exports)`);
  if (c.clsToken && cls === null) throw new Error('ONNX export: the depth head reads a CLS token and none is given');
  const input = c.clsToken ? g.concat([patch, clsMapOnnx(g, cls!, patch)], 1) : patch;
  const logit = exportModule(head.convDepth, g, [c.upsample === 1 ? input : g.upsampleBilinear(input, c.upsample)], 'conv_depth');
  let depth: Value;
  if (!c.classify) {
    depth = c.scaleUp ? g.mul(g.sigmoid(logit), g.scalar(c.maxDepth)) : g.add(g.relu(logit), g.scalar(c.minDepth));
  } else {
    const bins = torch.noGrad(() => head.bins('float32', 'cpu').view(1, -1, 1, 1));
    const weights = c.normStrategy === 'softmax' ? g.softmax(logit, 1)
      : (() => {
        const positive = c.normStrategy === 'linear' ? g.add(g.relu(logit), g.scalar(0.1)) : g.sigmoid(logit);
        return g.div(positive, g.reduceSum(positive, [1]));
      })();
    depth = g.reduceSum(g.mul(weights, g.tensor(bins, 'bins')), [1]);
  }
  return g.clip(depth, c.minDepth, c.maxDepth);
}