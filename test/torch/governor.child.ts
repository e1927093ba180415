// Child of threads.test.ts: a bf16 CPU run of small ops for `REALS_TEST_GOVERN_MS`, with the thread
// governor's look at the load between them, as a trainer's progress bar gives it; prints as JSON
// the run's full count and OpenBLAS's pool at its start, and the fewest of each it ran on.
import * as torch from '../../src/torch/index.js';

const duration = Number(process.env.REALS_TEST_GOVERN_MS ?? '2000');
torch.usePrecision('bf16', 'cpu');
const full = torch.getNumThreads();
let fewest = full;
const openblas = torch.native.openblasThreads();
let fewestOpenblas = openblas;
const a = torch.randn([256, 256]);
const start = performance.now();
while (performance.now() - start < duration) {
  torch.scope(() => torch.withPrecision('bf16', 'cpu', () => a.matmul(a).sum().item()));
  torch.adaptThreads();
  fewest = Math.min(fewest, torch.getNumThreads());
  const openblasNow = torch.native.openblasThreads();
  if (openblasNow !== null) fewestOpenblas = Math.min(fewestOpenblas ?? openblasNow, openblasNow);
}
console.log(JSON.stringify({ full, fewest, openblas, fewestOpenblas, governor: torch.threadGovernor() }));
