// ODE integration on a time grid, as torchdiffeq's odeint (0.2.5), which SiT's ode sampler
// calls: the fixed-grid 'euler' and 'heun2' solvers step exactly on the grid ('heun-repa' is
// REPA's Heun: no corrector on the last step, the corrector guided as its step); 'dopri5' is the
// adaptive Dormand-Prince 5(4) solver with torchdiffeq's error control (RMS norm of the error
// over atol + rtol * max(|y0|, |y1|), safety 0.9, growth at most 10x, shrink at most 5x, first
// step from Hairer's heuristic) and its 4th-order dense output at the grid points, so it may
// step past the last grid time as torchdiffeq does. Time-like values are float64 numbers;
// stage times and step sizes are rounded to the state's precision where torchdiffeq casts them.
import * as torch from '../torch/index.js';
import type { Tensor } from '../torch/index.js';

export type OdeMethod = 'euler' | 'heun2' | 'heun-repa' | 'dopri5';
/**
 * dy/dt at time t (a number) and state y. `stepTime` is the time of the step the evaluation
 * belongs to, where it differs from t (the corrector of 'heun-repa', which REPA guides as its
 * step's start): the samplers pass it on to the guidance.
 */
export type OdeFunc = (t: number, y: Tensor, stepTime?: number) => Tensor;

export interface OdeOptions {
  method?: OdeMethod;
  /** Absolute and relative tolerances of dopri5 (ignored by the fixed-grid methods). */
  atol?: number;
  rtol?: number;
}

/**
 * Solves dy/dt = func(t, y), y(t[0]) = y0, returning y at every time of the strictly monotonic
 * grid t (first element y0). A decreasing grid is integrated as torchdiffeq does: in negated
 * time with the negated field. The fixed-grid methods compute steps in float32, as torchdiffeq
 * does on SiT's float32 grid (see timeGrid).
 */
export function odeint(func: OdeFunc, y0: Tensor, t: readonly number[], options: OdeOptions = {}): Tensor[] {
  const { method = 'dopri5', atol = 1e-6, rtol = 1e-3 } = options;
  if (t.length < 2) throw new Error(`odeint: the time grid needs at least 2 points, got ${t.length}`);
  const reversed = t[0]! > t[1]!;
  for (let i = 1; i < t.length; i++) {
    if (reversed ? !(t[i]! < t[i - 1]!) : !(t[i]! > t[i - 1]!)) throw new Error(`odeint: the time grid must be strictly increasing or decreasing, got [${t}]`);
  }
  const grid = reversed ? t.map((v) => -v) : [...t];
  const f: OdeFunc = reversed ? (s, y, step) => func(-s, y, step === undefined ? undefined : -step).neg() : func;
  switch (method) {
    case 'euler': case 'heun2': case 'heun-repa': return fixedGrid(f, y0, grid, method);
    case 'dopri5': return dopri5(f, y0, grid, atol, rtol);
    default: throw new Error(`odeint: unknown method '${method as string}' (euler, heun2, heun-repa, dopri5)`);
  }
}

/** torch.linspace(t0, t1, numSteps, dtype=torch.float64) as numbers: REPA's time grids. */
export function timeGrid64(t0: number, t1: number, numSteps: number): number[] {
  if (!Number.isInteger(numSteps) || numSteps < 2) throw new Error(`timeGrid64: numSteps must be an integer >= 2, got ${numSteps}`);
  return torch.scope(() => Array.from(torch.linspace(t0, t1, numSteps, { dtype: 'float64' }).toArray() as Float64Array));
}

/** torch.linspace(t0, t1, numSteps) as numbers: SiT's float32 time grids. */
export function timeGrid(t0: number, t1: number, numSteps: number): number[] {
  if (!Number.isInteger(numSteps) || numSteps < 2) throw new Error(`timeGrid: numSteps must be an integer >= 2, got ${numSteps}`);
  return torch.scope(() => Array.from(torch.linspace(t0, t1, numSteps).toArray() as Float32Array));
}

/** Rounds a time-like number to the precision torchdiffeq and SiT compute it in for this state. */
export function timeRounding(y: Tensor): (v: number) => number {
  return y.dtype === 'float64' ? (v) => v : Math.fround;
}

/**
 * torchdiffeq's fixed-grid Euler and Heun ('heun2': the corrector at every step, evaluated and
 * guided at the step's end), and REPA's Heun (samplers.py euler_sampler(heun=True)): an Euler
 * step alone on the last step, and the corrector, evaluated at the step's end, guided or not as
 * the step's start.
 */
function fixedGrid(f: OdeFunc, y0: Tensor, grid: readonly number[], method: 'euler' | 'heun2' | 'heun-repa'): Tensor[] {
  // SiT's grid is a float32 linspace and torchdiffeq's fixed-grid solvers keep its dtype.
  const out = [y0];
  let y = y0;
  for (let i = 0; i + 1 < grid.length; i++) {
    // One sampling batch can take minutes: the thread governor looks at the load between its steps.
    torch.adaptThreads();
    const t0 = grid[i]!;
    const dt = Math.fround(grid[i + 1]! - t0);
    const yi = y;
    y = torch.scope(() => {
      const k1 = f(t0, yi);
      if (method === 'euler' || (method === 'heun-repa' && i + 2 === grid.length)) return yi.add(k1.mul(dt));
      const k2 = method === 'heun2' ? f(Math.fround(t0 + dt), yi.add(k1.mul(dt))) : f(grid[i + 1]!, yi.add(k1.mul(dt)), t0);
      return yi.add(k1.mul(0.5).add(k2.mul(0.5)).mul(dt));
    });
    out.push(y);
  }
  return out;
}

// Dormand-Prince-Shampine tableau, as torchdiffeq's dopri5.py.
const ALPHA = [1 / 5, 3 / 10, 4 / 5, 8 / 9, 1, 1];
const BETA = [
  [1 / 5],
  [3 / 40, 9 / 40],
  [44 / 45, -56 / 15, 32 / 9],
  [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729],
  [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656],
  [35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84],
];
const C_ERROR = [
  35 / 384 - 1951 / 21600, 0, 500 / 1113 - 22642 / 50085, 125 / 192 - 451 / 720,
  -2187 / 6784 - -12231 / 42400, 11 / 84 - 649 / 6300, -1 / 60,
];
const C_MID = [
  6025192743 / 30085553152 / 2, 0, 51252292925 / 65400821598 / 2, -2691868925 / 45128329728 / 2,
  187940372067 / 1594534317056 / 2, -1776094331 / 19743644256 / 2, 11237099 / 235043384 / 2,
];
const ORDER = 5;
const SAFETY = 0.9;
const IFACTOR = 10;
const DFACTOR = 0.2;

interface RkState { y: Tensor; f: Tensor; t0: number; t1: number; dt: number; interp: Tensor[] | null }

function dopri5(f: OdeFunc, y0: Tensor, grid: readonly number[], atol: number, rtol: number): Tensor[] {
  const round = timeRounding(y0);
  const precise = y0.dtype === 'float64';
  const rms = (x: Tensor): number => torch.scope(() => x.square().mean().sqrt().item());
  // Error scales are float64 because SiT passes atol and rtol as lists, which torchdiffeq turns
  // into 1-element float64 tensors that promote the state.
  const scaled = (x: Tensor, reference: Tensor): number => torch.scope(() => rms(x.double().div(reference.abs().double().mul(rtol).add(atol))));
  // Tableau coefficients times a step, in the state's dtype (torchdiffeq casts the tableau to it).
  const times = (coefficients: readonly number[], dt: number): Tensor =>
    torch.tensor(coefficients.map((c) => round(round(c) * dt)), { dtype: y0.dtype, device: y0.device });
  const combine = (y: Tensor, ks: readonly Tensor[], coefficients: readonly number[], dt: number): Tensor =>
    y.add(torch.stack(ks, -1).mul(times(coefficients, dt)).sum(-1));

  const f0 = f(round(grid[0]!), y0);
  let state: RkState = { y: y0, f: f0, t0: grid[0]!, t1: grid[0]!, dt: initialStep(), interp: null };
  const out = [y0];
  for (let i = 1; i < grid.length; i++) {
    while (grid[i]! > state.t1) {
      torch.adaptThreads();
      const next = torch.scope(() => step(state));
      if (next.interp !== state.interp) release(state);
      state = next;
    }
    out.push(torch.scope(() => interpolate(state, grid[i]!)));
  }
  return out;

  /** Frees what an accepted step made obsolete; its end state lives on as the next start. */
  function release(old: RkState): void {
    old.f.dispose();
    for (const [i, x] of (old.interp ?? []).entries()) if (i > 0 || x !== y0) x.dispose();
  }

  // Hairer, Norsett & Wanner, Solving ODEs I, II.4, as torchdiffeq's _select_initial_step.
  function initialStep(): number {
    return torch.scope(() => {
      const d0 = scaled(y0, y0);
      const d1 = scaled(f0, y0);
      const small = d0 < 1e-5 || d1 < 1e-5;
      // torchdiffeq's fallback h0 is a tensor of the state's dtype.
      const h0 = small ? round(1e-6) : Math.abs(0.01 * d0 / d1);
      const f1 = f(round(grid[0]! + h0), y0.add(f0.mul(h0)));
      const d2 = Math.abs(scaled(f1.sub(f0), y0) / h0);
      const h1 = d1 <= 1e-15 && d2 <= 1e-15
        ? Math.max(round(1e-6), small ? round(h0 * 1e-3) : h0 * 1e-3)
        : (0.01 / Math.max(d1, d2)) ** (1 / ORDER);
      return Math.min(small ? round(100 * h0) : 100 * h0, h1);
    });
  }

  function step(s: RkState): RkState {
    const { y, f: fy, t1: t0 } = s;
    const dt = Math.max(s.dt, 0);
    const t1 = t0 + dt;
    if (!Number.isFinite(dt) || !(t1 > t0)) throw new Error(`odeint(dopri5): step size underflow (dt ${dt} at t ${t0})`);
    if (!y.isfinite().all().item()) throw new Error(`odeint(dopri5): non-finite values in the state at t ${t0}`);
    const [t0r, dtr, t1r] = [round(t0), round(dt), round(t1)];
    const ks = [fy];
    let yi = y;
    for (let i = 0; i < ALPHA.length; i++) {
      // Stages at the end of the step are evaluated just before it, as torchdiffeq does in
      // case of a discontinuity there (Perturb.PREV).
      const ti = ALPHA[i] === 1 ? nextDown(t1r, precise) : round(t0r + round(round(ALPHA[i]!) * dtr));
      yi = combine(y, ks, BETA[i]!, dtr);
      ks.push(f(ti, yi));
    }
    const k = torch.stack(ks, -1);
    const error = k.mul(times(C_ERROR, dtr)).sum(-1);
    const errorRatio = torch.scope(() => rms(error.double().div(y.abs().maximum(yi.abs()).double().mul(rtol).add(atol))));
    const accept = errorRatio <= 1;
    const dtNext = Math.max(optimalStepSize(dt, errorRatio), 0);
    if (!accept) return { ...s, t0, t1: t0, dt: dtNext };
    return { y: yi, f: ks[ks.length - 1]!, t0, t1, dt: dtNext, interp: interpolationCoefficients(y, yi, ks, dtr) };
  }

  function interpolationCoefficients(ya: Tensor, yb: Tensor, ks: readonly Tensor[], dt: number): Tensor[] {
    const yMid = combine(ya, ks, C_MID, dt);
    const fa = ks[0]!;
    const fb = ks[ks.length - 1]!;
    const a = fb.sub(fa).mul(round(2 * dt)).sub(yb.add(ya).mul(8)).add(yMid.mul(16));
    const b = fa.mul(5).sub(fb.mul(3)).mul(dt).add(ya.mul(18)).add(yb.mul(14)).sub(yMid.mul(32));
    const c = fb.sub(fa.mul(4)).mul(dt).sub(ya.mul(11)).sub(yb.mul(5)).add(yMid.mul(16));
    return [ya, fa.mul(dt), c, b, a];
  }

  function interpolate(s: RkState, t: number): Tensor {
    if (s.interp === null || !(s.t0 <= t && t <= s.t1)) throw new Error(`odeint(dopri5): cannot interpolate at ${t} in [${s.t0}, ${s.t1}]`);
    const x = round((t - s.t0) / (s.t1 - s.t0));
    const [e, ...rest] = s.interp;
    let total = e!.add(rest[0]!.mul(x));
    let power = x;
    for (const coefficient of rest.slice(1)) {
      power = round(power * x);
      total = total.add(coefficient.mul(power));
    }
    return total;
  }
}

function optimalStepSize(lastStep: number, errorRatio: number): number {
  if (errorRatio === 0) return lastStep * IFACTOR;
  const dfactor = errorRatio < 1 ? 1 : DFACTOR;
  return lastStep * Math.min(IFACTOR, Math.max(SAFETY / errorRatio ** (1 / ORDER), dfactor));
}

const f32 = new Float32Array(1);
const i32 = new Int32Array(f32.buffer);
const f64 = new Float64Array(1);
const i64 = new BigInt64Array(f64.buffer);

/** The next representable value below v in float32 (or float64), as torch.nextafter(v, v - 1). */
function nextDown(v: number, precise: boolean): number {
  if (v === 0) return precise ? -Number.MIN_VALUE : -1.401298464324817e-45;
  if (precise) {
    f64[0] = v;
    i64[0] = i64[0]! + (v > 0 ? -1n : 1n);
    return f64[0]!;
  }
  f32[0] = v;
  i32[0] = i32[0]! + (v > 0 ? -1 : 1);
  return f32[0]!;
}
