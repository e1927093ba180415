// Reading and writing tensors: safetensors files and PyTorch checkpoints.
export { SafetensorsFile, loadSafetensors, saveSafetensors, type TensorInfo, type SafetensorsReadOptions } from './safetensors.js';
export { load, type LoadOptions } from './torch-load.js';
