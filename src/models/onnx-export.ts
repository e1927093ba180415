// The graphs `reals export onnx` writes, each with a dynamic batch dimension 'batch': the
// generator's forward and its classifier-free-guidance variant, the VAE's decoder and encoder, the
// alignment MLPs, and the segmentation and depth readouts (the MLPs and a linear head). Whole
// networks composed from the exporters each model file registers beside its forward; the
// onnxruntime sampling backend (src/sampling) runs the first two.
import { AutoencoderKL, decodeOnnx, encodeOnnx } from './autoencoder-kl.js';
import { DiT, SiT, forwardWithCfgOnnx, type CfgOptions } from './sit.js';
import { AlignmentHeads, alignmentOnnx } from './alignment.js';
import { LinearDepthHead, LinearSegmentationHead, depthHeadOnnx, segmentationHeadOnnx } from './heads.js';
import { OnnxGraph, type Value } from '../onnx/graph.js';
import { exportModule } from '../onnx/modules.js';

const BATCH = 'batch';

export interface GeneratorGraphs {
  /** x [batch, C, H, W] float32, t [batch] float32, y [batch] int64 → out. */
  forward: Uint8Array;
  /** x, t, y (the conditional half) and cfg_scale [1] → out: the guided prediction for each row. */
  cfg: Uint8Array;
}

/** The SiT/DiT forward and its CFG graph (the model in eval mode: no label is dropped). */
export function exportGenerator(model: DiT, options: { cfgChannels?: CfgOptions['channels']; metadata?: Record<string, string> } = {}): GeneratorGraphs {
  if (model.training) throw new Error('ONNX export: the generator is in training mode (labels would be dropped at random); call eval() first');
  const c = model.config;
  const inputs = (g: OnnxGraph) => [
    g.input('x', 'float32', [BATCH, c.inChannels, c.inputSize, c.inputSize]), g.input('t', 'float32', [BATCH]), g.input('y', 'int64', [BATCH]),
  ] as const;
  const metadata = { kind: model instanceof SiT ? 'SiT' : 'DiT', config: JSON.stringify(c), ...options.metadata };

  const forward = new OnnxGraph(`${metadata.kind}.forward`);
  forward.output(exportModule(model, forward, [...inputs(forward)], ''), 'out');

  const cfg = new OnnxGraph(`${metadata.kind}.forward_with_cfg`);
  const [x, t, y] = inputs(cfg);
  cfg.output(forwardWithCfgOnnx(model, cfg, [x, t, y, cfg.input('cfg_scale', 'float32', [1])], { channels: options.cfgChannels }), 'out');
  return { forward: forward.toBytes(metadata), cfg: cfg.toBytes({ ...metadata, cfgChannels: String(options.cfgChannels ?? model.cfgChannels) }) };
}

/** z [batch, latent, latentSize, latentSize] → image [batch, out, ...] in [-1, 1] (unclamped), as vae.decode. */
export function exportVaeDecoder(vae: AutoencoderKL, options: { latentSize: number; metadata?: Record<string, string> }): Uint8Array {
  const g = new OnnxGraph('AutoencoderKL.decode');
  g.output(decodeOnnx(vae, g, g.input('z', 'float32', [BATCH, vae.config.latentChannels, options.latentSize, options.latentSize])), 'image');
  return g.toBytes({ config: JSON.stringify(vae.config), ...options.metadata });
}

/** image [batch, in, imageSize, imageSize] → moments [batch, 2 latent, ...]: the posterior's mean, then its log-variance. */
export function exportVaeEncoder(vae: AutoencoderKL, options: { imageSize: number; metadata?: Record<string, string> }): Uint8Array {
  const g = new OnnxGraph('AutoencoderKL.encode');
  g.output(encodeOnnx(vae, g, g.input('image', 'float32', [BATCH, vae.config.inChannels, options.imageSize, options.imageSize])), 'moments');
  return g.toBytes({ config: JSON.stringify(vae.config), ...options.metadata });
}

/**
 * AlignmentHeads.forward: z [batch, latent, latentSize, latentSize] → patch [batch, tokens,
 * featureDim] and, for heads with MLP_cls, cls [batch, featureDim].
 */
export function exportAlignmentHeads(heads: AlignmentHeads, options: { latentSize: number; metadata?: Record<string, string> }): Uint8Array {
  const g = new OnnxGraph('alignment_heads');
  const s = options.latentSize;
  const { patch, cls } = alignmentOnnx(heads, g, g.input('z', 'float32', [BATCH, heads.config.latentChannels, s, s]));
  g.output(patch, 'patch');
  if (cls !== null) g.output(cls, 'cls');
  return g.toBytes({ config: JSON.stringify(heads.config), ...options.metadata });
}

/** The alignment MLPs' patch tokens as a map [batch, featureDim, s, s], and their CLS token (if any), of latents z. */
function mlpFeatures(heads: AlignmentHeads, g: OnnxGraph, s: number): { map: Value; cls: Value | null } {
  const { patch, cls } = alignmentOnnx(heads, g, g.input('z', 'float32', [BATCH, heads.config.latentChannels, s, s]));
  return { map: g.reshape(g.transpose(patch, [0, 2, 1]), [BATCH, heads.config.featureDim, s, s]), cls };
}

/**
 * The depth readout of latents, as `reals depth --features mlp` computes it before resizing to the
 * image: z through the alignment MLPs and a linear depth head to depth [batch, 1, s up, s up], clamped.
 */
export function exportDepthReadout(heads: AlignmentHeads, head: LinearDepthHead, options: { latentSize: number; metadata?: Record<string, string> }): Uint8Array {
  const g = new OnnxGraph('depth_readout');
  const { map, cls } = mlpFeatures(heads, g, options.latentSize);
  g.output(depthHeadOnnx(head, g, map, cls), 'depth');
  return g.toBytes({ minDepth: String(head.config.minDepth), maxDepth: String(head.config.maxDepth), ...options.metadata });
}

/**
 * The segmentation readout of latents, as `reals segment --features mlp` runs it: z [batch,
 * latent, latentSize, latentSize] through the alignment MLPs (patch tokens as a map, and the CLS
 * token) and a linear head, to class logits [batch, classes, latentSize, latentSize].
 */
export function exportSegmentationReadout(heads: AlignmentHeads, head: LinearSegmentationHead, options: { latentSize: number; metadata?: Record<string, string> }): Uint8Array {
  const g = new OnnxGraph('segmentation_readout');
  const { map, cls } = mlpFeatures(heads, g, options.latentSize);
  g.output(segmentationHeadOnnx(head, g, map, cls), 'logits');
  return g.toBytes({ numClasses: String(head.config.numClasses), ...options.metadata });
}
