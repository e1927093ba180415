// Diffusion: stochastic-interpolant transport (SiT) and its ODE/SDE samplers.
export { ICPlan, VPCPlan, GVPCPlan, expandTLikeX } from './path.js';
export type { Coefficient, DiffusionForm } from './path.js';
export { Transport, createTransport, meanFlat } from './transport.js';
export type { PathType, Prediction, LossWeight, Model, ModelKwargs, TransportConfig, IntervalOptions } from './transport.js';
export { odeint, timeGrid } from './ode.js';
export type { OdeMethod, OdeFunc, OdeOptions } from './ode.js';
export { sdeint } from './sde.js';
export type { SdeMethod, SdeField, SdeOptions } from './sde.js';
export { Sampler } from './sampler.js';
export type { OdeSamplerOptions, SdeSamplerOptions, LastStep, SampleResult, SampleFn } from './sampler.js';
