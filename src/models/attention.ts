// Multi-head self-attention with a fused qkv projection, as timm's `Attention` that DiT/SiT import
// and DINOv2's `MemEffAttention` without xFormers (same math, same `qkv`/`proj` keys).
import type { Tensor } from '../torch/index.js';
import * as nn from '../nn/index.js';
import type { Dim, Value } from '../onnx/graph.js';
import { attention as onnxAttention, childPath, exportModule, registerExporter } from '../onnx/modules.js';

const F = nn.F;

export class Attention extends nn.Module {
  readonly qkv: nn.Linear;
  readonly proj: nn.Linear;

  constructor(dim: number, readonly numHeads: number) {
    super();
    if (dim % numHeads !== 0) throw new Error(`Attention: hidden size ${dim} is not divisible by ${numHeads} heads`);
    this.qkv = this.addModule('qkv', new nn.Linear(dim, dim * 3));
    this.proj = this.addModule('proj', new nn.Linear(dim, dim));
  }

  override forward(x: Tensor): Tensor {
    const [b, n, c] = x.shape as [number, number, number];
    const qkv = this.qkv.forward(x).reshape(b, n, 3, this.numHeads, c / this.numHeads).permute(2, 0, 3, 1, 4);
    const [q, k, v] = qkv.unbind(0) as [Tensor, Tensor, Tensor];
    const out = F.scaledDotProductAttention(q, k, v);
    return this.proj.forward(out.transpose(1, 2).reshape(b, n, c));
  }
}

registerExporter(Attention, (m, g, [x], path) => {
  const [n, tokens, c] = x!.shape as [Dim, number, number];
  const heads = m.numHeads;
  const qkv = g.transpose(g.reshape(exportModule(m.qkv, g, [x!], childPath(path, 'qkv')), [n, tokens, 3, heads, c / heads]), [2, 0, 3, 1, 4]);
  const [q, k, v] = g.split(qkv, 0, [1, 1, 1]).map((part) => g.squeeze(part, 0)) as [Value, Value, Value];
  const out = g.reshape(g.transpose(onnxAttention(g, q, k, v), [0, 2, 1, 3]), [n, tokens, c]);
  return exportModule(m.proj, g, [out], childPath(path, 'proj'));
});
