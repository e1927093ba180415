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
