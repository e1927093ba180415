// Finite-difference gradient checks in float64, as torch.autograd.gradcheck: central differences
// with eps 1e-6, and |analytic - numeric| <= atol + rtol * |numeric| with atol 1e-5, rtol 1e-3.
import assert from 'node:assert/strict';
import * as torch from '../src/torch/index.js';

export interface GradcheckOptions { eps?: number; atol?: number; rtol?: number }

type Outputs = torch.Tensor | torch.Tensor[];

/**
 * Checks autograd's Jacobian of `fn` with respect to every input that requires grad (float64)
 * against central finite differences, entry by entry, as torch.autograd.gradcheck's default
 * (slow) mode; other inputs (indices, masks) stay constant. The float outputs of `fn` (one
 * tensor or an array; integer outputs such as indices are ignored) form the rows: row m of the
 * analytic Jacobian is one backward pass with a one-hot output gradient. `fn` must be
 * deterministic: seed any randomness inside it.
 */
export function gradcheck(fn: (...inputs: torch.Tensor[]) => Outputs, inputs: torch.Tensor[], options: GradcheckOptions = {}): void {
  const eps = options.eps ?? 1e-6;
  const atol = options.atol ?? 1e-5;
  const rtol = options.rtol ?? 1e-3;
  const checked = inputs.map((x, i) => (x.requiresGrad ? i : -1)).filter((i) => i >= 0);
  assert.ok(checked.length > 0, 'gradcheck: no input requires grad');
  for (const i of checked) assert.equal(inputs[i]!.dtype, 'float64', `gradcheck: input ${i} must be float64, got ${inputs[i]!.dtype}`);
  /** The float outputs of fn, flattened and concatenated: the rows of the Jacobian. */
  const flatOutput = (xs: torch.Tensor[]): torch.Tensor => {
    const result = fn(...xs);
    const outs = (Array.isArray(result) ? result : [result]).filter((t) => t.isFloatingPoint());
    for (const [k, out] of outs.entries()) assert.equal(out.dtype, 'float64', `gradcheck: output ${k} is ${out.dtype}, not float64`);
    return torch.cat(outs.map((o) => o.reshape(-1)));
  };

  // analytic[j][m * numel + e]: d output m / d element e of checked input j.
  const analytic = torch.scope(() => {
    const out = flatOutput(inputs);
    const rows = out.numel();
    const jacobians = checked.map((i) => new Float64Array(rows * inputs[i]!.numel()));
    if (!out.requiresGrad) return { rows, jacobians };
    for (let m = 0; m < rows; m++) {
      torch.scope(() => {
        const oneHot = new Float64Array(rows);
        oneHot[m] = 1;
        const grads = torch.autograd.grad(out, checked.map((i) => inputs[i]!), {
          gradOutputs: [torch.fromArray(oneHot, [rows], 'float64')], retainGraph: true, allowUnused: true,
        });
        for (const [j, g] of grads.entries()) if (g !== null) jacobians[j]!.set(g.contiguous().toArray() as Float64Array, m * inputs[checked[j]!]!.numel());
      });
    }
    return { rows, jacobians };
  });

  for (const [j, i] of checked.entries()) {
    const base = inputs[i]!.detach().contiguous().toArray() as Float64Array;
    const shape = inputs[i]!.shape;
    const evaluate = (e: number, delta: number): Float64Array => torch.scope(() => torch.noGrad(() => {
      const values = base.slice();
      values[e] = values[e]! + delta;
      const xs = inputs.slice();
      xs[i] = torch.fromArray(values, shape, 'float64');
      return flatOutput(xs).toArray() as Float64Array;
    }));
    for (let e = 0; e < base.length; e++) {
      const plus = evaluate(e, eps);
      const minus = evaluate(e, -eps);
      assert.equal(plus.length, analytic.rows, 'gradcheck: fn returned outputs of another size');
      for (let m = 0; m < analytic.rows; m++) {
        const numeric = (plus[m]! - minus[m]!) / (2 * eps);
        const got = analytic.jacobians[j]![m * base.length + e]!;
        if (!(Math.abs(got - numeric) <= atol + rtol * Math.abs(numeric))) {
          assert.fail(`gradcheck: d output[${m}] / d input ${i} [${shape}] element ${e}: autograd ${got}, finite differences ${numeric}`);
        }
      }
    }
  }
}
