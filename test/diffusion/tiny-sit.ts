// A tiny SiT/DiT for sampler tests: eval mode, random weights everywhere (adaLN-Zero's zero init
// would make its output 0).
import * as torch from '../../src/torch/index.js';
import type { DiT, SiT, SiTConfig } from '../../src/models/index.js';

const TINY: SiTConfig = { depth: 1, hiddenSize: 16, patchSize: 2, numHeads: 2, inputSize: 4, inChannels: 4, numClasses: 3 };

export function tiny<M extends SiT | DiT>(Model: new (config: SiTConfig) => M): M {
  torch.manualSeed(0);
  const model = new Model(TINY);
  model.eval();
  torch.noGrad(() => { for (const p of model.parameters()) p.add_(torch.randnLike(p).mul(0.3)); });
  return model;
}
