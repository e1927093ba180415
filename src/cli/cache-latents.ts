// `reals cache-latents`: encodes a dataset once with a VAE (src/train/latents.ts) so that
// generator training reads latents instead of running the encoder; under `reals launch` the
// shards are shared out over the ranks.
import { Command } from 'commander';
import * as torch from '../torch/index.js';
import { cacheLatents } from '../train/latents.js';
import { integer, loadImageDataset, loadVae } from './sit.js';

interface CacheLatentsFlags {
  dataPath: string;
  vaePath: string;
  out: string;
  imageSize: number;
  flip: boolean;
  batchSize: number;
  shardSize: number;
  numWorkers?: number;
  device?: string;
}

export function cacheLatentsCommand(): Command {
  return new Command('cache-latents')
    .description('encode a dataset once (ADM center crop; mirror images too with --flip) into latent shards with an index')
    .requiredOption('--data-path <path>', 'ImageNet-layout image folder, or `fashion-mnist`')
    .requiredOption('--vae-path <dir>', 'diffusers AutoencoderKL folder (mean_std.json or scaling_factor is recorded for training)')
    .requiredOption('--out <dir>', 'cache folder (index.json + shard-NNNNN.npz); rerunning continues an interrupted cache')
    .option('--image-size <n>', 'side of the ADM center crop (folders)', integer(8), 256)
    .option('--flip', 'also store the latents of every image mirrored left-right', false)
    .option('--batch-size <n>', 'images per encoder call', integer(1), 32)
    .option('--shard-size <n>', 'images per shard', integer(1), 1000)
    .option('--num-workers <n>', 'image decoding threads', integer(0))
    .option('--device <device>', 'cpu or cuda[:N] (default: cuda:LOCAL_RANK when available)')
    .action(async (flags: CacheLatentsFlags) => {
      const vae = loadVae(flags.vaePath);
      const dataset = loadImageDataset(flags.dataPath, flags.imageSize, vae.config.inChannels);
      const worldSize = torch.distributed.launchedWorldSize();
      // Ranks that finish their shards wait in a barrier for the others' last ones (on a resumed
      // cache, all of another rank's remaining shards): PyTorch's 30 minutes, not the 5 of training.
      if (worldSize > 1) torch.distributed.initProcessGroup({ timeoutMs: process.env.REALS_DIST_TIMEOUT_S ? torch.distributed.defaultTimeoutMs() : 30 * 60 * 1000 });
      try {
        await cacheLatents({
          dataset, vae, vaePath: flags.vaePath, out: flags.out, flip: flags.flip, batchSize: flags.batchSize,
          shardSize: flags.shardSize, numWorkers: flags.numWorkers, device: flags.device,
        });
      } finally {
        if (worldSize > 1) torch.distributed.destroyProcessGroup();
      }
    });
}
