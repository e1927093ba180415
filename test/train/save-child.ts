// Child process for checkpoint.test.ts: saves a small checkpoint at step 1000, says so on
// stdout, then saves a large one at step 2000, during which the test kills it with SIGKILL.
import * as torch from '../../src/torch/index.js';
import { CheckpointManager } from '../../src/train/checkpoint.js';

const manager = new CheckpointManager(process.argv[2]!, { keepLast: 2 });
manager.save({ tensors: { model: { w: torch.full([4], 1000) } }, metadata: { args: {}, step: 1000, epoch: 1 } });
process.stdout.write('saved 1000\n');
// 64 names for one 4 MiB tensor: a 256 MiB file from little memory, slow enough to be caught mid-write.
const block = torch.zeros([1 << 20]);
const model = Object.fromEntries(Array.from({ length: 64 }, (_, i) => [`w${i}`, block]));
manager.save({ tensors: { model }, metadata: { args: {}, step: 2000, epoch: 2 } });
process.stdout.write('saved 2000\n');
