// DINOv2 vision transformers as facebookresearch/dinov2: dinov2/models/vision_transformer.py
// (DinoVisionTransformer) with the layers of dinov2/layers, built the way dinov2/hub/backbones.py
// builds the published models (block_chunks=0, so blocks are `blocks.N`; LayerScale in every block;
// register models with antialiased, offset-free position-embedding interpolation). Torch-hub
// checkpoints load as they are; Hugging Face Dinov2Model / Dinov2WithRegistersModel weights load
// through the key mapping at the bottom (the renaming of transformers' convert_dinov2_to_hf.py).
// The position embedding is interpolated as the hub code does it (transformers' Dinov2Model
// differs in some versions).
import * as torch from '../torch/index.js';
import type { Tensor } from '../torch/index.js';
import * as nn from '../nn/index.js';
import { load, readJsonFile } from '../io/index.js';
import { Attention } from './attention.js';
import { checkHeads, checkSizes, checkWeightsFit, dinov2Parameters, type SizeRange } from './config-sizes.js';

const F = nn.F;

export interface DinoV2Config {
  /** Training image size: the position embedding covers (imgSize / patchSize)^2 patches. */
  imgSize: number;
  patchSize: number;
  inChans: number;
  embedDim: number;
  depth: number;
  numHeads: number;
  mlpRatio: number;
  /** 'mlp': fc1, GELU, fc2; 'swiglufused': w12, SiLU gate, w3 (vitg14). */
  ffnLayer: 'mlp' | 'swiglufused';
  /** Extra learned tokens after CLS ("Vision Transformers Need Registers"); 0 or 4 in the hub. */
  numRegisterTokens: number;
  /** Antialiased bicubic interpolation of the position embedding (hub: true for _reg models). */
  interpolateAntialias: boolean;
  /**
   * Added to the target grid size to form the interpolation scale factor (dino issue #8); 0
   * interpolates to the exact size (hub: 0.1, and 0 for _reg models).
   */
  interpolateOffset: number;
  /** LayerScale gamma at initialization (hub: 1.0). */
  initValues: number;
}

/** (B, C, H, W) image to (B, H/p * W/p, D) patch tokens through a stride-p convolution. */
class PatchEmbed extends nn.Module {
  readonly proj: nn.Conv2d;

  constructor(readonly patchSize: number, inChans: number, embedDim: number) {
    super();
    this.proj = this.addModule('proj', new nn.Conv2d(inChans, embedDim, patchSize, { stride: patchSize }));
  }

  override forward(x: Tensor): Tensor {
    const [, , H, W] = x.shape as [number, number, number, number];
    if (H % this.patchSize !== 0 || W % this.patchSize !== 0) {
      throw new Error(`PatchEmbed: input ${H}x${W} is not a multiple of the patch size ${this.patchSize}`);
    }
    return this.proj.forward(x).flatten(2).transpose(1, 2);
  }
}

/** Per-channel residual-branch scale. */
class LayerScale extends nn.Module {
  readonly gamma: Tensor;

  constructor(dim: number, initValues: number) {
    super();
    this.gamma = this.registerParameter('gamma', torch.full([dim], initValues));
  }

  override forward(x: Tensor): Tensor { return x.mul(this.gamma); }
}

class Mlp extends nn.Module {
  readonly fc1: nn.Linear;
  readonly fc2: nn.Linear;

  constructor(inFeatures: number, hiddenFeatures: number) {
    super();
    this.fc1 = this.addModule('fc1', new nn.Linear(inFeatures, hiddenFeatures));
    this.fc2 = this.addModule('fc2', new nn.Linear(hiddenFeatures, inFeatures));
  }

  override forward(x: Tensor): Tensor { return this.fc2.forward(F.gelu(this.fc1.forward(x))); }
}

/** SwiGLU with one fused input projection; the hidden size is 2/3 of the MLP's, rounded up to 8. */
class SwiGLUFFNFused extends nn.Module {
  readonly w12: nn.Linear;
  readonly w3: nn.Linear;

  constructor(inFeatures: number, hiddenFeatures: number) {
    super();
    const hidden = Math.floor((Math.trunc((hiddenFeatures * 2) / 3) + 7) / 8) * 8;
    this.w12 = this.addModule('w12', new nn.Linear(inFeatures, 2 * hidden));
    this.w3 = this.addModule('w3', new nn.Linear(hidden, inFeatures));
  }

  override forward(x: Tensor): Tensor {
    const [x1, x2] = this.w12.forward(x).chunk(2, -1) as [Tensor, Tensor];
    return this.w3.forward(F.silu(x1).mul(x2));
  }
}

/** Pre-norm transformer block with LayerScale on both residual branches (NestedTensorBlock). */
class Block extends nn.Module {
  readonly norm1: nn.LayerNorm;
  readonly attn: Attention;
  readonly ls1: LayerScale;
  readonly norm2: nn.LayerNorm;
  readonly mlp: Mlp | SwiGLUFFNFused;
  readonly ls2: LayerScale;

  constructor(config: DinoV2Config) {
    super();
    const dim = config.embedDim;
    const hidden = Math.trunc(dim * config.mlpRatio);
    this.norm1 = this.addModule('norm1', new nn.LayerNorm(dim, { eps: 1e-6 }));
    this.attn = this.addModule('attn', new Attention(dim, config.numHeads));
    this.ls1 = this.addModule('ls1', new LayerScale(dim, config.initValues));
    this.norm2 = this.addModule('norm2', new nn.LayerNorm(dim, { eps: 1e-6 }));
    this.mlp = this.addModule('mlp', config.ffnLayer === 'mlp' ? new Mlp(dim, hidden) : new SwiGLUFFNFused(dim, hidden));
    this.ls2 = this.addModule('ls2', new LayerScale(dim, config.initValues));
  }

  override forward(x: Tensor): Tensor {
    const h = x.add(this.ls1.forward(this.attn.forward(this.norm1.forward(x))));
    return h.add(this.ls2.forward(this.mlp.forward(this.norm2.forward(h))));
  }
}

/** forward_features' outputs: final-norm CLS, register and patch tokens, and the tokens before the norm. */
export interface DinoV2Features {
  xNormClstoken: Tensor;
  xNormRegtokens: Tensor;
  xNormPatchtokens: Tensor;
  xPrenorm: Tensor;
}

export interface IntermediateLayersOptions {
  /** Patch tokens as (B, D, H/p, W/p) maps instead of (B, N, D). */
  reshape?: boolean;
  /** Pair each layer's patch tokens with its CLS token. */
  returnClassToken?: boolean;
  /** Apply the final LayerNorm to each layer's tokens (default true). */
  norm?: boolean;
}

export class DinoVisionTransformer extends nn.Module {
  readonly clsToken: Tensor;
  readonly posEmbed: Tensor;
  readonly registerTokens: Tensor | null;
  readonly maskToken: Tensor;
  readonly patchEmbed: PatchEmbed;
  readonly blocks: nn.ModuleList<Block>;
  readonly norm: nn.LayerNorm;

  constructor(readonly config: DinoV2Config) {
    super();
    const { imgSize, patchSize, embedDim, numRegisterTokens } = config;
    const numPatches = Math.floor(imgSize / patchSize) ** 2;
    this.clsToken = this.registerParameter('cls_token', torch.zeros([1, 1, embedDim]));
    this.posEmbed = this.registerParameter('pos_embed', torch.zeros([1, numPatches + 1, embedDim]));
    this.registerTokens = this.registerParameter('register_tokens', numRegisterTokens > 0 ? torch.zeros([1, numRegisterTokens, embedDim]) : null);
    this.maskToken = this.registerParameter('mask_token', torch.zeros([1, embedDim]));
    this.patchEmbed = this.addModule('patch_embed', new PatchEmbed(patchSize, config.inChans, embedDim));
    this.blocks = this.addModule('blocks', new nn.ModuleList(Array.from({ length: config.depth }, () => new Block(config))));
    this.norm = this.addModule('norm', new nn.LayerNorm(embedDim, { eps: 1e-6 }));
    this.initWeights();
  }

  /** As init_weights: truncated-normal position embedding and Linear weights (std 0.02, zero bias), tiny CLS and register tokens. */
  initWeights(): void {
    torch.noGrad(() => {
      nn.init.truncNormal_(this.posEmbed, { std: 0.02 });
      nn.init.normal_(this.clsToken, 0, 1e-6);
      if (this.registerTokens !== null) nn.init.normal_(this.registerTokens, 0, 1e-6);
      for (const m of this.modules()) {
        if (m instanceof nn.Linear) {
          nn.init.truncNormal_(m.weight, { std: 0.02 });
          if (m.bias !== null) nn.init.zeros_(m.bias);
        }
      }
    });
  }

  /**
   * The position embedding for `tokens` (CLS + patches) of an H x W image: the stored grid
   * resized by bicubic interpolation in float32 when the patch count differs or the image is not
   * square, exactly as interpolate_pos_encoding (which names H `w` and W `h`).
   */
  interpolatePosEncoding(tokens: Tensor, H: number, W: number): Tensor {
    const npatch = tokens.size(1) - 1;
    const N = this.posEmbed.size(1) - 1;
    if (npatch === N && H === W) return this.posEmbed;
    const posEmbed = this.posEmbed.float();
    const classPosEmbed = posEmbed.select(1, 0);
    const dim = tokens.size(-1);
    const h0 = Math.floor(H / this.config.patchSize);
    const w0 = Math.floor(W / this.config.patchSize);
    const M = Math.trunc(Math.sqrt(N));
    if (M * M !== N) throw new Error(`DinoVisionTransformer: pos_embed has ${N} patch positions, not a square grid`);
    const offset = this.config.interpolateOffset;
    // With an offset the scale factor, not the size, drives the kernel (upstream keeps it for
    // backward compatibility: the sampling positions differ from a plain resize).
    const grid = posEmbed.slice(1, 1).reshape(1, M, M, dim).permute(0, 3, 1, 2);
    const resized = F.interpolate(grid, {
      mode: 'bicubic',
      antialias: this.config.interpolateAntialias,
      ...(offset ? { scaleFactor: [(h0 + offset) / M, (w0 + offset) / M] } : { size: [h0, w0] }),
    });
    if (resized.size(-2) !== h0 || resized.size(-1) !== w0) {
      throw new Error(`DinoVisionTransformer: interpolated pos_embed is ${resized.size(-2)}x${resized.size(-1)}, expected ${h0}x${w0}`);
    }
    const patchPosEmbed = resized.permute(0, 2, 3, 1).reshape(1, -1, dim);
    return torch.cat([classPosEmbed.unsqueeze(0), patchPosEmbed], 1).to(tokens.dtype);
  }

  /** CLS + (masked) patch tokens + position embedding, then the register tokens after CLS. */
  prepareTokensWithMasks(x: Tensor, masks: Tensor | null = null): Tensor {
    const [B, , H, W] = x.shape as [number, number, number, number];
    let tokens = this.patchEmbed.forward(x);
    if (masks !== null) tokens = torch.where(masks.unsqueeze(-1), this.maskToken.to(tokens.dtype).unsqueeze(0), tokens);
    tokens = torch.cat([this.clsToken.expand(B, -1, -1), tokens], 1);
    tokens = tokens.add(this.interpolatePosEncoding(tokens, H, W));
    if (this.registerTokens !== null) {
      tokens = torch.cat([tokens.slice(1, 0, 1), this.registerTokens.expand(B, -1, -1), tokens.slice(1, 1)], 1);
    }
    return tokens;
  }

  /** The normalized CLS, register and patch tokens; `masks` (B, N) bool replaces patches by mask_token. */
  forwardFeatures(x: Tensor, masks: Tensor | null = null): DinoV2Features {
    let tokens = this.prepareTokensWithMasks(x, masks);
    for (const block of this.blocks) tokens = block.forward(tokens);
    const xNorm = this.norm.forward(tokens);
    const r = this.config.numRegisterTokens;
    return {
      xNormClstoken: xNorm.select(1, 0),
      xNormRegtokens: xNorm.slice(1, 1, r + 1),
      xNormPatchtokens: xNorm.slice(1, r + 1),
      xPrenorm: tokens,
    };
  }

  /**
   * Patch tokens after the last `n` blocks, or after the blocks listed in `n` (in block order),
   * as get_intermediate_layers.
   */
  getIntermediateLayers(x: Tensor, n: number | number[], options: IntermediateLayersOptions & { returnClassToken: true }): [Tensor, Tensor][];
  getIntermediateLayers(x: Tensor, n?: number | number[], options?: IntermediateLayersOptions & { returnClassToken?: false }): Tensor[];
  getIntermediateLayers(x: Tensor, n: number | number[] = 1, options: IntermediateLayersOptions = {}): Tensor[] | [Tensor, Tensor][] {
    const depth = this.blocks.length;
    const take = typeof n === 'number' ? Array.from({ length: n }, (_, i) => depth - n + i) : n;
    let tokens = this.prepareTokensWithMasks(x);
    let outputs: Tensor[] = [];
    let i = 0;
    for (const block of this.blocks) {
      tokens = block.forward(tokens);
      if (take.includes(i)) outputs.push(tokens);
      i++;
    }
    if (outputs.length !== take.length) {
      throw new Error(`getIntermediateLayers: only ${outputs.length} of the blocks [${take}] found in a depth-${depth} model`);
    }
    if (options.norm ?? true) outputs = outputs.map((out) => this.norm.forward(out));
    const classTokens = outputs.map((out) => out.select(1, 0));
    let patches = outputs.map((out) => out.slice(1, 1 + this.config.numRegisterTokens));
    if (options.reshape) {
      const [B, , H, W] = x.shape as [number, number, number, number];
      const p = this.config.patchSize;
      patches = patches.map((out) => out.reshape(B, Math.floor(H / p), Math.floor(W / p), -1).permute(0, 3, 1, 2).contiguous());
    }
    if (options.returnClassToken) return patches.map((out, k): [Tensor, Tensor] => [out, classTokens[k]!]);
    return patches;
  }

  /** The normalized CLS token (forward with the identity head). */
  override forward(x: Tensor): Tensor { return this.forwardFeatures(x).xNormClstoken; }

  /**
   * Loads a checkpoint file (torch.save or safetensors) in torch-hub naming or in Hugging Face
   * Dinov2Model / Dinov2WithRegistersModel naming; errors name the file and every bad key.
   */
  loadCheckpoint(path: string): this {
    torch.scope(() => {
      try {
        const tensors = tensorRecord(load(path));
        const isHuggingFace = Object.keys(tensors).some((k) => k.startsWith('embeddings.') || k.startsWith('encoder.layer.'));
        this.loadStateDict(isHuggingFace ? huggingFaceToHub(tensors) : tensors);
      } catch (error) {
        throw new Error(`loadCheckpoint(${path}): ${(error as Error).message}`, { cause: error });
      }
    });
    return this;
  }
}

function tensorRecord(value: unknown): Record<string, Tensor> {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new Error('expected a state dict (a dict of tensors)');
  const notTensors = Object.entries(value).filter(([, v]) => !(v instanceof torch.Tensor)).map(([k]) => k);
  if (notTensors.length > 0) throw new Error(`expected a state dict of tensors; not tensors: [${notTensors.join(', ')}]`);
  return value as Record<string, Tensor>;
}

// --- preprocessing ------------------------------------------------------------------------------

// timm's IMAGENET_DEFAULT_MEAN and IMAGENET_DEFAULT_STD.
const IMAGENET_MEAN = [0.485, 0.456, 0.406];
const IMAGENET_STD = [0.229, 0.224, 0.225];

/**
 * Images (B, 3, H, W) in [-1, 1] to DINOv2's input: mapped to [0, 1], normalized with the
 * ImageNet mean and std, then resized to `size` by bicubic interpolation (in this order, as REPA's
 * preprocess_raw_image, which does not antialias; `antialias: true` for torchvision-style resizing).
 */
export function preprocessImages(x: Tensor, size: number | [number, number], options: { antialias?: boolean } = {}): Tensor {
  if (x.ndim !== 4 || x.size(1) !== 3) throw new Error(`preprocessImages: expected images (B, 3, H, W), got [${x.shape}]`);
  const stats = (values: number[]): Tensor => torch.tensor(values, { dtype: x.dtype, device: x.device }).view(1, 3, 1, 1);
  const normalized = x.add(1).div(2).sub(stats(IMAGENET_MEAN)).div(stats(IMAGENET_STD));
  return F.interpolate(normalized, { size, mode: 'bicubic', antialias: options.antialias ?? false });
}

// --- Hugging Face naming ------------------------------------------------------------------------

/**
 * Hub key -> transformers key, as convert_dinov2_to_hf.py / convert_dinov2_with_registers_to_hf.py
 * rename them. Block keys are relative to `blocks.N.` / `encoder.layer.N.`; the fused
 * `attn.qkv` is split into `attention.attention.{query,key,value}` separately.
 */
const HF_TOP_KEYS: [string, string][] = [
  ['cls_token', 'embeddings.cls_token'],
  ['mask_token', 'embeddings.mask_token'],
  ['pos_embed', 'embeddings.position_embeddings'],
  ['register_tokens', 'embeddings.register_tokens'],
  ['patch_embed.proj.weight', 'embeddings.patch_embeddings.projection.weight'],
  ['patch_embed.proj.bias', 'embeddings.patch_embeddings.projection.bias'],
  ['norm.weight', 'layernorm.weight'],
  ['norm.bias', 'layernorm.bias'],
];
const HF_BLOCK_KEYS: [string, string][] = [
  ['norm1.weight', 'norm1.weight'],
  ['norm1.bias', 'norm1.bias'],
  ['attn.proj.weight', 'attention.output.dense.weight'],
  ['attn.proj.bias', 'attention.output.dense.bias'],
  ['ls1.gamma', 'layer_scale1.lambda1'],
  ['norm2.weight', 'norm2.weight'],
  ['norm2.bias', 'norm2.bias'],
  ['mlp.fc1.weight', 'mlp.fc1.weight'],
  ['mlp.fc1.bias', 'mlp.fc1.bias'],
  ['mlp.fc2.weight', 'mlp.fc2.weight'],
  ['mlp.fc2.bias', 'mlp.fc2.bias'],
  ['mlp.w12.weight', 'mlp.weights_in.weight'],
  ['mlp.w12.bias', 'mlp.weights_in.bias'],
  ['mlp.w3.weight', 'mlp.weights_out.weight'],
  ['mlp.w3.bias', 'mlp.weights_out.bias'],
  ['ls2.gamma', 'layer_scale2.lambda1'],
];
const QKV_NAMES = ['query', 'key', 'value'] as const;

const HUB_BLOCK = /^blocks\.(\d+)\.(.+)$/;
const HF_BLOCK = /^encoder\.layer\.(\d+)\.(.+)$/;
const HF_QKV = /^attention\.attention\.(query|key|value)\.(weight|bias)$/;

function entriesOf(stateDict: nn.StateDict | Record<string, Tensor>): [string, Tensor][] {
  return stateDict instanceof Map ? [...stateDict] : Object.entries(stateDict);
}

/** A torch-hub state dict in Hugging Face naming (qkv split in three); throws listing unknown keys. */
export function hubToHuggingFace(stateDict: nn.StateDict | Record<string, Tensor>): nn.StateDict {
  const top = new Map(HF_TOP_KEYS);
  const block = new Map(HF_BLOCK_KEYS);
  const out: nn.StateDict = new Map();
  const unknown: string[] = [];
  for (const [key, tensor] of entriesOf(stateDict)) {
    const m = HUB_BLOCK.exec(key);
    const [layer, rest] = m === null ? [null, key] : [m[1]!, m[2]!];
    if (layer !== null && (rest === 'attn.qkv.weight' || rest === 'attn.qkv.bias')) {
      const param = rest.slice('attn.qkv.'.length);
      tensor.chunk(3, 0).forEach((part, j) => out.set(`encoder.layer.${layer}.attention.attention.${QKV_NAMES[j]}.${param}`, part));
      continue;
    }
    const renamed = layer === null ? top.get(rest) : block.get(rest);
    if (renamed === undefined) unknown.push(key);
    else out.set(layer === null ? renamed : `encoder.layer.${layer}.${renamed}`, tensor);
  }
  if (unknown.length > 0) throw new Error(`hubToHuggingFace: keys with no Hugging Face name [${unknown.join(', ')}]`);
  return out;
}

/** A Hugging Face Dinov2Model / Dinov2WithRegistersModel state dict in torch-hub naming (query, key, value joined into qkv). */
export function huggingFaceToHub(stateDict: nn.StateDict | Record<string, Tensor>): nn.StateDict {
  const top = new Map(HF_TOP_KEYS.map(([hub, hf]) => [hf, hub]));
  const block = new Map(HF_BLOCK_KEYS.map(([hub, hf]) => [hf, hub]));
  const out: nn.StateDict = new Map();
  const qkvParts = new Map<string, Partial<Record<(typeof QKV_NAMES)[number], Tensor>>>();
  const unknown: string[] = [];
  for (const [key, tensor] of entriesOf(stateDict)) {
    const m = HF_BLOCK.exec(key);
    const [layer, rest] = m === null ? [null, key] : [m[1]!, m[2]!];
    const qkv = layer === null ? null : HF_QKV.exec(rest);
    if (qkv !== null) {
      const target = `blocks.${layer}.attn.qkv.${qkv[2]}`;
      const parts = qkvParts.get(target) ?? {};
      parts[qkv[1] as (typeof QKV_NAMES)[number]] = tensor;
      qkvParts.set(target, parts);
      continue;
    }
    const renamed = layer === null ? top.get(rest) : block.get(rest);
    if (renamed === undefined) unknown.push(key);
    else out.set(layer === null ? renamed : `blocks.${layer}.${renamed}`, tensor);
  }
  if (unknown.length > 0) throw new Error(`huggingFaceToHub: keys with no torch-hub name [${unknown.join(', ')}]`);
  const incomplete: string[] = [];
  for (const [target, parts] of qkvParts) {
    const missing = QKV_NAMES.filter((name) => parts[name] === undefined);
    if (missing.length > 0) incomplete.push(`${target} (no ${missing.join(', ')})`);
    else out.set(target, torch.cat(QKV_NAMES.map((name) => parts[name]!), 0));
  }
  if (incomplete.length > 0) throw new Error(`huggingFaceToHub: incomplete attention projections [${incomplete.join(', ')}]`);
  return out;
}

// --- named configs (dinov2/hub/backbones.py) -----------------------------------------------------

const HUB = { imgSize: 518, patchSize: 14, inChans: 3, mlpRatio: 4, initValues: 1.0 } as const;
const NO_REGISTERS = { numRegisterTokens: 0, interpolateAntialias: false, interpolateOffset: 0.1 } as const;
const REGISTERS = { numRegisterTokens: 4, interpolateAntialias: true, interpolateOffset: 0 } as const;
const VIT_S = { embedDim: 384, depth: 12, numHeads: 6, ffnLayer: 'mlp' } as const;
const VIT_B = { embedDim: 768, depth: 12, numHeads: 12, ffnLayer: 'mlp' } as const;
const VIT_L = { embedDim: 1024, depth: 24, numHeads: 16, ffnLayer: 'mlp' } as const;
const VIT_G = { embedDim: 1536, depth: 40, numHeads: 24, ffnLayer: 'swiglufused' } as const;

export const DINOV2_CONFIGS: Record<string, DinoV2Config> = {
  dinov2_vits14: { ...HUB, ...VIT_S, ...NO_REGISTERS },
  dinov2_vitb14: { ...HUB, ...VIT_B, ...NO_REGISTERS },
  dinov2_vitl14: { ...HUB, ...VIT_L, ...NO_REGISTERS },
  dinov2_vitg14: { ...HUB, ...VIT_G, ...NO_REGISTERS },
  dinov2_vits14_reg: { ...HUB, ...VIT_S, ...REGISTERS },
  dinov2_vitb14_reg: { ...HUB, ...VIT_B, ...REGISTERS },
  dinov2_vitl14_reg: { ...HUB, ...VIT_L, ...REGISTERS },
  dinov2_vitg14_reg: { ...HUB, ...VIT_G, ...REGISTERS },
};

/** A named DINOv2 config, or a JSON file of DinoV2Config fields over dinov2_vits14's (small teachers); `--dino-model`. */
export function resolveDinoConfig(name: string): DinoV2Config {
  const named = DINOV2_CONFIGS[name];
  if (named !== undefined) return named;
  if (!name.endsWith('.json')) throw new Error(`--dino-model ${name}: not one of ${Object.keys(DINOV2_CONFIGS).join(', ')}, nor a .json config`);
  const fields = readJsonFile(name);
  if (fields === null || typeof fields !== 'object' || Array.isArray(fields)) throw new Error(`--dino-model ${name}: expected a JSON object of DinoV2Config fields`);
  const base = DINOV2_CONFIGS.dinov2_vits14!;
  const unknown = Object.keys(fields).filter((k) => !(k in base));
  if (unknown.length > 0) throw new Error(`--dino-model ${name}: unknown fields [${unknown.join(', ')}] (known: ${Object.keys(base).join(', ')})`);
  const config = { ...base, ...(fields as Partial<DinoV2Config>) };
  checkSizes(`--dino-model ${name}`, config as unknown as Record<string, unknown>, DINOV2_CONFIG_SIZES);
  checkHeads(`--dino-model ${name}`, config.embedDim, config.numHeads, 'embedDim');
  if (!(config.mlpRatio > 0 && config.mlpRatio <= 64)) throw new Error(`--dino-model ${name}: "mlpRatio" must be a number in (0, 64], got ${JSON.stringify(config.mlpRatio)}`);
  checkWeightsFit(`--dino-model ${name}`, dinov2Parameters(config));
  return config;
}

/** The bounds a DinoV2Config read from a file is checked against (ViT-g/14: width 1536, depth 40, 24 heads). */
const DINOV2_CONFIG_SIZES: Readonly<Record<string, SizeRange>> = {
  imgSize: { min: 1, max: 8192 }, patchSize: { min: 1, max: 256 }, inChans: { min: 1, max: 64 }, embedDim: { min: 1, max: 16384 },
  depth: { min: 1, max: 256 }, numHeads: { min: 1, max: 256 }, numRegisterTokens: { min: 0, max: 256 },
};
