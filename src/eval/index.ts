// The ADM metrics: FID, sFID, Inception Score, precision and recall, and the batches they read;
// the linear probe and the patch tokens' spatial structure (LDS) of a teacher; iFID of a VAE.
// May import: torch, nn, optim, io, hub, runlog, onnx, models, diffusion, data.
export { computeStatistics, frechetDistance, traceSqrtProduct, type FIDStatistics } from './fid.js';
export { inceptionScore, IS_SPLIT_SIZE } from './inception-score.js';
export { pairwiseDistances, manifoldRadii, precisionRecall, type ManifoldOptions, type PrecisionRecall } from './precision-recall.js';
export { IMAGES_KEY, openImageBatches, contentHash, writeReferenceBatch, type ImageBatches, type ReferenceBatchOptions } from './batches.js';
export {
  ACTIVATION_BATCH_SIZE, EXTRACTOR_KEY, asciiTensor, inceptionExtractor, computeActivations, computeLogits, activationCachePath, cachedActivations, inceptionThroughput,
  type FeatureExtractor, type Activations, type ActivationOptions,
} from './activations.js';
export {
  STATISTICS_KEYS, INCEPTION_WEIGHTS_ENV, evaluate, fidInceptionExtractor, featureNetworkReport, holdsStatisticsOnly, readStatistics, writeFidStatistics, formatResult,
  type EvaluateOptions, type EvaluationResult, type BatchReport, type FeatureNetworkReport, type FileStatistics, type Stage,
} from './evaluate.js';
export {
  DGM_EVAL_DINOV2_INPUT, DEFAULT_FEATURES_DINO_MODEL, FEATURE_NETWORKS, classifierExtractor, dinov2Extractor, featureExtractor, resizeImagesPil,
  type FeatureNetworkOptions,
} from './features.js';
export { linearProbe, probeFeatures, teacherTokens, holdOutSplit, subsetOf, type LinearProbeOptions, type LinearProbeResult, type ProbedTeacher } from './linear-probe.js';
export { LDS_FAR_DISTANCE, localDistantSimilarity, spatialStructure, type SpatialStructure, type SpatialStructureOptions } from './spatial-structure.js';
export {
  IFID_T, IFID_RUN_DEFAULTS, interpolatedFid, interpolateLatents, slerpLatents, nearestNeighbours, runIfid,
  type IfidInterpolation, type IfidOptions, type IfidResult, type IfidRunOptions, type IfidSettings, type IfidStage,
} from './ifid.js';
