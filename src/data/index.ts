// Data: ImageFolder (ImageNet layout), ADM center crop with Pillow-exact resampling, Fashion-MNIST,
// DistributedSampler and a DataLoader that decodes in worker threads; the inputs a command reads
// (VAE folders, image folders, resolved through the hub), the latent cache and its normalization,
// and the teacher's augmentations (multi-crop, iBOT masks).
// May import: torch, nn, optim, io, hub, runlog, onnx, models (the latent cache encodes with the VAE).
export { resize, precomputeCoefficients } from './resample.js';
export type { RawImage, ResampleFilter, Coefficients } from './resample.js';
export { decodeImage, centerCropArr, crop, hflip, roundHalfEven, writeNormalized, loadImageInto, pixelLimitFor } from './image.js';
export { ImageFolder, IMAGE_EXTENSIONS, classFolders } from './image-folder.js';
export type { ImageFolderOptions } from './image-folder.js';
export { FashionMNIST, FASHION_MNIST_CLASSES, FASHION_MNIST_ROOT, readIdx } from './fashion-mnist.js';
export type { FashionMNISTOptions, IdxArray } from './fashion-mnist.js';
export { DistributedSampler, MT19937, randperm } from './sampler.js';
export type { DistributedSamplerOptions } from './sampler.js';
export { DataLoader, flipFor } from './loader.js';
export type { DataLoaderOptions, Batch, Dataset, ImageFileDataset, InMemoryDataset, LoaderStats } from './loader.js';
export {
  cacheLatents, LatentCache, CachedLatents, EncodedImages, encodePosterior, shardName, LATENT_INDEX, type CacheLatentsOptions, type CacheLatentsResult,
  type LatentCacheSettings, type LatentIndex, type LatentBatch, type LatentSource, type CachedLatentsOptions,
} from './latents.js';
export { latentNormalization, normalizeLatents, denormalizeLatents, describeNormalization, type LatentNormalization } from './latent-normalization.js';
export { vaeIdentity, sameVae, describeVae, type VaeIdentity } from './vae-identity.js';
export * from './inputs.js';
export { multiCrop, randomResizedCrop, colorAugment, blockMask, ibotMasks, MaskDraws, type MultiCropOptions, type MultiCrops, type MaskOptions } from './multicrop.js';
