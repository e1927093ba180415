// The tiny random MLP of test/fixtures/make_diffusion.py, as a diffusion Model.
import * as torch from '../../src/torch/index.js';
import type { Model } from '../../src/diffusion/index.js';

const F = torch.nnFunctional;

/** tanh MLP on [flatten(x), t] plus a class embedding of modelKwargs.y; counts its calls. */
export function tinyMlp(weights: Record<string, torch.Tensor>): Model & { calls: number } {
  const { w1, b1, emb, w2, b2 } = weights as Record<'w1' | 'b1' | 'emb' | 'w2' | 'b2', torch.Tensor>;
  const model = (x: torch.Tensor, t: torch.Tensor, kwargs: Record<string, unknown>): torch.Tensor => {
    model.calls++;
    const input = torch.cat([x.flatten(1), t.unsqueeze(1).to(x.dtype)], 1);
    const h = F.linear(input, w1, b1).add(emb.indexSelect(0, kwargs.y as torch.Tensor)).tanh();
    return F.linear(h, w2, b2).view([...x.shape]);
  };
  model.calls = 0;
  return model;
}
