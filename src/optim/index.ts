// Optimizers, gradient clipping, EMA and LR schedules: `import * as optim from './optim/index.js'`.
// May import: torch, nn.
export { Optimizer, flattenStateDict, unflattenStateDict } from './optimizer.js';
export type { OptimizerStateDict, SavedParamGroup, ParamGroup, ParamGroupInput, ParamState, OptionValue, OptimizerMetadata } from './optimizer.js';
export { Adam, AdamW } from './adam.js';
export type { AdamOptions } from './adam.js';
export { clipGradNorm, clipGradValue } from './clip.js';
export { EMA } from './ema.js';
export type { NamedTensors } from './ema.js';
export { LRScheduler, LambdaLR, ConstantLR, CosineAnnealingLR, LinearWarmupLR, WarmupCosineLR } from './lr-scheduler.js';
export type { ScheduledOptimizer, LrAt, LRSchedulerStateDict } from './lr-scheduler.js';
