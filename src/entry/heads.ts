// `reals/heads`, deprecated (docs/architecture.md): the heads' commands are pipelines now; import
// them from `reals/pipelines` (or `reals`). The head networks are `reals/models`.
export {
  runDense, runCompare, runTrainLinear, DENSE_RUN_DEFAULTS, COMPARE_RUN_DEFAULTS, TRAIN_LINEAR_RUN_DEFAULTS,
  type DenseOptions, type DenseResult, type DenseSettings, type CompareOptions, type CompareResult, type CompareSettings,
  type TrainLinearOptions, type TrainLinearResult, type TrainLinearSettings,
} from '../pipelines/heads.js';
export type { DinoSourceSettings } from '../pipelines/readout.js';
