// The embedded end-to-end run (`reals demo`): the pipeline, its stand-in teacher and evaluation classifier, and the report.
// May import every room but cli: it runs the pipelines (src/pipelines) in the study's order.
export {
  runDemo, commandWords, commandLine, onlyRunDir, writeVaeConfig, vaeTrainOptions, vaeConvertOptions, trainLinearOptions, sitEvalSteps,
  DEMO_PROFILES, DEFAULT_CELLS, type ProfileName, type DemoOptions, type VaeTrainSpec, type TeacherFiles,
} from './pipeline.js';
export {
  SAMPLERS, RESULT_FILES, TEACHER_KINDS, PROTOCOLS, ALIGN_LOSSES, DEFAULT_LATENT_CHANNELS, latentSpaces, baselineOf, type DemoProfile, type DemoResult, type DemoCells, type LatentSpace,
  type LatentSpaceResult, type CurvePoint, type TeacherRecord, type TeacherKind, type Protocol, type StepRecord, type SamplerName,
  type SampleScores, type ReconstructionScores, type HeadScores,
} from './results.js';
export {
  writeReport, tableRows, seedValues, compare, describeComparison, headlineSentence, headlineSpace, findingSentence, curveStepsOf, formatValues, demoCommandLine,
  type TableRow, type Comparison,
} from './report.js';
export {
  ALIGNMENT_FINDING, ALIGNMENT_FINDING_CPU, ALIGNMENT_FINDING_OPENBLAS, ALIGNMENT_FINDING_LOSS_RESULTS, ALIGNMENT_REPLICATION, isFindingRegime, type StudyFinding, type StudyReplication,
  type StudyLossResult,
} from './study-finding.js';
export { trainTeacher, type TeacherOptions, type TeacherResult } from './teacher.js';
export { FashionClassifier, trainClassifier, classifierExtractor, type ClassifierOptions, type ClassifierResult } from './classifier.js';
export { trainSupervised, fashionMnistTensors, predictInBatches, type SupervisedOptions, type SupervisedRunOptions, type SupervisedResult } from './supervised.js';
export { mergeDemoRuns, readDemoResult } from './merge.js';
export {
  runChannelCell, trainStageOneVae, studyClassifier, cellName, sourceCommit, CHANNEL_STUDY_PROFILES, STUDY_CHANNELS, STUDY_SEEDS,
  type ChannelStudyProfile, type ChannelStudyProfileName, type ChannelCellMetrics, type ChannelCellOptions, type ClassifierRecord,
} from './study.js';
export { writeChannelStudyReport, readChannelCells } from './study-report.js';
export {
  runAlignCell, alignCellName, teacherUse, ALIGN_STUDY_PROFILES, ALIGN_ARMS, ALIGN_ARM_NAMES, ALIGN_TEACHERS,
  type AlignStudyProfile, type AlignStudyProfileName, type AlignArm, type AlignTeacher, type AlignCellMetrics, type AlignCellOptions, type TeacherUse,
} from './align-study.js';
export { writeAlignStudyReport, readAlignCells, readAlignCellFolders, armDifferences, type ArmDifferences } from './align-report.js';
export { pairedDifference, pairedInterval, studentTQuantile, studentTCdf, formatPaired, intervalVerdict, type PairedDifference } from './paired.js';
