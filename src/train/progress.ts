// Progress of a long loop: a cli-progress bar on a terminal, and plain periodic lines otherwise
// (log files, CI), both showing step/total, rate, ETA and the latest losses.
import cliProgress from 'cli-progress';

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

export function progress(options: ProgressOptions): Progress {
  const { total, label = 'progress', unit = 'it', itemsPerStep, itemUnit = 'img', start = 0, intervalSeconds = 15 } = options;
  const stream = options.stream ?? process.stderr;
  const now = options.now ?? Date.now;
  const startTime = now();
  let step = start;
  let fields: ProgressFields = {};

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
        bar.update(s, status());
      },
      stop() {
        bar.update(step, status());
        bar.stop();
      },
    };
  }

  let lastLine = -Infinity;
  const printLine = (): void => {
    const { speed, remaining, fields: shown } = status();
    const percent = total > 0 ? ((100 * step) / total).toFixed(1) : '100.0';
    stream.write(`${label}: ${step}/${total} ${unit} (${percent}%) | ${speed} | ETA ${remaining}${shown === '' ? '' : ` | ${shown}`}\n`);
    lastLine = now();
  };
  return {
    update(s, f = {}) {
      step = s;
      fields = f;
      if (now() - lastLine >= intervalSeconds * 1000) printLine();
    },
    stop() {
      printLine();
    },
  };
}
