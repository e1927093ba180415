// Child of autocast.test.ts's thread tests: the thread counts a fresh process runs at, as JSON.
import * as torch from '../../src/torch/index.js';

const atLoad = torch.getNumThreads();
const counts: Record<string, number> = { atLoad };
torch.usePrecision('bf16', 'cpu');
counts.bf16Cpu = torch.getNumThreads();
torch.usePrecision('fp32', 'cpu');
counts.fp32Cpu = torch.getNumThreads();
torch.usePrecision('bf16', 'cuda');
counts.bf16Cuda = torch.getNumThreads();
torch.usePrecision('bf16', 'cpu');
torch.setNumThreads(1);
torch.usePrecision('bf16', 'cpu');
counts.bf16AfterSetNumThreads1 = torch.getNumThreads();
counts.runThreadsBf16AfterSetNumThreads1 = torch.runThreads('bf16', 'cpu');
console.log(JSON.stringify(counts));
