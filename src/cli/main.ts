// `reals <command>`: a thin layer over the library. Each command lives in its own file and
// registers itself on the program here.
import { Command } from 'commander';
import * as torch from '../torch/index.js';
import { launchCommand } from './launch.js';
import { evaluateCommand, fidStatsCommand, refBatchCommand } from './evaluate.js';
import { ifidCommand } from './ifid.js';
import { sitCommand, ditCommand } from './sit.js';
import { sampleCommand } from './sample.js';
import { cacheLatentsCommand } from './cache-latents.js';
import { extractEmaCommand } from './extract-ema.js';
import { alignCommand } from './align.js';
import { segmentCommand, depthCommand, headsCommand } from './heads.js';
import { demoCommand } from './demo.js';
import { teacherCommand } from './teacher.js';
import { classifierCommand } from './classifier.js';
import { exportCommand, serveCommand } from './export.js';
import { reportCommand } from './report.js';
import { markRequiredOptions } from './parse.js';
import { TrainingStopped } from '../train/stop.js';
import { applyClusterEnvironment, describeClusterEnvironment, elasticRestartRun, writeElasticErrorFile } from '../train/cluster-env.js';

function envCommand(): Command {
  return new Command('env')
    .description('print the libtorch build, the threads of fp32 and bf16 CPU runs and the CPUs they may use (affinity, cgroup CPU quota), how they wait and whether they adapt to the load, which of the addon\'s CPU kernels run here, the devices, and time a 1024^3 matmul')
    .action(() => {
      const a = torch.randn([1024, 1024]);
      const b = torch.randn([1024, 1024]);
      a.matmul(b);
      const start = process.hrtime.bigint();
      const reps = 10;
      for (let i = 0; i < reps; i++) torch.scope(() => a.matmul(b).dispose());
      const seconds = Number(process.hrtime.bigint() - start) / 1e9;
      console.log(JSON.stringify({
        libtorch: torch.version(),
        // The intra-op threads of a CPU run in each precision on an idle machine, how they wait
        // (torch.waitPolicy), and whether they follow the machine's load (torch.threadGovernor).
        threads: { fp32: torch.runThreads('fp32', 'cpu'), bf16: torch.runThreads('bf16', 'cpu') },
        // The CPUs a run may use: those it may run on, within its control group's CPU quota.
        cpus: torch.cpuBudget,
        waitPolicy: torch.waitPolicy,
        adaptiveThreads: torch.threadGovernor(),
        cpuBf16: torch.cpuHasBf16(),
        openblasCore: torch.openblasCoreName(),
        // The addon's own CPU kernels that run here (the rest is libtorch's).
        cpuKernels: torch.cpuKernels(),
        cuda: torch.cuda.isAvailable(),
        cudaDevices: torch.cuda.deviceCount(),
        matmul1024Gflops: Number(((2 * 1024 ** 3 * reps) / seconds / 1e9).toFixed(1)),
      }));
    });
}

export function buildProgram(): Command {
  const program = new Command('reals')
    .description('ReaLS: representation-aligned latent space, on libtorch')
    .showHelpAfterError()
    // Options after a subcommand belong to it (`reals demo merge ... --out` is merge's, not demo's).
    .enablePositionalOptions()
    .configureHelp({ showGlobalOptions: true })
    // Read by main() before parsing, so that it may stand anywhere on the command line.
    .option('--verbose', `print an error's stack trace (also ${DEBUG_ENV}=1)`);
  program.addCommand(demoCommand());
  program.addCommand(envCommand());
  program.addCommand(launchCommand());
  program.addCommand(evaluateCommand());
  program.addCommand(fidStatsCommand());
  program.addCommand(refBatchCommand());
  program.addCommand(ifidCommand());
  program.addCommand(sitCommand());
  program.addCommand(ditCommand());
  program.addCommand(sampleCommand());
  program.addCommand(cacheLatentsCommand());
  program.addCommand(extractEmaCommand());
  program.addCommand(alignCommand());
  program.addCommand(segmentCommand());
  program.addCommand(depthCommand());
  program.addCommand(headsCommand());
  program.addCommand(teacherCommand());
  program.addCommand(classifierCommand());
  program.addCommand(exportCommand());
  program.addCommand(serveCommand());
  program.addCommand(reportCommand());
  // A torchrun restart of a trainer continues the run its failed attempt left (given no --resume).
  program.hook('preAction', (_, action) => {
    const { resume, resultsDir } = action.opts<{ resume?: string; resultsDir?: unknown }>();
    if (resume !== undefined || typeof resultsDir !== 'string' || !action.options.some((o) => o.attributeName() === 'resume')) return;
    const run = elasticRestartRun(resultsDir);
    if (run === null) return;
    action.setOptionValue('resume', run);
    if ((process.env.RANK ?? '0') === '0') {
      process.stderr.write(`note: torchrun restart ${process.env.TORCHELASTIC_RESTART_COUNT}: resuming ${run} from its last checkpoint\n`);
    }
  });
  return markRequiredOptions(program);
}

/**
 * `args` without `--local-rank N` (`--local-rank=N`, `--local_rank`), which torch.distributed.launch
 * passes to every worker without --use-env: the rank's LOCAL_RANK says the same. Words after `--`
 * are another command's and are kept.
 */
export function withoutLocalRankFlag(args: readonly string[]): string[] {
  const end = args.includes('--') ? args.indexOf('--') : args.length;
  const kept: string[] = [];
  for (let i = 0; i < end; i++) {
    const word = args[i]!;
    if (/^--local[-_]rank=\d+$/.test(word)) continue;
    if (/^--local[-_]rank$/.test(word) && /^\d+$/.test(args[i + 1] ?? '')) {
      i++;
      continue;
    }
    kept.push(word);
  }
  return [...kept, ...args.slice(end)];
}

const DEBUG_ENV = 'REALS_DEBUG';

/**
 * Runs the command line `argv` (process.argv). An error prints one line, `error: <message>` (the
 * library's messages name the flag, file, key or shape at fault), and sets the exit code 1; the
 * stack trace is printed only with --verbose or REALS_DEBUG=1. A training run stopped by a signal,
 * its checkpoint saved, exits with 128 + the signal's number. Words after `--` (the command
 * `reals launch` starts) are left as they are.
 */
export async function main(argv: string[]): Promise<void> {
  const end = argv.includes('--') ? argv.indexOf('--') : argv.length;
  const verbose = argv.slice(0, end).includes('--verbose') || process.env[DEBUG_ENV] === '1';
  const args = withoutLocalRankFlag([...argv.slice(0, end).filter((word) => word !== '--verbose'), ...argv.slice(end)]);
  try {
    // srun's or mpirun's variables become torchrun's before any command reads them; `reals launch`
    // sets its ranks' variables itself.
    const cluster = args[2] === 'launch' ? null : applyClusterEnvironment();
    if (cluster !== null && cluster.rank === 0) process.stderr.write(`${describeClusterEnvironment(cluster)}\n`);
    await buildProgram().parseAsync(args);
  } catch (error) {
    // A trainer stopped by SIGTERM/SIGINT saved its checkpoint and logged its one line.
    if (error instanceof TrainingStopped) {
      process.exitCode = error.exitCode;
      return;
    }
    const message = error instanceof Error ? error.message : String(error);
    process.stderr.write(verbose && error instanceof Error && error.stack !== undefined ? `${error.stack}\n` : `error: ${message}\n`);
    process.exitCode = 1;
    // torchrun reports a failed worker by the record it left there.
    try {
      writeElasticErrorFile(error);
    } catch (writeError) {
      process.stderr.write(`warning: could not write TORCHELASTIC_ERROR_FILE ${process.env.TORCHELASTIC_ERROR_FILE}: ${(writeError as Error).message}\n`);
    }
  }
}
