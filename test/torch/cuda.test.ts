import test from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '../../src/torch/index.js';

const state = (): [boolean, number] => [torch.native.isAutocastEnabled('cuda'), torch.native.autocastDtype('cuda')];

test('autocast sets CUDA autocast state and restores the outer state, nested and on throw', () => {
  const outside = state();
  torch.autocast(() => {
    assert.deepEqual(state(), [true, 15], 'bfloat16 by default');
    torch.autocast(() => assert.deepEqual(state(), [true, 5]), { dtype: 'float16' });
    assert.deepEqual(state(), [true, 15], 'inner autocast restored the outer dtype');
    torch.autocast(() => assert.equal(state()[0], false), { enabled: false });
    assert.throws(() => torch.autocast(() => { throw new Error('boom'); }, { dtype: 'float16' }), /boom/);
    assert.deepEqual(state(), [true, 15], 'restored after an exception');
  });
  assert.deepEqual(state(), outside);
});

test('CUDA helpers answer without a GPU and threads are settable', () => {
  if (!torch.cuda.isAvailable()) {
    assert.equal(torch.cuda.deviceCount(), 0);
    assert.deepEqual(torch.cuda.memoryStats(), { allocated: 0, reserved: 0, maxAllocated: 0 });
  } else {
    const before = torch.cuda.memoryStats().allocated;
    const t = torch.ones([1024, 1024], { device: 'cuda' });
    assert.ok(torch.cuda.memoryStats().allocated >= before + 4 * 1024 * 1024);
    t.dispose();
  }
  const threads = torch.getNumThreads();
  torch.setNumThreads(2);
  assert.equal(torch.getNumThreads(), 2);
  torch.setNumThreads(threads);
  assert.throws(() => torch.setNumThreads(0), /positive integer/);
});
