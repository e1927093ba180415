import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '../../src/torch/index.js';
import { createTransport, type IntervalOptions, type LossWeight, type PathType, type Prediction } from '../../src/diffusion/index.js';
import { loadFixture, assertClose } from '../helpers.js';
import { tinyMlp } from './tiny-mlp.js';

const fixture = loadFixture('diffusion_transport.json');

test("checkInterval equals SiT's check_interval for every path, prediction and sampler setting", () => {
  for (const c of fixture.intervals) {
    const o = c.options as Record<string, unknown>;
    const options: IntervalOptions = {
      eval: o.eval as boolean | undefined, reverse: o.reverse as boolean | undefined, sde: o.sde as boolean | undefined,
      diffusionForm: o.diffusion_form as IntervalOptions['diffusionForm'], lastStepSize: o.last_step_size as number | undefined,
    };
    const [t0, t1] = createTransport({ pathType: c.path_type, prediction: c.prediction }).checkInterval(options);
    const what = `${c.path_type}/${c.prediction} ${JSON.stringify(o)}`;
    assert.ok(Math.abs(t0 - c.t0) < 1e-15 && Math.abs(t1 - c.t1) < 1e-15, `${what}: [${t0}, ${t1}] != [${c.t0}, ${c.t1}]`);
  }
});

test('createTransport takes the reference epsilons unless given, and refuses unknown names', () => {
  const eps = (o: Parameters<typeof createTransport>[0]) => {
    const { trainEps, sampleEps } = createTransport(o).config;
    return [trainEps, sampleEps];
  };
  assert.deepEqual(eps({}), [0, 0]);
  assert.deepEqual(eps({ pathType: 'GVP' }), [0, 0]);
  assert.deepEqual(eps({ pathType: 'VP' }), [1e-5, 1e-3]);
  assert.deepEqual(eps({ prediction: 'noise' }), [1e-3, 1e-3]);
  assert.deepEqual(eps({ pathType: 'VP', trainEps: 1e-4 }), [1e-4, 1e-3]);
  assert.throws(() => createTransport({ pathType: 'Cosine' as PathType }), /pathType .* 'Cosine'/);
  assert.throws(() => createTransport({ prediction: 'x0' as Prediction }), /prediction .* 'x0'/);
});

for (const c of fixture.losses) {
  const name = `${c.path_type}/${c.prediction}/${c.loss_weight ?? 'none'}`;
  test(`training losses (${name}) equal SiT's per sample, with the same seeded noise and times`, () => {
    const model = tinyMlp(fixture.mlp);
    const transport = createTransport({ pathType: c.path_type, prediction: c.prediction, lossWeight: c.loss_weight as LossWeight });
    torch.manualSeed(c.seed);
    const { loss, pred } = transport.trainingLosses(model, c.x1, { y: c.y });
    assertClose(pred, c.pred, 1e-5, 1e-6, `${name} pred`);
    assertClose(loss, c.loss, 1e-5, 1e-6, `${name} loss`);
    assert.deepEqual(loss.shape, [c.x1.size(0)]);
  });
}

test('training losses carry gradients to the model and reject outputs of the wrong shape', () => {
  const w = torch.randn([8, 8], { requiresGrad: true });
  const transport = createTransport();
  const { loss } = transport.trainingLosses((x) => x.flatten(1).matmul(w).view([-1, 2, 4]), torch.randn([5, 2, 4]));
  loss.mean().backward();
  assert.ok(w.grad !== null && w.grad.abs().sum().item() > 0);
  assert.throws(() => transport.trainingLosses((x) => x.flatten(1), torch.randn([5, 2, 4])), /output shape \[5,8\] must equal input shape \[5,2,4\]/);
});
