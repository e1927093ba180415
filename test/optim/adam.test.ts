import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '../../src/torch/index.js';
import { Adam, AdamW, clipGradNorm, type AdamOptions, type OptimizerStateDict } from '../../src/optim/index.js';
import { assertClose, float32Tolerance, loadFixture, maxRelError } from '../helpers.js';

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
