// Learning-rate schedules as torch.optim.lr_scheduler, each computed in closed form (the lr at
// step t from t and the group's initial lr, as PyTorch's `_get_closed_form_lr`), so a resumed run
// gets exactly the lrs of an uninterrupted one. Call step() after optimizer.step(), as PyTorch.
import { z } from 'zod';

/** What a scheduler needs of an optimizer: parameter groups with a mutable lr. */
export interface ScheduledOptimizer {
  readonly paramGroups: { lr: number; initialLr?: number }[];
}

/** The lr of one group at step `epoch`, given its initial lr. */
export type LrAt = (epoch: number, baseLr: number) => number;

const stateDictSchema = z.object({
  last_epoch: z.number().int().min(-1),
  base_lrs: z.array(z.number()),
  _last_lr: z.array(z.number()),
});
/** The keys of PyTorch's scheduler state_dict() that determine the schedule's position. */
export type LRSchedulerStateDict = z.infer<typeof stateDictSchema>;

/** The base of every schedule: sets each group's lr to `lrAt(epoch, initialLr)` at each step. */
export class LRScheduler {
  baseLrs: number[];
  lastEpoch: number;
  private lastLr: number[] = [];
  private readonly lrAt: LrAt[];

  /** `lastEpoch` -1 starts a schedule; another value resumes one (groups then need initialLr). */
  constructor(readonly optimizer: ScheduledOptimizer, lrAt: LrAt | LrAt[], lastEpoch = -1) {
    const groups = optimizer.paramGroups;
    if (Array.isArray(lrAt) && lrAt.length !== groups.length) {
      throw new Error(`${this.constructor.name}: expected ${groups.length} lr functions (one per param group), got ${lrAt.length}`);
    }
    this.lrAt = Array.isArray(lrAt) ? [...lrAt] : groups.map(() => lrAt);
    if (lastEpoch === -1) {
      for (const group of groups) group.initialLr ??= group.lr;
    } else {
      groups.forEach((group, i) => {
        if (group.initialLr === undefined) throw new Error(`${this.constructor.name}: paramGroups[${i}] has no initialLr, which resuming at lastEpoch ${lastEpoch} needs`);
      });
    }
    this.baseLrs = groups.map((group) => group.initialLr!);
    this.lastEpoch = lastEpoch;
    this.step();
  }

  step(): void {
    this.lastEpoch += 1;
    this.lastLr = this.optimizer.paramGroups.map((group, i) => {
      group.lr = this.lrAt[i]!(this.lastEpoch, this.baseLrs[i]!);
      return group.lr;
    });
  }

  /** The lrs set by the last step(), one per group. */
  getLastLr(): number[] { return [...this.lastLr]; }

  stateDict(): LRSchedulerStateDict {
    return { last_epoch: this.lastEpoch, base_lrs: [...this.baseLrs], _last_lr: [...this.lastLr] };
  }

  /** Restores the position (PyTorch's own state dicts load too); load the optimizer's state as well. */
  loadStateDict(stateDict: unknown): void {
    const parsed = stateDictSchema.safeParse(stateDict);
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      throw new Error(`${this.constructor.name}.loadStateDict: bad '${issue.path.join('.')}': ${issue.message}`);
    }
    const groups = this.optimizer.paramGroups.length;
    for (const key of ['base_lrs', '_last_lr'] as const) {
      if (parsed.data[key].length !== groups) {
        throw new Error(`${this.constructor.name}.loadStateDict: ${key} has ${parsed.data[key].length} values, the optimizer has ${groups} param groups`);
      }
    }
    this.lastEpoch = parsed.data.last_epoch;
    this.baseLrs = [...parsed.data.base_lrs];
    this.lastLr = [...parsed.data._last_lr];
  }
}

/** lr = initial lr * lrLambda(epoch), one function for all groups or one per group. */
export class LambdaLR extends LRScheduler {
  constructor(optimizer: ScheduledOptimizer, lrLambda: ((epoch: number) => number) | ((epoch: number) => number)[], lastEpoch = -1) {
    const scaled = (f: (epoch: number) => number): LrAt => (epoch, baseLr) => baseLr * f(epoch);
    super(optimizer, Array.isArray(lrLambda) ? lrLambda.map(scaled) : scaled(lrLambda), lastEpoch);
  }
}

/** lr = initial lr * factor for the first totalIters steps, then the initial lr. */
export class ConstantLR extends LRScheduler {
  constructor(optimizer: ScheduledOptimizer, options: { factor?: number; totalIters?: number } = {}, lastEpoch = -1) {
    const factor = options.factor ?? 1 / 3;
    const totalIters = options.totalIters ?? 5;
    if (!(factor >= 0 && factor <= 1)) throw new RangeError(`ConstantLR: factor must be in [0, 1], got ${factor}`);
    super(optimizer, (epoch, baseLr) => baseLr * (factor + (epoch >= totalIters ? 1 - factor : 0)), lastEpoch);
  }
}

/** Cosine from the initial lr at step 0 to etaMin at step tMax (periodic after, as PyTorch). */
export class CosineAnnealingLR extends LRScheduler {
  constructor(optimizer: ScheduledOptimizer, options: { tMax: number; etaMin?: number }, lastEpoch = -1) {
    const { tMax, etaMin = 0 } = options;
    if (!(tMax > 0)) throw new RangeError(`CosineAnnealingLR: tMax must be positive, got ${tMax}`);
    super(optimizer, (epoch, baseLr) => cosine(epoch, tMax, baseLr, etaMin), lastEpoch);
  }
}

/** Linear warm-up over warmupSteps steps (initial lr * (t + 1) / warmupSteps), then constant. */
export class LinearWarmupLR extends LRScheduler {
  constructor(optimizer: ScheduledOptimizer, options: { warmupSteps: number }, lastEpoch = -1) {
    const { warmupSteps } = options;
    checkSteps('LinearWarmupLR', warmupSteps);
    super(optimizer, (epoch, baseLr) => baseLr * warmup(epoch, warmupSteps), lastEpoch);
  }
}

/**
 * Linear warm-up over warmupSteps steps, then cosine decay (CosineAnnealingLR's closed form) from
 * the initial lr to minLr at totalSteps, and minLr after.
 */
export class WarmupCosineLR extends LRScheduler {
  constructor(optimizer: ScheduledOptimizer, options: { warmupSteps?: number; totalSteps: number; minLr?: number }, lastEpoch = -1) {
    const { warmupSteps = 0, totalSteps, minLr = 0 } = options;
    checkSteps('WarmupCosineLR', warmupSteps);
    if (!Number.isInteger(totalSteps) || totalSteps <= warmupSteps) {
      throw new RangeError(`WarmupCosineLR: totalSteps must be an integer above warmupSteps (${warmupSteps}), got ${totalSteps}`);
    }
    const decaySteps = totalSteps - warmupSteps;
    super(optimizer, (epoch, baseLr) => (epoch < warmupSteps
      ? baseLr * warmup(epoch, warmupSteps)
      : cosine(Math.min(epoch - warmupSteps, decaySteps), decaySteps, baseLr, minLr)), lastEpoch);
  }
}

function cosine(epoch: number, tMax: number, baseLr: number, etaMin: number): number {
  return etaMin + (baseLr - etaMin) * (1 + Math.cos(Math.PI * epoch / tMax)) / 2;
}

function warmup(epoch: number, warmupSteps: number): number {
  return warmupSteps === 0 ? 1 : Math.min(1, (epoch + 1) / warmupSteps);
}

function checkSteps(name: string, warmupSteps: number): void {
  if (!Number.isInteger(warmupSteps) || warmupSteps < 0) throw new RangeError(`${name}: warmupSteps must be a non-negative integer, got ${warmupSteps}`);
}
