// The reference sides of `npm run bench`, each a child process that answers one stdout line per
// stdin line: PyTorch eager (bench/torch_eager.py) and libtorch from C++ (bench/matmul.cc,
// compiled here against the libtorch that native/build.mjs found).
import { spawn, execFileSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, renameSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { DEFAULT_WAIT_ENV } from '../src/torch/native.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

/**
 * The environment of the reference sides: this one, less the OpenMP wait policy reals sets for
 * itself when loading (src/torch/native.ts), so PyTorch and C++ run as they do out of the box. A
 * policy the user exported stays, for every side.
 */
function referenceEnvironment(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  if (env.REALS_DEFAULT_WAIT_POLICY === '1') {
    for (const name of Object.keys(DEFAULT_WAIT_ENV)) delete env[name];
    delete env.REALS_DEFAULT_WAIT_POLICY;
  }
  return env;
}

class LineWorker {
  private readonly child: ChildProcessWithoutNullStreams;
  private readonly lines: AsyncIterator<string>;
  private stderr = '';
  private spawnError: Error | undefined;

  constructor(readonly name: string, command: string, args: string[]) {
    this.child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'], env: referenceEnvironment() });
    this.child.on('error', (error) => { this.spawnError = error; });
    this.child.stderr.on('data', (chunk: Buffer) => { this.stderr += chunk.toString(); });
    this.lines = createInterface({ input: this.child.stdout })[Symbol.asyncIterator]();
  }

  async readLine(): Promise<string> {
    const next = await this.lines.next();
    if (next.done) {
      const why = this.spawnError?.message ?? (this.stderr.trim() || 'no output');
      throw new Error(`bench: ${this.name} stopped: ${why}`);
    }
    return next.value;
  }

  async request(line: string): Promise<string> {
    this.child.stdin.write(`${line}\n`);
    return this.readLine();
  }

  close(): void { this.child.stdin.end(); }
}

const PytorchReady = z.object({ torch: z.string(), threads: z.number().int(), blas: z.string(), device: z.string() });
const PytorchSample = z.union([z.object({ seconds: z.number(), cpuSeconds: z.number() }), z.object({ error: z.string() })]);

/** Wall-clock and process CPU seconds per iteration. */
export interface Sample { wall: number; cpu: number }

export interface PytorchWorker {
  readonly torch: string;
  readonly threads: number;
  readonly blas: string;
  /** The device the workloads run on, in words (the GPU's name on CUDA). */
  readonly device: string;
  /**
   * Seconds per iteration of `item` (set up at `batch` size, for the model items, in `precision`:
   * bf16 under torch.autocast), run `iterations` times in a row.
   */
  sample(item: string, iterations: number, batch?: number, precision?: 'fp32' | 'bf16'): Promise<Sample>;
  close(): void;
}

/** Starts bench/torch_eager.py under `python` (Debian's python3 with torch by default), its workloads on `device`. */
export async function startPytorch(python: string, threads: number, device: string): Promise<PytorchWorker> {
  const worker = new LineWorker(`PyTorch (${python} bench/torch_eager.py)`, python,
    [join(root, 'bench/torch_eager.py'), '--threads', String(threads), '--device', device]);
  const ready = PytorchReady.parse(JSON.parse(await worker.readLine()));
  return {
    ...ready,
    sample: async (item, iterations, batch, precision = 'fp32') => {
      const request = JSON.stringify({ item, iterations, batch: batch ?? null, precision });
      const answer = PytorchSample.parse(JSON.parse(await worker.request(request)));
      if ('error' in answer) throw new Error(`PyTorch side of ${item}: ${answer.error}`);
      return { wall: answer.seconds, cpu: answer.cpuSeconds };
    },
    close: () => worker.close(),
  };
}

// native/build.mjs records the libtorch it built against (include and lib folders, C++ ABI).
const BuildConfig = z.object({
  torch: z.object({
    source: z.string(),
    include: z.array(z.string()).min(1),
    lib: z.string(),
    abi: z.number().int().optional(),
  }),
});

export interface CppWorker {
  readonly libtorch: string;
  readonly threads: number;
  /** Seconds per iteration of `item` (bench/matmul.cc knows 'matmul'), run `iterations` times in a row. */
  sample(item: string, iterations: number): Promise<Sample>;
  close(): void;
}

/**
 * Compiles bench/matmul.cc with `compiler` against native/build/config.json's libtorch (cached
 * in the temp folder under a hash of source, config and compiler) and starts it.
 */
export async function startCpp(compiler: string, threads: number): Promise<CppWorker> {
  const configPath = join(root, 'native/build/config.json');
  if (!existsSync(configPath)) throw new Error(`bench: ${configPath} is missing; run \`npm run build:native\` first`);
  const config = BuildConfig.safeParse(JSON.parse(readFileSync(configPath, 'utf8')));
  if (!config.success) throw new Error(`bench: ${configPath}: ${z.prettifyError(config.error)}`);
  const { torch } = config.data;
  const source = join(root, 'bench/matmul.cc');
  const hash = createHash('sha256').update(readFileSync(source)).update(JSON.stringify(torch)).update(compiler).digest('hex');
  const binary = join(tmpdir(), `reals-bench-matmul-${hash.slice(0, 16)}`);
  if (!existsSync(binary)) {
    execFileSync(compiler, [
      '-std=c++17', '-O2',
      ...(torch.abi === undefined ? [] : [`-D_GLIBCXX_USE_CXX11_ABI=${torch.abi}`]),
      ...torch.include.map((dir) => `-I${dir}`),
      source, '-o', `${binary}.${process.pid}`,
      `-L${torch.lib}`, `-Wl,-rpath,${torch.lib}`, '-lc10', '-ltorch_cpu',
    ], { stdio: ['ignore', 'inherit', 'inherit'] });
    renameSync(`${binary}.${process.pid}`, binary);
  }
  const worker = new LineWorker(`C++ (${binary})`, binary, [String(threads)]);
  const [word, libtorch, reportedThreads] = (await worker.readLine()).split(' ');
  if (word !== 'ready' || libtorch === undefined || reportedThreads === undefined) throw new Error(`bench: ${binary} did not start`);
  return {
    libtorch,
    threads: Number(reportedThreads),
    sample: async (item, iterations) => {
      const answer = await worker.request(`${item} ${iterations}`);
      const [wall, cpu] = answer.split(' ').map(Number);
      if (!(wall! > 0 && cpu! >= 0)) throw new Error(`bench: ${binary} answered '${answer}' to '${item} ${iterations}'`);
      return { wall: wall!, cpu: cpu! };
    },
    close: () => worker.close(),
  };
}
