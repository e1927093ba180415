// Fixed-step SDE integration dx = drift dt + sqrt(2 w_t) dW on a float32 linspace grid, as the
// sde class of SiT's transport/integrators.py: Euler-Maruyama, or Heun (noise first, then a
// deterministic Heun step from the noised point). Noise comes from the global generator,
// torch.randn(x.shape) once per step, so a torch.manualSeed reproduces SiT's trajectories.
import * as torch from '../torch/index.js';
import type { Tensor } from '../torch/index.js';
import { timeGrid, timeRounding } from './ode.js';

export type SdeMethod = 'Euler' | 'Heun';
/** A field of the state x and the time t (shape [B], the state's dtype). */
export type SdeField = (x: Tensor, t: Tensor) => Tensor;

export interface SdeOptions {
  t0: number;
  t1: number;
  /** Grid points from t0 to t1; numSteps - 1 steps are taken. */
  numSteps: number;
  method: SdeMethod;
}

/** Integrates from init at t0 to t1, returning the state after each of the numSteps - 1 steps. */
export function sdeint(drift: SdeField, diffusion: SdeField, init: Tensor, options: SdeOptions): Tensor[] {
  const { t0, t1, numSteps, method } = options;
  if (!(t0 < t1)) throw new Error(`sdeint: the SDE sampler runs forward in time, got t0 ${t0} >= t1 ${t1}`);
  if (method !== 'Euler' && method !== 'Heun') throw new Error(`sdeint: unknown method '${method as string}' (Euler, Heun)`);
  const grid = timeGrid(t0, t1, numSteps);
  const dt = Math.fround(grid[1]! - grid[0]!);
  const sqrtDt = Math.fround(Math.sqrt(dt));
  const round = timeRounding(init);
  const timeLike = (t: number): Tensor => torch.full([init.size(0)], t, { dtype: init.dtype, device: init.device });
  const samples: Tensor[] = [];
  let x = init;
  for (const ti of grid.slice(0, -1)) {
    // One sampling batch can take minutes: the thread governor looks at the load between its steps.
    torch.adaptThreads();
    const xi = x;
    x = torch.scope(() => {
      const dw = torch.randn(xi.shape).to({ dtype: xi.dtype, device: xi.device }).mul(sqrtDt);
      const t = timeLike(ti);
      if (method === 'Euler') {
        const mean = xi.add(drift(xi, t).mul(dt));
        return mean.add(diffusion(xi, t).mul(2).sqrt().mul(dw));
      }
      const xHat = xi.add(diffusion(xi, t).mul(2).sqrt().mul(dw));
      const k1 = drift(xHat, t);
      const k2 = drift(xHat.add(k1.mul(dt)), timeLike(round(ti + dt)));
      return xHat.add(k1.add(k2).mul(Math.fround(0.5 * dt)));
    });
    samples.push(x);
  }
  return samples;
}
