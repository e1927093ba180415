// Interpolant paths x_t = alpha_t * x1 + sigma_t * x0 between noise x0 (t = 0) and data x1
// (t = 1), as SiT's transport/path.py: ICPlan (Linear), VPCPlan (VP) and GVPCPlan (GVP), with
// the drift/diffusion of the score-parametrized SDE and the velocity/score/noise conversions.
import * as torch from '../torch/index.js';
import type { Tensor } from '../torch/index.js';

/** A coefficient and its time derivative, both shaped like the t they came from. */
export type Coefficient = [value: Tensor, derivative: Tensor];

/**
 * Forms of the SDE diffusion coefficient w_t (SiT's compute_diffusion). SiT's CLI offers
 * 'increasing-decreasing' but path.py spells its key 'inccreasing-decreasing', so SiT itself
 * rejects it; here it is norm * sin(pi t)^2 as intended.
 */
export type DiffusionForm = 'constant' | 'SBDM' | 'sigma' | 'linear' | 'decreasing' | 'increasing-decreasing';

/** Reshapes t [B] to [B, 1, ..., 1] so it broadcasts against x [B, ...]. */
export function expandTLikeX(t: Tensor, x: Tensor): Tensor {
  return t.view([t.size(0), ...new Array<number>(x.ndim - 1).fill(1)]);
}

/** The linear path alpha_t = t, sigma_t = 1 - t (SiT's ICPlan). Subclasses change the schedule. */
export class ICPlan {
  computeAlphaT(t: Tensor): Coefficient {
    return [t, torch.onesLike(t)];
  }

  computeSigmaT(t: Tensor): Coefficient {
    return [t.rsub(1), torch.fullLike(t, -1)];
  }

  /** d_alpha_t / alpha_t, written per path in its numerically stable form. */
  computeDAlphaAlphaRatioT(t: Tensor): Tensor {
    return t.reciprocal();
  }

  /**
   * The SDE that has p_t as marginals, in score parametrization: dx = (-drift + diffusion *
   * score) dt. Returns [-drift, diffusion] with t of shape [B] expanded like x.
   */
  computeDrift(x: Tensor, t: Tensor): [Tensor, Tensor] {
    const te = expandTLikeX(t, x);
    const alphaRatio = this.computeDAlphaAlphaRatioT(te);
    const [sigmaT, dSigmaT] = this.computeSigmaT(te);
    const drift = alphaRatio.mul(x);
    const diffusion = alphaRatio.mul(sigmaT.square()).sub(sigmaT.mul(dSigmaT));
    return [drift.neg(), diffusion];
  }

  /** The diffusion coefficient w_t of the sampling SDE, broadcastable against x. */
  computeDiffusion(x: Tensor, t: Tensor, form: DiffusionForm = 'constant', norm = 1.0): Tensor {
    const te = expandTLikeX(t, x);
    switch (form) {
      case 'constant': return torch.fullLike(te, norm);
      case 'SBDM': return this.computeDrift(x, t)[1].mul(norm);
      case 'sigma': return this.computeSigmaT(te)[0].mul(norm);
      case 'linear': return te.rsub(1).mul(norm);
      case 'decreasing': return te.mul(Math.PI).cos().mul(norm).add(1).square().mul(0.25);
      case 'increasing-decreasing': return te.mul(Math.PI).sin().square().mul(norm);
      default: throw new Error(`computeDiffusion: unknown diffusion form '${form as string}'`);
    }
  }

  /** Score of p_t from a velocity prediction. */
  getScoreFromVelocity(velocity: Tensor, x: Tensor, t: Tensor): Tensor {
    const te = expandTLikeX(t, x);
    const [alphaT, dAlphaT] = this.computeAlphaT(te);
    const [sigmaT, dSigmaT] = this.computeSigmaT(te);
    const reverseAlphaRatio = alphaT.div(dAlphaT);
    const variance = sigmaT.square().sub(reverseAlphaRatio.mul(dSigmaT).mul(sigmaT));
    return reverseAlphaRatio.mul(velocity).sub(x).div(variance);
  }

  /** The noise x0 from a velocity prediction. */
  getNoiseFromVelocity(velocity: Tensor, x: Tensor, t: Tensor): Tensor {
    const te = expandTLikeX(t, x);
    const [alphaT, dAlphaT] = this.computeAlphaT(te);
    const [sigmaT, dSigmaT] = this.computeSigmaT(te);
    const reverseAlphaRatio = alphaT.div(dAlphaT);
    const variance = reverseAlphaRatio.mul(dSigmaT).sub(sigmaT);
    return reverseAlphaRatio.mul(velocity).sub(x).div(variance);
  }

  /** Velocity from a score prediction. */
  getVelocityFromScore(score: Tensor, x: Tensor, t: Tensor): Tensor {
    const [drift, variance] = this.computeDrift(x, t);
    return variance.mul(score).sub(drift);
  }

  /** The mean of p_t given the pair: alpha_t x1 + sigma_t x0. */
  computeMuT(t: Tensor, x0: Tensor, x1: Tensor): Tensor {
    const te = expandTLikeX(t, x1);
    const [alphaT] = this.computeAlphaT(te);
    const [sigmaT] = this.computeSigmaT(te);
    return alphaT.mul(x1).add(sigmaT.mul(x0));
  }

  computeXt(t: Tensor, x0: Tensor, x1: Tensor): Tensor {
    return this.computeMuT(t, x0, x1);
  }

  /** The conditional velocity d_alpha_t x1 + d_sigma_t x0. */
  computeUt(t: Tensor, x0: Tensor, x1: Tensor): Tensor {
    const te = expandTLikeX(t, x1);
    const [, dAlphaT] = this.computeAlphaT(te);
    const [, dSigmaT] = this.computeSigmaT(te);
    return dAlphaT.mul(x1).add(dSigmaT.mul(x0));
  }

  plan(t: Tensor, x0: Tensor, x1: Tensor): { t: Tensor; xt: Tensor; ut: Tensor } {
    return { t, xt: this.computeXt(t, x0, x1), ut: this.computeUt(t, x0, x1) };
  }
}

/**
 * The VP path of score-based diffusion with a linear beta schedule from sigmaMin to sigmaMax,
 * in SiT's time direction: alpha_t = exp(-(1 - t)^2 (sigmaMax - sigmaMin) / 4 - (1 - t) sigmaMin / 2),
 * sigma_t = sqrt(1 - alpha_t^2).
 */
export class VPCPlan extends ICPlan {
  constructor(readonly sigmaMin = 0.1, readonly sigmaMax = 20.0) {
    super();
  }

  private logMeanCoeff(t: Tensor): Tensor {
    const s = t.rsub(1);
    return s.square().mul(-0.25).mul(this.sigmaMax - this.sigmaMin).sub(s.mul(0.5).mul(this.sigmaMin));
  }

  private dLogMeanCoeff(t: Tensor): Tensor {
    return t.rsub(1).mul(0.5).mul(this.sigmaMax - this.sigmaMin).add(0.5 * this.sigmaMin);
  }

  override computeAlphaT(t: Tensor): Coefficient {
    const alphaT = this.logMeanCoeff(t).exp();
    return [alphaT, alphaT.mul(this.dLogMeanCoeff(t))];
  }

  override computeSigmaT(t: Tensor): Coefficient {
    const pSigmaT = this.logMeanCoeff(t).mul(2);
    const sigmaT = pSigmaT.exp().rsub(1).sqrt();
    const dSigmaT = pSigmaT.exp().mul(this.dLogMeanCoeff(t).mul(2)).div(sigmaT.mul(-2));
    return [sigmaT, dSigmaT];
  }

  override computeDAlphaAlphaRatioT(t: Tensor): Tensor {
    return this.dLogMeanCoeff(t);
  }

  override computeDrift(x: Tensor, t: Tensor): [Tensor, Tensor] {
    const te = expandTLikeX(t, x);
    const betaT = te.rsub(1).mul(this.sigmaMax - this.sigmaMin).add(this.sigmaMin);
    return [betaT.mul(-0.5).mul(x), betaT.div(2)];
  }
}

/** The generalized VP path alpha_t = sin(pi t / 2), sigma_t = cos(pi t / 2) (SiT's GVPCPlan). */
export class GVPCPlan extends ICPlan {
  override computeAlphaT(t: Tensor): Coefficient {
    const angle = t.mul(Math.PI).div(2);
    return [angle.sin(), angle.cos().mul(Math.PI / 2)];
  }

  override computeSigmaT(t: Tensor): Coefficient {
    const angle = t.mul(Math.PI).div(2);
    return [angle.cos(), angle.sin().mul(-Math.PI / 2)];
  }

  override computeDAlphaAlphaRatioT(t: Tensor): Tensor {
    return t.mul(Math.PI).div(2).tan().mul(2).reciprocal().mul(Math.PI);
  }
}
