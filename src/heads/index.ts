export {
  runDense, runCompare, runTrainLinear, DENSE_RUN_DEFAULTS, COMPARE_RUN_DEFAULTS, TRAIN_LINEAR_RUN_DEFAULTS,
  type DenseOptions, type DenseResult, type DenseSettings, type CompareOptions, type CompareResult, type CompareSettings,
  type TrainLinearOptions, type TrainLinearResult, type TrainLinearSettings, type DinoSourceSettings,
} from './readout.js';
