// The probability-flow ODE of a Linear-path velocity SiT (SiT's ODE sampler with torchdiffeq's
// fixed-grid 'euler' and 'heun2'), on plain Float32Arrays and an asynchronous network, so that
// the same code samples through onnxruntime in Node and in a web page. Every product and sum is
// rounded to float32 as libtorch computes them on float32 tensors, so on the same grid, noise and
// network outputs it steps exactly as src/diffusion/ode.ts does. No Node or libtorch imports.

export type FlowMethod = 'euler' | 'heun2';

/**
 * The velocity at SiT time t (0 noise, 1 data) of state x; `guided` says whether classifier-free
 * guidance applies at this evaluation.
 */
export type VelocityFn = (x: Float32Array, t: number, guided: boolean) => Promise<Float32Array>;

export interface FlowSamplerOptions {
  method: FlowMethod;
  /** The time grid (SiT's float32 linspace from t0 to t1); numSteps points, numSteps - 1 steps. */
  grid: readonly number[];
  /** Whether guidance applies at an evaluation at SiT time t (the guidance interval). */
  guidedAt: (t: number) => boolean;
  /** Called after each step with the step count done and the total. */
  onStep?: (done: number, total: number) => void;
}

const f32 = Math.fround;

/** y + k dt, elementwise in float32. */
function axpy(y: Float32Array, k: Float32Array, dt: number): Float32Array {
  const out = new Float32Array(y.length);
  for (let i = 0; i < y.length; i++) out[i] = f32(y[i]! + f32(k[i]! * dt));
  return out;
}

/**
 * torch.linspace(t0, t1, steps) in float32 as ATen's scalar loop computes it: the step in float32,
 * start + step i for the first half, end - step (steps - 1 - i) for the rest. (libtorch's vector
 * loop can differ from it in the last bit of a few points; Node passes libtorch's own grid.)
 */
export function linspace32(t0: number, t1: number, steps: number): number[] {
  if (!Number.isInteger(steps) || steps < 2) throw new Error(`linspace32: steps must be an integer >= 2, got ${steps}`);
  const [start, end] = [f32(t0), f32(t1)];
  const step = f32(f32(end - start) / (steps - 1));
  const halfway = Math.floor(steps / 2);
  return Array.from({ length: steps }, (_, i) => (i < halfway ? f32(start + f32(step * i)) : f32(end - f32(step * (steps - i - 1)))));
}

/** torch.linspace(t0, t1, steps, dtype=float64) by the same rule, in float64. */
export function linspace64(t0: number, t1: number, steps: number): number[] {
  if (!Number.isInteger(steps) || steps < 2) throw new Error(`linspace64: steps must be an integer >= 2, got ${steps}`);
  const step = (t1 - t0) / (steps - 1);
  const halfway = Math.floor(steps / 2);
  return Array.from({ length: steps }, (_, i) => (i < halfway ? t0 + step * i : t1 - step * (steps - i - 1)));
}

/** The state at the grid's last time from x0 at its first. */
export async function sampleFlowOde(x0: Float32Array, velocity: VelocityFn, options: FlowSamplerOptions): Promise<Float32Array> {
  const { method, grid, guidedAt } = options;
  if (grid.length < 2) throw new Error(`sampleFlowOde: the time grid needs at least 2 points, got ${grid.length}`);
  if (method !== 'euler' && method !== 'heun2') throw new Error(`sampleFlowOde: method must be euler or heun2, got '${method as string}'`);
  let y = x0;
  const steps = grid.length - 1;
  for (let i = 0; i < steps; i++) {
    const t0 = grid[i]!;
    const dt = f32(grid[i + 1]! - t0);
    const k1 = await velocity(y, t0, guidedAt(t0));
    if (method === 'euler') {
      y = axpy(y, k1, dt);
    } else {
      const t1 = f32(t0 + dt);
      const k2 = await velocity(axpy(y, k1, dt), t1, guidedAt(t1));
      const next = new Float32Array(y.length);
      for (let j = 0; j < y.length; j++) next[j] = f32(y[j]! + f32(f32(f32(k1[j]! * 0.5) + f32(k2[j]! * 0.5)) * dt));
      y = next;
    }
    options.onStep?.(i + 1, steps);
  }
  return y;
}
