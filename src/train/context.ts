// What every long-running command needs to know about its process (one rank of a process group
// or alone, the device it computes on, a log only rank 0 prints), rank 0's run outputs, and the
// ranks reading their batches in step.
import { appendFileSync } from 'node:fs';
import { join } from 'node:path';
import * as torch from '../torch/index.js';
import { writeJsonFileAtomic } from '../io/index.js';
import { CheckpointManager } from './checkpoint.js';
import { lockRunDir, type RunLock } from './run-dir.js';
import { MetricsLog } from './metrics.js';
import { SummaryWriter } from './tensorboard.js';
import { ELASTIC_JOB_FILE, torchelasticJob } from './cluster-env.js';

const dist = torch.distributed;

export interface ProcessContext {
  /** Whether this process is one of several ranks of the default process group. */
  distributed: boolean;
  rank: number;
  worldSize: number;
  device: torch.Device;
  /** One-line notices; silent on ranks other than 0. */
  log: (line: string) => void;
}

/**
 * The rank and world size of the default process group (0 of 1 without one), the device (the
 * given one, else cuda:LOCAL_RANK when CUDA exists, else cpu), and a rank-0 log (default
 * console.log).
 */
export function processContext(options: { device?: torch.Device; log?: (line: string) => void }): ProcessContext {
  const distributed = dist.isInitialized() && dist.getWorldSize() > 1;
  const rank = distributed ? dist.getRank() : 0;
  const worldSize = distributed ? dist.getWorldSize() : 1;
  const device = options.device ?? (torch.cuda.isAvailable() ? `cuda:${distributed ? dist.getLocalRank() : 0}` : 'cpu');
  if (device !== 'cpu') {
    const count = torch.cuda.deviceCount();
    if (torch.cuda.deviceIndex(device) >= count) {
      throw new Error(`device ${device}: this machine has ${count} CUDA device(s)` +
        (distributed ? ` and this is local rank ${dist.getLocalRank()}: start at most ${count} rank(s) per node, or pass --device cpu` : ''));
    }
  }
  const log = rank === 0 ? options.log ?? ((line: string) => console.log(line)) : () => {};
  return { distributed, rank, worldSize, device, log };
}

export interface RunOutputs {
  /** The run folder's lock (with options.lock), released by close(). */
  lock: RunLock | null;
  checkpoints: CheckpointManager | null;
  metrics: MetricsLog | null;
  tensorboard: SummaryWriter | null;
  /** The given log, also appending each line to the run's log.txt with its time (rank 0), as DiT's create_logger. */
  log: (line: string) => void;
}

/** Appends `[YYYY-MM-DD HH:MM:SS] line` to `path`, as DiT's logger writes log.txt. */
function appendLogLine(path: string, line: string): void {
  appendFileSync(path, `[${new Date().toISOString().replace('T', ' ').slice(0, 19)}] ${line}\n`);
}

/**
 * Rank 0's checkpoint manager (`runDir/checkpoints`), metrics.jsonl and TensorBoard writer; null
 * on other ranks. With `lock`, the run folder is locked first (lockRunDir), so a second trainer of
 * it is refused before anything changes. Resuming from `resumeStep` drops the records after it
 * (metrics), purges the later TensorBoard events and moves the checkpoints of later steps, the
 * abandoned run's, aside (CheckpointManager.setAsideAfter), saying so.
 */
export function openRunOutputs(
  runDir: string, rank: number,
  options: { keepLast?: number; resumeStep?: number; lock?: boolean; log?: (line: string) => void; args?: Record<string, unknown> },
): RunOutputs {
  const { resumeStep, log: given = () => {} } = options;
  if (rank !== 0) return { lock: null, checkpoints: null, metrics: null, tensorboard: null, log: given };
  const lock = options.lock === true ? lockRunDir(runDir, given) : null;
  const logFile = join(runDir, 'log.txt');
  const log = (line: string): void => {
    appendLogLine(logFile, line);
    given(line);
  };
  try {
    appendLogLine(logFile, resumeStep === undefined ? `run folder ${runDir}` : `resuming in ${runDir} from step ${resumeStep}`);
    // The flags of this start of the run (a resume rewrites it with its own), as the checkpoints' metadata records them.
    if (options.args !== undefined) {
      writeJsonFileAtomic(join(runDir, 'args.json'), options.args);
      appendLogLine(logFile, `args ${JSON.stringify(options.args)}`);
    }
    // Under torchrun, which job started the run: a restart of that job continues it (elasticRestartRun).
    const job = torchelasticJob();
    if (job !== null) writeJsonFileAtomic(join(runDir, ELASTIC_JOB_FILE), job);
    const checkpoints = new CheckpointManager(join(runDir, 'checkpoints'), { keepLast: options.keepLast });
    if (resumeStep !== undefined) {
      const aside = checkpoints.setAsideAfter(resumeStep);
      if (aside !== null) log(`note: resuming from step ${resumeStep}: the later checkpoints of the abandoned run are moved to ${aside}`);
    }
    return {
      lock,
      checkpoints,
      metrics: new MetricsLog(join(runDir, 'metrics.jsonl'), resumeStep !== undefined ? { resumeStep } : {}),
      tensorboard: new SummaryWriter(runDir, resumeStep !== undefined ? { purgeStep: resumeStep + 1 } : {}),
      log,
    };
  } catch (error) {
    lock?.release();
    throw error;
  }
}

/**
 * `error`, when a collective failed, saying where this rank was (`step 7 (epoch 1)`): a timeout
 * then names the rank and the step, not only the operation. Other errors are returned as they are.
 */
export function collectiveAt(error: unknown, where: string): unknown {
  return error instanceof dist.CollectiveError ? error.at(where) : error;
}

/**
 * The items of `source` for as long as every rank has one. Each rank reads its own shard, and one
 * whose shard ends early (a batch whose every image was unreadable is left out) would otherwise
 * enter the next collective while the others are still in a training step: the collectives pair
 * up wrongly, exchange the wrong tensors, and a rank hangs or fails far from the cause. Before
 * each item the ranks agree, with one one-element allReduce, whether all have one; at the first
 * rank that has none the epoch ends on every rank, the items left over going to `discard`.
 * Without a process group it is `source` itself.
 */
export async function* lockstep<T>(
  source: AsyncIterable<T>, context: Pick<ProcessContext, 'distributed' | 'device' | 'log'>, what: { epoch: number; discard: (item: T) => void },
): AsyncGenerator<T> {
  if (!context.distributed) {
    yield* source;
    return;
  }
  const iterator = source[Symbol.asyncIterator]();
  let count = 0;
  try {
    for (;;) {
      const next = await iterator.next();
      const allHaveOne = torch.scope(() => {
        const flag = torch.tensor([next.done === true ? 0 : 1], { dtype: 'int32' }).to(context.device);
        dist.allReduce(flag, 'min');
        return flag.item() === 1;
      });
      if (!allHaveOne) {
        if (next.done !== true) {
          what.discard(next.value);
          context.log(`note: epoch ${what.epoch} ends after ${count} batches on every rank: another rank has no more ` +
            '(its shard lost batches to unreadable images); the rest of this rank\'s epoch is skipped');
        }
        return;
      }
      count++;
      yield next.value;
    }
  } finally {
    await iterator.return?.();
  }
}

/** `defaults` overridden by the options that were given: an explicit `undefined` keeps the default. */
export function withDefaults<T extends object>(defaults: T, options: Partial<T>): T {
  const keys = Object.keys(defaults) as (keyof T)[];
  return { ...defaults, ...Object.fromEntries(keys.filter((k) => options[k] !== undefined).map((k) => [k, options[k]])) };
}
