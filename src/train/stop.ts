// A stop signal saves the run. Under preemption (SLURM, Kubernetes, torchrun's agent) a trainer
// gets SIGTERM, or SIGINT from a terminal, some seconds before SIGKILL. The first one lets the
// current step finish; at the step boundary the ranks agree to stop (one allReduce, so that they
// all stop after the same step, whichever of them was signalled), the trainer writes its last
// checkpoint as at the end of a run, and ends with TrainingStopped after one line naming the step
// and the --resume command. A second signal ends the process at once, as if no handler were there.
import { constants } from 'node:os';
import * as torch from '../torch/index.js';
import type { ProcessContext } from '../runlog/process.js';

const dist = torch.distributed;
const SIGNALS = ['SIGTERM', 'SIGINT'] as const;

/** The exit status a shell gives a process ended by `signal`: 128 + its number (SIGTERM 143, SIGINT 130). */
export function signalExitCode(signal: NodeJS.Signals): number {
  return 128 + (constants.signals[signal] ?? 0);
}

/**
 * A run that stopped on a signal after saving its checkpoint. The CLI exits with `exitCode`
 * (128 + the signal's number, as a shell reports a process the signal ended) after the message,
 * which rank 0 has already logged.
 */
export class TrainingStopped extends Error {
  readonly exitCode: number;

  constructor(readonly signal: NodeJS.Signals, readonly step: number, readonly checkpoint: string | null, readonly runDir: string, message: string) {
    super(message);
    this.name = 'TrainingStopped';
    this.exitCode = signalExitCode(signal);
  }
}

/** `word` as a POSIX shell reads it back: as it is when it has no special characters, else in single quotes. */
function shellWord(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replaceAll("'", `'\\''`)}'`;
}

/** The reals commands that train, and take --resume. */
const TRAIN_COMMANDS = ['sit train', 'dit train', 'align train', 'teacher train', 'classifier train'];

/**
 * The command that continues the run in `runDir`: the reals training command line this process
 * was started with (under `reals launch`, inside the launcher's command; under srun, mpirun or
 * torchrun, the command those launchers start), any --resume replaced by
 * `--resume runDir`. Another process (a script calling the library, `reals demo`) gets the flag alone.
 */
export function resumeCommand(runDir: string, argv: readonly string[] = process.argv, env: NodeJS.ProcessEnv = process.env): string {
  const [, script, ...args] = argv;
  const resume = `--resume ${shellWord(runDir)}`;
  if (script === undefined || !/(^|\/)reals(\.js)?$/.test(script) || !TRAIN_COMMANDS.includes(args.slice(0, 2).join(' '))) return resume;
  const kept: string[] = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--resume') i++;
    else if (!args[i]!.startsWith('--resume=')) kept.push(args[i]!);
  }
  const command = `reals ${[...kept.map(shellWord), resume].join(' ')}`;
  const worldSize = Number(env.WORLD_SIZE ?? 1);
  // `align train --gpus-per-node N` starts its own launcher.
  const launchesItself = kept.some((word) => word === '--gpus-per-node' || word.startsWith('--gpus-per-node='));
  if (!(worldSize > 1) || launchesItself) return command;
  // Ranks that srun, mpirun or torchrun started (not reals launch, whose ranks inherit its
  // caller's variables too) are started again by that launcher, with the trainer's own command.
  const foreign = env.SLURM_PROCID !== undefined || env.OMPI_COMM_WORLD_RANK !== undefined || env.TORCHELASTIC_RESTART_COUNT !== undefined;
  if (foreign && env[torch.distributed.LAUNCHER_PID_ENV] === undefined) return command;
  const perNode = Number(env.LOCAL_WORLD_SIZE ?? worldSize);
  const nodes = Math.max(1, Math.round(worldSize / perNode));
  const multiNode = nodes > 1 ? ` --nnodes ${nodes} --node-rank <this node's> --master-addr ${shellWord(env.MASTER_ADDR ?? '?')} --master-port ${env.MASTER_PORT ?? '?'}` : '';
  return `reals launch --nproc-per-node ${perNode}${multiNode} -- ${command.slice('reals '.length)}`;
}

/**
 * The signals of one training loop: created before the loop (StopSignal.listen), asked at each
 * step boundary (`if (await stop.requested()) break`), told after the last checkpoint is written
 * (`stop.end(...)`, which throws TrainingStopped when the loop broke for a signal), and disposed
 * in the loop's `finally`.
 */
export class StopSignal {
  /** The signal this process received first, or null. */
  private received: NodeJS.Signals | null = null;
  private count = 0;
  /** The signal the ranks agreed to stop on (this rank's or another's), or null. */
  private agreed: NodeJS.Signals | null = null;
  private readonly onSignal = (signal: NodeJS.Signals): void => {
    this.count++;
    if (this.count > 1) {
      this.removeListeners();
      // Dies by the signal when no other handler is left, as without this class; else exits with the shell's status for it.
      if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
      process.exit(signalExitCode(signal));
    }
    this.received = signal;
    // Without a handler the next signal takes its default action, ending the process even while
    // a step or the checkpoint runs synchronously (a handler runs only between them); after the
    // signals already queued with this one, which the count above sees.
    setImmediate(() => this.removeListeners());
  };

  private constructor(private readonly context: Pick<ProcessContext, 'distributed' | 'device'>) {
    for (const signal of SIGNALS) process.on(signal, this.onSignal);
  }

  /** Starts catching SIGTERM and SIGINT for the loop of a trainer running as `context`. */
  static listen(context: Pick<ProcessContext, 'distributed' | 'device'>): StopSignal {
    return new StopSignal(context);
  }

  /**
   * Whether the run stops after the step just done: on one process, whether it received a signal;
   * on several ranks, whether any did (every rank calls it after every step, and all get the same
   * answer).
   */
  async requested(): Promise<boolean> {
    // Signal handlers run when the event loop polls, which a loop over batches already in memory
    // (its awaits resolve as microtasks) never lets it do: one turn of the loop, a few microseconds.
    await new Promise((resolve) => setImmediate(resolve));
    if (!this.context.distributed) {
      this.agreed = this.received;
      return this.agreed !== null;
    }
    const signal = torch.scope(() => {
      const flag = torch.tensor([this.received === null ? 0 : constants.signals[this.received]], { dtype: 'int32' }).to(this.context.device);
      dist.allReduce(flag, 'max');
      return flag.item();
    });
    this.agreed = signal === 0 ? null : SIGNALS.find((s) => constants.signals[s] === signal) ?? 'SIGTERM';
    return this.agreed !== null;
  }

  /**
   * After the run's last checkpoint: when the loop stopped for a signal, waits until every rank is
   * there (rank 0 has written the checkpoint, so no rank exits and has its launcher end rank 0
   * mid-write), logs one line (rank 0's `log`) and throws TrainingStopped. Otherwise returns.
   */
  end(run: { step: number; checkpoint: string | null; runDir: string }, log: (line: string) => void): void {
    if (this.agreed === null) return;
    if (this.context.distributed) dist.barrier();
    const by = this.received === null ? `${this.agreed} (sent to another rank)` : this.agreed;
    const line = `stopped by ${by} after step ${run.step}: checkpoint ${run.checkpoint ?? '(written by rank 0)'}; ` +
      `continue with: ${resumeCommand(run.runDir)}`;
    log(line);
    throw new TrainingStopped(this.agreed, run.step, run.checkpoint, run.runDir, line);
  }

  /**
   * Stops catching the signals. While a stop is under way they stay caught: a later signal is
   * then the second (this process ends at once) or, on a rank that was not signalled itself (its
   * launcher stopping it once another rank exited), the first, which lets it finish exiting.
   */
  dispose(): void {
    if (this.agreed === null) this.removeListeners();
  }

  private removeListeners(): void {
    for (const signal of SIGNALS) process.removeListener(signal, this.onSignal);
  }
}
