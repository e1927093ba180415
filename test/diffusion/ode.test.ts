import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '../../src/torch/index.js';
import { ICPlan, GVPCPlan, odeint, timeGrid, type OdeMethod, type OdeOptions } from '../../src/diffusion/index.js';
import { gaussianVelocity, logLogSlope } from './gaussian.js';

const [M, S] = [1.5, 0.5];

/** Transports float64 noise with the exact Gaussian field; returns the error at t = 1 and the NFE. */
function transport(plan: ICPlan, grid: number[], options: OdeOptions): { error: number; nfe: number } {
  torch.manualSeed(0);
  const z = torch.randn([64, 3], { dtype: 'float64' });
  const field = gaussianVelocity(plan, M, S);
  let nfe = 0;
  const ys = odeint((t, y) => { nfe++; return field(y, torch.full([y.size(0)], t, { dtype: 'float64' }), {}); }, z, grid, options);
  const error = ys[ys.length - 1]!.sub(z.mul(S).add(M)).abs().max().item();
  return { error, nfe };
}

const STEPS = [16, 32, 64, 128];
const ORDERS: [OdeMethod, number, number, number][] = [['euler', 1, 0.8, 1.2], ['heun2', 2, 1.8, 2.3]];

for (const [name, plan] of [['Linear', new ICPlan()], ['GVP', new GVPCPlan()]] as const) {
  for (const [method, expected, low, high] of ORDERS) {
    test(`${method} converges at order ${expected} on the exact ${name} flow of Gaussian data`, () => {
      const errors = STEPS.map((n) => transport(plan, timeGrid(0, 1, n + 1), { method }).error);
      const order = -logLogSlope(STEPS, errors);
      assert.ok(order > low && order < high, `${method} on ${name}: observed order ${order.toFixed(3)} (errors ${errors.map((e) => e.toExponential(2))})`);
    });
  }

  test(`dopri5 reaches its tolerance on the ${name} flow in fewer evaluations than a fine Euler`, () => {
    const defaults = transport(plan, [0, 1], { method: 'dopri5', atol: 1e-6, rtol: 1e-3 });
    assert.ok(defaults.error < 1e-2 && defaults.nfe < 50, `SiT's defaults: error ${defaults.error} in ${defaults.nfe} NFE`);
    const tight = transport(plan, [0, 1], { method: 'dopri5', atol: 1e-8, rtol: 1e-5 });
    const euler = transport(plan, timeGrid(0, 1, 1001), { method: 'euler' });
    assert.ok(tight.error < 1e-4 && tight.nfe < 100, `rtol 1e-5: error ${tight.error} in ${tight.nfe} NFE`);
    assert.ok(euler.error > 10 * tight.error, `Euler, 1000 NFE: error ${euler.error}`);
  });
}

test('a decreasing grid integrates backwards: data back to its noise', () => {
  torch.manualSeed(1);
  const z = torch.randn([32, 2], { dtype: 'float64' });
  const field = gaussianVelocity(new ICPlan(), M, S);
  const f = (t: number, y: torch.Tensor) => field(y, torch.full([y.size(0)], t, { dtype: 'float64' }), {});
  for (const [method, tolerance] of [['heun2', 1e-3], ['dopri5', 1e-5]] as const) {
    const ys = odeint(f, z.mul(S).add(M), timeGrid(1, 0, 65), { method, atol: 1e-9, rtol: 1e-7 });
    const error = ys[ys.length - 1]!.sub(z).abs().max().item();
    assert.ok(error < tolerance, `${method}: reverse error ${error}`);
  }
});

test('odeint returns the state at every grid time and refuses bad grids and methods', () => {
  const y0 = torch.ones([2, 2]);
  const ys = odeint((_t, y) => y.neg(), y0, [0, 0.5, 1], { method: 'dopri5', atol: 1e-8, rtol: 1e-6 });
  assert.equal(ys.length, 3);
  assert.equal(ys[0], y0);
  assert.ok(Math.abs(ys[1]!.mean().item() - Math.exp(-0.5)) < 1e-5 && Math.abs(ys[2]!.mean().item() - Math.exp(-1)) < 1e-5);
  assert.throws(() => odeint((_t, y) => y, y0, [0, 1, 0.5]), /strictly increasing or decreasing/);
  assert.throws(() => odeint((_t, y) => y, y0, [0]), /at least 2 points/);
  assert.throws(() => odeint((_t, y) => y, y0, [0, 1], { method: 'rk45' as OdeMethod }), /unknown method 'rk45'/);
});
