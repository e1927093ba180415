// Which VAE a generator's latents belong to: its diffusers config and the SHA-256 of its weights
// (stateDictHash, the hash a sample folder's sampling.json names it by). A generator checkpoint
// records it at training and `reals sample` refuses to decode with another VAE: one of another
// downsampling factor but the same channel count decodes without an error, into images of the
// wrong size and content.
import { z } from 'zod';
import { stateDictHash } from '../nn/module.js';
import { configToDiffusers, type AutoencoderKL } from '../models/autoencoder-kl.js';

export const vaeIdentitySchema = z.object({
  /** config.json as configToDiffusers writes it. */
  config: z.record(z.string(), z.unknown()),
  /** stateDictHash of the weights. */
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
});
export type VaeIdentity = z.infer<typeof vaeIdentitySchema>;

/**
 * config.json keys that do not change what the decoder computes from a latent: the normalization
 * (a generator checkpoint records its own and samples with it), sampleSize (tiling only),
 * forceUpcast (read by diffusers' pipelines) and the file's bookkeeping.
 */
const NOT_ARCHITECTURE = new Set(['_class_name', '_diffusers_version', 'scaling_factor', 'shift_factor', 'latents_mean', 'latents_std', 'sample_size', 'force_upcast']);

export function vaeIdentity(vae: AutoencoderKL): VaeIdentity {
  return { config: configToDiffusers(vae.config), sha256: stateDictHash(vae) };
}

/** Whether two identities name the same weights in the same architecture. */
export function sameVae(a: VaeIdentity, b: VaeIdentity): boolean {
  const architecture = (identity: VaeIdentity) => JSON.stringify(Object.entries(identity.config).filter(([key]) => !NOT_ARCHITECTURE.has(key)).sort());
  return a.sha256 === b.sha256 && architecture(a) === architecture(b);
}

/** `f8, 4 latent channels, block_out_channels [128,256,512,512], weights sha256 0123456789ab`. */
export function describeVae(identity: VaeIdentity): string {
  const blocks = identity.config.block_out_channels;
  const factor = Array.isArray(blocks) ? `f${2 ** (blocks.length - 1)}` : 'f?';
  return `${factor}, ${String(identity.config.latent_channels)} latent channels, block_out_channels ${JSON.stringify(blocks)}, weights sha256 ${identity.sha256.slice(0, 12)}`;
}
