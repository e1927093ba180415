// `reals cache-latents`: encodes a dataset once with a VAE so that generator training reads latents
// instead of running the encoder (src/pipelines/generator.ts runCacheLatents).
import { Command } from 'commander';
import { CACHE_LATENTS_RUN_DEFAULTS, runCacheLatents, type CacheLatentsRunOptions } from '../pipelines/generator.js';
import { device, hubFlags, integer, precisionFlag } from './parse.js';

export function cacheLatentsCommand(): Command {
  const d = CACHE_LATENTS_RUN_DEFAULTS;
  return precisionFlag(hubFlags(new Command('cache-latents'), true), d.precision)
    .description('encode a dataset once (ADM center crop; mirror images too with --flip) into latent shards with an index')
    .requiredOption('--data-path <path>', 'ImageNet-layout image folder, or `fashion-mnist`')
    .requiredOption('--vae-path <dir>', 'diffusers AutoencoderKL folder; or a Hugging Face repo id (owner/name, or owner/name/vae), fetched into the hub cache (mean_std.json or scaling_factor is recorded for training)')
    .requiredOption('--out <dir>', 'cache folder (index.json + shard-NNNNN.npz); rerunning continues an interrupted cache')
    .option('--image-size <n>', 'side of the ADM center crop (folders)', integer(8), d.imageSize)
    .option('--flip', 'also store the latents of every image mirrored left-right', d.flip)
    .option('--batch-size <n>', 'images per encoder call', integer(1), d.batchSize)
    .option('--shard-size <n>', 'images per shard', integer(1), d.shardSize)
    .option('--num-workers <n>', 'image decoding threads', integer(0))
    .option('--device <device>', 'cpu or cuda[:N] (default: cuda:LOCAL_RANK when available)', device)
    .action(async (flags: CacheLatentsRunOptions) => {
      await runCacheLatents(flags);
    });
}
