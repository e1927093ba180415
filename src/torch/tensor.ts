// Tensor: a handle on one libtorch tensor, with PyTorch's methods in camelCase. Every operator
// goes through `op('aten::name.overload')`, which looks the schema up once and calls libtorch's
// boxed dispatcher (add, sub, mul and div of two tensors through its unboxed path, `binaryOp`),
// so autograd, autocast, type promotion and error messages are libtorch's own.
// One file past 500 lines: the Tensor class, one method per PyTorch method it mirrors.
import { native, type Handle } from './native.js';
import {
  type DType, type AnyTypedArray, type TypedArrayFor,
  DTYPE_CODE, dtypeCode, dtypeFromCode, typedArrayFromBuffer, isFloatingPoint,
} from './dtype.js';

export type Device = string;
export type Shape = readonly number[];
export type Scalar = number | boolean;

// ---------------------------------------------------------------------------------------------
// Scopes: every Tensor created while a scope is open is recorded there; closing the scope drops
// the ones that are not returned (and not kept), so loops free memory deterministically.

const scopeStack: Tensor[][] = [];

/** Tensors outside every scope are disposed when garbage collected; scoped ones when the scope ends. */
function track(t: Tensor): void {
  const top = scopeStack[scopeStack.length - 1];
  if (top !== undefined) top.push(t);
  else attachFinalizer(t);
}

function attachFinalizer(t: Tensor): void {
  if (t._finalized) return;
  t._finalized = true;
  native.attachFinalizer(t, t._handle);
}

function collectTensors(value: unknown, out: Set<Tensor>, seen = new Set<object>(), depth = 0): void {
  if (value instanceof Tensor) {
    out.add(value);
    return;
  }
  if (depth > 8 || value === null || typeof value !== 'object' || seen.has(value)) return;
  seen.add(value);
  const children = Array.isArray(value) ? value : value instanceof Map ? [...value.values()] : Object.values(value);
  for (const v of children) collectTensors(v, out, seen, depth + 1);
}

/**
 * Runs `fn` and disposes every tensor created inside it except those it returns (found in
 * arrays, Maps and the fields of objects) and those passed to `keep`. Returned tensors move to the
 * enclosing scope. `fn` must be synchronous.
 */
export function scope<T>(fn: () => T): T {
  const created: Tensor[] = [];
  scopeStack.push(created);
  let result: T;
  try {
    result = fn();
  } catch (error) {
    scopeStack.pop();
    for (const t of created) if (!t._kept) t.dispose();
    throw error;
  }
  scopeStack.pop();
  if (result !== null && typeof result === 'object' && typeof (result as { then?: unknown }).then === 'function') {
    throw new Error('torch.scope(fn): fn returned a Promise; scopes track synchronous code only');
  }
  const returned = new Set<Tensor>();
  collectTensors(result, returned);
  const parent = scopeStack[scopeStack.length - 1];
  const dropped = new Float64Array(created.length);
  let count = 0;
  for (const t of created) {
    if (returned.has(t)) {
      if (parent !== undefined) parent.push(t);
      else attachFinalizer(t);
    } else if (!t._kept) {
      dropped[count++] = t._handle;
    }
  }
  native.disposeMany(dropped.subarray(0, count));
  return result;
}

/** Exempts tensors from disposal by the scopes they were created in (optimizer state, buffers). */
export function keep<T extends Tensor | Tensor[]>(value: T): T {
  for (const t of value instanceof Tensor ? [value] : (value as Tensor[])) {
    t._kept = true;
    attachFinalizer(t);
  }
  return value;
}

// ---------------------------------------------------------------------------------------------
// Operator calls

const opIds = new Map<string, number>();

/** The id of an ATen operator, e.g. 'aten::add.Tensor' (name '.' overload), looked up once. */
export function opId(qualified: string): number {
  let id = opIds.get(qualified);
  if (id === undefined) {
    const dot = qualified.indexOf('.');
    id = native.lookupOp(dot < 0 ? qualified : qualified.slice(0, dot), dot < 0 ? '' : qualified.slice(dot + 1));
    opIds.set(qualified, id);
  }
  return id;
}

/** Whether this libtorch has an operator (e.g. 'aten::scaled_dot_product_attention'). */
export function hasOp(qualified: string): boolean {
  const dot = qualified.indexOf('.');
  return native.hasOp(dot < 0 ? qualified : qualified.slice(0, dot), dot < 0 ? '' : qualified.slice(dot + 1));
}

function toNative(arg: unknown): unknown {
  if (arg instanceof Tensor) return arg._handle;
  if (Array.isArray(arg) && arg.length > 0 && (arg[0] instanceof Tensor || arg[0] === null)) {
    return arg.map((a) => (a instanceof Tensor ? a._handle : a));
  }
  return arg;
}

type ReturnKind = 'Tensor' | 'Tensor[]' | 'value';
const returnKinds: ReturnKind[][] = [];

function kindsOf(id: number): ReturnKind[] {
  let kinds = returnKinds[id];
  if (kinds === undefined) kinds = returnKinds[id] = native.opReturns(id);
  return kinds;
}

// Tensor returns come back as handles (numbers); an in-place op returns its input's own handle,
// which maps back to that input's Tensor object.
function wrapReturn(out: unknown, kind: ReturnKind, inputs: readonly unknown[]): unknown {
  if (kind === 'value' || out === null) return out;
  if (kind === 'Tensor[]') return (out as Handle[]).map((h) => new Tensor(h));
  for (const input of inputs) if (input instanceof Tensor && input._handle === out) return input;
  return new Tensor(out as Handle);
}

function fromNative(id: number, out: unknown, inputs: readonly unknown[]): unknown {
  const kinds = kindsOf(id);
  if (kinds.length === 1) return wrapReturn(out, kinds[0]!, inputs);
  if (kinds.length === 0) return out;
  return (out as unknown[]).map((o, i) => wrapReturn(o, kinds[i]!, inputs));
}

/** Calls an operator by qualified schema name with positional arguments (undefined = default). */
export function callOp(qualified: string, ...args: unknown[]): any {
  return callOpId(opId(qualified), args);
}

function callOpId(id: number, args: readonly unknown[]): any {
  let out: unknown;
  try {
    // Fixed-arity calls for the common counts: no converted array and no spread on the hot path.
    switch (args.length) {
      case 1: out = native.callOp(id, toNative(args[0])); break;
      case 2: out = native.callOp(id, toNative(args[0]), toNative(args[1])); break;
      case 3: out = native.callOp(id, toNative(args[0]), toNative(args[1]), toNative(args[2])); break;
      case 4: out = native.callOp(id, toNative(args[0]), toNative(args[1]), toNative(args[2]), toNative(args[3])); break;
      default: out = native.callOp(id, ...args.map(toNative));
    }
  } catch (error) {
    throw withTensorArguments(error, args);
  }
  return fromNative(id, out, args);
}

/** libtorch's message (which names the op) plus the dtype and shape of each tensor argument. */
function withTensorArguments(error: unknown, args: readonly unknown[]): unknown {
  if (!(error instanceof Error)) return error;
  const describe = (t: Tensor): string => (t.isDisposed ? 'disposed' : `${t.dtype}[${t.shape.join(', ')}]`);
  const tensors: string[] = [];
  for (const arg of args) {
    if (arg instanceof Tensor) tensors.push(describe(arg));
    else if (Array.isArray(arg) && arg.some((a) => a instanceof Tensor)) {
      tensors.push(`[${arg.map((a) => (a instanceof Tensor ? describe(a) : String(a))).join(', ')}]`);
    }
  }
  if (tensors.length === 0) return error;
  return new Error(`${error.message} (tensor arguments: ${tensors.join(', ')})`, { cause: error });
}

/** A callable for one operator, with the id cached in the closure (the fast path). */
export function op(qualified: string): (...args: any[]) => any {
  let id = -1;
  return (...args: unknown[]) => {
    if (id < 0) id = opId(qualified);
    return callOpId(id, args);
  };
}

/**
 * A callable for an operator of schema (Tensor, Tensor[, Scalar alpha]) -> Tensor through the
 * addon's unboxed path: for the hottest elementwise ops, whose cost through the boxed call is
 * mostly the argument stack and the wrapping, not the arithmetic.
 */
function binaryOp(qualified: string): (a: Tensor, b: Tensor, alpha?: Scalar) => Tensor {
  let id = -1;
  return (a, b, alpha) => {
    if (id < 0) id = opId(qualified);
    try {
      return new Tensor(alpha === undefined ? native.callBinary(id, a._handle, b._handle) : native.callBinary(id, a._handle, b._handle, Number(alpha)));
    } catch (error) {
      throw withTensorArguments(error, [a, b]);
    }
  };
}

const A = {
  add: binaryOp('aten::add.Tensor'), addS: op('aten::add.Scalar'), add_: op('aten::add_.Tensor'), addS_: op('aten::add_.Scalar'),
  sub: binaryOp('aten::sub.Tensor'), subS: op('aten::sub.Scalar'), sub_: op('aten::sub_.Tensor'), subS_: op('aten::sub_.Scalar'),
  rsubS: op('aten::rsub.Scalar'),
  mul: binaryOp('aten::mul.Tensor'), mulS: op('aten::mul.Scalar'), mul_: op('aten::mul_.Tensor'), mulS_: op('aten::mul_.Scalar'),
  div: binaryOp('aten::div.Tensor'), divS: op('aten::div.Scalar'), div_: op('aten::div_.Tensor'), divS_: op('aten::div_.Scalar'),
  divMode: op('aten::div.Tensor_mode'), remainder: op('aten::remainder.Tensor'), remainderS: op('aten::remainder.Scalar'),
  pow: op('aten::pow.Tensor_Tensor'), powS: op('aten::pow.Tensor_Scalar'), powS_: op('aten::pow_.Scalar'),
  neg: op('aten::neg'), abs: op('aten::abs'), sqrt: op('aten::sqrt'), sqrt_: op('aten::sqrt_'), rsqrt: op('aten::rsqrt'),
  exp: op('aten::exp'), exp_: op('aten::exp_'), log: op('aten::log'), log1p: op('aten::log1p'), expm1: op('aten::expm1'),
  sin: op('aten::sin'), cos: op('aten::cos'), tan: op('aten::tan'), tanh: op('aten::tanh'), sigmoid: op('aten::sigmoid'), erf: op('aten::erf'),
  floor: op('aten::floor'), ceil: op('aten::ceil'), round: op('aten::round'), sign: op('aten::sign'),
  reciprocal: op('aten::reciprocal'), square: op('aten::square'),
  clamp: op('aten::clamp'), clamp_: op('aten::clamp_'), clampT: op('aten::clamp.Tensor'),
  maximum: op('aten::maximum'), minimum: op('aten::minimum'),
  eq: op('aten::eq.Tensor'), eqS: op('aten::eq.Scalar'), ne: op('aten::ne.Tensor'), neS: op('aten::ne.Scalar'),
  lt: op('aten::lt.Tensor'), ltS: op('aten::lt.Scalar'), le: op('aten::le.Tensor'), leS: op('aten::le.Scalar'),
  gt: op('aten::gt.Tensor'), gtS: op('aten::gt.Scalar'), ge: op('aten::ge.Tensor'), geS: op('aten::ge.Scalar'),
  logicalNot: op('aten::logical_not'), logicalAnd: op('aten::logical_and'), logicalOr: op('aten::logical_or'),
  isnan: op('aten::isnan'), isfinite: op('aten::isfinite'),
  matmul: op('aten::matmul'), mm: op('aten::mm'), bmm: op('aten::bmm'),
  sum: op('aten::sum'), sumDim: op('aten::sum.dim_IntList'), mean: op('aten::mean'), meanDim: op('aten::mean.dim'),
  prod: op('aten::prod'), prodDim: op('aten::prod.dim_int'),
  maxAll: op('aten::max'), maxDim: op('aten::max.dim'), minAll: op('aten::min'), minDim: op('aten::min.dim'),
  amax: op('aten::amax'), amin: op('aten::amin'), argmax: op('aten::argmax'), argmin: op('aten::argmin'),
  varCorrection: op('aten::var.correction'), stdCorrection: op('aten::std.correction'),
  normScalarOpt: op('aten::norm.ScalarOpt_dim'), logsumexp: op('aten::logsumexp'), cumsum: op('aten::cumsum'),
  all: op('aten::all'), any: op('aten::any'), allDim: op('aten::all.dim'), anyDim: op('aten::any.dim'),
  view: op('aten::view'), viewDtype: op('aten::view.dtype'), reshape: op('aten::reshape'), flatten: op('aten::flatten.using_ints'),
  unflatten: op('aten::unflatten.int'), permute: op('aten::permute'), transpose: op('aten::transpose.int'),
  squeeze: op('aten::squeeze'), squeezeDim: op('aten::squeeze.dim'), unsqueeze: op('aten::unsqueeze'),
  expand: op('aten::expand'), repeat: op('aten::repeat'), repeatInterleave: op('aten::repeat_interleave.self_int'),
  contiguous: op('aten::contiguous'), clone: op('aten::clone'), detach: op('aten::detach'), detach_: op('aten::detach_'),
  narrow: op('aten::narrow'), select: op('aten::select.int'), slice: op('aten::slice.Tensor'), indexTensor: op('aten::index.Tensor'),
  indexPut_: op('aten::index_put_'), indexSelect: op('aten::index_select'), gather: op('aten::gather'),
  scatter: op('aten::scatter.src'), maskedFill: op('aten::masked_fill.Scalar'), maskedFill_: op('aten::masked_fill_.Scalar'),
  flip: op('aten::flip'), roll: op('aten::roll'), tril: op('aten::tril'), triu: op('aten::triu'),
  split: op('aten::split.Tensor'), splitSizes: op('aten::split_with_sizes'), chunk: op('aten::chunk'), unbind: op('aten::unbind.int'),
  sort: op('aten::sort'), topk: op('aten::topk'),
  to: op('aten::to.dtype_layout'), copy_: op('aten::copy_'), zero_: op('aten::zero_'), fill_: op('aten::fill_.Scalar'),
  normal_: op('aten::normal_'), uniform_: op('aten::uniform_'), bernoulli_: op('aten::bernoulli_.float'),
  addcmul_: op('aten::addcmul_'), addcdiv_: op('aten::addcdiv_'), lerp_: op('aten::lerp_.Scalar'),
  mulT_: op('aten::mul_.Tensor'), nanToNum: op('aten::nan_to_num'),
};

// ---------------------------------------------------------------------------------------------
// Indexing, Python style: t.index(0, ':', slice(1, null, 2), null, '...', indexTensor)

export interface Slice { readonly start: number | null; readonly stop: number | null; readonly step: number }
export function slice(start: number | null = null, stop: number | null = null, step = 1): Slice {
  return { start, stop, step };
}
export type Index = number | null | '...' | ':' | Slice | Tensor;

const INT64_MAX = Number.MAX_SAFE_INTEGER;

// libtorch only checks this in its Python binding (python_variable.cpp); its C++ setter would
// silently keep a computed tensor requiring grad.
const REQUIRES_GRAD_LEAF_ERROR = 'you can only change requires_grad flags of leaf variables; use detach() for a tensor outside the graph';

// ---------------------------------------------------------------------------------------------

export class Tensor {
  /** @internal the libtorch tensor this object refers to. */
  _handle: Handle;
  /** @internal exempt from scope disposal (default on the prototype: no per-tensor store). */
  declare _kept: boolean;
  /** @internal disposed when garbage collected (outside scopes, kept, or escaped). */
  declare _finalized: boolean;

  /** @internal use torch.tensor / fromArray / the factory functions. */
  constructor(handle: Handle) {
    this._handle = handle;
    track(this);
  }

  // --- metadata ---------------------------------------------------------------------------
  get shape(): number[] { return native.shape(this._handle); }
  size(): number[];
  size(dim: number): number;
  size(dim?: number): number[] | number {
    const shape = native.shape(this._handle);
    if (dim === undefined) return shape;
    const d = dim < 0 ? dim + shape.length : dim;
    if (d < 0 || d >= shape.length) throw new RangeError(`size(${dim}): tensor of shape [${shape}] has ${shape.length} dims`);
    return shape[d]!;
  }
  get ndim(): number { return native.dim(this._handle); }
  dim(): number { return native.dim(this._handle); }
  numel(): number { return native.numel(this._handle); }
  stride(): number[] { return native.stride(this._handle); }
  get dtype(): DType { return dtypeFromCode(native.dtype(this._handle)); }
  get device(): Device { return native.device(this._handle); }
  get isCuda(): boolean { return this.device.startsWith('cuda'); }
  isContiguous(): boolean { return native.isContiguous(this._handle); }
  isFloatingPoint(): boolean { return isFloatingPoint(this.dtype); }
  get isDisposed(): boolean { return native.isDisposed(this._handle); }

  toString(): string { return `Tensor(shape=[${this.shape}], dtype=${this.dtype}, device=${this.device})`; }

  // --- memory -----------------------------------------------------------------------------
  /** Drops this reference to the tensor's storage now instead of at garbage collection. */
  dispose(): void { native.dispose(this._handle); }

  // --- autograd ---------------------------------------------------------------------------
  get requiresGrad(): boolean { return native.requiresGrad(this._handle); }
  /** As PyTorch, only a leaf's flag can be set (a computed tensor's follows its inputs). */
  set requiresGrad(value: boolean) {
    if (!this.isLeaf) throw new Error(`requiresGrad: ${REQUIRES_GRAD_LEAF_ERROR}`);
    native.setRequiresGrad(this._handle, value);
  }
  /** As PyTorch, `requiresGrad_(true)` on a computed tensor is a no-op and `false` throws. */
  requiresGrad_(value = true): this {
    if (!this.isLeaf) {
      if (!value) throw new Error(`requiresGrad_(false): ${REQUIRES_GRAD_LEAF_ERROR}`);
      return this;
    }
    native.setRequiresGrad(this._handle, value);
    return this;
  }
  get isLeaf(): boolean { return native.isLeaf(this._handle); }
  get gradFn(): string | null { return native.gradFn(this._handle); }
  get grad(): Tensor | null {
    const g = native.grad(this._handle);
    return g === null ? null : new Tensor(g);
  }
  set grad(value: Tensor | null) { native.setGrad(this._handle, value === null ? null : value._handle); }
  backward(gradient: Tensor | null = null, options: { retainGraph?: boolean; createGraph?: boolean } = {}): void {
    native.backward(this._handle, gradient?._handle ?? null, options.retainGraph, options.createGraph ?? false);
  }
  detach(): Tensor { return A.detach(this); }
  /** The same storage outside autograd, as PyTorch's `t.data`. */
  get data(): Tensor { return A.detach(this); }
  /** `t.data = other`: this tensor (same object, same autograd identity) takes other's storage, dtype and device. */
  set data(value: Tensor) { native.setData(this._handle, value._handle); }
  detach_(): this { return A.detach_(this); }

  // --- export -----------------------------------------------------------------------------
  /** A copy of the elements as a typed array (row-major, contiguous, on the CPU). */
  toArray(): AnyTypedArray { return typedArrayFromBuffer(native.toBuffer(this._handle), this.dtype); }
  /** Nested JS arrays of numbers (int64 converted to Number), like PyTorch's tolist(). */
  tolist(): unknown {
    // float16/bfloat16 export as bit patterns; tolist gives their values.
    const flat = this.dtype === 'float16' || this.dtype === 'bfloat16' ? this.float().toArray() : this.toArray();
    const values: number[] = Array.from(flat as ArrayLike<number | bigint>, (v) => Number(v));
    if (this.dtype === 'bool') return nest(values.map((v) => v !== 0), this.shape);
    return nest(values, this.shape);
  }
  /** The value of a one-element tensor. */
  item(): number { return native.item(this._handle); }

  // --- conversion -------------------------------------------------------------------------
  to(target: Device | DType | { device?: Device; dtype?: DType }, options: { nonBlocking?: boolean; copy?: boolean } = {}): Tensor {
    let device: Device | undefined;
    let dtype: DType | undefined;
    if (typeof target === 'string') {
      if (target in DTYPE_CODE) dtype = target as DType;
      else device = target;
    } else {
      ({ device, dtype } = target);
    }
    return A.to(this, dtype === undefined ? undefined : dtypeCode(dtype), undefined, device, undefined,
      options.nonBlocking ?? false, options.copy ?? false);
  }
  cpu(): Tensor { return this.to('cpu'); }
  cuda(index = 0): Tensor { return this.to(`cuda:${index}`); }
  float(): Tensor { return this.to('float32'); }
  double(): Tensor { return this.to('float64'); }
  half(): Tensor { return this.to('float16'); }
  bfloat16(): Tensor { return this.to('bfloat16'); }
  long(): Tensor { return this.to('int64'); }
  int(): Tensor { return this.to('int32'); }
  bool(): Tensor { return this.to('bool'); }
  byte(): Tensor { return this.to('uint8'); }
  type(dtype: DType): Tensor { return this.to(dtype); }

  // --- arithmetic (broadcasting; a number is a wrapped scalar as in Python) -------------------
  add(other: Tensor | Scalar, alpha: Scalar = 1): Tensor { return other instanceof Tensor ? A.add(this, other, alpha) : A.addS(this, other, alpha); }
  sub(other: Tensor | Scalar, alpha: Scalar = 1): Tensor { return other instanceof Tensor ? A.sub(this, other, alpha) : A.subS(this, other, alpha); }
  /** other - this, as Python's `other - t`. */
  rsub(other: Scalar): Tensor { return A.rsubS(this, other); }
  mul(other: Tensor | Scalar): Tensor { return other instanceof Tensor ? A.mul(this, other) : A.mulS(this, other); }
  div(other: Tensor | Scalar, roundingMode?: 'trunc' | 'floor'): Tensor {
    if (roundingMode !== undefined) return A.divMode(this, other instanceof Tensor ? other : scalarTensor(other, this), roundingMode);
    return other instanceof Tensor ? A.div(this, other) : A.divS(this, other);
  }
  remainder(other: Tensor | Scalar): Tensor { return other instanceof Tensor ? A.remainder(this, other) : A.remainderS(this, other); }
  pow(exponent: Tensor | Scalar): Tensor { return exponent instanceof Tensor ? A.pow(this, exponent) : A.powS(this, exponent); }
  neg(): Tensor { return A.neg(this); }
  abs(): Tensor { return A.abs(this); }
  sqrt(): Tensor { return A.sqrt(this); }
  rsqrt(): Tensor { return A.rsqrt(this); }
  exp(): Tensor { return A.exp(this); }
  log(): Tensor { return A.log(this); }
  log1p(): Tensor { return A.log1p(this); }
  expm1(): Tensor { return A.expm1(this); }
  sin(): Tensor { return A.sin(this); }
  cos(): Tensor { return A.cos(this); }
  tan(): Tensor { return A.tan(this); }
  tanh(): Tensor { return A.tanh(this); }
  sigmoid(): Tensor { return A.sigmoid(this); }
  erf(): Tensor { return A.erf(this); }
  floor(): Tensor { return A.floor(this); }
  ceil(): Tensor { return A.ceil(this); }
  round(): Tensor { return A.round(this); }
  sign(): Tensor { return A.sign(this); }
  reciprocal(): Tensor { return A.reciprocal(this); }
  square(): Tensor { return A.square(this); }
  clamp(min: Scalar | Tensor | null = null, max: Scalar | Tensor | null = null): Tensor {
    if (min instanceof Tensor || max instanceof Tensor) {
      return A.clampT(this, typeof min === 'number' ? scalarTensor(min, this) : min, typeof max === 'number' ? scalarTensor(max, this) : max);
    }
    return A.clamp(this, min, max);
  }
  /** Alias of clamp, as torch.clip. */
  clip(min: Scalar | Tensor | null = null, max: Scalar | Tensor | null = null): Tensor { return this.clamp(min, max); }
  maximum(other: Tensor): Tensor { return A.maximum(this, other); }
  minimum(other: Tensor): Tensor { return A.minimum(this, other); }
  nanToNum(nan = 0, posinf: number | null = null, neginf: number | null = null): Tensor { return A.nanToNum(this, nan, posinf, neginf); }

  // --- comparison and logic ---------------------------------------------------------------
  eq(other: Tensor | Scalar): Tensor { return other instanceof Tensor ? A.eq(this, other) : A.eqS(this, other); }
  ne(other: Tensor | Scalar): Tensor { return other instanceof Tensor ? A.ne(this, other) : A.neS(this, other); }
  lt(other: Tensor | Scalar): Tensor { return other instanceof Tensor ? A.lt(this, other) : A.ltS(this, other); }
  le(other: Tensor | Scalar): Tensor { return other instanceof Tensor ? A.le(this, other) : A.leS(this, other); }
  gt(other: Tensor | Scalar): Tensor { return other instanceof Tensor ? A.gt(this, other) : A.gtS(this, other); }
  ge(other: Tensor | Scalar): Tensor { return other instanceof Tensor ? A.ge(this, other) : A.geS(this, other); }
  logicalNot(): Tensor { return A.logicalNot(this); }
  logicalAnd(other: Tensor): Tensor { return A.logicalAnd(this, other); }
  logicalOr(other: Tensor): Tensor { return A.logicalOr(this, other); }
  isnan(): Tensor { return A.isnan(this); }
  isfinite(): Tensor { return A.isfinite(this); }
  where(condition: Tensor, other: Tensor | Scalar): Tensor { return where(condition, this, other); }
  maskedFill(mask: Tensor, value: Scalar): Tensor { return A.maskedFill(this, mask, value); }

  // --- linear algebra ---------------------------------------------------------------------
  matmul(other: Tensor): Tensor { return A.matmul(this, other); }
  mm(other: Tensor): Tensor { return A.mm(this, other); }
  bmm(other: Tensor): Tensor { return A.bmm(this, other); }

  // --- reductions -------------------------------------------------------------------------
  sum(dim?: number | number[] | null, keepdim = false, options: { dtype?: DType } = {}): Tensor {
    const dtype = options.dtype === undefined ? undefined : dtypeCode(options.dtype);
    return dim === undefined || dim === null ? A.sum(this, dtype) : A.sumDim(this, dims(dim), keepdim, dtype);
  }
  mean(dim?: number | number[] | null, keepdim = false): Tensor {
    return dim === undefined || dim === null ? A.mean(this) : A.meanDim(this, dims(dim), keepdim);
  }
  prod(dim?: number, keepdim = false): Tensor { return dim === undefined ? A.prod(this) : A.prodDim(this, dim, keepdim); }
  /** Without `dim`: the maximum element. With `dim`: [values, indices], as torch.max(x, dim). */
  max(): Tensor;
  max(dim: number, keepdim?: boolean): [Tensor, Tensor];
  max(dim?: number, keepdim = false): Tensor | [Tensor, Tensor] { return dim === undefined ? A.maxAll(this) : A.maxDim(this, dim, keepdim); }
  min(): Tensor;
  min(dim: number, keepdim?: boolean): [Tensor, Tensor];
  min(dim?: number, keepdim = false): Tensor | [Tensor, Tensor] { return dim === undefined ? A.minAll(this) : A.minDim(this, dim, keepdim); }
  amax(dim: number | number[] = [], keepdim = false): Tensor { return A.amax(this, dims(dim), keepdim); }
  amin(dim: number | number[] = [], keepdim = false): Tensor { return A.amin(this, dims(dim), keepdim); }
  argmax(dim: number | null = null, keepdim = false): Tensor { return A.argmax(this, dim, keepdim); }
  argmin(dim: number | null = null, keepdim = false): Tensor { return A.argmin(this, dim, keepdim); }
  /** Variance with Bessel's correction by default (correction=1), as torch.var. */
  var(dim: number | number[] | null = null, options: { correction?: number; keepdim?: boolean } = {}): Tensor {
    return A.varCorrection(this, dim === null ? null : dims(dim), options.correction ?? 1, options.keepdim ?? false);
  }
  std(dim: number | number[] | null = null, options: { correction?: number; keepdim?: boolean } = {}): Tensor {
    return A.stdCorrection(this, dim === null ? null : dims(dim), options.correction ?? 1, options.keepdim ?? false);
  }
  norm(p: number = 2, dim: number | number[] | null = null, keepdim = false): Tensor {
    return A.normScalarOpt(this, p, dim === null ? [] : dims(dim), keepdim);
  }
  logsumexp(dim: number | number[], keepdim = false): Tensor { return A.logsumexp(this, dims(dim), keepdim); }
  cumsum(dim: number): Tensor { return A.cumsum(this, dim); }
  /** Whether every element is true (nonzero), or along `dim`. */
  all(dim?: number, keepdim = false): Tensor { return dim === undefined ? A.all(this) : A.allDim(this, dim, keepdim); }
  /** Whether any element is true (nonzero), or along `dim`. */
  any(dim?: number, keepdim = false): Tensor { return dim === undefined ? A.any(this) : A.anyDim(this, dim, keepdim); }
  sort(dim = -1, descending = false): [Tensor, Tensor] { return A.sort(this, dim, descending); }
  topk(k: number, dim = -1, largest = true, sorted = true): [Tensor, Tensor] { return A.topk(this, k, dim, largest, sorted); }

  // --- shape and views --------------------------------------------------------------------
  view(...shape: number[] | [number[]]): Tensor;
  view(dtype: DType): Tensor;
  view(...shape: unknown[]): Tensor {
    if (typeof shape[0] === 'string') return A.viewDtype(this, dtypeCode(shape[0] as DType));
    return A.view(this, sizes(shape as number[] | [number[]]));
  }
  reshape(...shape: number[] | [number[]]): Tensor { return A.reshape(this, sizes(shape)); }
  flatten(startDim = 0, endDim = -1): Tensor { return A.flatten(this, startDim, endDim); }
  unflatten(dim: number, sizes: number[]): Tensor { return A.unflatten(this, dim, sizes); }
  permute(...order: number[] | [number[]]): Tensor { return A.permute(this, sizes(order)); }
  transpose(dim0: number, dim1: number): Tensor { return A.transpose(this, dim0, dim1); }
  /** Transpose of a 2-D tensor. */
  t(): Tensor { return A.transpose(this, 0, 1); }
  get T(): Tensor { return this.permute([...Array(this.ndim).keys()].reverse()); }
  squeeze(dim?: number): Tensor { return dim === undefined ? A.squeeze(this) : A.squeezeDim(this, dim); }
  unsqueeze(dim: number): Tensor { return A.unsqueeze(this, dim); }
  expand(...shape: number[] | [number[]]): Tensor { return A.expand(this, sizes(shape), false); }
  expandAs(other: Tensor): Tensor { return A.expand(this, other.shape, false); }
  repeat(...repeats: number[] | [number[]]): Tensor { return A.repeat(this, sizes(repeats)); }
  repeatInterleave(repeats: number, dim?: number): Tensor { return A.repeatInterleave(this, repeats, dim ?? null); }
  contiguous(): Tensor { return A.contiguous(this, 0); }
  clone(): Tensor { return A.clone(this); }
  narrow(dim: number, start: number, length: number): Tensor { return A.narrow(this, dim, start, length); }
  select(dim: number, index: number): Tensor { return A.select(this, dim, index); }
  slice(dim: number, start: number | null = null, end: number | null = null, step = 1): Tensor { return A.slice(this, dim, start, end, step); }
  indexSelect(dim: number, index: Tensor): Tensor { return A.indexSelect(this, dim, index); }
  gather(dim: number, index: Tensor): Tensor { return A.gather(this, dim, index, false); }
  scatter(dim: number, index: Tensor, src: Tensor): Tensor { return A.scatter(this, dim, index, src); }
  flip(dims: number | number[]): Tensor { return A.flip(this, typeof dims === 'number' ? [dims] : dims); }
  roll(shifts: number | number[], dims: number | number[] = []): Tensor { return A.roll(this, shifts, dims); }
  tril(diagonal = 0): Tensor { return A.tril(this, diagonal); }
  triu(diagonal = 0): Tensor { return A.triu(this, diagonal); }
  split(splitSize: number | number[], dim = 0): Tensor[] {
    return typeof splitSize === 'number' ? A.split(this, splitSize, dim) : A.splitSizes(this, splitSize, dim);
  }
  chunk(chunks: number, dim = 0): Tensor[] { return A.chunk(this, chunks, dim); }
  unbind(dim = 0): Tensor[] { return A.unbind(this, dim); }

  /**
   * Python-style indexing: `x.index(0, ':', slice(1, null, 2), null, '...', idx)` is
   * `x[0, :, 1::2, None, ..., idx]`. Integers select, slices view, null inserts a dim, '...'
   * expands, tensors index (advanced indexing through aten::index).
   */
  index(...indices: Index[]): Tensor {
    const { view, tensorIndices } = this.basicIndex(indices);
    if (tensorIndices.every((t) => t === null)) return view;
    return A.indexTensor(view, trimTrailingNulls(tensorIndices));
  }

  /** In-place `x[indices] = value`. */
  indexPut_(indices: Index[], value: Tensor | Scalar): this {
    const { view, tensorIndices } = this.basicIndex(indices);
    const v = value instanceof Tensor ? value : scalarTensor(value, this);
    if (tensorIndices.every((t) => t === null)) {
      if (value instanceof Tensor) A.copy_(view, v, false);
      else A.fill_(view, value);
    } else {
      A.indexPut_(view, trimTrailingNulls(tensorIndices), v, false);
    }
    return this;
  }

  private basicIndex(indices: Index[]): { view: Tensor; tensorIndices: (Tensor | null)[] } {
    // A bool (or uint8) mask consumes as many dims as it has, as in Python.
    const consumed = (i: Index): number => (i instanceof Tensor && (i.dtype === 'bool' || i.dtype === 'uint8') ? i.ndim : 1);
    const consuming = indices.reduce((n: number, i) => (i === null || i === '...' ? n : n + consumed(i)), 0);
    const ellipsis = indices.filter((i) => i === '...').length;
    if (ellipsis > 1) throw new Error('index: at most one "..." is allowed');
    const ndim = this.ndim;
    if (consuming > ndim) throw new RangeError(`index: too many indices (${consuming}) for a tensor of ${ndim} dims`);
    let view: Tensor = this;
    let dim = 0;
    const tensorIndices: (Tensor | null)[] = [];
    for (const index of indices) {
      if (index === '...') {
        const skip = ndim - consuming;
        for (let k = 0; k < skip; k++) tensorIndices.push(null);
        dim += skip;
      } else if (index === null) {
        view = view.unsqueeze(dim);
        tensorIndices.push(null);
        dim++;
      } else if (typeof index === 'number') {
        view = view.select(dim, index);
      } else if (index === ':') {
        tensorIndices.push(null);
        dim++;
      } else if (index instanceof Tensor) {
        tensorIndices.push(index);
        dim += consumed(index);
      } else {
        if (index.step <= 0) throw new RangeError(`index: slice step must be positive, got ${index.step} (as PyTorch; use flip)`);
        view = A.slice(view, dim, index.start ?? 0, index.stop ?? INT64_MAX, index.step);
        tensorIndices.push(null);
        dim++;
      }
    }
    return { view, tensorIndices };
  }

  // --- in place ---------------------------------------------------------------------------
  add_(other: Tensor | Scalar, alpha: Scalar = 1): this { return other instanceof Tensor ? A.add_(this, other, alpha) : A.addS_(this, other, alpha); }
  sub_(other: Tensor | Scalar, alpha: Scalar = 1): this { return other instanceof Tensor ? A.sub_(this, other, alpha) : A.subS_(this, other, alpha); }
  mul_(other: Tensor | Scalar): this { return other instanceof Tensor ? A.mul_(this, other) : A.mulS_(this, other); }
  div_(other: Tensor | Scalar): this { return other instanceof Tensor ? A.div_(this, other) : A.divS_(this, other); }
  pow_(exponent: Scalar): this { return A.powS_(this, exponent); }
  sqrt_(): this { return A.sqrt_(this); }
  exp_(): this { return A.exp_(this); }
  clamp_(min: Scalar | null = null, max: Scalar | null = null): this { return A.clamp_(this, min, max); }
  copy_(src: Tensor): this { return A.copy_(this, src, false); }
  zero_(): this { return A.zero_(this); }
  fill_(value: Scalar): this { return A.fill_(this, value); }
  normal_(mean = 0, std = 1): this { return A.normal_(this, mean, std); }
  uniform_(from = 0, to = 1): this { return A.uniform_(this, from, to); }
  bernoulli_(p = 0.5): this { return A.bernoulli_(this, p); }
  addcmul_(tensor1: Tensor, tensor2: Tensor, value: Scalar = 1): this { return A.addcmul_(this, tensor1, tensor2, value); }
  addcdiv_(tensor1: Tensor, tensor2: Tensor, value: Scalar = 1): this { return A.addcdiv_(this, tensor1, tensor2, value); }
  lerp_(end: Tensor, weight: Scalar): this { return A.lerp_(this, end, weight); }
  maskedFill_(mask: Tensor, value: Scalar): this { return A.maskedFill_(this, mask, value); }
}

Tensor.prototype._kept = false;
Tensor.prototype._finalized = false;

function dims(dim: number | readonly number[]): number[] { return typeof dim === 'number' ? [dim] : [...dim]; }

function sizes(args: readonly number[] | readonly [readonly number[]]): number[] {
  return Array.isArray(args[0]) ? [...(args[0] as number[])] : [...(args as number[])];
}

function trimTrailingNulls(indices: (Tensor | null)[]): (Tensor | null)[] {
  let end = indices.length;
  while (end > 0 && indices[end - 1] === null) end--;
  return indices.slice(0, end);
}

function nest(values: unknown[], shape: number[]): unknown {
  if (shape.length === 0) return values[0];
  if (shape.length === 1) return values;
  const [n, ...rest] = shape;
  const stride = rest.reduce((a, b) => a * b, 1);
  return Array.from({ length: n! }, (_, i) => nest(values.slice(i * stride, (i + 1) * stride), rest));
}

/** A 0-dim tensor holding `value`, with the dtype and device of `like`. */
export function scalarTensor(value: Scalar, like: Tensor): Tensor {
  return fullOp([], value, dtypeCode(like.dtype), undefined, like.device, false);
}

const fullOp = op('aten::full');
const whereOp = op('aten::where.self');
const whereScalarOther = op('aten::where.ScalarOther');
const whereScalarSelf = op('aten::where.ScalarSelf');
const whereScalar = op('aten::where.Scalar');

/** Elementwise `condition ? input : other`, broadcasting. */
export function where(condition: Tensor, input: Tensor | Scalar, other: Tensor | Scalar): Tensor {
  if (input instanceof Tensor && other instanceof Tensor) return whereOp(condition, input, other);
  if (input instanceof Tensor) return whereScalarOther(condition, input, other);
  if (other instanceof Tensor) return whereScalarSelf(condition, input, other);
  return whereScalar(condition, input, other);
}

export type { DType, TypedArrayFor };
