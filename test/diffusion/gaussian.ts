// Closed-form transport of N(0, I) noise to N(m, s^2 I) data, for convergence tests.
import * as torch from '../../src/torch/index.js';
import { expandTLikeX, type ICPlan, type Model } from '../../src/diffusion/index.js';

/**
 * The exact velocity of `plan` for Gaussian data N(m, s^2 I): p_t = N(alpha_t m, v_t I) with
 * v_t = alpha_t^2 s^2 + sigma_t^2, so u(x, t) = alpha_t' m + v_t' / (2 v_t) (x - alpha_t m), and
 * the flow carries noise z at t = 0 to m + s z at t = 1.
 */
export function gaussianVelocity(plan: ICPlan, m: number, s: number): Model {
  return (x, t) => {
    const te = expandTLikeX(t.to(x.dtype), x);
    const [alpha, dAlpha] = plan.computeAlphaT(te);
    const [sigma, dSigma] = plan.computeSigmaT(te);
    const v = alpha.square().mul(s * s).add(sigma.square());
    const dv = alpha.mul(dAlpha).mul(2 * s * s).add(sigma.mul(dSigma).mul(2));
    return dAlpha.mul(m).add(dv.div(v.mul(2)).mul(x.sub(alpha.mul(m))));
  };
}

/** Slope of log(error) against log(steps), by least squares. */
export function logLogSlope(steps: readonly number[], errors: readonly number[]): number {
  const xs = steps.map(Math.log);
  const ys = errors.map(Math.log);
  const mx = xs.reduce((a, b) => a + b) / xs.length;
  const my = ys.reduce((a, b) => a + b) / ys.length;
  const num = xs.reduce((acc, x, i) => acc + (x - mx) * (ys[i]! - my), 0);
  const den = xs.reduce((acc, x) => acc + (x - mx) ** 2, 0);
  return num / den;
}
