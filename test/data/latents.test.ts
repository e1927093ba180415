import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, mkdtempSync, mkdirSync, openSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as torch from '../../src/torch/index.js';
import { AutoencoderKL } from '../../src/models/autoencoder-kl.js';
import { DataLoader, ImageFolder } from '../../src/data/index.js';
import { NpzFile } from '../../src/io/index.js';
import { readZipEntries, storedEntryRange } from '../../src/io/zip.js';
import { encodePng } from '../../src/runlog/images.js';
import { CachedLatents, LatentCache, cacheLatents, shardName, LATENT_INDEX } from '../../src/data/latents.js';
import { latentNormalization, normalizeLatents, denormalizeLatents } from '../../src/data/latent-normalization.js';
import { assertClose } from '../helpers.js';

const TINY_VAE = {
  blockOutChannels: [8, 8], downBlockTypes: ['DownEncoderBlock2D' as const, 'DownEncoderBlock2D' as const],
  upBlockTypes: ['UpDecoderBlock2D' as const, 'UpDecoderBlock2D' as const], normNumGroups: 4, layersPerBlock: 1, latentChannels: 4,
};

/** A tiny random VAE folder (factor 2), with mean_std.json when `stats` is given. */
function vaeFolder(root: string, stats?: { mean: number[]; std: number[] }): string {
  torch.manualSeed(0);
  const vae = new AutoencoderKL(TINY_VAE);
  vae.latentStats = stats ?? null;
  const dir = join(root, 'vae');
  vae.savePretrained(dir);
  return dir;
}

/** Two class folders of 3 and 4 RGB images of 20x24 (ADM-cropped to 16), and one unreadable file. */
async function imageFolder(root: string): Promise<string> {
  const dir = join(root, 'images');
  torch.manualSeed(1);
  for (const [c, n] of [['cat', 3], ['dog', 4]] as const) {
    mkdirSync(join(dir, c), { recursive: true });
    for (let i = 0; i < n; i++) writeFileSync(join(dir, c, `${i}.png`), await encodePng(torch.randint(0, 256, [20, 24, 3], { dtype: 'uint8' })));
  }
  writeFileSync(join(dir, 'dog', '9-broken.png'), 'not a png');
  return dir;
}

async function setup() {
  const root = mkdtempSync(join(tmpdir(), 'reals-latents-'));
  const vaePath = vaeFolder(root, { mean: [0.1, -0.2, 0.3, 0], std: [2, 1, 0.5, 1] });
  const dataset = new ImageFolder(await imageFolder(root), { resolution: 16 });
  const vae = AutoencoderKL.fromPretrained(vaePath);
  return { root, vaePath, dataset, vae };
}

test('cache-latents counts images on its progress bar, the unreadable one with its shard, and prints the last line once', async () => {
  const { root, vaePath, dataset, vae } = await setup();
  let text = '';
  const progressStream = { write: (chunk: string) => { text += chunk; return true; }, isTTY: false } as unknown as NodeJS.WritableStream;
  await cacheLatents({ dataset, vae, vaePath, out: join(root, 'cache'), shardSize: 3, batchSize: 2, numWorkers: 0, log: () => {}, progressStream });
  const lines = text.trimEnd().split('\n');
  // 8 files in shards of 3, 3 and 2: the first batch's line, then the end's (the broken file is the last shard's second).
  assert.deepEqual(lines.map((line) => /^cache-latents: (\d+\/\d+) img /.exec(line)?.[1]), ['2/8', '8/8'], text);
  rmSync(root, { recursive: true, force: true });
});

test('cache-latents stores each readable image\'s posterior (and its mirror image\'s) with labels, and lists the unreadable one', async () => {
  const { root, vaePath, dataset, vae } = await setup();
  process.removeAllListeners('warning');
  const out = join(root, 'cache');
  const result = await cacheLatents({ dataset, vae, vaePath, out, flip: true, shardSize: 3, batchSize: 2, numWorkers: 0, log: () => {} });
  assert.equal(result.encoded, 3);
  const index = JSON.parse(readFileSync(join(out, LATENT_INDEX), 'utf8'));
  assert.equal(index.complete, true);
  assert.deepEqual(index.shards.map((s: { count: number }) => s.count), [3, 3, 1]);
  assert.deepEqual(index.skipped, [dataset.path(7)]);
  assert.deepEqual(index.settings.latentShape, [4, 8, 8]);
  assert.equal(index.settings.normalization.source, 'mean_std.json');

  // The reference: every image decoded and cropped in order, encoded in one batch.
  const loader = new DataLoader(dataset, { batchSize: 8, shuffle: false, randomFlip: false, numWorkers: 0 });
  let images!: torch.Tensor;
  let labels!: torch.Tensor;
  for await (const batch of loader) ({ images, labels } = batch);
  assert.equal(images.size(0), 7);
  const posterior = torch.noGrad(() => vae.encode(images));
  const flipped = torch.noGrad(() => vae.encode(images.flip(3)));
  const cache = LatentCache.open(out);
  assert.equal(cache.length, 7);
  assert.equal(cache.numClasses, 2);
  for (let i = 0; i < 7; i++) {
    assert.equal(cache.label(i), Number(labels.index(i).item()));
    const p = cache.posterior(i);
    assertClose(p.mean, posterior.mean.slice(0, i, i + 1), 1e-5, 1e-6, `mean ${i}`);
    assertClose(p.std, posterior.std.slice(0, i, i + 1), 1e-5, 1e-6, `std ${i}`);
    assertClose(cache.posterior(i, true).mean, flipped.mean.slice(0, i, i + 1), 1e-5, 1e-6, `flipped mean ${i}`);
  }
  cache.close();
  rmSync(root, { recursive: true });
});

test('a rerun keeps the shards already written and encodes only the missing ones; other settings are refused', async () => {
  const { root, vaePath, dataset, vae } = await setup();
  process.removeAllListeners('warning');
  const out = join(root, 'cache');
  const options = { dataset, vae, vaePath, out, shardSize: 3, batchSize: 4, numWorkers: 0, log: () => {} };
  await cacheLatents(options);
  const kept = statSync(join(out, shardName(0))).mtimeMs;
  rmSync(join(out, shardName(1)));
  const again = await cacheLatents(options);
  assert.deepEqual([again.encoded, again.reused], [1, 2]);
  assert.equal(statSync(join(out, shardName(0))).mtimeMs, kept);
  assert.equal(LatentCache.open(out).length, 7);
  await assert.rejects(cacheLatents({ ...options, flip: true }), /other settings \(flip: false there, true now\)/);
  rmSync(root, { recursive: true });
});

test('a torn shard, an incomplete cache and a VAE folder with neither mean_std.json nor scaling_factor are clear errors', async () => {
  const { root, vaePath, dataset, vae } = await setup();
  process.removeAllListeners('warning');
  const out = join(root, 'cache');
  await cacheLatents({ dataset, vae, vaePath, out, shardSize: 4, numWorkers: 0, log: () => {} });
  // A flipped byte in a latent (read later one row at a time) is found when the cache opens.
  const first = join(out, shardName(0));
  const bytes = readFileSync(first);
  const meanData = (() => {
    const fd = openSync(first, 'r');
    const file = NpzFile.open(first);
    try {
      return storedEntryRange(fd, readZipEntries(fd, bytes.length, first).get('mean.npy')!, first).offset + file.header('mean').headerLength + 8;
    } finally {
      file.close();
      closeSync(fd);
    }
  })();
  bytes[meanData]! ^= 0x10;
  writeFileSync(first, bytes);
  assert.throws(() => LatentCache.open(out), new RegExp(`shard ${shardName(0)} is corrupt \\(.*zip entry mean\\.npy is corrupt: .*\\); delete it and rerun cache-latents`));
  bytes[meanData]! ^= 0x10;
  writeFileSync(first, bytes);
  LatentCache.open(out).close();

  const shard = join(out, shardName(1));
  truncateSync(shard, statSync(shard).size - 10);
  assert.throws(() => LatentCache.open(out), new RegExp(`shard .*${shardName(1)} is unreadable \\(torn or truncated\\?\\)`));

  const index = JSON.parse(readFileSync(join(out, LATENT_INDEX), 'utf8'));
  writeFileSync(join(out, LATENT_INDEX), JSON.stringify({ ...index, complete: false }));
  assert.throws(() => LatentCache.open(out), /the cache is incomplete/);

  const bare = vaeFolder(join(root, 'bare'));
  const config = JSON.parse(readFileSync(join(bare, 'config.json'), 'utf8'));
  delete config.scaling_factor;
  writeFileSync(join(bare, 'config.json'), JSON.stringify(config));
  const loaded = AutoencoderKL.fromPretrained(bare);
  assert.throws(() => latentNormalization(bare, loaded), /no mean_std\.json and no scaling_factor in config\.json/);
  config.scaling_factor = 0.5;
  writeFileSync(join(bare, 'config.json'), JSON.stringify(config));
  assert.deepEqual(latentNormalization(bare, AutoencoderKL.fromPretrained(bare)), { source: 'scaling_factor', mean: [0, 0, 0, 0], std: [2, 2, 2, 2] });
  rmSync(root, { recursive: true });
});

test('CachedLatents: full batches of normalized posterior samples, sharded over ranks, the same for the same RNG state', async () => {
  const { root, vaePath, dataset, vae } = await setup();
  process.removeAllListeners('warning');
  const out = join(root, 'cache');
  await cacheLatents({ dataset, vae, vaePath, out, flip: true, shardSize: 5, numWorkers: 0, log: () => {} });
  const cache = LatentCache.open(out);
  const ranks = [0, 1].map((rank) => new CachedLatents(cache, { batchSize: 2, seed: 3, rank, worldSize: 2 }));
  assert.equal(ranks[0]!.length, 2); // 4 items per rank, drop_last
  const seen: number[] = [];
  for (const source of ranks) {
    torch.manualSeed(7);
    const first: torch.Tensor[] = [];
    for await (const { latents, labels } of source.iterate(0, 0)) {
      assert.deepEqual(latents.shape, [2, 4, 8, 8]);
      first.push(latents);
      seen.push(...Array.from(labels.toArray() as BigInt64Array, Number));
    }
    torch.manualSeed(7);
    const again: torch.Tensor[] = [];
    for await (const { latents } of source.iterate(0, 0)) again.push(latents);
    first.forEach((t, i) => assert.deepEqual(t.toArray(), again[i]!.toArray(), 'same RNG state, same latents'));
  }
  // 7 items padded to 8 by DistributedSampler: the 3 cats and 4 dogs, one of them twice.
  assert.equal(seen.length, 8);
  assert.ok(seen.filter((l) => l === 0).length >= 3 && seen.filter((l) => l === 1).length >= 4, `labels ${seen}`);
  // z = mean + std * eps, normalized by mean_std.json: its denormalization is within a few std of the mean.
  torch.manualSeed(0);
  const item = cache.posterior(0);
  const z = denormalizeLatents(normalizeLatents(item.mean, cache.normalization), cache.normalization);
  assertClose(z, item.mean, 1e-5, 1e-6, 'normalize/denormalize round trip');
  const npz = NpzFile.open(join(out, shardName(0)));
  assert.deepEqual(npz.keys().sort(), ['indices', 'labels', 'mean', 'mean_flip', 'std', 'std_flip']);
  npz.close();
  cache.close();
  rmSync(root, { recursive: true });
});
