import { test } from 'node:test';
import type { Tensor } from '../../src/torch/index.js';
import { Flatten, GELU, LeakyReLU, ReLU, SiLU, Sigmoid, Softmax, Tanh, type Module } from '../../src/nn/index.js';
import { assertClose } from '../helpers.js';
import { layers } from './parity.js';

test('activation modules match PyTorch', () => {
  const expected = layers.activations as Record<string, Tensor>;
  const modules: Record<string, Module> = {
    silu: new SiLU(), gelu: new GELU(), gelu_tanh: new GELU('tanh'), relu: new ReLU(), leaky_relu: new LeakyReLU(0.2),
    tanh: new Tanh(), sigmoid: new Sigmoid(), softmax1: new Softmax(1), flatten: new Flatten(),
  };
  for (const [name, module] of Object.entries(modules)) {
    assertClose(module.forward(expected.x) as Tensor, expected[name]!, 1e-5, 1e-6, name);
  }
});
