// One rank of a scenario in the distributed tests, started by `reals launch`:
//   node --import tsx test/distributed/worker.ts <scenario> <outDir>
// It writes its pid to <outDir>/pid<RANK> first and its results to <outDir>/rank<RANK>.json.
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as torch from '../../src/torch/index.js';
import { DistributedDataParallel } from '../../src/nn/parallel.js';
import { TinyMlp, trainingData, train, TRAIN_STEPS } from './tiny-model.js';
import { trainGenerator } from '../../src/train/sit.js';
import { loadCheckpoint } from '../../src/train/checkpoint.js';
import type { LatentBatch, LatentSource } from '../../src/data/latents.js';

const dist = torch.distributed;
const [scenario, outDir] = process.argv.slice(2) as [string, string];
const rank = Number(process.env.RANK);

function report(values: Record<string, unknown>): void {
  writeFileSync(join(outDir, `rank${rank}.json`), JSON.stringify(values));
}

function values(t: torch.Tensor): number[] { return Array.from(t.toArray() as Float64Array, Number); }

async function until(condition: () => boolean): Promise<void> {
  while (!condition()) await new Promise((resolve) => setTimeout(resolve, 50));
}

const scenarios: Record<string, () => void | Promise<void>> = {
  collectives() {
    const env = Object.fromEntries(
      ['RANK', 'LOCAL_RANK', 'WORLD_SIZE', 'LOCAL_WORLD_SIZE', 'GROUP_RANK', 'MASTER_ADDR', 'MASTER_PORT'].map((k) => [k, process.env[k]]),
    );
    dist.initProcessGroup({ timeoutMs: 20_000 });
    const identity = { rank: dist.getRank(), worldSize: dist.getWorldSize(), localRank: dist.getLocalRank(), backend: dist.getBackend() };
    const reduced: Record<string, number[]> = {};
    for (const op of ['sum', 'avg', 'product', 'max', 'min'] as const) {
      const t = torch.tensor([rank + 1, 10 * (rank + 1)], { dtype: 'float64' });
      dist.allReduce(t, op);
      reduced[op] = values(t);
    }
    const ints = torch.tensor([rank, 7], { dtype: 'int64' });
    dist.allReduce(ints);
    const broadcasted = torch.full([3], rank, { dtype: 'float64' });
    dist.broadcast(broadcasted, 1);
    const gathered = [torch.zeros([2], { dtype: 'float64' }), torch.zeros([2], { dtype: 'float64' })];
    dist.allGather(gathered, torch.tensor([rank, rank * rank + 5], { dtype: 'float64' }));
    dist.barrier();

    // Gradients: `used` on both ranks, `rank0Only` on rank 0 only, `unused` nowhere.
    const o = { dtype: 'float64' as const };
    const used = torch.full([2], rank + 3, o).requiresGrad_();
    const rank0Only = torch.full([2], rank + 5, o).requiresGrad_();
    const unused = torch.full([2], rank + 7, o).requiresGrad_();
    const ddp = new DistributedDataParallel({ parameters: () => [used, rank0Only, unused], buffers: () => [] });
    let loss = used.mul(rank + 1).sum();
    if (rank === 0) loss = loss.add(rank0Only.mul(rank0Only).sum());
    loss.backward();
    ddp.syncGradients();
    const grads = Object.fromEntries(Object.entries({ used, rank0Only, unused }).map(([k, p]) => [k, p.grad === null ? null : values(p.grad)]));

    dist.destroyProcessGroup();
    report({
      env, identity, reduced, ints: Array.from(ints.toArray() as BigInt64Array, Number), broadcasted: values(broadcasted),
      gathered: gathered.map(values), grads, initializedAfterDestroy: dist.isInitialized(),
    });
  },

  train() {
    dist.initProcessGroup({ timeoutMs: 20_000 });
    const { x, y } = trainingData();
    const model = new TinyMlp(100 + rank);
    // A tiny bucket cap (104 bytes) splits the 42 float64 gradients over several allReduces.
    const ddp = new DistributedDataParallel(model, { bucketCapMb: 1e-4 });
    const half = x.size(0) / dist.getWorldSize();
    train(model, x.narrow(0, rank * half, half), y.narrow(0, rank * half, half), TRAIN_STEPS, () => ddp.syncGradients());
    report({ params: model.parameters().map(values), buffers: model.buffers().map(values) });
    dist.destroyProcessGroup();
  },

  // Both ranks train a tiny SiT; rank 1's shard misses one batch of each epoch, as when every image of
  // a batch is unreadable. The ranks must keep their collectives paired, and end together.
  async uneven() {
    dist.initProcessGroup({ timeoutMs: 5000 });
    torch.setNumThreads(1);
    const batches = 4;
    const data: LatentSource = {
      batchSize: 2, length: batches, latentShape: [1, 4, 4], normalization: { source: 'scaling_factor', mean: [0], std: [1] },
      async *iterate(epoch: number, startBatch: number): AsyncGenerator<LatentBatch> {
        for (let b = startBatch; b < batches; b++) {
          if (rank === 1 && b === 1) continue;
          torch.manualSeed(1000 * epoch + 10 * b + rank);
          yield { latents: torch.randn([2, 1, 4, 4]), labels: torch.tensor([0, 1], { dtype: 'int64' }), batchIndex: b };
        }
      },
      async close() {},
    };
    const notes: string[] = [];
    const run = (resume?: string) => trainGenerator({
      spec: { name: 'SiT-tiny', kind: 'SiT', config: {
        depth: 1, hiddenSize: 8, patchSize: 2, numHeads: 2, inputSize: 4, inChannels: 1, mlpRatio: 2, classDropoutProb: 0.1, numClasses: 2, learnSigma: false,
      } },
      data, resultsDir: join(outDir, 'results'), resume, epochs: 2, ckptEvery: 1, keepLast: 10, logEvery: 1, device: 'cpu',
      log: (line) => notes.push(line), progressStream: { write: () => true, isTTY: false } as unknown as NodeJS.WritableStream,
    });
    const paramsOf = (model: { parameters(): torch.Tensor[] }) => model.parameters().map((p) => Array.from(p.detach().toArray() as Float32Array));
    const result = await run();
    const params = paramsOf(result.model);
    // Resumed from the end of epoch 0, where rank 0 is at batch 3 of its shard and rank 1 at batch 4.
    const atEpochEnd = join(outDir, 'results', '000-SiT-tiny-Linear-velocity-None', 'checkpoints', '0000003.safetensors');
    const positions = loadCheckpoint(atEpochEnd).metadata.batch_ranks;
    const resumed = await run(atEpochEnd);
    report({ step: result.step, checkpoint: result.checkpoint, notes, params, positions, resumedStep: resumed.step, resumedParams: paramsOf(resumed.model) });
    dist.destroyProcessGroup();
  },

  // Rank 1's data stalls for 3 s before its third batch, past the group's 1.5 s timeout: rank 0's
  // error must name its rank and the step it was in.
  async stall() {
    dist.initProcessGroup({ timeoutMs: 1500 });
    torch.setNumThreads(1);
    const data: LatentSource = {
      batchSize: 2, length: 4, latentShape: [1, 4, 4], normalization: { source: 'scaling_factor', mean: [0], std: [1] },
      async *iterate(epoch: number, startBatch: number): AsyncGenerator<LatentBatch> {
        for (let b = startBatch; b < 4; b++) {
          if (rank === 1 && b === 2) await new Promise((resolve) => setTimeout(resolve, 3000));
          yield { latents: torch.randn([2, 1, 4, 4]), labels: torch.tensor([0, 1], { dtype: 'int64' }), batchIndex: b };
        }
      },
      async close() {},
    };
    const start = Date.now();
    try {
      await trainGenerator({
        spec: { name: 'SiT-tiny', kind: 'SiT', config: {
          depth: 1, hiddenSize: 8, patchSize: 2, numHeads: 2, inputSize: 4, inChannels: 1, mlpRatio: 2, classDropoutProb: 0.1, numClasses: 2, learnSigma: false,
        } },
        data, resultsDir: join(outDir, 'results'), epochs: 1, ckptEvery: 100, logEvery: 1, device: 'cpu',
        log: () => {}, progressStream: { write: () => true, isTTY: false } as unknown as NodeJS.WritableStream,
      });
      report({ error: null });
    } catch (error) {
      report({ error: (error as Error).message, name: (error as Error).name, elapsedMs: Date.now() - start });
    }
    process.exit(0);
  },

  // Rank 1 skips the allReduce rank 0 waits in; rank 0 must get an error after the 2 s timeout.
  async timeout() {
    dist.initProcessGroup({ timeoutMs: 2000 });
    if (rank === 0) {
      const start = Date.now();
      let error = '';
      try {
        dist.allReduce(torch.ones([4]));
      } catch (e) {
        error = (e as Error).message;
      }
      report({ error, elapsedMs: Date.now() - start });
    } else {
      await until(() => existsSync(join(outDir, 'rank0.json')));
    }
  },

  // Every rank goes on with barriers until the group breaks, then reports the error and exits 4.
  async barriers() {
    dist.initProcessGroup({ timeoutMs: 20_000 });
    writeFileSync(join(outDir, `joined${rank}`), '');
    try {
      for (;;) {
        dist.barrier();
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    } catch (error) {
      report({ error: (error as Error).message });
      process.exit(4);
    }
  },

  // Rank 1 dies while rank 0 waits in a barrier.
  dead() {
    dist.initProcessGroup({ timeoutMs: 60_000 });
    console.log(`rank ${rank} joined`);
    if (rank === 1) process.exit(3);
    dist.barrier();
  },

  // Rank 0 ignores SIGTERM and never ends; rank 1 exits with 3 once rank 0 is ready.
  async stubborn() {
    if (rank === 0) {
      process.on('SIGTERM', () => console.log('rank 0 ignores SIGTERM'));
      writeFileSync(join(outDir, 'ready'), '');
      setInterval(() => {}, 1000);
    } else {
      await until(() => existsSync(join(outDir, 'ready')));
      process.exit(3);
    }
  },
};

writeFileSync(join(outDir, `pid${rank}`), String(process.pid));
const run = scenarios[scenario];
if (run === undefined) throw new Error(`worker: unknown scenario '${scenario}' (${Object.keys(scenarios).join(', ')})`);
await run();
