// DistributedDataParallel: the same model on every rank, each rank on its own slice of the batch.
// The constructor copies rank 0's parameters and buffers to every rank; after each backward,
// syncGradients() replaces every gradient by its mean over the ranks, so every optimizer step
// is identical everywhere. As torch.nn.parallel.DistributedDataParallel without the autograd
// hooks: gradients are reduced after backward instead of overlapping with it.
import * as torch from '../torch/index.js';
import type { Tensor } from '../torch/index.js';

const dist = torch.distributed;

/** What DDP needs from a model: an nn Module provides both. */
export interface HasParameters {
  parameters(): Tensor[];
  buffers(): Tensor[];
}

export interface DDPOptions {
  /** Largest gradient bucket, in MiB; PyTorch's bucket_cap_mb (25). */
  bucketCapMb?: number;
}

interface Bucket {
  /** Indices into `params`. */
  indices: number[];
  /** Flat storage the bucket's gradients are copied into for one allReduce (kept across steps). */
  flat: Tensor;
}

export class DistributedDataParallel<M extends HasParameters> {
  readonly module: M;
  private readonly params: Tensor[];
  private readonly buckets: Bucket[];

  constructor(module: M, options: DDPOptions = {}) {
    if (!dist.isInitialized()) throw new Error('DistributedDataParallel: call torch.distributed.initProcessGroup() first');
    this.module = module;
    this.params = module.parameters().filter((p) => p.requiresGrad);
    const capBytes = (options.bucketCapMb ?? 25) * 1024 * 1024;
    // Reverse order, as PyTorch's reducer: backward produces the last layers' gradients first.
    this.buckets = assignBuckets([...this.params].reverse(), capBytes).map((params) => ({
      indices: params.map((p) => this.params.indexOf(p)),
      flat: torch.keep(torch.zeros([numelOf(params)], { dtype: params[0]!.dtype, device: params[0]!.device })),
    }));
    torch.noGrad(() => torch.scope(() => {
      for (const tensors of assignBuckets([...module.parameters(), ...module.buffers()], capBytes)) {
        const flat = torch.cat(tensors.map((t) => t.detach().reshape(-1)));
        dist.broadcast(flat, 0);
        unflattenInto(flat, tensors);
      }
    }));
  }

  /**
   * All-reduces the gradients (one allReduce per bucket) and sets each to the mean over ranks.
   * Call after backward, before the optimizer step, on every rank. A parameter whose grad is
   * null counts as a zero gradient so that every rank's buckets line up; it gets the mean if any
   * rank had a gradient for it and stays null if none had (PyTorch's find_unused_parameters).
   */
  syncGradients(): void {
    const worldSize = dist.getWorldSize();
    torch.noGrad(() => torch.scope(() => {
      const grads = this.params.map((p) => p.grad);
      // On the parameters' device: NCCL reduces CUDA tensors only.
      const used = torch.tensor(grads.map((g) => (g === null ? 0 : 1)), { dtype: 'int32', device: this.params[0]?.device });
      dist.allReduce(used, 'max');
      const usedAnywhere = used.toArray();
      for (const { indices, flat } of this.buckets) {
        let offset = 0;
        for (const i of indices) {
          const grad = grads[i]!;
          const numel = this.params[i]!.numel();
          const view = flat.narrow(0, offset, numel);
          if (grad === null) view.zero_();
          else view.copy_(grad.reshape(-1));
          offset += numel;
        }
        // Divide before reducing, as PyTorch's reducer, so float16 sums stay in range.
        flat.div_(worldSize);
        dist.allReduce(flat, 'sum');
        offset = 0;
        for (const i of indices) {
          const p = this.params[i]!;
          const mean = flat.narrow(0, offset, p.numel()).view(p.shape);
          const grad = grads[i]!;
          if (grad !== null) grad.copy_(mean);
          else if (usedAnywhere[i] !== 0) p.grad = mean.clone();
          offset += p.numel();
        }
      }
    }));
  }
}

export { DistributedDataParallel as DDP };

function numelOf(tensors: Tensor[]): number { return tensors.reduce((n, t) => n + t.numel(), 0); }

/**
 * Groups tensors, in order, into buckets of one dtype and device; a bucket is closed once it holds
 * `capBytes` or more, as PyTorch's compute_bucket_assignment_by_size.
 */
function assignBuckets(tensors: Tensor[], capBytes: number): Tensor[][] {
  const open = new Map<string, { tensors: Tensor[]; bytes: number }>();
  const buckets: Tensor[][] = [];
  for (const t of tensors) {
    const key = `${t.dtype}@${t.device}`;
    const bytes = t.numel() * torch.BYTES_PER_ELEMENT[t.dtype];
    let bucket = open.get(key);
    if (bucket === undefined) {
      bucket = { tensors: [], bytes: 0 };
      open.set(key, bucket);
      buckets.push(bucket.tensors);
    }
    bucket.tensors.push(t);
    bucket.bytes += bytes;
    if (bucket.bytes >= capBytes) open.delete(key);
  }
  return buckets;
}

function unflattenInto(flat: Tensor, tensors: Tensor[]): void {
  let offset = 0;
  for (const t of tensors) {
    t.detach().copy_(flat.narrow(0, offset, t.numel()).view(t.shape));
    offset += t.numel();
  }
}
