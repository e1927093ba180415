// CUDA: the same operators, autograd, attention, autocast, memory accounting and NCCL on a GPU,
// checked against the CPU. Skipped where the libtorch has no CUDA or no GPU is present.
import test from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '../../src/torch/index.js';
import * as dist from '../../src/torch/distributed.js';
import { SiT } from '../../src/models/index.js';
import { restoreTrainingRng, trainingRngMetadata } from '../../src/train/checkpoint.js';
import { assertClose } from '../helpers.js';

const F = torch.nnFunctional;
const skip = torch.cuda.isAvailable() ? false : 'no CUDA device';

test('conv2d, matmul and their gradients on CUDA equal the CPU (TF32 tolerance)', { skip }, () => {
  torch.manualSeed(0);
  const x = torch.randn([2, 8, 16, 16], { requiresGrad: true });
  const w = torch.randn([16, 8, 3, 3], { requiresGrad: true });
  const xc = x.detach().cuda().requiresGrad_();
  const wc = w.detach().cuda().requiresGrad_();
  const y = F.conv2d(x, w, null, { padding: 1 });
  const yc = F.conv2d(xc, wc, null, { padding: 1 });
  assert.equal(yc.device, 'cuda:0');
  assertClose(yc.cpu(), y, 1e-2, 1e-2, 'conv2d');
  y.square().sum().backward();
  yc.square().sum().backward();
  assertClose(xc.grad!.cpu(), x.grad!, 1e-2, 1e-1, 'input grad');
  assertClose(wc.grad!.cpu(), w.grad!, 1e-2, 1e-1, 'weight grad');
  const a = torch.randn([64, 64], { dtype: 'float64' });
  assertClose(a.cuda().matmul(a.cuda()).cpu(), a.matmul(a), 1e-10, 1e-10, 'float64 matmul');
});

test('scaled dot-product attention takes the fused kernel on CUDA and equals the composed math', { skip }, () => {
  torch.manualSeed(1);
  const [q, k, v] = [0, 1, 2].map(() => torch.randn([2, 4, 32, 16], { dtype: 'float64' })) as [torch.Tensor, torch.Tensor, torch.Tensor];
  const expected = F.softmax(q.matmul(k.transpose(-2, -1)).mul(1 / 4), -1).matmul(v);
  const out = F.scaledDotProductAttention(q.cuda(), k.cuda(), v.cuda());
  assertClose(out.cpu(), expected, 1e-8, 1e-8, 'sdpa');
  assert.equal(torch.hasOp('aten::scaled_dot_product_attention'), true);
});

test('autocast runs CUDA matmuls in bfloat16 and leaves the CPU alone', { skip }, () => {
  const a = torch.randn([8, 8], { device: 'cuda' });
  const [onGpu, onCpu] = torch.autocast(() => [a.matmul(a), a.cpu().matmul(a.cpu())]);
  assert.equal(onGpu.dtype, 'bfloat16');
  assert.equal(onCpu.dtype, 'float32');
  assert.equal(a.matmul(a).dtype, 'float32', 'off again after the block');
});

test('CUDA memory: allocation shows in memoryStats and dispose returns it', { skip }, () => {
  torch.cuda.synchronize();
  const before = torch.cuda.memoryStats().allocated;
  const t = torch.zeros([64, 1024, 1024], { device: 'cuda' });
  assert.ok(torch.cuda.memoryStats().allocated >= before + 256 * 1024 * 1024);
  t.dispose();
  assert.ok(torch.cuda.memoryStats().allocated < before + 1024 * 1024);
});

test('SiT forward on CUDA equals the CPU', { skip }, () => {
  torch.manualSeed(2);
  const model = new SiT({ depth: 2, hiddenSize: 64, patchSize: 2, numHeads: 4, inputSize: 8, inChannels: 4, numClasses: 10 });
  torch.noGrad(() => { for (const p of model.parameters()) p.add_(torch.randnLike(p).mul(0.1)); });
  model.eval();
  const x = torch.randn([3, 4, 8, 8]);
  const t = torch.rand([3]);
  const y = torch.tensor([1, 2, 3]);
  const expected = torch.noGrad(() => model.forward(x, t, y));
  model.to('cuda');
  const out = torch.noGrad(() => model.forward(x.cuda(), t.cuda(), y.cuda()));
  assertClose(out.cpu(), expected, 1e-2, 1e-3, 'SiT');
});

test('NCCL: a one-rank group all-reduces on the GPU', { skip }, () => {
  dist.initProcessGroup({ backend: 'nccl', rank: 0, worldSize: 1, localRank: 0, masterAddr: '127.0.0.1', masterPort: 29555, timeoutMs: 60_000 });
  try {
    const t = torch.ones([4], { device: 'cuda' });
    dist.allReduce(t);
    assert.deepEqual(t.cpu().tolist(), [1, 1, 1, 1]);
  } finally {
    dist.destroyProcessGroup();
  }
});

test('a CUDA generator state replays its draws; training checkpoints gather it over NCCL on the device', { skip }, () => {
  torch.manualSeed(3);
  torch.randn([10], { device: 'cuda' });
  const state = torch.cuda.getRngState('cuda:0');
  const after = torch.randn([6], { device: 'cuda' }).cpu().tolist();
  torch.randn([100], { device: 'cuda' });
  torch.cuda.setRngState(state, 0);
  assert.deepEqual(torch.randn([6], { device: 'cuda' }).cpu().tolist(), after);

  dist.initProcessGroup({ backend: 'nccl', rank: 0, worldSize: 1, localRank: 0, masterAddr: '127.0.0.1', masterPort: 29556, timeoutMs: 60_000 });
  try {
    const place = { distributed: true, rank: 0, worldSize: 1, device: 'cuda:0' };
    const metadata = { step: 4, epoch: 0, args: {}, ...trainingRngMetadata(place) };
    assert.equal(metadata.cuda_rng_ranks?.length, 1);
    const cpuAfter = torch.randn([3]).tolist();
    const cudaAfter = torch.randn([3], { device: 'cuda' }).cpu().tolist();
    torch.manualSeed(99);
    const notes: string[] = [];
    restoreTrainingRng({ path: 'ckpt', groups: {}, metadata }, place, 0, (line) => notes.push(line));
    assert.deepEqual([torch.randn([3]).tolist(), torch.randn([3], { device: 'cuda' }).cpu().tolist()], [cpuAfter, cudaAfter]);
    assert.equal(notes.length, 0, notes.join('\n'));
  } finally {
    dist.destroyProcessGroup();
  }
});
