// Runs a worker.ts scenario on two ranks through launch() and reads what each rank reported.
import { mkdtempSync, readFileSync, existsSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { PassThrough } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { launch, type LaunchOptions } from '../../src/pipelines/launch.js';

export const WORKER = join(dirname(fileURLToPath(import.meta.url)), 'worker.ts');

/** A TCP port nothing listens on right now (the OS picks it). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

export interface RanksResult {
  code: number;
  output: string;
  seconds: number;
  /** rank<R>.json of each rank, undefined where the rank wrote none. */
  reports: (Record<string, any> | undefined)[];
  pids: number[];
}

/**
 * launch() with output collected. A watchdog sends this process SIGTERM after `limitMs`, which
 * launch() forwards to the ranks, so a hang fails the test instead of blocking the run.
 */
export async function runLaunch(options: Omit<LaunchOptions, 'stdout' | 'stderr'>, limitMs = 25_000): Promise<{ code: number; output: string; seconds: number }> {
  const sink = new PassThrough();
  let output = '';
  sink.on('data', (chunk: Buffer) => { output += chunk.toString(); });
  const start = Date.now();
  const watchdog = setTimeout(() => process.kill(process.pid, 'SIGTERM'), limitMs);
  try {
    const code = await launch({ ...options, stdout: sink, stderr: sink });
    return { code, output, seconds: (Date.now() - start) / 1000 };
  } finally {
    clearTimeout(watchdog);
  }
}

export async function runScenario(scenario: string, options: Partial<LaunchOptions> = {}): Promise<RanksResult> {
  const outDir = mkdtempSync(join(tmpdir(), `reals-dist-${scenario}-`));
  const nprocPerNode = options.nprocPerNode ?? 2;
  const { code, output, seconds } = await runLaunch({
    nprocPerNode,
    masterPort: await freePort(),
    command: ['node', '--import', 'tsx', WORKER, scenario, outDir],
    ...options,
  });
  const read = (file: string): string | undefined => (existsSync(join(outDir, file)) ? readFileSync(join(outDir, file), 'utf8') : undefined);
  const reports = Array.from({ length: nprocPerNode }, (_, r) => {
    const text = read(`rank${r}.json`);
    return text === undefined ? undefined : JSON.parse(text);
  });
  const pids = Array.from({ length: nprocPerNode }, (_, r) => Number(read(`pid${r}`)));
  rmSync(outDir, { recursive: true, force: true });
  return { code, output, seconds, reports, pids };
}

/** Whether a process with this pid still runs (a zombie, dead but not yet reaped by its new parent, does not). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  const stat = existsSync(`/proc/${pid}/stat`) ? readFileSync(`/proc/${pid}/stat`, 'utf8') : '';
  return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
}
