// Building an ONNX graph (opset 17) value by value: each method adds one node and returns its
// output with the output's shape, so that the module exporters (src/onnx/modules.ts and the model
// files' exporters) can size reshapes as the forwards do. A dimension is a number, or a name for
// one that varies between runs (the batch): Reshape copies it with ONNX's 0.
import * as torch from '../torch/index.js';
import type { Tensor } from '../torch/index.js';
import { ATTRIBUTE_TYPE, IR_VERSION, ONNX_DTYPE, encodeModel, type OnnxDType } from './proto.js';

export const OPSET = 17;

export type Dim = number | string;

export interface Value {
  readonly name: string;
  readonly shape: readonly Dim[];
  readonly dtype: OnnxDType;
}

type Attribute = number | number[] | string | { float: number } | { floats: number[] };

interface Node { opType: string; input: string[]; output: string[]; name: string; attribute: Record<string, unknown>[] }

function attributeProto(name: string, value: Attribute): Record<string, unknown> {
  if (typeof value === 'string') return { name, type: ATTRIBUTE_TYPE.STRING, s: Buffer.from(value) };
  if (typeof value === 'number') return { name, type: ATTRIBUTE_TYPE.INT, i: value };
  if (Array.isArray(value)) return { name, type: ATTRIBUTE_TYPE.INTS, ints: value };
  if ('float' in value) return { name, type: ATTRIBUTE_TYPE.FLOAT, f: value.float };
  return { name, type: ATTRIBUTE_TYPE.FLOATS, floats: value.floats };
}

function shapeText(shape: readonly Dim[]): string { return `[${shape.join(', ')}]`; }

/** The shape of an elementwise op's output, with numpy broadcasting (a named dim against 1 stays named). */
export function broadcastShapes(a: readonly Dim[], b: readonly Dim[]): Dim[] {
  const rank = Math.max(a.length, b.length);
  const out: Dim[] = [];
  for (let i = 0; i < rank; i++) {
    const x = a[a.length - rank + i] ?? 1;
    const y = b[b.length - rank + i] ?? 1;
    if (x === 1) out.push(y);
    else if (y === 1 || x === y) out.push(x);
    else throw new Error(`ONNX export: shapes ${shapeText(a)} and ${shapeText(b)} do not broadcast`);
  }
  return out;
}

export class OnnxGraph {
  private readonly nodes: Node[] = [];
  private readonly initializers: Record<string, unknown>[] = [];
  private readonly inputs: Value[] = [];
  private readonly outputs: Value[] = [];
  private readonly constants = new Map<string, Value>();
  private readonly names = new Set<string>();
  private counter = 0;

  constructor(readonly name: string) {}

  private fresh(hint: string): string {
    let name = hint;
    while (this.names.has(name)) name = `${hint}_${++this.counter}`;
    this.names.add(name);
    return name;
  }

  input(name: string, dtype: OnnxDType, shape: readonly Dim[]): Value {
    const value = { name: this.fresh(name), shape: [...shape], dtype };
    this.inputs.push(value);
    return value;
  }

  output(value: Value, name: string): void {
    this.outputs.push(this.node('Identity', [value], value.shape, {}, { name, dtype: value.dtype }));
  }

  /** A weight or other fixed tensor (float32 or int64) as an initializer named `name` (a state-dict key reads best). */
  tensor(tensor: Tensor, name: string): Value {
    const dtype: OnnxDType = tensor.dtype === 'int64' ? 'int64' : 'float32';
    const data = torch.noGrad(() => (dtype === 'float32' ? tensor.detach().float() : tensor).cpu().contiguous().toArray());
    const value = { name: this.fresh(name), shape: [...tensor.shape], dtype };
    this.initializers.push({
      name: value.name, dataType: ONNX_DTYPE[dtype], dims: [...tensor.shape],
      rawData: Buffer.from(data.buffer, data.byteOffset, data.byteLength),
    });
    return value;
  }

  /** A float32 scalar (0-d), one initializer per distinct value. */
  scalar(value: number): Value {
    return this.constant(`float:${value}`, () => this.tensor(torch.tensor([value], { dtype: 'float32' }).reshape([]), 'const'));
  }

  /** An int64 vector (shapes, axes, starts), one initializer per distinct list. */
  ints(values: readonly number[]): Value {
    return this.constant(`ints:${values.join(',')}`, () => this.tensor(torch.tensor([...values], { dtype: 'int64' }), 'const_ints'));
  }

  private constant(key: string, make: () => Value): Value {
    let value = this.constants.get(key);
    if (value === undefined) {
      value = make();
      this.constants.set(key, value);
    }
    return value;
  }

  /** Adds a node of `opType` with one output of `shape`. */
  node(opType: string, inputs: readonly Value[], shape: readonly Dim[], attributes: Record<string, Attribute> = {}, out: { name?: string; dtype?: OnnxDType } = {}): Value {
    const value = { name: this.fresh(out.name ?? opType.toLowerCase()), shape: [...shape], dtype: out.dtype ?? inputs[0]?.dtype ?? 'float32' };
    this.nodes.push({
      opType, input: inputs.map((v) => v.name), output: [value.name], name: `${opType}_${this.nodes.length}`,
      attribute: Object.entries(attributes).map(([k, v]) => attributeProto(k, v)),
    });
    return value;
  }

  // --- the ops the exporters use, with their output shapes -------------------------------------

  add(a: Value, b: Value): Value { return this.node('Add', [a, b], broadcastShapes(a.shape, b.shape)); }
  sub(a: Value, b: Value): Value { return this.node('Sub', [a, b], broadcastShapes(a.shape, b.shape)); }
  mul(a: Value, b: Value): Value { return this.node('Mul', [a, b], broadcastShapes(a.shape, b.shape)); }
  div(a: Value, b: Value): Value { return this.node('Div', [a, b], broadcastShapes(a.shape, b.shape)); }
  sigmoid(x: Value): Value { return this.node('Sigmoid', [x], x.shape); }
  tanh(x: Value): Value { return this.node('Tanh', [x], x.shape); }
  sqrt(x: Value): Value { return this.node('Sqrt', [x], x.shape); }
  sin(x: Value): Value { return this.node('Sin', [x], x.shape); }
  cos(x: Value): Value { return this.node('Cos', [x], x.shape); }
  cast(x: Value, dtype: OnnxDType): Value { return this.node('Cast', [x], x.shape, { to: ONNX_DTYPE[dtype] }, { dtype }); }

  matmul(a: Value, b: Value): Value {
    if (a.shape.length < 2 || b.shape.length < 2) throw new Error(`ONNX export: MatMul of ${shapeText(a.shape)} and ${shapeText(b.shape)}`);
    const batch = broadcastShapes(a.shape.slice(0, -2), b.shape.slice(0, -2));
    return this.node('MatMul', [a, b], [...batch, a.shape[a.shape.length - 2]!, b.shape[b.shape.length - 1]!]);
  }

  transpose(x: Value, perm: readonly number[]): Value {
    return this.node('Transpose', [x], perm.map((p) => x.shape[p]!), { perm: [...perm] });
  }

  /**
   * Reshape to `shape`: a named dim is copied from the same place of the input (ONNX's 0) and must
   * be there; at most one -1.
   */
  reshape(x: Value, shape: readonly Dim[]): Value {
    const spec = shape.map((d, i) => {
      if (typeof d === 'number') return d;
      if (x.shape[i] !== d) throw new Error(`ONNX export: reshape of ${shapeText(x.shape)} to ${shapeText(shape)} moves the dim '${d}'`);
      return 0;
    });
    // The named dims are copied in place, so -1 is the input's numeric size over the output's others.
    const size = (dims: readonly Dim[], skip = -1) => dims.reduce<number>((p, e, j) => (j === skip || typeof e !== 'number' ? p : p * e), 1);
    const out = shape.map((d, i) => (d === -1 ? size(x.shape) / size(shape, i) : d));
    return this.node('Reshape', [x, this.ints(spec)], out);
  }

  unsqueeze(x: Value, axis: number): Value {
    const shape = [...x.shape];
    shape.splice(axis < 0 ? shape.length + 1 + axis : axis, 0, 1);
    return this.node('Unsqueeze', [x, this.ints([axis])], shape);
  }

  squeeze(x: Value, axis: number): Value {
    const shape = [...x.shape];
    shape.splice(axis, 1);
    return this.node('Squeeze', [x, this.ints([axis])], shape);
  }

  /** Splits `axis` into parts of `sizes`. */
  split(x: Value, axis: number, sizes: readonly number[]): Value[] {
    const names = sizes.map(() => this.fresh('split'));
    this.nodes.push({ opType: 'Split', input: [x.name, this.ints(sizes).name], output: names, name: `Split_${this.nodes.length}`, attribute: [attributeProto('axis', axis)] });
    return names.map((name, i) => ({ name, dtype: x.dtype, shape: x.shape.map((d, j) => (j === axis ? sizes[i]! : d)) }));
  }

  /** Splits `axis` into `parts` equal parts (opset 17's Split without sizes), each `partDim` long there. */
  splitEqual(x: Value, axis: number, parts: number, partDim: Dim): Value[] {
    const names = Array.from({ length: parts }, () => this.fresh('split'));
    this.nodes.push({ opType: 'Split', input: [x.name], output: names, name: `Split_${this.nodes.length}`, attribute: [attributeProto('axis', axis)] });
    return names.map((name) => ({ name, dtype: x.dtype, shape: x.shape.map((d, j) => (j === axis ? partDim : d)) }));
  }

  /** x[..., start:end, ...] along `axis` (static bounds). */
  slice(x: Value, axis: number, start: number, end: number): Value {
    const shape = x.shape.map((d, j) => (j === axis ? end - start : d));
    return this.node('Slice', [x, this.ints([start]), this.ints([end]), this.ints([axis])], shape);
  }

  concat(values: readonly Value[], axis: number): Value {
    const a = axis < 0 ? values[0]!.shape.length + axis : axis;
    const sizes = values.map((v) => v.shape[a]!);
    const joined: Dim = sizes.every((s) => typeof s === 'number') ? (sizes as number[]).reduce((p, s) => p + s, 0) : `${sizes.join('+')}`;
    return this.node('Concat', values, values[0]!.shape.map((d, j) => (j === a ? joined : d)), { axis });
  }

  softmax(x: Value, axis: number): Value { return this.node('Softmax', [x], x.shape, { axis }); }

  reduceMean(x: Value, axes: readonly number[]): Value {
    return this.node('ReduceMean', [x], x.shape.map((d, j) => (axes.includes(j) ? 1 : d)), { axes: [...axes], keepdims: 1 });
  }

  gather(table: Value, indices: Value): Value {
    return this.node('Gather', [table, indices], [...indices.shape, ...table.shape.slice(1)], { axis: 0 });
  }

  /** LayerNormalization over the last dim (opset 17), with a scale of ones and a zero bias when none are given. */
  layerNorm(x: Value, scale: Value, bias: Value, eps: number): Value {
    return this.node('LayerNormalization', [x, scale, bias], x.shape, { axis: -1, epsilon: { float: eps } });
  }

  /** 2-D convolution of NCHW with weight [O, I/g, kh, kw]. */
  conv(x: Value, weight: Value, bias: Value | null, o: { stride: [number, number]; padding: [number, number]; dilation: [number, number]; groups: number }): Value {
    const [kh, kw] = [weight.shape[2] as number, weight.shape[3] as number];
    const side = (size: Dim, k: number, s: number, p: number, d: number): Dim =>
      (typeof size === 'number' ? Math.floor((size + 2 * p - d * (k - 1) - 1) / s) + 1 : size);
    const shape = [x.shape[0]!, weight.shape[0]!, side(x.shape[2]!, kh, o.stride[0], o.padding[0], o.dilation[0]), side(x.shape[3]!, kw, o.stride[1], o.padding[1], o.dilation[1])];
    return this.node('Conv', bias === null ? [x, weight] : [x, weight, bias], shape, {
      kernel_shape: [kh, kw], strides: [...o.stride], pads: [o.padding[0], o.padding[1], o.padding[0], o.padding[1]], dilations: [...o.dilation], group: o.groups,
    });
  }

  /** Zero padding of the last two dims of NCHW: [left, right, top, bottom], as F.pad. */
  pad2d(x: Value, [left, right, top, bottom]: readonly [number, number, number, number]): Value {
    const grow = (d: Dim, n: number): Dim => (typeof d === 'number' ? d + n : d);
    const shape = [x.shape[0]!, x.shape[1]!, grow(x.shape[2]!, top + bottom), grow(x.shape[3]!, left + right)];
    return this.node('Pad', [x, this.ints([0, 0, top, left, 0, 0, bottom, right])], shape, { mode: 'constant' });
  }

  /** Nearest-neighbour upsampling of NCHW by an integer factor (F.interpolate mode 'nearest'). */
  upsampleNearest(x: Value, factor: number): Value {
    return this.upsample(x, factor, { mode: 'nearest', nearest_mode: 'floor', coordinate_transformation_mode: 'asymmetric' });
  }

  /** Bilinear upsampling of NCHW by an integer factor, as F.interpolate(mode 'bilinear', alignCorners false). */
  upsampleBilinear(x: Value, factor: number): Value {
    return this.upsample(x, factor, { mode: 'linear', coordinate_transformation_mode: 'half_pixel' });
  }

  private upsample(x: Value, factor: number, attributes: Record<string, Attribute>): Value {
    const grow = (d: Dim): Dim => (typeof d === 'number' ? d * factor : d);
    const scales = this.constant(`scales:${factor}`, () => this.tensor(torch.tensor([1, 1, factor, factor], { dtype: 'float32' }), 'scales'));
    // Empty name: the optional roi input left out.
    return this.node('Resize', [x, { name: '', shape: [], dtype: 'float32' }, scales], [x.shape[0]!, x.shape[1]!, grow(x.shape[2]!), grow(x.shape[3]!)], attributes);
  }

  relu(x: Value): Value { return this.node('Relu', [x], x.shape); }

  /** Sum over `axes`, kept as size-1 dims (opset 13+: the axes are an input). */
  reduceSum(x: Value, axes: readonly number[]): Value {
    return this.node('ReduceSum', [x, this.ints(axes)], x.shape.map((d, j) => (axes.includes(j) ? 1 : d)), { keepdims: 1 });
  }

  /** x clamped to [low, high]. */
  clip(x: Value, low: number, high: number): Value { return this.node('Clip', [x, this.scalar(low), this.scalar(high)], x.shape); }

  /** The model's bytes: IR version 8, the default opset 17, `metadata` as metadata_props. */
  toBytes(metadata: Record<string, string> = {}): Uint8Array {
    const valueInfo = (v: Value) => ({
      name: v.name,
      type: { tensorType: { elemType: ONNX_DTYPE[v.dtype], shape: { dim: v.shape.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) } } },
    });
    return encodeModel({
      irVersion: IR_VERSION, producerName: 'reals', producerVersion: '0.1.0',
      opsetImport: [{ domain: '', version: OPSET }],
      metadataProps: Object.entries(metadata).map(([key, value]) => ({ key, value })),
      graph: {
        name: this.name, node: this.nodes, initializer: this.initializers,
        input: this.inputs.map(valueInfo), output: this.outputs.map(valueInfo),
      },
    });
  }
}
