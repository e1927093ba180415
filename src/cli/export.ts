// `reals export onnx`: flags for src/train/export-pipeline.ts.
import { Command } from 'commander';
import { SIT_CONFIGS } from '../models/sit.js';
import { OFFICIAL_CHECKPOINT_DEFAULTS } from '../train/generator-pipeline.js';
import { ONNX_MANIFEST, runExportOnnx, type ExportOnnxRunOptions } from '../train/export-pipeline.js';
import { hubFlags, integer } from './parse.js';

function cfgChannels(value: string): number | 'all' {
  return value === 'all' ? 'all' : integer(1)(value);
}

function onnxCommand(): Command {
  return hubFlags(new Command('onnx'), true)
    .description(`write ONNX graphs (opset 17, dynamic batch) of a SiT/DiT checkpoint (forward and forward_with_cfg), its VAE's decoder and encoder, ` +
      `and with --align-ckpt and --head the segmentation readout, with ${ONNX_MANIFEST} saying how to run them`)
    .requiredOption('--ckpt <file>', 'a reals checkpoint (.safetensors) or an official SiT/DiT .pt (or its published name)')
    .requiredOption('--vae-path <dir>', 'diffusers AutoencoderKL folder (or a Hugging Face repo id) whose latents the generator models')
    .requiredOption('--out <dir>', 'folder to write generator.onnx, generator_cfg.onnx, vae_decoder.onnx, vae_encoder.onnx[, readout.onnx] and the manifest into')
    .option('--align-ckpt <file>', 'align.safetensors of `reals align convert` (with --head: the segmentation readout)')
    .option('--head <file>', 'a linear segmentation head on the alignment MLPs (`reals heads train-linear --features mlp`)')
    .option('--model <name>', `${Object.keys(SIT_CONFIGS).join(', ')}, or a .json of SiTConfig fields (default: what a reals checkpoint records; an official file: ${OFFICIAL_CHECKPOINT_DEFAULTS.model.SiT})`)
    .option('--image-size <n>', `image side of an official file (default ${OFFICIAL_CHECKPOINT_DEFAULTS.imageSize})`, integer(8))
    .option('--num-classes <n>', `classes of an official file (default ${OFFICIAL_CHECKPOINT_DEFAULTS.numClasses})`, integer(1))
    .option('--cfg-channels <n>', 'leading channels the CFG graph guides, or `all` (REPA); default the official 3', cfgChannels)
    .action(async (flags: ExportOnnxRunOptions) => {
      await runExportOnnx(flags);
    });
}

export function exportCommand(): Command {
  return new Command('export').description('export trained models for other runtimes').addCommand(onnxCommand());
}
