import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '../../src/torch/index.js';
import type { Tensor } from '../../src/torch/index.js';
import {
  Sampler, createTransport, generateLatents, guidedModel, fromRepaTime, isGuided, convertTime,
  type ConditionalNetwork, type GuidanceInterval,
} from '../../src/diffusion/index.js';
import { DiT, SiT } from '../../src/models/index.js';
import { loadFixture, assertClose, assertCloseToScale, float32Tolerance } from '../helpers.js';
import { tiny } from './tiny-sit.js';

// Written by test/fixtures/make_guidance.py from REPA's samplers.py.
const fixture = loadFixture('diffusion_guidance.json');
const F = torch.nnFunctional;

/** Records the batch size of every forward call. */
function counting(network: ConditionalNetwork): ConditionalNetwork & { batches: number[] } {
  const batches: number[] = [];
  return {
    config: network.config, cfgChannels: network.cfgChannels, batches,
    forward: (x, t, y) => { batches.push(x.size(0)); return network.forward(x, t, y); },
  };
}

torch.manualSeed(1);
const X = torch.randn([2, 4, 4, 4]);
const Y = torch.tensor([0, 2]);
const NULL = torch.tensor([3, 3]);
const at = (t: number): Tensor => torch.full([2], t);

test('with the interval [0, 1] in either convention, guidedModel equals the first half of forwardWithCfg', () => {
  const cases: [string, SiT | DiT, number | 'all' | undefined][] = [
    ['SiT, its 3 channels', tiny(SiT), undefined], ['SiT, all channels', tiny(SiT), 'all'],
    ['DiT, its default channels', tiny(DiT), undefined], ['DiT, 2 channels', tiny(DiT), 2],
  ];
  for (const [name, network, channels] of cases) {
    for (const convention of ['sit', 'repa'] as const) {
      const model = guidedModel(network, { cfgScale: 1.8, channels, interval: { low: 0, high: 1, convention } });
      const t = at(0.3);
      const expected = network.forwardWithCfg(torch.cat([X, X]), torch.cat([t, t]), torch.cat([Y, NULL]), 1.8, channels === undefined ? {} : { channels });
      assertClose(model(X, t, { y: Y }), expected.slice(0, 0, 2), 1e-6, 1e-7, `${name}, ${convention}`);
    }
  }
});

test('guidance applies on the closed interval and nowhere else, in SiT time and in REPA time (t_repa = 1 - t_sit)', () => {
  const network = tiny(SiT);
  const intervals: GuidanceInterval[] = [{ low: 0.25, high: 0.5, convention: 'sit' }, { low: 0.5, high: 0.75, convention: 'repa' }];
  for (const interval of intervals) {
    const tracked = counting(network);
    const model = guidedModel(tracked, { cfgScale: 2, interval });
    // Both intervals are t_sit in [0.25, 0.5].
    const guidedTimes = [0.25, 0.375, 0.5];
    for (const tSit of [0.2, 0.25, 0.375, 0.5, 0.625]) {
      tracked.batches.length = 0;
      const t = at(tSit);
      const out = model(X, t, { y: Y });
      const guided = guidedTimes.includes(tSit);
      assert.deepEqual(tracked.batches, [guided ? 4 : 2], `${JSON.stringify(interval)} at t_sit ${tSit}`);
      const expected = guided ? network.forwardWithCfg(torch.cat([X, X]), torch.cat([t, t]), torch.cat([Y, NULL]), 2).slice(0, 0, 2) : network.forward(X, t, Y);
      assertClose(out, expected, 1e-6, 1e-7, `${JSON.stringify(interval)} at t_sit ${tSit}`);
    }
  }
  // REPA's "cfg 1.8 on [0, 0.75]" leaves the noisiest quarter unguided: t_sit < 0.25.
  const repa: GuidanceInterval = { low: 0, high: 0.75, convention: 'repa' };
  assert.deepEqual([0, 0.2, 0.25, 0.6, 1].map((t) => isGuided(t, repa)), [false, false, true, true, true]);
  assert.equal(convertTime(0.75, 'repa', 'sit'), 0.25);
  assert.equal(convertTime(0.3, 'sit', 'sit'), 0.3);
});

test('channels 3 leaves the fourth channel conditional; channels "all" guides it too', () => {
  const network = tiny(SiT);
  const t = at(0.6);
  const cond = network.forward(X, t, Y);
  const uncond = network.forward(X, t, NULL);
  const full = uncond.add(cond.sub(uncond).mul(3));
  const three = guidedModel(network, { cfgScale: 3, channels: 3 })(X, t, { y: Y });
  const all = guidedModel(network, { cfgScale: 3, channels: 'all' })(X, t, { y: Y });
  // guidedModel runs one forward of the doubled batch; the reference, two forwards of the batch.
  // A GEMM blocks another batch size differently (float32Tolerance: the tiny SiT's sums are at
  // most 64 long, over 8 layers), and 3 * cond - 2 * uncond adds the two errors 3 and 2 times.
  const tolerance = 5 * float32Tolerance(64, 8);
  assertCloseToScale(three.slice(1, 0, 3), full.slice(1, 0, 3), tolerance, 'guided channels');
  assertCloseToScale(three.slice(1, 3), cond.slice(1, 3), tolerance, 'channel 3 with channels = 3');
  assertCloseToScale(all, full, tolerance, 'channels = all');
  assert.ok(cond.slice(1, 3).sub(full.slice(1, 3)).abs().max().item() > 1e-3, 'the fourth channel must be changed by guidance');
});

/** The fixture's REPA-time MLP velocity; labels >= classes take the null row. */
function repaMlp(w: Record<string, Tensor>, classes: number): ConditionalNetwork {
  return {
    config: { numClasses: 1000, inChannels: 2 },
    forward: (x, t, y) => {
      const h = F.linear(torch.cat([x.flatten(1), t.unsqueeze(1)], 1), w.w1!, w.b1!).add(w.emb!.indexSelect(0, y.clamp(null, classes))).tanh();
      return F.linear(h, w.w2!, w.b2!).view([...x.shape]);
    },
  };
}

for (const c of fixture.euler) {
  test(`REPA's euler_sampler with cfg ${c.cfg_scale} on [${c.guidance_low}, ${c.guidance_high}] (REPA time) equals SiT-time Euler on the converted network`, () => {
    const network = counting(fromRepaTime(repaMlp(fixture.mlp, fixture.classes)));
    const interval: GuidanceInterval = { low: c.guidance_low, high: c.guidance_high, convention: 'repa' };
    const model = guidedModel(network, { cfgScale: c.cfg_scale, interval });
    // REPA's num_steps Euler steps are num_steps + 1 grid points for SiT's sampler.
    const sample = new Sampler(createTransport()).sampleOde({ samplingMethod: 'euler', numSteps: c.num_steps + 1 });
    const { samples } = sample(c.latents, model, { y: c.y });
    assertClose(samples[samples.length - 1]!, c.samples, 1e-5, 1e-6);
    // REPA evaluates at t_repa = 1, 1 - 1/n, ..., 1/n and guides where low <= t_repa <= high.
    const expected = Array.from({ length: c.num_steps }, (_, i) => 1 - i / c.num_steps).map((t) => (t >= c.guidance_low && t <= c.guidance_high ? 6 : 3));
    assert.deepEqual(network.batches, expected);
  });
}

for (const c of fixture.heun) {
  test(`REPA's Heun (euler_sampler heun=True) with cfg ${c.cfg_scale} on [${c.guidance_low}, ${c.guidance_high}] equals 'heun-repa'; SiT's heun2 does not`, () => {
    const run = (samplingMethod: 'heun-repa' | 'heun2') => {
      const network = counting(fromRepaTime(repaMlp(fixture.mlp, fixture.classes)));
      const interval: GuidanceInterval = { low: c.guidance_low, high: c.guidance_high, convention: 'repa' };
      const sampler = new Sampler(createTransport());
      const grid = sampler.stepTimes('ode', { numSteps: c.num_steps + 1 }, 'repa');
      const { samples } = sampler.sampleOde({ samplingMethod, numSteps: c.num_steps + 1 })(c.latents, guidedModel(network, { cfgScale: c.cfg_scale, interval, grid }), { y: c.y });
      return { sample: samples[samples.length - 1]!, batches: network.batches };
    };
    const repa = run('heun-repa');
    assertClose(repa.sample, c.samples, 1e-5, 1e-6);
    // 2 evaluations a step, 1 on the last; a corrector is guided as its step.
    const b = c.y.size(0);
    const guided = Array.from({ length: c.num_steps }, (_, i) => 1 - i / c.num_steps).map((t) => t >= c.guidance_low && t <= c.guidance_high);
    assert.deepEqual(repa.batches, guided.flatMap((g, i) => Array(i + 1 < c.num_steps ? 2 : 1).fill(g ? 2 * b : b)));
    const sit = run('heun2');
    assert.ok(sit.sample.sub(c.samples).abs().max().item() > 1e-4, 'heun2 (torchdiffeq\'s) is another sampler');
  });
}

test('guidedModel names what is wrong', () => {
  const network = tiny(SiT);
  assert.throws(() => guidedModel(network, { cfgScale: 2, interval: { low: 0.8, high: 0.2, convention: 'sit' } }), /low <= high/);
  assert.throws(() => guidedModel(network, { cfgScale: 2, interval: { low: 0, high: 1, convention: 'edm' as 'sit' } }), /unknown time convention 'edm'/);
  assert.throws(() => guidedModel(network, { cfgScale: 2, channels: 0 }), /channels must be 'all' or a positive integer/);
  const model = guidedModel(network, { cfgScale: 2 });
  assert.throws(() => model(X, at(0.5), {}), /modelKwargs.y/);
  assert.throws(() => model(X, torch.tensor([0.1, 0.2]), { y: Y }), /one time for the whole batch/);
  assert.throws(() => guidedModel(network, { cfgScale: 2, channels: 5 })(X, at(0.5), { y: Y }), /cannot guide 5 channels of an output with 4/);
});

// Written by test/fixtures/make_guidance_grid.py: the steps REPA's samplers guide, for every step count.
const grids = loadFixture('diffusion_guidance_grid.json') as Record<'ode' | 'sde', { low: number; high: number; runs: [number, number, number][] }[]>;

/** [first, last] guided step of `times` (-1, -1: none). */
function guidedRun(times: readonly number[], decide: (t: number, i: number) => boolean): [number, number] {
  const idx = times.map((t, i) => (decide(t, i) ? i : -1)).filter((i) => i >= 0);
  return idx.length === 0 ? [-1, -1] : [idx[0]!, idx.at(-1)!];
}

test('guidance is decided by step on REPA\'s float64 grid, for every ODE and SDE step count up to 1000 (float32 SiT times disagree at 44 ODE counts)', () => {
  const sampler = new Sampler(createTransport());
  let float32Disagrees = 0;
  for (const kind of ['ode', 'sde'] as const) {
    for (const { low, high, runs } of grids[kind]) {
      const interval: GuidanceInterval = { low, high, convention: 'repa' };
      for (const [points, first, last] of runs) {
        const grid = sampler.stepTimes(kind, { numSteps: points, diffusionForm: 'sigma' }, 'repa');
        // The ODE takes a step from every point but the last; the SDE's last point is its final step.
        const steps = kind === 'ode' ? points - 1 : points;
        const byStep = guidedRun(grid.times.slice(0, steps), (t) => t >= low && t <= high);
        assert.deepEqual(byStep, [first, last], `${kind} ${points} points on [${low}, ${high}]`);
        const byTime = guidedRun(grid.sit.slice(0, steps), (t) => isGuided(t, interval));
        if (kind === 'ode' && low === 0 && high === 0.75 && byTime.join() !== byStep.join()) float32Disagrees++;
      }
    }
  }
  assert.equal(float32Disagrees, 44, 'the defect this fixes: 1 - t on SiT\'s float32 grid');
});

test('generateLatents guides the steps REPA guides: 28 Euler steps on [0, 0.75] guide steps 8 to 27', () => {
  const network = counting(fromRepaTime(repaMlp(fixture.mlp, fixture.classes)));
  const c = fixture.euler[0];
  generateLatents({
    model: network, labels: c.y, shape: c.latents.shape.slice(1), seed: 0, method: 'ode', steps: 29, cfgScale: 1.8,
    guidanceLow: 0, guidanceHigh: 0.75, ode: { samplingMethod: 'euler' },
  });
  const [, first, last] = grids.ode[0]!.runs.find(([points]) => points === 29)!;
  assert.deepEqual([first, last], [8, 27]);
  const b = c.y.size(0);
  assert.deepEqual(network.batches, Array.from({ length: 28 }, (_, i) => (i >= 8 ? 2 * b : b)));
});
