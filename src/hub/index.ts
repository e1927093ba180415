// Official weights on demand, cached where PyTorch and Hugging Face cache them.
// May import: torch, nn, optim, io.
export { downloadFile, downloadTimeoutS, DEFAULT_DOWNLOAD_TIMEOUT_S, isOffline, type DownloadOptions } from './download.js';
export { torchHubDir, torchHubCheckpoint, type TorchHubOptions } from './torch-hub.js';
export { hfHubCacheDir, hfEndpoint, hfRepoCacheDir, hfHubDownload, hfModelFolder, isHfRepoId, type HfHubOptions } from './hf-hub.js';
export {
  dinov2CheckpointUrl, FID_INCEPTION_URL, LPIPS_VGG16_URL, LPIPS_LIN_URL, LPIPS_LIN_FILE, GENERATOR_CHECKPOINTS, GENERATOR_CHECKPOINT_DIR,
  fetchDinov2Checkpoint, fetchFidInceptionWeights, fetchLpipsWeights, resolveGeneratorCheckpoint, type WeightsOptions,
} from './weights.js';
