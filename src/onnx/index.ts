// ONNX export of reals' own modules, with no Python: the graph builder, the per-module exporters,
// and the graphs `reals export onnx` writes.
export { OnnxGraph, OPSET, broadcastShapes, type Dim, type Value } from './graph.js';
export { encodeModel, decodeModel, ONNX_DTYPE, type OnnxDType } from './proto.js';
export { registerExporter, exportModule, childPath, type ModuleExporter } from './modules.js';
export {
  exportGenerator, exportVaeDecoder, exportVaeEncoder, exportAlignmentHeads, exportSegmentationReadout, exportDepthReadout, type GeneratorGraphs,
} from '../models/onnx-export.js';
