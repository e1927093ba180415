// Adam and AdamW, numerically as PyTorch's single-tensor implementations (torch/optim/adam.py and
// adamw.py, `_single_tensor_adam[w]`): the same operations in the same order on the same dtypes.
import * as torch from '../torch/index.js';
import { Optimizer, withDefaults, type ParamGroup, type ParamGroupInput } from './optimizer.js';

type Tensor = torch.Tensor;

export type AdamOptions = {
  lr: number;
  betas: readonly [number, number];
  eps: number;
  /** Adam: L2 penalty added to the gradient. AdamW: decoupled decay `param *= 1 - lr * weightDecay`. */
  weightDecay: number;
  amsgrad: boolean;
  maximize: boolean;
};

type AdamState = { step: number; exp_avg: Tensor; exp_avg_sq: Tensor; max_exp_avg_sq?: Tensor };

type Params = Iterable<Tensor> | Iterable<ParamGroupInput<AdamOptions>>;

export class Adam extends Optimizer<AdamOptions, AdamState> {
  constructor(params: Params, options: Partial<AdamOptions> = {}) {
    const defaults: AdamOptions = { lr: 1e-3, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0, amsgrad: false, maximize: false };
    super(params, withDefaults(defaults, options, new.target.name));
  }

  /** AdamW decays the weights before the update instead of adding weightDecay * param to the gradient. */
  protected get decoupledWeightDecay(): boolean { return false; }

  // Recent PyTorch, where AdamW is Adam(decoupled_weight_decay=True), saves this flag in each group.
  protected override impliedGroupKeys(): Record<string, unknown> { return { decoupled_weight_decay: this.decoupledWeightDecay }; }

  protected override stateKeys(group: ParamGroup<AdamOptions>): string[] {
    return group.amsgrad ? ['exp_avg', 'exp_avg_sq', 'max_exp_avg_sq'] : ['exp_avg', 'exp_avg_sq'];
  }

  protected override validateOptions(o: AdamOptions, where: string): void {
    const name = this.constructor.name;
    if (!(o.lr >= 0)) throw new RangeError(`${name}: invalid lr ${o.lr} in ${where}`);
    if (!(o.eps >= 0)) throw new RangeError(`${name}: invalid eps ${o.eps} in ${where}`);
    o.betas.forEach((beta, i) => {
      if (!(beta >= 0 && beta < 1)) throw new RangeError(`${name}: invalid betas[${i}] ${beta} in ${where} (must be in [0, 1))`);
    });
    if (!(o.weightDecay >= 0)) throw new RangeError(`${name}: invalid weightDecay ${o.weightDecay} in ${where}`);
  }

  protected override updateParam(param: Tensor, grad: Tensor, state: AdamState, group: ParamGroup<AdamOptions>): void {
    const { lr, eps, weightDecay } = group;
    const [beta1, beta2] = group.betas;
    state.step += 1;
    const biasCorrection1 = 1 - beta1 ** state.step;
    const biasCorrection2 = 1 - beta2 ** state.step;
    const stepSize = lr / biasCorrection1;
    // float32 CPU parameters (without amsgrad) take one pass of the addon's kernel: the same operations.
    if (!group.amsgrad && torch.fusedAdamStep(param, grad, state.exp_avg, state.exp_avg_sq, {
      paramFactor: this.decoupledWeightDecay ? 1 - lr * weightDecay : 1, l2: this.decoupledWeightDecay ? 0 : weightDecay,
      maximize: group.maximize, beta1, beta2, stepSize, biasCorrection2Sqrt: Math.sqrt(biasCorrection2), eps,
    })) return;

    let g = group.maximize ? grad.neg() : grad;
    if (this.decoupledWeightDecay) param.mul_(1 - lr * weightDecay);
    else if (weightDecay !== 0) g = g.add(param, weightDecay);

    state.exp_avg.mul_(beta1).add_(g, 1 - beta1);
    state.exp_avg_sq.mul_(beta2).addcmul_(g, g, 1 - beta2);

    let secondMoment = state.exp_avg_sq;
    if (group.amsgrad) {
      const max = state.max_exp_avg_sq;
      if (max === undefined) throw new Error(`${this.constructor.name}: amsgrad was switched on after this parameter's first step`);
      max.copy_(max.maximum(state.exp_avg_sq));
      secondMoment = max;
    }
    const denom = secondMoment.sqrt().div(Math.sqrt(biasCorrection2)).add_(eps);
    param.addcdiv_(state.exp_avg, denom, -stepSize);
  }
}

/** AdamW (Loshchilov & Hutter): Adam with decoupled weight decay, default weightDecay 1e-2. */
export class AdamW extends Adam {
  constructor(params: Params, options: Partial<AdamOptions> = {}) {
    super(params, { ...options, weightDecay: options.weightDecay ?? 1e-2 });
  }

  protected override get decoupledWeightDecay(): boolean { return true; }
}
