// Progress of a long loop: a cli-progress bar on a terminal, and plain periodic lines otherwise
// (log files, CI), both showing step/total, rate, ETA and the latest losses. It also notices, once,
// when the steps become much slower than the run's own warm-up rate (slowdownWatch), and its
// updates are the thread governor's clock (torch.adaptThreads) in the trainers and samplers.
import cliProgress from 'cli-progress';
import { adaptThreads, getNumThreads, threadGovernor } from '../torch/index.js';

export type ProgressFields = Record<string, number | string>;

export interface ProgressOptions {
  /** Steps in the whole run. */
  total: number;
  label?: string;
  /** What a step is called (default 'it', giving 'it/s'). */
  unit?: string;
  /** Items per step (e.g. the global batch size) to show an item rate too, as `img/s`. */
  itemsPerStep?: number;
  /** The items' name (default 'img'). */
  itemUnit?: string;
  /** The step a resumed run starts from: rates and ETA count only the steps done since. */
  start?: number;
  /** Where it goes (default: stderr, as tqdm). A bar when `stream.isTTY`, lines otherwise. */
  stream?: NodeJS.WritableStream & { isTTY?: boolean };
  /** Without a terminal, at most one line per this many seconds (default 15), and one at stop. */
  intervalSeconds?: number;
  /** The clock in milliseconds (tests pass a fake one). */
  now?: () => number;
  /** The intra-op threads the run uses, for the slowdown note's advice (default: torch.getNumThreads()). */
  threads?: number;
}

export interface Progress {
  /** Reports that `step` steps are done, with the latest values to show (e.g. {loss}). */
  update(step: number, fields?: ProgressFields): void;
  /** Ends the bar (a final line without a terminal). */
  stop(): void;
}

/** H:MM:SS */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return '?';
  const s = Math.max(0, Math.round(seconds));
  return `${Math.floor(s / 3600)}:${String(Math.floor(s / 60) % 60).padStart(2, '0')}:${String(s % 60).padStart(2, '0')}`;
}

function formatFields(fields: ProgressFields): string {
  return Object.entries(fields)
    .map(([name, value]) => `${name}=${typeof value === 'number' ? String(Number(value.toPrecision(4))) : value}`)
    .join(' ');
}

/** Steps of each window the slowdown watch compares, after the first steps it skips (allocation, caches). */
const WATCH_SKIP_STEPS = 3;
const WATCH_WINDOW_STEPS = 10;
/** Two windows in a row this many times slower than the warm-up one make the note. */
const WATCH_SLOWDOWN = 3;

/**
 * Watches the time per step: the first window after a few skipped steps is the run's warm-up rate;
 * once two later windows in a row take WATCH_SLOWDOWN times as long, `note` gets one line saying
 * so, with the setting that helps (none about threads where the thread governor, `adaptive`, already
 * keeps the run to the cores others leave free). Returns the function to call with each step count and time.
 */
export function slowdownWatch(label: string, threads: number, note: (line: string) => void, adaptive = false): (step: number, time: number) => void {
  let windowStart: { step: number; time: number } | undefined;
  let warmup: number | undefined;
  let slowWindows = 0;
  let noted = false;
  return (step, time) => {
    if (noted) return;
    if (windowStart === undefined) {
      if (step >= WATCH_SKIP_STEPS) windowStart = { step, time };
      return;
    }
    if (step - windowStart.step < WATCH_WINDOW_STEPS) return;
    const perStep = (time - windowStart.time) / (step - windowStart.step);
    windowStart = { step, time };
    if (warmup === undefined) {
      warmup = perStep;
      return;
    }
    slowWindows = perStep > WATCH_SLOWDOWN * warmup ? slowWindows + 1 : 0;
    if (slowWindows < 2) return;
    noted = true;
    const advice = adaptive
      ? 'another process is probably using the CPUs; this run already keeps to the cores it leaves free (the thread governor), so the time goes to that process'
      : threads > 1
        ? `another process is probably using the CPUs; OMP_NUM_THREADS=1 runs this one on one core without waiting for the others (bench/README.md, the thread policy)`
        : 'another process is probably using the CPU';
    note(`${label}: steps now take ${(perStep / warmup).toFixed(1)}x as long as at the start (${perStep.toFixed(0)} vs ${warmup.toFixed(0)} ms): ${advice}`);
  };
}

export function progress(options: ProgressOptions): Progress {
  const { total, label = 'progress', unit = 'it', itemsPerStep, itemUnit = 'img', start = 0, intervalSeconds = 15 } = options;
  const stream = options.stream ?? process.stderr;
  const now = options.now ?? Date.now;
  const startTime = now();
  let step = start;
  let fields: ProgressFields = {};
  const watch = slowdownWatch(label, options.threads ?? getNumThreads(), (line) => stream.write(`${stream.isTTY ? '\n' : ''}${line}\n`),
    options.threads === undefined && threadGovernor().adaptive);

  // What both forms show after step/total: rate(s), elapsed time, ETA, the fields (named apart
  // from cli-progress's own tokens such as {eta}).
  const status = (): { speed: string; remaining: string; fields: string } => {
    const seconds = (now() - startTime) / 1000;
    const perSecond = seconds > 0 ? (step - start) / seconds : 0;
    let rate = `${perSecond.toFixed(2)} ${unit}/s`;
    if (itemsPerStep !== undefined) rate += `, ${(perSecond * itemsPerStep).toFixed(1)} ${itemUnit}/s`;
    const remaining = perSecond > 0 ? formatDuration((total - step) / perSecond) : '?';
    return { speed: `${rate} | elapsed ${formatDuration(seconds)}`, remaining, fields: formatFields(fields) };
  };

  if (stream.isTTY) {
    const bar = new cliProgress.SingleBar({
      stream: stream as NodeJS.WriteStream,
      format: `${label} |{bar}| {value}/{total} ${unit} ({percentage}%) | {speed} | ETA {remaining} | {fields}`,
      hideCursor: true,
      barsize: 30,
    }, cliProgress.Presets.shades_classic);
    bar.start(total, start, status());
    return {
      update(s, f = {}) {
        step = s;
        fields = f;
        watch(s, now());
        adaptThreads();
        bar.update(s, status());
      },
      stop() {
        bar.update(step, status());
        bar.stop();
      },
    };
  }

  let lastLine = -Infinity;
  let printedStep: number | null = null;
  const printLine = (): void => {
    const { speed, remaining, fields: shown } = status();
    const percent = total > 0 ? ((100 * step) / total).toFixed(1) : '100.0';
    stream.write(`${label}: ${step}/${total} ${unit} (${percent}%) | ${speed} | ETA ${remaining}${shown === '' ? '' : ` | ${shown}`}\n`);
    lastLine = now();
    printedStep = step;
  };
  return {
    update(s, f = {}) {
      step = s;
      fields = f;
      watch(s, now());
      adaptThreads();
      if (now() - lastLine >= intervalSeconds * 1000) printLine();
    },
    // The last step's line, unless its update printed it already.
    stop() {
      if (printedStep !== step) printLine();
    },
  };
}
