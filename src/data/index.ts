// Data: ImageFolder (ImageNet layout), ADM center crop with Pillow-exact resampling, Fashion-MNIST,
// DistributedSampler and a DataLoader that decodes in worker threads.
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
