import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '../../src/torch/index.js';
import { Adam, AdamW, clipGradNorm, type AdamOptions, type OptimizerStateDict } from '../../src/optim/index.js';
import { assertClose, F32_UNIT_ROUNDOFF, float32Tolerance, loadFixture, maxRelError } from '../helpers.js';

type Tensor = torch.Tensor;
const F = torch.nnFunctional;

interface AdamCase {
  name: string;
  optimizer: 'Adam' | 'AdamW';
  dtype: 'float32' | 'float64';
  groups: Record<string, unknown>[];
  init: Tensor[];
  grads: Tensor[][];
  skip: [number, number];
  final: Tensor[];
  state_dict: OptimizerStateDict;
}

const { cases } = loadFixture('optim_adam.json') as { cases: AdamCase[] };
const TOLERANCE = { float32: 1e-5, float64: 1e-6 };

function camelOptions(options: Record<string, unknown>): Partial<AdamOptions> {
  return Object.fromEntries(Object.entries(options).map(([k, v]) => [k.replace(/_(\w)/g, (_, c: string) => c.toUpperCase()), v]));
}

function makeOptimizer(c: AdamCase, params: Tensor[]): Adam {
  const Optim = c.optimizer === 'AdamW' ? AdamW : Adam;
  if (c.groups.length === 1) return new Optim(params, camelOptions(c.groups[0]!));
  return new Optim(c.groups.map((o, i) => ({ params: [params[i]!], ...camelOptions(o) })));
}

/** Runs the fixture's gradient sequence (the skipped gradient left null) through our optimizer. */
function run(c: AdamCase): { params: Tensor[]; opt: Adam } {
  const params = c.init.map((t) => t.clone().requiresGrad_());
  const opt = makeOptimizer(c, params);
  c.grads.forEach((grads, step) => {
    params.forEach((p, i) => { p.grad = step === c.skip[0] && i === c.skip[1] ? null : grads[i]!.clone(); });
    opt.step();
  });
  return { params, opt };
}

function assertStateClose(actual: OptimizerStateDict, expected: OptimizerStateDict, tol: number, what: string): void {
  assert.deepEqual(Object.keys(actual.state), Object.keys(expected.state), `${what}: state indices`);
  for (const [id, entry] of Object.entries(expected.state)) {
    const ours = actual.state[id]!;
    assert.deepEqual(Object.keys(ours), Object.keys(entry), `${what}: state[${id}] keys`);
    for (const [key, value] of Object.entries(entry)) {
      const mine = ours[key] as Tensor;
      assert.equal(mine.dtype, (value as Tensor).dtype, `${what}: state[${id}].${key} dtype`);
      const err = maxRelError(mine, value as Tensor);
      assert.ok(err <= tol, `${what}: state[${id}].${key} relative error ${err}`);
    }
  }
}

for (const c of cases) {
  test(`${c.name} (${c.dtype}): 10 steps match torch.optim.${c.optimizer} (params and state)`, () => {
    const { params, opt } = run(c);
    const tol = TOLERANCE[c.dtype];
    params.forEach((p, i) => {
      const err = maxRelError(p.detach(), c.final[i]!);
      assert.ok(err <= tol, `param ${i}: relative error ${err}`);
    });
    const sd = opt.stateDict();
    assertStateClose(sd, c.state_dict, tol, c.name);
    // The skipped gradient leaves parameter 1 one step behind, as PyTorch's per-parameter 'step'.
    assert.equal((sd.state['1']!.step as Tensor).item(), c.grads.length - 1);
    // Same group keys and values as PyTorch, minus its implementation switches.
    const torchGroups = c.state_dict.param_groups.map((g) => Object.fromEntries(
      Object.entries(g).filter(([k]) => !['foreach', 'capturable', 'differentiable', 'fused'].includes(k))));
    assert.deepEqual(sd.param_groups.map((g) => ({ ...g })), torchGroups);
  });
}

test('loadStateDict takes a PyTorch state_dict (with its foreach/capturable keys) and reproduces it', () => {
  for (const c of cases.filter((x) => x.dtype === 'float64')) {
    const params = c.final.map((t) => t.clone().requiresGrad_());
    const opt = makeOptimizer({ ...c, groups: c.groups.map(() => ({})) }, params);
    opt.loadStateDict(c.state_dict);
    assertStateClose(opt.stateDict(), c.state_dict, 0, `${c.name} reloaded`);
    assert.equal(opt.paramGroups[0]!.lr, c.state_dict.param_groups[0]!.lr);
  }
});

test('AdamW and Adam take PyTorch defaults (weight decay 1e-2 and 0)', () => {
  const p = torch.zeros([2]).requiresGrad_();
  assert.deepEqual(new AdamW([p]).defaults, { lr: 1e-3, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 1e-2, amsgrad: false, maximize: false });
  assert.equal(new Adam([p]).defaults.weightDecay, 0);
});

interface MlpCase { x: Tensor; y: Tensor; init: Tensor[]; losses: number[]; norms: number[]; final: Tensor[] }
const mlp = loadFixture('optim_mlp.json') as Record<'float32' | 'float64', MlpCase>;
// libtorch's own tanh GELU, not F.gelu's fused kernel: Adam turns last-bit differences of tiny
// gradients into whole steps, and this test is about the optimizer (F.gelu has its own parity test).
const libtorchGelu = torch.op('aten::gelu');

for (const dtype of ['float32', 'float64'] as const) {
  test(`a 2-layer MLP trained 20 steps with AdamW + clipGradNorm(1.0) matches PyTorch (${dtype}): losses, norms, weights`, () => {
    const c = mlp[dtype];
    const tol = TOLERANCE[dtype];
    const params = c.init.map((t) => t.clone().requiresGrad_());
    const [w1, b1, w2, b2] = params as [Tensor, Tensor, Tensor, Tensor];
    const opt = new AdamW(params, { lr: 0.02, weightDecay: 0.01 });
    const losses: number[] = [];
    const norms: number[] = [];
    for (let step = 0; step < 20; step++) {
      torch.scope(() => {
        opt.zeroGrad();
        const loss = F.mseLoss(F.linear(libtorchGelu(F.linear(c.x, w1, b1), 'tanh'), w2, b2), c.y);
        loss.backward();
        norms.push(clipGradNorm(params, 1.0));
        opt.step();
        losses.push(loss.item());
      });
    }
    const rel = (a: number, b: number): number => Math.abs(a - b) / Math.abs(b);
    losses.forEach((l, i) => assert.ok(rel(l, c.losses[i]!) <= tol, `loss ${i}: ${l} vs ${c.losses[i]}`));
    norms.forEach((n, i) => assert.ok(rel(n, c.norms[i]!) <= tol, `grad norm ${i}: ${n} vs ${c.norms[i]}`));
    assert.ok(c.norms.some((n) => n > 1) && c.norms.some((n) => n < 1), 'the fixture clips in some steps and not in others');
    // Each step's gradient carries the summation-order error of its matmuls (float32Tolerance over
    // the 32 hidden units, 2 layers, twice for backward); Adam's update lr * m / sqrt(v) is at most
    // about lr per element, so each step moves a weight by at most lr times that relative error,
    // and the 20 steps add up. Elementwise relative error would blow this up on weights near 0.
    const atol = dtype === 'float32' ? 20 * 0.02 * float32Tolerance(32, 4) : tol * 1e-6;
    params.forEach((p, i) => assertClose(p.detach(), c.final[i]!, tol, atol, `param ${i}`));
  });
}

// src/optim/adam.ts sends contiguous float32 CPU parameters through the addon's one-pass kernel
// (native/src/optim.cc) and other layouts through libtorch's ops, so a parameter and its transposed
// copy (a non-contiguous view of the same values) take the two paths with the same numbers.
test('the one-pass kernel gives what the op-by-op path gives (AdamW with decay; Adam with L2, maximize; 20 steps, a tail)', () => {
  const [rows, cols] = [37, 29]; // 1,073 elements: 67 vectors of 16 and a partial one
  const cases = [
    (p: Tensor[]): Adam => new AdamW(p, { lr: 0.01, weightDecay: 0.1, eps: 1e-3 }),
    (p: Tensor[]): Adam => new Adam(p, { lr: 0.01, weightDecay: 0.2, maximize: true, betas: [0.8, 0.99] }),
  ];
  const steps = 20;
  for (const make of cases) {
    torch.manualSeed(5);
    const init = torch.randn([rows, cols]);
    const fusedParam = init.clone().requiresGrad_();
    const opsParam = init.t().contiguous().t().requiresGrad_();
    assert.ok(!opsParam.isContiguous());
    const fused = make([fusedParam]);
    const ops = make([opsParam]);
    for (let step = 0; step < steps; step++) {
      // Gradients of two scales, so that the second moment spans several binades and eps matters.
      const grad = torch.randn([rows, cols]).mul(step % 3 === 0 ? 1e-3 : 1);
      fusedParam.grad = grad.clone();
      opsParam.grad = grad.t().contiguous().t();
      fused.step();
      ops.step();
    }
    const name = fused.constructor.name;
    // Both run the same float32 operations; libtorch may contract a multiply-add that the kernel
    // rounds twice, or the other way (its kernels differ by CPU), a rounding (2^-24 relative) of a
    // moment per step; the moments forget at rate beta, so 4 roundings per step bound them. The
    // parameter moves by lr * m / denom <= about lr per step, each step adding at most a rounding
    // of the parameter (|p| < 8: 2^-21) and 8 roundings of that move.
    const fusedState = fused.state.get(fusedParam)!;
    const opsState = ops.state.get(opsParam)!;
    // exp_avg's terms cancel where it is near 0, so its bound is relative to its largest value.
    const momentScale = opsState.exp_avg.abs().max().item();
    assertClose(fusedState.exp_avg, opsState.exp_avg, 0, steps * 4 * F32_UNIT_ROUNDOFF * momentScale, `${name} exp_avg`);
    assertClose(fusedState.exp_avg_sq, opsState.exp_avg_sq, steps * 4 * F32_UNIT_ROUNDOFF, 0, `${name} exp_avg_sq`);
    assertClose(fusedParam.detach(), opsParam.detach(), 0, steps * (2 ** -21 + 8 * F32_UNIT_ROUNDOFF * 0.01), `${name} param`);
    // The kernel ran where the CPU has AVX-512, and took only the contiguous parameter.
    if (torch.native.fusedActivations()) {
      const { exp_avg: m, exp_avg_sq: v } = fusedState;
      const scalars = { paramFactor: 1, l2: 0, maximize: false, beta1: 0.9, beta2: 0.999, stepSize: 0, biasCorrection2Sqrt: 1, eps: 1 };
      assert.equal(torch.fusedAdamStep(fusedParam.detach(), grad(fusedParam), m, v, scalars), true);
      assert.equal(torch.fusedAdamStep(opsParam.detach(), grad(opsParam), opsState.exp_avg, opsState.exp_avg_sq, scalars), false);
    }
  }
});

function grad(param: Tensor): Tensor {
  if (param.grad === null) throw new Error('the test set a gradient');
  return param.grad;
}
