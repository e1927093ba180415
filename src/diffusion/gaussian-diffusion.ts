// DDPM for DiT, as facebookresearch/DiT's diffusion package (OpenAI's IDDPM/ADM code):
// create_diffusion, the beta schedules, space_timesteps and SpacedDiffusion (timestep
// respacing), GaussianDiffusion's posterior, p_mean_variance, p_sample_loop, ddim_sample_loop
// and training_losses (the hybrid loss: MSE on epsilon plus the variational bound that trains the
// learned-range variance), and diffusion_utils' normal_kl and discretized Gaussian likelihood.
// Timesteps are integers: step k of a respaced diffusion runs the model at the original
// timestep timestepMap[k]; k = numTimesteps - 1 is pure noise, k = 0 the last denoising step.
import * as torch from '../torch/index.js';
import type { Tensor } from '../torch/index.js';
import { meanFlat, type Model, type ModelKwargs } from './transport.js';

/** What the model predicts: the noise (EPSILON) or the clean sample (START_X). */
export type ModelMeanType = 'epsilon' | 'startX';
/** The output variance: learned between the posterior's and beta (LEARNED_RANGE), or fixed. */
export type ModelVarType = 'learnedRange' | 'fixedLarge' | 'fixedSmall';
/** MSE (+ the raw VB term when learning the variance), RESCALED_MSE (VB * T / 1000), or the VB alone times T. */
export type LossType = 'mse' | 'rescaledMse' | 'rescaledKl';
export type NoiseSchedule = 'linear' | 'squaredcos_cap_v2';

export interface GaussianDiffusionConfig {
  /** One beta per step, from the first (least noisy) to the last. */
  betas: ArrayLike<number>;
  modelMeanType: ModelMeanType;
  modelVarType: ModelVarType;
  lossType: LossType;
}

/** create_diffusion's arguments (DiT's diffusion/__init__.py), with its defaults. */
export interface CreateDiffusionOptions {
  /** '' or null: every step; '250' or [250]: 250 evenly spaced steps; '10,15,20': per section; 'ddim50': DDIM's stride. */
  timestepRespacing?: string | number[] | null;
  noiseSchedule?: NoiseSchedule;
  useKl?: boolean;
  sigmaSmall?: boolean;
  predictXstart?: boolean;
  learnSigma?: boolean;
  rescaleLearnedSigmas?: boolean;
  diffusionSteps?: number;
}

/** DiT's diffusion: linear betas 1e-4 to 0.02 over 1000 steps, epsilon and learned-range variance, MSE + VB loss. */
export function createDiffusion(options: CreateDiffusionOptions = {}): GaussianDiffusion {
  const {
    timestepRespacing = '', noiseSchedule = 'linear', useKl = false, sigmaSmall = false,
    predictXstart = false, learnSigma = true, rescaleLearnedSigmas = false, diffusionSteps = 1000,
  } = options;
  const betas = getNamedBetaSchedule(noiseSchedule, diffusionSteps);
  const respacing = timestepRespacing === null || timestepRespacing === '' ? [diffusionSteps] : timestepRespacing;
  return spacedDiffusion(spaceTimesteps(diffusionSteps, respacing), {
    betas,
    modelMeanType: predictXstart ? 'startX' : 'epsilon',
    modelVarType: learnSigma ? 'learnedRange' : sigmaSmall ? 'fixedSmall' : 'fixedLarge',
    lossType: useKl ? 'rescaledKl' : rescaleLearnedSigmas ? 'rescaledMse' : 'mse',
  });
}

/** np.linspace(start, stop, num) in float64: start + i * step, the last point exactly stop. */
function linspace64(start: number, stop: number, num: number): Float64Array {
  const step = (stop - start) / (num - 1);
  const out = Float64Array.from({ length: num }, (_, i) => i * step + start);
  if (num > 1) out[num - 1] = stop;
  return out;
}

/** The named beta schedules of get_named_beta_schedule, in float64. */
export function getNamedBetaSchedule(name: NoiseSchedule, numDiffusionTimesteps: number): Float64Array {
  if (!Number.isInteger(numDiffusionTimesteps) || numDiffusionTimesteps < 1) {
    throw new Error(`getNamedBetaSchedule: numDiffusionTimesteps must be a positive integer, got ${numDiffusionTimesteps}`);
  }
  if (name === 'linear') {
    // Ho et al.'s schedule, stretched so that any number of steps covers the same range.
    const scale = 1000 / numDiffusionTimesteps;
    return linspace64(scale * 0.0001, scale * 0.02, numDiffusionTimesteps);
  }
  if (name === 'squaredcos_cap_v2') {
    const alphaBar = (t: number): number => Math.cos((t + 0.008) / 1.008 * Math.PI / 2) ** 2;
    return Float64Array.from({ length: numDiffusionTimesteps }, (_, i) =>
      Math.min(1 - alphaBar((i + 1) / numDiffusionTimesteps) / alphaBar(i / numDiffusionTimesteps), 0.999));
  }
  throw new Error(`getNamedBetaSchedule: unknown beta schedule '${name as string}' (linear, squaredcos_cap_v2)`);
}

/** Python's round(): to the nearest integer, ties to even. */
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * The steps of a numTimesteps-step diffusion to keep, ascending, as space_timesteps: the process
 * is cut into equal sections (the first ones one step longer when it does not divide) and each
 * section strided to its count; 'ddimN' takes the integer stride that gives exactly N steps.
 */
export function spaceTimesteps(numTimesteps: number, sectionCounts: string | readonly number[]): number[] {
  let counts: number[];
  if (typeof sectionCounts === 'string') {
    if (sectionCounts.startsWith('ddim')) {
      const desired = Number(sectionCounts.slice(4));
      for (let stride = 1; stride < numTimesteps; stride++) {
        if (Math.ceil(numTimesteps / stride) === desired) return Array.from({ length: desired }, (_, i) => i * stride);
      }
      throw new Error(`spaceTimesteps: cannot create exactly ${sectionCounts.slice(4)} steps from ${numTimesteps} with an integer stride`);
    }
    counts = sectionCounts.split(',').map((s) => Number(s));
  } else {
    counts = [...sectionCounts];
  }
  if (counts.length === 0 || counts.some((c) => !Number.isInteger(c) || c < 0)) {
    throw new Error(`spaceTimesteps: section counts must be non-negative integers, got '${String(sectionCounts)}'`);
  }
  const sizePer = Math.floor(numTimesteps / counts.length);
  const extra = numTimesteps % counts.length;
  const steps = new Set<number>();
  let startIdx = 0;
  counts.forEach((count, i) => {
    const size = sizePer + (i < extra ? 1 : 0);
    if (size < count) throw new Error(`spaceTimesteps: cannot divide a section of ${size} steps into ${count}`);
    const fracStride = count <= 1 ? 1 : (size - 1) / (count - 1);
    let curIdx = 0;
    for (let k = 0; k < count; k++) {
      steps.add(startIdx + roundHalfEven(curIdx));
      curIdx += fracStride;
    }
    startIdx += size;
  });
  return [...steps].sort((a, b) => a - b);
}

/**
 * A diffusion that keeps only `useTimesteps` of the base process (SpacedDiffusion): the kept
 * steps get betas that preserve the base alphas_cumprod there, and the model still sees the
 * original timesteps.
 */
export function spacedDiffusion(useTimesteps: readonly number[], config: GaussianDiffusionConfig): GaussianDiffusion {
  const base = new GaussianDiffusion(config);
  const keep = new Set(useTimesteps);
  const newBetas: number[] = [];
  const timestepMap: number[] = [];
  let lastAlphaCumprod = 1.0;
  base.alphasCumprod.forEach((alphaCumprod, i) => {
    if (!keep.has(i)) return;
    newBetas.push(1 - alphaCumprod / lastAlphaCumprod);
    lastAlphaCumprod = alphaCumprod;
    timestepMap.push(i);
  });
  if (timestepMap.length !== keep.size) throw new Error(`spacedDiffusion: timesteps outside [0, ${base.numTimesteps}) in [${[...keep]}]`);
  return new GaussianDiffusion({ ...config, betas: newBetas }, timestepMap);
}

/** The mean and variance of p(x_{t-1} | x_t) and the model's x_0 prediction. */
export interface PMeanVariance { mean: Tensor; variance: Tensor; logVariance: Tensor; predXstart: Tensor }
export interface SampleStep { sample: Tensor; predXstart: Tensor }

export interface SampleOptions {
  /** Clamp the x_0 prediction to [-1, 1] (upstream's default; DiT's sample.py turns it off for latents). */
  clipDenoised?: boolean;
  modelKwargs?: ModelKwargs;
}
export interface DdimOptions extends SampleOptions {
  /** 0: deterministic DDIM; 1: DDPM-like noise. */
  eta?: number;
}
export interface SampleLoopOptions extends SampleOptions {
  /** The starting x_T; default torch.randn(shape) on `device`. */
  noise?: Tensor;
  device?: torch.Device;
}

export interface TrainingLosses {
  /** Per-sample loss [B]: mse + vb (learned variance), mse, or the rescaled VB. */
  loss: Tensor;
  mse?: Tensor;
  vb?: Tensor;
}

const LN2 = Math.log(2.0);

export class GaussianDiffusion {
  readonly modelMeanType: ModelMeanType;
  readonly modelVarType: ModelVarType;
  readonly lossType: LossType;
  readonly numTimesteps: number;
  /** The original timestep the model sees at each step (SpacedDiffusion's timestep_map). */
  readonly timestepMap: readonly number[];
  // Schedule constants in float64, as upstream's numpy arrays.
  readonly betas: Float64Array;
  readonly alphasCumprod: Float64Array;
  readonly alphasCumprodPrev: Float64Array;
  readonly alphasCumprodNext: Float64Array;
  readonly sqrtAlphasCumprod: Float64Array;
  readonly sqrtOneMinusAlphasCumprod: Float64Array;
  readonly sqrtRecipAlphasCumprod: Float64Array;
  readonly sqrtRecipm1AlphasCumprod: Float64Array;
  readonly posteriorVariance: Float64Array;
  readonly posteriorLogVarianceClipped: Float64Array;
  readonly posteriorMeanCoef1: Float64Array;
  readonly posteriorMeanCoef2: Float64Array;
  private readonly logBetas: Float64Array;
  private readonly fixedLargeVariance: Float64Array;
  private readonly fixedLargeLogVariance: Float64Array;
  private readonly constants = new Map<Float64Array, Tensor>();

  /** A diffusion over `config.betas`; timestepMap (default: the identity) is what the model sees. */
  constructor(config: GaussianDiffusionConfig, timestepMap?: readonly number[]) {
    const betas = Float64Array.from(config.betas);
    if (betas.length === 0 || betas.some((b) => !(b > 0 && b <= 1))) throw new Error('GaussianDiffusion: betas must be non-empty and in (0, 1]');
    const n = betas.length;
    if (timestepMap !== undefined && timestepMap.length !== n) {
      throw new Error(`GaussianDiffusion: timestepMap has ${timestepMap.length} entries for ${n} betas`);
    }
    this.modelMeanType = config.modelMeanType;
    this.modelVarType = config.modelVarType;
    this.lossType = config.lossType;
    this.numTimesteps = n;
    this.timestepMap = timestepMap ?? Array.from({ length: n }, (_, i) => i);
    this.betas = betas;
    const map = (f: (i: number) => number): Float64Array => Float64Array.from({ length: n }, (_, i) => f(i));
    const ac = new Float64Array(n);
    let product = 1;
    for (let i = 0; i < n; i++) ac[i] = product *= 1.0 - betas[i]!;
    this.alphasCumprod = ac;
    this.alphasCumprodPrev = map((i) => (i === 0 ? 1.0 : ac[i - 1]!));
    this.alphasCumprodNext = map((i) => (i === n - 1 ? 0.0 : ac[i + 1]!));
    this.sqrtAlphasCumprod = map((i) => Math.sqrt(ac[i]!));
    this.sqrtOneMinusAlphasCumprod = map((i) => Math.sqrt(1.0 - ac[i]!));
    this.sqrtRecipAlphasCumprod = map((i) => Math.sqrt(1.0 / ac[i]!));
    this.sqrtRecipm1AlphasCumprod = map((i) => Math.sqrt(1.0 / ac[i]! - 1));
    const prev = this.alphasCumprodPrev;
    const pv = map((i) => betas[i]! * (1.0 - prev[i]!) / (1.0 - ac[i]!));
    this.posteriorVariance = pv;
    // The posterior variance is 0 at the first step: its log is clipped to the second step's.
    this.posteriorLogVarianceClipped = n > 1 ? map((i) => Math.log(pv[i === 0 ? 1 : i]!)) : new Float64Array(0);
    this.posteriorMeanCoef1 = map((i) => betas[i]! * Math.sqrt(prev[i]!) / (1.0 - ac[i]!));
    this.posteriorMeanCoef2 = map((i) => (1.0 - prev[i]!) * Math.sqrt(1.0 - betas[i]!) / (1.0 - ac[i]!));
    this.logBetas = map((i) => Math.log(betas[i]!));
    // FIXED_LARGE takes beta, with the first step's variance set to the posterior's for a better decoder likelihood.
    this.fixedLargeVariance = map((i) => (i === 0 ? pv[1] ?? Number.NaN : betas[i]!));
    this.fixedLargeLogVariance = this.fixedLargeVariance.map(Math.log);
  }

  /**
   * arr[t] as float32, shaped [B, 1, ..., 1] like x (upstream's _extract_into_tensor, which
   * indexes the float64 numpy array and casts to float32).
   */
  private extract(arr: Float64Array, t: Tensor, x: Tensor): Tensor {
    let table = this.constants.get(arr);
    if (table === undefined) {
      table = torch.keep(torch.tensor(arr, { dtype: 'float64' }));
      this.constants.set(arr, table);
    }
    const values = table.to(t.device).indexSelect(0, t).float();
    return values.view([t.size(0), ...new Array<number>(x.ndim - 1).fill(1)]);
  }

  /** Calls the model at the original timesteps of steps t (SpacedDiffusion's _WrappedModel). */
  private callModel(model: Model, x: Tensor, t: Tensor, modelKwargs: ModelKwargs): Tensor {
    const map = torch.tensor(this.timestepMap as number[], { dtype: t.dtype, device: t.device });
    return model(x, map.index(t), modelKwargs);
  }

  /** Samples q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I); noise defaults to randnLike(xStart). */
  qSample(xStart: Tensor, t: Tensor, noise?: Tensor): Tensor {
    const eps = noise ?? torch.randnLike(xStart);
    if (eps.shape.join() !== xStart.shape.join()) throw new Error(`qSample: noise shape [${eps.shape}] must equal xStart shape [${xStart.shape}]`);
    return this.extract(this.sqrtAlphasCumprod, t, xStart).mul(xStart)
      .add(this.extract(this.sqrtOneMinusAlphasCumprod, t, xStart).mul(eps));
  }

  /** The diffusion posterior q(x_{t-1} | x_t, x_0): mean, variance and clipped log variance. */
  qPosteriorMeanVariance(xStart: Tensor, xT: Tensor, t: Tensor): { mean: Tensor; variance: Tensor; logVarianceClipped: Tensor } {
    return {
      mean: this.extract(this.posteriorMeanCoef1, t, xT).mul(xStart).add(this.extract(this.posteriorMeanCoef2, t, xT).mul(xT)),
      variance: this.extract(this.posteriorVariance, t, xT),
      logVarianceClipped: this.extract(this.posteriorLogVarianceClipped, t, xT),
    };
  }

  predictXstartFromEps(xT: Tensor, t: Tensor, eps: Tensor): Tensor {
    return this.extract(this.sqrtRecipAlphasCumprod, t, xT).mul(xT).sub(this.extract(this.sqrtRecipm1AlphasCumprod, t, xT).mul(eps));
  }

  predictEpsFromXstart(xT: Tensor, t: Tensor, predXstart: Tensor): Tensor {
    return this.extract(this.sqrtRecipAlphasCumprod, t, xT).mul(xT).sub(predXstart).div(this.extract(this.sqrtRecipm1AlphasCumprod, t, xT));
  }

  /** p(x_{t-1} | x_t) from the model at steps t [B] (int64). */
  pMeanVariance(model: Model, x: Tensor, t: Tensor, options: SampleOptions = {}): PMeanVariance {
    return this.pMeanVarianceFromOutput(this.callModel(model, x, t, options.modelKwargs ?? {}), x, t, options.clipDenoised ?? true);
  }

  /** p(x_{t-1} | x_t) from a model output: with a learned range, its second half of channels v in [-1, 1] interpolates the log variance from the posterior's (-1) to beta's (1). */
  pMeanVarianceFromOutput(modelOutput: Tensor, x: Tensor, t: Tensor, clipDenoised: boolean): PMeanVariance {
    const [b, c] = x.shape as [number, number];
    if (t.ndim !== 1 || t.size(0) !== b) throw new Error(`pMeanVariance: t must have shape [${b}], got [${t.shape}]`);
    let output = modelOutput;
    let variance: Tensor;
    let logVariance: Tensor;
    if (this.modelVarType === 'learnedRange') {
      const expected = [b, 2 * c, ...x.shape.slice(2)];
      if (modelOutput.shape.join() !== expected.join()) {
        throw new Error(`pMeanVariance: a learned-range model must output [${expected}] (mean and variance channels), got [${modelOutput.shape}]`);
      }
      const [mean, varValues] = modelOutput.split(c, 1) as [Tensor, Tensor];
      output = mean;
      const minLog = this.extract(this.posteriorLogVarianceClipped, t, x);
      const maxLog = this.extract(this.logBetas, t, x);
      const frac = varValues.add(1).div(2);
      logVariance = frac.mul(maxLog).add(frac.rsub(1).mul(minLog));
      variance = logVariance.exp();
    } else {
      if (modelOutput.shape.join() !== x.shape.join()) throw new Error(`pMeanVariance: model output shape [${modelOutput.shape}] must equal x shape [${x.shape}]`);
      const large = this.modelVarType === 'fixedLarge';
      variance = this.extract(large ? this.fixedLargeVariance : this.posteriorVariance, t, x);
      logVariance = this.extract(large ? this.fixedLargeLogVariance : this.posteriorLogVarianceClipped, t, x);
    }
    const xStart = this.modelMeanType === 'startX' ? output : this.predictXstartFromEps(x, t, output);
    const predXstart = clipDenoised ? xStart.clamp(-1, 1) : xStart;
    const { mean } = this.qPosteriorMeanVariance(predXstart, x, t);
    return { mean, variance, logVariance, predXstart };
  }

  /** One ancestral step x_t -> x_{t-1}: the posterior mean plus its noise (none at t = 0). */
  pSample(model: Model, x: Tensor, t: Tensor, options: SampleOptions = {}): SampleStep {
    const out = this.pMeanVariance(model, x, t, options);
    const noise = torch.randnLike(x);
    const nonzeroMask = t.ne(0).float().view([t.size(0), ...new Array<number>(x.ndim - 1).fill(1)]);
    return { sample: out.mean.add(nonzeroMask.mul(out.logVariance.mul(0.5).exp()).mul(noise)), predXstart: out.predXstart };
  }

  /**
   * Ancestral sampling from x_T (options.noise or torch.randn(shape)) through every step,
   * yielding each step's {sample, predXstart}; the caller owns (and disposes) what it gets.
   */
  *pSampleLoopProgressive(model: Model, shape: readonly number[], options: SampleLoopOptions = {}): Generator<SampleStep> {
    yield* this.loop(shape, options, (x, t) => this.pSample(model, x, t, options));
  }

  /** The final sample of pSampleLoopProgressive. */
  pSampleLoop(model: Model, shape: readonly number[], options: SampleLoopOptions = {}): Tensor {
    return lastSample(this.pSampleLoopProgressive(model, shape, options));
  }

  /** One DDIM step (Song et al., eq. 12); draws noise even when eta is 0, as upstream, so RNG use matches. */
  ddimSample(model: Model, x: Tensor, t: Tensor, options: DdimOptions = {}): SampleStep {
    const eta = options.eta ?? 0.0;
    const out = this.pMeanVariance(model, x, t, options);
    const eps = this.predictEpsFromXstart(x, t, out.predXstart);
    const alphaBar = this.extract(this.alphasCumprod, t, x);
    const alphaBarPrev = this.extract(this.alphasCumprodPrev, t, x);
    const sigma = alphaBarPrev.rsub(1).div(alphaBar.rsub(1)).sqrt().mul(eta).mul(alphaBar.div(alphaBarPrev).rsub(1).sqrt());
    const noise = torch.randnLike(x);
    const meanPred = out.predXstart.mul(alphaBarPrev.sqrt()).add(alphaBarPrev.rsub(1).sub(sigma.pow(2)).sqrt().mul(eps));
    const nonzeroMask = t.ne(0).float().view([t.size(0), ...new Array<number>(x.ndim - 1).fill(1)]);
    return { sample: meanPred.add(nonzeroMask.mul(sigma).mul(noise)), predXstart: out.predXstart };
  }

  *ddimSampleLoopProgressive(model: Model, shape: readonly number[], options: SampleLoopOptions & DdimOptions = {}): Generator<SampleStep> {
    yield* this.loop(shape, options, (x, t) => this.ddimSample(model, x, t, options));
  }

  ddimSampleLoop(model: Model, shape: readonly number[], options: SampleLoopOptions & DdimOptions = {}): Tensor {
    return lastSample(this.ddimSampleLoopProgressive(model, shape, options));
  }

  private *loop(shape: readonly number[], options: SampleLoopOptions, step: (x: Tensor, t: Tensor) => SampleStep): Generator<SampleStep> {
    let img = options.noise ?? torch.randn(shape, { device: options.device });
    if (img.shape.join() !== shape.join()) throw new Error(`sample loop: noise shape [${img.shape}] must equal shape [${shape}]`);
    for (let i = this.numTimesteps - 1; i >= 0; i--) {
      // One sampling batch can take minutes: the thread governor looks at the load between its steps.
      torch.adaptThreads();
      const x = img;
      const out = torch.noGrad(() => torch.scope(() => step(x, torch.full([shape[0]!], i, { dtype: 'int64', device: x.device }))));
      yield out;
      img = out.sample;
    }
  }

  /**
   * The variational-bound term for steps t in bits per dimension, from a model output: the KL
   * from the posterior to p(x_{t-1} | x_t), or at t = 0 the discretized decoder NLL.
   */
  vbTermsBpd(modelOutput: Tensor, xStart: Tensor, xT: Tensor, t: Tensor, clipDenoised = true): { output: Tensor; predXstart: Tensor } {
    const posterior = this.qPosteriorMeanVariance(xStart, xT, t);
    const out = this.pMeanVarianceFromOutput(modelOutput, xT, t, clipDenoised);
    const kl = meanFlat(normalKl(posterior.mean, posterior.logVarianceClipped, out.mean, out.logVariance)).div(LN2);
    const decoderNll = meanFlat(discretizedGaussianLogLikelihood(xStart, out.mean, out.logVariance.mul(0.5)).neg()).div(LN2);
    return { output: torch.where(t.eq(0), decoderNll, kl), predXstart: out.predXstart };
  }

  /**
   * Per-sample training losses at steps t [B] (drawn by the caller, as DiT's train.py does with
   * torch.randint(0, numTimesteps, [B])); the noise defaults to randnLike(xStart). With a
   * learned variance, the VB term sees the mean prediction detached so that it trains the
   * variance only.
   */
  trainingLosses(model: Model, xStart: Tensor, t: Tensor, modelKwargs: ModelKwargs = {}, noise?: Tensor): TrainingLosses {
    const eps = noise ?? torch.randnLike(xStart);
    const xT = this.qSample(xStart, t, eps);
    const modelOutput = this.callModel(model, xT, t, modelKwargs);
    if (this.lossType === 'rescaledKl') {
      return { loss: this.vbTermsBpd(modelOutput, xStart, xT, t, false).output.mul(this.numTimesteps) };
    }
    let output = modelOutput;
    let vb: Tensor | undefined;
    if (this.modelVarType === 'learnedRange') {
      const c = xT.size(1);
      if (modelOutput.size(1) !== 2 * c) throw new Error(`trainingLosses: a learned-range model must output ${2 * c} channels, got [${modelOutput.shape}]`);
      const [mean, varValues] = modelOutput.split(c, 1) as [Tensor, Tensor];
      output = mean;
      vb = this.vbTermsBpd(torch.cat([mean.detach(), varValues], 1), xStart, xT, t, false).output;
      // Divided by 1000 for equivalence with the initial implementation (upstream's note).
      if (this.lossType === 'rescaledMse') vb = vb.mul(this.numTimesteps / 1000.0);
    }
    const target = this.modelMeanType === 'startX' ? xStart : eps;
    if (output.shape.join() !== target.shape.join()) throw new Error(`trainingLosses: model output [${output.shape}] must match x [${target.shape}]`);
    const mse = meanFlat(target.sub(output).pow(2));
    return vb === undefined ? { loss: mse, mse } : { loss: mse.add(vb), mse, vb };
  }
}

function lastSample(steps: Generator<SampleStep>): Tensor {
  let final: SampleStep | null = null;
  for (const out of steps) {
    if (final !== null) {
      final.sample.dispose();
      final.predXstart.dispose();
    }
    final = out;
  }
  final!.predXstart.dispose();
  return final!.sample;
}

/** KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) elementwise, in nats (diffusion_utils.normal_kl). */
export function normalKl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor): Tensor {
  return logvar2.add(-1.0).sub(logvar1).add(logvar1.sub(logvar2).exp())
    .add(mean1.sub(mean2).pow(2).mul(logvar2.neg().exp())).mul(0.5);
}

/** The tanh approximation of the standard normal CDF. */
export function approxStandardNormalCdf(x: Tensor): Tensor {
  return x.add(x.pow(3).mul(0.044715)).mul(Math.sqrt(2.0 / Math.PI)).tanh().add(1.0).mul(0.5);
}

/**
 * Log-likelihood (nats) of x, images in [-1, 1] quantized to 256 levels, under N(means,
 * exp(logScales)^2) integrated over each level's bin; the end bins extend to +-infinity.
 */
export function discretizedGaussianLogLikelihood(x: Tensor, means: Tensor, logScales: Tensor): Tensor {
  const centered = x.sub(means);
  const invStdv = logScales.neg().exp();
  const cdfPlus = approxStandardNormalCdf(invStdv.mul(centered.add(1.0 / 255.0)));
  const cdfMin = approxStandardNormalCdf(invStdv.mul(centered.sub(1.0 / 255.0)));
  const logCdfPlus = cdfPlus.clamp(1e-12).log();
  const logOneMinusCdfMin = cdfMin.rsub(1.0).clamp(1e-12).log();
  const logCdfDelta = cdfPlus.sub(cdfMin).clamp(1e-12).log();
  return torch.where(x.lt(-0.999), logCdfPlus, torch.where(x.gt(0.999), logOneMinusCdfMin, logCdfDelta));
}
