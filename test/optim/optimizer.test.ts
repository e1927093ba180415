import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '../../src/torch/index.js';
import {
  Adam, AdamW, EMA, WarmupCosineLR, clipGradNorm, flattenStateDict, unflattenStateDict, type OptimizerStateDict,
} from '../../src/optim/index.js';

type Tensor = torch.Tensor;
const F = torch.nnFunctional;

// A small tanh MLP trained with AdamW (amsgrad), gradient clipping, a warm-up + cosine schedule
// and an EMA: everything a checkpoint must carry to resume exactly.
interface Run { params: Tensor[]; ema: Tensor[]; opt: AdamW; sched: WarmupCosineLR; averager: EMA; losses: number[] }

function initialWeights(): Record<string, Tensor> {
  torch.manualSeed(0);
  return { w1: torch.randn([16, 4]).mul(0.5), b1: torch.zeros([16]), w2: torch.randn([2, 16]).mul(0.5), b2: torch.zeros([2]) };
}

function newRun(model: Record<string, Tensor>, ema: Record<string, Tensor>): Run {
  const names = ['w1', 'b1', 'w2', 'b2'];
  const params = names.map((n) => model[n]!.clone().requiresGrad_());
  const emaTensors = names.map((n) => ema[n]!.clone());
  const opt = new AdamW(params, { lr: 0.05, weightDecay: 0.1, amsgrad: true });
  const sched = new WarmupCosineLR(opt, { warmupSteps: 3, totalSteps: 10, minLr: 1e-3 });
  return { params, ema: emaTensors, opt, sched, averager: new EMA(emaTensors, params, { decay: 0.9 }), losses: [] };
}

function train(run: Run, from: number, to: number): void {
  const [w1, b1, w2, b2] = run.params as [Tensor, Tensor, Tensor, Tensor];
  for (let step = from; step < to; step++) {
    torch.scope(() => {
      torch.manualSeed(100 + step);
      const x = torch.randn([8, 4]);
      const y = torch.randn([8, 2]);
      run.opt.zeroGrad();
      const loss = F.mseLoss(F.linear(F.linear(x, w1, b1).tanh(), w2, b2), y);
      loss.backward();
      clipGradNorm(run.params, 0.5);
      run.opt.step();
      run.sched.step();
      run.averager.update();
      run.losses.push(loss.item());
    });
  }
}

/** What writing and reading a safetensors file does: fresh tensors from the bytes, JSON metadata. */
function throughFile(tensors: Record<string, Tensor>, metadata: unknown): [Record<string, Tensor>, unknown] {
  const copied = Object.fromEntries(Object.entries(tensors).map(([k, t]) => [k, torch.fromArray(t.toArray(), t.shape, t.dtype)]));
  return [copied, JSON.parse(JSON.stringify(metadata))];
}

test('save at step 5 -> load into fresh optimizer/scheduler/EMA -> continue: bit-identical to an uninterrupted run', () => {
  const init = initialWeights();
  const whole = newRun(init, init);
  train(whole, 0, 10);

  const first = newRun(init, init);
  train(first, 0, 5);
  const names = ['w1', 'b1', 'w2', 'b2'];
  const { tensors, metadata } = flattenStateDict(first.opt.stateDict());
  assert.ok('opt.state.0.exp_avg' in tensors && 'opt.state.3.max_exp_avg_sq' in tensors && 'opt.state.0.step' in tensors);
  const all: Record<string, Tensor> = { ...tensors };
  names.forEach((n, i) => { all[`model.${n}`] = first.params[i]!.detach(); all[`ema.${n}`] = first.ema[i]!; });
  const [file, header] = throughFile(all, { opt: metadata, sched: first.sched.stateDict() });

  const pick = (prefix: string): Record<string, Tensor> => Object.fromEntries(names.map((n) => [n, file[`${prefix}.${n}`]!]));
  const resumed = newRun(pick('model'), pick('ema'));
  const { opt, sched } = header as { opt: unknown; sched: unknown };
  resumed.opt.loadStateDict(unflattenStateDict(file, opt));
  resumed.sched.loadStateDict(sched);
  resumed.losses.push(...first.losses);
  train(resumed, 5, 10);

  assert.deepEqual(resumed.losses, whole.losses);
  assert.deepEqual(resumed.sched.getLastLr(), whole.sched.getLastLr());
  resumed.params.forEach((p, i) => assert.deepEqual(p.detach().toArray(), whole.params[i]!.detach().toArray(), `param ${names[i]}`));
  resumed.ema.forEach((e, i) => assert.deepEqual(e.toArray(), whole.ema[i]!.toArray(), `ema ${names[i]}`));
  const a = resumed.opt.stateDict();
  const b = whole.opt.stateDict();
  assert.deepEqual(a.param_groups, b.param_groups);
  for (const [id, entry] of Object.entries(b.state)) {
    for (const [key, value] of Object.entries(entry)) {
      assert.deepEqual((a.state[id]![key] as Tensor).toArray(), (value as Tensor).toArray(), `state[${id}].${key}`);
    }
  }
});

test('stateDict has PyTorch structure: state by index with a float32 step, snake_case groups with initial_lr', () => {
  const p = torch.ones([3]).requiresGrad_();
  const q = torch.ones([2]).requiresGrad_();
  const opt = new AdamW([{ params: [p] }, { params: [q], lr: 0.5, weightDecay: 0 }]);
  new WarmupCosineLR(opt, { totalSteps: 4 });
  p.grad = torch.ones([3]);
  opt.step();
  const sd = opt.stateDict();
  assert.deepEqual(Object.keys(sd.state), ['0']);
  assert.deepEqual(Object.keys(sd.state['0']!), ['step', 'exp_avg', 'exp_avg_sq']);
  const step = sd.state['0']!.step as Tensor;
  assert.deepEqual([step.shape, step.dtype, step.item()], [[], 'float32', 1]);
  assert.deepEqual(sd.param_groups[1], {
    lr: 0.5, betas: [0.9, 0.999], eps: 1e-8, weight_decay: 0, amsgrad: false, maximize: false, initial_lr: 0.5, params: [1],
  });
});

function trainedAdam(amsgrad = false): { opt: Adam; sd: OptimizerStateDict } {
  const p = torch.ones([3]).requiresGrad_();
  const opt = new Adam([p], { amsgrad });
  p.grad = torch.tensor([1, 2, 3], { dtype: 'float32' });
  opt.step();
  return { opt, sd: opt.stateDict() };
}

test('loadStateDict refuses mismatched state dicts with errors naming the entry, and then changes nothing', () => {
  const { sd } = trainedAdam();
  const { opt, sd: before } = trainedAdam();
  const group = sd.param_groups[0]!;
  const bad: [string, OptimizerStateDict, RegExp][] = [
    ['group count', { ...sd, param_groups: [group, group] }, /has 2 param groups, this optimizer has 1/],
    ['param count', { ...sd, param_groups: [{ ...group, params: [0, 1] }] }, /param_groups\[0\] has 2 params, this optimizer's group 0 has 1/],
    ['shape', { ...sd, state: { 0: { ...sd.state['0']!, exp_avg: torch.zeros([2, 2]) } } }, /state\[0\]\.exp_avg has shape \[2,2\], its parameter has shape \[3\]/],
    ['missing key', { ...sd, param_groups: [{ ...group, amsgrad: true }] }, /state\[0\] has missing keys \[max_exp_avg_sq\]/],
    ['unknown key', { ...sd, param_groups: [{ ...group, momentum: 0.9 }] }, /unknown key 'momentum' in param_groups\[0\]/],
    ['option kind', { ...sd, param_groups: [{ ...group, betas: [0.9] }] }, /param_groups\[0\]\.betas is \[0\.9\], expected a value like \[0\.9,0\.999\]/],
    ['option range', { ...sd, param_groups: [{ ...group, lr: -1 }] }, /invalid lr -1 in param_groups\[0\]/],
    ['AdamW state into Adam', { ...sd, param_groups: [{ ...group, decoupled_weight_decay: true }] }, /decoupled_weight_decay is true, but Adam has false/],
    ['unknown index', { ...sd, state: { 7: sd.state['0']! } }, /state '7' belongs to no parameter/],
  ];
  for (const [what, dict, message] of bad) assert.throws(() => opt.loadStateDict(dict), message, what);
  const after = opt.stateDict();
  assert.deepEqual(after.param_groups, before.param_groups);
  assert.deepEqual((after.state['0']!.exp_avg as Tensor).toArray(), (before.state['0']!.exp_avg as Tensor).toArray());
});

test('loadStateDict copies the tensors: later steps never write into the loaded dict', () => {
  const { sd } = trainedAdam(true);
  const saved = (sd.state['0']!.exp_avg as Tensor).clone();
  const p = torch.ones([3], { dtype: 'float64' }).requiresGrad_();
  const opt = new Adam([p], { amsgrad: true });
  opt.loadStateDict(sd);
  assert.equal(opt.state.get(p)!.exp_avg.dtype, 'float64', 'state is cast to the parameter dtype');
  p.grad = torch.ones([3], { dtype: 'float64' });
  opt.step();
  assert.deepEqual((sd.state['0']!.exp_avg as Tensor).toArray(), saved.toArray());
  assert.equal(opt.state.get(p)!.step, 2);
});

test('unflattenStateDict validates the metadata and the tensor names', () => {
  assert.throws(() => unflattenStateDict({}, { param_groups: [{ params: [-1] }], state: {} }), /bad optimizer metadata at 'param_groups\.0\.params\.0'/);
  assert.throws(() => unflattenStateDict({}, { state: {} }), /bad optimizer metadata at 'param_groups'/);
  assert.throws(() => unflattenStateDict({ 'opt.exp_avg': torch.zeros([1]) }, { param_groups: [], state: {} }), /tensor 'opt\.exp_avg' is not of the form opt\.state\.<index>\.<key>/);
  const sd = unflattenStateDict({ 'model.w': torch.zeros([1]), 'opt.state.0.exp_avg': torch.zeros([1]) }, { param_groups: [], state: { 0: { step: 3 } } });
  assert.deepEqual(Object.keys(sd.state['0']!), ['step', 'exp_avg']);
});

test('step skips parameters without a gradient; zeroGrad sets grads to null or zeroes them', () => {
  const p = torch.ones([2]).requiresGrad_();
  const q = torch.ones([2]).requiresGrad_();
  const opt = new AdamW([p, q]);
  p.grad = torch.ones([2]);
  opt.step();
  assert.equal(opt.state.has(q), false);
  assert.deepEqual(q.detach().tolist(), [1, 1]);
  opt.zeroGrad(false);
  assert.deepEqual(p.grad!.tolist(), [0, 0]);
  opt.zeroGrad();
  assert.equal(p.grad, null);
});

test('optimizer state created inside torch.scope survives it', () => {
  const p = torch.ones([2]).requiresGrad_();
  const opt = new Adam([p]);
  torch.scope(() => {
    p.grad = torch.ones([2]);
    opt.step();
  });
  const state = opt.state.get(p)!;
  assert.equal(state.exp_avg.isDisposed || state.exp_avg_sq.isDisposed, false);
  torch.scope(() => opt.step());
  assert.equal(state.step, 2);
});

test('constructors refuse bad parameter lists and options', () => {
  const p = torch.ones([2]).requiresGrad_();
  assert.throws(() => new AdamW([]), /AdamW: got an empty parameter list/);
  assert.throws(() => new AdamW([p.mul(2)]), /param group 0 params\[0\] is not a leaf tensor/);
  assert.throws(() => new AdamW([{ params: [p] }, { params: [p] }]), /param group 1 params\[0\] appears in more than one place/);
  assert.throws(() => new AdamW([{ params: [p], weight_decay: 0 } as never]), /AdamW: param group 0: unknown option 'weight_decay'/);
  assert.throws(() => new AdamW([p], { weight_decay: 0 } as never), /AdamW: unknown option 'weight_decay' \(options: lr, betas/);
  assert.equal(new AdamW([p], { lr: undefined, weightDecay: undefined }).paramGroups[0]!.weightDecay, 1e-2, 'undefined options take the defaults');
  assert.throws(() => new Adam([p], { betas: [0.9, 1] }), /invalid betas\[1\] 1 in param group 0/);
});
