// Training the ReaLS VAE (DESIGN.md section 1): the AutoencoderKL's encoder and decoder and the
// alignment heads learn together, the DINOv2 teacher stays frozen. The losses are latent
// diffusion's LPIPSWithDiscriminator (ldm/modules/losses/contperceptual.py: reconstruction +
// LPIPS, KL, a PatchGAN hinge loss with VQGAN's adaptive weight from `discStart` on) plus the
// alignment loss of src/models/alignment.ts, with LDM's Adam betas (0.5, 0.9). With eqWeight > 0,
// EQ-VAE's equivariance term (src/train/equivariance.ts) joins them, with alignment or without.
//
// Differences from LDM, on purpose:
// - every term is a mean (reconstruction over pixels, LPIPS over images, KL over latent
//   elements), so the weights compare directly; LDM sums reconstruction and KL over elements. Its
//   kl_weight 1e-6 on sums is 1e-6 * (latent / pixel elements) = 1e-6 / 48 here for an f8 VAE with
//   4 channels; the default 1e-6 pulls 48 times harder than LDM's, still orders of magnitude
//   below the reconstruction term for SD-VAE-like latents (KL ~ 20 per element: 2e-5 vs MSE ~ 1e-2);
// - with `alignLoss 'vf'`, VA-VAE's adaptive weight ||grad nll|| / ||grad vf|| at the encoder's
//   last layer (as LightningDiT's vavae) is taken on this nll of means, not on LDM's sums; the ratio
//   scales with nll, so the vf term's pull relative to the nll's is the reference's either way;
// - the discriminator step reuses the generator step's reconstruction (detached) instead of a
//   second VAE forward, and neither the discriminator nor its GAN term run before `discStart`
//   (LDM computes them there and multiplies them by 0, which still moves BatchNorm statistics
//   and Adam step counts).
//
// Checkpoints (one safetensors file each, src/train/checkpoint.ts): `model.*` is the VAE under
// its diffusers keys plus the heads' (`mlp_patch.*` or `conv_patch.*`, and `mlp_cls.*` unless the
// heads have no CLS head), `ema.*` the same keys averaged, `opt.*`
// their Adam state, `disc.*` and `opt_disc.*` the discriminator and its Adam state; the metadata
// holds args, step, epoch, the batch to read next, the CPU RNG state and both optimizers' groups,
// and `vae_config` (the VAE's diffusers config.json) and `heads_config` (the AlignmentConfig), so
// that `reals align convert` rebuilds both models from the checkpoint alone.
// Resuming restores all of it, so on CPU the losses continue exactly as without the interruption.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import * as torch from '../torch/index.js';
import type { Tensor } from '../torch/index.js';
import * as nn from '../nn/index.js';
import { DistributedDataParallel } from '../nn/parallel.js';
import * as optim from '../optim/index.js';
import { checkWritableDir, writeAll, writeFileAtomic } from '../io/file.js';
import { AutoencoderKL, configToDiffusers } from '../models/autoencoder-kl.js';
import { DinoVisionTransformer, preprocessImages } from '../models/dinov2.js';
import { HogTeacher } from '../models/hog.js';
import { AlignmentHeads, alignmentLoss, resampleNotice, resampleTokens, spatialNormalize, VF_LOSS_DEFAULTS, type AlignmentFeatures } from '../models/alignment.js';
import { NLayerDiscriminator, calculateAdaptiveWeight, hingeDLoss } from '../models/discriminator.js';
import type { LPIPS } from '../models/lpips.js';
import {
  batchPositionMetadata, checkResumeLayout, checkpointPosition, loadCheckpoint, overrideOptimizerSettings, resumeEmaDecay, optimizerToCheckpoint, restoreTrainingRng, resumeBatch, trainingRngMetadata, type Checkpoint,
} from './checkpoint.js';
import { createRunDir, resolveResume, checkFinite } from './run-dir.js';
import type { SummaryWriter } from '../runlog/tensorboard.js';
import { openRunOutputs, lockstep, collectiveAt } from './context.js';
import { processContext, withDefaults } from '../runlog/process.js';
import { StopSignal } from './stop.js';
import { progress as makeProgress, type Progress } from '../runlog/progress.js';
import { encodePng, makeGrid } from '../runlog/images.js';
import { encodePosterior } from '../data/latents.js';
import { drawEquivarianceTransform, equivarianceLoss, minScaledLatentSide } from './equivariance.js';

const F = nn.F;
const dist = torch.distributed;

/** One rank's batches, epoch by epoch; src/data's DataLoader is one. */
export interface BatchSource {
  /** Images per batch on this rank. */
  readonly batchSize: number;
  /** Batches per epoch on this rank. */
  readonly length: number;
  /**
   * The batches of `epoch` from batch `startBatch` on, as an uninterrupted run reads them from
   * there, each with its number in the epoch (counting any batch left out, as DataLoader's).
   */
  iterate(epoch: number, startBatch: number): AsyncIterable<{ images: Tensor; batchIndex: number }>;
}

export interface AlignLossWeights {
  /** 'mse' (default) or 'l1' (LDM's) between image and reconstruction. */
  reconstruction: 'mse' | 'l1';
  reconstructionWeight: number;
  /** LDM's perceptual_weight (1.0); 0 needs no LPIPS model. */
  lpipsWeight: number;
  /** On the KL averaged over latent elements (default 1e-6; see the file comment). */
  klWeight: number;
  /** The alignment terms (defaults 0.5 and 0.5, REPA's proj_coeff; smooth-L1 off); patchWeight weighs the 'cos' patch term only. */
  patchWeight: number;
  clsWeight: number;
  smoothL1Weight: number;
  /** VA-VAE's loss (heads.config.alignLoss 'vf'): margins and term weights (vfLoss; defaults 0.5, 0.25, 1, 1). */
  vfCosMargin: number;
  vfDistmatMargin: number;
  vfCosWeight: number;
  vfDistmatWeight: number;
  /** The vf term's weight (default 0.1, LightningDiT's vf_weight): times the adaptive weight when vfAdaptive (default true). */
  vfWeight: number;
  vfAdaptive: boolean;
  /** Scales the adaptive GAN weight (LDM's kl-f8 config: disc_weight 0.5). */
  discWeight: number;
  /** Steps before the discriminator and the GAN loss start (LDM's kl-f8 config: 50001). */
  discStart: number;
  /** EQ-VAE's term: the reconstruction terms of decode(T(z)) against T(x); 0 (default) decodes nothing more. */
  eqWeight: number;
  /** T turns by quarter turns as well as downscaling, as EQ-VAE (default); false downscales only. */
  eqRotation: boolean;
}

export const ALIGN_LOSS_DEFAULTS: AlignLossWeights = {
  reconstruction: 'mse', reconstructionWeight: 1, lpipsWeight: 1, klWeight: 1e-6,
  patchWeight: 0.5, clsWeight: 0.5, smoothL1Weight: 0, discWeight: 0.5, discStart: 50001,
  vfCosMargin: VF_LOSS_DEFAULTS.cosMargin, vfDistmatMargin: VF_LOSS_DEFAULTS.distmatMargin, vfCosWeight: VF_LOSS_DEFAULTS.cosWeight,
  vfDistmatWeight: VF_LOSS_DEFAULTS.distmatWeight, vfWeight: 0.1, vfAdaptive: true,
  eqWeight: 0, eqRotation: true,
};

export interface AlignTrainOptions extends Partial<AlignLossWeights> {
  vae: AutoencoderKL;
  /** The frozen teacher, DINOv2 or HOG (no weights; its tokens lie on the latent grid); its embedDim must be the heads' featureDim. */
  dino: DinoVisionTransformer | HogTeacher;
  /** DINOv2's input side: 448 gives 32x32 tokens, one per latent position of a 256 px image; HOG needs none. */
  dinoInputSize?: number;
  /** Its config also says which patch loss runs (alignLoss) and how the targets are normalized (teacherNorm). */
  heads: AlignmentHeads;
  discriminator: NLayerDiscriminator;
  /** Required when lpipsWeight > 0. */
  lpips: LPIPS | null;
  data: BatchSource;
  /** A new run goes to `<resultsDir>/NNN-<runName>`. */
  resultsDir: string;
  runName?: string;
  /** Continue a run: a checkpoint file, a run folder or a checkpoints folder (resolveResume). */
  resume?: string;
  /**
   * Adam learning rate of the VAE, the heads and the discriminator (default 5e-5), betas and EMA
   * decay. Given for a resumed run, each replaces the checkpoint's (with a note); not given, the
   * checkpoint's goes on.
   */
  lr?: number;
  betas?: [number, number];
  /** EMA decay of the VAE and heads (default 0.9999, DiT's). */
  emaDecay?: number;
  maxEpoch: number;
  /** Stop after this many steps in all, if earlier than maxEpoch. */
  maxSteps?: number;
  /** Steps between checkpoints (default 5000); one is also written at the end. */
  ckptEvery?: number;
  keepLast?: number;
  /** Steps between metrics.jsonl/TensorBoard records (default 100). */
  logEvery?: number;
  /** Steps between reconstruction images in TensorBoard (default 1000). */
  imageEvery?: number;
  /** Seeds the CPU generator with seed * worldSize + rank, as DiT (default 0). */
  seed?: number;
  /**
   * The forward passes and losses under bfloat16 autocast ('bf16'), or not ('fp32', default);
   * 'auto' picks bf16 on CUDA and bfloat16-capable CPUs. Weights, gradients and both Adam states
   * stay float32. The checkpoints' metadata records the precision that ran.
   */
  precision?: torch.Precision;
  device?: torch.Device;
  /** Saved in the checkpoints' metadata (the CLI's flags), with lr, betas and emaDecay those that ran. */
  args?: Record<string, unknown>;
  /** One-line notices (default console.log); rank 0 only. */
  log?: (line: string) => void;
  /** Where the progress bar goes (default stderr). */
  progressStream?: NodeJS.WritableStream & { isTTY?: boolean };
}

export interface AlignTrainResult {
  runDir: string;
  step: number;
  /** The last checkpoint written (rank 0), or null on other ranks. */
  checkpoint: string | null;
}

/** The trained parameters as one module: the VAE's children and the heads' children side by side. */
class AlignedVAE extends nn.Module {
  constructor(readonly vae: AutoencoderKL, readonly heads: AlignmentHeads) {
    super();
    for (const [name, child] of [...vae.namedChildren(), ...heads.namedChildren()]) this.addModule(name, child);
  }
}

/**
 * The values logged per step. `align` is the alignment's share of `loss`; its terms unweighted:
 * `align_cos` the per-token cosine term (1 - cos, or vf's margin cosine), `align_distmat` vf's
 * distance-matrix term, `align_cls` the CLS term; `vf_weight` the vf term's weight; `patch_cos` and
 * `cls_cos` the mean cosine similarities.
 */
function lossNames(heads: AlignmentHeads): string[] {
  const vf = heads.config.alignLoss === 'vf';
  return [
    'loss', 'rec', 'lpips', 'kl', 'align', 'align_cos', ...(vf ? ['align_distmat', 'vf_weight'] : []), 'patch_cos',
    ...(heads.config.clsHead ? ['align_cls', 'cls_cos'] : []), 'g_loss', 'd_weight', 'd_loss',
  ];
}

export async function trainAlignment(options: AlignTrainOptions): Promise<AlignTrainResult> {
  const w: AlignLossWeights = withDefaults(ALIGN_LOSS_DEFAULTS, options);
  const { vae, dino, heads, discriminator, lpips, data, dinoInputSize } = options;
  const lr = options.lr ?? 5e-5;
  const betas = options.betas ?? [0.5, 0.9];
  const ckptEvery = options.ckptEvery ?? 5000;
  const logEvery = options.logEvery ?? 100;
  const imageEvery = options.imageEvery ?? 1000;
  const { distributed, rank, worldSize, device, log: contextLog } = processContext(options);
  // Rank 0's lines also go to the run's log.txt once its outputs are open.
  let log = contextLog;
  const precision = torch.usePrecision(options.precision ?? 'fp32', device);
  if (options.resume === undefined && rank === 0) checkWritableDir(options.resultsDir, 'trainAlignment: resultsDir');

  if (dino instanceof DinoVisionTransformer && (dinoInputSize === undefined || dinoInputSize % dino.config.patchSize !== 0)) {
    throw new Error(`--dino-input-size ${dinoInputSize} is not divisible by the teacher's patch size ${dino.config.patchSize}`);
  }
  const teacherDim = dino instanceof HogTeacher ? dino.embedDim : dino.config.embedDim;
  if (heads.config.featureDim !== teacherDim) {
    throw new Error(`trainAlignment: the heads predict ${heads.config.featureDim}-wide tokens, the ${dino instanceof HogTeacher ? 'HOG teacher' : 'DINOv2 model'} gives ${teacherDim}`);
  }
  if (heads.config.latentChannels !== vae.config.latentChannels) {
    throw new Error(`trainAlignment: the heads take ${heads.config.latentChannels} latent channels, the VAE has ${vae.config.latentChannels}`);
  }
  if (!heads.config.clsHead && w.clsWeight !== 0) {
    throw new Error(`--cls-weight ${w.clsWeight} needs a CLS head (the heads have clsHead false); set it to 0`);
  }
  if (w.lpipsWeight > 0 && lpips === null) throw new Error(`--lpips-weight ${w.lpipsWeight} needs an LPIPS model (or set it to 0)`);
  if (!(options.maxEpoch >= 1)) throw new Error(`--max-epoch must be at least 1, got ${options.maxEpoch}`);
  if (data.length < 1) throw new Error('--data-path: the data gives this rank no batch (fewer images than ranks?)');

  torch.manualSeed((options.seed ?? 0) * worldSize + rank);
  const model = new AlignedVAE(vae, heads).to(device).train();
  const ema = new AlignedVAE(new AutoencoderKL(vae.config), new AlignmentHeads(heads.config)).to(device).requiresGrad_(false).eval();
  if (dino instanceof DinoVisionTransformer) dino.to(device).requiresGrad_(false).eval();
  lpips?.to(device);
  discriminator.to(device).train();
  const opt = new optim.Adam(model.parameters(), { lr, betas });
  const optDisc = new optim.Adam(discriminator.parameters(), { lr, betas });
  let emaDecay = options.emaDecay ?? 0.9999;
  // DDP copies rank 0's weights to every rank before the EMA copies them or a checkpoint replaces them.
  const ddp = distributed ? new DistributedDataParallel(model) : null;
  const ddpDisc = distributed ? new DistributedDataParallel(discriminator) : null;

  // --- where the run starts -------------------------------------------------------------------
  let step = 0;
  let epoch = 0;
  let batch = 0;
  let runDir: string;
  if (options.resume !== undefined) {
    const resumed = resolveResume(options.resume);
    runDir = resumed.runDir;
    // In a scope: the checkpoint's tensors are freed once copied into the run's objects.
    ({ step, epoch, batch } = torch.scope(() => {
      const checkpoint = loadCheckpoint(resumed.checkpoint);
      checkResumeLayout(checkpoint, { worldSize, batchSize: data.batchSize });
      const position = restore(checkpoint, { model, ema, opt, discriminator, optDisc });
      log(`resuming ${resumed.checkpoint} at step ${position.step} (epoch ${position.epoch}, batch ${position.batch})`);
      restoreTrainingRng(checkpoint, { distributed, rank, worldSize, device }, options.seed ?? 0, log);
      emaDecay = resumeEmaDecay(checkpoint, options.emaDecay, log);
      return { ...position, batch: resumeBatch(checkpoint, position.batch, { distributed, rank, worldSize, device }) };
    }));
  } else {
    runDir = rank === 0 ? createRunDir(options.resultsDir, options.runName ?? 'align').path : '';
  }
  // A setting given for a resumed run replaces the checkpoint's in both optimizers; the metadata records what runs.
  const settings = { ...overrideOptimizerSettings(opt, { lr: options.lr, betas: options.betas }, log), emaDecay };
  overrideOptimizerSettings(optDisc, { lr: options.lr, betas: options.betas }, log, 'the discriminator\'s optimizer');
  const emaUpdater = new optim.EMA(ema, model, { decay: emaDecay });
  if (options.resume === undefined) emaUpdater.copyFrom();

  const outputs = openRunOutputs(runDir, rank, {
    lock: true, log, args: { ...options.args, ...settings },
    keepLast: options.keepLast, resumeStep: options.resume !== undefined ? step : undefined,
  });
  const { lock, checkpoints, metrics, tensorboard } = outputs;
  log = outputs.log;
  const maxSteps = Math.min(options.maxSteps ?? Infinity, options.maxEpoch * data.length);
  const progress: Progress | null = rank === 0
    ? makeProgress({ total: maxSteps, label: 'align', start: step, stream: options.progressStream, itemsPerStep: data.batchSize * worldSize })
    : null;

  // DINOv2's token grid; HOG's tokens lie on the latent grid, with nothing to resample.
  const dinoGrid: [number, number] | null = dino instanceof HogTeacher ? null : [dinoInputSize! / dino.config.patchSize, dinoInputSize! / dino.config.patchSize];
  let noticeShown = false;
  const lastLayer = vae.decoder.convOut.weight;
  const encoderLastLayer = vae.encoder.convOut.weight;
  const { alignLoss: alignLossKind, teacherNorm, teacherNormAlpha, clsHead } = heads.config;
  const names = lossNames(heads);
  // `eq`: EQ-VAE's term, unweighted, when it runs.
  if (w.eqWeight > 0) names.push('eq');
  const vf = { cosMargin: w.vfCosMargin, distmatMargin: w.vfDistmatMargin, cosWeight: w.vfCosWeight, distmatWeight: w.vfDistmatWeight };

  /** One generator step and, from discStart on, one discriminator step; returns the losses. */
  const trainStep = (images: Tensor): Tensor => torch.scope(() => {
    const x = images.to(device);
    const autocast = <T>(fn: () => T): T => torch.withPrecision(precision, device, fn);
    const target: AlignmentFeatures = torch.noGrad(() => {
      // HOG in float32, outside autocast: bfloat16 gradients would move votes between orientation bins.
      if (dino instanceof HogTeacher) return dino.forward(x, [x.size(2) / vae.downsamplingFactor, x.size(3) / vae.downsamplingFactor]);
      return autocast(() => {
        const features = dino.forwardFeatures(preprocessImages(x, dinoInputSize!));
        return { patch: features.xNormPatchtokens.float(), cls: features.xNormClstoken.float() };
      });
    });
    const ganActive = step >= w.discStart;
    discriminator.requiresGrad_(false);
    // The posterior in float32 (encodePosterior) and the losses on float32 outputs; the networks under `precision`.
    const posterior = encodePosterior(vae, x, precision);
    const { total, values, xrec } = autocast(() => {
      const z = posterior.sample();
      const latentGrid: [number, number] = [z.size(2), z.size(3)];
      if (!noticeShown) {
        const notice = resampleNotice(dinoGrid ?? latentGrid, latentGrid);
        if (notice !== null) log(notice);
        noticeShown = true;
      }
      const xrec = vae.decode(z);
      const reconstructionTerms = (image: Tensor, decoded: Tensor) => {
        const rec = (w.reconstruction === 'mse' ? F.mseLoss(decoded.float(), image) : F.l1Loss(decoded.float(), image));
        const perceptual = w.lpipsWeight > 0 ? lpips!.forward(image, decoded.float()).mean() : torch.zeros([], { device });
        return { rec, perceptual, nll: rec.mul(w.reconstructionWeight).add(perceptual.mul(w.lpipsWeight)) };
      };
      const { rec, perceptual, nll } = reconstructionTerms(x, xrec);
      const kl = posterior.kl().sum().div(z.numel());
      const predicted = heads.forward(z);
      const targetPatch = resampleTokens(target.patch, dinoGrid ?? latentGrid, latentGrid);
      // vf: VA-VAE's weight, adaptive (LightningDiT's calculate_adaptive_weight_vf, clamp 1e8) or fixed; cos: patchWeight.
      const patchWeight = alignLossKind === 'cos' ? w.patchWeight
        : w.vfAdaptive ? (patch: Tensor) => calculateAdaptiveWeight(nll, patch, encoderLastLayer, w.vfWeight, 1e8) : w.vfWeight;
      // Outside autocast: vf's Gram matrices are matmuls, which bfloat16 autocast would round to 3 significant digits.
      const align = torch.autocast(() => alignmentLoss(
        { patch: predicted.patch.float(), cls: predicted.cls === null ? null : predicted.cls.float() },
        { patch: teacherNorm === 'spatial' ? spatialNormalize(targetPatch, teacherNormAlpha) : targetPatch, cls: clsHead ? target.cls : null },
        { alignLoss: alignLossKind, patchWeight, clsWeight: w.clsWeight, smoothL1Weight: w.smoothL1Weight, vf },
      ), { device, enabled: false });
      let total = nll.add(kl.mul(w.klWeight)).add(align.loss);
      let eq = torch.zeros([], { device });
      if (w.eqWeight > 0) {
        const minSide = minScaledLatentSide(latentGrid, vae.downsamplingFactor, w.lpipsWeight > 0, 'trainAlignment: eqWeight');
        eq = equivarianceLoss({
          z, x, transform: drawEquivarianceTransform(latentGrid, { rotate: w.eqRotation, minSide }), downsamplingFactor: vae.downsamplingFactor,
          decode: (latent) => vae.decode(latent), reconstructionTerms: (image, decoded) => reconstructionTerms(image, decoded).nll,
        });
        total = total.add(eq.mul(w.eqWeight));
      }
      let gLoss = torch.zeros([], { device });
      let dWeight = torch.zeros([], { device });
      if (ganActive) {
        gLoss = discriminator.forward(xrec).float().mean().neg();
        dWeight = calculateAdaptiveWeight(nll, gLoss, lastLayer, w.discWeight);
        total = total.add(dWeight.mul(gLoss));
      }
      const values: Record<string, Tensor | number> = {
        loss: total, rec, lpips: perceptual, kl, align: align.loss, align_cos: align.patchCosTerm, align_distmat: align.distmat ?? 0,
        vf_weight: align.patchWeight, patch_cos: align.patchCosine, align_cls: align.cls ?? 0, cls_cos: align.clsCosine ?? 0, g_loss: gLoss, d_weight: dWeight,
        eq,
      };
      return { total, xrec, values };
    });
    total.backward();
    ddp?.syncGradients();
    let dLoss = torch.zeros([], { device });
    if (ganActive) {
      discriminator.requiresGrad_(true);
      const fake = xrec.detach();
      dLoss = autocast(() => hingeDLoss(discriminator.forward(x).float(), discriminator.forward(fake).float()));
      dLoss.backward();
      ddpDisc?.syncGradients();
    }
    values.d_loss = dLoss;
    const losses = torch.stack(names.map((name) => {
      const value = values[name]!;
      return typeof value === 'number' ? torch.full([], value, { device }) : value.detach().float().reshape([]);
    }));
    if (distributed) dist.allReduce(losses, 'avg');
    return losses.cpu();
  });

  let lastCheckpoint: string | null = null;
  let savedStep = -1;
  /** Writes a checkpoint holding every rank's RNG states (rank 0 writes it); all ranks call it. */
  const save = (): void => {
    let rng: ReturnType<typeof trainingRngMetadata>;
    let position: ReturnType<typeof batchPositionMetadata>;
    try {
      rng = trainingRngMetadata({ distributed, rank, worldSize, device });
      position = batchPositionMetadata(batch, { distributed, rank, worldSize, device });
    } catch (error) {
      throw collectiveAt(error, `the checkpoint of step ${step}`);
    }
    savedStep = step;
    if (rank !== 0) return;
    const saved = optimizerToCheckpoint(opt);
    const savedDisc = optimizerToCheckpoint(optDisc);
    lastCheckpoint = checkpoints!.save({
      tensors: { model: model.stateDict(), ema: ema.stateDict(), opt: saved.tensors, disc: discriminator.stateDict(), opt_disc: savedDisc.tensors },
      metadata: {
        step, epoch, ...position, world_size: worldSize, batch_size: data.batchSize, ema_decay: emaDecay, args: { ...options.args, ...settings }, ...rng, optimizer: saved.metadata, optimizer_disc: savedDisc.metadata,
        precision, vae_config: configToDiffusers(vae.config), heads_config: heads.config,
        // Which teacher the heads' featureDim-wide tokens imitate.
        teacher: dino instanceof HogTeacher ? { model: 'hog', embedDim: dino.embedDim, ...dino.config } : { model: 'dinov2', embedDim: dino.config.embedDim, inputSize: dinoInputSize },
      },
    });
  };

  // A position at or past an epoch's end needs no rollover: that epoch yields nothing and the loop
  // moves on, on every rank together (lockstep), whatever position each rank resumed at.
  let fixedImages: Tensor | null = null;
  const sums = new Map<string, number>();
  let sinceLog = 0;
  const stop = StopSignal.listen({ distributed, device });
  try {
    training: for (; epoch < options.maxEpoch && step < maxSteps; epoch++, batch = 0) {
      const discard = (b: { images: Tensor }): void => b.images.dispose();
      for await (const { images, batchIndex } of lockstep(data.iterate(epoch, batch), { distributed, device, log }, { epoch, discard })) {
        if (fixedImages === null && rank === 0) fixedImages = torch.keep(images.slice(0, 0, 8).clone());
        const lossTensor = trainStep(images);
        const values = Array.from(lossTensor.toArray() as Float32Array);
        lossTensor.dispose();
        const losses = Object.fromEntries(names.map((name, i) => [name, values[i]!]));
        // Before the optimizers step: a non-finite loss leaves the weights and the last checkpoint as they were.
        checkFinite(losses, step + 1, checkpoints);
        opt.step();
        opt.zeroGrad();
        if (step >= w.discStart) {
          optDisc.step();
          optDisc.zeroGrad();
        }
        emaUpdater.update();
        step++;
        // Where to resume: the next batch of the epoch, counting those the loader left out.
        batch = batchIndex + 1;
        if (rank === 0) {
          for (const [name, value] of Object.entries(losses)) sums.set(name, (sums.get(name) ?? 0) + value);
          sinceLog++;
          progress!.update(step, { loss: losses.loss!, rec: losses.rec!, patch_cos: losses.patch_cos!, ...(clsHead ? { cls_cos: losses.cls_cos! } : {}) });
          if (step % logEvery === 0 || step === maxSteps) {
            const means = Object.fromEntries([...sums].map(([name, sum]) => [name, sum / sinceLog]));
            metrics!.log(step, means);
            for (const [name, value] of Object.entries(means)) tensorboard!.addScalar(`train/${name}`, value, step);
            sums.clear();
            sinceLog = 0;
          }
          if (step % imageEvery === 0) await logReconstructions(tensorboard!, runDir, vae, fixedImages!, device, step);
        }
        if (step % ckptEvery === 0) save();
        if (step >= maxSteps) break training;
        if (await stop.requested()) break training;
      }
    }
    if (savedStep !== step) save();
    stop.end({ step, checkpoint: lastCheckpoint, runDir }, log);
  } catch (error) {
    throw collectiveAt(error, `step ${step + 1} (epoch ${epoch})`);
  } finally {
    stop.dispose();
    progress?.stop();
    metrics?.close();
    tensorboard?.close();
    lock?.release();
    fixedImages?.dispose();
  }
  return { runDir, step, checkpoint: lastCheckpoint };
}

/**
 * Inputs (top row) and their reconstructions from the posterior mean (bottom row) as one image:
 * in TensorBoard, and as <run>/reconstructions/NNNNNNN.png to look at without it.
 */
async function logReconstructions(writer: SummaryWriter, runDir: string, vae: AutoencoderKL, images: Tensor, device: torch.Device, step: number): Promise<void> {
  const grid = torch.noGrad(() => torch.scope(() => {
    const x = images.to(device);
    const xrec = vae.decode(vae.encode(x).mode()).clamp(-1, 1);
    return makeGrid(torch.cat([x, xrec]).cpu(), { nrow: x.size(0) });
  }));
  try {
    const png = await encodePng(grid);
    await writer.addImage('train/reconstructions', png, step);
    mkdirSync(join(runDir, 'reconstructions'), { recursive: true });
    writeFileAtomic(join(runDir, 'reconstructions', `${String(step).padStart(7, '0')}.png`), (fd) => writeAll(fd, png));
  } finally {
    grid.dispose();
  }
}

interface Restorable {
  model: nn.Module;
  ema: nn.Module;
  opt: optim.Adam;
  discriminator: nn.Module;
  optDisc: optim.Adam;
}

/** Loads every group of a checkpoint written by trainAlignment; returns the position. */
function restore(checkpoint: Checkpoint, into: Restorable): { step: number; epoch: number; batch: number } {
  const { groups, metadata, path } = checkpoint;
  const fail = (message: string): never => { throw new Error(`resume from ${path}: ${message}`); };
  for (const group of ['model', 'ema', 'disc']) if (groups[group] === undefined) fail(`no ${group}.* tensors`);
  try {
    into.model.loadStateDict(groups.model!);
    into.ema.loadStateDict(groups.ema!);
    into.discriminator.loadStateDict(groups.disc!);
    into.opt.loadStateDict(optim.unflattenStateDict(groups.opt ?? {}, metadata.optimizer, ''));
    into.optDisc.loadStateDict(optim.unflattenStateDict(groups.opt_disc ?? {}, metadata.optimizer_disc, ''));
  } catch (error) {
    fail((error as Error).message);
  }
  return checkpointPosition(checkpoint);
}

