// The tensor API: `import * as torch from './torch/index.js'` reads like PyTorch.
// May import: the addon (native/) only; every other room builds on it.
export * from './dtype.js';
export { Tensor, scope, keep, op, callOp, opId, hasOp, slice, where, scalarTensor } from './tensor.js';
export type { Device, Shape, Scalar, Index, Slice } from './tensor.js';
export * from './creation.js';
export { noGrad, enableGrad, isGradEnabled, setGradEnabled } from './autograd.js';
export * as autograd from './autograd.js';
export * as linalg from './linalg.js';
export * as nnFunctional from './functional.js';
export * as distributed from './distributed.js';
export { cuda, setNumThreads, getNumThreads, version, autocast, autocastDeviceType } from './cuda.js';
export type { AutocastDevice, AutocastOptions } from './cuda.js';
export { PRECISIONS, cpuFamilyModel, cpuHasBf16, cpuKernels, openblasCoreName, resolvePrecision, runThreads, usePrecision, withPrecision } from './precision.js';
export { adaptThreads, threadGovernor } from './threads.js';
export { cpuBudget } from './cpu-budget.js';
export type { CpuBudget, CpuQuota } from './cpu-budget.js';
export type { Precision, ResolvedPrecision } from './precision.js';
export { native, waitPolicy } from './native.js';
export { checkDevice } from './device.js';
export { fusedAdamStep, fusedEmaStep } from './fused-optim.js';
export { modulatedLayerNorm, gatedResidual } from './fused-adaln.js';
export type { AdamStepScalars } from './fused-optim.js';
