// Tensor: every method equals PyTorch on fixed inputs, indexing follows Python, conversions,
// errors that name the op and the shapes, dispose, and torch.scope semantics.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '../../src/torch/index.js';
import { loadFixture, assertClose } from '../helpers.js';

type T = torch.Tensor;
const { slice } = torch;

test('every Tensor method equals PyTorch on fixed float64 inputs (make_torch.py method_cases)', () => {
  const fx = loadFixture('torch_methods.json');
  const { x, y, p } = fx as { x: T; y: T; p: T };
  const m = x.gt(0);
  const idx = torch.tensor([[0, 3], [2, 2], [1, 0]]);
  const calls: Record<string, () => T | T[]> = {
    'add(y, 2)': () => x.add(y, 2), 'add(1.5)': () => x.add(1.5), 'sub(y, 0.5)': () => x.sub(y, 0.5), 'sub(2)': () => x.sub(2),
    'rsub(2)': () => x.rsub(2), 'mul(y)': () => x.mul(y), 'mul(-3)': () => x.mul(-3), 'div(y)': () => x.div(y), 'div(4)': () => x.div(4),
    "div(0.7, 'floor')": () => x.div(0.7, 'floor'), "div(y, 'trunc')": () => x.div(y, 'trunc'), 'remainder(0.7)': () => x.remainder(0.7),
    'remainder(y)': () => x.remainder(y), 'pow(3)': () => x.pow(3), 'p.pow(y)': () => p.pow(y),
    'neg()': () => x.neg(), 'abs()': () => x.abs(), 'p.sqrt()': () => p.sqrt(), 'p.rsqrt()': () => p.rsqrt(), 'exp()': () => x.exp(),
    'p.log()': () => p.log(), 'p.log1p()': () => p.log1p(), 'expm1()': () => x.expm1(), 'sin()': () => x.sin(), 'cos()': () => x.cos(), 'tan()': () => x.tan(),
    'tanh()': () => x.tanh(), 'sigmoid()': () => x.sigmoid(), 'erf()': () => x.erf(), 'mul(3).floor()': () => x.mul(3).floor(),
    'mul(3).ceil()': () => x.mul(3).ceil(), 'mul(3).round()': () => x.mul(3).round(), 'sign()': () => x.sign(),
    'reciprocal()': () => x.reciprocal(), 'square()': () => x.square(),
    'clamp(-0.5, 0.5)': () => x.clamp(-0.5, 0.5), 'clamp(0.1)': () => x.clamp(0.1), 'clamp(null, 0.2)': () => x.clamp(null, 0.2),
    'clamp(y, p)': () => x.clamp(y, p), 'clip(-1, 1)': () => x.clip(-1, 1), 'maximum(y)': () => x.maximum(y), 'minimum(y)': () => x.minimum(y),
    'eq(y)': () => x.eq(y), 'ne(0)': () => x.ne(0), 'lt(y)': () => x.lt(y), 'le(0.1)': () => x.le(0.1), 'gt(y)': () => x.gt(y),
    'ge(-0.2)': () => x.ge(-0.2), 'm.logicalNot()': () => m.logicalNot(), 'm.logicalAnd(y > 0)': () => m.logicalAnd(y.gt(0)),
    'm.logicalOr(y > 0)': () => m.logicalOr(y.gt(0)), 'where(m, y)': () => x.where(m, y), 'where(m, 2)': () => x.where(m, 2),
    'maskedFill(m, -1)': () => x.maskedFill(m, -1),
    'matmul(p.t())': () => x.matmul(p.t()), 'matmul(y)': () => x.matmul(y), 'mm(p.t())': () => x.mm(p.t()),
    'sum()': () => x.sum(), 'sum([0], true)': () => x.sum([0], true), 'mean()': () => x.mean(), 'mean(1)': () => x.mean(1),
    'prod()': () => x.prod(), 'prod(1, true)': () => x.prod(1, true), 'max()': () => x.max(), 'max(1)': () => x.max(1),
    'min()': () => x.min(), 'min(0, true)': () => x.min(0, true), 'amax(1)': () => x.amax(1), 'amin([0, 1])': () => x.amin([0, 1]),
    'amax()': () => x.amax(), 'argmax()': () => x.argmax(), 'argmax(1, true)': () => x.argmax(1, true), 'argmin(0)': () => x.argmin(0),
    'var()': () => x.var(), 'var(1, correction 0)': () => x.var(1, { correction: 0 }), 'std([0, 1])': () => x.std([0, 1]),
    'std(0, keepdim)': () => x.std(0, { keepdim: true }), 'norm()': () => x.norm(), 'norm(1, 1)': () => x.norm(1, 1),
    'norm(3, [0, 1], true)': () => x.norm(3, [0, 1], true), 'logsumexp(1)': () => x.logsumexp(1), 'cumsum(0)': () => x.cumsum(0),
    'm.all()': () => m.all(), 'm.any()': () => m.any(), 'sort(1, true)': () => x.sort(1, true), 'sort()': () => x.sort(),
    'topk(2)': () => x.topk(2), 'topk(1, 0, false)': () => x.topk(1, 0, false),
    'view(2, 6)': () => x.view(2, 6), 'reshape(-1)': () => x.reshape(-1), 'unsqueeze(0).flatten(1)': () => x.unsqueeze(0).flatten(1),
    'unflatten(1, [2, 2])': () => x.unflatten(1, [2, 2]), 'permute(1, 0)': () => x.permute(1, 0), 'transpose(0, 1)': () => x.transpose(0, 1),
    't()': () => x.t(), 'view(3, 2, 2).T': () => x.view(3, 2, 2).T, 'view(3, 1, 4).squeeze()': () => x.view(3, 1, 4).squeeze(),
    'view(3, 1, 4).squeeze(1)': () => x.view(3, 1, 4).squeeze(1), 'unsqueeze(-1)': () => x.unsqueeze(-1), 'y.expand(2, 4)': () => y.expand(2, 4),
    'repeat(2, 1, 2)': () => x.repeat(2, 1, 2), 'repeatInterleave(2, 1)': () => x.repeatInterleave(2, 1), 'repeatInterleave(2)': () => x.repeatInterleave(2),
    'narrow(1, 1, 2)': () => x.narrow(1, 1, 2), 'select(1, -1)': () => x.select(1, -1), 'slice(1, 1, null, 2)': () => x.slice(1, 1, null, 2),
    'slice(0, -2)': () => x.slice(0, -2), 'indexSelect(1, [3, 0])': () => x.indexSelect(1, torch.tensor([3, 0])),
    'gather(1, idx)': () => x.gather(1, idx), 'scatter(1, idx[:, :1], p)': () => x.scatter(1, idx.narrow(1, 0, 1), p),
    'flip([0, 1])': () => x.flip([0, 1]), 'flip(1)': () => x.flip(1), 'roll([1, -1], [0, 1])': () => x.roll([1, -1], [0, 1]),
    'roll(5)': () => x.roll(5), 'tril(1)': () => x.tril(1), 'triu(-1)': () => x.triu(-1), 'split(2)': () => x.split(2),
    'split([1, 3], 1)': () => x.split([1, 3], 1), 'chunk(3, 1)': () => x.chunk(3, 1), 'unbind(1)': () => x.unbind(1),
    'isnan()': () => x.div(0).mul(0).isnan(), 'isfinite()': () => x.div(m).isfinite(), 'nanToNum(0, 5, -5)': () => x.div(m).nanToNum(0, 5, -5),
    'add_(y, 2)': () => x.clone().add_(y, 2), 'sub_(1)': () => x.clone().sub_(1), 'mul_(y)': () => x.clone().mul_(y), 'div_(p)': () => x.clone().div_(p),
    'pow_(2)': () => x.clone().pow_(2), 'p.sqrt_()': () => p.clone().sqrt_(), 'exp_()': () => x.clone().exp_(),
    'clamp_(-0.5, 0.5)': () => x.clone().clamp_(-0.5, 0.5), 'copy_(y)': () => x.clone().copy_(y), 'zero_()': () => x.clone().zero_(),
    'fill_(2)': () => x.clone().fill_(2), 'addcmul_(y, p, 0.5)': () => x.clone().addcmul_(y, p, 0.5), 'addcdiv_(y, p, 2)': () => x.clone().addcdiv_(y, p, 2),
    'lerp_(p, 0.3)': () => x.clone().lerp_(p, 0.3), 'maskedFill_(m, 3)': () => x.clone().maskedFill_(m, 3),
    'long()': () => x.mul(3).long(), 'int()': () => x.mul(3).int(), 'byte()': () => p.mul(100).byte(), 'bool()': () => x.round().bool(),
    'half()': () => x.half(), 'bfloat16()': () => x.bfloat16(), 'float()': () => x.float(),
  };
  const expected = fx.results as Record<string, T | T[]>;
  assert.deepEqual(Object.keys(calls).sort(), Object.keys(expected).sort(), 'the TypeScript calls and the fixture list the same cases');
  for (const [name, call] of Object.entries(calls)) {
    const got = call();
    const want = expected[name]!;
    const pairs: [T, T][] = Array.isArray(want) ? want.map((w, i) => [(got as T[])[i]!, w]) : [[got as T, want]];
    assert.equal(Array.isArray(got) ? got.length : 1, pairs.length, `${name}: number of outputs`);
    for (const [g, w] of pairs) {
      assert.equal(g.dtype, w.dtype, `${name}: dtype`);
      if (w.isFloatingPoint()) assertClose(g, w, 1e-12, 1e-12, name);
      else assert.deepEqual(g.tolist(), w.tolist(), name);
    }
  }
});

test('all(dim) and any(dim) reduce along the dimension as torch.all/any(x, dim, keepdim); without one, over everything', () => {
  const m = torch.tensor([[true, true, false], [true, true, true]]);
  assert.deepEqual(m.all(1).tolist(), [false, true]);
  assert.deepEqual(m.all(0).tolist(), [true, true, false]);
  assert.deepEqual(m.any(1, true).tolist(), [[true], [true]]);
  assert.deepEqual(m.logicalNot().any(0).tolist(), [false, false, true]);
  assert.deepEqual([m.all().shape, Boolean(m.all().item()), Boolean(m.any().item())], [[], false, true]);
});

test('indexing follows Python: numbers, negatives, slices with steps, null, "...", tensors, masks', () => {
  const fx = loadFixture('torch_indexing.json');
  const x = fx.x as T;
  const idx = torch.tensor([2, 0, 2]);
  const mask = torch.tensor([[true, false, true, false, true], [false, false, false, false, false], [true, false, true, false, true], [true, false, true, false, true]]);
  const reads: Record<string, () => T> = {
    'x[1]': () => x.index(1),
    'x[-1, -2]': () => x.index(-1, -2),
    'x[:, 1:3]': () => x.index(':', slice(1, 3)),
    'x[..., ::2]': () => x.index('...', slice(null, null, 2)),
    'x[0, :, 1::2, -3:]': () => x.index(0, ':', slice(1, null, 2), slice(-3)),
    'x[None, 1, ..., None, 2]': () => x.index(null, 1, '...', null, 2),
    'x[:, [2, 0, 2]]': () => x.index(':', idx),
    'x[[1, 0], ..., [1, 0]]': () => x.index(torch.tensor([1, 0]), '...', torch.tensor([1, 0])),
    'x[1, :, [2, 0, 2], 1:4]': () => x.index(1, ':', idx, slice(1, 4)),
    'x[..., mask]': () => x.index('...', mask),
    'x[:, 0, mask]': () => x.index(':', 0, mask),
    'x[x > 100]': () => x.index(x.gt(100)),
    'x[1:, -1, 2:0]': () => x.index(slice(1), -1, slice(2, 0)),
  };
  assert.deepEqual(Object.keys(reads).sort(), Object.keys(fx.results).sort());
  for (const [name, read] of Object.entries(reads)) {
    const got = read();
    assert.deepEqual(got.shape, fx.results[name].shape, `${name}: shape`);
    assert.deepEqual(got.tolist(), fx.results[name].tolist(), name);
  }
  const writes: Record<string, (y: T) => void> = {
    'y[1, :, 0] = -1': (y) => y.indexPut_([1, ':', 0], -1),
    'y[:, [2, 0], 1:3] = [[10], [20]]': (y) => y.indexPut_([':', torch.tensor([2, 0]), slice(1, 3)], torch.tensor([[10], [20]], { dtype: 'float32' })),
    'y[..., mask] = 0.5': (y) => y.indexPut_(['...', mask], 0.5),
    'y[0, ..., ::2] = 2 * x[1, ..., ::2]': (y) => y.indexPut_([0, '...', slice(null, null, 2)], x.index(1, '...', slice(null, null, 2)).mul(2)),
  };
  assert.deepEqual(Object.keys(writes).sort(), Object.keys(fx.puts).sort());
  for (const [name, write] of Object.entries(writes)) {
    const y = x.clone();
    write(y);
    assert.deepEqual(y.tolist(), fx.puts[name].tolist(), name);
  }
  // Basic indexing returns views that share storage, as in Python.
  const z = x.clone();
  z.index(0, slice(null, null, 2)).fill_(-7);
  assert.equal(z.index(0, 2, 3, 4).item(), -7);
  assert.equal(z.index(0, 1, 3, 4).item(), 1 * 20 + 3 * 5 + 4, 'row 1 untouched');
});

test('bad indices fail with errors that say what is wrong', () => {
  const x = torch.zeros([2, 3]);
  assert.throws(() => x.index(0, 0, 0), /index: too many indices \(3\) for a tensor of 2 dims/);
  assert.throws(() => x.index('...', 0, '...'), /index: at most one "..." is allowed/);
  assert.throws(() => x.index(slice(null, null, -1)), /index: slice step must be positive, got -1/);
  assert.throws(() => x.index(2), /aten::select.int: select\(\): index 2 out of range for tensor of size \[2, 3\] at dimension 0/);
  assert.throws(() => x.index(torch.tensor([0.5])), /aten::index.Tensor: tensors used as indices must be long, (int, )?byte or bool tensors/);
  assert.throws(() => x.index(torch.tensor([true, false, true])), /aten::index.Tensor: The shape of the mask \[3\] at index 0 does not match/);
  assert.throws(() => x.indexPut_([0], torch.ones([2])), /aten::copy_: The size of tensor a \(3\) must match the size of tensor b \(2\)/);
});

test('wrong dtypes and shapes give errors naming the op and the tensor shapes, not crashes', () => {
  const a = torch.zeros([2, 3]);
  const cases: [() => unknown, RegExp][] = [
    [() => a.matmul(torch.zeros([4, 5])), /^aten::matmul: mat1 and mat2 shapes cannot be multiplied \(2x3 and 4x5\) \(tensor arguments: float32\[2, 3\], float32\[4, 5\]\)$/],
    [() => a.matmul(torch.zeros([3, 2], { dtype: 'float64' })), /^aten::matmul: .*(Float|float).*(Double|double).* \(tensor arguments: float32\[2, 3\], float64\[3, 2\]\)$/],
    [() => a.add(torch.zeros([4])), /^aten::add.Tensor: The size of tensor a \(3\) must match the size of tensor b \(4\) at non-singleton dimension 1 \(tensor arguments: float32\[2, 3\], float32\[4\]\)$/],
    [() => a.view(4, 2), /^aten::view: shape '\[4, 2\]' is invalid for input of size 6/],
    [() => torch.nnFunctional.conv2d(torch.zeros([1, 3, 8, 8]), torch.zeros([4, 2, 3, 3])), /^aten::conv2d: Given groups=1, weight of size \[4, 2, 3, 3\], expected input\[1, 3, 8, 8\] to have 2 channels/],
    [() => torch.nnFunctional.embedding(torch.zeros([3]), torch.zeros([5, 2])), /^aten::embedding: Expected tensor for argument #1 'indices' to have one of the following scalar types: Long, Int; .*tensor arguments: float32\[5, 2\], float32\[3\]/],
    [() => torch.nnFunctional.crossEntropy(torch.zeros([2, 3]), torch.zeros([2])), /^aten::cross_entropy_loss: .*(Long|Float).*tensor arguments: float32\[2, 3\], float32\[2\]/],
    [() => a.sum(5), /^aten::sum.dim_IntList: Dimension out of range \(expected to be in range of \[-2, 1\], but got 5\)/],
    [() => a.select(0, 1.5), /^aten::select.int\(index\): expected an integer, got 1.5/],
    [() => a.logicalAnd(a).add_(0.5), /^aten::add_.Scalar: result type Float can't be cast to the desired output type Bool/],
    [() => a.size(2), /^size\(2\): tensor of shape \[2,3\] has 2 dims/],
    [() => a.item(), /^item: a tensor with 6 elements cannot be converted to a number/],
    [() => torch.zeros([2], { dtype: 'float' as torch.DType }), /unknown dtype 'float'/],
  ];
  for (const [call, message] of cases) assert.throws(call, { message });
});

test('a disposed tensor throws naming the op; dispose is idempotent and other handles survive', () => {
  const a = torch.ones([3]);
  const view = a.view(3);
  a.dispose();
  a.dispose();
  assert.equal(a.isDisposed, true);
  assert.throws(() => a.add(1), { message: /^aten::add.Scalar\(self\): tensor used after dispose\(\)/ });
  assert.throws(() => view.add(a), { message: /^aten::add.Tensor\(other\): tensor used after dispose\(\) \(tensor arguments: float32\[3\], disposed\)/ });
  assert.throws(() => torch.cat([view, a]), { message: /^aten::cat\(tensors\): tensor used after dispose\(\)/ });
  assert.throws(() => a.shape, { message: /^shape: tensor used after dispose\(\)/ });
  assert.throws(() => a.toArray(), { message: /^toBuffer: tensor used after dispose\(\)/ });
  assert.throws(() => a.item(), { message: /^item: tensor used after dispose\(\)/ });
  assert.throws(() => a.backward(), { message: /^backward: tensor used after dispose\(\)/ });
  assert.deepEqual(view.tolist(), [1, 1, 1], 'a view keeps the storage alive');
});

test('scope disposes what it created except returned and kept tensors; nested scopes hand results up', () => {
  const outer = torch.ones([2]);
  let temp!: T;
  let kept!: T;
  const [a, { b }, map] = torch.scope(() => {
    temp = outer.add(1);
    kept = torch.keep(outer.mul(3));
    outer.add_(0);
    return [temp.mul(2), { b: temp.sub(1) }, new Map([['c', temp.neg()]])] as const;
  });
  assert.equal(temp.isDisposed, true, 'intermediate disposed');
  assert.equal(outer.isDisposed, false, 'a tensor from outside the scope (even modified in place) survives');
  assert.equal(kept.isDisposed, false, 'keep() exempts');
  assert.deepEqual([a.tolist(), b.tolist(), map.get('c')!.tolist()], [[4, 4], [1, 1], [-2, -2]], 'returned in arrays, objects and Maps survive');

  let inner!: T;
  let innerTemp!: T;
  let fromInner!: T;
  const result = torch.scope(() => {
    fromInner = torch.scope(() => {
      innerTemp = outer.mul(5);
      inner = innerTemp.add(1);
      return inner;
    });
    assert.equal(innerTemp.isDisposed, true, 'inner scope disposes its temporaries at its end');
    assert.equal(fromInner.isDisposed, false);
    return fromInner.sum();
  });
  assert.equal(inner.isDisposed, true, 'a result of an inner scope belongs to the outer scope, which disposes it');
  assert.equal(result.item(), 12);

  let created!: T;
  assert.throws(() => torch.scope(() => {
    created = outer.mul(2);
    throw new Error('boom');
  }), /boom/);
  assert.equal(created.isDisposed, true, 'an exception inside a scope still disposes');

  assert.throws(() => torch.scope(() => Promise.resolve(outer.mul(2))), /torch.scope\(fn\): fn returned a Promise/);
  const survivor = torch.scope(() => torch.scope(() => outer.mul(7)));
  assert.deepEqual(survivor.tolist(), [7, 7], 'returned through two scopes');
});

test('item, tolist and toArray for every dtype; to(dtype) and view(dtype) conversions', () => {
  assert.equal(torch.tensor(2.5, { dtype: 'float64' }).item(), 2.5);
  assert.equal(torch.tensor([7]).item(), 7);
  assert.equal(torch.tensor([true]).item(), 1);
  assert.deepEqual(torch.tensor([[true, false]]).tolist(), [[true, false]]);
  assert.deepEqual(torch.tensor([[1, 2], [3, 4]]).tolist(), [[1, 2], [3, 4]]);
  assert.equal(torch.tensor(5).tolist(), 5, 'a 0-dim tensor gives a number');
  assert.deepEqual(torch.zeros([2, 0]).tolist(), [[], []]);
  assert.deepEqual(torch.tensor([2 ** 40]).toArray(), BigInt64Array.from([2n ** 40n]));
  for (const dtype of ['uint8', 'int8', 'int16', 'int32', 'int64', 'float16', 'float32', 'float64', 'bfloat16', 'bool'] as const) {
    const t = torch.tensor([0, 1, 3], { dtype: 'float64' }).to(dtype);
    assert.equal(t.dtype, dtype);
    assert.deepEqual(t.tolist(), dtype === 'bool' ? [false, true, true] : [0, 1, 3], dtype);
    assert.deepEqual(t.to({ dtype: 'float64' }).tolist(), dtype === 'bool' ? [0, 1, 1] : [0, 1, 3], `${dtype} -> float64`);
  }
  assert.deepEqual(torch.tensor([-1.7, 2.9]).long().tolist(), [-1, 2], 'float to int truncates, as PyTorch');
  assert.deepEqual(torch.tensor([300, -1], { dtype: 'float32' }).to('uint8').tolist(), [44, 255], 'wraps like PyTorch');
  assert.deepEqual(torch.tensor([1], { dtype: 'float32' }).view('int32').tolist(), [0x3f800000], 'view(dtype) reinterprets bits');
  const f = torch.tensor([1, 2], { dtype: 'float32' });
  assert.equal(f.to('float32').dtype, 'float32');
  assert.equal(f.to('cpu').device, 'cpu');
  assert.equal(f.to({ dtype: 'float64', device: 'cpu' }).dtype, 'float64');
  const copy = f.to('float32', { copy: true });
  copy.fill_(9);
  assert.deepEqual(f.tolist(), [1, 2], 'copy: true copies');
});

test('metadata: shape, size, ndim, numel, stride, contiguity, device, in-place ops return this', () => {
  const a = torch.zeros([2, 3, 4]);
  assert.deepEqual([a.shape, a.size(), a.size(-1), a.ndim, a.dim(), a.numel()], [[2, 3, 4], [2, 3, 4], 4, 3, 3, 24]);
  assert.deepEqual(a.stride(), [12, 4, 1]);
  assert.equal(a.isContiguous(), true);
  const t = a.transpose(0, 2);
  assert.deepEqual([t.shape, t.stride(), t.isContiguous()], [[4, 3, 2], [1, 4, 12], false]);
  assert.equal(t.contiguous().isContiguous(), true);
  assert.equal(a.device, 'cpu');
  assert.equal(a.isCuda, false);
  assert.equal(a.isFloatingPoint(), true);
  assert.equal(String(a), 'Tensor(shape=[2,3,4], dtype=float32, device=cpu)');
  for (const result of [a.add_(1), a.mul_(2), a.zero_(), a.fill_(1), a.clamp_(0, 1), a.normal_(), a.uniform_(), a.bernoulli_(0.5), a.indexPut_([0], 1)]) {
    assert.equal(result, a, 'in-place ops return the same object');
  }
});
