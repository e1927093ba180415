// Weights on demand against a local server on 127.0.0.1 standing in for the weight hosts: the
// caches are laid out as torch.hub and huggingface_hub lay them out, downloads are checked and
// atomic, and offline or unreachable hosts give errors that say where to put the file.
import { test, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  dinov2CheckpointUrl, downloadFile, hfHubDownload, hfModelFolder, hfRepoCacheDir, resolveGeneratorCheckpoint, torchHubCheckpoint, torchHubDir,
} from '../../src/hub/index.js';

const COMMIT = 'a'.repeat(40);
const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');
const WEIGHTS = Buffer.from(Array.from({ length: 3000 }, (_, i) => i % 251));
const CONFIG = Buffer.from('{"_class_name": "AutoencoderKL", "latent_channels": 4}');
let server: Server;
let base = '';
let requests: string[] = [];
let root = '';

before(async () => {
  server = createServer((req, res) => {
    requests.push(`${req.method} ${req.url}`);
    const url = req.url!;
    const file = (bytes: Buffer, headers: Record<string, string> = {}) => {
      res.writeHead(200, { 'Content-Length': String(bytes.length), ...headers });
      res.end(req.method === 'HEAD' ? undefined : bytes);
    };
    if (url === '/files/model-0123abcd.pth') return file(WEIGHTS);
    if (url === `/files/model-${sha256(WEIGHTS).slice(0, 8)}.pth`) return file(WEIGHTS);
    if (url === '/files/truncated.pth') {
      res.writeHead(200, { 'Content-Length': '5000' });
      res.write(WEIGHTS.subarray(0, 1000));
      return setTimeout(() => res.destroy(), 20);
    }
    // A hub: the config is a regular file (ETag = git blob id), the weights an LFS file on a "CDN".
    if (url === '/owner/vae/resolve/main/config.json') return file(CONFIG, { 'X-Repo-Commit': COMMIT, ETag: '"0d1e2f"' });
    if (url === '/owner/vae/resolve/main/diffusion_pytorch_model.safetensors') {
      res.writeHead(302, { Location: `${base}/cdn/weights`, 'X-Repo-Commit': COMMIT, 'X-Linked-Etag': `"${sha256(WEIGHTS)}"`, 'X-Linked-Size': String(WEIGHTS.length) });
      return res.end();
    }
    if (url === '/cdn/weights') return file(WEIGHTS);
    if (url === '/owner/bad/resolve/main/config.json') return file(CONFIG, { 'X-Repo-Commit': COMMIT, ETag: `"${'0'.repeat(64)}"` });
    res.writeHead(404);
    res.end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
});
after(() => { server.close(); });
beforeEach(() => {
  requests = [];
  root = mkdtempSync(join(tmpdir(), 'reals-hub-'));
  process.env.TORCH_HOME = join(root, 'torch');
  process.env.HF_HOME = join(root, 'hf');
  process.env.HF_ENDPOINT = base;
  delete process.env.HF_HUB_OFFLINE;
  delete process.env.HF_HUB_CACHE;
});

test('torch hub: a checkpoint lands in $TORCH_HOME/hub/checkpoints under the URL\'s name, checked by its sha256 prefix, and is reused', async () => {
  assert.equal(torchHubDir(), join(root, 'torch', 'hub'));
  // The server sends the same bytes under both names: only the one whose prefix matches is kept.
  await assert.rejects(torchHubCheckpoint(`${base}/files/model-0123abcd.pth`, { progress: false }), /sha256 [0-9a-f]{64} does not match the published 0123abcd; not kept/);
  assert.deepEqual(readdirSync(join(root, 'torch', 'hub', 'checkpoints')), [], 'no file and no temporary left');
  const name = `model-${sha256(WEIGHTS).slice(0, 8)}.pth`;
  const path = await torchHubCheckpoint(`${base}/files/${name}`, { progress: false });
  assert.equal(path, join(root, 'torch', 'hub', 'checkpoints', name));
  assert.deepEqual(readFileSync(path), WEIGHTS);
  requests = [];
  assert.equal(await torchHubCheckpoint(`${base}/files/${name}`), path);
  assert.deepEqual(requests, [], 'a cached file (one Python downloaded, say) is used without a request');
});

test('a truncated download and a 404 are errors naming the URL; nothing is left under the final name', async () => {
  const dest = join(root, 'out', 'file.pth');
  await assert.rejects(downloadFile(`${base}/files/truncated.pth`, dest, { progress: false }),
    new RegExp(`^Error: ${base}/files/truncated\\.pth: (the download broke off after 1000 bytes of 5000|got 1000 bytes, expected 5000)`));
  assert.deepEqual(readdirSync(join(root, 'out')), []);
  await assert.rejects(downloadFile(`${base}/files/missing.pth`, dest, { progress: false }),
    { message: `HTTP 404 Not Found: cannot fetch ${base}/files/missing.pth; download it by hand to ${dest}` });
  const closed = createServer();
  await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
  const port = (closed.address() as { port: number }).port;
  await new Promise((resolve) => closed.close(resolve));
  await assert.rejects(torchHubCheckpoint(`http://127.0.0.1:${port}/weights.pth`, { progress: false }), {
    message: `the network is unreachable (ECONNREFUSED): cannot fetch http://127.0.0.1:${port}/weights.pth; download it by hand to ${join(root, 'torch', 'hub', 'checkpoints', 'weights.pth')}`,
  });
});

test('offline (--offline or HF_HUB_OFFLINE=1): no request; a missing file is an error naming the URL and the cache path', async () => {
  const url = dinov2CheckpointUrl('dinov2_vitl14_reg');
  assert.equal(url, 'https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_reg4_pretrain.pth');
  assert.equal(dinov2CheckpointUrl('dinov2_vits14'), 'https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/dinov2_vits14_pretrain.pth');
  assert.throws(() => dinov2CheckpointUrl('teacher.json'), /--dino-model teacher\.json: no published checkpoint .*pass --dino-ckpt FILE/);
  const path = join(root, 'torch', 'hub', 'checkpoints', 'dinov2_vitl14_reg4_pretrain.pth');
  await assert.rejects(torchHubCheckpoint(url, { offline: true }),
    { message: `offline (--offline or HF_HUB_OFFLINE=1) and not in the torch hub cache: cannot fetch ${url}; download it by hand to ${path}` });
  process.env.HF_HUB_OFFLINE = '1';
  await assert.rejects(torchHubCheckpoint(url), /^Error: offline/);
  mkdirSync(join(root, 'torch', 'hub', 'checkpoints'), { recursive: true });
  writeFileSync(path, 'by hand');
  assert.equal(await torchHubCheckpoint(url), path, 'a file put there by hand is used');
  await assert.rejects(resolveGeneratorCheckpoint('SiT-XL-2-256x256.pt'), /^Error: offline .*cannot fetch https:\/\/www\.dl\.dropboxusercontent\.com\/.*; download it by hand to pretrained_models\/SiT-XL-2-256x256\.pt$/);
  await assert.rejects(resolveGeneratorCheckpoint('SiT-B.pt'), /--ckpt SiT-B\.pt: no such file, nor a published checkpoint \(SiT-XL-2-256x256\.pt, DiT-XL-2-256x256\.pt, DiT-XL-2-512x512\.pt\)/);
  assert.deepEqual(requests, []);
});

test('Hugging Face: a diffusers folder is cached as huggingface_hub lays it out (blobs, refs, relative snapshot links), then read offline', async () => {
  const folder = await hfModelFolder('owner/vae', { progress: false });
  const repo = hfRepoCacheDir('owner/vae');
  assert.equal(repo, join(root, 'hf', 'hub', 'models--owner--vae'));
  assert.equal(folder, join(repo, 'snapshots', COMMIT));
  assert.equal(readFileSync(join(repo, 'refs', 'main'), 'utf8'), COMMIT);
  assert.deepEqual(readdirSync(join(repo, 'blobs')).sort(), ['0d1e2f', sha256(WEIGHTS)].sort());
  const link = join(folder, 'diffusion_pytorch_model.safetensors');
  assert.ok(lstatSync(link).isSymbolicLink());
  assert.equal(readlinkSync(link), join('..', '..', 'blobs', sha256(WEIGHTS)));
  assert.deepEqual(readFileSync(link), WEIGHTS);
  assert.deepEqual(readFileSync(join(folder, 'config.json')), CONFIG);

  requests = [];
  process.env.HF_HUB_OFFLINE = '1';
  assert.equal(await hfModelFolder('owner/vae'), folder, 'offline, refs/main resolves to the cached snapshot');
  assert.equal(await hfHubDownload('owner/vae', 'config.json', { revision: COMMIT }), join(folder, 'config.json'));
  assert.deepEqual(requests, []);
  await assert.rejects(hfHubDownload('owner/vae', 'config.json', { revision: 'v2' }),
    new RegExp(`^Error: offline .*owner/vae@v2 has no config\\.json in the Hugging Face cache: cannot fetch ${base}/owner/vae/resolve/v2/config\\.json; download it by hand to ${repo}/snapshots/<commit>/config\\.json$`));
});

test('Hugging Face: a file Python downloaded is used; a blob whose sha256 is not its ETag, a 404 and a bad repo id are refused', async () => {
  // As huggingface_hub leaves a file: blob, ref and link, written here by hand.
  const repo = join(root, 'hf', 'hub', 'models--owner--python');
  mkdirSync(join(repo, 'blobs'), { recursive: true });
  mkdirSync(join(repo, 'refs'));
  mkdirSync(join(repo, 'snapshots', COMMIT), { recursive: true });
  writeFileSync(join(repo, 'blobs', 'e1'), CONFIG);
  writeFileSync(join(repo, 'refs', 'main'), COMMIT);
  symlinkSync('../../blobs/e1', join(repo, 'snapshots', COMMIT, 'config.json'));
  assert.deepEqual(readFileSync(await hfHubDownload('owner/python', 'config.json', { offline: true })), CONFIG);

  await assert.rejects(hfHubDownload('owner/bad', 'config.json', { progress: false }), /sha256 [0-9a-f]{64} does not match the published 0{64}; not kept/);
  assert.equal(existsSync(join(root, 'hf', 'hub', 'models--owner--bad', 'snapshots')), false, 'no link to a bad blob');
  await assert.rejects(hfHubDownload('owner/vae', 'missing.json'), /\/owner\/vae\/resolve\/main\/missing\.json: HTTP 404 \(owner\/vae@main has no missing\.json/);
  await assert.rejects(hfHubDownload('../etc', 'passwd'), /\.\.\/etc: not a Hugging Face repo id \(owner\/name\)/);
  rmSync(root, { recursive: true, force: true });
});
