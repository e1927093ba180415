// Diffusion: stochastic-interpolant transport (SiT) and its ODE/SDE samplers, DiT's DDPM, classifier-free
// guidance, and the generateLatents front end.
// May import: torch, nn, optim, io, hub, runlog, onnx, models.
export { ICPlan, VPCPlan, GVPCPlan, expandTLikeX } from './path.js';
export type { Coefficient, DiffusionForm } from './path.js';
export { Transport, TRANSPORT_DEFAULTS, createTransport, meanFlat } from './transport.js';
export type { PathType, Prediction, LossWeight, Model, ModelKwargs, TransportConfig, IntervalOptions } from './transport.js';
export { odeint, timeGrid } from './ode.js';
export type { OdeMethod, OdeFunc, OdeOptions } from './ode.js';
export { sdeint } from './sde.js';
export type { SdeMethod, SdeField, SdeOptions } from './sde.js';
export { Sampler } from './sampler.js';
export type { OdeSamplerOptions, SdeSamplerOptions, LastStep, SampleResult, SampleFn } from './sampler.js';
export {
  GaussianDiffusion, createDiffusion, getNamedBetaSchedule, spaceTimesteps, spacedDiffusion,
  normalKl, approxStandardNormalCdf, discretizedGaussianLogLikelihood,
} from './gaussian-diffusion.js';
export type {
  ModelMeanType, ModelVarType, LossType, NoiseSchedule, GaussianDiffusionConfig, CreateDiffusionOptions,
  PMeanVariance, SampleStep, SampleOptions, DdimOptions, SampleLoopOptions, TrainingLosses,
} from './gaussian-diffusion.js';
export { guidedModel, fromRepaTime } from './guidance.js';
export type { ConditionalNetwork, GuidanceOptions } from './guidance.js';
export { isGuided, convertTime, guidanceDecider } from './interval.js';
export type { TimeConvention, GuidanceInterval, StepGrid } from './interval.js';
export { generateLatents, floatOutputs } from './generate.js';
export type { GenerateMethod, GenerateOptions } from './generate.js';
