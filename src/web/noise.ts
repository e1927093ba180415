// The seeded standard-normal noise of the web page, implemented once for the page and for Node
// (which checks the page against onnxruntime-node on the same noise): mulberry32 for uniforms,
// Box-Muller for normals, rounded to float32. No Node or libtorch imports.

/** Uniforms in (0, 1) from a 32-bit seed (mulberry32). */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) + 0.5) / 4294967296;
  };
}

/** `count` N(0, 1) samples from `seed`, as float32. */
export function seededNormal(seed: number, count: number): Float32Array {
  if (!Number.isInteger(seed)) throw new Error(`seededNormal: the seed must be an integer, got ${seed}`);
  const uniform = mulberry32(seed);
  const out = new Float32Array(count);
  for (let i = 0; i < count; i += 2) {
    const radius = Math.sqrt(-2 * Math.log(uniform()));
    const angle = 2 * Math.PI * uniform();
    out[i] = radius * Math.cos(angle);
    if (i + 1 < count) out[i + 1] = radius * Math.sin(angle);
  }
  return out;
}
