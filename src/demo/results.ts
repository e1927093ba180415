// What a demo run records: its profile, each VAE's scores, its steps and their times, and the
// files the scores are written to (the report reads the same values).

export interface DemoProfile {
  name: string;
  /** Seeds of the VAE → SiT → sampling → scoring chain (the teacher and the classifier are trained once). */
  seeds: number[];
  teacher: { steps: number; batchSize: number; lr: number; embedDim: number; depth: number; numHeads: number };
  classifier: { steps: number; batchSize: number; lr: number };
  vae: { steps: number; batchSize: number; lr: number; blockOutChannels: number[] };
  /** Training images the latent mean/std (mean_std.json) are computed over. */
  statsImages: number;
  sit: { steps: number; batchSize: number; lr: number; depth: number; hiddenSize: number; numHeads: number; emaDecay: number };
  /** Samples per VAE and sampler, the sampler's time-grid points, the CFG scale. */
  samples: number;
  samplingSteps: number;
  cfgScale: number;
  /** Test images: the reference batch of FID/precision/recall, reconstruction error, classifier accuracy. */
  testImages: number;
  head: { images: number; steps: number };
}

export type Variant = 'plain' | 'reals';
export const VARIANTS: readonly Variant[] = ['plain', 'reals'];
export type SamplerName = 'ode' | 'sde';
export const SAMPLERS: readonly SamplerName[] = ['ode', 'sde'];

/** One step of the run: what it did, the command that does it alone (null: no command, demo only), its time. */
export interface StepRecord { name: string; command: string | null; seconds: number }

export interface SampleScores { fid: number; precision: number; recall: number; classAccuracy: number; samples: number; reference: number }
export interface ReconstructionScores { mse: number; images: number }
export interface HeadScores { mIoU: number; pixelAccuracy: number; train: number; heldOut: number }

export interface VariantResult {
  reconstruction: ReconstructionScores;
  sampling: Record<SamplerName, SampleScores>;
  headLatent: HeadScores;
  /** ReaLS only: the head on the alignment MLPs' features. */
  headMlp: HeadScores | null;
}

export interface DemoResult {
  profile: DemoProfile;
  out: string;
  threads: number;
  teacher: { testAccuracy: number; params: number; checkpoint: string; configPath: string };
  classifier: { testAccuracy: number; checkpoint: string };
  /** By seed, then variant. */
  runs: Record<string, Record<Variant, VariantResult>>;
  steps: StepRecord[];
  totalSeconds: number;
}

/** The files each number of a VariantResult is written to (relative to the seed's variant folder). */
export const RESULT_FILES = {
  reconstruction: 'reconstruction.json', ode: 'eval-ode.json', sde: 'eval-sde.json', headLatent: 'head-latent.json', headMlp: 'head-mlp.json',
} as const;
