// The guidance interval and the time conventions it is written in, with no tensor in sight, so
// that the samplers here (src/diffusion/guidance.ts) and the plain-array sampler the web page
// runs (src/sampling/flow-sampler.ts) decide guidance by the same rule. No Node or libtorch imports.
//
// Time conventions. The samplers here run SiT's time: t = 0 is noise, t = 1 is data. REPA's
// samplers run the other way, t = 1 noise to t = 0 data (x_t = (1 - t) x + t noise), and its
// flags --guidance-low/--guidance-high, in which "cfg 1.8 on [0, 0.75]" is written, are REPA
// times. An interval names its convention and is compared in it: t_repa = 1 - t_sit.

export type TimeConvention = 'sit' | 'repa';

/** Guidance applies where low <= t <= high, t in `convention`'s time (both ends included, as REPA). */
export interface GuidanceInterval {
  low: number;
  high: number;
  convention: TimeConvention;
}

/**
 * A sampler's fixed grid: `sit[i]` is the (float32) SiT time the sampler passes at step i,
 * `times[i]` that step's time in the interval's convention as the reference computes it (REPA: a
 * float64 linspace; Sampler's stepTimes).
 */
export interface StepGrid { sit: readonly number[]; times: readonly number[] }

/** A time in one convention expressed in another (t_repa = 1 - t_sit). */
export function convertTime(t: number, from: TimeConvention, to: TimeConvention): number {
  for (const c of [from, to]) if (c !== 'sit' && c !== 'repa') throw new Error(`convertTime: unknown time convention '${c as string}' (sit, repa)`);
  return from === to ? t : 1 - t;
}

/** Whether guidance applies at SiT time tSit. */
export function isGuided(tSit: number, interval: GuidanceInterval | undefined): boolean {
  if (interval === undefined) return true;
  const t = convertTime(tSit, 'sit', interval.convention);
  return t >= interval.low && t <= interval.high;
}

/**
 * Whether guidance applies at an evaluation at network time t: always without an interval; at a
 * time on `grid`, by that step's time, as REPA decides by step (SiT's float32 times, converted,
 * can fall on the other side of an interval end that lies on a grid point); at any other time
 * (dopri5's, a Heun corrector's) by the time itself, mapped to SiT's by `sitTime`.
 */
export function guidanceDecider(interval: GuidanceInterval | undefined, grid?: StepGrid, sitTime: (t: number) => number = (t) => t): (t: number) => boolean {
  const gridTimes = new Map<number, number>();
  grid?.sit.forEach((t, i) => { if (!gridTimes.has(t)) gridTimes.set(t, grid.times[i]!); });
  return (t) => {
    if (interval === undefined) return true;
    const time = gridTimes.get(t);
    return time === undefined ? isGuided(sitTime(t), interval) : time >= interval.low && time <= interval.high;
  };
}
