// `reals export onnx`, `reals export web` (flags for src/pipelines/export.ts) and `reals serve`.
import { Command } from 'commander';
import { SIT_CONFIGS } from '../models/sit.js';
import { OFFICIAL_CHECKPOINT_DEFAULTS } from '../pipelines/sample.js';
import { ONNX_MANIFEST, runExportOnnx, runExportWeb, type ExportOnnxRunOptions } from '../pipelines/export.js';
import { serveStatic } from '../web/site.js';
import { allowVaeMismatchFlag, cfgChannels, hubFlags, integer } from './parse.js';

function modelFlags(command: Command): Command {
  return allowVaeMismatchFlag(command)
    .requiredOption('--ckpt <file>', 'a reals checkpoint (.safetensors) or an official SiT/DiT .pt (or its published name)')
    .requiredOption('--vae-path <dir>', 'diffusers AutoencoderKL folder (or a Hugging Face repo id) whose latents the generator models')
    .option('--align-ckpt <file>', 'align.safetensors of `reals align convert`: the alignment MLPs (alignment.onnx), and with --head the readout')
    .option('--head <file>', 'a linear segmentation (readout.onnx) or depth head (depth.onnx) on the alignment MLPs\' features (`reals heads train-linear --features mlp`)')
    .option('--model <name>', `${Object.keys(SIT_CONFIGS).join(', ')}, or a .json of SiTConfig fields (default: what a reals checkpoint records; an official file: ${OFFICIAL_CHECKPOINT_DEFAULTS.model.SiT})`)
    .option('--image-size <n>', `image side of an official file (default ${OFFICIAL_CHECKPOINT_DEFAULTS.imageSize})`, integer(8))
    .option('--num-classes <n>', `classes of an official file (default ${OFFICIAL_CHECKPOINT_DEFAULTS.numClasses})`, integer(1))
    .option('--cfg-channels <n>', 'leading channels the CFG graph guides, or `all` (REPA); default the official 3 for 4 latent channels, all for other widths', cfgChannels);
}

function onnxCommand(): Command {
  return modelFlags(hubFlags(new Command('onnx'), true))
    .description(`write ONNX graphs (opset 17, dynamic batch) of a SiT/DiT checkpoint (forward and forward_with_cfg), its VAE's decoder and encoder, ` +
      `and with --align-ckpt and --head the segmentation readout, with ${ONNX_MANIFEST} saying how to run them`)
    .requiredOption('--out <dir>', 'folder to write generator.onnx, generator_cfg.onnx, vae_decoder.onnx, vae_encoder.onnx[, alignment.onnx, readout.onnx or depth.onnx] and the manifest into')
    .action(async (flags: ExportOnnxRunOptions) => {
      await runExportOnnx(flags);
    });
}

function webCommand(): Command {
  return modelFlags(hubFlags(new Command('web'), true))
    .description('write a static page that samples (the ODE with guidance), decodes and segments in the browser with onnxruntime-web ' +
      '(WebGPU, else wasm); the models go to OUT/models; `reals serve OUT` or any static host serves it')
    .argument('<out>', 'the folder to write')
    .action(async (out: string, flags: Omit<ExportOnnxRunOptions, 'out'>) => {
      await runExportWeb({ ...flags, out });
    });
}

export function exportCommand(): Command {
  return new Command('export').description('export trained models for other runtimes: ONNX graphs, a web page').addCommand(onnxCommand()).addCommand(webCommand());
}

export function serveCommand(): Command {
  return new Command('serve')
    .description('serve a folder (the page of `reals export web`) over HTTP on 127.0.0.1')
    .argument('<dir>', 'the folder to serve')
    .option('--port <n>', 'TCP port (0: any free one)', integer(0, 65535), 8000)
    .action(async (dir: string, flags: { port: number }) => {
      const { url } = await serveStatic(dir, { port: flags.port });
      console.log(`serving ${dir} at ${url} (Ctrl-C to stop)`);
    });
}
