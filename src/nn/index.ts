// torch.nn: `import * as nn from '../nn/index.js'`, then nn.Linear, nn.init.kaimingUniform_, nn.F.silu.
// May import: torch.
export { Module, stateDictHash, type StateDict, type LoadStateDictResult } from './module.js';
export { Identity, Linear, Embedding, Dropout, Flatten } from './layers.js';
export { Conv2d, ConvTranspose2d, type Conv2dOptions, type Size2 } from './conv.js';
export { LayerNorm, GroupNorm, BatchNorm2d, type BatchNormOptions } from './normalization.js';
export { SiLU, GELU, ReLU, LeakyReLU, Tanh, Sigmoid, Softmax } from './activation.js';
export { ModuleList, Sequential } from './containers.js';
export * as init from './init.js';
export * as F from './functional.js';
