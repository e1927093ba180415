// Reading and writing tensors: safetensors files, PyTorch checkpoints and diffusers model folders.
// May import: torch, nn, optim.
export { SafetensorsFile, loadSafetensors, saveSafetensors, CRC32_KEY, type TensorInfo, type SafetensorsReadOptions } from './safetensors.js';
export { load, type LoadOptions } from './torch-load.js';
export {
  CONFIG_NAME, SAFETENSORS_WEIGHTS_NAME, WEIGHTS_NAME, loadDiffusersWeights, saveDiffusersWeights, readJsonFile, writeJsonFileAtomic,
} from './diffusers.js';
export { makeDirs, ensureWritableDir, checkWritableDir, namingPath, fileSha256 } from './file.js';
export { NpzFile, NpzWriter, loadNpz, saveNpz, loadNpy, saveNpy, parseNpyHeader, encodeNpyHeader, type NpyHeader } from './npz.js';
