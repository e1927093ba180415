// Sampling: where images come out of a trained generator. Labels and seeds for each sample index,
// the latents of a batch (libtorch: src/diffusion's samplers), the sample folder with its settings,
// PNGs, the ADM .npz and a grid; the onnxruntime backend and the flow sampler it shares with the
// web page. Loading the generator from a checkpoint is the trainer's (src/train/sit.ts).
// May import: torch, nn, optim, io, hub, runlog, onnx, models, diffusion, data, eval, train.
// flow-sampler.ts imports nothing: the web page bundles it.
export { sampleImages, sampleLatents, SAMPLING_SETTINGS, type SampleLatentsOptions, type SampleImagesOptions, type SampleImagesResult } from './sample.js';
export { sampleLabel, sampleLabels, batchSeed, LABEL_SAMPLINGS, type LabelSampling } from './labels.js';
export { createOnnxSampler, type OnnxSampler, type OnnxSamplerOptions } from './onnx-backend.js';
export { sampleFlowOde, linspace32, linspace64, type FlowMethod, type VelocityFn, type FlowSamplerOptions } from './flow-sampler.js';
