// `reals teacher train`: a DINOv2-architecture ViT (src/models/dinov2.ts) trained without labels by
// DINOv2's self-distillation (facebookresearch/dinov2: dinov2/train/ssl_meta_arch.py and
// train.py), for domains or machines without DINOv2 weights. A student (backbone, DINO head on CLS
// tokens, iBOT head on masked patch tokens) learns to predict, from every crop, the teacher's
// centered and sharpened softmax of the other global crop (DINO), and from masked global crops the
// teacher's patch distributions at the masked positions (iBOT); KoLeo spreads the student's CLS
// tokens. The teacher is the EMA of the student and is what gets exported and evaluated, as
// upstream.
//
// As upstream: AdamW with DINOv2's parameter groups (no weight decay on biases, norms and
// LayerScale; optional layer-wise lr decay and patch-embedding lr factor), lr warm-up then cosine,
// weight decay cosine 0.04 -> 0.4, teacher momentum cosine to 1, a teacher-temperature warm-up,
// the last layers' lr 0 at first, gradient clipping at 3.0 per student part. Upstream's epochs
// become steps: warm-ups and the freeze are fractions of the run (10%, 30%, 1%) unless given. A few
// defaults differ from upstream's for short runs of small models (SELF_SUPERVISED_DEFAULTS says
// which and why).
// Not here: drop path (the backbone has none), Gaussian blur (src/data/multicrop.ts says why),
// Sinkhorn-Knopp centering, several processes.
//
// The data is read as images only: the loader gets a view of the dataset whose labels are all 0,
// so no label can reach a loss. Labels are used afterwards, by the linear probe (src/eval), and
// only when the caller passes labelled probe sets.
//
// Checkpoints (src/train/checkpoint.ts): `student.*` and `teacher.*` (backbone.*, dino_head.*,
// ibot_head.*), `opt.*` (AdamW), `loss.*` (dino_loss.center, ibot_patch_loss.center); metadata: args,
// step, epoch, batch, RNG state, optimizer groups, and `teacher_config`, which must match on resume.
// One file past 500 lines: the recipe (losses, centering, schedules, the step) reads top to bottom, as DINOv2's train loop.
import { join } from 'node:path';
import * as torch from '../torch/index.js';
import type { Tensor } from '../torch/index.js';
import * as nn from '../nn/index.js';
import * as optim from '../optim/index.js';
import { checkWritableDir, makeDirs, saveSafetensors, writeJsonFileAtomic } from '../io/index.js';
import { DINOV2_CONFIGS, DinoVisionTransformer, preprocessImages, type DinoV2Config } from '../models/dinov2.js';
import {
  DINOHead, DINOLoss, IBOTPatchLoss, dinoCrossViewLosses, koleoLoss, maskWeights, type DINOHeadConfig,
} from '../models/dino-head.js';
import { DataLoader, type Dataset, type ImageFileDataset, type InMemoryDataset } from '../data/index.js';
import { linearProbe } from '../eval/linear-probe.js';
import {
  checkResumeLayout, checkpointPosition, loadCheckpoint, optimizerToCheckpoint, restoreTrainingRng, trainingRngMetadata, type Checkpoint,
} from './checkpoint.js';
import { createRunDir, resolveResume, checkFinite } from './run-dir.js';
import { openRunOutputs } from './context.js';
import { processContext, withDefaults } from '../runlog/process.js';
import { StopSignal } from './stop.js';
import { progress as makeProgress, type Progress } from '../runlog/progress.js';
import { ibotMasks, multiCrop, type MaskOptions, type MultiCropOptions } from '../data/multicrop.js';

/** The file names of the exported teacher: what `--dino-model` and `--dino-ckpt` take. */
export const TEACHER_CONFIG_NAME = 'dino-model.json';
export const TEACHER_WEIGHTS_NAME = 'dino-teacher.safetensors';

/** The self-distillation settings, named after DINOv2's config keys (ssl_default_config.yaml). */
export interface SelfSupervisedSettings extends MultiCropOptions, MaskOptions {
  /** dino.head_n_prototypes (upstream 65536). */
  headNPrototypes: number;
  /** dino.head_hidden_dim (upstream 2048). */
  headHiddenDim: number;
  /** dino.head_bottleneck_dim (upstream 256). */
  headBottleneckDim: number;
  /** dino.head_nlayers (3). */
  headNlayers: number;
  /** DINO's norm_last_layer: the heads' last-layer norms weight_g fixed at 1 (default true); false trains them, as DINOv2. */
  normLastLayer: boolean;
  /** ibot.separate_head: an iBOT head of its own (default true), or the DINO head for patches too. */
  ibotSeparateHead: boolean;
  /** dino.loss_weight (1), ibot.loss_weight (1), dino.koleo_loss_weight (0.1). */
  dinoLossWeight: number;
  ibotLossWeight: number;
  koleoLossWeight: number;
  /** Student softmax temperature (0.1) and the centers' momentum (0.9), as DINOLoss. */
  studentTemp: number;
  centerMomentum: number;
  /** teacher.teacher_temp (upstream 0.07, here 0.04), reached linearly from warmup_teacher_temp (0.04) over warmupTeacherTempSteps. */
  teacherTemp: number;
  warmupTeacherTemp: number;
  /** teacher.momentum_teacher (upstream 0.992, here 0.98) -> final_momentum_teacher (1), cosine over the run. */
  momentumTeacher: number;
  finalMomentumTeacher: number;
  /** optim.weight_decay (0.04) -> weight_decay_end (0.4), cosine over the run. */
  weightDecay: number;
  weightDecayEnd: number;
  /** optim.min_lr (1e-6): where the cosine ends. */
  minLr: number;
  /** optim.clip_grad (3.0), per student part (backbone, each head); 0 turns clipping off. */
  clipGrad: number;
  /** optim.layerwise_decay and optim.patch_embed_lr_mult (upstream 0.9 and 0.2, here 1 and 1). */
  layerwiseDecay: number;
  patchEmbedLrMult: number;
  /** optim.adamw_beta1, adamw_beta2. */
  adamwBeta1: number;
  adamwBeta2: number;
}

/**
 * Defaults: DINOv2's, except where its values are for 100 ImageNet epochs of ViT-S and larger and a
 * run here is a few hundred steps of a small ViT (chosen on Fashion-MNIST, a 64-wide 4-block ViT,
 * batch 64, by the linear probe after 300 steps: 0.48 with upstream's values, 0.57 with these):
 * - heads of 1024 prototypes, hidden 256, bottleneck 64 (upstream 65536, 2048, 256);
 * - teacher temperature 0.04 throughout (upstream warms up from 0.04 to 0.07): at 0.07 the teacher's
 *   outputs drift to uniform within 100 steps (entropy 6.8 of log K = 6.9);
 * - teacher momentum 0.98 (0.992), so that the teacher follows a short run;
 * - no layer-wise lr decay and no patch-embedding lr factor (0.9 and 0.2): both slow a backbone
 *   trained from scratch for a few hundred steps;
 * - 2 global crops of 32 and 6 local crops of 16 px, for 32 px images (224 and 8 x 96).
 */
export const SELF_SUPERVISED_DEFAULTS: SelfSupervisedSettings = {
  globalCropsSize: 32, globalCropsScale: [0.32, 1.0], localCropsNumber: 6, localCropsSize: 16, localCropsScale: [0.05, 0.32],
  maskRatioMinMax: [0.1, 0.5], maskSampleProbability: 0.5,
  headNPrototypes: 1024, headHiddenDim: 256, headBottleneckDim: 64, headNlayers: 3, normLastLayer: true, ibotSeparateHead: true,
  dinoLossWeight: 1, ibotLossWeight: 1, koleoLossWeight: 0.1, studentTemp: 0.1, centerMomentum: 0.9,
  teacherTemp: 0.04, warmupTeacherTemp: 0.04, momentumTeacher: 0.98, finalMomentumTeacher: 1,
  weightDecay: 0.04, weightDecayEnd: 0.4, minLr: 1e-6, clipGrad: 3.0, layerwiseDecay: 1, patchEmbedLrMult: 1,
  adamwBeta1: 0.9, adamwBeta2: 0.999,
};

/** The labelled images the linear probe trains and tests on (evaluation only). */
export interface ProbeData {
  train: Dataset;
  test: Dataset;
  /** Images drawn from each split (default 2000). */
  images?: number;
}

export interface SelfSupervisedTeacherOptions extends Partial<SelfSupervisedSettings> {
  /** The backbone: DinoV2Config fields over dinov2_vits14's (e.g. imgSize 32, patchSize 4, embedDim 64, depth 4, numHeads 4). */
  config: Partial<DinoV2Config>;
  /** The training images (any src/data Dataset, 3 channels); its labels are never read. */
  dataset: Dataset;
  /** A new run goes to `<resultsDir>/NNN-teacher`. */
  resultsDir: string;
  /** The exported teacher backbone's folder (default `<run>/teacher`). */
  out?: string;
  /** Continue a run: a checkpoint file, a run folder or its checkpoints folder. */
  resume?: string;
  /** Linear probe of the exported teacher and of a random-init backbone at the end; none when absent. */
  probe?: ProbeData;
  batchSize: number;
  /** Stop after this many steps (default: epochs of the data). The schedules span the run's steps. */
  maxSteps?: number;
  /** Passes over the data (default 100, optim.epochs), unless maxSteps stops earlier. */
  epochs?: number;
  /** Peak AdamW learning rate (default DINOv2's base_lr 0.004 scaled by sqrt(batchSize / 1024)). */
  lr?: number;
  /** Linear lr warm-up (default 10% of the run), teacher-temperature warm-up (30%), last layers frozen (1%). */
  warmupSteps?: number;
  warmupTeacherTempSteps?: number;
  freezeLastLayerSteps?: number;
  /** Seeds the initialisation, the crops and masks (CPU generator) and the data order (default 0). */
  seed?: number;
  /** Steps between checkpoints (default 1000); one is also written at the end. */
  ckptEvery?: number;
  keepLast?: number;
  /** Steps between metrics.jsonl/TensorBoard records (default 20). */
  logEvery?: number;
  /** Image decoding threads for folder datasets (default: the loader's). */
  numWorkers?: number;
  device?: torch.Device;
  /**
   * The backbone and head forwards under bfloat16 autocast ('bf16'), or not ('fp32', default);
   * 'auto' picks bf16 on CUDA and bfloat16-capable CPUs. The losses, centers, weights and AdamW
   * state stay float32; the linear probe runs in float32. The checkpoints' metadata records it.
   */
  precision?: torch.Precision;
  /** Saved in the checkpoints' metadata (the CLI's flags). */
  args?: Record<string, unknown>;
  log?: (line: string) => void;
  progressStream?: NodeJS.WritableStream & { isTTY?: boolean };
}

export interface SelfSupervisedTeacherResult {
  runDir: string;
  /** `--dino-model` and `--dino-ckpt` of `reals align train`: the full DinoV2Config as JSON and the EMA teacher backbone (torch-hub names, safetensors). */
  configPath: string;
  checkpoint: string;
  /** The last training checkpoint. */
  runCheckpoint: string;
  /** Linear-probe test accuracy of the teacher and of a randomly initialised backbone of the same config (null without probe data). */
  probeAccuracy: number | null;
  randomProbeAccuracy: number | null;
  probeImages: { train: number; test: number } | null;
  /** The mean total loss over the last logEvery steps. */
  finalLoss: number;
  /** Backbone parameters. */
  params: number;
  steps: number;
  /** Training steps per second of this process (without the probe). */
  stepsPerSec: number;
}

/** The student's or the teacher's modules, under SSLMetaArch's names. */
class SelfDistillationModel extends nn.Module {
  readonly backbone: DinoVisionTransformer;
  readonly dinoHead: DINOHead;
  readonly ibotHead: DINOHead | null;

  constructor(config: DinoV2Config, dinoHead: DINOHeadConfig, ibotHead: DINOHeadConfig | null) {
    super();
    this.backbone = this.addModule('backbone', new DinoVisionTransformer(config));
    this.dinoHead = this.addModule('dino_head', new DINOHead(dinoHead));
    this.ibotHead = ibotHead === null ? null : this.addModule('ibot_head', new DINOHead(ibotHead));
  }

  /** The head iBOT scores patch tokens with. */
  get patchHead(): DINOHead { return this.ibotHead ?? this.dinoHead; }
}

/** The centers of both losses, saved as `loss.dino_loss.center` and `loss.ibot_patch_loss.center`. */
class Centers extends nn.Module {
  constructor(readonly dino: DINOLoss, readonly ibot: IBOTPatchLoss) {
    super();
    this.addModule('dino_loss', dino);
    this.addModule('ibot_patch_loss', ibot);
  }
}

/** A view of `dataset` whose every label is 0: the trainer's loader cannot hand a real label on. */
export function imagesOnly(dataset: Dataset): Dataset {
  if ('path' in dataset) {
    const files = dataset as ImageFileDataset;
    return { length: files.length, resolution: files.resolution, path: (i) => files.path(i), label: () => 0 } satisfies ImageFileDataset;
  }
  const memory = dataset as InMemoryDataset;
  return { length: memory.length, itemShape: memory.itemShape, image: (i) => memory.image(i), label: () => 0 } satisfies InMemoryDataset;
}

/** dinov2.utils.CosineScheduler at iteration `it`: linear warm-up from startWarmup, then cosine from base to final. */
export function cosineSchedule(
  o: { base: number; final: number; total: number; warmup?: number; startWarmup?: number; freeze?: number }, it: number,
): number {
  const warmup = o.warmup ?? 0;
  const freeze = o.freeze ?? 0;
  if (it >= o.total) return o.final;
  if (it < freeze) return 0;
  if (it < freeze + warmup) {
    // np.linspace(start, base, warmup): both ends included.
    const i = it - freeze;
    return warmup === 1 ? (o.startWarmup ?? 0) : (o.startWarmup ?? 0) + ((o.base - (o.startWarmup ?? 0)) * i) / (warmup - 1);
  }
  const cosineIters = o.total - warmup - freeze;
  const i = it - warmup - freeze;
  return o.final + 0.5 * (o.base - o.final) * (1 + Math.cos((Math.PI * i) / cosineIters));
}

interface GroupSpec { lrMultiplier: number; wdMultiplier: number; isLastLayer: boolean }

/**
 * get_params_groups_with_decay + fuse_params_groups over the student's parts: parameters grouped by
 * (lr multiplier, weight-decay multiplier, last layer), in first-seen order.
 */
function parameterGroups(student: SelfDistillationModel, o: SelfSupervisedSettings): { groups: optim.ParamGroupInput<optim.AdamOptions>[]; specs: GroupSpec[] } {
  const byKey = new Map<string, { spec: GroupSpec; params: Tensor[] }>();
  const nBlocks = student.backbone.blocks.length;
  for (const [partName, part] of student.namedChildren()) {
    const isBackbone = partName === 'backbone';
    for (const [name, param] of part.namedParameters()) {
      if (!param.requiresGrad) continue;
      let lrMultiplier = 1;
      if (isBackbone) {
        // get_vit_lr_decay_rate with force_is_backbone: embeddings are layer 0, block i is layer i + 1, the final norm layer n + 1.
        let layerId = nBlocks + 1;
        if (/^(pos_embed|patch_embed|mask_token|cls_token)/.test(name)) layerId = 0;
        else if (name.startsWith('blocks.')) layerId = Number(name.split('.')[1]) + 1;
        lrMultiplier = o.layerwiseDecay ** (nBlocks + 1 - layerId);
        if (name.includes('patch_embed')) lrMultiplier *= o.patchEmbedLrMult;
      }
      const wdMultiplier = name.endsWith('.bias') || name.includes('norm') || name.includes('gamma') ? 0 : 1;
      const isLastLayer = name.includes('last_layer');
      const key = `${lrMultiplier}_${wdMultiplier}_${isLastLayer}`;
      const entry = byKey.get(key) ?? { spec: { lrMultiplier, wdMultiplier, isLastLayer }, params: [] };
      entry.params.push(param);
      byKey.set(key, entry);
    }
  }
  const entries = [...byKey.values()];
  return { groups: entries.map((e) => ({ params: e.params })), specs: entries.map((e) => e.spec) };
}

/** Entropy (nats) of each row of probabilities [N, K], averaged; and the entropy of their mean. */
function entropies(p: Tensor): [Tensor, Tensor] {
  const h = (q: Tensor) => q.mul(q.clamp(1e-12).log()).sum(-1).neg();
  return [h(p).mean(), h(p.mean(0))];
}

const LOSS_NAMES = [
  'loss', 'dino_local_crops_loss', 'dino_global_crops_loss', 'dino_loss', 'koleo_loss', 'ibot_loss',
  'teacher_entropy', 'teacher_marginal_entropy', 'ibot_teacher_entropy',
] as const;

/**
 * Trains a DINOv2-architecture teacher by self-distillation and exports its EMA backbone for
 * `reals align train --dino-model <configPath> --dino-ckpt <checkpoint>`.
 *
 * ```ts
 * const result = await trainSelfSupervisedTeacher({
 *   config: { imgSize: 32, patchSize: 4, embedDim: 64, depth: 4, numHeads: 4 },
 *   dataset: new FashionMNIST({ channels: 3 }), batchSize: 64, maxSteps: 600, resultsDir: 'results',
 *   probe: { train: new FashionMNIST({ channels: 3 }), test: new FashionMNIST({ channels: 3, train: false }) },
 * });
 * ```
 */
export async function trainSelfSupervisedTeacher(options: SelfSupervisedTeacherOptions): Promise<SelfSupervisedTeacherResult> {
  const s: SelfSupervisedSettings = withDefaults(SELF_SUPERVISED_DEFAULTS, options);
  const { distributed, rank, worldSize, device, log: contextLog } = processContext(options);
  // Rank 0's lines also go to the run's log.txt once its outputs are open.
  let log = contextLog;
  if (distributed) throw new Error('trainSelfSupervisedTeacher: runs in one process; start it without `reals launch`');
  const precision = torch.usePrecision(options.precision ?? 'fp32', device);
  const config: DinoV2Config = { ...DINOV2_CONFIGS.dinov2_vits14!, ...options.config };
  const batchSize = options.batchSize;
  const seed = options.seed ?? 0;
  const epochs = options.epochs ?? 100;
  const lr = options.lr ?? 0.004 * Math.sqrt(batchSize / 1024);
  validate(s, config, options, lr);
  // Before any work: output folders that cannot be made fail now.
  if (options.resume === undefined) checkWritableDir(options.resultsDir, 'trainSelfSupervisedTeacher: resultsDir');
  if (options.out !== undefined) checkWritableDir(options.out, 'trainSelfSupervisedTeacher: out');

  const dataset = imagesOnly(options.dataset);
  const channels = 'path' in dataset ? 3 : (dataset as InMemoryDataset).itemShape[0];
  if (channels !== config.inChans) throw new Error(`trainSelfSupervisedTeacher: the images have ${channels} channels, the backbone takes ${config.inChans} (Fashion-MNIST: channels 3)`);
  const loader = new DataLoader(dataset, { batchSize, seed, randomFlip: false, numWorkers: options.numWorkers });
  // Full batches only (upstream's drop_last): KoLeo needs two images per crop, and every step sees batchSize images.
  const stepsPerEpoch = Math.floor(loader.sampler.numSamples / batchSize);
  if (stepsPerEpoch < 1) throw new Error(`--batch-size ${batchSize}: the ${loader.sampler.numSamples} images make no full batch; lower it, or give more images`);
  const totalSteps = Math.min(options.maxSteps ?? Infinity, epochs * stepsPerEpoch);
  const warmupSteps = options.warmupSteps ?? Math.round(0.1 * totalSteps);
  const warmupTeacherTempSteps = options.warmupTeacherTempSteps ?? Math.round(0.3 * totalSteps);
  const freezeLastLayerSteps = options.freezeLastLayerSteps ?? Math.round(0.01 * totalSteps);

  const dinoHeadConfig: DINOHeadConfig = {
    inDim: config.embedDim, outDim: s.headNPrototypes, hiddenDim: s.headHiddenDim, bottleneckDim: s.headBottleneckDim, nlayers: s.headNlayers,
    normLastLayer: s.normLastLayer,
  };
  const ibotHeadConfig = s.ibotSeparateHead ? dinoHeadConfig : null;
  const teacherConfig = { backbone: config, dino_head: dinoHeadConfig, ibot_head: ibotHeadConfig };

  torch.manualSeed(seed);
  const student = new SelfDistillationModel(config, dinoHeadConfig, ibotHeadConfig).to(device).train();
  const teacher = new SelfDistillationModel(config, dinoHeadConfig, ibotHeadConfig).to(device).requiresGrad_(false).eval();
  const centers = new Centers(
    new DINOLoss(s.headNPrototypes, s.studentTemp, s.centerMomentum),
    new IBOTPatchLoss(s.headNPrototypes, s.studentTemp, s.centerMomentum),
  ).to(device);
  const { groups, specs } = parameterGroups(student, s);
  const opt = new optim.AdamW(groups, { lr, weightDecay: s.weightDecay, betas: [s.adamwBeta1, s.adamwBeta2] });
  const ema = new optim.EMA(teacher, student);
  const params = student.backbone.parameters().reduce((n, p) => n + p.numel(), 0);

  let step = 0;
  let epoch = 0;
  let batch = 0;
  let runDir: string;
  if (options.resume !== undefined) {
    const resumed = resolveResume(options.resume);
    runDir = resumed.runDir;
    ({ step, epoch, batch } = torch.scope(() => {
      const checkpoint = loadCheckpoint(resumed.checkpoint);
      checkResumeLayout(checkpoint, { worldSize, batchSize });
      const position = restore(checkpoint, teacherConfig, { student, teacher, centers, opt });
      log(`resuming ${resumed.checkpoint} at step ${position.step} (epoch ${position.epoch}, batch ${position.batch})`);
      restoreTrainingRng(checkpoint, { distributed, rank, worldSize, device }, seed, log);
      return position;
    }));
  } else {
    // The teacher starts as the student (prepare_for_distributed_training).
    ema.copyFrom();
    runDir = createRunDir(options.resultsDir, 'teacher').path;
  }
  if (batch >= stepsPerEpoch) [epoch, batch] = [epoch + 1, 0];
  const outputs = openRunOutputs(runDir, 0, {
    lock: true, log, args: options.args ?? {}, keepLast: options.keepLast, resumeStep: options.resume !== undefined ? step : undefined,
  });
  const { lock, checkpoints, metrics, tensorboard } = outputs;
  log = outputs.log;
  log(`teacher: ViT ${config.embedDim}-wide, depth ${config.depth}, patch ${config.patchSize}: ${params.toLocaleString('en-US')} backbone parameters; ` +
    `heads ${s.headNPrototypes} prototypes (hidden ${s.headHiddenDim}, bottleneck ${s.headBottleneckDim}${s.ibotSeparateHead ? ', separate iBOT head' : ', shared'}); ` +
    `2 global crops of ${s.globalCropsSize} + ${s.localCropsNumber} local of ${s.localCropsSize}; batch ${batchSize}, lr ${lr.toPrecision(3)}, ` +
    `${totalSteps} steps; run folder ${runDir}`);
  const bar: Progress = makeProgress({ total: totalSteps, label: 'teacher', start: step, stream: options.progressStream, itemsPerStep: batchSize });
  const grid = s.globalCropsSize / config.patchSize;
  const nLocal = s.localCropsNumber;
  const parts = student.children();

  /** SSLMetaArch.forward_backward for one batch; returns the logged values. */
  const trainStep = (images: Tensor, teacherTemp: number): Tensor => torch.scope(() => {
    const x = images.to(device);
    const B = x.size(0);
    const crops = multiCrop(x, s);
    const globalIn = preprocessImages(crops.global, s.globalCropsSize);
    const localIn = crops.local === null ? null : preprocessImages(crops.local, s.localCropsSize);
    const masks = ibotMasks(2 * B, grid, s).to(device);
    const maskIndices = (torch.callOp('aten::nonzero', masks.flatten()) as Tensor).flatten();
    const nMasked = maskIndices.size(0);
    const doIbot = s.ibotLossWeight > 0 && nMasked > 0;

    // The networks under `precision`, their outputs in float32 for the centering, softmaxes and losses.
    const target = torch.noGrad(() => {
      const { cls, patches } = torch.withPrecision(precision, device, () => {
        const features = teacher.backbone.forwardFeatures(globalIn);
        return {
          cls: teacher.dinoHead.forward(features.xNormClstoken).float(),
          patches: doIbot ? teacher.patchHead.forward(features.xNormPatchtokens.flatten(0, 1).indexSelect(0, maskIndices)).float() : null,
        };
      });
      const dino = centers.dino.softmaxCenterTeacher(cls, teacherTemp);
      centers.dino.updateCenter(cls);
      let ibot: Tensor | null = null;
      if (patches !== null) {
        ibot = centers.ibot.softmaxCenterTeacher(patches, teacherTemp);
        centers.ibot.updateCenter(patches);
      }
      return { dino, ibot };
    });

    const { globalCls, headOut, studentPatches } = torch.withPrecision(precision, device, () => {
      const globalFeatures = student.backbone.forwardFeatures(globalIn, masks);
      const globalCls = globalFeatures.xNormClstoken;
      const localCls = localIn === null ? null : student.backbone.forwardFeatures(localIn).xNormClstoken;
      return {
        globalCls: globalCls.float(),
        // One DINO-head call over the local and global CLS tokens, as upstream's block-diagonal batch.
        headOut: student.dinoHead.forward(localCls === null ? globalCls : torch.cat([localCls, globalCls])).float(),
        studentPatches: doIbot ? student.patchHead.forward(globalFeatures.xNormPatchtokens.flatten(0, 1).indexSelect(0, maskIndices)).float() : null,
      };
    });
    const studentLocal = localIn === null ? null : headOut.slice(0, 0, nLocal * B);
    const studentGlobal = headOut.slice(0, nLocal * B);
    const { dinoLocal, dinoGlobal } = dinoCrossViewLosses(centers.dino, studentLocal, studentGlobal, target.dino, nLocal);
    const [cls0, cls1] = globalCls.chunk(2, 0) as [Tensor, Tensor];
    // KoLeo within each global view only ("we don't apply koleo loss between cls tokens of a same image").
    const koleo = s.koleoLossWeight > 0 ? koleoLoss(cls0).add(koleoLoss(cls1)).mul(s.koleoLossWeight) : torch.zeros([], { device });
    let ibot = torch.zeros([], { device });
    if (studentPatches !== null) {
      // forward_masked x loss_scales (2) x ibot_loss_scale (1 / 2).
      ibot = centers.ibot.forwardMasked(studentPatches, target.ibot!, masks, maskWeights(masks));
    }
    const dino = dinoLocal.add(dinoGlobal);
    const total = dino.mul(s.dinoLossWeight).add(koleo).add(ibot.mul(s.ibotLossWeight));
    total.backward();
    if (s.clipGrad > 0) for (const part of parts) optim.clipGradNorm(part.parameters(), s.clipGrad);
    const [teacherEntropy, marginalEntropy] = entropies(target.dino);
    const ibotEntropy = target.ibot === null ? torch.zeros([], { device }) : entropies(target.ibot)[0];
    return torch.stack([total, dinoLocal, dinoGlobal, dino, koleo, ibot, teacherEntropy, marginalEntropy, ibotEntropy]
      .map((v) => v.detach().float().reshape([]))).cpu();
  });

  let lastCheckpoint: string | null = null;
  let savedStep = -1;
  const save = (): void => {
    savedStep = step;
    const saved = optimizerToCheckpoint(opt);
    lastCheckpoint = checkpoints!.save({
      tensors: { student: student.stateDict(), teacher: teacher.stateDict(), opt: saved.tensors, loss: centers.stateDict() },
      metadata: {
        step, epoch, batch, world_size: worldSize, batch_size: batchSize, args: options.args ?? {}, ...trainingRngMetadata({ distributed, rank, worldSize, device }),
        optimizer: saved.metadata, teacher_config: teacherConfig, total_steps: totalSteps, precision,
      },
    });
  };

  const ckptEvery = options.ckptEvery ?? 1000;
  const logEvery = options.logEvery ?? 20;
  const sums = new Map<string, number>();
  let sinceLog = 0;
  let finalLoss = NaN;
  let trainSeconds = 0;
  let trainedSteps = 0;
  let logStart = performance.now();
  const stop = StopSignal.listen({ distributed, device });
  try {
    training: for (; epoch < epochs && step < totalSteps; epoch++, batch = 0) {
      for await (const { images, labels, batchIndex } of loader.iterate(epoch, batch)) {
        labels.dispose();
        // Where to resume: the next batch of the epoch, counting those the loader left out.
        batch = batchIndex + 1;
        if (images.size(0) < batchSize) {
          images.dispose();
          continue;
        }
        const started = performance.now();
        const lrNow = cosineSchedule({ base: lr, final: s.minLr, total: totalSteps, warmup: warmupSteps }, step);
        const lastLayerLr = step < freezeLastLayerSteps ? 0 : lrNow;
        const wd = cosineSchedule({ base: s.weightDecay, final: s.weightDecayEnd, total: totalSteps }, step);
        const momentum = cosineSchedule({ base: s.momentumTeacher, final: s.finalMomentumTeacher, total: totalSteps }, step);
        const teacherTemp = cosineSchedule({
          base: s.teacherTemp, final: s.teacherTemp, total: warmupTeacherTempSteps, warmup: warmupTeacherTempSteps, startWarmup: s.warmupTeacherTemp,
        }, step);
        opt.paramGroups.forEach((group, i) => {
          const spec = specs[i]!;
          group.lr = (spec.isLastLayer ? lastLayerLr : lrNow) * spec.lrMultiplier;
          group.weightDecay = wd * spec.wdMultiplier;
        });
        opt.zeroGrad();
        const lossTensor = trainStep(images, teacherTemp);
        images.dispose();
        const values = Array.from(lossTensor.toArray() as Float32Array);
        lossTensor.dispose();
        const losses = Object.fromEntries(LOSS_NAMES.map((name, i) => [name, values[i]!]));
        // Before the optimizer steps: a non-finite loss leaves the weights and the last checkpoint as they were.
        checkFinite({ loss: losses.loss!, dino_loss: losses.dino_loss!, ibot_loss: losses.ibot_loss!, koleo_loss: losses.koleo_loss! }, step + 1, checkpoints);
        opt.step();
        ema.update(momentum);
        step++;
        trainSeconds += (performance.now() - started) / 1000;
        trainedSteps++;
        for (const [name, value] of Object.entries({ ...losses, lr: lrNow, wd, mom: momentum, teacher_temp: teacherTemp })) {
          sums.set(name, (sums.get(name) ?? 0) + value);
        }
        sinceLog++;
        bar.update(step, { loss: losses.loss!, dino: losses.dino_loss!, ibot: losses.ibot_loss! });
        if (step % logEvery === 0 || step === totalSteps) {
          const means = Object.fromEntries([...sums].map(([name, sum]) => [name, sum / sinceLog]));
          means.log_k = Math.log(s.headNPrototypes);
          means.steps_per_sec = sinceLog / ((performance.now() - logStart) / 1000);
          finalLoss = means.loss!;
          metrics!.log(step, means);
          for (const [name, value] of Object.entries(means)) tensorboard!.addScalar(`train/${name}`, value, step);
          sums.clear();
          sinceLog = 0;
          logStart = performance.now();
        }
        if (step % ckptEvery === 0) save();
        if (step >= totalSteps) break training;
        if (await stop.requested()) break training;
      }
    }
    if (savedStep !== step) save();
    stop.end({ step, checkpoint: lastCheckpoint, runDir }, log);
  } finally {
    stop.dispose();
    bar.stop();
    metrics?.close();
    tensorboard?.close();
    lock?.release();
    await loader.close();
  }

  // --- the user's output: the EMA teacher's backbone, as `reals align train` reads it -----------
  const out = options.out ?? join(runDir, 'teacher');
  makeDirs(out);
  const configPath = join(out, TEACHER_CONFIG_NAME);
  const checkpoint = join(out, TEACHER_WEIGHTS_NAME);
  writeJsonFileAtomic(configPath, config);
  torch.scope(() => {
    const weights = Object.fromEntries([...teacher.backbone.stateDict()].map(([k, t]) => [k, t.cpu()]));
    saveSafetensors(checkpoint, weights, { config: JSON.stringify(config), step: String(step), source: 'reals teacher train (EMA teacher backbone)' });
  });
  log(`wrote ${configPath} and ${checkpoint} (the EMA teacher's backbone at step ${step})`);

  let probeAccuracy: number | null = null;
  let randomProbeAccuracy: number | null = null;
  let probeImages: { train: number; test: number } | null = null;
  if (options.probe !== undefined) {
    const probeOptions = {
      train: options.probe.train, test: options.probe.test, trainImages: options.probe.images, testImages: options.probe.images,
      inputSize: s.globalCropsSize, seed, device,
    };
    const trained = await linearProbe({ ...probeOptions, backbone: teacher.backbone });
    torch.manualSeed(seed + 1);
    const random = await linearProbe({ ...probeOptions, backbone: new DinoVisionTransformer(config).to(device) });
    probeAccuracy = trained.accuracy;
    randomProbeAccuracy = random.accuracy;
    probeImages = { train: trained.trainImages, test: trained.testImages };
    log(probeLine(probeAccuracy, randomProbeAccuracy, trained.trainImages, trained.testImages));
  }
  return {
    runDir, configPath, checkpoint, runCheckpoint: lastCheckpoint!, probeAccuracy, randomProbeAccuracy, probeImages, finalLoss, params,
    steps: step, stepsPerSec: trainedSteps > 0 ? trainedSteps / trainSeconds : 0,
  };
}

/**
 * The probe's line, with a warning where the trained teacher classifies worse than an untrained
 * backbone of its config: its tokens then carry less about the images than random features do.
 */
export function probeLine(teacher: number, randomInit: number, trainImages: number, testImages: number): string {
  const line = `linear probe (${trainImages} train / ${testImages} test images): teacher ${teacher.toFixed(3)}, random-init backbone ${randomInit.toFixed(3)}`;
  if (teacher >= randomInit) return line;
  return `${line}; warning: the teacher probes below its own random init, so training has not yet given it better features than none ` +
    '(train it longer or on more images before aligning a VAE to it)';
}

function validate(s: SelfSupervisedSettings, config: DinoV2Config, o: SelfSupervisedTeacherOptions, lr: number): void {
  const fail = (message: string): never => { throw new Error(`trainSelfSupervisedTeacher: ${message}`); };
  const positiveInteger = { batchSize: o.batchSize, headNPrototypes: s.headNPrototypes, headHiddenDim: s.headHiddenDim, headBottleneckDim: s.headBottleneckDim, headNlayers: s.headNlayers };
  for (const [name, value] of Object.entries(positiveInteger)) if (!Number.isInteger(value) || value < 1) fail(`${name} must be a positive integer, got ${value}`);
  if (o.batchSize < 2) fail(`batchSize must be at least 2 (KoLeo compares the images of a batch), got ${o.batchSize}`);
  if (!Number.isInteger(s.localCropsNumber) || s.localCropsNumber < 0) fail(`localCropsNumber must be an integer >= 0, got ${s.localCropsNumber}`);
  for (const [name, size] of Object.entries({ globalCropsSize: s.globalCropsSize, localCropsSize: s.localCropsSize })) {
    if (!Number.isInteger(size) || size < 1 || size % config.patchSize !== 0) fail(`${name} ${size} is not a positive multiple of the patch size ${config.patchSize}`);
  }
  for (const [name, [low, high]] of Object.entries({ globalCropsScale: s.globalCropsScale, localCropsScale: s.localCropsScale })) {
    if (!(low > 0 && low <= high && high <= 1)) fail(`${name} (${low}, ${high}) must satisfy 0 < min <= max <= 1`);
  }
  const [mMin, mMax] = s.maskRatioMinMax;
  if (!(mMin >= 0 && mMin <= mMax && mMax <= 1)) fail(`maskRatioMinMax (${mMin}, ${mMax}) must satisfy 0 <= min <= max <= 1`);
  if (!(s.maskSampleProbability >= 0 && s.maskSampleProbability <= 1)) fail(`maskSampleProbability must be in [0, 1], got ${s.maskSampleProbability}`);
  for (const [name, value] of Object.entries({ teacherTemp: s.teacherTemp, warmupTeacherTemp: s.warmupTeacherTemp, studentTemp: s.studentTemp, lr })) {
    if (!(value > 0)) fail(`${name} must be > 0, got ${value}`);
  }
  for (const [name, value] of Object.entries({ momentumTeacher: s.momentumTeacher, finalMomentumTeacher: s.finalMomentumTeacher, centerMomentum: s.centerMomentum })) {
    if (!(value >= 0 && value <= 1)) fail(`${name} must be in [0, 1], got ${value}`);
  }
  if (o.maxSteps !== undefined && (!Number.isInteger(o.maxSteps) || o.maxSteps < 1)) fail(`maxSteps must be a positive integer, got ${o.maxSteps}`);
  if (o.epochs !== undefined && (!Number.isInteger(o.epochs) || o.epochs < 1)) fail(`epochs must be a positive integer, got ${o.epochs}`);
}

interface Restorable { student: nn.Module; teacher: nn.Module; centers: nn.Module; opt: optim.AdamW }

/** Loads a checkpoint of trainSelfSupervisedTeacher into the run's objects; returns the position. */
function restore(checkpoint: Checkpoint, teacherConfig: unknown, into: Restorable): { step: number; epoch: number; batch: number } {
  const { groups, metadata, path } = checkpoint;
  const fail = (message: string): never => { throw new Error(`resume from ${path}: ${message}`); };
  if (metadata.teacher_config === undefined) fail('not a checkpoint of `reals teacher train` (no metadata "teacher_config")');
  if (JSON.stringify(metadata.teacher_config) !== JSON.stringify(teacherConfig)) {
    fail(`it trains ${JSON.stringify(metadata.teacher_config)}, this run ${JSON.stringify(teacherConfig)}`);
  }
  for (const group of ['student', 'teacher', 'loss']) if (groups[group] === undefined) fail(`no ${group}.* tensors`);
  try {
    into.student.loadStateDict(groups.student!);
    into.teacher.loadStateDict(groups.teacher!);
    into.centers.loadStateDict(groups.loss!);
    into.opt.loadStateDict(optim.unflattenStateDict(groups.opt ?? {}, metadata.optimizer, ''));
  } catch (error) {
    fail((error as Error).message);
  }
  return checkpointPosition(checkpoint);
}

