// The alignment study (docs/study/alignment/PROTOCOL.md): at a latent width where the plain VAE's
// latents are hard to diffuse, does aligning them with a teacher make the SiT's samples better at
// equal SiT steps? One cell = (latent channels C, arm, teacher, seed S): the stage-1 VAE of the
// latent-channel study's cell (C, S) fine-tuned by one arm, then the same evaluation as that study
// (rFID, iFID, a SiT on the latents, FID / precision / recall at four checkpoints). Every arm of a
// seed fine-tunes the same VAE with the same steps, lr, batch, data order and seed; only the loss
// changes. The control is that fine-tuning with no alignment term.
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runAlignTrain, type AlignTrainRunOptions } from '../pipelines/align.js';
import { HOG_TEACHER_NAME } from '../models/hog.js';
import { fileSha256 } from '../io/index.js';
import { VF_ALIGN_OPTIONS, commandWords, finalLoss, vaeTrainOptions } from './pipeline.js';
import {
  CHANNEL_STUDY_PROFILES, STUDY_PRECISION, cellEnvironment, pinStudyComputation, convertStage, readJson, scoreLatentSpace, stageRunner, studyClassifier, studyConfigs, summary,
  trainResumable, trainStageOneVae, writeJsonAtomic, type ChannelCellMetrics, type ChannelStudyProfile, type ClassifierRecord, type LatentSpaceScores,
  type StageRecord,
} from './study.js';

/** The ViT teachers' input side: the images' own, one token per latent position for patch 4 and f4. */
const STUDY_IMAGE_SIZE = 32;

/** The fine-tuning every arm runs from the stage-1 VAE, and the alignment weight of the cos arms. */
export interface AlignStudyProfile {
  name: string;
  /** Stage 1 and the evaluation: the latent-channel study's profile of the same name. */
  base: ChannelStudyProfile;
  finetune: { steps: number; lr: number };
  /** --patch-weight (and --cls-weight where the arm has a CLS term) of the cos arms: the demo's 0.25. */
  alignWeight: number;
}

export const ALIGN_STUDY_PROFILES: Record<'test' | 'study', AlignStudyProfile> = {
  test: { name: 'test', base: CHANNEL_STUDY_PROFILES.test, finetune: { steps: 4, lr: 2e-4 }, alignWeight: 0.25 },
  study: { name: 'study', base: CHANNEL_STUDY_PROFILES.study, finetune: { steps: 600, lr: 2e-4 }, alignWeight: 0.25 },
};
export type AlignStudyProfileName = keyof typeof ALIGN_STUDY_PROFILES;

type ArmOptions = Pick<AlignTrainRunOptions, 'alignLoss' | 'patchWeight' | 'clsWeight' | 'teacherNorm' | 'eqWeight'>;

interface Arm {
  /** What the arm is, for the tables. */
  description: string;
  /** A teacher-free arm names HOG only because `reals align train` needs a teacher; no alignment term reaches its VAE. */
  teacherFree: boolean;
  /** `reals align train`'s settings that make the arm, given the profile's alignment weight. */
  options: (alignWeight: number) => ArmOptions;
}

export const ALIGN_ARMS = {
  control: {
    description: 'the fair control: the same fine-tuning with no alignment term', teacherFree: true,
    options: () => ({ patchWeight: 0, clsWeight: 0 }),
  },
  cos: {
    description: 'ReaLS: 1 - cos per patch token and for the CLS token (MLP projectors)', teacherFree: false,
    options: (w) => ({ alignLoss: 'cos', patchWeight: w, clsWeight: w }),
  },
  vf: {
    description: 'VA-VAE\'s vision-foundation loss (margin cosine + distance matrices, adaptive weight 0.1), no CLS term', teacherFree: false,
    options: () => VF_ALIGN_OPTIONS,
  },
  patch: {
    description: 'patch-only cos alignment to spatially normalised teacher tokens (iREPA\'s targets), no CLS term', teacherFree: false,
    options: (w) => ({ alignLoss: 'cos', patchWeight: w, clsWeight: 0, teacherNorm: 'spatial' }),
  },
  eq: {
    description: 'EQ-VAE alone (weight 1, scale and rotation), no teacher', teacherFree: true,
    options: () => ({ patchWeight: 0, clsWeight: 0, eqWeight: 1 }),
  },
} satisfies Record<string, Arm>;
export type AlignArm = keyof typeof ALIGN_ARMS;
export const ALIGN_ARM_NAMES = Object.keys(ALIGN_ARMS) as AlignArm[];

/** The teachers of the study (docs/study/teachers/): where each one's files are, and how to make them when they are missing. */
export const ALIGN_TEACHERS = ['hog', 'supervised', 'ssl'] as const;
export type AlignTeacher = typeof ALIGN_TEACHERS[number];

export interface TeacherUse { name: AlignTeacher | 'none'; dinoModel: string; dinoCkpt: string | null; sha256: string | null }

/**
 * Where the study keeps the self-supervised teacher's export once the long run has made it. The run
 * takes hours and machines do not keep their work folders, so the 0.8 MB export is committed and
 * every `ssl` cell uses the same teacher (its sha256 is in each cell).
 */
export const SSL_TEACHER_DIR = fileURLToPath(new URL('../../docs/study/teachers/ssl-long', import.meta.url));

/**
 * The files of `teacher`: the supervised one under the study's work folder; the self-supervised one
 * in `sslDir` (the committed export), else the long run's own export in the work folder. An error
 * says how to make them when they are not there.
 */
export function teacherUse(teacher: AlignTeacher | 'none', work: string, sslDir = SSL_TEACHER_DIR): TeacherUse {
  if (teacher === 'none' || teacher === 'hog') return { name: teacher, dinoModel: HOG_TEACHER_NAME, dinoCkpt: null, sha256: null };
  const [dir, make] = teacher === 'supervised'
    ? [join(work, 'teachers', 'supervised'), 'node --import tsx scripts/teacher-study.ts measure supervised']
    : existsSync(join(sslDir, 'dino-teacher.safetensors'))
      ? [sslDir, `it is committed there; restore it with git checkout -- ${sslDir}`]
      : [join(work, 'teacher-long', '000-teacher', 'teacher'), 'bash scripts/teacher-long.sh (it exports the teacher at its last step)'];
  const dinoModel = join(dir, 'dino-model.json');
  const dinoCkpt = join(dir, 'dino-teacher.safetensors');
  for (const path of [dinoModel, dinoCkpt]) if (!existsSync(path)) throw new Error(`${path}: the ${teacher} teacher is not there; ${make} makes it`);
  return { name: teacher, dinoModel, dinoCkpt, sha256: fileSha256(dinoCkpt) };
}

/** The prefix of stage 1's records in a cell's stages. */
export const STAGE_ONE = 'stage 1: ';

/** `c<C>-<arm>-<teacher>-seed<S>`; a teacher-free arm has no teacher in its name. */
export function alignCellName(channels: number, arm: AlignArm, teacher: AlignTeacher | 'none', seed: number): string {
  return ALIGN_ARMS[arm].teacherFree ? `c${channels}-${arm}-seed${seed}` : `c${channels}-${arm}-${teacher}-seed${seed}`;
}

export interface AlignCellMetrics extends LatentSpaceScores {
  study: 'alignment';
  profile: AlignStudyProfile;
  channels: number;
  seed: number;
  arm: AlignArm;
  armDescription: string;
  teacher: TeacherUse;
  /** `reals align train`'s settings of the arm (beside the fine-tuning every arm shares). */
  armOptions: ArmOptions;
  classifier: ClassifierRecord;
  stageOne: { steps: number; finalLoss: number };
  /** The last logged reconstruction and alignment terms of the fine-tuning (align: null where the arm has none). */
  finetune: { steps: number; finalRec: number; finalAlign: number | null };
  /** Stage 1's records first (named `stage 1: …`, shared by every arm of the seed), then the cell's own. */
  stages: StageRecord[];
  environment: ChannelCellMetrics['environment'];
  /** The cell's own stages (fine-tuning and evaluation), without stage 1, which every arm of the seed shares. */
  wallSeconds: number;
  cpuSeconds: number;
}

export interface AlignCellOptions {
  profile: AlignStudyProfile;
  channels: number;
  arm: AlignArm;
  /** Ignored by the teacher-free arms (control, eq). */
  teacher: AlignTeacher;
  seed: number;
  work: string;
  /** Where the metrics file <cell>.json goes. */
  out: string;
  log?: (line: string) => void;
}

/** One alignment cell: returns its metrics, and whether its metrics file already existed (then nothing runs). */
export async function runAlignCell(options: AlignCellOptions): Promise<{ path: string; skipped: boolean; metrics: AlignCellMetrics }> {
  const { profile, channels, arm, seed } = options;
  const base = profile.base;
  const log = options.log ?? ((line: string) => console.log(line));
  const teacher = teacherUse(ALIGN_ARMS[arm].teacherFree ? 'none' : options.teacher, options.work);
  const name = alignCellName(channels, arm, teacher.name, seed);
  const path = join(options.out, `${name}.json`);
  if (existsSync(path)) {
    log(`${path} exists: cell ${name} is done`);
    return { path, skipped: true, metrics: readJson<AlignCellMetrics>(path) };
  }
  pinStudyComputation();
  mkdirSync(options.out, { recursive: true });
  const classifier = await studyClassifier(base, options.work, log);
  const stageOne = await trainStageOneVae({ profile: base, channels, seed, work: options.work, log });
  const stages: StageRecord[] = stageOne.stages.map((s) => ({ ...s, name: `${STAGE_ONE}${s.name}` }));

  const dir = join(options.work, `align-${profile.name}`, name);
  const { stage, stages: own } = stageRunner(join(dir, 'stages'), name, log);
  const armOptions = ALIGN_ARMS[arm].options(profile.alignWeight);
  const { vaeConfigPath } = studyConfigs(base, options.work, channels);
  const resultsDir = join(dir, 'vae');
  const finetune: AlignTrainRunOptions = {
    ...vaeTrainOptions({
      alignWeight: profile.alignWeight, startFrom: stageOne.vaePath, profile: { vae: { ...base.vae, latentChannels: channels }, finetune: profile.finetune },
      teacher: { configPath: teacher.dinoModel, checkpoint: teacher.dinoCkpt }, teacherInput: STUDY_IMAGE_SIZE, vaeConfigPath, resultsDir, seed,
    }),
    ckptEvery: Math.max(1, Math.floor(profile.finetune.steps / 2)), precision: STUDY_PRECISION,
    ...armOptions,
  };
  const tuned = await stage('vae-finetune', `fine-tune the stage-1 VAE: ${arm}${ALIGN_ARMS[arm].teacherFree ? '' : ` with the ${teacher.name} teacher`}`,
    commandWords(['align', 'train'], finetune), async () => {
      const runDir = await trainResumable(resultsDir, profile.finetune.steps, (resume) => runAlignTrain({ ...finetune, resume, log }));
      const aligned = (finetune.patchWeight ?? 0) > 0 || finetune.alignLoss === 'vf';
      return { runDir, finalRec: finalLoss(runDir, 'rec'), finalAlign: aligned ? finalLoss(runDir, 'align') : null };
    });
  const vaePath = join(dir, 'vae-diffusers');
  await convertStage(stage, tuned.runDir, vaePath, base, seed, log);
  const scores = await scoreLatentSpace({ profile: base, channels, seed, work: options.work, dir, vaePath, classifier: classifier.model, stage, log });
  stages.push(...own);

  const metrics: AlignCellMetrics = {
    study: 'alignment', profile, channels, seed, arm, armDescription: ALIGN_ARMS[arm].description, teacher, armOptions, classifier: classifier.record,
    stageOne: { steps: base.vae.steps, finalLoss: stageOne.finalLoss },
    finetune: { steps: profile.finetune.steps, finalRec: tuned.finalRec, finalAlign: tuned.finalAlign },
    ...scores, stages, environment: cellEnvironment(),
    wallSeconds: own.reduce((sum, s) => sum + s.seconds, 0),
    cpuSeconds: own.reduce((sum, s) => sum + s.cpuSeconds, 0),
  };
  writeJsonAtomic(path, metrics);
  log(`\nwrote ${path}: ${summary(metrics)}`);
  return { path, skipped: false, metrics };
}
