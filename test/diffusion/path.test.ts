import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '../../src/torch/index.js';
import { ICPlan, GVPCPlan, VPCPlan, type DiffusionForm } from '../../src/diffusion/index.js';
import { loadFixture, assertClose } from '../helpers.js';

const fixture = loadFixture('diffusion_transport.json');
const PLANS: Record<string, () => ICPlan> = { Linear: () => new ICPlan(), GVP: () => new GVPCPlan(), VP: () => new VPCPlan() };

for (const c of fixture.paths) {
  test(`${c.name} path: coefficients, SDE terms and conversions equal SiT's (float64)`, () => {
    const plan = PLANS[c.name]!();
    const { t, x, v } = c as Record<string, torch.Tensor>;
    const te = t!.view([-1, 1]);
    const close = (actual: torch.Tensor, expected: torch.Tensor, what: string) =>
      assertClose(actual.expandAs(expected), expected, 1e-6, 1e-9, `${c.name} ${what}`);
    const [alpha, dAlpha] = plan.computeAlphaT(te);
    const [sigma, dSigma] = plan.computeSigmaT(te);
    close(alpha, c.alpha, 'alpha');
    close(dAlpha, c.d_alpha, 'd_alpha');
    close(sigma, c.sigma, 'sigma');
    close(dSigma, c.d_sigma, 'd_sigma');
    close(plan.computeDAlphaAlphaRatioT(te), c.ratio, 'd_alpha / alpha');
    const [drift, diffusion] = plan.computeDrift(x!, t!);
    close(drift, c.drift, 'drift');
    close(diffusion, c.diffusion, 'diffusion');
    for (const [form, expected] of Object.entries(c.forms as Record<string, torch.Tensor>)) {
      close(plan.computeDiffusion(x!, t!, form as DiffusionForm, 0.7), expected, `diffusion form ${form}`);
    }
    close(plan.getScoreFromVelocity(v!, x!, t!), c.score_from_velocity, 'score from velocity');
    close(plan.getNoiseFromVelocity(v!, x!, t!), c.noise_from_velocity, 'noise from velocity');
    close(plan.getVelocityFromScore(v!, x!, t!), c.velocity_from_score, 'velocity from score');
    const { xt, ut } = plan.plan(t!, x!, v!);
    close(xt, c.xt, 'x_t');
    close(ut, c.ut, 'u_t');
  });
}

test('constant diffusion is the norm everywhere; unknown forms are refused by name', () => {
  const x = torch.randn([4, 2, 3]);
  const w = new ICPlan().computeDiffusion(x, torch.rand([4]), 'constant', 0.3);
  assertClose(w.expandAs(x), torch.fullLike(x, 0.3), 0, 0, 'constant');
  assert.throws(() => new ICPlan().computeDiffusion(x, torch.rand([4]), 'cubic' as DiffusionForm), /'cubic'/);
});
