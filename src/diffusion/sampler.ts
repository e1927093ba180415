// Sampling from a trained transport model, as the Sampler class of SiT's transport/transport.py:
// the probability-flow ODE (sample_ode) and the SDE with a chosen diffusion and last step
// (sample_sde). Both run without autograd and report the number of model evaluations.
import * as torch from '../torch/index.js';
import type { Tensor } from '../torch/index.js';
import type { DiffusionForm } from './path.js';
import { odeint, timeGrid, timeGrid64, type OdeMethod } from './ode.js';
import { convertTime, type TimeConvention } from './interval.js';
import { sdeint, type SdeMethod } from './sde.js';
import type { Model, ModelKwargs, Transport } from './transport.js';

export interface OdeSamplerOptions {
  samplingMethod?: OdeMethod;
  /** Fixed-grid methods: grid points (numSteps - 1 steps); dopri5: points of dense output. */
  numSteps?: number;
  atol?: number;
  rtol?: number;
  /** Integrate from data (t = 1) to noise (t = 0). */
  reverse?: boolean;
}

/** The SDE's final jump over the last lastStepSize of time; null takes none. */
export type LastStep = 'Mean' | 'Tweedie' | 'Euler' | null;

export interface SdeSamplerOptions {
  samplingMethod?: SdeMethod;
  diffusionForm?: DiffusionForm;
  diffusionNorm?: number;
  lastStep?: LastStep;
  lastStepSize?: number;
  /** Total states returned: numSteps - 1 SDE steps and the last step. */
  numSteps?: number;
}

/** States along the way (the last one is the sample) and the number of model evaluations. */
export interface SampleResult { samples: Tensor[]; nfe: number }
export type SampleFn = (init: Tensor, model: Model, modelKwargs?: ModelKwargs) => SampleResult;

export class Sampler {
  constructor(readonly transport: Transport) {}

  /**
   * The fixed grid that sampleOde ('ode': euler, heun2) or sampleSde ('sde') passes the model:
   * `sit`, its float32 SiT times, and `times`, each step's time in `convention` in float64 as
   * the reference computes it: SiT's own linspace, or REPA's, which runs from 1 to 0 (the ODE) or
   * from 1 to the last step's size (the SDE, 0.04). For guidedModel's `grid`.
   */
  stepTimes(
    kind: 'ode' | 'sde', options: Pick<OdeSamplerOptions, 'numSteps' | 'reverse'> & Pick<SdeSamplerOptions, 'numSteps' | 'lastStep' | 'lastStepSize' | 'diffusionForm'>,
    convention: TimeConvention,
  ): { sit: number[]; times: number[] } {
    const lastStepSize = kind === 'ode' || options.lastStep === null ? 0 : options.lastStepSize ?? 0.04;
    const numSteps = options.numSteps ?? (kind === 'ode' ? 50 : 250);
    const [t0, t1] = kind === 'ode'
      ? this.transport.checkInterval({ sde: false, eval: true, reverse: options.reverse ?? false, lastStepSize: 0 })
      : this.transport.checkInterval({ diffusionForm: options.diffusionForm ?? 'SBDM', sde: true, eval: true, reverse: false, lastStepSize });
    const sit = timeGrid(t0, t1, numSteps);
    if (convention === 'sit') return { sit, times: timeGrid64(t0, t1, numSteps) };
    // REPA writes its ends: 1 - 0 = 1, and the SDE's 0.04 (1 - (1 - 0.04) is not 0.04 in float64).
    const end = lastStepSize > 0 && t1 === 1 - lastStepSize ? lastStepSize : convertTime(t1, 'sit', convention);
    return { sit, times: timeGrid64(convertTime(t0, 'sit', convention), end, numSteps) };
  }

  /** The ODE sampler with SiT's defaults: dopri5, 50 output points, atol 1e-6, rtol 1e-3. */
  sampleOde(options: OdeSamplerOptions = {}): SampleFn {
    const { samplingMethod = 'dopri5', numSteps = 50, atol = 1e-6, rtol = 1e-3, reverse = false } = options;
    const [t0, t1] = this.transport.checkInterval({ sde: false, eval: true, reverse, lastStepSize: 0 });
    const grid = timeGrid(t0, t1, numSteps);
    return (init, model, modelKwargs = {}) => torch.noGrad(() => {
      let nfe = 0;
      // SiT builds t as ones(B) * t: float32 whatever the state's dtype.
      const drift = (t: number, x: Tensor, stepTime?: number): Tensor => torch.scope(() => {
        nfe++;
        // The step's own time reaches the guidance as modelKwargs.guidanceTime (guidedModel).
        const kwargs = stepTime === undefined ? modelKwargs : { ...modelKwargs, guidanceTime: stepTime };
        return this.transport.drift(x, torch.full([x.size(0)], t, { device: x.device }), model, kwargs);
      });
      const samples = odeint(drift, init, grid, { method: samplingMethod, atol, rtol });
      return { samples, nfe };
    });
  }

  /**
   * The SDE sampler with SiT's defaults: Euler-Maruyama, SBDM diffusion of norm 1, 250 states,
   * stopping 0.04 short of t = 1 and finishing with the 'Mean' step. The drift is the ODE drift
   * plus w_t times the score; SiT evaluates the model twice for it (drift and score), this once.
   * SBDM's w_t is infinite at t = 0 on Linear and GVP, where velocity models sample from t = 0
   * (sampleEps 0): choose another form there, as SiT's sample.py does ('sigma').
   */
  sampleSde(options: SdeSamplerOptions = {}): SampleFn {
    const { samplingMethod = 'Euler', diffusionForm = 'SBDM', diffusionNorm = 1.0, lastStep = 'Mean', numSteps = 250 } = options;
    const lastStepSize = lastStep === null ? 0 : options.lastStepSize ?? 0.04;
    const [t0, t1] = this.transport.checkInterval({ diffusionForm, sde: true, eval: true, reverse: false, lastStepSize });
    const path = this.transport.pathSampler;
    return (init, model, modelKwargs = {}) => torch.noGrad(() => {
      let nfe = 0;
      const output = (x: Tensor, t: Tensor): Tensor => {
        nfe++;
        return model(x, t, modelKwargs);
      };
      const diffusion = (x: Tensor, t: Tensor): Tensor => path.computeDiffusion(x, t, diffusionForm, diffusionNorm);
      const sdeDrift = (x: Tensor, t: Tensor): Tensor => torch.scope(() => {
        const out = output(x, t);
        return this.transport.driftFromOutput(out, x, t).add(diffusion(x, t).mul(this.transport.scoreFromOutput(out, x, t)));
      });
      const samples = sdeint(sdeDrift, diffusion, init, { t0, t1, numSteps, method: samplingMethod });
      const x = samples[samples.length - 1]!;
      samples.push(torch.scope(() => {
        // SiT: ts = ones(B) * t1, float32.
        const ts = torch.full([init.size(0)], t1, { device: init.device });
        switch (lastStep) {
          case null: return x;
          case 'Mean': return x.add(sdeDrift(x, ts).mul(lastStepSize));
          case 'Euler': return x.add(this.transport.driftFromOutput(output(x, ts), x, ts).mul(lastStepSize));
          case 'Tweedie': {
            // SiT reads alpha and sigma off the first batch element.
            const alpha = path.computeAlphaT(ts)[0].select(0, 0);
            const sigma = path.computeSigmaT(ts)[0].select(0, 0);
            const score = this.transport.scoreFromOutput(output(x, ts), x, ts);
            return x.div(alpha).add(sigma.square().div(alpha).mul(score));
          }
          default: throw new Error(`sampleSde: unknown lastStep '${lastStep as string}' (Mean, Tweedie, Euler or null)`);
        }
      }));
      return { samples, nfe };
    });
  }
}
