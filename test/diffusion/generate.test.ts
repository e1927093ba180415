import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '../../src/torch/index.js';
import type { Tensor } from '../../src/torch/index.js';
import {
  generateLatents, guidedModel, createDiffusion, createTransport, Sampler,
  type ConditionalNetwork, type GenerateMethod, type GenerateOptions,
} from '../../src/diffusion/index.js';
import { DiT, SiT } from '../../src/models/index.js';
import { assertClose } from '../helpers.js';
import { tiny } from './tiny-sit.js';

const sit = tiny(SiT);
const dit = tiny(DiT);
const GUIDED = { cfgScale: 1.8, guidanceLow: 0, guidanceHigh: 0.75 };

function options(method: GenerateMethod, seed: number): GenerateOptions {
  return {
    model: method === 'ode' || method === 'sde' ? sit : dit, labels: [0, 2], shape: [4, 4, 4], seed, method, steps: 4,
    ode: { samplingMethod: 'euler' }, eta: 0.3, ...GUIDED,
  };
}

for (const method of ['ode', 'sde', 'ddpm', 'ddim'] as const) {
  test(`generateLatents (${method}, cfg 1.8 on [0, 0.75]) is deterministic for a seed and differs across seeds`, () => {
    const a = generateLatents(options(method, 7));
    const b = generateLatents(options(method, 7));
    const c = generateLatents({ ...options(method, 8), labels: torch.tensor([0, 2]) });
    assert.deepEqual(a.shape, [2, 4, 4, 4]);
    assert.ok(a.isfinite().all().item());
    assertClose(b, a, 0, 0, `${method}, same seed`);
    assert.ok(c.sub(a).abs().max().item() > 1e-2, `${method}: seeds 7 and 8 gave the same latents`);
  });
}

test('generateLatents(ode) is the seeded noise through SiT\'s sampler and the guided model, the interval in REPA time', () => {
  torch.manualSeed(7);
  const z = torch.randn([2, 4, 4, 4]);
  const model = guidedModel(sit, { cfgScale: 1.8, interval: { low: 0, high: 0.75, convention: 'repa' } });
  const { samples } = new Sampler(createTransport()).sampleOde({ samplingMethod: 'euler', numSteps: 4 })(z, model, { y: torch.tensor([0, 2]) });
  assertClose(generateLatents(options('ode', 7)), samples[3]!, 0, 0);
  // The same interval in SiT time.
  assertClose(generateLatents({ ...options('ode', 7), guidanceLow: 0.25, guidanceHigh: 1, guidanceConvention: 'sit' }), samples[3]!, 0, 0);
});

test('generateLatents(ddpm) is DiT\'s respaced p_sample_loop without clipping; DDPM step k sits at REPA time k / 1000', () => {
  const batches: number[] = [];
  const counting: ConditionalNetwork = {
    config: dit.config, cfgChannels: dit.cfgChannels,
    forward: (x: Tensor, t: Tensor, y: Tensor) => { batches.push(x.size(0)); return dit.forward(x, t, y); },
  };
  const latents = generateLatents({ ...options('ddpm', 3), model: counting });
  // Steps 999, 666, 333, 0: REPA times 0.999 (unguided), then 0.666, 0.333 and 0 (guided).
  assert.deepEqual(batches, [2, 4, 4, 4]);
  torch.manualSeed(3);
  const z = torch.randn([2, 4, 4, 4]);
  const model = guidedModel(dit, { cfgScale: 1.8, interval: { low: 0, high: 0.75, convention: 'repa' }, sitTime: (k) => 1 - k / 1000 });
  const expected = createDiffusion({ timestepRespacing: '4' }).pSampleLoop(model, z.shape, { noise: z, clipDenoised: false, modelKwargs: { y: torch.tensor([0, 2]) } });
  assertClose(latents, expected, 0, 0);
});

test('without guidance (cfgScale 1) the network runs once per step on the conditional labels', () => {
  const batches: number[] = [];
  const counting: ConditionalNetwork = { config: sit.config, forward: (x, t, y) => { batches.push(x.size(0)); return sit.forward(x, t, y); } };
  generateLatents({ ...options('ode', 1), model: counting, cfgScale: 1 });
  assert.deepEqual(batches, [2, 2, 2]);
});

test('generateLatents names what is wrong', () => {
  const training = tiny(SiT);
  training.train();
  assert.throws(() => generateLatents({ ...options('ode', 1), model: training }), /training mode/);
  assert.throws(() => generateLatents({ ...options('ode', 1), method: 'euler' as GenerateMethod }), /method must be one of ode, sde, ddpm, ddim/);
  assert.throws(() => generateLatents({ ...options('ode', 1), labels: torch.zeros([2, 1], { dtype: 'int64' }) }), /one label per sample/);
  // A DiT's learned variance does not fit the transport samplers.
  assert.throws(() => generateLatents({ ...options('ode', 1), model: dit }), /output shape \[2,8,4,4\] must equal input shape \[2,4,4,4\]/);
});

test('a run sets its threads for its precision (torch.usePrecision): every CPU in bf16, libtorch\'s default in fp32', () => {
  // The governor off: the counts are then the runs' full ones, whatever else runs on the machine.
  const adaptive = process.env.REALS_ADAPTIVE_THREADS;
  process.env.REALS_ADAPTIVE_THREADS = '0';
  try {
    const model = tiny(SiT);
    const neither = Math.max(torch.runThreads('bf16', 'cpu'), torch.runThreads('fp32', 'cpu')) + 1;
    for (const precision of ['bf16', 'fp32'] as const) {
      torch.native.setNumThreads(neither);
      generateLatents({ model, labels: [0, 1, 2], shape: [4, 4, 4], seed: 0, method: 'ode', steps: 2, cfgScale: 2, precision }).dispose();
      assert.equal(torch.getNumThreads(), torch.runThreads(precision, 'cpu'), precision);
    }
  } finally {
    if (adaptive === undefined) delete process.env.REALS_ADAPTIVE_THREADS;
    else process.env.REALS_ADAPTIVE_THREADS = adaptive;
  }
});
