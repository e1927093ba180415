// DiT (facebookresearch/DiT models.py) and SiT (willisma/SiT models.py): a transformer over the
// patches of a latent, conditioned on a timestep and a class label through adaLN-Zero blocks.
// SiT's models.py is DiT's with two changes, which `SiT extends DiT` makes here: the patch
// embedding's bias is zeroed at init, and forward drops the learned-sigma channels. Children are
// registered under upstream's names, so the official checkpoints load as they are.
// One file past 500 lines, as STYLE's rule for models: the network reads top to bottom like models.py.
import * as torch from '../torch/index.js';
import type { Tensor } from '../torch/index.js';
import * as nn from '../nn/index.js';
import { load } from '../io/index.js';
import { Attention } from './attention.js';
import type { SizeRange } from './config-sizes.js';
import type { Dim, OnnxGraph, Value } from '../onnx/graph.js';
import { childPath, exportModule, registerExporter } from '../onnx/modules.js';

const { F, init } = nn;

// --- timm's PatchEmbed, Attention and Mlp, as models.py constructs them ------------------------

/** Non-overlapping p x p patches of [N, C, H, W] projected to [N, T, D] tokens by a stride-p conv. */
class PatchEmbed extends nn.Module {
  readonly proj: nn.Conv2d;
  readonly numPatches: number;

  constructor(readonly imgSize: number, readonly patchSize: number, inChannels: number, embedDim: number) {
    super();
    this.numPatches = (imgSize / patchSize) ** 2;
    this.proj = this.addModule('proj', new nn.Conv2d(inChannels, embedDim, patchSize, { stride: patchSize }));
  }

  override forward(x: Tensor): Tensor {
    // timm's strict_img_size: the position embedding is laid out for imgSize.
    if (x.ndim !== 4 || x.size(2) !== this.imgSize || x.size(3) !== this.imgSize) {
      throw new Error(`PatchEmbed: expected input [N, C, ${this.imgSize}, ${this.imgSize}], got [${x.shape}]`);
    }
    return this.proj.forward(x).flatten(2).transpose(1, 2);
  }
}

/** fc1, GELU (tanh approximation, as models.py passes), fc2. */
class Mlp extends nn.Module {
  readonly fc1: nn.Linear;
  readonly act: nn.GELU;
  readonly fc2: nn.Linear;

  constructor(inFeatures: number, hiddenFeatures: number) {
    super();
    this.fc1 = this.addModule('fc1', new nn.Linear(inFeatures, hiddenFeatures));
    this.act = this.addModule('act', new nn.GELU('tanh'));
    this.fc2 = this.addModule('fc2', new nn.Linear(hiddenFeatures, inFeatures));
  }

  override forward(x: Tensor): Tensor { return this.fc2.forward(this.act.forward(this.fc1.forward(x))); }
}

// --- Embedding layers for timesteps and class labels --------------------------------------------

/** Embeds scalar timesteps [N] into [N, hiddenSize]: sinusoidal features, then Linear-SiLU-Linear. */
export class TimestepEmbedder extends nn.Module {
  readonly mlp: nn.Sequential;

  constructor(hiddenSize: number, readonly frequencyEmbeddingSize = 256) {
    super();
    this.mlp = this.addModule('mlp', new nn.Sequential(
      new nn.Linear(frequencyEmbeddingSize, hiddenSize), new nn.SiLU(), new nn.Linear(hiddenSize, hiddenSize),
    ));
  }

  /**
   * GLIDE's sinusoidal embedding [N, dim] of (possibly fractional) timesteps: [cos(t f), sin(t f)]
   * with f_i = exp(-ln(maxPeriod) i / half), i < half = floor(dim / 2), a zero column for odd dim.
   */
  static timestepEmbedding(t: Tensor, dim: number, maxPeriod = 10000): Tensor {
    const half = Math.floor(dim / 2);
    // Computed on the CPU and moved, as upstream.
    const freqs = torch.arange(0, half, 1, { dtype: 'float32' }).mul(-Math.log(maxPeriod)).div(half).exp().to(t.device);
    const args = t.unsqueeze(1).float().mul(freqs.unsqueeze(0));
    const embedding = torch.cat([args.cos(), args.sin()], -1);
    return dim % 2 === 1 ? torch.cat([embedding, torch.zerosLike(embedding.slice(1, 0, 1))], -1) : embedding;
  }

  override forward(t: Tensor): Tensor {
    return this.mlp.forward(TimestepEmbedder.timestepEmbedding(t, this.frequencyEmbeddingSize));
  }
}

/**
 * Embeds class labels [N] into [N, hiddenSize]. With dropoutProb > 0 the table has one more row,
 * index numClasses, the null class that classifier-free guidance conditions on; in training each
 * label is replaced by it with probability dropoutProb.
 */
export class LabelEmbedder extends nn.Module {
  readonly embeddingTable: nn.Embedding;

  constructor(readonly numClasses: number, hiddenSize: number, readonly dropoutProb: number) {
    super();
    this.embeddingTable = this.addModule('embedding_table', new nn.Embedding(numClasses + (dropoutProb > 0 ? 1 : 0), hiddenSize));
  }

  /** Labels with the dropped ones set to numClasses: at random, or where forceDropIds == 1. */
  tokenDrop(labels: Tensor, forceDropIds: Tensor | null = null): Tensor {
    const dropIds = forceDropIds === null
      ? torch.rand([labels.size(0)], { device: labels.device }).lt(this.dropoutProb)
      : forceDropIds.eq(1);
    return torch.where(dropIds, this.numClasses, labels);
  }

  override forward(labels: Tensor, train: boolean, forceDropIds: Tensor | null = null): Tensor {
    const drop = (train && this.dropoutProb > 0) || forceDropIds !== null;
    return this.embeddingTable.forward(drop ? this.tokenDrop(labels, forceDropIds) : labels);
  }
}

// --- The network ---------------------------------------------------------------------------------

/**
 * A transformer block with adaLN-Zero conditioning (DiTBlock = SiTBlock): from c, a shift, scale
 * and gate for the attention branch and for the MLP branch.
 */
export class SiTBlock extends nn.Module {
  readonly norm1: nn.LayerNorm;
  readonly attn: Attention;
  readonly norm2: nn.LayerNorm;
  readonly mlp: Mlp;
  readonly adaLNModulation: nn.Sequential;

  constructor(hiddenSize: number, numHeads: number, mlpRatio = 4) {
    super();
    this.norm1 = this.addModule('norm1', new nn.LayerNorm(hiddenSize, { elementwiseAffine: false, eps: 1e-6 }));
    this.attn = this.addModule('attn', new Attention(hiddenSize, numHeads));
    this.norm2 = this.addModule('norm2', new nn.LayerNorm(hiddenSize, { elementwiseAffine: false, eps: 1e-6 }));
    this.mlp = this.addModule('mlp', new Mlp(hiddenSize, Math.trunc(hiddenSize * mlpRatio)));
    this.adaLNModulation = this.addModule('adaLN_modulation', new nn.Sequential(new nn.SiLU(), new nn.Linear(hiddenSize, 6 * hiddenSize)));
  }

  override forward(x: Tensor, c: Tensor): Tensor {
    const [shiftMsa, scaleMsa, gateMsa, shiftMlp, scaleMlp, gateMlp] = this.adaLNModulation.forward(c).chunk(6, 1) as
      [Tensor, Tensor, Tensor, Tensor, Tensor, Tensor];
    // x + gate * branch(modulate(norm(x), shift, scale)), the elementwise parts fused where the addon can (src/torch/fused-adaln.ts).
    const h = torch.gatedResidual(x, gateMsa, this.attn.forward(torch.modulatedLayerNorm(x, shiftMsa, scaleMsa, this.norm1.eps)));
    return torch.gatedResidual(h, gateMlp, this.mlp.forward(torch.modulatedLayerNorm(h, shiftMlp, scaleMlp, this.norm2.eps)));
  }
}

/** Modulated LayerNorm, then a linear map of each token to its p x p x outChannels patch. */
export class FinalLayer extends nn.Module {
  readonly normFinal: nn.LayerNorm;
  readonly linear: nn.Linear;
  readonly adaLNModulation: nn.Sequential;

  constructor(hiddenSize: number, patchSize: number, outChannels: number) {
    super();
    this.normFinal = this.addModule('norm_final', new nn.LayerNorm(hiddenSize, { elementwiseAffine: false, eps: 1e-6 }));
    this.linear = this.addModule('linear', new nn.Linear(hiddenSize, patchSize * patchSize * outChannels));
    this.adaLNModulation = this.addModule('adaLN_modulation', new nn.Sequential(new nn.SiLU(), new nn.Linear(hiddenSize, 2 * hiddenSize)));
  }

  override forward(x: Tensor, c: Tensor): Tensor {
    const [shift, scale] = this.adaLNModulation.forward(c).chunk(2, 1) as [Tensor, Tensor];
    return this.linear.forward(torch.modulatedLayerNorm(x, shift, scale, this.normFinal.eps));
  }
}

/** The constructor arguments of models.py's SiT/DiT; the optional ones default as upstream. */
export interface SiTConfig {
  depth: number;
  hiddenSize: number;
  patchSize: number;
  numHeads: number;
  /** Side of the square input latent (image size / 8 with the SD VAE): default 32, for 256 px. */
  inputSize?: number;
  /** Default 4. */
  inChannels?: number;
  /** MLP hidden size / hidden size; default 4. */
  mlpRatio?: number;
  /** Probability of training on the null class instead of the label; default 0.1 (0: no null class). */
  classDropoutProb?: number;
  /** Default 1000. */
  numClasses?: number;
  /** Also predict a variance: 2 * inChannels output channels; default true. */
  learnSigma?: boolean;
}

export interface CfgOptions {
  /**
   * How many leading output channels to guide, or 'all' for every channel of the mean prediction
   * (inChannels; REPA guides all). Default: with 4 latent channels the official code's 3, in SiT
   * and in DiT alike (both forward_with_cfg split `eps, rest = model_out[:, :3], model_out[:, 3:]`);
   * with any other width 'all' (DiT.cfgChannels says why).
   */
  channels?: number | 'all';
}

/** A training checkpoint's weights to load: the EMA copy (upstream's find_model) or the raw model. */
export type CheckpointWeights = 'ema' | 'model';

/** DiT: forward returns all outChannels (the noise prediction, then the learned variance). */
export class DiT extends nn.Module {
  readonly config: Required<SiTConfig>;
  readonly outChannels: number;
  readonly xEmbedder: PatchEmbed;
  readonly tEmbedder: TimestepEmbedder;
  readonly yEmbedder: LabelEmbedder;
  /** The fixed sin-cos position embedding [1, T, D]: a parameter that requires no grad, as upstream, so it is in the state dict. */
  readonly posEmbed: Tensor;
  readonly blocks: nn.ModuleList<SiTBlock>;
  readonly finalLayer: FinalLayer;
  /**
   * Channels forwardWithCfg guides by default. With 4 latent channels `model_out[:, :3]`, "for
   * exact reproducibility reasons" (DiT and SiT models.py; an early DiT commit guided 4). Other
   * widths guide all: 3 of 16 or 32 channels leaves most of the mean unguided (LightningDiT kept
   * the 3 for its 32 channels; in its issue 21 a user found all 32 better), and 3 exceeds a 1- or
   * 2-channel output.
   */
  readonly cfgChannels: number | 'all';

  constructor(config: SiTConfig) {
    super();
    const c: Required<SiTConfig> = {
      depth: config.depth, hiddenSize: config.hiddenSize, patchSize: config.patchSize, numHeads: config.numHeads,
      inputSize: config.inputSize ?? 32, inChannels: config.inChannels ?? 4, mlpRatio: config.mlpRatio ?? 4,
      classDropoutProb: config.classDropoutProb ?? 0.1, numClasses: config.numClasses ?? 1000, learnSigma: config.learnSigma ?? true,
    };
    const name = this.constructor.name;
    for (const key of ['depth', 'hiddenSize', 'patchSize', 'numHeads', 'inputSize', 'inChannels', 'numClasses'] as const) {
      if (!Number.isSafeInteger(c[key]) || c[key] < 1) throw new Error(`${name}: config.${key} must be a positive integer, got ${c[key]}`);
    }
    if (!(c.mlpRatio > 0 && Number.isFinite(c.mlpRatio))) throw new Error(`${name}: config.mlpRatio must be a positive number, got ${c.mlpRatio}`);
    if (!(c.classDropoutProb >= 0 && c.classDropoutProb <= 1)) throw new Error(`${name}: config.classDropoutProb must be in [0, 1], got ${c.classDropoutProb}`);
    // Each block holds about (10 + 2 mlpRatio) hiddenSize^2 weights (qkv, proj, MLP, adaLN's 6); SiT-XL/2 has 6.75e8 in all.
    const weights = c.depth * (10 + 2 * c.mlpRatio) * c.hiddenSize ** 2;
    if (weights > 1e11) {
      throw new Error(`${name}: config.depth ${c.depth} x config.hiddenSize ${c.hiddenSize} (mlpRatio ${c.mlpRatio}) make ~${weights.toExponential(1)} ` +
        'weights, far beyond any model that fits in memory (SiT-XL/2: 6.75e8): an absurd size');
    }
    if (c.inputSize % c.patchSize !== 0) throw new Error(`${name}: inputSize ${c.inputSize} is not a multiple of patchSize ${c.patchSize}`);
    if (c.hiddenSize % 4 !== 0) throw new Error(`${name}: hiddenSize ${c.hiddenSize} must be a multiple of 4 for the 2-D sin-cos position embedding`);
    this.config = c;
    this.cfgChannels = c.inChannels === 4 ? 3 : 'all';
    this.outChannels = c.learnSigma ? 2 * c.inChannels : c.inChannels;
    this.xEmbedder = this.addModule('x_embedder', new PatchEmbed(c.inputSize, c.patchSize, c.inChannels, c.hiddenSize));
    this.tEmbedder = this.addModule('t_embedder', new TimestepEmbedder(c.hiddenSize));
    this.yEmbedder = this.addModule('y_embedder', new LabelEmbedder(c.numClasses, c.hiddenSize, c.classDropoutProb));
    this.posEmbed = this.registerParameter('pos_embed', torch.zeros([1, this.xEmbedder.numPatches, c.hiddenSize]));
    this.posEmbed.requiresGrad = false;
    this.blocks = this.addModule('blocks', new nn.ModuleList(Array.from({ length: c.depth }, () => new SiTBlock(c.hiddenSize, c.numHeads, c.mlpRatio))));
    this.finalLayer = this.addModule('final_layer', new FinalLayer(c.hiddenSize, c.patchSize, this.outChannels));
    this.initializeWeights();
  }

  /**
   * The reference initialisation, drawing random numbers in upstream's order (so a seed gives
   * PyTorch's weights): xavier-uniform Linear weights and zero biases, the sin-cos position
   * embedding, the patch embedding initialised like a Linear, N(0, 0.02) label and timestep
   * embeddings, and zeros for every adaLN modulation and the final linear layer (adaLN-Zero: each
   * block starts as the identity and the output as zero).
   */
  initializeWeights(): void {
    torch.scope(() => {
      this.apply((m) => {
        if (m instanceof nn.Linear) {
          init.xavierUniform_(m.weight);
          if (m.bias !== null) init.zeros_(m.bias);
        }
      });
      const pos = get2dSincosPosEmbed(this.config.hiddenSize, this.config.inputSize / this.config.patchSize);
      torch.noGrad(() => this.posEmbed.copy_(pos.unsqueeze(0)));
      // The conv weight as the [D, C p p] Linear it is; DiT keeps nn.Conv2d's default bias.
      const w = this.xEmbedder.proj.weight;
      torch.noGrad(() => init.xavierUniform_(w.view(w.size(0), -1)));
      init.normal_(this.yEmbedder.embeddingTable.weight, 0, 0.02);
      init.normal_((this.tEmbedder.mlp.at(0) as nn.Linear).weight, 0, 0.02);
      init.normal_((this.tEmbedder.mlp.at(2) as nn.Linear).weight, 0, 0.02);
      for (const layer of [...this.blocks, this.finalLayer]) {
        const modulation = layer.adaLNModulation.at(-1) as nn.Linear;
        init.zeros_(modulation.weight);
        init.zeros_(modulation.bias!);
      }
      init.zeros_(this.finalLayer.linear.weight);
      init.zeros_(this.finalLayer.linear.bias!);
    });
  }

  /** [N, T, p p C] tokens to [N, C, H, W] images (upstream's einsum 'nhwpqc->nchpwq'). */
  unpatchify(x: Tensor): Tensor {
    const c = this.outChannels;
    const p = this.config.patchSize;
    const h = Math.round(Math.sqrt(x.size(1)));
    if (h * h !== x.size(1)) throw new Error(`${this.constructor.name}.unpatchify: ${x.size(1)} tokens do not form a square grid`);
    return x.reshape(x.size(0), h, h, p, p, c).permute(0, 5, 1, 3, 2, 4).reshape(x.size(0), c, h * p, h * p);
  }

  /**
   * x [N, C, H, W] latents, t [N] timesteps (float or integer), y [N] class labels (numClasses is
   * the null class) to [N, outChannels, H, W]. In training mode labels are dropped at random.
   */
  override forward(x: Tensor, t: Tensor, y: Tensor): Tensor {
    let h = this.xEmbedder.forward(x).add(this.posEmbed);
    const c = this.tEmbedder.forward(t).add(this.yEmbedder.forward(y, this.training));
    for (const block of this.blocks) h = block.forward(h, c);
    return this.unpatchify(this.finalLayer.forward(h, c));
  }

  /**
   * Classifier-free guidance in one batch (GLIDE's, as upstream's forward_with_cfg): the first
   * half of x runs twice, with the first half of y (the labels) and the second (normally the null
   * class); the guided channels become uncond + cfgScale (cond - uncond) in both halves, the
   * others are passed through.
   */
  forwardWithCfg(x: Tensor, t: Tensor, y: Tensor, cfgScale: number, options: CfgOptions = {}): Tensor {
    const name = `${this.constructor.name}.forwardWithCfg`;
    const n = x.size(0);
    if (n % 2 !== 0) throw new Error(`${name}: the batch must hold a conditional and an unconditional half, got ${n} samples`);
    const half = x.slice(0, 0, n / 2);
    // Under bfloat16 autocast the output is bfloat16: guide in float32, where cfgScale (cond - uncond) loses no bits.
    const modelOut = this.forward(torch.cat([half, half], 0), t, y).float();
    const channels = options.channels ?? this.cfgChannels;
    const k = channels === 'all' ? this.config.inChannels : channels;
    if (!Number.isInteger(k) || k < 1 || k > modelOut.size(1)) {
      throw new Error(`${name}: channels must be 'all' or an integer in [1, ${modelOut.size(1)}], got ${String(channels)}`);
    }
    const [cond, uncond] = modelOut.slice(1, 0, k).split(n / 2, 0) as [Tensor, Tensor];
    const halfEps = uncond.add(cond.sub(uncond).mul(cfgScale));
    return torch.cat([torch.cat([halfEps, halfEps], 0), modelOut.slice(1, k)], 1);
  }

  /**
   * A model built from `config` with the weights of an official checkpoint: a file (torch.save
   * .pt/.pth, or .safetensors) or an object already loaded. The object is a plain state dict or a
   * training checkpoint {model, ema, opt, args}, whose EMA weights are taken unless `weights`
   * says 'model'. Bad keys or shapes raise an error naming the file and every offending key.
   */
  static fromCheckpoint<M extends DiT>(
    this: new (config: SiTConfig) => M,
    checkpoint: string | nn.StateDict | Record<string, unknown>,
    config: SiTConfig,
    options: { weights?: CheckpointWeights } = {},
  ): M {
    const source = typeof checkpoint === 'string' ? checkpoint : 'checkpoint';
    const loaded = typeof checkpoint === 'string' ? load(checkpoint) : checkpoint;
    try {
      const stateDict = selectStateDict(loaded, options.weights, source);
      const model = new this(config);
      try {
        model.loadStateDict(stateDict);
      } catch (error) {
        throw new Error(`${source}: ${(error as Error).message}`, { cause: error });
      }
      return model;
    } finally {
      // Tensors read from the file are copied into the model: free them now, not at GC.
      if (typeof checkpoint === 'string') disposeTensors(loaded);
    }
  }
}

/** SiT: forward returns the first inChannels channels only (the velocity, score or noise). */
export class SiT extends DiT {
  override initializeWeights(): void {
    super.initializeWeights();
    init.zeros_(this.xEmbedder.proj.bias!);
  }

  override forward(x: Tensor, t: Tensor, y: Tensor): Tensor {
    const out = super.forward(x, t, y);
    return this.config.learnSigma ? out.chunk(2, 1)[0]! : out;
  }
}

function stateDictEntries(value: unknown): [string, unknown][] | null {
  if (value instanceof Map) return [...value.entries()].every(([k]) => typeof k === 'string') ? [...value.entries()] : null;
  if (value !== null && typeof value === 'object' && Object.getPrototypeOf(value) === Object.prototype) return Object.entries(value);
  return null;
}

function isStateDict(value: unknown): value is nn.StateDict | Record<string, Tensor> {
  const entries = stateDictEntries(value);
  return entries !== null && entries.length > 0 && entries.every(([, v]) => v instanceof torch.Tensor);
}

/** The state dict inside a loaded checkpoint: itself, or its 'ema' (default) or 'model' entry. */
function selectStateDict(loaded: unknown, weights: CheckpointWeights | undefined, source: string): nn.StateDict | Record<string, Tensor> {
  if (isStateDict(loaded)) {
    if (weights !== undefined) throw new Error(`${source}: a plain state dict, not a training checkpoint with '${weights}' weights`);
    return loaded;
  }
  const entries = stateDictEntries(loaded);
  if (entries === null) throw new Error(`${source}: expected a state dict or a {model, ema, ...} checkpoint, got ${typeof loaded}`);
  const record = new Map(entries);
  const key = weights ?? (record.has('ema') ? 'ema' : 'model');
  const chosen = record.get(key);
  if (!isStateDict(chosen)) {
    throw new Error(`${source}: neither a state dict nor a checkpoint with a '${key}' state dict (top-level keys: ${[...record.keys()].join(', ')})`);
  }
  return chosen;
}

function disposeTensors(value: unknown, depth = 0): void {
  if (value instanceof torch.Tensor) value.dispose();
  else if (depth > 8 || value === null || typeof value !== 'object') return;
  else if (value instanceof Map) for (const v of value.values()) disposeTensors(v, depth + 1);
  else for (const v of Object.values(value)) disposeTensors(v, depth + 1);
}

// --- Sine/cosine position embedding (MAE's util/pos_embed.py) --------------------------------------

/**
 * The fixed 2-D sin-cos position embedding [gridSize^2, embedDim] in float32, computed in float64
 * as numpy does. Token m = row * gridSize + col; the first half of the channels encodes its
 * column and the second its row (upstream's np.meshgrid(grid_w, grid_h) puts w first).
 */
export function get2dSincosPosEmbed(embedDim: number, gridSize: number): Tensor {
  if (embedDim % 4 !== 0) throw new Error(`get2dSincosPosEmbed: embedDim ${embedDim} must be a multiple of 4`);
  return torch.scope(() => {
    const coords = torch.arange(0, gridSize, 1, { dtype: 'float64' });
    const column = coords.repeat(gridSize);
    const row = coords.repeatInterleave(gridSize);
    return torch.cat([get1dSincosPosEmbed(embedDim / 2, column), get1dSincosPosEmbed(embedDim / 2, row)], 1).float();
  });
}

/** [sin(pos omega), cos(pos omega)] for positions [M], with omega_i = 1 / 10000^(i / (embedDim / 2)), i < embedDim / 2. */
function get1dSincosPosEmbed(embedDim: number, pos: Tensor): Tensor {
  const exponent = torch.arange(0, embedDim / 2, 1, { dtype: 'float64' }).div(embedDim / 2);
  const omega = torch.fullLike(exponent, 10000).pow(exponent).reciprocal();
  const out = pos.unsqueeze(1).mul(omega.unsqueeze(0));
  return torch.cat([out.sin(), out.cos()], 1);
}

// --- Configs (models.py's SiT_models / DiT_models) -----------------------------------------------

/** The bounds a SiTConfig read from a file is checked against (SiT-XL/2: depth 28, width 1152, 16 heads). */
export const SIT_CONFIG_SIZES: Readonly<Record<string, SizeRange>> = {
  depth: { min: 1, max: 256 }, hiddenSize: { min: 1, max: 16384 }, patchSize: { min: 1, max: 64 }, numHeads: { min: 1, max: 256 },
  inputSize: { min: 1, max: 1024 }, inChannels: { min: 1, max: 1024 }, numClasses: { min: 1, max: 1_000_000 },
};

export type SiTName = `${'SiT' | 'DiT'}-${'S' | 'B' | 'L' | 'XL'}/${2 | 4 | 8}`;

export const SIT_CONFIGS: Readonly<Record<SiTName, SiTConfig>> = {
  'SiT-XL/2': { depth: 28, hiddenSize: 1152, patchSize: 2, numHeads: 16 },
  'SiT-XL/4': { depth: 28, hiddenSize: 1152, patchSize: 4, numHeads: 16 },
  'SiT-XL/8': { depth: 28, hiddenSize: 1152, patchSize: 8, numHeads: 16 },
  'SiT-L/2': { depth: 24, hiddenSize: 1024, patchSize: 2, numHeads: 16 },
  'SiT-L/4': { depth: 24, hiddenSize: 1024, patchSize: 4, numHeads: 16 },
  'SiT-L/8': { depth: 24, hiddenSize: 1024, patchSize: 8, numHeads: 16 },
  'SiT-B/2': { depth: 12, hiddenSize: 768, patchSize: 2, numHeads: 12 },
  'SiT-B/4': { depth: 12, hiddenSize: 768, patchSize: 4, numHeads: 12 },
  'SiT-B/8': { depth: 12, hiddenSize: 768, patchSize: 8, numHeads: 12 },
  'SiT-S/2': { depth: 12, hiddenSize: 384, patchSize: 2, numHeads: 6 },
  'SiT-S/4': { depth: 12, hiddenSize: 384, patchSize: 4, numHeads: 6 },
  'SiT-S/8': { depth: 12, hiddenSize: 384, patchSize: 8, numHeads: 6 },
  'DiT-XL/2': { depth: 28, hiddenSize: 1152, patchSize: 2, numHeads: 16 },
  'DiT-XL/4': { depth: 28, hiddenSize: 1152, patchSize: 4, numHeads: 16 },
  'DiT-XL/8': { depth: 28, hiddenSize: 1152, patchSize: 8, numHeads: 16 },
  'DiT-L/2': { depth: 24, hiddenSize: 1024, patchSize: 2, numHeads: 16 },
  'DiT-L/4': { depth: 24, hiddenSize: 1024, patchSize: 4, numHeads: 16 },
  'DiT-L/8': { depth: 24, hiddenSize: 1024, patchSize: 8, numHeads: 16 },
  'DiT-B/2': { depth: 12, hiddenSize: 768, patchSize: 2, numHeads: 12 },
  'DiT-B/4': { depth: 12, hiddenSize: 768, patchSize: 4, numHeads: 12 },
  'DiT-B/8': { depth: 12, hiddenSize: 768, patchSize: 8, numHeads: 12 },
  'DiT-S/2': { depth: 12, hiddenSize: 384, patchSize: 2, numHeads: 6 },
  'DiT-S/4': { depth: 12, hiddenSize: 384, patchSize: 4, numHeads: 6 },
  'DiT-S/8': { depth: 12, hiddenSize: 384, patchSize: 8, numHeads: 6 },
};

// --- ONNX export: each module's forward as graph nodes (src/onnx) --------------------------------

function modulateOnnx(g: OnnxGraph, x: Value, shift: Value, scale: Value): Value {
  return g.add(g.mul(x, g.add(g.unsqueeze(scale, 1), g.scalar(1))), g.unsqueeze(shift, 1));
}

registerExporter(PatchEmbed, (m, g, [x], path) => {
  const projected = exportModule(m.proj, g, [x!], childPath(path, 'proj'));
  const [n, d] = projected.shape as [Dim, number];
  return g.transpose(g.reshape(projected, [n, d, -1]), [0, 2, 1]);
});
registerExporter(Mlp, (m, g, [x], path) => {
  const hidden = exportModule(m.act, g, [exportModule(m.fc1, g, [x!], childPath(path, 'fc1'))], childPath(path, 'act'));
  return exportModule(m.fc2, g, [hidden], childPath(path, 'fc2'));
});
registerExporter(TimestepEmbedder, (m, g, [t], path) => {
  const half = Math.floor(m.frequencyEmbeddingSize / 2);
  if (m.frequencyEmbeddingSize % 2 !== 0) throw new Error(`ONNX export: TimestepEmbedder at '${path}' with an odd frequency size ${m.frequencyEmbeddingSize}`);
  const freqs = torch.arange(0, half, 1, { dtype: 'float32' }).mul(-Math.log(10000)).div(half).exp().unsqueeze(0);
  const args = g.mul(g.unsqueeze(t!, 1), g.tensor(freqs, childPath(path, 'freqs')));
  return exportModule(m.mlp, g, [g.concat([g.cos(args), g.sin(args)], -1)], childPath(path, 'mlp'));
});
// Eval mode: no label is dropped (the null class is asked for by its index).
registerExporter(LabelEmbedder, (m, g, [labels], path) => exportModule(m.embeddingTable, g, [labels!], childPath(path, 'embedding_table')));
registerExporter(SiTBlock, (m, g, [x, c], path) => {
  const hidden = x!.shape[2] as number;
  const [shiftMsa, scaleMsa, gateMsa, shiftMlp, scaleMlp, gateMlp] = g.split(exportModule(m.adaLNModulation, g, [c!], childPath(path, 'adaLN_modulation')), 1, Array(6).fill(hidden)) as
    [Value, Value, Value, Value, Value, Value];
  const attended = exportModule(m.attn, g, [modulateOnnx(g, exportModule(m.norm1, g, [x!], childPath(path, 'norm1')), shiftMsa, scaleMsa)], childPath(path, 'attn'));
  const h = g.add(x!, g.mul(g.unsqueeze(gateMsa, 1), attended));
  const mlp = exportModule(m.mlp, g, [modulateOnnx(g, exportModule(m.norm2, g, [h], childPath(path, 'norm2')), shiftMlp, scaleMlp)], childPath(path, 'mlp'));
  return g.add(h, g.mul(g.unsqueeze(gateMlp, 1), mlp));
});
registerExporter(FinalLayer, (m, g, [x, c], path) => {
  const [shift, scale] = g.split(exportModule(m.adaLNModulation, g, [c!], childPath(path, 'adaLN_modulation')), 1, Array(2).fill(x!.shape[2] as number)) as [Value, Value];
  return exportModule(m.linear, g, [modulateOnnx(g, exportModule(m.normFinal, g, [x!], childPath(path, 'norm_final')), shift, scale)], childPath(path, 'linear'));
});

/** DiT.forward of x [N, C, H, W], t [N] (float32) and y [N] (int64) as graph nodes. */
function ditOnnx(m: DiT, g: OnnxGraph, x: Value, t: Value, y: Value, path: string): Value {
  let h = g.add(exportModule(m.xEmbedder, g, [x], childPath(path, 'x_embedder')), g.tensor(m.posEmbed, childPath(path, 'pos_embed')));
  const c = g.add(exportModule(m.tEmbedder, g, [t], childPath(path, 't_embedder')), exportModule(m.yEmbedder, g, [y], childPath(path, 'y_embedder')));
  [...m.blocks].forEach((block, i) => { h = exportModule(block, g, [h, c], childPath(path, `blocks.${i}`)); });
  const out = exportModule(m.finalLayer, g, [h, c], childPath(path, 'final_layer'));
  const { patchSize: p } = m.config;
  const side = m.config.inputSize / p;
  const n = x.shape[0]!;
  const patches = g.transpose(g.reshape(out, [n, side, side, p, p, m.outChannels]), [0, 5, 1, 3, 2, 4]);
  return g.reshape(patches, [n, m.outChannels, side * p, side * p]);
}

registerExporter(DiT, (m, g, [x, t, y], path) => ditOnnx(m, g, x!, t!, y!, path));
registerExporter(SiT, (m, g, [x, t, y], path) => {
  const out = ditOnnx(m, g, x!, t!, y!, path);
  return m.config.learnSigma ? g.slice(out, 1, 0, m.config.inChannels) : out;
});

/**
 * forwardWithCfg as a graph of the conditional half only: x [B, C, H, W], t [B], labels y [B] and
 * cfg_scale [1] in; the network runs on the batch doubled with the null class, and the guided
 * channels come out as uncond + cfg_scale (cond - uncond), the others as cond's: the first B rows
 * of forwardWithCfg(cat(x, x), cat(t, t), cat(y, null), cfgScale).
 */
export function forwardWithCfgOnnx(m: DiT, g: OnnxGraph, [x, t, y, cfgScale]: [Value, Value, Value, Value], options: CfgOptions = {}): Value {
  const channels = options.channels ?? m.cfgChannels;
  const outChannels = m instanceof SiT && m.config.learnSigma ? m.config.inChannels : m.outChannels;
  const k = channels === 'all' ? m.config.inChannels : channels;
  if (!Number.isInteger(k) || k < 1 || k > outChannels) throw new Error(`ONNX export: cfg channels must be 'all' or in [1, ${outChannels}], got ${String(channels)}`);
  const nullLabels = g.add(g.mul(y, g.ints([0])), g.ints([m.config.numClasses]));
  const out = exportModule(m, g, [g.concat([x, x], 0), g.concat([t, t], 0), g.concat([y, nullLabels], 0)], '');
  const [cond, uncond] = g.splitEqual(out, 0, 2, x.shape[0]!);
  const guide = (v: Value) => g.slice(v, 1, 0, k);
  const guided = g.add(guide(uncond!), g.mul(g.sub(guide(cond!), guide(uncond!)), cfgScale));
  return k === outChannels ? guided : g.concat([guided, g.slice(cond!, 1, k, outChannels)], 1);
}
