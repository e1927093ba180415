// Factories: the RNG stream equals PyTorch's after manualSeed (same libtorch, same generator),
// typed arrays round-trip for every dtype, torch.tensor infers dtypes like Python.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '../../src/torch/index.js';
import { loadFixture } from '../helpers.js';

test('after manualSeed(0), randn/rand/randint/randperm/normal equal PyTorch exactly', () => {
  const fx = loadFixture('torch_random.json');
  torch.manualSeed(0);
  // Same calls in the same order as make_torch.py: each draw advances the shared generator.
  const drawn: Record<string, torch.Tensor> = {
    randn: torch.randn([3, 4]),
    rand: torch.rand([5]),
    randint: torch.randint(0, 10, [6]),
    randperm: torch.randperm(8),
    normal: torch.normal(torch.arange(0, 4, 1, { dtype: 'float32' }), torch.tensor([1, 0.5, 2, 0.1])),
    randn64: torch.randn([2, 3], { dtype: 'float64' }),
    rand_after: torch.rand([3]),
  };
  for (const [name, t] of Object.entries(drawn)) {
    assert.equal(t.dtype, fx[name].dtype, `${name} dtype`);
    assert.deepEqual(t.tolist(), fx[name].tolist(), name);
  }
});

test('getRngState/setRngState replay the stream', () => {
  torch.manualSeed(3);
  const state = torch.getRngState();
  const a = torch.randn([4]).tolist();
  torch.randn([10]);
  torch.setRngState(state);
  assert.deepEqual(torch.randn([4]).tolist(), a);
});

// Bit patterns: float16 1, -2, inf, smallest subnormal, 1/3 rounded, -0; bfloat16 1, -2, pi rounded, inf.
const HALF_BITS = [0x3c00, 0xc000, 0x7c00, 0x0001, 0x3555, 0x8000];
const HALF_VALUES = [1, -2, Infinity, 2 ** -24, 0.333251953125, -0];
const BF16_BITS = [0x3f80, 0xc000, 0x4049, 0x7f80];
const BF16_VALUES = [1, -2, 3.140625, Infinity];

test('typed arrays round-trip through fromArray/toArray for every dtype', () => {
  const cases: [torch.DType, ArrayBufferView & ArrayLike<number | bigint>][] = [
    ['float32', Float32Array.from([1.5, -0, 3.4028234663852886e38, 1e-45])],
    ['float64', Float64Array.from([Math.PI, -1e-300, Number.MAX_VALUE, -0])],
    ['float16', Uint16Array.from(HALF_BITS)],
    ['bfloat16', Uint16Array.from(BF16_BITS)],
    ['int64', BigInt64Array.from([0n, -1n, 9223372036854775807n, -9223372036854775808n])],
    ['int32', Int32Array.from([0, -1, 2147483647, -2147483648])],
    ['int16', Int16Array.from([0, -1, 32767, -32768])],
    ['int8', Int8Array.from([0, -1, 127, -128])],
    ['uint8', Uint8Array.from([0, 1, 128, 255])],
    ['bool', Uint8Array.from([1, 0, 0, 1])],
  ];
  for (const [dtype, data] of cases) {
    const t = torch.fromArray(data, [2, data.length / 2], dtype);
    assert.equal(t.dtype, dtype);
    assert.deepEqual(t.shape, [2, data.length / 2]);
    const back = t.toArray();
    assert.equal(back.constructor, dtype === 'bool' ? Uint8Array : data.constructor, `${dtype} array type`);
    assert.deepEqual(Array.from(back as ArrayLike<number | bigint>), Array.from(data), dtype);
  }
  // A typed array that is a window on a larger buffer copies only its window.
  const big = Float32Array.from([9, 1, 2, 3, 9]);
  assert.deepEqual(torch.fromArray(big.subarray(1, 4), [3]).tolist(), [1, 2, 3]);
  assert.throws(() => torch.fromArray(Float32Array.from([1, 2, 3]), [2, 2]), /fromArray: shape \[2,2\] of float32 needs 16 bytes, got 12/);
});

test('float16 and bfloat16: bit patterns in, values out of tolist/item/float, and values in', () => {
  const half = torch.fromArray(Uint16Array.from(HALF_BITS), [6], 'float16');
  assert.deepEqual(half.tolist(), HALF_VALUES);
  assert.deepEqual(Array.from(half.float().toArray() as Float32Array), HALF_VALUES);
  assert.equal(half.select(0, 4).item(), 0.333251953125);
  const bf16 = torch.tensor(Uint16Array.from(BF16_BITS), { dtype: 'bfloat16' });
  assert.deepEqual(bf16.tolist(), BF16_VALUES);
  assert.deepEqual(Array.from(torch.tensor([1 / 3, 65504, 1e-8], { dtype: 'float16' }).toArray() as Uint16Array), [0x3555, 0x7bff, 0x0000]);
  assert.deepEqual(Array.from(torch.tensor([Math.PI], { dtype: 'bfloat16' }).toArray() as Uint16Array), [0x4049]);
  assert.throws(() => torch.tensor(Uint16Array.from([1])), /torch.tensor: give a dtype for Uint16Array/);
});

test('torch.tensor infers the dtype as Python does, checks raggedness, and honours options', () => {
  assert.equal(torch.tensor([[1, 2], [3, 4]]).dtype, 'int64');
  assert.equal(torch.tensor([1, 2.5]).dtype, 'float32');
  assert.equal(torch.tensor([true, false]).dtype, 'bool');
  assert.equal(torch.tensor(Float64Array.from([1])).dtype, 'float64');
  assert.equal(torch.tensor(Int32Array.from([1])).dtype, 'int32');
  assert.deepEqual(torch.tensor(3.5).shape, []);
  assert.equal(torch.tensor(3.5).item(), 3.5);
  assert.deepEqual(torch.tensor([]).shape, [0]);
  assert.deepEqual(torch.tensor([[1, 2], [3, 4]], { dtype: 'float64' }).tolist(), [[1, 2], [3, 4]]);
  assert.deepEqual(torch.tensor([1, 2, 3, 4, 5, 6], { shape: [2, 3] }).shape, [2, 3]);
  assert.throws(() => torch.tensor([[1, 2], [3]]), /torch.tensor: ragged nested array \(shape \[2,2\] needs 4 values, got 3\)/);
  const leaf = torch.tensor([1, 2], { dtype: 'float32', requiresGrad: true });
  assert.equal(leaf.requiresGrad, true);
  assert.equal(leaf.isLeaf, true);
  assert.throws(() => torch.tensor([1, 2], { requiresGrad: true }), /Only Tensors of floating point and complex dtype can require gradients/);
});

test('factories follow PyTorch defaults (float32, int64 for integral arange) and validate shapes', () => {
  assert.deepEqual(torch.zeros([2, 3]).tolist(), [[0, 0, 0], [0, 0, 0]]);
  assert.equal(torch.zeros(4).dtype, 'float32');
  assert.deepEqual(torch.ones([2], { dtype: 'int32' }).toArray(), Int32Array.from([1, 1]));
  assert.deepEqual(torch.full([2], 7).tolist(), [7, 7]);
  assert.equal(torch.full([2], 7).dtype, 'float32');
  assert.equal(torch.full([1], true).dtype, 'bool');
  assert.deepEqual(torch.empty([3, 0]).shape, [3, 0]);
  assert.deepEqual(torch.eye(2).tolist(), [[1, 0], [0, 1]]);
  assert.deepEqual(torch.arange(4).tolist(), [0, 1, 2, 3]);
  assert.equal(torch.arange(4).dtype, 'int64');
  assert.deepEqual(torch.arange(1, 2, 0.25).tolist(), [1, 1.25, 1.5, 1.75]);
  assert.equal(torch.arange(1, 2, 0.25).dtype, 'float32');
  assert.deepEqual(torch.linspace(0, 1, 5).tolist(), [0, 0.25, 0.5, 0.75, 1]);
  const like = torch.zeros([2, 2], { dtype: 'float64' });
  for (const t of [torch.zerosLike(like), torch.onesLike(like), torch.fullLike(like, 2), torch.emptyLike(like), torch.randnLike(like), torch.randLike(like)]) {
    assert.deepEqual([t.shape, t.dtype], [[2, 2], 'float64']);
  }
  assert.equal(torch.onesLike(like, { dtype: 'int64' }).dtype, 'int64');
  const r = torch.randint(3, 5, [1000]);
  assert.deepEqual([r.min().item(), r.max().item(), r.dtype], [3, 4, 'int64']);
  assert.deepEqual(torch.randperm(5).sort()[0].tolist(), [0, 1, 2, 3, 4]);
  assert.throws(() => torch.zeros([2, -1]), /shape \[2,-1\]: sizes must be non-negative integers/);
  assert.throws(() => torch.randn([1.5]), /sizes must be non-negative integers/);
});

test('cat and stack join along a dim and name the op and shapes on mismatch', () => {
  const a = torch.tensor([[1, 2]]);
  const b = torch.tensor([[3, 4], [5, 6]]);
  assert.deepEqual(torch.cat([a, b]).tolist(), [[1, 2], [3, 4], [5, 6]]);
  assert.deepEqual(torch.stack([a, a], 1).shape, [1, 2, 2]);
  assert.throws(() => torch.cat([]), /torch.cat: expected a non-empty list/);
  assert.throws(() => torch.stack([a, b]), /aten::stack: stack expects each tensor to be equal size, .*tensor arguments: \[int64\[1, 2\], int64\[2, 2\]\]/);
  assert.throws(() => torch.cat([a, torch.zeros([1, 3])], 0), /aten::cat: Sizes of tensors must match except in dimension 0/);
});
