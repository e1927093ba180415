// `reals export onnx`: a generator checkpoint, its VAE and, optionally, the alignment MLPs with a
// linear segmentation head, as ONNX graphs (src/onnx) in one folder with a manifest that says how
// to run them: the latent normalization, the transport, the guided channels. `reals export web`
// adds the page that runs them in a browser (src/web).
import { join } from 'node:path';
import { checkWritableDir, makeDirs, writeAll, writeFileAtomic } from '../io/file.js';
import { writeJsonFileAtomic } from '../io/index.js';
import { loadAlignmentHeads } from '../models/alignment.js';
import { LinearSegmentationHead, buildHead, readHeadCheckpoint, vocPalette } from '../models/heads.js';
import { createTransport, type TransportConfig } from '../diffusion/index.js';
import { exportAlignmentHeads, exportDepthReadout, exportGenerator, exportSegmentationReadout, exportVaeDecoder, exportVaeEncoder } from '../models/onnx-export.js';
import { resolveGeneratorCheckpoint } from '../hub/index.js';
import { loadVaeFolder, resolveVaePath, type HubRunOptions } from '../data/inputs.js';
import { loadGeneratorFor, type GeneratorFlags } from './sample.js';
import type { LatentNormalization } from '../data/latent-normalization.js';
import { writeWebSite } from '../web/site.js';

export const ONNX_MANIFEST = 'model.json';

/** What model.json records: the files, and what running them needs besides. */
export interface OnnxManifest {
  generator: {
    kind: 'SiT' | 'DiT';
    name: string;
    config: Record<string, unknown>;
    /** x, t, y → out. */
    forward: string;
    /** x, t, y, cfg_scale → out (the guided channels guided). */
    cfg: string;
    cfgChannels: number | 'all';
    /** SiT's transport (the path and what the network predicts), null for DiT. */
    transport: TransportConfig | null;
    /** SiT's ODE interval [t0, t1] (0 noise, 1 data) for these settings. */
    timeInterval: [number, number];
    /** The class names in label order, as the checkpoint records them (the training data's); null where it does not. */
    classNames: string[] | null;
  };
  vae: {
    decoder: string;
    encoder: string;
    latentChannels: number;
    latentSize: number;
    imageSize: number;
    /** Generator latents are (z - mean) / std of VAE latents: decode mean + std * x. */
    normalization: LatentNormalization;
  };
  /** z → patch tokens and CLS token of the alignment MLPs, when --align-ckpt is given. */
  alignment: string | null;
  /** z → segmentation logits, when --head is a segmentation head. */
  readout: { file: string; numClasses: number; palette: [number, number, number][] } | null;
  /** z → depth (metres, clamped), when --head is a depth head. */
  depth: { file: string; minDepth: number; maxDepth: number } | null;
}

export interface ExportOnnxRunOptions extends Omit<GeneratorFlags, 'log'>, HubRunOptions {
  vaePath: string;
  /** align.safetensors of `reals align convert`: the alignment MLPs' graph, and with `head` the readout. */
  alignCkpt?: string;
  /** A linear segmentation or depth head on the alignment MLPs' features (`reals heads train-linear`). */
  head?: string;
  /** Leading channels the CFG graph guides, or 'all' (default: the model's: 3 as upstream for 4 latent channels, all for other widths). */
  cfgChannels?: number | 'all';
  out: string;
  log?: (line: string) => void;
}

export interface ExportOnnxResult { out: string; files: string[]; manifest: OnnxManifest }

/** Writes the graphs and model.json into `out` (each file under a temporary name, then renamed). */
export async function runExportOnnx(options: ExportOnnxRunOptions): Promise<ExportOnnxResult> {
  const { log = console.log } = options;
  if (options.head !== undefined && options.alignCkpt === undefined) throw new Error('--head needs --align-ckpt: the head reads the alignment MLPs\' features');
  checkWritableDir(options.out, '--out');
  const vaePath = await resolveVaePath(options.vaePath, options);
  const ckpt = await resolveGeneratorCheckpoint(options.ckpt, options);
  const vae = loadVaeFolder(vaePath);
  const { loaded, model: name, normalization } = loadGeneratorFor({ ...options, ckpt, log }, null, vae, vaePath);
  const generator = loaded.model;
  const latentSize = generator.config.inputSize;
  const imageSize = latentSize * vae.downsamplingFactor;
  const files: Record<string, Uint8Array> = {};
  const graphs = exportGenerator(generator, { cfgChannels: options.cfgChannels });
  files['generator.onnx'] = graphs.forward;
  files['generator_cfg.onnx'] = graphs.cfg;
  files['vae_decoder.onnx'] = exportVaeDecoder(vae, { latentSize });
  files['vae_encoder.onnx'] = exportVaeEncoder(vae, { imageSize });
  let readout: OnnxManifest['readout'] = null;
  let depth: OnnxManifest['depth'] = null;
  if (options.alignCkpt !== undefined) {
    const heads = loadAlignmentHeads(options.alignCkpt);
    if (heads.config.latentChannels !== vae.config.latentChannels) {
      throw new Error(`--align-ckpt ${options.alignCkpt} reads ${heads.config.latentChannels} latent channels, --vae-path ${vaePath} has ${vae.config.latentChannels}`);
    }
    files['alignment.onnx'] = exportAlignmentHeads(heads, { latentSize });
    if (options.head !== undefined) {
      const checkpoint = readHeadCheckpoint(options.head);
      const head = buildHead(checkpoint, { featureDim: heads.config.featureDim, source: 'the alignment MLPs', maxLayers: 1 }).eval();
      if (head instanceof LinearSegmentationHead) {
        files['readout.onnx'] = exportSegmentationReadout(heads, head, { latentSize });
        readout = { file: 'readout.onnx', numClasses: head.config.numClasses, palette: checkpoint.palette ?? vocPalette(head.config.numClasses) };
      } else {
        files['depth.onnx'] = exportDepthReadout(heads, head, { latentSize });
        depth = { file: 'depth.onnx', minDepth: head.config.minDepth, maxDepth: head.config.maxDepth };
      }
    }
  }
  const manifest: OnnxManifest = {
    generator: {
      kind: loaded.spec.kind, name, config: { ...generator.config }, forward: 'generator.onnx', cfg: 'generator_cfg.onnx',
      cfgChannels: options.cfgChannels ?? generator.cfgChannels, transport: loaded.transport,
      timeInterval: createTransport(loaded.transport ?? {}).checkInterval({ sde: false, eval: true, reverse: false, lastStepSize: 0 }),
      classNames: loaded.classNames,
    },
    vae: {
      decoder: 'vae_decoder.onnx', encoder: 'vae_encoder.onnx', latentChannels: vae.config.latentChannels, latentSize,
      imageSize, normalization,
    },
    alignment: options.alignCkpt === undefined ? null : 'alignment.onnx', readout, depth,
  };
  makeDirs(options.out, '--out');
  for (const [file, bytes] of Object.entries(files)) writeFileAtomic(join(options.out, file), (fd) => writeAll(fd, bytes));
  writeJsonFileAtomic(join(options.out, ONNX_MANIFEST), manifest);
  const written = [...Object.keys(files), ONNX_MANIFEST];
  const megabytes = Object.values(files).reduce((n, b) => n + b.byteLength, 0) / 2 ** 20;
  log(`wrote ${written.join(', ')} into ${options.out} (${megabytes.toFixed(1)} MiB; opset 17, dynamic batch)`);
  return { out: options.out, files: written, manifest };
}

/**
 * `reals export web OUT`: the graphs and model.json into OUT/models, and the page that samples,
 * decodes and segments with them in the browser (index.html, app.js, onnxruntime-web's files).
 */
export async function runExportWeb(options: ExportOnnxRunOptions): Promise<ExportOnnxResult & { site: string[] }> {
  const { log = console.log } = options;
  const exported = await runExportOnnx({ ...options, out: join(options.out, 'models') });
  const site = await writeWebSite(options.out);
  log(`wrote the page into ${options.out}; serve it with: reals serve ${options.out}`);
  return { ...exported, out: options.out, site };
}
