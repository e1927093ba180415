// Dtypes by PyTorch's names; the numbers are c10::ScalarType codes.
export type DType = 'uint8' | 'int8' | 'int16' | 'int32' | 'int64' | 'float16' | 'float32' | 'float64' | 'bool' | 'bfloat16';

export const uint8 = 'uint8';
export const int8 = 'int8';
export const int16 = 'int16';
export const int32 = 'int32';
export const int64 = 'int64';
export const long = 'int64';
export const float16 = 'float16';
export const half = 'float16';
export const float32 = 'float32';
export const float = 'float32';
export const float64 = 'float64';
export const double = 'float64';
export const bfloat16 = 'bfloat16';
export const bool = 'bool';

export const DTYPE_CODE: Record<DType, number> = {
  uint8: 0, int8: 1, int16: 2, int32: 3, int64: 4, float16: 5, float32: 6, float64: 7, bool: 11, bfloat16: 15,
};

const CODE_DTYPE = new Map<number, DType>(Object.entries(DTYPE_CODE).map(([k, v]) => [v, k as DType]));

export function dtypeFromCode(code: number): DType {
  const dtype = CODE_DTYPE.get(code);
  if (dtype === undefined) throw new Error(`reals: tensor has a dtype (c10::ScalarType ${code}) that reals does not support`);
  return dtype;
}

export function dtypeCode(dtype: DType): number {
  const code = DTYPE_CODE[dtype];
  if (code === undefined) throw new Error(`reals: unknown dtype '${String(dtype)}' (expected one of ${Object.keys(DTYPE_CODE).join(', ')})`);
  return code;
}

export const BYTES_PER_ELEMENT: Record<DType, number> = {
  uint8: 1, int8: 1, int16: 2, int32: 4, int64: 8, float16: 2, float32: 4, float64: 8, bool: 1, bfloat16: 2,
};

export function isFloatingPoint(dtype: DType): boolean {
  return dtype === 'float16' || dtype === 'float32' || dtype === 'float64' || dtype === 'bfloat16';
}

/** The typed array `toArray()` returns; float16/bfloat16 come as their raw 16-bit patterns. */
export type TypedArrayFor<D extends DType> = D extends 'float32' ? Float32Array
  : D extends 'float64' ? Float64Array
  : D extends 'int32' ? Int32Array
  : D extends 'int64' ? BigInt64Array
  : D extends 'int16' ? Int16Array
  : D extends 'int8' ? Int8Array
  : D extends 'float16' | 'bfloat16' ? Uint16Array
  : Uint8Array;

export type AnyTypedArray = Float32Array | Float64Array | Int32Array | BigInt64Array | Int16Array | Int8Array | Uint16Array | Uint8Array;

export function typedArrayFromBuffer(buffer: ArrayBuffer, dtype: DType): AnyTypedArray {
  switch (dtype) {
    case 'float32': return new Float32Array(buffer);
    case 'float64': return new Float64Array(buffer);
    case 'int32': return new Int32Array(buffer);
    case 'int64': return new BigInt64Array(buffer);
    case 'int16': return new Int16Array(buffer);
    case 'int8': return new Int8Array(buffer);
    case 'float16': case 'bfloat16': return new Uint16Array(buffer);
    default: return new Uint8Array(buffer);
  }
}
