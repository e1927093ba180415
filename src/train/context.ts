// A training run's process context: rank 0's run outputs (the run folder's lock, checkpoints,
// metrics.jsonl, TensorBoard, log.txt) and the ranks reading their batches in step. Which rank
// this is, its device and its rank-0 log are src/runlog/process.ts's processContext.
import { appendFileSync } from 'node:fs';
import { join } from 'node:path';
import * as torch from '../torch/index.js';
import { writeJsonFileAtomic } from '../io/index.js';
import { CheckpointManager } from './checkpoint.js';
import { lockRunDir, type RunLock } from './run-dir.js';
import { MetricsLog } from '../runlog/metrics.js';
import type { ProcessContext } from '../runlog/process.js';
import { SummaryWriter } from '../runlog/tensorboard.js';
import { ELASTIC_JOB_FILE, torchelasticJob } from './cluster-env.js';

const dist = torch.distributed;

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
