// `reals/train`: src/train's surface, and the symbols it exported before they moved to rooms of
// their own. Those re-exports are deprecated (docs/architecture.md): import them from
// `reals/runlog`, `reals/data`, `reals/sampling` and `reals/pipelines`.
export * from '../train/index.js';
export { MetricsLog, parseMetrics, type MetricRecord, type MetricsLogOptions } from '../runlog/metrics.js';
export { SummaryWriter, crc32c, maskedCrc32c, tfRecord, type SummaryWriterOptions } from '../runlog/tensorboard.js';
export { progress, formatDuration, type Progress, type ProgressOptions, type ProgressFields } from '../runlog/progress.js';
export { encodePng, makeGrid, saveImageGrid, savePlot, PLOT_COLORS, type GridOptions, type PlotSeries, type PlotOptions } from '../runlog/images.js';
export { cacheLatents, LatentCache, CachedLatents, EncodedImages } from '../data/latents.js';
export { latentNormalization } from '../data/latent-normalization.js';
export * from '../data/inputs.js';
export { sampleImages, sampleLatents } from '../sampling/sample.js';
export * from '../pipelines/align.js';
export * from '../pipelines/generator.js';
export * from '../pipelines/sample.js';
export * from '../pipelines/teacher.js';
export * from '../pipelines/export.js';
export { launch, resolveCommand, type LaunchOptions } from '../pipelines/launch.js';
export { writeRunReport, findRuns, labelledSampleGrid, type RunReportOptions, type RunReportResult, type ReportRun, type TrainingRun, type SampleRun } from '../pipelines/report.js';
export {
  runDense, runCompare, runTrainLinear, DENSE_RUN_DEFAULTS, COMPARE_RUN_DEFAULTS, TRAIN_LINEAR_RUN_DEFAULTS,
  type DenseOptions, type DenseResult, type DenseSettings, type CompareOptions, type CompareResult, type CompareSettings,
  type TrainLinearOptions, type TrainLinearResult, type TrainLinearSettings,
} from '../pipelines/heads.js';
export type { DinoSourceSettings } from '../pipelines/readout.js';
