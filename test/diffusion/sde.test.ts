import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '../../src/torch/index.js';
import { Sampler, createTransport, sdeint, type PathType, type SdeSamplerOptions } from '../../src/diffusion/index.js';
import { gaussianVelocity } from './gaussian.js';

const [M, S] = [1.5, 0.5];
const N = 20000;

const CASES: [PathType, SdeSamplerOptions][] = [
  ['Linear', { samplingMethod: 'Euler', diffusionForm: 'sigma', lastStep: 'Mean' }],
  ['Linear', { samplingMethod: 'Heun', diffusionForm: 'constant', lastStep: 'Tweedie' }],
  ['GVP', { samplingMethod: 'Euler', diffusionForm: 'linear', lastStep: 'Euler' }],
  // VP's 'Mean' jump over the last 0.04 shrinks the variance by about a fifth (as in SiT), so
  // this case integrates to 1 - sampleEps instead.
  ['VP', { samplingMethod: 'Euler', diffusionForm: 'SBDM', lastStep: null }],
];

for (const [pathType, options] of CASES) {
  test(`SDE ${options.samplingMethod} (${pathType}, ${options.diffusionForm}, last step ${options.lastStep}) samples N(m, s^2) from the exact velocity`, () => {
    const transport = createTransport({ pathType });
    const model = gaussianVelocity(transport.pathSampler, M, S);
    torch.manualSeed(3);
    const init = torch.randn([N, 1]);
    const { samples, nfe } = new Sampler(transport).sampleSde({ ...options, numSteps: 250 })(init, model);
    const x = samples[samples.length - 1]!.double();
    const [mean, variance] = [x.mean().item(), x.var().item()];
    // 5 standard errors of the sample mean and variance, plus 0.02 for the discretization.
    assert.ok(Math.abs(mean - M) < 5 * S / Math.sqrt(N) + 0.02, `mean ${mean}, expected ${M}`);
    assert.ok(Math.abs(variance - S * S) < 5 * S * S * Math.sqrt(2 / N) + 0.02, `variance ${variance}, expected ${S * S}`);
    const perStep = options.samplingMethod === 'Heun' ? 2 : 1;
    assert.equal(nfe, 249 * perStep + (options.lastStep === null ? 0 : 1));
  });
}

test('sdeint takes numSteps - 1 steps of Euler-Maruyama with sqrt(2 w) dW noise', () => {
  // dx = -x dt + sqrt(2) dW (w = 1) is the Ornstein-Uhlenbeck process with stationary law N(0, 1).
  torch.manualSeed(4);
  const xs = sdeint((x) => x.neg(), (x) => torch.onesLike(x), torch.full([N, 1], 3), { t0: 0, t1: 5, numSteps: 201, method: 'Euler' });
  assert.equal(xs.length, 200);
  const x = xs[xs.length - 1]!.double();
  assert.ok(Math.abs(x.mean().item()) < 0.05 && Math.abs(x.var().item() - 1) < 0.06, `mean ${x.mean().item()}, variance ${x.var().item()}`);
  assert.throws(() => sdeint((x) => x, (x) => x, torch.ones([1]), { t0: 1, t1: 0, numSteps: 3, method: 'Euler' }), /forward in time/);
});
