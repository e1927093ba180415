// What a demo run records: its profile, the latent spaces it compared, each one's scores, its steps
// and their times, and the files the scores are written to (the report reads the same values).
import type { AlignLossKind } from '../models/alignment.js';

export interface DemoProfile {
  name: string;
  /** Seeds of the VAE → SiT → sampling → scoring chain (the teachers and the classifier are trained once). */
  seeds: number[];
  /** The supervised stand-in teacher (the ablation's). */
  teacher: { steps: number; batchSize: number; lr: number; embedDim: number; depth: number; numHeads: number };
  /** The self-supervised teacher (`reals teacher train`), of the same architecture. */
  sslTeacher: {
    steps: number; batchSize: number; lr: number; localCrops: number;
    /** teacher.teacher_temp and teacher.warmup_teacher_temp, and the teacher's starting EMA momentum (docs/reproduction.md says why). */
    teacherTemp: number; warmupTeacherTemp: number; momentumTeacher: number;
    /** optim.layerwise_decay and optim.patch_embed_lr_mult. */
    layerwiseDecay: number; patchEmbedLrMult: number;
  };
  classifier: { steps: number; batchSize: number; lr: number };
  /** Stage 1: the plain VAE trained from scratch (the stand-in for the pretrained SD-VAE); also each from-scratch ReaLS VAE. */
  vae: {
    steps: number; batchSize: number; lr: number; blockOutChannels: number[];
    /** The latents' width (`reals demo --latent-channels`): 8 in every profile, the alignment study's regime (study-finding.ts). */
    latentChannels: number;
  };
  /** Stage 2: the fine-tuning of the stage-1 VAE, with (ReaLS) and without (control) the alignment loss. */
  finetune: { steps: number; lr: number };
  /** Training images the latent mean/std (mean_std.json) are computed over. */
  statsImages: number;
  sit: { steps: number; batchSize: number; lr: number; depth: number; hiddenSize: number; numHeads: number; emaDecay: number };
  /** Fractions of the SiT steps at which its checkpoint is sampled and scored (the last is 1). */
  sitEvalFractions: number[];
  /** Samples per latent space, sampler and checkpoint; the sampler's time-grid points; the CFG scale. */
  samples: number;
  samplingSteps: number;
  cfgScale: number;
  /** Test images: the reference batch of FID/precision/recall and rFID, reconstruction error, classifier accuracy. */
  testImages: number;
  head: { images: number; steps: number };
}

/** SD-VAE's latent width, 4: writeVaeConfig's default, and the width of demo runs that recorded none (before `--latent-channels`). */
export const DEFAULT_LATENT_CHANNELS = 4;

/** ssl: `reals teacher train`'s ViT; supervised: the ablation's ViT classifier; hog: the training-free HOG teacher (`--dino-model hog`). */
export type TeacherKind = 'ssl' | 'supervised' | 'hog';
export const TEACHER_KINDS: readonly TeacherKind[] = ['ssl', 'supervised', 'hog'];
/** The alignment losses: ReaLS's cosine (`cos`), or VA-VAE's vision-foundation loss (`vf`, `--align-loss vf`). */
export const ALIGN_LOSSES: readonly AlignLossKind[] = ['cos', 'vf'];
/** finetune: the paper's (stage-1 VAE fine-tuned with the alignment loss); scratch: a ReaLS VAE trained from scratch. */
export type Protocol = 'finetune' | 'scratch';
export const PROTOCOLS: readonly Protocol[] = ['finetune', 'scratch'];

/**
 * Which latent spaces a run compares: every ReaLS variant is a teacher × protocol × loss, and a cos
 * variant also an alignment weight (a vf variant has VA-VAE's adaptive weight, so one per teacher × protocol).
 */
export interface DemoCells {
  teachers: TeacherKind[];
  protocols: Protocol[];
  /** The weights of the cos variants. */
  alignWeights: number[];
  losses: AlignLossKind[];
}

/**
 * One latent space: `pretrained` (stage 1, the paper's baseline; also the plain from-scratch VAE),
 * `control` (stage 1 fine-tuned without alignment), or a ReaLS VAE.
 */
export interface LatentSpace {
  id: string;
  label: string;
  role: 'pretrained' | 'control' | 'reals';
  protocol: Protocol | null;
  teacher: TeacherKind | null;
  /** The alignment loss of a ReaLS VAE; null for the pretrained VAE and the control, which have none. */
  loss: AlignLossKind | null;
  /** --patch-weight and --cls-weight: 0 without alignment; null with the vf loss, whose weight is VA-VAE's adaptive one. */
  alignWeight: number | null;
}

export type SamplerName = 'ode' | 'sde';
export const SAMPLERS: readonly SamplerName[] = ['ode', 'sde'];

/** One step of the run: what it did, the command that does it alone (null: no command, demo only), its time. */
export interface StepRecord { name: string; command: string | null; seconds: number }

export interface SampleScores { fid: number; precision: number; recall: number; classAccuracy: number; samples: number; reference: number }
/** Reconstruction MSE (images in [-1, 1]) and rFID: reconstructions of the test images against the test images, in the classifier's features. */
export interface ReconstructionScores { mse: number; rfid: number; images: number }
export interface HeadScores { mIoU: number; pixelAccuracy: number; train: number; heldOut: number }
/** ODE samples of the SiT checkpoint at `step` (the curve over training). */
export interface CurvePoint { step: number; ode: SampleScores }

export interface LatentSpaceResult {
  reconstruction: ReconstructionScores;
  /** At the checkpoints of profile.sitEvalFractions, in order; the last is the final step. */
  curve: CurvePoint[];
  /** The final checkpoint, both samplers. */
  sampling: Record<SamplerName, SampleScores>;
  /** Mean SiT training loss over the last logged interval. */
  sitFinalLoss: number;
  headLatent: HeadScores;
  /** ReaLS only: the head on the alignment MLPs' features. */
  headMlp: HeadScores | null;
}

export interface TeacherRecord {
  kind: TeacherKind;
  /** Supervised: test accuracy of its own classification layer; self-supervised and HOG: null. */
  testAccuracy: number | null;
  /** Linear probe on its frozen features (CLS + mean patch token; HOG's CLS is its mean token), trained on train images, scored on test images. */
  probeAccuracy: number;
  /** The same probe on a randomly initialised backbone of the same config; null for HOG, which has no weights. */
  randomProbeAccuracy: number | null;
  /** 0 for HOG. */
  params: number;
  /** `--dino-ckpt`; null for HOG. */
  checkpoint: string | null;
  /** `--dino-model`: the ViT's config.json, or `hog`. */
  configPath: string;
}

export interface DemoResult {
  profile: DemoProfile;
  cells: DemoCells;
  spaces: LatentSpace[];
  out: string;
  /** torch threads: --threads, or reals' defaults by precision (torch.runThreads) where it was not given. */
  threads: number | { bf16: number; fp32: number };
  teachers: Partial<Record<TeacherKind, TeacherRecord>>;
  classifier: { testAccuracy: number; checkpoint: string };
  /** By seed, then latent-space id. */
  runs: Record<string, Record<string, LatentSpaceResult>>;
  steps: StepRecord[];
  /** The page of `reals export web` with the first ReaLS space's SiT, VAE and head: its folder, or why there is none. */
  webPage: { dir: string } | { error: string } | null;
  totalSeconds: number;
}

/** The files each number of a LatentSpaceResult is written to (relative to the seed's latent-space folder). */
export const RESULT_FILES = {
  reconstruction: 'reconstruction.json', curve: 'eval-curve.json', ode: 'eval-ode.json', sde: 'eval-sde.json', sit: 'sit.json',
  headLatent: 'head-latent.json', headMlp: 'head-mlp.json',
} as const;

/** `0.5` → `0.5`, as a folder-name-safe word. */
function weightWord(weight: number): string {
  return String(weight).replace('.', 'p');
}

/** How labels name each teacher. */
const TEACHER_NAMES: Record<TeacherKind, string> = { ssl: 'self-supervised', supervised: 'supervised', hog: 'HOG' };

/**
 * The latent spaces of `cells`, the pretrained one first and (when fine-tuning) the control second;
 * then per protocol and teacher the cos spaces (`reals-finetune-ssl-w0p25`), one per weight, and the vf one (`reals-finetune-hog-vf`).
 */
export function latentSpaces(cells: DemoCells): LatentSpace[] {
  const spaces: LatentSpace[] = [
    { id: 'pretrained', label: 'pretrained VAE (stage 1)', role: 'pretrained', protocol: null, teacher: null, loss: null, alignWeight: 0 },
  ];
  if (cells.protocols.includes('finetune')) {
    spaces.push({ id: 'control', label: 'control (stage 1 fine-tuned, no alignment)', role: 'control', protocol: 'finetune', teacher: null, loss: null, alignWeight: 0 });
  }
  for (const protocol of PROTOCOLS.filter((p) => cells.protocols.includes(p))) {
    const how = protocol === 'finetune' ? 'fine-tuned' : 'from scratch';
    for (const teacher of TEACHER_KINDS.filter((t) => cells.teachers.includes(t))) {
      const reals = { role: 'reals', protocol, teacher } as const;
      if (cells.losses.includes('cos')) {
        for (const alignWeight of cells.alignWeights) {
          spaces.push({
            ...reals, id: `reals-${protocol}-${teacher}-w${weightWord(alignWeight)}`, loss: 'cos', alignWeight,
            label: `ReaLS (${how}, ${TEACHER_NAMES[teacher]} teacher, weight ${alignWeight})`,
          });
        }
      }
      if (cells.losses.includes('vf')) {
        spaces.push({
          ...reals, id: `reals-${protocol}-${teacher}-vf`, loss: 'vf', alignWeight: null,
          label: `ReaLS (${how}, ${TEACHER_NAMES[teacher]} teacher, VA-VAE's vf loss)`,
        });
      }
    }
  }
  return spaces;
}

/** What each ReaLS space is compared with: the control when fine-tuned (same start, same steps), the stage-1 VAE from scratch (same steps). */
export function baselineOf(space: LatentSpace): string {
  return space.protocol === 'finetune' ? 'control' : 'pretrained';
}
