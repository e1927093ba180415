// The PatchGAN discriminator and the GAN-loss helpers of taming-transformers:
// taming/modules/discriminator/model.py (NLayerDiscriminator with use_actnorm=False, weights_init)
// and taming/modules/losses/vqperceptual.py (hinge_d_loss, vanilla_d_loss, adopt_weight,
// VQLPIPSWithDiscriminator.calculate_adaptive_weight), which latent-diffusion's
// LPIPSWithDiscriminator reuses. Keys are taming's (`main.0.weight`, `main.3.running_mean`, ...);
// in a taming/LDM training checkpoint the discriminator sits under `loss.discriminator.`.
import * as torch from '../torch/index.js';
import type { Tensor } from '../torch/index.js';
import * as nn from '../nn/index.js';
import { load } from '../io/index.js';

const F = nn.F;

export interface NLayerDiscriminatorConfig {
  /** Channels of the input images (input_nc). */
  inputNc: number;
  /** Filters of the first conv (ndf); layer n has ndf * min(2^n, 8). */
  ndf: number;
  /** Number of stride-2 convs, counting the first (n_layers). */
  nLayers: number;
}

/** taming's defaults, the configuration VQGAN and LDM autoencoders train with. */
export const NLAYER_DISCRIMINATOR_DEFAULTS: NLayerDiscriminatorConfig = { inputNc: 3, ndf: 64, nLayers: 3 };

/**
 * taming's weights_init, applied to each module: conv weights ~ N(0, 0.02) (conv biases keep their
 * default init), BatchNorm weights ~ N(1, 0.02) and biases 0.
 */
export function weightsInit(m: nn.Module): void {
  if (m instanceof nn.Conv2d || m instanceof nn.ConvTranspose2d) {
    nn.init.normal_(m.weight, 0, 0.02);
  } else if (m instanceof nn.BatchNorm2d) {
    nn.init.normal_(m.weight!, 1, 0.02);
    nn.init.constant_(m.bias!, 0);
  }
}

/**
 * The PatchGAN discriminator of pix2pix as taming builds it: 4x4 convs with padding 1, stride 2
 * for the first nLayers and stride 1 for the last two, BatchNorm (the convs before it have no
 * bias) and LeakyReLU(0.2), ending in one channel of logits per patch: [N, 1, h, w]. Initialized
 * as `NLayerDiscriminator(...).apply(weights_init)`, drawing the same numbers as PyTorch after the
 * same torch.manualSeed.
 */
export class NLayerDiscriminator extends nn.Module {
  readonly config: NLayerDiscriminatorConfig;
  readonly main: nn.Sequential;

  constructor(config: Partial<NLayerDiscriminatorConfig> = {}) {
    super();
    this.config = { ...NLAYER_DISCRIMINATOR_DEFAULTS, ...config };
    const { inputNc, ndf, nLayers } = this.config;
    const kw = 4;
    const padw = 1;
    const sequence: nn.Module[] = [new nn.Conv2d(inputNc, ndf, kw, { stride: 2, padding: padw }), new nn.LeakyReLU(0.2)];
    let nfMult = 1;
    let nfMultPrev = 1;
    for (let n = 1; n < nLayers; n++) {
      nfMultPrev = nfMult;
      nfMult = Math.min(2 ** n, 8);
      sequence.push(
        new nn.Conv2d(ndf * nfMultPrev, ndf * nfMult, kw, { stride: 2, padding: padw, bias: false }),
        new nn.BatchNorm2d(ndf * nfMult),
        new nn.LeakyReLU(0.2),
      );
    }
    nfMultPrev = nfMult;
    nfMult = Math.min(2 ** nLayers, 8);
    sequence.push(
      new nn.Conv2d(ndf * nfMultPrev, ndf * nfMult, kw, { stride: 1, padding: padw, bias: false }),
      new nn.BatchNorm2d(ndf * nfMult),
      new nn.LeakyReLU(0.2),
      new nn.Conv2d(ndf * nfMult, 1, kw, { stride: 1, padding: padw }),
    );
    this.main = this.addModule('main', new nn.Sequential(...sequence));
    this.apply(weightsInit);
  }

  override forward(input: Tensor): Tensor { return this.main.forward(input); }

  /**
   * A discriminator with the weights of a checkpoint: a file (torch.save or safetensors) or an
   * object already loaded, holding a plain state dict or a Lightning checkpoint ({state_dict, ...}).
   * Keys under `prefix` are taken with the prefix removed; by default `loss.discriminator.` when
   * the checkpoint has such keys (taming's VQGAN and LDM autoencoder checkpoints), else none.
   * Errors name the file and every bad key.
   */
  static fromCheckpoint(
    checkpoint: string | Map<string, Tensor> | Record<string, unknown>,
    config: Partial<NLayerDiscriminatorConfig> = {},
    options: { prefix?: string } = {},
  ): NLayerDiscriminator {
    const source = typeof checkpoint === 'string' ? checkpoint : 'checkpoint';
    const model = new NLayerDiscriminator(config);
    torch.scope(() => {
      try {
        model.loadStateDict(discriminatorStateDict(typeof checkpoint === 'string' ? load(checkpoint) : checkpoint, options.prefix));
      } catch (error) {
        throw new Error(`${source}: ${(error as Error).message}`, { cause: error });
      }
    });
    return model;
  }
}

const TAMING_PREFIX = 'loss.discriminator.';

function entriesOf(value: unknown): [string, unknown][] | null {
  if (value instanceof Map) return [...value.entries()] as [string, unknown][];
  if (value !== null && typeof value === 'object' && !Array.isArray(value) && !(value instanceof torch.Tensor)) return Object.entries(value);
  return null;
}

function discriminatorStateDict(loaded: unknown, prefix: string | undefined): Map<string, Tensor> {
  let entries = entriesOf(loaded);
  if (entries === null) throw new Error(`expected a state dict or a {state_dict, ...} checkpoint, got ${typeof loaded}`);
  const nested = entries.find(([k]) => k === 'state_dict');
  if (nested !== undefined) {
    entries = entriesOf(nested[1]);
    if (entries === null) throw new Error('state_dict is not a dict');
  }
  const chosen = prefix ?? (entries.some(([k]) => k.startsWith(TAMING_PREFIX)) ? TAMING_PREFIX : '');
  const out = new Map<string, Tensor>();
  for (const [key, value] of entries) {
    if (!key.startsWith(chosen)) continue;
    if (!(value instanceof torch.Tensor)) throw new Error(`${key} is not a tensor`);
    out.set(key.slice(chosen.length), value);
  }
  if (out.size === 0) throw new Error(`no keys under the prefix '${chosen}'`);
  return out;
}

// --- losses (vqperceptual.py) ---------------------------------------------------------------------

/** 0.5 (mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))). */
export function hingeDLoss(logitsReal: Tensor, logitsFake: Tensor): Tensor {
  const lossReal = F.relu(logitsReal.rsub(1)).mean();
  const lossFake = F.relu(logitsFake.add(1)).mean();
  return lossReal.add(lossFake).mul(0.5);
}

/** 0.5 (mean(softplus(-D(real))) + mean(softplus(D(fake)))): the non-saturating logistic loss. */
export function vanillaDLoss(logitsReal: Tensor, logitsFake: Tensor): Tensor {
  return F.softplus(logitsReal.neg()).mean().add(F.softplus(logitsFake).mean()).mul(0.5);
}

/** `value` before `threshold` steps, `weight` from then on: the discriminator's delayed start. */
export function adoptWeight(weight: number, globalStep: number, threshold = 0, value = 0): number {
  return globalStep < threshold ? value : weight;
}

/**
 * The adaptive weight of the generator's GAN loss (VQGAN, Esser et al. 2021, eq. 7):
 * ||grad nll|| / (||grad g|| + 1e-4) with both gradients taken w.r.t. the decoder's last layer
 * weight, clamped to [0, threshold] (1e4), detached, times `discriminatorWeight`. The graphs are
 * retained so the caller can still backpropagate the total loss. VA-VAE weighs its
 * vision-foundation loss the same way, at the encoder's last layer with threshold 1e8.
 */
export function calculateAdaptiveWeight(nllLoss: Tensor, gLoss: Tensor, lastLayer: Tensor, discriminatorWeight = 1, threshold = 1e4): Tensor {
  const [nllGrads] = torch.autograd.grad(nllLoss, lastLayer, { retainGraph: true });
  const [gGrads] = torch.autograd.grad(gLoss, lastLayer, { retainGraph: true });
  if (!nllGrads || !gGrads) throw new Error('calculateAdaptiveWeight: a loss does not depend on lastLayer');
  const dWeight = nllGrads.norm().div(gGrads.norm().add(1e-4)).clamp(0, threshold).detach();
  return dWeight.mul(discriminatorWeight);
}
