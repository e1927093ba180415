// Training infrastructure shared by the trainers: run folders, checkpoints, metrics, TensorBoard
// event files, progress bars and pictures.
export { createRunDir, resolveResume, checkFinite, NonFiniteLossError, type RunDir } from './run-dir.js';
export {
  saveCheckpoint, loadCheckpoint, NonFiniteCheckpointError, CheckpointManager, rngStateBase64, setRngStateBase64, optimizerToCheckpoint, loadOptimizer,
  LAST_LINK, LAST_POINTER, type Checkpoint, type CheckpointContents, type CheckpointMetadata, type CheckpointManagerOptions, type TensorGroup,
} from './checkpoint.js';
export { MetricsLog, parseMetrics, type MetricRecord, type MetricsLogOptions } from '../runlog/metrics.js';
export { SummaryWriter, crc32c, maskedCrc32c, tfRecord, type SummaryWriterOptions } from '../runlog/tensorboard.js';
export { progress, formatDuration, type Progress, type ProgressOptions, type ProgressFields } from '../runlog/progress.js';
export { encodePng, makeGrid, saveImageGrid, savePlot, PLOT_COLORS, type GridOptions, type PlotSeries, type PlotOptions } from '../runlog/images.js';
export { trainAlignment } from './align.js';
export { convertAlignment, loadAlignedModels, computeLatentStats } from './align-convert.js';
export { trainGenerator, loadGenerator } from './sit.js';
export { sampleImages, sampleLatents } from '../sampling/sample.js';
export { cacheLatents, LatentCache, CachedLatents, EncodedImages, latentNormalization } from '../data/latents.js';
export { trainSelfSupervisedTeacher, SELF_SUPERVISED_DEFAULTS, TEACHER_CONFIG_NAME, TEACHER_WEIGHTS_NAME, type SelfSupervisedTeacherOptions, type SelfSupervisedTeacherResult, type SelfSupervisedSettings, type ProbeData } from './teacher.js';
export * from '../data/inputs.js';
export * from './align-pipeline.js';
export * from './generator-pipeline.js';
export * from './teacher-pipeline.js';
export { launch, resolveCommand, type LaunchOptions } from './launch.js';
export {
  applyClusterEnvironment, clusterEnvironment, describeClusterEnvironment, expandHostList, slurmPort, writeElasticErrorFile, elasticRestartRun, torchelasticJob,
  ELASTIC_JOB_FILE, type ClusterEnvironment,
} from './cluster-env.js';
export { StopSignal, TrainingStopped, resumeCommand, signalExitCode } from './stop.js';
export * from './export-pipeline.js';
export { writeRunReport, findRuns, labelledSampleGrid, type RunReportOptions, type RunReportResult, type ReportRun, type TrainingRun, type SampleRun } from './report.js';
