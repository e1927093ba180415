// A two-layer MLP on raw tensors, shared by the DDP ranks (worker.ts) and the single-process
// reference in parallel.test.ts so both train exactly the same model.
import * as torch from '../../src/torch/index.js';
import type { Tensor } from '../../src/torch/index.js';
import type { HasParameters } from '../../src/nn/parallel.js';

const F = torch.nnFunctional;

export class TinyMlp implements HasParameters {
  readonly w1: Tensor;
  readonly b1: Tensor;
  readonly w2: Tensor;
  readonly b2: Tensor;
  /** A buffer (no gradient), to check DDP copies rank 0's buffers too. */
  readonly scale: Tensor;

  /** Different seeds give different initial weights: DDP must replace them by rank 0's. */
  constructor(seed: number) {
    torch.manualSeed(seed);
    const o = { dtype: 'float64' as const };
    this.w1 = torch.keep(torch.randn([5, 3], o).requiresGrad_());
    this.b1 = torch.keep(torch.randn([5], o).requiresGrad_());
    this.w2 = torch.keep(torch.randn([2, 5], o).requiresGrad_());
    this.b2 = torch.keep(torch.randn([2], o).requiresGrad_());
    this.scale = torch.keep(torch.rand([2], o).add(0.5));
  }

  parameters(): Tensor[] { return [this.w1, this.b1, this.w2, this.b2]; }
  buffers(): Tensor[] { return [this.scale]; }

  forward(x: Tensor): Tensor {
    return F.linear(F.linear(x, this.w1, this.b1).tanh(), this.w2, this.b2).mul(this.scale);
  }
}

/** 8 fixed samples: x [8, 3], y [8, 2]. */
export function trainingData(): { x: Tensor; y: Tensor } {
  torch.manualSeed(0);
  return { x: torch.randn([8, 3], { dtype: 'float64' }), y: torch.randn([8, 2], { dtype: 'float64' }) };
}

/** Plain SGD on the MSE loss; `afterBackward` is where DDP averages the gradients. */
export function train(model: TinyMlp, x: Tensor, y: Tensor, steps: number, afterBackward: () => void): void {
  const lr = 0.1;
  for (let step = 0; step < steps; step++) {
    torch.scope(() => {
      F.mseLoss(model.forward(x), y).backward();
      afterBackward();
      torch.noGrad(() => {
        for (const p of model.parameters()) {
          p.sub_(p.grad!.mul(lr));
          p.grad = null;
        }
      });
    });
  }
}

export const TRAIN_STEPS = 5;
