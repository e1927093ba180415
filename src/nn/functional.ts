// torch.nn.functional: `import * as F from '../nn/functional.js'`. The operators live in src/torch.
export * from '../torch/functional.js';
