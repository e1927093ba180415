// Parity with a PyTorch layer case written by test/fixtures/make_nn.py: load its state dict,
// run its input, and compare the output and the gradients of (y * g).sum().
import assert from 'node:assert/strict';
import * as torch from '../../src/torch/index.js';
import type { Module } from '../../src/nn/index.js';
import { assertClose, loadFixture } from '../helpers.js';

export interface LayerCase {
  state: Record<string, torch.Tensor>;
  x: torch.Tensor;
  g: torch.Tensor;
  y: torch.Tensor;
  x_grad?: torch.Tensor;
  grads: Record<string, torch.Tensor>;
}

export const layers = loadFixture('nn_layers.json');

export function checkParity(module: Module, c: LayerCase, what: string): void {
  module.loadStateDict(c.state);
  const x = c.x.isFloatingPoint() ? c.x.clone().requiresGrad_() : c.x;
  const y = module.forward(x) as torch.Tensor;
  assertClose(y, c.y, 1e-5, 1e-6, `${what} output`);
  y.backward(c.g);
  if (c.x_grad !== undefined) assertClose(x.grad!, c.x_grad, 1e-5, 1e-6, `${what} input grad`);
  const params = module.namedParameters();
  assert.deepEqual(params.map(([name]) => name), Object.keys(c.grads), `${what}: parameter names`);
  for (const [name, p] of params) assertClose(p.grad!, c.grads[name]!, 1e-5, 1e-6, `${what} ${name}.grad`);
}
