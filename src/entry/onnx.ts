// `reals/onnx`: src/onnx's graph builder and module exporters, and the whole networks' graphs,
// which live beside the models (src/models/onnx-export.ts) so that the onnxruntime sampler can use
// them; both stay here.
export * from '../onnx/index.js';
export {
  exportGenerator, exportVaeDecoder, exportVaeEncoder, exportAlignmentHeads, exportSegmentationReadout, exportDepthReadout, type GeneratorGraphs,
} from '../models/onnx-export.js';
