// Models that load the official weights: `import { SiT, SIT_CONFIGS } from '../models/index.js'`.
// May import: torch, nn, optim, io, hub, runlog, onnx (each model registers its ONNX exporter).
export * from './sit.js';
export * from './autoencoder-kl.js';
export * from './dinov2.js';
export * from './inception.js';
export * from './lpips.js';
export * from './discriminator.js';
export * from './alignment.js';
export * from './heads.js';
export * from './hog.js';
