// Tensor handles: the addon's table of live tensors, scopes, finalizers and `t.data =`.
import test from 'node:test';
import assert from 'node:assert/strict';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import * as torch from '../../src/torch/index.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
const live = (): number => torch.native.liveTensors();

test('a scope releases every handle it created except the returned and kept ones', () => {
  const before = live();
  const a = torch.ones([4]);
  const [kept, returned] = torch.scope(() => {
    for (let i = 0; i < 50; i++) a.mul(i).add(1);
    const k = torch.keep(a.add(2));
    return [k, a.add(3)];
  });
  assert.equal(live(), before + 3, 'a, the kept tensor and the returned tensor stay live');
  assert.deepEqual(returned.tolist(), [4, 4, 4, 4]);
  kept.dispose();
  returned.dispose();
  a.dispose();
  assert.equal(live(), before);
});

test('tensors outside scopes are released when garbage collected, even in a synchronous loop', () => {
  gc();
  const before = live();
  for (let i = 0; i < 200; i++) torch.zeros([1024]).add(i);
  assert.ok(live() > before, 'the loop left unreferenced tensors behind');
  gc();
  assert.equal(live(), before, 'the GC finalizers released them');
});

test('a handle reused after dispose is refused, not aliased to the tensor now in its slot', () => {
  const a = torch.ones([2]);
  const stale = a._handle;
  a.dispose();
  const b = torch.zeros([2]);
  assert.throws(() => torch.native.shape(stale), /used after dispose/);
  assert.deepEqual(b.tolist(), [0, 0]);
  assert.throws(() => a.add(1), /aten::add\.Scalar\(self\): tensor used after dispose\(\)/);
});

test('t.data = other keeps the object, requiresGrad and autograd identity while taking the new storage and dtype', () => {
  const p = torch.ones([3], { requiresGrad: true });
  p.data = torch.full([3], 2, { dtype: 'float64' });
  assert.equal(p.dtype, 'float64');
  assert.equal(p.requiresGrad, true);
  assert.equal(p.isLeaf, true);
  p.mul(p).sum().backward();
  assert.deepEqual(p.grad!.tolist(), [4, 4, 4]);
  assert.deepEqual(p.data.tolist(), [2, 2, 2]);
  assert.equal(p.data.requiresGrad, false);
});
