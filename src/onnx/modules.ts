// ONNX export, module by module: each Module class has an exporter that writes its forward into an
// OnnxGraph, calling its children's exporters; the nn layers' are here, each model's beside its
// forward in src/models. A model exports when every module in it has one; a module without one
// is an error naming its class and its path in the model.
import * as torch from '../torch/index.js';
import * as nn from '../nn/index.js';
import type { OnnxGraph, Value } from './graph.js';

/** Writes `module`'s forward of `inputs` into `graph`; `path` is its state-dict prefix ('' at the root). */
export type ModuleExporter<M extends nn.Module> = (module: M, graph: OnnxGraph, inputs: Value[], path: string) => Value;

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type ModuleClass<M extends nn.Module> = abstract new (...args: any[]) => M;

const EXPORTERS = new Map<ModuleClass<nn.Module>, ModuleExporter<nn.Module>>();

/** Registers the exporter of exactly `cls` (a subclass that changes forward needs its own). */
export function registerExporter<M extends nn.Module>(cls: ModuleClass<M>, exporter: ModuleExporter<M>): void {
  EXPORTERS.set(cls, exporter as ModuleExporter<nn.Module>);
}

/** `child`'s path under `path`, as state-dict keys join them. */
export function childPath(path: string, name: string): string { return path === '' ? name : `${path}.${name}`; }

/** Exports `module` (at `path`) applied to `inputs`. */
export function exportModule(module: nn.Module, graph: OnnxGraph, inputs: Value[], path: string): Value {
  const exporter = EXPORTERS.get(module.constructor as ModuleClass<nn.Module>);
  if (exporter === undefined) {
    throw new Error(`ONNX export: no exporter for module ${module.constructor.name} at '${path === '' ? '(the root)' : path}'; ` +
      'register one with registerExporter(Class, (module, graph, inputs, path) => ...)');
  }
  return exporter(module, graph, inputs, path);
}

/** The initializer of a parameter or buffer, named by its state-dict key. */
export function weight(graph: OnnxGraph, tensor: torch.Tensor, path: string, name: string): Value {
  return graph.tensor(tensor, childPath(path, name));
}

export function silu(graph: OnnxGraph, x: Value): Value { return graph.mul(x, graph.sigmoid(x)); }

/** GELU: exact (Erf) or the tanh approximation, as F.gelu. */
export function gelu(graph: OnnxGraph, x: Value, approximate: 'none' | 'tanh'): Value {
  const half = graph.mul(graph.scalar(0.5), x);
  if (approximate === 'none') {
    return graph.mul(half, graph.add(graph.scalar(1), graph.node('Erf', [graph.mul(x, graph.scalar(Math.SQRT1_2))], x.shape)));
  }
  const cube = graph.mul(graph.mul(x, x), x);
  const inner = graph.mul(graph.scalar(Math.sqrt(2 / Math.PI)), graph.add(x, graph.mul(graph.scalar(0.044715), cube)));
  return graph.mul(half, graph.add(graph.scalar(1), graph.tanh(inner)));
}

/** x W^T + b over the last dim: MatMul with the transposed weight (an initializer `<path>.weight.T`), then Add. */
export function linear(graph: OnnxGraph, x: Value, layer: nn.Linear, path: string): Value {
  const product = graph.matmul(x, graph.tensor(layer.weight.t(), childPath(path, 'weight.T')));
  return layer.bias === null ? product : graph.add(product, weight(graph, layer.bias, path, 'bias'));
}

/** softmax(q k^T / sqrt(d)) v over the last two dims, as F.scaledDotProductAttention. */
export function attention(graph: OnnxGraph, q: Value, k: Value, v: Value): Value {
  const d = q.shape[q.shape.length - 1] as number;
  const perm = [...Array(k.shape.length).keys()];
  [perm[perm.length - 1], perm[perm.length - 2]] = [perm[perm.length - 2]!, perm[perm.length - 1]!];
  // The query scaled before the product, as the libtorch path (F.scaledDotProductAttention) does.
  const scores = graph.matmul(graph.mul(q, graph.scalar(1 / Math.sqrt(d))), graph.transpose(k, perm));
  return graph.matmul(graph.softmax(scores, -1), v);
}

/** GroupNorm of [N, C, ...]: mean and variance over each group (ReduceMean), then the per-channel affine. */
export function groupNorm(graph: OnnxGraph, x: Value, norm: nn.GroupNorm, path: string): Value {
  const [n, c] = [x.shape[0]!, x.shape[1] as number];
  const grouped = graph.reshape(x, [n, norm.numGroups, -1]);
  const centered = graph.sub(grouped, graph.reduceMean(grouped, [2]));
  const variance = graph.reduceMean(graph.mul(centered, centered), [2]);
  const normalized = graph.reshape(graph.div(centered, graph.sqrt(graph.add(variance, graph.scalar(norm.eps)))), x.shape);
  if (norm.weight === null) return normalized;
  const perChannel = [c, ...x.shape.slice(2).map(() => 1)];
  const scale = graph.tensor(norm.weight.reshape(perChannel), childPath(path, 'weight'));
  const shift = graph.tensor(norm.bias!.reshape(perChannel), childPath(path, 'bias'));
  return graph.add(graph.mul(normalized, scale), shift);
}

registerExporter(nn.Linear, (m, g, [x], path) => linear(g, x!, m, path));
registerExporter(nn.Conv2d, (m, g, [x], path) => g.conv(x!, weight(g, m.weight, path, 'weight'), m.bias === null ? null : weight(g, m.bias, path, 'bias'), m));
registerExporter(nn.GroupNorm, (m, g, [x], path) => groupNorm(g, x!, m, path));
registerExporter(nn.LayerNorm, (m, g, [x], path) => {
  if (m.normalizedShape.length !== 1) throw new Error(`ONNX export: LayerNorm at '${path}' over ${m.normalizedShape.length} dims (only the last dim exports)`);
  const scale = m.weight === null ? g.tensor(torch.ones(m.normalizedShape), childPath(path, 'ones')) : weight(g, m.weight, path, 'weight');
  const bias = m.bias === null ? g.tensor(torch.zeros(m.normalizedShape), childPath(path, 'zeros')) : weight(g, m.bias, path, 'bias');
  return g.layerNorm(x!, scale, bias, m.eps);
});
registerExporter(nn.Embedding, (m, g, [indices], path) => g.gather(weight(g, m.weight, path, 'weight'), indices!));
registerExporter(nn.SiLU, (_m, g, [x]) => silu(g, x!));
registerExporter(nn.GELU, (m, g, [x]) => gelu(g, x!, m.approximate));
registerExporter(nn.Identity, (_m, _g, [x]) => x!);
registerExporter(nn.Dropout, (_m, _g, [x]) => x!);
registerExporter(nn.Sequential, (m, g, [x], path) => {
  let out = x!;
  [...m].forEach((child, i) => { out = exportModule(child, g, [out], childPath(path, String(i))); });
  return out;
});
registerExporter(nn.BatchNorm2d, (m, g, [x], path) => {
  if (m.training || m.runningMean === null || m.runningVar === null) {
    throw new Error(`ONNX export: BatchNorm2d at '${path}' exports in eval mode with running statistics only`);
  }
  const ones = m.weight ?? torch.ones([m.numFeatures]);
  const zeros = m.bias ?? torch.zeros([m.numFeatures]);
  return g.node('BatchNormalization', [
    x!, g.tensor(ones, childPath(path, 'weight')), g.tensor(zeros, childPath(path, 'bias')),
    weight(g, m.runningMean, path, 'running_mean'), weight(g, m.runningVar, path, 'running_var'),
  ], x!.shape, { epsilon: { float: m.eps } });
});
