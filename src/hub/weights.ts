// The official weights reals reads, by their upstream URLs, each fetched into the cache its own
// ecosystem uses (docs/weights.md lists them).
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { torchHubCheckpoint, type TorchHubOptions } from './torch-hub.js';
import { downloadFile, isOffline, notCachedError } from './download.js';

const DINOV2_NAME = /^(dinov2_vit[sblg]14)(_reg)?$/;

/**
 * The torch-hub checkpoint of a DINOv2 model (`dinov2_vitl14`, `dinov2_vitl14_reg`, ...), as
 * facebookresearch/dinov2's hubconf builds it: {base}/{arch}/{arch}[_reg4]_pretrain.pth.
 */
export function dinov2CheckpointUrl(name: string): string {
  const match = DINOV2_NAME.exec(name);
  if (match === null) throw new Error(`--dino-model ${name}: no published checkpoint (dinov2_vit{s,b,l,g}14, with _reg for registers); pass --dino-ckpt FILE`);
  return `https://dl.fbaipublicfiles.com/dinov2/${match[1]}/${match[1]}${match[2] === undefined ? '' : '_reg4'}_pretrain.pth`;
}

/**
 * The most bytes a published file of a network with `parameters` parameters may have, for hosts
 * that may announce no size: 16 bytes per parameter (float32, four times over for a checkpoint
 * that also holds an EMA copy and Adam's two moments), at least 1 MiB for the pickle around them.
 */
function checkpointCap(parameters: number): number {
  return Math.max(2 ** 20, 16 * parameters);
}

/** The parameter counts the DINOv2 README gives for each architecture. */
const DINOV2_PARAMETERS: Readonly<Record<string, number>> = {
  dinov2_vits14: 21e6, dinov2_vitb14: 86e6, dinov2_vitl14: 300e6, dinov2_vitg14: 1100e6,
};

/** pytorch-fid's FID Inception weights (the file name's 6726825d is its sha256 prefix). */
export const FID_INCEPTION_URL = 'https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth';

/** torchvision's VGG16, whose features LPIPS reads (397923af: the sha256 prefix). */
export const LPIPS_VGG16_URL = 'https://download.pytorch.org/models/vgg16-397923af.pth';

/** LPIPS v0.1's linear layers over VGG features, from the lpips package's repository. */
export const LPIPS_LIN_URL = 'https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/vgg.pth';
/** Its name in the torch hub cache ("vgg.pth" alone would be taken for a VGG). */
export const LPIPS_LIN_FILE = 'lpips_v0.1_vgg.pth';

/** The published SiT and DiT checkpoints, by the names their download.py scripts take. */
export const GENERATOR_CHECKPOINTS: Readonly<Record<string, string>> = {
  'SiT-XL-2-256x256.pt': 'https://www.dl.dropboxusercontent.com/scl/fi/as9oeomcbub47de5g4be0/SiT-XL-2-256.pt?rlkey=uxzxmpicu46coq3msb17b9ofa&dl=0',
  'DiT-XL-2-256x256.pt': 'https://dl.fbaipublicfiles.com/DiT/models/DiT-XL-2-256x256.pt',
  'DiT-XL-2-512x512.pt': 'https://dl.fbaipublicfiles.com/DiT/models/DiT-XL-2-512x512.pt',
};

/** Where SiT's and DiT's download.py keep them: pretrained_models/ in the working folder. */
export const GENERATOR_CHECKPOINT_DIR = 'pretrained_models';

export type WeightsOptions = Pick<TorchHubOptions, 'offline' | 'progress'>;

/** The DINOv2 checkpoint of `name` in the torch hub cache, downloaded when missing. */
export function fetchDinov2Checkpoint(name: string, options: WeightsOptions = {}): Promise<string> {
  const url = dinov2CheckpointUrl(name);
  const architecture = DINOV2_NAME.exec(name)![1]!;
  return torchHubCheckpoint(url, { ...options, maxBytes: checkpointCap(DINOV2_PARAMETERS[architecture]!) });
}

/** pytorch-fid's FIDInceptionV3: about 24M parameters (a 91 MB file). */
export function fetchFidInceptionWeights(options: WeightsOptions = {}): Promise<string> {
  return torchHubCheckpoint(FID_INCEPTION_URL, { ...options, maxBytes: checkpointCap(24e6) });
}

/** LPIPS's two files: torchvision's VGG16 (138M parameters) and the linear layers (1,472: one per VGG channel of 5 layers). */
export async function fetchLpipsWeights(options: WeightsOptions = {}): Promise<{ vgg16: string; lin: string }> {
  return {
    vgg16: await torchHubCheckpoint(LPIPS_VGG16_URL, { ...options, maxBytes: checkpointCap(138e6) }),
    lin: await torchHubCheckpoint(LPIPS_LIN_URL, { ...options, fileName: LPIPS_LIN_FILE, maxBytes: checkpointCap(1472) }),
  };
}

/**
 * `--ckpt` as SiT's and DiT's find_model reads it: an existing file as it is; a published name
 * (GENERATOR_CHECKPOINTS) from pretrained_models/, downloaded there when missing.
 */
export async function resolveGeneratorCheckpoint(ckpt: string, options: WeightsOptions = {}): Promise<string> {
  if (existsSync(ckpt)) return ckpt;
  const url = GENERATOR_CHECKPOINTS[ckpt];
  if (url === undefined) {
    throw new Error(`--ckpt ${ckpt}: no such file, nor a published checkpoint (${Object.keys(GENERATOR_CHECKPOINTS).join(', ')})`);
  }
  const path = join(GENERATOR_CHECKPOINT_DIR, ckpt);
  if (existsSync(path)) return path;
  if (isOffline(options.offline)) throw notCachedError(url, path, 'offline (--offline or HF_HUB_OFFLINE=1)');
  // SiT-XL/2 and DiT-XL/2: 675M parameters each.
  return downloadFile(url, path, { progress: options.progress, maxBytes: checkpointCap(675e6) });
}
