// Stochastic-interpolant transport, as SiT's transport/__init__.py (create_transport) and
// transport.py (Transport): what the model predicts, the training loss and its weighting, the
// time interval, and the probability-flow drift and score derived from a model output.
import * as torch from '../torch/index.js';
import type { Tensor } from '../torch/index.js';
import { ICPlan, VPCPlan, GVPCPlan, expandTLikeX, type DiffusionForm } from './path.js';

export type PathType = 'Linear' | 'GVP' | 'VP';
export type Prediction = 'velocity' | 'score' | 'noise';
/** Loss weighting for score and noise prediction; null is SiT's WeightType.NONE. */
export type LossWeight = 'velocity' | 'likelihood' | null;

export type ModelKwargs = Record<string, unknown>;
/** Any network called as model(x_t, t, modelKwargs) with t of shape [B]; returns x_t's shape. */
export type Model = (x: Tensor, t: Tensor, modelKwargs: ModelKwargs) => Tensor;

export interface TransportConfig {
  pathType: PathType;
  prediction: Prediction;
  lossWeight: LossWeight;
  trainEps: number;
  sampleEps: number;
}

export interface IntervalOptions {
  diffusionForm?: DiffusionForm;
  sde?: boolean;
  reverse?: boolean;
  /** Use sampleEps instead of trainEps. */
  eval?: boolean;
  lastStepSize?: number;
}

const PATH_TYPES: readonly PathType[] = ['Linear', 'GVP', 'VP'];
const PREDICTIONS: readonly Prediction[] = ['velocity', 'score', 'noise'];
const LOSS_WEIGHTS: readonly LossWeight[] = ['velocity', 'likelihood', null];

/** Mean over all non-batch dimensions. */
export function meanFlat(x: Tensor): Tensor {
  return x.mean(Array.from({ length: x.ndim - 1 }, (_, i) => i + 1));
}

/**
 * A Transport with SiT's defaults: Linear path, velocity prediction, no loss weighting, and the
 * reference epsilons where none are given (VP: train 1e-5, sample 1e-3; Linear/GVP with score or
 * noise prediction: 1e-3 and 1e-3; velocity on Linear/GVP is stable everywhere: 0 and 0). SiT
 * takes sample_eps from the caller as soon as train_eps is given; here each falls back on its own.
 */
/** SiT's train.py defaults: the Linear path, velocity prediction, no loss weighting. */
export const TRANSPORT_DEFAULTS: Pick<TransportConfig, 'pathType' | 'prediction' | 'lossWeight'> = { pathType: 'Linear', prediction: 'velocity', lossWeight: null };

export function createTransport(options: Partial<TransportConfig> = {}): Transport {
  const pathType = options.pathType ?? TRANSPORT_DEFAULTS.pathType;
  const prediction = options.prediction ?? TRANSPORT_DEFAULTS.prediction;
  const lossWeight = options.lossWeight ?? TRANSPORT_DEFAULTS.lossWeight;
  if (!PATH_TYPES.includes(pathType)) throw new Error(`createTransport: pathType must be one of ${PATH_TYPES.join(', ')}, got '${pathType}'`);
  if (!PREDICTIONS.includes(prediction)) throw new Error(`createTransport: prediction must be one of ${PREDICTIONS.join(', ')}, got '${prediction}'`);
  if (!LOSS_WEIGHTS.includes(lossWeight)) throw new Error(`createTransport: lossWeight must be velocity, likelihood or null, got '${lossWeight}'`);
  let [trainEps, sampleEps] = [0, 0];
  if (pathType === 'VP') [trainEps, sampleEps] = [1e-5, 1e-3];
  else if (prediction !== 'velocity') [trainEps, sampleEps] = [1e-3, 1e-3];
  return new Transport({
    pathType, prediction, lossWeight,
    trainEps: options.trainEps ?? trainEps,
    sampleEps: options.sampleEps ?? sampleEps,
  });
}

export class Transport {
  readonly pathSampler: ICPlan;

  constructor(readonly config: TransportConfig) {
    const plans: Record<PathType, () => ICPlan> = { Linear: () => new ICPlan(), GVP: () => new GVPCPlan(), VP: () => new VPCPlan() };
    this.pathSampler = plans[config.pathType]();
  }

  /**
   * The time interval [t0, t1] for training or sampling, as SiT's check_interval: VP stops eps
   * short of the data end; Linear/GVP cut both ends for score/noise models and for SDEs
   * (the start only with SBDM diffusion or a non-velocity model); an SDE with a last step stops
   * lastStepSize short of t = 1; reverse mirrors the interval.
   */
  checkInterval(options: IntervalOptions = {}): [number, number] {
    const { diffusionForm = 'SBDM', sde = false, reverse = false, eval: evaluating = false, lastStepSize = 0 } = options;
    const { pathType, prediction, trainEps, sampleEps } = this.config;
    const eps = evaluating ? sampleEps : trainEps;
    let [t0, t1] = [0, 1];
    const end = !sde || lastStepSize === 0 ? 1 - eps : 1 - lastStepSize;
    if (pathType === 'VP') {
      t1 = end;
    } else if (prediction !== 'velocity' || sde) {
      t0 = (diffusionForm === 'SBDM' && sde) || prediction !== 'velocity' ? eps : 0;
      t1 = end;
    }
    return reverse ? [1 - t0, 1 - t1] : [t0, t1];
  }

  /** Draws the noise x0 ~ N(0, I) and t ~ U[t0, t1] for a data batch x1, in SiT's RNG order. */
  sample(x1: Tensor): { t: Tensor; x0: Tensor; x1: Tensor } {
    const x0 = torch.randnLike(x1);
    const [t0, t1] = this.checkInterval();
    const t = torch.rand([x1.size(0)]).mul(t1 - t0).add(t0).to({ dtype: x1.dtype, device: x1.device });
    return { t, x0, x1 };
  }

  /**
   * Per-sample losses [B] (mean over the non-batch dims) and the model's prediction. Velocity
   * models regress the path velocity; noise and score models regress x0 and -x0 / sigma_t,
   * weighted by (diffusion / sigma_t)^2 ('velocity'), diffusion / sigma_t^2 ('likelihood') or 1.
   */
  trainingLosses(model: Model, x1: Tensor, modelKwargs: ModelKwargs = {}): { loss: Tensor; pred: Tensor } {
    const { t, x0 } = this.sample(x1);
    const { xt, ut } = this.pathSampler.plan(t, x0, x1);
    const pred = model(xt, t, modelKwargs);
    checkOutputShape('trainingLosses', pred, xt);
    if (this.config.prediction === 'velocity') return { loss: meanFlat(pred.sub(ut).square()), pred };
    const [, driftVar] = this.pathSampler.computeDrift(xt, t);
    const [sigmaT] = this.pathSampler.computeSigmaT(expandTLikeX(t, xt));
    const weight = this.config.lossWeight === 'velocity' ? driftVar.div(sigmaT).square()
      : this.config.lossWeight === 'likelihood' ? driftVar.div(sigmaT.square())
        : null;
    const error = this.config.prediction === 'noise' ? pred.sub(x0).square() : pred.mul(sigmaT).add(x0).square();
    return { loss: meanFlat(weight === null ? error : weight.mul(error)), pred };
  }

  /** The probability-flow ODE drift at (x, t) given the model's output there (SiT's get_drift). */
  driftFromOutput(output: Tensor, x: Tensor, t: Tensor): Tensor {
    checkOutputShape('drift', output, x);
    if (this.config.prediction === 'velocity') return output;
    const [driftMean, driftVar] = this.pathSampler.computeDrift(x, t);
    return driftMean.neg().add(driftVar.mul(this.scoreFromOutput(output, x, t)));
  }

  /** The score of p_t at (x, t) given the model's output there (SiT's get_score). */
  scoreFromOutput(output: Tensor, x: Tensor, t: Tensor): Tensor {
    switch (this.config.prediction) {
      case 'noise': return output.div(this.pathSampler.computeSigmaT(expandTLikeX(t, x))[0].neg());
      case 'score': return output;
      case 'velocity': return this.pathSampler.getScoreFromVelocity(output, x, t);
    }
  }

  drift(x: Tensor, t: Tensor, model: Model, modelKwargs: ModelKwargs = {}): Tensor {
    return this.driftFromOutput(model(x, t, modelKwargs), x, t);
  }
}

function checkOutputShape(where: string, output: Tensor, x: Tensor): void {
  if (output.shape.length !== x.shape.length || output.shape.some((d, i) => d !== x.shape[i])) {
    throw new Error(`Transport.${where}: model output shape [${output.shape}] must equal input shape [${x.shape}]`);
  }
}
