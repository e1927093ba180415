// DINOv2's self-distillation head and the losses over its outputs, as facebookresearch/dinov2
// defines them: DINOHead (dinov2/layers/dino_head.py), DINOLoss with softmax centering
// (dinov2/loss/dino_clstoken_loss.py), iBOTPatchLoss (ibot_patch_loss.py), KoLeoLoss
// (koleo_loss.py), and how SSLMetaArch.forward_backward (dinov2/train/ssl_meta_arch.py) weighs
// the crop pairs. State-dict keys are upstream's (`mlp.0.weight`, `last_layer.weight_g`,
// `last_layer.weight_v`, `center`).
//
// Choices where upstream leaves a freedom:
// - the last layer's weight norm is computed here (reals has no torch.nn.utils.weight_norm):
//   weight = weight_v * weight_g / ||weight_v|| per output row, with weight_g of shape [K, 1] as
//   PyTorch's weight_norm(dim=0) keeps it;
// - weight_g stays at 1 and is not trained by default (DINO's norm_last_layer=True). DINOv2 fills
//   it with 1 too but leaves it trainable (normLastLayer: false); a fixed norm keeps the prototypes
//   on the unit sphere.
// - centering only ("centering" in DINOv2's train.centering); Sinkhorn-Knopp is not implemented.
import * as torch from '../torch/index.js';
import type { Tensor } from '../torch/index.js';
import * as nn from '../nn/index.js';

const F = nn.F;

export interface DINOHeadConfig {
  /** Width of the backbone tokens (embedDim). */
  inDim: number;
  /** head_n_prototypes: the softmax's size K (DINOv2: 65536). */
  outDim: number;
  /** head_hidden_dim (DINOv2: 2048). */
  hiddenDim: number;
  /** head_bottleneck_dim (DINOv2: 256): the L2-normalized features the prototypes score. */
  bottleneckDim: number;
  /** head_nlayers: Linear layers of the MLP, GELU between them (DINOv2: 3). */
  nlayers: number;
  /** DINO's norm_last_layer: weight_g fixed at 1 (default true); false trains it, as DINOv2 does. */
  normLastLayer?: boolean;
}

/** Linear without bias whose weight is weight_v with each row rescaled to norm weight_g. */
export class WeightNormLinear extends nn.Module {
  readonly weightG: Tensor;
  readonly weightV: Tensor;

  constructor(readonly inFeatures: number, readonly outFeatures: number) {
    super();
    // As weight_norm(nn.Linear(in, out, bias=False)): v is the Linear's initial weight, g its row norms.
    const v = new nn.Linear(inFeatures, outFeatures, { bias: false }).weight.detach();
    this.weightV = this.registerParameter('weight_v', v);
    this.weightG = this.registerParameter('weight_g', torch.noGrad(() => v.norm(2, [1], true)));
  }

  /** weight_v * (weight_g / ||weight_v||), rows normalized: torch._weight_norm(v, g, 0). */
  weight(): Tensor { return this.weightV.mul(this.weightG.div(this.weightV.norm(2, [1], true))); }

  override forward(x: Tensor): Tensor { return F.linear(x, this.weight()); }
}

export class DINOHead extends nn.Module {
  readonly mlp: nn.Module;
  readonly lastLayer: WeightNormLinear;

  constructor(readonly config: DINOHeadConfig) {
    super();
    const { inDim, outDim, hiddenDim, bottleneckDim } = config;
    const nlayers = Math.max(config.nlayers, 1);
    for (const [name, value] of Object.entries({ inDim, outDim, hiddenDim, bottleneckDim, nlayers })) {
      if (!Number.isInteger(value) || value < 1) throw new Error(`DINOHead: ${name} must be a positive integer, got ${value}`);
    }
    // _build_mlp: one Linear (key `mlp.weight`) or Linear, GELU, ..., Linear (`mlp.0.weight`, `mlp.2.weight`, ...).
    if (nlayers === 1) {
      this.mlp = this.addModule('mlp', new nn.Linear(inDim, bottleneckDim));
    } else {
      const layers: nn.Module[] = [new nn.Linear(inDim, hiddenDim), new nn.GELU()];
      for (let i = 0; i < nlayers - 2; i++) layers.push(new nn.Linear(hiddenDim, hiddenDim), new nn.GELU());
      layers.push(new nn.Linear(hiddenDim, bottleneckDim));
      this.mlp = this.addModule('mlp', new nn.Sequential(...layers));
    }
    // _init_weights runs before last_layer exists, so the last layer keeps nn.Linear's init.
    torch.noGrad(() => {
      for (const m of this.mlp.modules()) {
        if (m instanceof nn.Linear) {
          nn.init.truncNormal_(m.weight, { std: 0.02 });
          if (m.bias !== null) nn.init.zeros_(m.bias);
        }
      }
    });
    this.lastLayer = this.addModule('last_layer', new WeightNormLinear(bottleneckDim, outDim));
    torch.noGrad(() => this.lastLayer.weightG.fill_(1));
    if (config.normLastLayer ?? true) this.lastLayer.weightG.requiresGrad_(false);
  }

  /** [..., inDim] tokens to [..., outDim] prototype scores (logits). */
  override forward(x: Tensor): Tensor {
    const h = F.normalize(this.mlp.forward(x) as Tensor, { dim: -1, p: 2, eps: 1e-12 });
    return this.lastLayer.forward(h);
  }
}

/** sum(t * log_softmax(s / temp)) over the last dimension: minus the cross-entropy per row. */
function negativeCrossEntropy(teacher: Tensor, student: Tensor, temp: number): Tensor {
  return teacher.mul(F.logSoftmax(student.div(temp), -1)).sum(-1);
}

/**
 * DINOLoss: cross-entropy between the student's softmax (temperature studentTemp) and the
 * teacher's centered, sharpened softmax; `center` is an EMA (centerMomentum) of the teacher's
 * mean output.
 */
export class DINOLoss extends nn.Module {
  readonly center: Tensor;

  constructor(readonly outDim: number, readonly studentTemp = 0.1, readonly centerMomentum = 0.9) {
    super();
    this.center = this.registerBuffer('center', torch.zeros([1, outDim]));
  }

  /** softmax((teacher - center) / teacherTemp), with the center before this batch's update. */
  softmaxCenterTeacher(teacherOutput: Tensor, teacherTemp: number): Tensor {
    return torch.noGrad(() => F.softmax(teacherOutput.sub(this.center).div(teacherTemp), -1));
  }

  /** center = center * m + mean(teacher outputs) * (1 - m), in place (single process: world size 1). */
  updateCenter(teacherOutput: Tensor): void {
    torch.noGrad(() => torch.scope(() => {
      const batchCenter = teacherOutput.sum(0, true).div(teacherOutput.size(0));
      this.center.copy_(this.center.mul(this.centerMomentum).add(batchCenter.mul(1 - this.centerMomentum)));
    }));
  }

  /** -sum over every (student, teacher) pair of the batch-mean of sum(t * log_softmax(s / studentTemp)). */
  override forward(studentOutputs: Tensor[], teacherSoftmaxed: Tensor[]): Tensor {
    let total: Tensor | null = null;
    for (const s of studentOutputs) {
      const lsm = F.logSoftmax(s.div(this.studentTemp), -1);
      for (const t of teacherSoftmaxed) {
        const term = t.mul(lsm).sum(-1).mean().neg();
        total = total === null ? term : total.add(term);
      }
    }
    if (total === null) throw new Error('DINOLoss: no student or teacher outputs');
    return total;
  }
}

/** iBOTPatchLoss: DINOLoss's cross-entropy per masked patch token, with its own center. */
export class IBOTPatchLoss extends nn.Module {
  readonly center: Tensor;

  constructor(readonly patchOutDim: number, readonly studentTemp = 0.1, readonly centerMomentum = 0.9) {
    super();
    this.center = this.registerBuffer('center', torch.zeros([1, 1, patchOutDim]));
  }

  /** softmax((tokens - center) / teacherTemp) of the teacher's masked patch outputs [M, K] (or [1, M, K]). */
  softmaxCenterTeacher(teacherPatchTokens: Tensor, teacherTemp: number): Tensor {
    return torch.noGrad(() => {
      const centered = teacherPatchTokens.sub(teacherPatchTokens.ndim === 2 ? this.center.squeeze(0) : this.center);
      return F.softmax(centered.div(teacherTemp), -1);
    });
  }

  /** center = center * m + mean over the masked tokens [M, K] * (1 - m). */
  updateCenter(teacherPatchTokens: Tensor): void {
    torch.noGrad(() => torch.scope(() => {
      const tokens = teacherPatchTokens.ndim === 2 ? teacherPatchTokens.unsqueeze(0) : teacherPatchTokens;
      const batchCenter = tokens.mean(1).sum(0, true).div(tokens.size(0)).unsqueeze(0);
      this.center.copy_(this.center.mul(this.centerMomentum).add(batchCenter.mul(1 - this.centerMomentum)));
    }));
  }

  /**
   * forward_masked: the masked tokens' cross-entropies [M], each weighted by 1 / (masked tokens of
   * its image) (`masksWeight`), summed and divided by the number of images `masks.size(0)`.
   */
  forwardMasked(studentMasked: Tensor, teacherMasked: Tensor, masks: Tensor, masksWeight: Tensor | null = null): Tensor {
    const loss = negativeCrossEntropy(teacherMasked, studentMasked, this.studentTemp);
    const weight = masksWeight ?? maskWeights(masks);
    return loss.mul(weight).sum().neg().div(masks.size(0));
  }
}

/** 1 / (masked patches of its image) for every masked patch, in row-major order of `masks` [B, N] (collate's masks_weight). */
export function maskWeights(masks: Tensor): Tensor {
  return torch.noGrad(() => {
    const perImage = masks.float().sum(-1, true).clamp(1).reciprocal().expandAs(masks);
    return perImage.index(masks);
  });
}

/**
 * KoLeoLoss: -mean(log(d_i + eps)) with d_i the distance of each L2-normalized row of x [B, D] to
 * its nearest other row (PairwiseDistance(2, eps=1e-8): ||a - b + eps||).
 */
export function koleoLoss(x: Tensor, eps = 1e-8): Tensor {
  const normalized = F.normalize(x.float(), { p: 2, dim: -1, eps });
  const nearest = torch.noGrad(() => {
    const dots = normalized.mm(normalized.t());
    const n = normalized.size(0);
    return dots.sub(torch.eye(n, { dtype: dots.dtype }).mul(dots.add(1))).argmax(1);
  });
  const distances = normalized.sub(normalized.indexSelect(0, nearest)).add(1e-8).norm(2, [-1]);
  return distances.add(eps).log().mean().neg();
}

export interface CrossViewLosses {
  /** DINO loss of the local crops' CLS outputs against both global teacher views. */
  dinoLocal: Tensor;
  /** DINO loss of each global crop's CLS output against the other view's teacher output. */
  dinoGlobal: Tensor;
}

/**
 * The DINO terms as SSLMetaArch.forward_backward weighs them: each (student crop, teacher global
 * crop) pair of different views contributes its mean cross-entropy, and the sum is divided by
 * 2 + max(2 * nLocal, 1) (upstream's n_global_crops_loss_terms + n_local_crops_loss_terms), so
 * with local crops the two add up to the mean over the 2 + 2 * nLocal pairs.
 *
 * studentLocal: [nLocal * B, K] (local crop 0 of every image, then crop 1, ...); studentGlobal:
 * [2B, K] (global crop 0 of every image, then crop 1); teacherSoftmaxed: [2B, K] the teacher's
 * centered softmax in the same order as studentGlobal.
 */
export function dinoCrossViewLosses(
  loss: DINOLoss, studentLocal: Tensor | null, studentGlobal: Tensor, teacherSoftmaxed: Tensor, nLocal: number,
): CrossViewLosses {
  if (studentGlobal.size(0) % 2 !== 0 || teacherSoftmaxed.size(0) !== studentGlobal.size(0)) {
    throw new Error(`dinoCrossViewLosses: expected 2B student and teacher global outputs, got ${studentGlobal.size(0)} and ${teacherSoftmaxed.size(0)}`);
  }
  const [t0, t1] = teacherSoftmaxed.chunk(2, 0) as [Tensor, Tensor];
  const terms = 2 + Math.max(2 * nLocal, 1);
  const dinoLocal = nLocal > 0 && studentLocal !== null
    ? loss.forward(studentLocal.chunk(nLocal, 0), [t1, t0]).div(terms)
    : torch.zeros([], { device: studentGlobal.device });
  // The teacher's views swapped, so that student view 0 learns from teacher view 1 and the other way round.
  const swapped = torch.cat([t1, t0], 0);
  const dinoGlobal = loss.forward([studentGlobal], [swapped]).mul(2).div(terms);
  return { dinoLocal, dinoGlobal };
}
