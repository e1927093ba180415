// Pipelines: the library face of every command. Each `run*` takes the command's options
// (camelCased flags, with the same defaults, exported beside it) from files and names as the
// reference scripts take them, resolves its inputs, and calls the trainers (src/train), the sampler
// (src/sampling) or the metrics (src/eval). `reals launch`, `reals report` and `reals export` too.
// May import every room below it: torch, nn, optim, io, hub, runlog, onnx, models, diffusion,
// data, eval, train, sampling, web. Only src/demo and src/cli import it.
export * from './align.js';
export * from './generator.js';
export * from './sample.js';
export * from './teacher.js';
export * from './classifier.js';
export * from './export.js';
export {
  runDense, runCompare, runTrainLinear, DENSE_RUN_DEFAULTS, COMPARE_RUN_DEFAULTS, TRAIN_LINEAR_RUN_DEFAULTS,
  type DenseOptions, type DenseResult, type DenseSettings, type CompareOptions, type CompareResult, type CompareSettings,
  type TrainLinearOptions, type TrainLinearResult, type TrainLinearSettings,
} from './heads.js';
export type { DinoSourceSettings } from './readout.js';
export { launch, resolveCommand, type LaunchOptions } from './launch.js';
export { writeRunReport, findRuns, labelledSampleGrid, type RunReportOptions, type RunReportResult, type ReportRun, type TrainingRun, type SampleRun } from './report.js';
