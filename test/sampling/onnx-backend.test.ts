// The onnxruntime sampling backend against the libtorch one: the same noise, labels, grid and
// guidance decisions, latents within 1e-4 (relative to their largest value).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import * as torch from '../../src/torch/index.js';
import { loadGenerator, type GeneratorSpec } from '../../src/train/sit.js';
import { sampleLatents } from '../../src/sampling/sample.js';
import { createOnnxSampler } from '../../src/sampling/onnx-backend.js';
import { denormalizeLatents } from '../../src/data/latent-normalization.js';
import { FIXTURES, tinyVae } from '../helpers.js';

torch.setNumThreads(1);
const TINY: GeneratorSpec = {
  name: 'SiT-tiny', kind: 'SiT',
  config: { depth: 2, hiddenSize: 16, patchSize: 2, numHeads: 2, inputSize: 4, inChannels: 4, mlpRatio: 4, classDropoutProb: 0.1, numClasses: 3, learnSigma: true },
};
const NORMALIZATION = { source: 'mean_std.json' as const, mean: [0.1, -0.2, 0.3, 0], std: [1.5, 0.5, 2, 1] };

/** make_sit.py's tiny SiT with its fixture weights, and a tiny random VAE. */
function tinyModels() {
  const { model } = loadGenerator(join(FIXTURES, 'models', 'sit_checkpoint.pt'), { spec: TINY });
  return { model, vae: tinyVae().eval() };
}

const relativeError = (a: torch.Tensor, b: torch.Tensor): number => torch.noGrad(() => a.sub(b).abs().max().item() / b.abs().max().item());

test('onnxruntime sampling (euler, heun2; no guidance, guidance everywhere, on an interval) equals libtorch\'s to 1e-4, and so does the decoder', async () => {
  const { model, vae } = tinyModels();
  const indices = [0, 1, 2, 5];
  for (const method of ['euler', 'heun2'] as const) {
    for (const [cfgScale, guidanceLow, guidanceHigh] of [[1, 0, 1], [4, 0, 1], [3, 0, 0.5]] as const) {
      const settings = { steps: 8, cfgScale, guidanceLow, guidanceHigh, cfgChannels: 'all' as const };
      const expected = sampleLatents({ model, method: 'ode', ode: { samplingMethod: method }, ...settings }, indices, 1234);
      const onnx = await createOnnxSampler({ model, vae, normalization: NORMALIZATION, mode: 'ode', method, ...settings });
      const latents = await onnx.latents(indices, 1234);
      const error = relativeError(latents, expected);
      assert.ok(error < 1e-4, `${method}, cfg ${cfgScale} on [${guidanceLow}, ${guidanceHigh}]: relative error ${error}`);
      if (method === 'heun2' && cfgScale === 4) {
        const decoded = await onnx.decode(latents);
        const reference = torch.noGrad(() => vae.decode(denormalizeLatents(latents, NORMALIZATION)));
        assert.ok(relativeError(decoded, reference) < 1e-4, 'the decoder');
      }
      await onnx.release();
    }
  }
});

test('onnxruntime SDE sampling (Euler-Maruyama, sigma diffusion, the Mean last step; unguided, guided everywhere with the doubled batch\'s draws, on an interval) equals libtorch\'s to 1e-4', async () => {
  const { model, vae } = tinyModels();
  const indices = [0, 1, 2];
  for (const [cfgScale, guidanceLow, guidanceHigh] of [[1, 0, 1], [4, 0, 1], [3, 0, 0.5]] as const) {
    const sde = { samplingMethod: 'Euler' as const, diffusionForm: 'sigma' as const, diffusionNorm: 1, lastStep: 'Mean' as const, lastStepSize: 0.04 };
    const settings = { steps: 10, cfgScale, guidanceLow, guidanceHigh, cfgChannels: 'all' as const };
    const expected = sampleLatents({ model, method: 'sde', sde, ...settings }, indices, 99);
    const onnx = await createOnnxSampler({ model, vae, normalization: NORMALIZATION, mode: 'sde', sde, ...settings });
    const error = relativeError(await onnx.latents(indices, 99), expected);
    await onnx.release();
    assert.ok(error < 1e-4, `SDE, cfg ${cfgScale} on [${guidanceLow}, ${guidanceHigh}]: relative error ${error}`);
  }
});
