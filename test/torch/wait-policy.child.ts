// Child of autocast.test.ts's wait-policy test: the OpenMP wait policy a fresh process runs with,
// and the CPU time its threads take while the main thread sleeps after parallel regions (spinning
// threads burn it; passive ones sleep too), as JSON.
import * as torch from '../../src/torch/index.js';

torch.setNumThreads(2);
const a = torch.randn([512, 512]);
const regions = 20;
let spinMs = 0;
for (let i = 0; i < regions; i++) {
  torch.scope(() => a.add(a).exp().sum());
  const before = process.cpuUsage();
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 30);
  const used = process.cpuUsage(before);
  spinMs += (used.user + used.system) / 1000;
}
const env = { OMP_WAIT_POLICY: process.env.OMP_WAIT_POLICY ?? null, GOMP_SPINCOUNT: process.env.GOMP_SPINCOUNT ?? null };
console.log(JSON.stringify({ waitPolicy: torch.waitPolicy, env, spinMsPerRegion: spinMs / regions }));
