// The alignment study's one win on its primary endpoint (docs/study/alignment/: PROTOCOL.md, and
// README.md written from the committed cell files), which the demo's default runs and its headline
// states. The numbers are as the study's tables print them; test/demo/study-finding.test.ts
// recomputes each one from the cell files and fails when they differ.
import type { AlignLossKind } from '../models/alignment.js';
import type { LatentSpace, Protocol, TeacherKind } from './results.js';

export interface StudyFinding {
  /** The regime: the VAE's latent channels, how ReaLS trains it, the teacher and the alignment loss. */
  channels: number;
  protocol: Protocol;
  teacher: TeacherKind;
  loss: AlignLossKind;
  /** The primary endpoint: FID of the ODE samples at the SiT's last checkpoint, scored on `samples` samples. */
  sitSteps: number;
  samples: number;
  /** The paired seeds, and those where the arm's FID was lower than the control's. */
  seeds: number;
  wins: number;
  /** Arm minus control, mean over the paired seeds, and its Student-t 95% interval (2 decimals, as the tables). */
  fidDifference: number;
  interval: [number, number];
  /** The arms compared with the control at that endpoint, and the interval Bonferroni-corrected for them (95% / arms). */
  arms: number;
  correctedInterval: [number, number];
}

/** Where the finding's cells ran (their environment.cpu). */
export const ALIGNMENT_FINDING_CPU = 'Intel Xeon';

/**
 * The OpenBLAS kernel set of every cell of the finding's set (environment.openblasCore; the cells
 * from before it was recorded ran on that Xeon, which picks it). It orders the float32 matmul sums,
 * so with it (scripts/study-env.sh) any CPU with AVX-512 reruns those cells, and adds to them.
 */
export const ALIGNMENT_FINDING_OPENBLAS = 'SkylakeX';

export const ALIGNMENT_FINDING: StudyFinding = {
  channels: 8, protocol: 'finetune', teacher: 'hog', loss: 'vf',
  sitSteps: 1400, samples: 2000,
  seeds: 6, wins: 5,
  fidDifference: -0.83, interval: [-1.53, -0.13],
  arms: 4, correctedInterval: [-1.86, 0.2],
};

/** Whether `space`, in VAEs of `latentChannels`, is the finding's regime. */
export function isFindingRegime(space: LatentSpace, latentChannels: number): boolean {
  const f = ALIGNMENT_FINDING;
  return latentChannels === f.channels && space.protocol === f.protocol && space.teacher === f.teacher && space.loss === f.loss;
}

/**
 * The replication of the finding's comparison on an AMD EPYC (docs/study/alignment/epyc/,
 * PROTOCOL.md's addenda): the same commands with the kernels OpenBLAS picks there (Cooperlake), so
 * other bits throughout, scored by the classifier they train; never pooled with the first set.
 * `seeds` counts the pairs finished so far.
 */
export interface StudyReplication {
  cpu: string;
  seeds: number;
  wins: number;
  fidDifference: number;
  /** The Student-t 95% interval; null with fewer than 2 pairs. */
  interval: [number, number] | null;
}

export const ALIGNMENT_REPLICATION: StudyReplication = {
  cpu: 'AMD EPYC', seeds: 6, wins: 5, fidDifference: -0.79, interval: [-1.41, -0.17],
};

/**
 * The finding's loss in the study's other cells of that arm (docs/study/alignment/: the other
 * teachers at the finding's width, and every teacher at 4 channels, the paper's width; cells from a
 * Zen 5 EPYC with the finding's kernels): each arm minus the control of its width at the primary
 * endpoint, as the study's tables print it.
 */
export interface StudyLossResult {
  channels: number;
  teacher: TeacherKind;
  seeds: number;
  wins: number;
  fidDifference: number;
  interval: [number, number];
}

export const ALIGNMENT_FINDING_LOSS_RESULTS: readonly StudyLossResult[] = [
  { channels: 8, teacher: 'supervised', seeds: 6, wins: 5, fidDifference: -1.13, interval: [-2.21, -0.05] },
  { channels: 8, teacher: 'ssl', seeds: 6, wins: 5, fidDifference: -1.38, interval: [-3.62, 0.86] },
  { channels: 4, teacher: 'hog', seeds: 6, wins: 5, fidDifference: -0.62, interval: [-1.68, 0.45] },
  { channels: 4, teacher: 'supervised', seeds: 6, wins: 4, fidDifference: -0.57, interval: [-2.04, 0.90] },
  { channels: 4, teacher: 'ssl', seeds: 6, wins: 5, fidDifference: -1.72, interval: [-3.12, -0.32] },
];
