// torch.utils.data.DistributedSampler: each rank reads a disjoint, equally long slice of one
// permutation of the dataset, the permutation drawn from seed + epoch. The permutation is
// torch.randperm's with a generator seeded that way, computed here (mt19937 and randperm_cpu's
// Fisher-Yates) so that drawing it leaves libtorch's global generator alone.

/** The 32-bit Mersenne twister (MT19937) as at::mt19937, seeded with the low 32 bits of `seed`. */
export class MT19937 {
  private readonly state = new Uint32Array(624);
  private index = 624;

  constructor(seed: number) {
    this.state[0] = seed >>> 0;
    for (let i = 1; i < 624; i++) {
      const prev = this.state[i - 1]! ^ (this.state[i - 1]! >>> 30);
      this.state[i] = (Math.imul(1812433253, prev) + i) >>> 0;
    }
  }

  /** The next 32-bit output, as an unsigned integer. */
  next(): number {
    if (this.index >= 624) this.twist();
    let y = this.state[this.index++]!;
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }

  private twist(): void {
    const s = this.state;
    for (let i = 0; i < 624; i++) {
      const y = (s[i]! & 0x80000000) | (s[(i + 1) % 624]! & 0x7fffffff);
      s[i] = s[(i + 397) % 624]! ^ (y >>> 1) ^ (y & 1 ? 0x9908b0df : 0);
    }
    this.index = 0;
  }
}

/** `torch.randperm(n, generator=torch.Generator().manual_seed(seed))` for n below 2^32 / 20. */
export function randperm(n: number, seed: number): number[] {
  if (n >= 0xffffffff / 20) throw new RangeError(`randperm(${n}): torch draws 64-bit numbers from this size on; not supported`);
  const rng = new MT19937(seed);
  const perm = Array.from({ length: n }, (_, i) => i);
  for (let i = 0; i < n - 1; i++) {
    const z = rng.next() % (n - i);
    [perm[i], perm[z + i]] = [perm[z + i]!, perm[i]!];
  }
  return perm;
}

export interface DistributedSamplerOptions {
  /** This process's rank and the number of ranks (default 0 of 1). */
  rank?: number;
  worldSize?: number;
  /** Permute with seed + epoch (default true). */
  shuffle?: boolean;
  seed?: number;
  /** Drop the tail that does not divide evenly instead of repeating the head to fill it (default false). */
  dropLast?: boolean;
}

/** torch.utils.data.DistributedSampler over `length` items. */
export class DistributedSampler {
  readonly rank: number;
  readonly worldSize: number;
  readonly shuffle: boolean;
  readonly seed: number;
  readonly dropLast: boolean;
  /** Items per rank per epoch. */
  readonly numSamples: number;

  constructor(readonly length: number, options: DistributedSamplerOptions = {}) {
    this.rank = options.rank ?? 0;
    this.worldSize = options.worldSize ?? 1;
    this.shuffle = options.shuffle ?? true;
    this.seed = options.seed ?? 0;
    this.dropLast = options.dropLast ?? false;
    if (!Number.isInteger(this.worldSize) || this.worldSize < 1 || !Number.isInteger(this.rank) || this.rank < 0 || this.rank >= this.worldSize) {
      throw new RangeError(`DistributedSampler: rank ${this.rank} is not in [0, ${this.worldSize})`);
    }
    this.numSamples = this.dropLast && length % this.worldSize !== 0
      ? Math.ceil((length - this.worldSize) / this.worldSize)
      : Math.ceil(length / this.worldSize);
  }

  /** The dataset indices this rank reads in `epoch`, in order. */
  indices(epoch: number): number[] {
    let indices = this.shuffle ? randperm(this.length, this.seed + epoch) : Array.from({ length: this.length }, (_, i) => i);
    const totalSize = this.numSamples * this.worldSize;
    if (this.dropLast) indices = indices.slice(0, totalSize);
    else {
      const head = indices;
      while (indices.length < totalSize) indices = indices.concat(head.slice(0, totalSize - indices.length));
    }
    return indices.filter((_, i) => i % this.worldSize === this.rank);
  }
}
