// `import { AutoencoderKL, SiT, torch } from 'reals'`: the models and the pipelines the commands
// run, flat; each layer as a namespace (also its own entry: `reals/torch`, `reals/nn`, ...).
// The top of the layers with src/entry: it may import every room, and no room imports it.
export * as torch from './torch/index.js';
export * as nn from './nn/index.js';
export * as optim from './optim/index.js';
export * as io from './io/index.js';
export * as data from './data/index.js';
export * as diffusion from './diffusion/index.js';
export * as train from './entry/train.js';
export * as evaluation from './eval/index.js';
export * as hub from './hub/index.js';
export * as onnx from './entry/onnx.js';
export * as runlog from './runlog/index.js';
export * as sampling from './sampling/index.js';
export * as pipelines from './pipelines/index.js';
export * from './models/index.js';
export {
  runAlignTrain, runAlignConvert, runGeneratorTrain, runSample, runCacheLatents, runTeacherTrain, runTeacherProbe, writeRunReport,
  ALIGN_TRAIN_RUN_DEFAULTS, ALIGN_CONVERT_RUN_DEFAULTS, GENERATOR_TRAIN_RUN_DEFAULTS, SAMPLE_RUN_DEFAULTS, CACHE_LATENTS_RUN_DEFAULTS,
  TEACHER_TRAIN_RUN_DEFAULTS, TEACHER_PROBE_RUN_DEFAULTS,
  type AlignTrainRunOptions, type AlignConvertRunOptions, type GeneratorTrainRunOptions, type SampleRunOptions, type SampleMode,
  type CacheLatentsRunOptions, type TeacherTrainRunOptions, type TeacherProbeRunOptions, type RunReportOptions,
} from './pipelines/index.js';
export { evaluate, fidInceptionExtractor, writeFidStatistics, type EvaluateOptions } from './eval/index.js';
export {
  runDense, runCompare, runTrainLinear, DENSE_RUN_DEFAULTS, COMPARE_RUN_DEFAULTS, TRAIN_LINEAR_RUN_DEFAULTS,
  type DenseOptions, type DenseResult, type DenseSettings, type CompareOptions, type CompareResult, type CompareSettings,
  type TrainLinearOptions, type TrainLinearResult, type TrainLinearSettings, type DinoSourceSettings,
} from './pipelines/index.js';
