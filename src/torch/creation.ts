// Factory functions: torch.tensor, zeros, ones, full, arange, linspace, eye, randn, rand, randint,
// randperm, normal, and the *Like variants. Defaults follow PyTorch (float32, CPU).
import { native } from './native.js';
import { Tensor, op, type Shape, type Scalar, type Device, callOp } from './tensor.js';
import { type DType, dtypeCode, BYTES_PER_ELEMENT } from './dtype.js';

export interface TensorOptions {
  dtype?: DType;
  device?: Device;
  requiresGrad?: boolean;
}

const O = {
  empty: op('aten::empty.memory_format'), zeros: op('aten::zeros'), ones: op('aten::ones'), full: op('aten::full'),
  arange: op('aten::arange.start_step'), linspace: op('aten::linspace'), eye: op('aten::eye'),
  randn: op('aten::randn'), rand: op('aten::rand'), randint: op('aten::randint.low'), randperm: op('aten::randperm'),
  normal: op('aten::normal.Tensor_Tensor'), zerosLike: op('aten::zeros_like'), onesLike: op('aten::ones_like'),
  randnLike: op('aten::randn_like'), randLike: op('aten::rand_like'), fullLike: op('aten::full_like'), emptyLike: op('aten::empty_like'),
  cat: op('aten::cat'), stack: op('aten::stack'),
};

function code(dtype: DType | undefined): number | undefined { return dtype === undefined ? undefined : dtypeCode(dtype); }

function finish(t: Tensor, options: TensorOptions): Tensor {
  if (options.requiresGrad) t.requiresGrad = true;
  return t;
}

function shapeOf(shape: number | Shape): number[] {
  const s = typeof shape === 'number' ? [shape] : [...shape];
  for (const d of s) {
    if (!Number.isInteger(d) || d < 0) throw new RangeError(`shape [${s}]: sizes must be non-negative integers`);
  }
  return s;
}

type NestedArray = number | boolean | NestedArray[];

function inferShape(data: NestedArray): number[] {
  const shape: number[] = [];
  let level: NestedArray = data;
  while (Array.isArray(level)) {
    shape.push(level.length);
    level = level[0] as NestedArray;
    if (level === undefined) break;
  }
  return shape;
}

function typedFor(dtype: DType, values: ArrayLike<number>): ArrayBufferView {
  switch (dtype) {
    case 'float32': return Float32Array.from(values);
    case 'float64': return Float64Array.from(values);
    case 'int32': return Int32Array.from(values);
    case 'int64': return BigInt64Array.from(Array.from(values, (v) => BigInt(Math.trunc(v))));
    case 'int16': return Int16Array.from(values);
    case 'int8': return Int8Array.from(values);
    case 'uint8': case 'bool': return Uint8Array.from(values, (v) => (dtype === 'bool' ? (v ? 1 : 0) : v));
    default: return Float32Array.from(values);
  }
}

/**
 * A tensor from nested arrays or a typed array (copied). Without a dtype: nested numbers that
 * are all integers give int64, booleans give bool, otherwise float32 (as torch.tensor); typed
 * arrays keep their element type.
 */
export function tensor(data: NestedArray | ArrayBufferView, options: TensorOptions & { shape?: Shape } = {}): Tensor {
  if (ArrayBuffer.isView(data)) {
    const shape = options.shape ?? [(data as unknown as ArrayLike<number>).length];
    return finish(fromArray(data, shape, options.dtype ?? dtypeOfTyped(data), options.device), options);
  }
  const shape = options.shape ?? inferShape(data);
  const flat = (Array.isArray(data) ? (data as unknown[]).flat(Infinity) : [data]) as (number | boolean)[];
  const expected = shape.reduce((a, b) => a * b, 1);
  if (flat.length !== expected) throw new Error(`torch.tensor: ragged nested array (shape [${shape}] needs ${expected} values, got ${flat.length})`);
  const dtype = options.dtype
    ?? (flat.length > 0 && typeof flat[0] === 'boolean' ? 'bool' : flat.every((v) => Number.isInteger(v)) && flat.length > 0 ? 'int64' : 'float32');
  const numbers = flat.map((v) => Number(v));
  if (dtype === 'float16' || dtype === 'bfloat16') {
    return finish(fromArray(Float32Array.from(numbers), shape, 'float32', options.device).to(dtype), options);
  }
  return finish(fromArray(typedFor(dtype, numbers), shape, dtype, options.device), options);
}

function dtypeOfTyped(data: ArrayBufferView): DType {
  if (data instanceof Float32Array) return 'float32';
  if (data instanceof Float64Array) return 'float64';
  if (data instanceof Int32Array) return 'int32';
  if (data instanceof BigInt64Array) return 'int64';
  if (data instanceof Int16Array) return 'int16';
  if (data instanceof Int8Array) return 'int8';
  if (data instanceof Uint8Array || data instanceof Uint8ClampedArray) return 'uint8';
  throw new Error(`torch.tensor: give a dtype for ${data.constructor.name} (e.g. Uint16Array holds float16 or bfloat16 bits)`);
}

/** A tensor of `shape` and `dtype` whose bytes are copied from `data` (a typed array or raw bytes). */
export function fromArray(data: ArrayBufferView | ArrayBuffer, shape: Shape, dtype: DType = 'float32', device?: Device): Tensor {
  const numel = shape.reduce((a, b) => a * b, 1);
  const bytes = data instanceof ArrayBuffer ? data.byteLength : data.byteLength;
  if (bytes !== numel * BYTES_PER_ELEMENT[dtype]) {
    throw new Error(`fromArray: shape [${shape}] of ${dtype} needs ${numel * BYTES_PER_ELEMENT[dtype]} bytes, got ${bytes}`);
  }
  const view = data instanceof ArrayBuffer || data instanceof Uint8Array ? data
    : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const t = new Tensor(native.fromBuffer(view, shape, dtypeCode(dtype)));
  return device === undefined || device === 'cpu' ? t : t.to(device);
}

export function empty(shape: number | Shape, o: TensorOptions = {}): Tensor {
  return finish(O.empty(shapeOf(shape), code(o.dtype), undefined, o.device), o);
}
export function zeros(shape: number | Shape, o: TensorOptions = {}): Tensor {
  return finish(O.zeros(shapeOf(shape), code(o.dtype), undefined, o.device), o);
}
export function ones(shape: number | Shape, o: TensorOptions = {}): Tensor {
  return finish(O.ones(shapeOf(shape), code(o.dtype), undefined, o.device), o);
}
export function full(shape: number | Shape, value: Scalar, o: TensorOptions = {}): Tensor {
  return finish(O.full(shapeOf(shape), value, code(o.dtype ?? (typeof value === 'boolean' ? 'bool' : 'float32')), undefined, o.device), o);
}
export function zerosLike(t: Tensor, o: TensorOptions = {}): Tensor { return finish(O.zerosLike(t, code(o.dtype), undefined, o.device), o); }
export function onesLike(t: Tensor, o: TensorOptions = {}): Tensor { return finish(O.onesLike(t, code(o.dtype), undefined, o.device), o); }
export function emptyLike(t: Tensor, o: TensorOptions = {}): Tensor { return finish(O.emptyLike(t, code(o.dtype), undefined, o.device), o); }
export function fullLike(t: Tensor, value: Scalar, o: TensorOptions = {}): Tensor { return finish(O.fullLike(t, value, code(o.dtype), undefined, o.device), o); }
export function randnLike(t: Tensor, o: TensorOptions = {}): Tensor { return finish(O.randnLike(t, code(o.dtype), undefined, o.device), o); }
export function randLike(t: Tensor, o: TensorOptions = {}): Tensor { return finish(O.randLike(t, code(o.dtype), undefined, o.device), o); }

/** torch.arange(end) or torch.arange(start, end, step); integer arguments give int64. */
export function arange(start: number, end?: number, step = 1, o: TensorOptions = {}): Tensor {
  if (end === undefined) [start, end] = [0, start];
  const integral = Number.isInteger(start) && Number.isInteger(end) && Number.isInteger(step);
  return finish(O.arange(start, end, step, code(o.dtype ?? (integral ? 'int64' : 'float32')), undefined, o.device), o);
}
export function linspace(start: number, end: number, steps: number, o: TensorOptions = {}): Tensor {
  return finish(O.linspace(start, end, steps, code(o.dtype), undefined, o.device), o);
}
export function eye(n: number, o: TensorOptions = {}): Tensor { return finish(O.eye(n, code(o.dtype), undefined, o.device), o); }

export function randn(shape: number | Shape, o: TensorOptions = {}): Tensor {
  return finish(O.randn(shapeOf(shape), code(o.dtype), undefined, o.device), o);
}
export function rand(shape: number | Shape, o: TensorOptions = {}): Tensor {
  return finish(O.rand(shapeOf(shape), code(o.dtype), undefined, o.device), o);
}
/** Integers uniform in [low, high), int64 by default. */
export function randint(low: number, high: number, shape: number | Shape, o: TensorOptions = {}): Tensor {
  return finish(O.randint(low, high, shapeOf(shape), code(o.dtype ?? 'int64'), undefined, o.device), o);
}
export function randperm(n: number, o: TensorOptions = {}): Tensor {
  return finish(O.randperm(n, code(o.dtype ?? 'int64'), undefined, o.device), o);
}
/** Samples N(mean, std) elementwise (broadcasting tensors), as torch.normal(mean, std). */
export function normal(mean: Tensor, std: Tensor): Tensor { return O.normal(mean, std); }

export function cat(tensors: readonly Tensor[], dim = 0): Tensor {
  if (tensors.length === 0) throw new Error('torch.cat: expected a non-empty list of tensors');
  return O.cat([...tensors], dim);
}
export function stack(tensors: readonly Tensor[], dim = 0): Tensor {
  if (tensors.length === 0) throw new Error('torch.stack: expected a non-empty list of tensors');
  return O.stack([...tensors], dim);
}

export function manualSeed(seed: number): void { native.manualSeed(seed); }
/** The default CPU generator's state (uint8 tensor), for exact resume. */
export function getRngState(): Tensor { return new Tensor(native.getRngState()); }
export function setRngState(state: Tensor): void { native.setRngState(state._handle); }

export { callOp };
