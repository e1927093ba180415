// How `npm run bench` names the threads its sides run on. PyTorch and C++ run fixed counts; so does
// TS, unless the caller set REALS_ADAPTIVE_THREADS=1: then reals' thread governor gives TS the
// cores the other processes leave free, as users run it, and a count is only its most.
import type { ResolvedPrecision } from '../src/torch/index.js';

/** The threads of a TS result line: its count, or under the governor the most it may take. */
export function tsThreads(full: number, governed: boolean): number | string {
  return governed ? `governed, at most ${full}` : full;
}

export interface ThreadsOfRun {
  /** --threads N: N on every side. */
  fixed?: number;
  /** TS runs under the thread governor (REALS_ADAPTIVE_THREADS=1, no count chosen, a CPU run). */
  governed: boolean;
  /** The run's --precision, and the threads of TS and PyTorch in its rows. */
  precision: ResolvedPrecision;
  precisionThreads: number;
  /** The threads of the fp32 rows, of PyTorch fp32 and of C++: libtorch's default. */
  fp32Threads: number;
  cpp: boolean;
}

/** The run's threads line, in the JSON machine line and the summary. */
export function threadsLine({ fixed, governed, precision, precisionThreads, fp32Threads, cpp }: ThreadsOfRun): string {
  if (fixed !== undefined) return `threads ${fixed} on every side`;
  const rows = `${precisionThreads} in ${precision} rows, ${fp32Threads} in fp32 rows`;
  const references = `PyTorch fp32${cpp ? ' and C++' : ''} ${fp32Threads}`;
  if (!governed) return `threads: each side's default (TS and PyTorch ${rows}; ${references})`;
  return `threads: TS governed, at most ${rows} (REALS_ADAPTIVE_THREADS=1: the cores the other processes leave free); ` +
    `PyTorch ${rows}; ${references}`;
}
