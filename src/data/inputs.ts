// What the pipelines read from disk, each named by the flag it comes from in errors: a VAE
// (a diffusers folder, or a state dict to start training from), the images (an ImageNet-layout
// folder or Fashion-MNIST), and the latent side they give.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import * as torch from '../torch/index.js';
import { load } from '../io/index.js';
import { AutoencoderKL, resolveVaeConfig } from '../models/autoencoder-kl.js';
import { FASHION_MNIST_CLASSES, FashionMNIST } from './fashion-mnist.js';
import { ImageFolder, classFolders } from './image-folder.js';
import type { Dataset } from './loader.js';
import { hfModelFolder, isHfRepoId, type HfHubOptions } from '../hub/index.js';

/** `--vae-path`: a diffusers AutoencoderKL folder (config.json + weights). */
/** The flags of the pipelines that read published weights. */
export interface HubRunOptions {
  /** The revision (branch, tag or commit) of a Hugging Face --vae-path; default main. */
  revision?: string;
  /** Download nothing (also HF_HUB_OFFLINE=1): weights must be in their caches. */
  offline?: boolean;
}

/**
 * A VAE folder or file as given, or a Hugging Face repo id (`owner/name`, or `owner/name/subfolder`
 * for a pipeline's `vae/`) fetched into the hub's cache at `revision`; returns a local path.
 */
export async function resolveVaePath(vaePath: string, options: HfHubOptions & { flag?: string } = {}): Promise<string> {
  if (existsSync(vaePath)) return vaePath;
  const [owner, name, ...subfolder] = vaePath.split('/');
  const repoId = `${owner}/${name}`;
  if (name === undefined || !isHfRepoId(repoId)) return vaePath;
  try {
    return await hfModelFolder(repoId, { ...options, subfolder: subfolder.length > 0 ? subfolder.join('/') : undefined });
  } catch (error) {
    throw new Error(`${options.flag ?? '--vae-path'} ${vaePath}: no such folder, nor a Hugging Face model: ${(error as Error).message}`);
  }
}

export function loadVaeFolder(vaePath: string): AutoencoderKL {
  if (!existsSync(vaePath)) throw new Error(`--vae-path ${vaePath}: no such folder (a diffusers AutoencoderKL folder: config.json + weights)`);
  return AutoencoderKL.fromPretrained(vaePath);
}

const LDM_ENCODER_KEY = /^(first_stage_model\.)?encoder\.down\.\d+\./;

/**
 * `--vae-ckpt`, the VAE to start training from: a diffusers folder (config.json + weights), a
 * state-dict file in diffusers naming (.safetensors, .ckpt, .pt, .bin; a Lightning {state_dict}
 * is unwrapped) with the architecture of `config` (--vae-config), or, without a path, `config`
 * randomly initialised.
 */
export function loadStartingVae(path: string | undefined, config: string): AutoencoderKL {
  if (path === undefined) return new AutoencoderKL(resolveVaeConfig(config));
  if (!existsSync(path)) throw new Error(`--vae-ckpt ${path}: no such file or folder`);
  if (statSync(path).isDirectory()) return AutoencoderKL.fromPretrained(path);
  const vae = new AutoencoderKL(resolveVaeConfig(config));
  torch.scope(() => {
    let loaded = load(path) as unknown;
    if (loaded instanceof Map) loaded = Object.fromEntries(loaded);
    const record = loaded as Record<string, unknown>;
    const stateDict = (record !== null && typeof record === 'object' && 'state_dict' in record ? record.state_dict : record) as Record<string, torch.Tensor>;
    if (Object.keys(stateDict).some((key) => LDM_ENCODER_KEY.test(key))) {
      throw new Error(`--vae-ckpt ${path}: holds latent-diffusion (CompVis) key names (encoder.down.N...), not diffusers' (encoder.down_blocks.N...); ` +
        'convert it with diffusers\' scripts/convert_vae_pt_to_diffusers.py and pass the folder');
    }
    try {
      vae.loadDiffusersStateDict(stateDict);
    } catch (error) {
      throw new Error(`--vae-ckpt ${path}: ${(error as Error).message}`, { cause: error });
    }
  });
  return vae;
}

/** `--data-path`: an ImageNet-layout folder center-cropped to `imageSize`, or `fashion-mnist` (Debian's dataset-fashion-mnist, 32x32). */
export function loadImageDataset(dataPath: string, imageSize: number, channels: number): Dataset {
  if (dataPath === 'fashion-mnist') {
    if (channels !== 1 && channels !== 3) throw new Error(`--data-path fashion-mnist: the VAE takes ${channels} channels; Fashion-MNIST gives 1 or 3`);
    return new FashionMNIST({ channels });
  }
  if (channels !== 3) throw new Error(`--data-path ${dataPath}: folder images are RGB, the VAE takes ${channels} channels`);
  return new ImageFolder(trainingFolder(dataPath), { resolution: imageSize });
}

/**
 * An ImageNet root (`train/` and `val/` side by side, each of class folders) trains on `train/`,
 * as the reference scripts are pointed at it, rather than taking the two splits for two classes.
 */
export function trainingFolder(dataPath: string): string {
  const train = join(dataPath, 'train');
  const isFolder = (path: string) => existsSync(path) && statSync(path).isDirectory();
  if (!isFolder(train) || !isFolder(join(dataPath, 'val'))) return dataPath;
  const hasClassFolders = readdirSync(train).some((name) => isFolder(join(train, name)));
  return hasClassFolders ? train : dataPath;
}

/** The class names of `--data-path` in label order: Fashion-MNIST's, or the class folders that loadImageDataset reads. */
export function datasetClassNames(dataPath: string): string[] {
  if (dataPath === 'fashion-mnist') return [...FASHION_MNIST_CLASSES];
  if (!existsSync(dataPath) || !statSync(dataPath).isDirectory()) throw new Error(`--data-path ${dataPath}: no such folder`);
  const names = classFolders(trainingFolder(dataPath));
  if (names.length === 0) throw new Error(`--data-path ${dataPath}: no class folders`);
  return names;
}

/** The side of the VAE's latents for images of `imageSize` (SiT: image_size // 8). */
export function latentSize(vae: AutoencoderKL, imageSize: number): number {
  const factor = vae.downsamplingFactor;
  if (imageSize % factor !== 0) throw new Error(`--image-size ${imageSize} is not divisible by the VAE's downsampling factor ${factor}`);
  return imageSize / factor;
}
