// Paired comparisons over seeds: the differences (candidate minus control, within a seed), their
// mean, sample standard deviation and Student-t 95% interval, and the seeds where the candidate
// won. The t quantile is computed from the t distribution's CDF (the regularised incomplete beta
// function, by its continued fraction), so any number of seeds is exact, not a table's rows.
import { mean, std } from './report.js';

/** ln Γ(x) for x > 0 (Lanczos, g = 7, 9 terms: about 15 significant digits). */
function logGamma(x: number): number {
  const c = [0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059,
    12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7];
  if (x < 0.5) return Math.log(Math.PI / Math.sin(Math.PI * x)) - logGamma(1 - x);
  const z = x - 1;
  let sum = c[0]!;
  for (let i = 1; i < 9; i++) sum += c[i]! / (z + i);
  const t = z + 7.5;
  return 0.5 * Math.log(2 * Math.PI) + (z + 0.5) * Math.log(t) - t + Math.log(sum);
}

/** The continued fraction of the incomplete beta function (modified Lentz). */
function betaFraction(a: number, b: number, x: number): number {
  const tiny = 1e-300;
  let c = 1;
  let d = 1 - ((a + b) * x) / (a + 1);
  d = 1 / (Math.abs(d) < tiny ? tiny : d);
  let h = d;
  for (let m = 1; m <= 300; m++) {
    for (const numerator of [(m * (b - m) * x) / ((a + 2 * m - 1) * (a + 2 * m)), -((a + m) * (a + b + m) * x) / ((a + 2 * m) * (a + 2 * m + 1))]) {
      d = 1 + numerator * d;
      d = 1 / (Math.abs(d) < tiny ? tiny : d);
      c = 1 + numerator / c;
      if (Math.abs(c) < tiny) c = tiny;
      h *= d * c;
    }
    if (Math.abs(d * c - 1) < 1e-15) break;
  }
  return h;
}

/** The regularised incomplete beta function I_x(a, b). */
function regularizedBeta(x: number, a: number, b: number): number {
  if (x <= 0) return 0;
  if (x >= 1) return 1;
  const front = Math.exp(logGamma(a + b) - logGamma(a) - logGamma(b) + a * Math.log(x) + b * Math.log(1 - x));
  return x < (a + 1) / (a + b + 2) ? (front * betaFraction(a, b, x)) / a : 1 - (front * betaFraction(b, a, 1 - x)) / b;
}

/** P(T <= t) for Student's t with `df` degrees of freedom. */
export function studentTCdf(t: number, df: number): number {
  const tail = 0.5 * regularizedBeta(df / (df + t * t), df / 2, 0.5);
  return t >= 0 ? 1 - tail : tail;
}

/** The t with P(T <= t) = p, by bisection on the CDF (p in (0, 1)). */
export function studentTQuantile(p: number, df: number): number {
  if (!(p > 0 && p < 1) || !(df > 0)) throw new Error(`studentTQuantile: needs 0 < p < 1 and df > 0, got p ${p}, df ${df}`);
  let [low, high] = [-1e4, 1e4];
  for (let i = 0; i < 200 && high - low > 1e-12 * Math.max(1, Math.abs(high)); i++) {
    const mid = (low + high) / 2;
    if (studentTCdf(mid, df) < p) low = mid;
    else high = mid;
  }
  return (low + high) / 2;
}

/** Candidate minus control over the seeds both have. */
export interface PairedDifference {
  seeds: number[];
  differences: number[];
  mean: number;
  /** Sample standard deviation (n - 1); 0 for one pair. */
  std: number;
  /** The Student-t 95% interval of the mean difference; null with fewer than two pairs. */
  interval: [number, number] | null;
  /** The seeds where the candidate was better. */
  wins: number[];
}

/**
 * The paired differences of `candidate` against `control` (values by seed) over the seeds both
 * have, with `better` saying which direction wins.
 */
export function pairedDifference(candidate: ReadonlyMap<number, number>, control: ReadonlyMap<number, number>, better: 'lower' | 'higher'): PairedDifference | null {
  const seeds = [...candidate.keys()].filter((s) => control.has(s)).sort((a, b) => a - b);
  if (seeds.length === 0) return null;
  const differences = seeds.map((s) => candidate.get(s)! - control.get(s)!);
  const difference = { seeds, differences, mean: mean(differences), std: std(differences) };
  return {
    ...difference, interval: pairedInterval(difference, 0.95),
    wins: seeds.filter((_, i) => (better === 'lower' ? differences[i]! < 0 : differences[i]! > 0)),
  };
}

/**
 * The Student-t interval of the mean difference at confidence `level` (0.95: the tables'; 1 - 0.05 / k:
 * Bonferroni-corrected for k comparisons); null with fewer than two pairs.
 */
export function pairedInterval(difference: Pick<PairedDifference, 'seeds' | 'mean' | 'std'>, level: number): [number, number] | null {
  const n = difference.seeds.length;
  if (n < 2) return null;
  const half = studentTQuantile(1 - (1 - level) / 2, n - 1) * difference.std / Math.sqrt(n);
  return [difference.mean - half, difference.mean + half];
}

/** Whether the interval lies wholly on the winning side of 0 (1), wholly on the losing side (-1), or spans it (0). */
export function intervalVerdict(difference: PairedDifference, better: 'lower' | 'higher'): -1 | 0 | 1 {
  if (difference.interval === null) return 0;
  const [low, high] = difference.interval;
  const below = high < 0;
  const above = low > 0;
  if (!below && !above) return 0;
  return (better === 'lower') === below ? 1 : -1;
}

/** `mean ± sd [low, high]`, the form the tables print. */
export function formatPaired(difference: PairedDifference, decimals: number): string {
  const signed = (v: number) => `${v >= 0 ? '+' : ''}${v.toFixed(decimals)}`;
  const interval = difference.interval === null ? '' : ` [${signed(difference.interval[0])}, ${signed(difference.interval[1])}]`;
  return `${signed(difference.mean)} ± ${difference.std.toFixed(decimals)}${interval}`;
}
