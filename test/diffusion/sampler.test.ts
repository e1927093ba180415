import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '../../src/torch/index.js';
import { Sampler, createTransport } from '../../src/diffusion/index.js';
import { loadFixture, assertClose } from '../helpers.js';
import { tinyMlp } from './tiny-mlp.js';

const fixture = loadFixture('diffusion_sampler.json');

for (const c of fixture.ode) {
  const name = `${c.path_type}/${c.prediction} ${c.method}, ${c.num_steps} points, rtol ${c.rtol}${c.reverse ? ', reverse' : ''}`;
  test(`ODE sampling (${name}) follows SiT + torchdiffeq's trajectory with the same NFE`, () => {
    const model = tinyMlp(fixture.mlp);
    const sample = new Sampler(createTransport({ pathType: c.path_type, prediction: c.prediction }))
      .sampleOde({ samplingMethod: c.method, numSteps: c.num_steps, atol: c.atol, rtol: c.rtol, reverse: c.reverse });
    const { samples, nfe } = sample(c.init, model, { y: c.y });
    assertClose(torch.stack(samples), c.samples, 1e-5, 1e-6, name);
    assert.equal(nfe, c.nfe);
    assert.equal(model.calls, c.nfe);
  });
}

for (const c of fixture.sde) {
  const name = `${c.path_type}/${c.prediction} ${c.method}, ${c.diffusion_form} diffusion, last step ${c.last_step}`;
  test(`SDE sampling (${name}) follows SiT's trajectory under the same seed`, () => {
    const model = tinyMlp(fixture.mlp);
    const sample = new Sampler(createTransport({ pathType: c.path_type, prediction: c.prediction })).sampleSde({
      samplingMethod: c.method, diffusionForm: c.diffusion_form, diffusionNorm: 0.8, lastStep: c.last_step, numSteps: c.num_steps,
    });
    torch.manualSeed(c.seed);
    const { samples, nfe } = sample(c.init, model, { y: c.y });
    assert.equal(samples.length, c.num_steps);
    assertClose(torch.stack(samples), c.samples, 1e-5, 1e-6, name);
    assert.equal(nfe, model.calls);
  });
}
