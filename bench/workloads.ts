// The TypeScript side of `npm run bench`: each workload mirrors the function of the same name in
// bench/torch_eager.py line for line (same shapes, same ops, same freeing of results), so the two
// timings differ only by the binding layer. A workload is set up once and then run for a number
// of iterations; run.ts times it.
import * as torch from '../src/torch/index.js';
import { conv2d, crossEntropy } from '../src/torch/functional.js';
import * as nn from '../src/nn/index.js';
import { AdamW } from '../src/optim/index.js';
import type { Handle } from '../src/torch/native.js';

export type Run = (iterations: number) => void;

function addNew(): Run {
  const a = torch.randn([16]);
  const b = torch.randn([16]);
  // Python frees each result by reference count; here a scope frees them, closing every 100 calls
  // as a training step's scope would (one scope around all iterations would keep thousands of
  // handles alive through garbage collections, which costs more per call; see bench/README.md).
  return (iterations) => {
    for (let done = 0; done < iterations; done += 100) {
      torch.scope(() => {
        for (let i = done; i < Math.min(done + 100, iterations); i++) a.add(b);
      });
    }
  };
}

function addInplace(): Run {
  const a = torch.randn([16]);
  const b = torch.randn([16]);
  return (iterations) => {
    for (let i = 0; i < iterations; i++) a.add_(b);
  };
}

// Diagnostics for the per-op overhead (no PyTorch counterpart): the cost of one trivial N-API
// call, and of aten::add through the addon without the Tensor wrapper and scope.
function napiNoop(): Run {
  return (iterations) => {
    for (let i = 0; i < iterations; i++) torch.native.isGradEnabled();
  };
}

function addRawCallOp(): Run {
  const a = torch.randn([16])._handle;
  const b = torch.randn([16])._handle;
  const id = torch.opId('aten::add.Tensor');
  const { native } = torch;
  return (iterations) => {
    for (let i = 0; i < iterations; i++) native.dispose(native.callOp(id, a, b, 1) as Handle);
  };
}

function matmul(): Run {
  const a = torch.randn([1024, 1024]);
  const b = torch.randn([1024, 1024]);
  return (iterations) => {
    for (let i = 0; i < iterations; i++) a.matmul(b).dispose();
  };
}

function convTensors(): [torch.Tensor, torch.Tensor] {
  const x = torch.randn([8, 128, 64, 64], { requiresGrad: true });
  const w = torch.randn([128, 128, 3, 3]).div(Math.sqrt(128 * 9)).requiresGrad_();
  return [x, w];
}

function conv2dForward(): Run {
  const [x, w] = convTensors();
  return (iterations) => torch.noGrad(() => {
    for (let i = 0; i < iterations; i++) conv2d(x, w, null, { stride: 1, padding: 1 }).dispose();
  });
}

function conv2dForwardBackward(): Run {
  const [x, w] = convTensors();
  const gradOut = torch.randn([8, 128, 64, 64]);
  return (iterations) => {
    for (let i = 0; i < iterations; i++) {
      torch.scope(() => conv2d(x, w, null, { stride: 1, padding: 1 }).backward(gradOut));
      x.grad = null;
      w.grad = null;
    }
  };
}

function mlpStep(): Run {
  const model = new nn.Sequential(
    new nn.Linear(784, 512), new nn.GELU(), new nn.Linear(512, 512), new nn.GELU(), new nn.Linear(512, 10),
  );
  const optimizer = new AdamW(model.parameters(), { lr: 1e-3 });
  const x = torch.randn([256, 784]);
  const target = torch.randint(0, 10, [256]);
  return (iterations) => {
    for (let i = 0; i < iterations; i++) {
      torch.scope(() => {
        crossEntropy(model.forward(x), target).backward();
        optimizer.step();
        optimizer.zeroGrad();
      });
    }
  };
}

export const WORKLOADS: Record<string, () => Run> = {
  'add': addNew,
  'add_': addInplace,
  'napi.noop': napiNoop,
  'add.rawCallOp': addRawCallOp,
  'matmul': matmul,
  'conv2d.forward': conv2dForward,
  'conv2d.forward+backward': conv2dForwardBackward,
  'mlp.step': mlpStep,
};
