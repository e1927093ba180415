// Which class and which seed each sample gets: labels by sample index or drawn as sample_ddp.py
// draws them, and the seed of each batch. Shared by both backends (./sample.ts, ./onnx-backend.ts).
import * as torch from '../torch/index.js';

/** The label of sample `index`: samples cycle through the classes, so every class gets its share. */
export function sampleLabel(index: number, numClasses: number): number { return index % numClasses; }

/**
 * How sample labels are chosen (`--label-sampling`): `balanced` cycles through the classes by
 * sample index (sampleLabel; REPA-E's class-balanced protocol), `random` draws them as SiT's
 * sample_ddp.py: after the batch's noise, `torch.randint(0, num_classes, (n,))` from the same seed.
 */
export const LABEL_SAMPLINGS = ['balanced', 'random'] as const;
export type LabelSampling = (typeof LABEL_SAMPLINGS)[number];

/**
 * The labels of the batch of samples `indices` whose noise [n, ...noiseShape] is drawn from `seed`:
 * by index (balanced), or sample_ddp.py's draw (random): torch.manualSeed(seed), the noise
 * torch.randn([n, ...noiseShape]), then torch.randint(0, numClasses, [n]). Leaves the generator
 * after that draw.
 */
export function sampleLabels(indices: readonly number[], numClasses: number, labelSampling: LabelSampling, seed: number, noiseShape: readonly number[]): number[] {
  if (labelSampling === 'balanced') return indices.map((index) => sampleLabel(index, numClasses));
  return torch.scope(() => {
    torch.manualSeed(seed);
    torch.randn([indices.length, ...noiseShape]);
    return Array.from(torch.randint(0, numClasses, [indices.length]).toArray() as BigInt64Array, Number);
  });
}

/**
 * The seed of batch `b` on the rank whose seed is `rankSeed` (global_seed * world_size + rank, as
 * sample_ddp.py): the first batch uses it as it is; later ones add b * 0x9E3779B1 modulo 2^32,
 * because libtorch's CPU generator keeps only the low 32 bits of a seed (mt19937). The multiplier
 * is odd, so the seeds of one rank never repeat, and two ranks up to 4,096 apart only meet after
 * 364,789 batches; a batch can be redone alone (resuming an interrupted run) with the same result.
 */
export function batchSeed(rankSeed: number, batch: number): number {
  return Number((BigInt(rankSeed) + BigInt(batch) * 0x9e3779b1n) % 2n ** 32n);
}
