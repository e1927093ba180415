// The embedded end-to-end run (`reals demo`): the pipeline, its stand-in teacher and evaluation classifier, and the report.
export {
  runDemo, parseFlags, commandLine, subcommand, onlyRunDir, writeVaeConfig, vaeTrainWords, vaeConvertWords, trainLinearWords, DEMO_PROFILES,
  type ProfileName, type DemoOptions, type VaeTrainSpec,
} from './pipeline.js';
export {
  VARIANTS, SAMPLERS, RESULT_FILES, type DemoProfile, type DemoResult, type VariantResult, type StepRecord, type Variant, type SamplerName,
  type SampleScores, type ReconstructionScores, type HeadScores,
} from './results.js';
export { writeReport, TABLE_ROWS, rowValue, formatValues, type TableRow } from './report.js';
export { trainTeacher, type TeacherOptions, type TeacherResult } from './teacher.js';
export { FashionClassifier, trainClassifier, type ClassifierOptions, type ClassifierResult } from './classifier.js';
export { trainSupervised, fashionMnistTensors, predictInBatches, type SupervisedOptions, type SupervisedRunOptions, type SupervisedResult } from './supervised.js';
