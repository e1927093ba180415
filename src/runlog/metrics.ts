// metrics.jsonl: one JSON object per log call, {"step", "time" (Unix seconds), ...values}, each
// line written with one write(2) so a crash loses at most the line being written. The same
// values stay in memory by name, for loss curves.
import { closeSync, existsSync, openSync, readFileSync, writeSync } from 'node:fs';
import { writeFileAtomic } from '../io/file.js';

export interface MetricRecord { step: number; time: number; values: Record<string, number> }

export interface MetricsLogOptions {
  /**
   * Resuming from the checkpoint of step T: the records of steps <= T are kept (and loaded into
   * the history), those after T, which the interrupted run wrote after its checkpoint, are dropped,
   * and new records are appended. Without it the file starts empty.
   */
  resumeStep?: number;
}

export class MetricsLog {
  /** Every value logged, by name, as [step, value] in logging order. */
  readonly history = new Map<string, [number, number][]>();
  private fd: number | null;

  constructor(readonly path: string, options: MetricsLogOptions = {}) {
    const { resumeStep } = options;
    if (resumeStep !== undefined && existsSync(path)) {
      // A last line without its newline is the one being written when the run died.
      const text = readFileSync(path, 'utf8');
      const kept = parseMetrics(text.slice(0, text.lastIndexOf('\n') + 1), path).filter((record) => record.step <= resumeStep);
      writeFileAtomic(path, (fd) => {
        for (const record of kept) writeSync(fd, formatRecord(record));
      });
      for (const record of kept) this.remember(record);
    }
    this.fd = openSync(path, resumeStep === undefined ? 'w' : 'a');
  }

  /** Appends {step, time, ...values} to the file and the history. */
  log(step: number, values: Record<string, number>, time = Date.now() / 1000): void {
    if (this.fd === null) throw new Error(`MetricsLog(${this.path}): the log is closed`);
    for (const name of Object.keys(values)) {
      if (name === 'step' || name === 'time') throw new Error(`MetricsLog(${this.path}): "${name}" is reserved and cannot name a value`);
    }
    const record = { step, time, values };
    writeSync(this.fd, formatRecord(record));
    this.remember(record);
  }

  /** The [step, value] points logged for `name` (empty when it never was). */
  series(name: string): [number, number][] { return this.history.get(name) ?? []; }

  close(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
  }

  private remember({ step, values }: MetricRecord): void {
    for (const [name, value] of Object.entries(values)) {
      let points = this.history.get(name);
      if (points === undefined) this.history.set(name, (points = []));
      points.push([step, value]);
    }
  }
}

// JSON has no NaN or Infinity: JSON.stringify writes them as null, read back as NaN.
function formatRecord({ step, time, values }: MetricRecord): string {
  return `${JSON.stringify({ step, time, ...values })}\n`;
}

/** The records of a metrics.jsonl text; an error names the file and line of a malformed one. */
export function parseMetrics(text: string, path = 'metrics.jsonl'): MetricRecord[] {
  const records: MetricRecord[] = [];
  text.split('\n').forEach((line, i) => {
    if (line.trim() === '') return;
    let parsed: unknown;
    try {
      parsed = JSON.parse(line);
    } catch {
      throw new Error(`${path}:${i + 1}: not a JSON object: ${line.slice(0, 80)}`);
    }
    const { step, time, ...rest } = (parsed ?? {}) as Record<string, unknown>;
    if (typeof step !== 'number' || typeof time !== 'number') throw new Error(`${path}:${i + 1}: a record needs numeric "step" and "time"`);
    const values: Record<string, number> = {};
    for (const [name, value] of Object.entries(rest)) {
      if (value !== null && typeof value !== 'number') throw new Error(`${path}:${i + 1}: "${name}" is ${JSON.stringify(value)}, not a number`);
      values[name] = value ?? NaN;
    }
    records.push({ step, time, values });
  });
  return records;
}
