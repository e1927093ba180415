// `reals evaluate`'s library side: the five numbers of the ADM evaluator (guided-diffusion
// evaluations/evaluator.py main()) for a reference batch and a sample batch, and the reference
// statistics files it reads (mu, sigma, mu_s, sigma_s).
import { statSync } from 'node:fs';
import * as torch from '../torch/index.js';
import { fetchFidInceptionWeights } from '../hub/index.js';
import { NpzFile, saveNpz } from '../io/npz.js';
import { FIDInceptionV3 } from '../models/inception.js';
import { IMAGES_KEY, contentHash, openImageBatches, type ImageBatches } from './batches.js';
import {
  ACTIVATION_BATCH_SIZE, EXTRACTOR_KEY, activationCachePath, asciiOf, asciiTensor, cachedActivations, computeActivations, computeLogits, inceptionExtractor,
  type Activations, type ClassScoreKey, type FeatureExtractor,
} from './activations.js';
import { computeStatistics, frechetDistance, type FIDStatistics } from './fid.js';
import { IS_SPLIT_SIZE, inceptionScore } from './inception-score.js';
import { precisionRecall, type ManifoldOptions } from './precision-recall.js';

/** The statistics arrays of an ADM reference batch: pool_3 and spatial means and covariances. */
export const STATISTICS_KEYS = ['mu', 'sigma', 'mu_s', 'sigma_s'] as const;
const POOLED_KEYS = ['mu', 'sigma'] as const;
const SPATIAL_KEYS = ['mu_s', 'sigma_s'] as const;

export type Stage = 'reference' | 'sample';

/** The environment variable naming the FID Inception weights when no file is given. */
export const INCEPTION_WEIGHTS_ENV = 'REALS_INCEPTION_WEIGHTS';

/**
 * The FID Inception (pytorch-fid's pt_inception-2015-12-05-6726825d.pth: `inceptionWeights`, else
 * $REALS_INCEPTION_WEIGHTS, else the torch hub cache, where pytorch-fid keeps it too, fetched
 * there when missing unless `offline`) as a FeatureExtractor on `device` (default: cuda when available).
 */
export async function fidInceptionExtractor(options: { inceptionWeights?: string; device?: string; offline?: boolean } = {}): Promise<FeatureExtractor> {
  torch.checkDevice(options.device);
  const device = options.device ?? (torch.cuda.isAvailable() ? 'cuda' : 'cpu');
  const weights = options.inceptionWeights ?? process.env[INCEPTION_WEIGHTS_ENV] ?? await fetchFidInceptionWeights({ offline: options.offline });
  return inceptionExtractor(FIDInceptionV3.fromCheckpoint(weights), device);
}

export interface EvaluateOptions {
  extractor: FeatureExtractor;
  /** Images per network call (ADM: 64). */
  batchSize?: number;
  /** Samples per split of the score over classes (the Inception Score's, ADM: 5,000). */
  isSplitSize?: number;
  /** Compute the reference statistics from its images even when the file holds mu/sigma/mu_s/sigma_s. */
  recomputeRefStats?: boolean;
  /** Read and write the reference activation cache next to the reference batch (default true). */
  cache?: boolean;
  manifold?: ManifoldOptions;
  onProgress?: (stage: Stage, done: number, total: number) => void;
}

export interface BatchReport {
  path: string;
  sha256: string;
  count: number;
}

/** The network the features come from, as reports name it. */
export interface FeatureNetworkReport {
  /** The network's name and its weights' hash (FeatureExtractor.id). */
  id: string;
  description: string;
}

export interface EvaluationResult {
  /** The Inception Score (ADM's key): with the FID Inception's features only. */
  inceptionScore?: number;
  /**
   * With a classifier's features (`featureNetwork`): the Inception Score's formula over that
   * classifier's classes, which is not an Inception Score. Networks without class logits (DINOv2,
   * a teacher) have neither score.
   */
  classifierScore?: number;
  fid: number;
  /** null for a network without spatial features (DINOv2, a teacher). */
  sfid: number | null;
  /** null when the reference holds statistics only (precision and recall need its images). */
  precision: number | null;
  recall: number | null;
  /** count: null when the reference holds statistics only. */
  reference: Omit<BatchReport, 'count'> & {
    count: number | null;
    /** Whether FID/sFID used the file's mu/sigma/mu_s/sigma_s or statistics of its images. */
    statistics: 'file' | 'computed';
    /** The activation cache file read or written, if any, and whether it was read. */
    activationCache: string | null;
    cacheHit: boolean;
  };
  sample: BatchReport;
  featureNetwork: FeatureNetworkReport;
}

/** A reference's statistics as a file holds them: pooled, spatial when present, and the network recorded with them (null: unrecorded, as ADM's). */
export interface FileStatistics {
  pool3: FIDStatistics;
  spatial: FIDStatistics | null;
  network: string | null;
}

/** What a report calls each score over classes, and says of it. */
const CLASS_SCORES: Record<ClassScoreKey, { label: string; note: string | null }> = {
  inceptionScore: { label: 'Inception Score', note: null },
  classifierScore: { label: 'Classifier Score', note: 'Classifier Score: the Inception Score\'s formula over this classifier\'s classes, not an Inception Score' },
};

/** The key of `extractor`'s score over classes, or null when it has no class logits. */
function classScoreKey(extractor: FeatureExtractor): ClassScoreKey | null {
  return extractor.logits === undefined ? null : extractor.classScore ?? 'classifierScore';
}

/** The report's name of `extractor`. */
export function featureNetworkReport(extractor: FeatureExtractor): FeatureNetworkReport {
  return { id: extractor.id, description: extractor.description ?? extractor.id };
}

/**
 * mu/sigma (pooled features), mu_s/sigma_s (spatial, when the network has them) and the feature
 * network recorded with them from an .npz; null for an image folder or an .npz without them.
 */
export function readStatistics(path: string): FileStatistics | null {
  if (statSync(path).isDirectory()) return null;
  const file = NpzFile.open(path);
  try {
    const present = STATISTICS_KEYS.filter((k) => file.has(k));
    if (present.length === 0) return null;
    const missing = [...POOLED_KEYS, ...(SPATIAL_KEYS.some((k) => file.has(k)) ? SPATIAL_KEYS : [])].filter((k) => !file.has(k));
    if (missing.length > 0) {
      throw new Error(`${path}: has ${present.join(', ')} but not ${missing.join(', ')}; reference statistics need mu and sigma, and mu_s with sigma_s for sFID`);
    }
    return {
      pool3: { mu: file.get('mu').to('float64'), sigma: file.get('sigma').to('float64') },
      spatial: file.has('mu_s') ? { mu: file.get('mu_s').to('float64'), sigma: file.get('sigma_s').to('float64') } : null,
      network: asciiOf(file, EXTRACTOR_KEY),
    };
  } finally {
    file.close();
  }
}

/** Whether `path` is a statistics file (as `reals fid-stats` writes): an .npz with mu/sigma/mu_s/sigma_s and no images. */
export function holdsStatisticsOnly(path: string): boolean {
  if (statSync(path).isDirectory()) return false;
  const file = NpzFile.open(path);
  try {
    return !file.has(IMAGES_KEY) && STATISTICS_KEYS.some((k) => file.has(k));
  } finally {
    file.close();
  }
}

function statisticsOf(activations: Activations): { pool3: FIDStatistics; spatial: FIDStatistics | null } {
  return { pool3: computeStatistics(activations.pool3), spatial: activations.spatial === null ? null : computeStatistics(activations.spatial) };
}

/**
 * The file's statistics must be of the network evaluating: the one it records, or for a file that
 * records none (ADM's reference batches) the FID Inception. Numbers of two networks are never compared.
 */
function checkStatisticsNetwork(path: string, stats: FileStatistics, extractor: FeatureExtractor): void {
  if (stats.network === null ? !extractor.id.startsWith('inception-') : stats.network !== extractor.id) {
    throw new Error(`${path}: its statistics are of ${stats.network ?? 'an unrecorded network (ADM\'s reference batches: the FID Inception)'}, ` +
      `not of ${extractor.id} (--features): FIDs of two feature networks cannot be compared; evaluate with that network, or --recompute-ref-stats from its images`);
  }
}

/** The file's statistics must be of the features this network gives (another network's could not be compared). */
function checkStatisticsWidth(path: string, stats: FileStatistics, acts: Activations, extractor: FeatureExtractor): void {
  if ((stats.spatial === null) !== (acts.spatial === null)) {
    throw new Error(`${path}: ${stats.spatial === null ? 'has no mu_s/sigma_s' : 'has mu_s/sigma_s'}, but ${extractor.id} ${acts.spatial === null ? 'has no' : 'has'} spatial features: ` +
      'statistics of another network; evaluate with --recompute-ref-stats');
  }
  const pairs: [readonly [string, string], FIDStatistics, number][] = [[['mu', 'sigma'], stats.pool3, acts.pool3.size(1)]];
  if (stats.spatial !== null && acts.spatial !== null) pairs.push([['mu_s', 'sigma_s'], stats.spatial, acts.spatial.size(1)]);
  for (const [names, s, width] of pairs) {
    const expected = [[width], [width, width]];
    [s.mu, s.sigma].forEach((t, i) => {
      if (t.shape.join() !== expected[i]!.join()) {
        throw new Error(`${path}: ${names[i]} is [${t.shape}], but ${extractor.id} gives ${width}-wide features (expected [${expected[i]}]): ` +
          'statistics of another network; evaluate with --recompute-ref-stats');
      }
    });
  }
}

function requireCount(batches: ImageBatches, needed: number, why: string): void {
  if (batches.count < needed) throw new Error(`${batches.path}: ${batches.count} images; ${why} needs at least ${needed}`);
}

/**
 * Inception Score, FID, sFID, precision and recall of the sample batch against the reference
 * batch, as ADM's evaluator: activations of both batches (the reference's from its cache when
 * present), FID/sFID against the reference file's statistics when it has them, IS of the samples
 * (a classifier's features give its Classifier Score instead, networks without logits neither),
 * precision/recall between the two sets of pool_3 features. A reference of statistics only (a
 * `fid-stats` file) gives FID, sFID and IS; precision and recall, which need its images, are null.
 * Every input is checked before the network runs.
 */
export async function evaluate(referencePath: string, samplePath: string, options: EvaluateOptions): Promise<EvaluationResult> {
  const { extractor, batchSize = ACTIVATION_BATCH_SIZE, isSplitSize = IS_SPLIT_SIZE, recomputeRefStats = false, cache = true, manifold = {}, onProgress } = options;
  const k = manifold.k ?? 3;
  const statisticsOnly = holdsStatisticsOnly(referencePath);
  if (statisticsOnly && recomputeRefStats) {
    throw new Error(`${referencePath}: holds statistics only (no ${IMAGES_KEY}); recomputing them (--recompute-ref-stats) needs the reference images`);
  }
  const reference = statisticsOnly ? null : await openImageBatches(referencePath);
  try {
    const sample = await openImageBatches(samplePath);
    try {
      if (reference !== null) requireCount(reference, Math.max(2, k + 1), `the covariance and the ${k}-nearest-neighbour radii`);
      requireCount(sample, Math.max(2, k + 1), `the covariance and the ${k}-nearest-neighbour radii`);
      const scoreKey = classScoreKey(extractor);
      if (scoreKey !== null && sample.count < isSplitSize) {
        process.emitWarning(`${samplePath}: ${sample.count} samples are fewer than one ${CLASS_SCORES[scoreKey].label} split of ${isSplitSize}: ` +
          'scored as one partial split, as ADM does; such a score is not comparable with 10 splits of 5,000');
      }
      const fileStatistics = recomputeRefStats ? null : readStatistics(referencePath);
      if (fileStatistics !== null) checkStatisticsNetwork(referencePath, fileStatistics, extractor);

      const referenceHash = await contentHash(referencePath);
      const sampleHash = await contentHash(samplePath);
      const cachePath = cache && reference !== null ? activationCachePath(referencePath, referenceHash, extractor) : null;
      const referenceProgress = { batchSize, onProgress: (done: number, total: number) => onProgress?.('reference', done, total) };
      const { activations: referenceActs, cached } = reference === null ? { activations: null, cached: false }
        : cachePath === null ? { activations: await computeActivations(reference, extractor, referenceProgress), cached: false }
          : await cachedActivations(reference, extractor, cachePath, referenceHash, referenceProgress);
      // Another network's statistics are refused before the samples run, where reference features show the widths.
      if (fileStatistics !== null && referenceActs !== null) checkStatisticsWidth(referencePath, fileStatistics, referenceActs, extractor);
      const sampleActs = await computeActivations(sample, extractor, { batchSize, onProgress: (done, total) => onProgress?.('sample', done, total) });
      if (fileStatistics !== null && referenceActs === null) checkStatisticsWidth(referencePath, fileStatistics, sampleActs, extractor);

      const referenceStats = fileStatistics ?? statisticsOf(referenceActs!);
      const sampleStats = statisticsOf(sampleActs);
      const { precision, recall } = referenceActs === null ? { precision: null, recall: null }
        : precisionRecall(referenceActs.pool3, sampleActs.pool3, { device: extractor.device, ...manifold });
      return {
        ...(scoreKey === null ? {} : { [scoreKey]: inceptionScore(computeLogits(sampleActs.pool3, extractor), isSplitSize) }),
        fid: frechetDistance(sampleStats.pool3, referenceStats.pool3),
        sfid: sampleStats.spatial === null || referenceStats.spatial === null ? null : frechetDistance(sampleStats.spatial, referenceStats.spatial),
        precision,
        recall,
        reference: {
          path: referencePath, sha256: referenceHash, count: reference?.count ?? null,
          statistics: fileStatistics === null ? 'computed' : 'file', activationCache: cachePath, cacheHit: cached,
        },
        sample: { path: samplePath, sha256: sampleHash, count: sample.count },
        featureNetwork: featureNetworkReport(extractor),
      };
    } finally {
      sample.close();
    }
  } finally {
    reference?.close();
  }
}

/**
 * Writes the FID statistics of a batch (an ADM .npz or an image folder) as an .npz with mu, sigma
 * (pool_3) and mu_s, sigma_s (spatial, for a network that has them) in float64, the arrays ADM's
 * reference batches carry, and the feature network's id (extractor_id), which evaluate checks.
 */
export async function writeFidStatistics(input: string, out: string, options: Pick<EvaluateOptions, 'extractor' | 'batchSize'> & { onProgress?: (done: number, total: number) => void }): Promise<{ count: number; sha256: string }> {
  const images = await openImageBatches(input);
  try {
    requireCount(images, 2, 'a covariance');
    const sha256 = await contentHash(input);
    const stats = statisticsOf(await computeActivations(images, options.extractor, { batchSize: options.batchSize, onProgress: options.onProgress }));
    saveNpz(out, {
      mu: stats.pool3.mu, sigma: stats.pool3.sigma, ...(stats.spatial === null ? {} : { mu_s: stats.spatial.mu, sigma_s: stats.spatial.sigma }),
      [EXTRACTOR_KEY]: asciiTensor(options.extractor.id),
    });
    return { count: images.count, sha256 };
  } finally {
    images.close();
  }
}

/** The numbers as a terminal table, with the feature network and the batch sizes. */
export function formatResult(result: EvaluationResult): string {
  const scoreKey = (['inceptionScore', 'classifierScore'] as const).find((key) => result[key] !== undefined) ?? null;
  const rows: [string, string][] = [
    ...(scoreKey === null ? [] : [[CLASS_SCORES[scoreKey].label, result[scoreKey]!.toFixed(4)] as [string, string]]),
    ['FID', result.fid.toFixed(4)],
    ['sFID', result.sfid?.toFixed(4) ?? 'n/a'],
    ['Precision', result.precision?.toFixed(4) ?? 'n/a'],
    ['Recall', result.recall?.toFixed(4) ?? 'n/a'],
  ];
  const width = Math.max(...rows.map(([name]) => name.length));
  const lines = rows.map(([name, value]) => `${name.padEnd(width)}  ${value.padStart(10)}`);
  const rule = '-'.repeat(width + 12);
  const absent = [scoreKey === null ? 'no score over classes (no class logits)' : null, result.sfid === null ? 'sFID (no spatial features)' : null].filter((x) => x !== null);
  const note = scoreKey === null ? null : CLASS_SCORES[scoreKey].note;
  return [
    `features: ${result.featureNetwork.id}: ${result.featureNetwork.description}`,
    ...(note === null ? [] : [note]),
    ...(absent.length > 0 ? [`n/a for this network: ${absent.join(', ')}; numbers of different feature networks are not comparable`] : []),
    rule, ...lines, rule,
    result.reference.count === null
      ? `reference: statistics only (precision and recall need its images), sample: ${result.sample.count} images`
      : `reference: ${result.reference.count} images (${result.reference.statistics === 'file' ? 'statistics from the file' : 'statistics computed'}), sample: ${result.sample.count} images`,
  ].join('\n');
}

