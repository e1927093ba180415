// `reals ifid`: iFID and rFID of a VAE (src/eval/ifid.ts; docs/alignment.md, ## Diagnostics), a
// command of its own rather than an `evaluate` subcommand: evaluate compares two image batches,
// this one reads a VAE and a dataset and makes its own images.
import { Command, Option } from 'commander';
import { writeJsonFileAtomic } from '../io/index.js';
import { IFID_RUN_DEFAULTS, runIfid, type IfidRunOptions } from '../eval/ifid.js';
import { featureNetworkFlags, stageProgress } from './evaluate.js';
import { device, hubFlags, integer, number, outputFile } from './parse.js';

export function ifidCommand(): Command {
  const d = IFID_RUN_DEFAULTS;
  return featureNetworkFlags(hubFlags(new Command('ifid'), true), 'The JSON names the network (featureNetwork)')
    .description('interpolated FID of a VAE (arXiv 2603.05630): each image\'s posterior mean is moved a fraction t towards its nearest other latent (L2), ' +
      'decoded, and the decoded set is scored by FID against the images in the features of --features; rFID beside it. Prints JSON naming the network (featureNetwork)')
    .requiredOption('--vae-path <dir>', 'diffusers AutoencoderKL folder; or a Hugging Face repo id (owner/name, or owner/name/vae), fetched into the hub cache')
    .requiredOption('--data-path <path>', 'ImageNet-layout image folder (its train/ when it holds train/ and val/), or `fashion-mnist`')
    .option('--image-size <n>', 'side of the ADM center crop of folder images', integer(8), d.imageSize)
    .option('--num-images <n>', 'N: images drawn (seeded) from the data, each paired with its nearest neighbour among the others', integer(2), d.numImages)
    .option('--t <t>', 'where on the segment (or arc) to the neighbour the decoded latent lies (0: rFID\'s reconstructions)', number(0, 1), d.t)
    .addOption(new Option('--interpolation <kind>', 'linear: nearest by L2, (1 - t) z + t z_nn; slerp: nearest by cosine similarity, spherical interpolation (the authors\' default)')
      .choices(['linear', 'slerp']).default(d.interpolation))
    .option('--batch-size <n>', 'images per VAE call', integer(1), d.batchSize)
    .option('--seed <n>', 'seeds the subset of images', integer(0), d.seed)
    .option('--num-workers <n>', 'image decoding threads (default: the usable CPUs - 1, 1 to 8)', integer(0))
    .option('--device <device>', 'cpu or cuda[:N] (default: cuda when available)', device)
    .option('--json <file>', 'also write the result there', outputFile)
    .action(async (flags: IfidRunOptions & { json?: string }) => {
      const bar = stageProgress();
      try {
        const { json, ...options } = flags;
        const result = await runIfid({ ...options, onProgress: (stage, done, total) => bar.update(stage, done, total) });
        bar.stop();
        console.log(JSON.stringify(result));
        if (json !== undefined) writeJsonFileAtomic(json, result);
      } finally {
        bar.stop();
      }
    });
}
