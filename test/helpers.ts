// Shared test helpers: fixtures written by test/fixtures/*.py, closeness checks, a tiny VAE.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import * as torch from '../src/torch/index.js';
import { AutoencoderKL } from '../src/models/autoencoder-kl.js';

export const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), 'fixtures');

/** A tiny AutoencoderKL (3 channels to `latentChannels`, downsampling by 2), its random weights drawn after torch.manualSeed(0). */
export function tinyVae(latentChannels = 4): AutoencoderKL {
  torch.manualSeed(0);
  return new AutoencoderKL({
    blockOutChannels: [8, 8], downBlockTypes: ['DownEncoderBlock2D', 'DownEncoderBlock2D'], upBlockTypes: ['UpDecoderBlock2D', 'UpDecoderBlock2D'],
    normNumGroups: 4, layersPerBlock: 1, latentChannels,
  });
}

interface FixtureTensor { shape: number[]; dtype: torch.DType; data: number[] }

/**
 * Loads a fixture JSON written by test/fixtures/common.py: tensors become torch tensors, other
 * values stay as they are.
 */
export function loadFixture(name: string): Record<string, any> {
  const raw = JSON.parse(readFileSync(join(FIXTURES, name), 'utf8')) as Record<string, unknown>;
  const out: Record<string, any> = {};
  for (const [key, value] of Object.entries(raw)) out[key] = revive(value);
  return out;
}

function revive(value: unknown): any {
  if (value && typeof value === 'object' && !Array.isArray(value)) {
    const v = value as Record<string, unknown>;
    if (v.__tensor__) {
      const t = v as unknown as FixtureTensor;
      return torch.tensor(t.data, { shape: t.shape, dtype: t.dtype });
    }
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, revive(x)]));
  }
  if (Array.isArray(value)) return value.map(revive);
  return value;
}

/** Largest |a - b| / (|b| + atol-floor) elementwise; asserts shapes match. */
export function maxRelError(actual: torch.Tensor, expected: torch.Tensor, floor = 1e-6): number {
  assert.deepEqual(actual.shape, expected.shape, 'shapes differ');
  const a = actual.double();
  const b = expected.double();
  return a.sub(b).abs().div(b.abs().add(floor)).max().item();
}

/** Asserts allclose in PyTorch's sense: |a - b| <= atol + rtol * |b| everywhere. */
export function assertClose(actual: torch.Tensor, expected: torch.Tensor, rtol = 1e-5, atol = 1e-6, what = 'tensor'): void {
  assert.deepEqual(actual.shape, expected.shape, `${what}: shape ${actual.shape} != ${expected.shape}`);
  const a = actual.double();
  const b = expected.double();
  const excess = a.sub(b).abs().sub(b.abs().mul(rtol).add(atol)).max().item();
  if (excess > 0) {
    const maxAbs = a.sub(b).abs().max().item();
    assert.fail(`${what}: not close (max |diff| ${maxAbs}, rtol ${rtol}, atol ${atol})`);
  }
}

/** float32's unit roundoff, 2^-24: the largest relative error of one rounding. */
export const F32_UNIT_ROUNDOFF = 2 ** -24;

/**
 * How far apart two correct float32 evaluations of one network can be, relative to the size of its
 * values, when they sum in different orders: PyTorch on another CPU (OpenBLAS and oneDNN pick their
 * kernels, and so their blocking, by CPU), or the same network at another batch size. One sum of
 * `length` products is then off by about sqrt(length) roundings (a random walk), and the errors of
 * `layers` such sums in sequence add in quadrature (independent roundings; normalised layers keep
 * the gain near 1). The factor 8 covers the largest of ~1e5 outputs (4.5 sigma) twice over.
 * Measured: the small diffusers VAE of test/models/autoencoder-kl.test.ts (3x3 convs over up to 64
 * channels, values of order 1) differs by up to 4.2e-6 between OpenBLAS's Haswell kernels (AVX2)
 * and its SkylakeX ones (AVX-512); float32Tolerance(576, 16) is 4.6e-5. An activation scaled
 * by 1.001 in one place is off by 2e-3, a wrong weight or attention scale by more.
 */
export function float32Tolerance(length: number, layers = 1): number {
  return 8 * Math.sqrt(length * layers) * F32_UNIT_ROUNDOFF;
}

/** Asserts |a - b| <= tolerance * max|b| everywhere: a normwise comparison, for outputs whose error follows their scale (float32Tolerance). */
export function assertCloseToScale(actual: torch.Tensor, expected: torch.Tensor, tolerance: number, what = 'tensor'): void {
  const scale = expected.double().abs().max().item();
  assertClose(actual, expected, 0, tolerance * scale, what);
}

/**
 * Asserts that `tensors` hold the numbers PyTorch drew (a fixture's `{sum, abs_sum}`): tests that
 * redraw large weights from a seed instead of committing them check the draw before the parity.
 */
export function assertSameDraw(tensors: torch.Tensor[], reference: { sum: number; abs_sum: number }, what: string): void {
  const sum = tensors.reduce((s, t) => s + t.double().sum().item(), 0);
  const absSum = tensors.reduce((s, t) => s + t.double().abs().sum().item(), 0);
  assert.ok(Math.abs(sum - reference.sum) <= 1e-9 * reference.abs_sum && Math.abs(absSum - reference.abs_sum) <= 1e-9 * reference.abs_sum,
    `${what}: drew other numbers than PyTorch (sums ${sum}, ${absSum} vs ${reference.sum}, ${reference.abs_sum}): the RNG differs`);
}

/** A test body run in a fresh temporary folder (named `reals-<prefix>-...`), removed afterwards. */
export function withTmp(prefix: string, fn: (dir: string) => void | Promise<void>): () => Promise<void> {
  return async () => {
    const dir = mkdtempSync(join(tmpdir(), `reals-${prefix}-`));
    try {
      await fn(dir);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
}
