// ONNX export of reals' own modules, with no Python: the graph builder, the protobuf schema and the
// per-module exporters. Below the models: each model file registers its exporter beside its forward.
// May import: torch, nn. The whole networks' graphs are src/models/onnx-export.ts.
export { OnnxGraph, OPSET, broadcastShapes, type Dim, type Value } from './graph.js';
export { encodeModel, decodeModel, ONNX_DTYPE, type OnnxDType } from './proto.js';
export { registerExporter, exportModule, childPath, type ModuleExporter } from './modules.js';
