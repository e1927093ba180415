// The launchers people already have, read as torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK,
// MASTER_ADDR, MASTER_PORT), which the rest of reals reads: SLURM's srun tasks and Open MPI's
// mpirun processes each become one rank of one process group, as PyTorch Lightning maps them.
// Also what a torchrun worker owes its agent: the error file on failure, and a restart that
// continues the run its failed attempt left. Variables torchrun or `reals launch` set always win.
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CheckpointManager } from './checkpoint.js';

/** How SLURM or Open MPI started this process, as the rank it is of which world. */
export interface ClusterEnvironment {
  launcher: 'SLURM' | 'Open MPI';
  rank: number;
  worldSize: number;
  localRank: number;
  /** The node's index (SLURM_NODEID); null where the launcher gives none. */
  nodeRank: number | null;
  masterAddr: string;
  masterPort: number;
}

/**
 * The host names of a SLURM host list (`node[01-03,07],gpu5` is node01, node02, node03, node07,
 * gpu5), in order: comma-separated entries, each with any number of bracketed ranges whose
 * numbers keep the zero padding of the range's start, as `scontrol show hostnames` expands them.
 */
export function expandHostList(list: string): string[] {
  const hosts: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i <= list.length; i++) {
    const char = list[i];
    if (char === '[') depth++;
    else if (char === ']') depth--;
    if (depth < 0 || depth > 1 || (i === list.length && depth !== 0)) throw new Error(`SLURM host list '${list}': unbalanced brackets`);
    if ((char === ',' && depth === 0) || i === list.length) {
      const entry = list.slice(start, i).trim();
      if (entry !== '') hosts.push(...expandHostEntry(entry, list));
      start = i + 1;
    }
  }
  return hosts;
}

/** One entry of a host list, `prefix[ranges]suffix...`, expanded as a product left to right. */
function expandHostEntry(entry: string, list: string): string[] {
  const open = entry.indexOf('[');
  if (open < 0) return [entry];
  const close = entry.indexOf(']', open);
  const numbers = entry.slice(open + 1, close).split(',').flatMap((range) => {
    const match = /^(\d+)(?:-(\d+))?$/.exec(range.trim());
    if (match === null) throw new Error(`SLURM host list '${list}': '${range}' is not a number or a range lo-hi`);
    const [, low, high = low] = match as unknown as [string, string, string | undefined];
    if (Number(high) < Number(low)) throw new Error(`SLURM host list '${list}': the range ${range} runs backwards`);
    if (Number(high) - Number(low) >= 65536) throw new Error(`SLURM host list '${list}': the range ${range} is longer than 65536 hosts`);
    return Array.from({ length: Number(high) - Number(low) + 1 }, (_, k) => String(Number(low) + k).padStart(low.length, '0'));
  });
  const rest = expandHostEntry(entry.slice(close + 1), list);
  return numbers.flatMap((n) => rest.map((tail) => `${entry.slice(0, open)}${n}${tail}`));
}

/**
 * The rendezvous port of a SLURM job, as Lightning's SLURMEnvironment: 15000 plus the job id's
 * last four digits, so that every task of the job computes the same port and two jobs sharing a
 * node rarely collide; 12910 without a job id.
 */
export function slurmPort(jobId: string | undefined): number {
  return jobId !== undefined && /^\d+$/.test(jobId) ? 15000 + Number(jobId.slice(-4)) : 12910;
}

/** torchrun's default --master-port, for Open MPI runs that name no MASTER_PORT. */
const DEFAULT_MASTER_PORT = 29500;

function integerVariable(env: NodeJS.ProcessEnv, name: string): number {
  const raw = env[name];
  if (raw === undefined || !/^\s*\d+\s*$/.test(raw)) throw new Error(`environment variable ${name} must be a non-negative integer, got '${raw ?? ''}'`);
  return Number(raw);
}

function masterPortOr(env: NodeJS.ProcessEnv, fallback: number): number {
  return env.MASTER_PORT !== undefined && env.MASTER_PORT !== '' ? integerVariable(env, 'MASTER_PORT') : fallback;
}

/**
 * The rank, world and rendezvous of a process that SLURM (srun) or Open MPI (mpirun) started,
 * read from their variables; null when WORLD_SIZE is set (torchrun, `reals launch`, or a user's
 * own mapping wins), when neither launcher started it, or started it alone (a world of 1 needs no
 * rendezvous). SLURM counts when SLURM_NTASKS and SLURM_PROCID are set, unless the job is named
 * `bash` or `interactive` (Lightning's way to leave an interactive allocation alone); the
 * master is MASTER_ADDR or the first host of the step's node list (SLURM_STEP_NODELIST, where
 * task 0 runs, else SLURM_JOB_NODELIST), the port MASTER_PORT or slurmPort. Open MPI
 * (OMPI_COMM_WORLD_SIZE) gives no host list, so MASTER_ADDR is required; MASTER_PORT defaults
 * to torchrun's 29500.
 */
export function clusterEnvironment(env: NodeJS.ProcessEnv = process.env): ClusterEnvironment | null {
  if (env.WORLD_SIZE !== undefined) return null;
  let found: ClusterEnvironment;
  if (env.OMPI_COMM_WORLD_SIZE !== undefined) {
    if (integerVariable(env, 'OMPI_COMM_WORLD_SIZE') === 1) return null;
    const masterAddr = env.MASTER_ADDR ?? '';
    if (masterAddr === '') throw new Error('Open MPI started this process (OMPI_COMM_WORLD_SIZE is set): set MASTER_ADDR to the host of rank 0, e.g. mpirun -x MASTER_ADDR=<host>');
    found = {
      launcher: 'Open MPI', rank: integerVariable(env, 'OMPI_COMM_WORLD_RANK'), worldSize: integerVariable(env, 'OMPI_COMM_WORLD_SIZE'),
      localRank: integerVariable(env, 'OMPI_COMM_WORLD_LOCAL_RANK'), nodeRank: null, masterAddr, masterPort: masterPortOr(env, DEFAULT_MASTER_PORT),
    };
  } else if (env.SLURM_NTASKS !== undefined && env.SLURM_PROCID !== undefined && !['bash', 'interactive'].includes(env.SLURM_JOB_NAME ?? '')) {
    if (integerVariable(env, 'SLURM_NTASKS') === 1) return null;
    const nodeList = env.SLURM_STEP_NODELIST ?? env.SLURM_JOB_NODELIST ?? env.SLURM_NODELIST;
    let masterAddr = env.MASTER_ADDR ?? '';
    if (masterAddr === '') {
      if (nodeList === undefined) throw new Error('SLURM started this process (SLURM_NTASKS is set) but SLURM_JOB_NODELIST is not: set MASTER_ADDR to the host of task 0');
      const first = expandHostList(nodeList)[0];
      if (first === undefined) throw new Error(`SLURM's node list '${nodeList}' names no host: set MASTER_ADDR to the host of task 0`);
      masterAddr = first;
    }
    found = {
      launcher: 'SLURM', rank: integerVariable(env, 'SLURM_PROCID'), worldSize: integerVariable(env, 'SLURM_NTASKS'),
      localRank: integerVariable(env, 'SLURM_LOCALID'), nodeRank: env.SLURM_NODEID === undefined ? null : integerVariable(env, 'SLURM_NODEID'),
      masterAddr, masterPort: masterPortOr(env, slurmPort(env.SLURM_JOB_ID)),
    };
  } else {
    return null;
  }
  const names = found.launcher === 'SLURM' ? ['SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_LOCALID'] : ['OMPI_COMM_WORLD_RANK', 'OMPI_COMM_WORLD_SIZE', 'OMPI_COMM_WORLD_LOCAL_RANK'];
  if (found.worldSize < 1 || found.rank >= found.worldSize || found.localRank > found.rank) {
    throw new Error(`${found.launcher}: ${names[0]}=${found.rank}, ${names[1]}=${found.worldSize}, ${names[2]}=${found.localRank} is not a rank of the world`);
  }
  return found;
}

/**
 * Sets torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, GROUP_RANK where known, MASTER_ADDR,
 * MASTER_PORT) in `env` from clusterEnvironment, so that every reader of those variables
 * (torch.distributed.initProcessGroup, the trainers, the stop signal) sees one world. Returns
 * what it mapped, or null where it set nothing. The CLI calls it first thing; a program using
 * the library under srun or mpirun calls it before its first initProcessGroup().
 */
export function applyClusterEnvironment(env: NodeJS.ProcessEnv = process.env): ClusterEnvironment | null {
  const found = clusterEnvironment(env);
  if (found === null) return null;
  env.RANK = String(found.rank);
  env.WORLD_SIZE = String(found.worldSize);
  env.LOCAL_RANK = String(found.localRank);
  if (found.nodeRank !== null) env.GROUP_RANK = String(found.nodeRank);
  env.MASTER_ADDR = found.masterAddr;
  env.MASTER_PORT = String(found.masterPort);
  return found;
}

/** One line saying how a launcher's variables were read. */
export function describeClusterEnvironment(found: ClusterEnvironment): string {
  const start = found.launcher === 'SLURM' ? 'srun' : 'mpirun';
  return `note: ${found.launcher}: ${found.worldSize} task(s), this is rank ${found.rank} (local rank ${found.localRank}); ` +
    `rendezvous at ${found.masterAddr}:${found.masterPort}; every task must be started by ${start}, or the others wait for it`;
}

/**
 * Writes torchelastic's error record of `error` to TORCHELASTIC_ERROR_FILE, where torchrun reads
 * a failed worker's cause, in the format of torch's ErrorHandler.record_exception:
 * `{"message": {"message": "<name>: <message>", "extraInfo": {"py_callstack", "timestamp"}}}`,
 * the callstack being the JavaScript stack. Nothing without the variable. Returns the path written.
 */
export function writeElasticErrorFile(error: unknown, env: NodeJS.ProcessEnv = process.env): string | null {
  const path = env.TORCHELASTIC_ERROR_FILE;
  if (path === undefined || path === '') return null;
  const name = error instanceof Error ? error.name : 'Error';
  const message = error instanceof Error ? error.message : String(error);
  const record = {
    message: {
      message: `${name}: ${message}`,
      extraInfo: { py_callstack: error instanceof Error && error.stack !== undefined ? error.stack : message, timestamp: String(Math.floor(Date.now() / 1000)) },
    },
  };
  writeFileSync(path, JSON.stringify(record));
  return path;
}

/** The run folder's record of the torchrun job that started it, read on a restart. */
export const ELASTIC_JOB_FILE = 'elastic.json';

/**
 * The torchrun job this process is a worker of: its rendezvous id (TORCHELASTIC_RUN_ID) and the
 * agent store's endpoint, which stay the same over the job's restarts; null outside torchrun.
 */
export function torchelasticJob(env: NodeJS.ProcessEnv = process.env): { runId: string; store: string } | null {
  if (env.TORCHELASTIC_RESTART_COUNT === undefined) return null;
  return { runId: env.TORCHELASTIC_RUN_ID ?? '', store: `${env.MASTER_ADDR ?? ''}:${env.MASTER_PORT ?? ''}` };
}

/**
 * On a torchrun restart (TORCHELASTIC_RESTART_COUNT > 0), the run folder to continue: the newest
 * run folder of `resultsDir` (highest NNN) that this torchrun job started (its elastic.json equals
 * torchelasticJob) and that holds a checkpoint. Null on a first attempt, outside torchrun, or
 * when the failed attempts saved no checkpoint: the run then starts anew.
 */
export function elasticRestartRun(resultsDir: string, env: NodeJS.ProcessEnv = process.env): string | null {
  const job = torchelasticJob(env);
  if (job === null || !(Number(env.TORCHELASTIC_RESTART_COUNT) > 0) || !existsSync(resultsDir)) return null;
  const runs = readdirSync(resultsDir).filter((name) => /^\d+-/.test(name)).sort((a, b) => parseInt(b, 10) - parseInt(a, 10));
  for (const name of runs) {
    const record = join(resultsDir, name, ELASTIC_JOB_FILE);
    if (!existsSync(record)) continue;
    let recorded: unknown;
    try {
      recorded = JSON.parse(readFileSync(record, 'utf8'));
    } catch {
      continue;
    }
    if (JSON.stringify(recorded) !== JSON.stringify(job)) continue;
    if (existsSync(join(resultsDir, name, 'checkpoints')) && new CheckpointManager(join(resultsDir, name, 'checkpoints')).last() !== null) return join(resultsDir, name);
  }
  return null;
}
