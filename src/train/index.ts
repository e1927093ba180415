// Training: the trainers (the aligned VAE, SiT/DiT, the self-supervised teacher, the supervised
// loop), their checkpoints and the conversion of an alignment checkpoint, run folders, and the
// process context of a run (its outputs, ranks in step, cluster environments, stop signals).
// May import: torch, nn, optim, io, hub, runlog, onnx, models, diffusion, data, eval.
// Sampling is src/sampling; the commands' library functions (runGeneratorTrain, ...) are src/pipelines.
export { createRunDir, resolveResume, checkFinite, NonFiniteLossError, type RunDir } from './run-dir.js';
export {
  saveCheckpoint, loadCheckpoint, NonFiniteCheckpointError, CheckpointManager, rngStateBase64, setRngStateBase64, optimizerToCheckpoint, loadOptimizer,
  LAST_LINK, LAST_POINTER, type Checkpoint, type CheckpointContents, type CheckpointMetadata, type CheckpointManagerOptions, type TensorGroup,
} from './checkpoint.js';
export { trainAlignment } from './align.js';
export { convertAlignment, loadAlignedModels, computeLatentStats } from './align-convert.js';
export { trainGenerator, loadGenerator } from './sit.js';
export { trainSelfSupervisedTeacher, SELF_SUPERVISED_DEFAULTS, TEACHER_CONFIG_NAME, TEACHER_WEIGHTS_NAME, type SelfSupervisedTeacherOptions, type SelfSupervisedTeacherResult, type SelfSupervisedSettings, type ProbeData } from './teacher.js';
export {
  applyClusterEnvironment, clusterEnvironment, describeClusterEnvironment, expandHostList, slurmPort, writeElasticErrorFile, elasticRestartRun, torchelasticJob,
  ELASTIC_JOB_FILE, type ClusterEnvironment,
} from './cluster-env.js';
export { StopSignal, TrainingStopped, resumeCommand, signalExitCode } from './stop.js';
