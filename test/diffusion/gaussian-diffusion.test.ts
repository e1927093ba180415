import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '../../src/torch/index.js';
import { createDiffusion, spaceTimesteps, type CreateDiffusionOptions, type Model } from '../../src/diffusion/index.js';
import { loadFixture, assertClose } from '../helpers.js';

// Written by test/fixtures/make_ddpm.py from DiT's diffusion package.
const fixture = loadFixture('diffusion_ddpm.json');
const F = torch.nnFunctional;

function options(kw: Record<string, unknown>): CreateDiffusionOptions {
  return {
    timestepRespacing: kw.timestep_respacing as string, noiseSchedule: kw.noise_schedule as CreateDiffusionOptions['noiseSchedule'],
    useKl: kw.use_kl as boolean, sigmaSmall: kw.sigma_small as boolean, learnSigma: kw.learn_sigma as boolean,
    predictXstart: kw.predict_xstart as boolean, rescaleLearnedSigmas: kw.rescale_learned_sigmas as boolean,
    diffusionSteps: kw.diffusion_steps as number,
  };
}

/** The fixture's tanh MLP on [flatten(x), t / 1000] plus a class embedding; 2C output channels with learnSigma. */
function tinyMlp(w: Record<string, torch.Tensor>, learnSigma = true): Model & { timesteps: number[][] } {
  const d = w.w1!.size(1) - 1;
  const out = learnSigma ? 2 * d : d;
  const model = (x: torch.Tensor, t: torch.Tensor, kwargs: Record<string, unknown>): torch.Tensor => {
    model.timesteps.push(t.tolist() as number[]);
    const input = torch.cat([x.flatten(1), t.float().div(1000).unsqueeze(1)], 1);
    const h = F.linear(input, w.w1!, w.b1!).add(w.emb!.indexSelect(0, kwargs.y as torch.Tensor)).tanh();
    return F.linear(h, w.w2!.slice(0, 0, out), w.b2!.slice(0, 0, out)).view([x.size(0), -1, ...x.shape.slice(2)]);
  };
  model.timesteps = [] as number[][];
  return model;
}

test('the beta schedules, respaced schedules and posterior constants equal DiT\'s numpy arrays in float64', () => {
  for (const c of fixture.schedules) {
    const d = createDiffusion(options(c.options));
    const what = JSON.stringify(c.options);
    assert.equal(d.numTimesteps, c.num_timesteps, what);
    assert.deepEqual(d.timestepMap, c.timestep_map, what);
    const arrays: [string, Float64Array][] = [
      ['alphas_cumprod', d.alphasCumprod], ['posterior_log_variance_clipped', d.posteriorLogVarianceClipped],
      ['betas', d.betas], ['posterior_mean_coef1', d.posteriorMeanCoef1], ['posterior_mean_coef2', d.posteriorMeanCoef2],
      ['sqrt_recipm1_alphas_cumprod', d.sqrtRecipm1AlphasCumprod],
    ];
    for (const [key, value] of arrays) {
      if (c[key] !== undefined) assertClose(torch.tensor(value, { dtype: 'float64' }), c[key], 1e-12, 0, `${what} ${key}`);
    }
  }
});

test('spaceTimesteps keeps the steps DiT\'s space_timesteps keeps (sections, ddimN, Python rounding)', () => {
  for (const c of fixture.spacings) assert.deepEqual(spaceTimesteps(c.num_timesteps, c.sections), c.steps, `${c.num_timesteps} / ${c.sections}`);
  assert.throws(() => spaceTimesteps(10, '11'), /cannot divide a section of 10 steps into 11/);
  assert.throws(() => spaceTimesteps(1000, 'ddim999'), /cannot create exactly 999 steps/);
});

for (const c of fixture.losses) {
  test(`training losses (${JSON.stringify(c.options)}) and their gradients equal DiT's under the same seed`, () => {
    const d = createDiffusion(options(c.options));
    const w = Object.fromEntries(Object.entries(fixture.mlp as Record<string, torch.Tensor>).map(([k, v]) => [k, v.clone().requiresGrad_()]));
    const model = tinyMlp(w, c.options.learn_sigma ?? true);
    torch.manualSeed(c.seed);
    const terms = d.trainingLosses(model, c.x_start, c.t, { y: c.y });
    assert.deepEqual(Object.keys(terms).sort(), Object.keys(c.terms).sort());
    for (const [key, value] of Object.entries(terms)) assertClose(value!, c.terms[key], 1e-5, 1e-6, `terms.${key}`);
    terms.loss.sum().backward();
    for (const [key, value] of Object.entries(w)) assertClose(value.grad!, c.grads[key], 1e-5, 1e-6, `grad ${key}`);
    // A respaced diffusion still runs the model at the original timesteps.
    assert.deepEqual(model.timesteps[0], (c.t.tolist() as number[]).map((k) => d.timestepMap[k]));
  });
}

for (const c of fixture.samples) {
  const name = `${c.method} ${JSON.stringify(c.options)}, clip ${c.clip_denoised}, eta ${c.eta}`;
  test(`${name} follows DiT's trajectory under the same seed`, () => {
    const d = createDiffusion(options(c.options));
    const model = tinyMlp(fixture.mlp, c.options.learn_sigma ?? true);
    torch.manualSeed(c.seed);
    const loopOptions = { noise: c.noise, clipDenoised: c.clip_denoised, modelKwargs: { y: c.y }, eta: c.eta };
    const steps = [...(c.method === 'ddpm' ? d.pSampleLoopProgressive(model, c.noise.shape, loopOptions) : d.ddimSampleLoopProgressive(model, c.noise.shape, loopOptions))];
    assertClose(torch.stack(steps.map((s) => s.sample)), c.samples, 1e-5, 1e-6, `${name} samples`);
    assertClose(torch.stack(steps.map((s) => s.predXstart)), c.pred_xstart, 1e-5, 1e-6, `${name} predXstart`);
    assert.deepEqual(model.timesteps.map((t) => t[0]), [...d.timestepMap].reverse());
    // The loop returns the last step's sample, drawing the same noise.
    torch.manualSeed(c.seed);
    const final = c.method === 'ddpm' ? d.pSampleLoop(model, c.noise.shape, loopOptions) : d.ddimSampleLoop(model, c.noise.shape, loopOptions);
    assertClose(final, c.samples.select(0, -1), 1e-5, 1e-6, `${name} final`);
  });
}

test('a learned-range diffusion refuses a model that outputs no variance channels', () => {
  const d = createDiffusion({ timestepRespacing: '5' });
  const model = tinyMlp(fixture.mlp, false);
  assert.throws(() => d.pSampleLoop(model, [3, 2, 2, 2], { modelKwargs: { y: torch.tensor([0, 1, 2]) } }), /must output \[3,4,2,2\]/);
});
