// A hostile weight host on 127.0.0.1 and a planted cache: whatever the server sends (ETags that
// are paths, bodies that never end or never come, a size other than the published one) and
// whatever the cache holds (refs, snapshot links), nothing is written or read outside the cache,
// and every download ends within its bounds with one line naming the URL or file.
import { test, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createTcpServer, type Socket } from 'node:net';
import { gzipSync } from 'node:zlib';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { downloadFile, hfHubDownload, hfRepoCacheDir, isHfRepoId, torchHubCheckpoint } from '../../src/hub/index.js';

const COMMIT = 'c'.repeat(40);
const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');
const CONFIG = Buffer.from('{"_class_name": "AutoencoderKL"}');
const WEIGHTS = Buffer.from(Array.from({ length: 3000 }, (_, i) => (i * 7) % 256));
const PRECIOUS = 'a file outside the cache that no download may touch';
const escape = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

type Handler = (req: IncomingMessage, res: ServerResponse) => void;
let routes: Record<string, Handler> = {};
let requests: string[] = [];
let seen: Array<{ host: string; url: string; authorization: string | undefined }> = [];
let server: Server;
let base = '';
let root = '';
let outside = '';

/** A hub file: the commit and `headers` on every answer, the bytes on GET. */
const hubFile = (bytes: Buffer, headers: Record<string, string> = {}): Handler => (req, res) => {
  res.writeHead(200, { 'Content-Length': String(bytes.length), 'X-Repo-Commit': COMMIT, ...headers });
  res.end(req.method === 'HEAD' ? undefined : bytes);
};

/** Streams 64 KiB chunks with no Content-Length up to 256 MiB, as fast as they are read; `sent` resolves on close with the bytes written. */
function endless(): { handler: Handler; sent: Promise<number> } {
  let resolveSent: (bytes: number) => void = () => {};
  const sent = new Promise<number>((resolve) => { resolveSent = resolve; });
  const handler: Handler = (_req, res) => {
    let bytes = 0;
    const chunk = Buffer.alloc(1 << 16, 7);
    res.writeHead(200, { 'Content-Type': 'application/octet-stream' });
    res.on('close', () => resolveSent(bytes));
    const pump = () => {
      while (bytes < 256 * 2 ** 20 && !res.destroyed) {
        bytes += chunk.length;
        if (!res.write(chunk)) return void res.once('drain', pump);
      }
      res.end();
    };
    pump();
  };
  return { handler, sent };
}

/** A TCP server that answers every request with `answer` (raw HTTP, which node:http refuses to send); returns its base URL and a closer. */
async function rawServer(answer: (socket: Socket) => void): Promise<{ url: string; close: () => Promise<void> }> {
  const sockets = new Set<Socket>();
  const tcp = createTcpServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => {});
    socket.once('data', () => answer(socket));
  });
  await new Promise<void>((resolve) => tcp.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(tcp.address() as { port: number }).port}`,
    close: () => new Promise<void>((resolve) => { for (const socket of sockets) socket.destroy(); tcp.close(() => resolve()); }),
  };
}

before(async () => {
  server = createServer((req, res) => {
    requests.push(`${req.method} ${req.url}`);
    seen.push({ host: req.headers.host!, url: req.url!, authorization: req.headers.authorization });
    const handler = routes[req.url!];
    if (handler === undefined) {
      res.writeHead(404);
      return res.end();
    }
    handler(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
});
after(() => {
  server.closeAllConnections();
  server.close();
});
beforeEach(() => {
  routes = {};
  requests = [];
  seen = [];
  root = mkdtempSync(join(tmpdir(), 'reals-hostile-'));
  outside = join(root, 'outside');
  mkdirSync(outside);
  writeFileSync(join(outside, 'x'), PRECIOUS);
  writeFileSync(join(outside, 'config.json'), PRECIOUS);
  process.env.TORCH_HOME = join(root, 'torch');
  process.env.HF_HOME = join(root, 'hf');
  process.env.HF_ENDPOINT = base;
  delete process.env.HF_HUB_OFFLINE;
  delete process.env.HF_HUB_CACHE;
  delete process.env.REALS_DOWNLOAD_TIMEOUT_S;
  delete process.env.HF_TOKEN;
});

const outsideUntouched = () => {
  assert.deepEqual(readdirSync(outside).sort(), ['config.json', 'x']);
  assert.equal(readFileSync(join(outside, 'x'), 'utf8'), PRECIOUS);
  assert.equal(readFileSync(join(outside, 'config.json'), 'utf8'), PRECIOUS);
};

test('an ETag or X-Linked-Etag that is not one file name, or a commit that is not the one asked for, is refused before any byte is fetched, and the file it names stays untouched', async () => {
  // The cache's blobs folder is root/hf/hub/models--owner--evil/blobs: four `..` lead to root.
  const variants: Record<string, Record<string, string>> = {
    'relative.json': { ETag: '"../../../../outside/x"' },
    'weak.json': { ETag: 'W/"../../../../outside/x"' },
    'absolute.json': { ETag: `"${join(outside, 'x')}"` },
    'backslashes.json': { ETag: '"..\\..\\..\\..\\outside\\x"' },
    'dots.json': { ETag: '".."' },
    'empty.json': { ETag: '""' },
    'overlong.json': { ETag: `"${'a'.repeat(201)}"` },
    'tab.json': { ETag: '"a\tb"' },
    'linked.json': { ETag: `"${sha256(CONFIG)}"`, 'X-Linked-Etag': '"../../../../outside/x"' },
  };
  for (const [name, headers] of Object.entries(variants)) {
    routes[`/owner/evil/resolve/main/${name}`] = hubFile(CONFIG, headers);
    const url = `${base}/owner/evil/resolve/main/${name}`;
    const header = name === 'linked.json' ? 'X-Linked-Etag' : 'ETag';
    await assert.rejects(hfHubDownload('owner/evil', name, { progress: false }), (error: Error) => {
      assert.match(error.message, new RegExp(`^${escape(url)}: the ${header} ".*": not a file name .*; refused$`));
      return true;
    }, name);
  }
  // The commit becomes a folder too: it must be 40 hex digits, and the one asked for when one was.
  routes['/owner/evil/resolve/main/commit.json'] = hubFile(CONFIG, { 'X-Repo-Commit': '../../../../outside', ETag: `"${sha256(CONFIG)}"` });
  await assert.rejects(hfHubDownload('owner/evil', 'commit.json', { progress: false }),
    { message: `${base}/owner/evil/resolve/main/commit.json: the answer names no commit (X-Repo-Commit, 40 hex digits) or no ETag: is ${base} a Hugging Face hub?` });
  const asked = 'd'.repeat(40);
  routes[`/owner/evil/resolve/${asked}/config.json`] = hubFile(CONFIG, { ETag: `"${sha256(CONFIG)}"` });
  await assert.rejects(hfHubDownload('owner/evil', 'config.json', { revision: asked, progress: false }),
    { message: `${base}/owner/evil/resolve/${asked}/config.json: the answer is for commit ${COMMIT}, not the ${asked} asked for; refused` });
  // A redirect to another host (`//host/path` is one) is not followed by the HEAD, which carries the token.
  const port = new URL(base).port;
  routes['/owner/evil/resolve/main/moved.json'] = (_req, res) => { res.writeHead(302, { Location: `//localhost:${port}/owner/evil/resolve/main/config.json` }); res.end(); };
  await assert.rejects(hfHubDownload('owner/evil', 'moved.json', { progress: false }), /moved\.json: the answer names no commit \(X-Repo-Commit/);
  assert.deepEqual(seen.filter((request) => request.host.startsWith('localhost')), []);
  // NUL never reaches the check: the HTTP parser refuses it, and the error names the URL too.
  const nul = await rawServer((socket) => socket.end(`HTTP/1.1 200 OK\r\nX-Repo-Commit: ${COMMIT}\r\nETag: "../x\0y"\r\nContent-Length: 0\r\n\r\n`));
  process.env.HF_ENDPOINT = nul.url;
  await assert.rejects(hfHubDownload('owner/evil', 'nul.json', { progress: false }), /^Error: the answer is not valid HTTP \(HPE_[A-Z_]+\): cannot fetch http:\/\/127\.0\.0\.1:\d+\/owner\/evil\/resolve\/main\/nul\.json; download it by hand to /);
  await nul.close();
  assert.ok(requests.every((line) => line.startsWith('HEAD ')), `no file was fetched: ${requests.join(', ')}`);
  outsideUntouched();
  const repo = hfRepoCacheDir('owner/evil');
  assert.ok(!existsSync(join(repo, 'snapshots')), 'no snapshot link made');
  assert.deepEqual(existsSync(join(repo, 'blobs')) ? readdirSync(join(repo, 'blobs')) : [], []);
  rmSync(root, { recursive: true, force: true });
});

test('a refs/<revision> that is not a commit hash, or a link out of the cache, is an error offline and is replaced online', async () => {
  routes[`/owner/vae/resolve/main/config.json`] = hubFile(CONFIG, { ETag: `"${sha256(CONFIG)}"` });
  const repo = hfRepoCacheDir('owner/vae');
  const ref = join(repo, 'refs', 'main');
  mkdirSync(join(repo, 'refs'), { recursive: true });
  // From snapshots/, four `..` lead to root: the old reader would have served outside/config.json.
  for (const content of ['../../../../outside', `${COMMIT}/../../../../../outside`, outside, `${COMMIT}\0`, '', 'main']) {
    rmSync(ref, { force: true });
    writeFileSync(ref, content);
    await assert.rejects(hfHubDownload('owner/vae', 'config.json', { offline: true }),
      { message: `${ref}: holds ${JSON.stringify(content)}, not a commit hash (40 hex digits); remove it` });
    const path = await hfHubDownload('owner/vae', 'config.json', { progress: false });
    assert.equal(path, join(repo, 'snapshots', COMMIT, 'config.json'));
    assert.deepEqual(readFileSync(path), CONFIG);
    assert.equal(readFileSync(ref, 'utf8'), COMMIT, 'the ref is rewritten');
  }
  // A ref that is a link to a file outside: read, it is no commit; rewritten, the link is replaced, not followed.
  rmSync(ref);
  symlinkSync(join(outside, 'x'), ref);
  await assert.rejects(hfHubDownload('owner/vae', 'config.json', { offline: true }), new RegExp(`^Error: ${escape(ref)}: holds ".*", not a commit hash`));
  await hfHubDownload('owner/vae', 'config.json', { progress: false });
  assert.ok(lstatSync(ref).isFile());
  assert.equal(readFileSync(ref, 'utf8'), COMMIT);
  outsideUntouched();
  rmSync(root, { recursive: true, force: true });
});

test('a snapshot link that leads out of the repo\'s folder, or to no regular file, is refused offline and relinked online; a blob that is a link is fetched again', async () => {
  routes[`/owner/vae/resolve/${COMMIT}/config.json`] = hubFile(CONFIG, { ETag: `"${sha256(CONFIG)}"` });
  routes['/owner/vae/resolve/main/config.json'] = hubFile(CONFIG, { ETag: `"${sha256(CONFIG)}"` });
  const repo = hfRepoCacheDir('owner/vae');
  const pointer = join(repo, 'snapshots', COMMIT, 'config.json');
  mkdirSync(join(repo, 'blobs'), { recursive: true });
  const variants: Array<[string, RegExp]> = [
    [join(outside, 'config.json'), /leads out of the repo's cache folder, to .*\/outside\/config\.json; remove it$/],
    ['../../../../../outside/config.json', /leads out of the repo's cache folder, to .*\/outside\/config\.json; remove it$/],
    ['/dev/zero', /leads out of the repo's cache folder, to \/dev\/zero; remove it$/],
    ['../../blobs', /leads to .*\/blobs, not a regular file; remove it$/],
  ];
  for (const [target, problem] of variants) {
    rmSync(join(repo, 'snapshots'), { recursive: true, force: true });
    mkdirSync(join(repo, 'snapshots', COMMIT), { recursive: true });
    symlinkSync(target, pointer);
    await assert.rejects(hfHubDownload('owner/vae', 'config.json', { revision: COMMIT, offline: true }), (error: Error) => {
      assert.ok(error.message.startsWith(`${pointer}: `), error.message);
      assert.match(error.message, problem);
      return true;
    }, target);
    assert.equal(await hfHubDownload('owner/vae', 'config.json', { revision: COMMIT, progress: false }), pointer);
    assert.equal(readlinkSync(pointer), join('..', '..', 'blobs', sha256(CONFIG)), 'relinked to its blob');
    assert.deepEqual(readFileSync(pointer), CONFIG);
  }
  // A snapshot folder that is a link out: nothing is made through it.
  rmSync(join(repo, 'snapshots'), { recursive: true });
  mkdirSync(join(repo, 'snapshots'));
  symlinkSync(outside, join(repo, 'snapshots', COMMIT));
  await assert.rejects(hfHubDownload('owner/vae', 'config.json', { progress: false }),
    { message: `${pointer}: ${join(repo, 'snapshots', COMMIT)} leads to ${outside}, outside ${repo}; refused` });
  // A blob that is a link to a file outside is not taken for the blob: it is fetched and checked, and the link replaced.
  rmSync(join(repo, 'snapshots'), { recursive: true });
  rmSync(join(repo, 'blobs', sha256(CONFIG)));
  symlinkSync(join(outside, 'x'), join(repo, 'blobs', sha256(CONFIG)));
  assert.deepEqual(readFileSync(await hfHubDownload('owner/vae', 'config.json', { progress: false })), CONFIG);
  assert.ok(lstatSync(join(repo, 'blobs', sha256(CONFIG))).isFile());
  outsideUntouched();
  rmSync(root, { recursive: true, force: true });
});

test('revisions, file names and repo ids that could leave the cache are refused before any request; a nested revision (refs/pr/1) works', async () => {
  for (const revision of ['..', '../../../../outside', 'a/../b', '/abs', 'a\\b', 'x\0y', 'main.lock', 'a@{1}', 'a b', '.hidden', 'a/', 'a//b', '']) {
    await assert.rejects(hfHubDownload('owner/vae', 'config.json', { revision }), new RegExp(`^Error: --revision ${escape(JSON.stringify(revision))}: not a branch, tag or commit hash`), revision);
  }
  for (const filename of ['../config.json', 'vae/../../../../outside/x', '/etc/passwd', 'a\\..\\b', 'a//b', 'x\0', '', 'vae/.']) {
    await assert.rejects(hfHubDownload('owner/vae', filename), new RegExp(`^Error: file name ${escape(JSON.stringify(filename))}: part ".*": not a file name`), filename);
  }
  for (const repoId of ['a--b/c', 'a/b--c', 'a/.b', 'a/b.', '-a/b', 'a/b.git', 'a/b/c', 'a', `a/${'b'.repeat(97)}`, '../etc', 'a/..', 'a/b c']) {
    assert.equal(isHfRepoId(repoId), false, repoId);
    await assert.rejects(hfHubDownload(repoId, 'config.json'), { message: `${repoId}: not a Hugging Face repo id (owner/name)` });
  }
  for (const repoId of ['stabilityai/sd-vae-ft-ema', 'owner/vae', 'a_b/c.d', `a/${'b'.repeat(96)}`]) assert.equal(isHfRepoId(repoId), true, repoId);
  assert.deepEqual(requests, []);
  outsideUntouched();

  routes['/owner/vae/resolve/refs%2Fpr%2F1/config.json'] = hubFile(CONFIG, { ETag: `"${sha256(CONFIG)}"` });
  const path = await hfHubDownload('owner/vae', 'config.json', { revision: 'refs/pr/1', progress: false });
  assert.deepEqual(readFileSync(path), CONFIG);
  assert.equal(readFileSync(join(hfRepoCacheDir('owner/vae'), 'refs', 'refs', 'pr', '1'), 'utf8'), COMMIT);
  rmSync(root, { recursive: true, force: true });
});

test('a cache reached through a symlink (a ~/.cache on another disk) is not taken for a way out', async () => {
  mkdirSync(join(root, 'disk'));
  symlinkSync(join(root, 'disk'), join(root, 'hf'));
  routes['/owner/vae/resolve/main/config.json'] = hubFile(CONFIG, { ETag: `"${sha256(CONFIG)}"` });
  const path = await hfHubDownload('owner/vae', 'config.json', { progress: false });
  assert.deepEqual(readFileSync(path), CONFIG);
  process.env.HF_HUB_OFFLINE = '1';
  assert.equal(await hfHubDownload('owner/vae', 'config.json'), path);
  assert.deepEqual(readdirSync(join(root, 'disk', 'hub', 'models--owner--vae', 'blobs')), [sha256(CONFIG)]);
  rmSync(root, { recursive: true, force: true });
});

test('HF_TOKEN goes to the hub only: a renamed repo on the same host is followed with it, the CDN on another host gets none', async () => {
  process.env.HF_TOKEN = 'hf_secret';
  const port = new URL(base).port;
  routes['/owner/old/resolve/main/weights.bin'] = (_req, res) => { res.writeHead(307, { Location: '/owner/new/resolve/main/weights.bin' }); res.end(); };
  routes['/owner/new/resolve/main/weights.bin'] = (_req, res) => {
    res.writeHead(302, { Location: `http://localhost:${port}/cdn/weights`, 'X-Repo-Commit': COMMIT, 'X-Linked-Etag': `"${sha256(WEIGHTS)}"`, 'X-Linked-Size': String(WEIGHTS.length) });
    res.end();
  };
  routes['/cdn/weights'] = (_req, res) => { res.writeHead(200, { 'Content-Length': String(WEIGHTS.length) }); res.end(WEIGHTS); };
  assert.deepEqual(readFileSync(await hfHubDownload('owner/old', 'weights.bin', { progress: false })), WEIGHTS);
  const hub = seen.filter((request) => request.url.startsWith('/owner/'));
  const cdn = seen.filter((request) => request.url === '/cdn/weights');
  assert.ok(hub.length >= 3 && hub.every((request) => request.authorization === 'Bearer hf_secret'), JSON.stringify(hub));
  assert.ok(cdn.length === 1 && cdn[0]!.host.startsWith('localhost') && cdn[0]!.authorization === undefined, JSON.stringify(cdn));
  rmSync(root, { recursive: true, force: true });
});

test('torch hub: the cache file name is the asked URL\'s, never a redirect\'s or a Content-Disposition\'s, and must be one file name', async () => {
  routes['/files/asked.pth'] = (_req, res) => { res.writeHead(302, { Location: '/cdn/served.pth' }); res.end(); };
  routes['/cdn/served.pth'] = (_req, res) => {
    res.writeHead(200, { 'Content-Length': String(WEIGHTS.length), 'Content-Disposition': 'attachment; filename="../../../outside/evil.pth"' });
    res.end(WEIGHTS);
  };
  const checkpoints = join(root, 'torch', 'hub', 'checkpoints');
  assert.equal(await torchHubCheckpoint(`${base}/files/asked.pth`, { progress: false }), join(checkpoints, 'asked.pth'));
  assert.deepEqual(readdirSync(checkpoints), ['asked.pth']);
  await assert.rejects(torchHubCheckpoint(`${base}/`), { message: `${base}/: the cache file name "": not a file name (empty, . or .., over 200 bytes, or with /, \\ or a control character); refused` });
  await assert.rejects(torchHubCheckpoint(`${base}/files/asked.pth`, { fileName: '../../../outside/x' }), /: the cache file name "\.\.\/\.\.\/\.\.\/outside\/x": not a file name/);
  outsideUntouched();
  rmSync(root, { recursive: true, force: true });
});

test('a stalled download is given up after the timeout: a server that drips bytes, one that never answers, a hub whose HEAD never answers', { timeout: 30_000 }, async () => {
  const open = new Set<ServerResponse>();
  routes['/slow.pth'] = (req, res) => {
    // 10 bytes a second of a 100-byte file: never silent for long, far under 1 KiB per window.
    res.writeHead(200, { 'Content-Length': '100' });
    const timer = setInterval(() => res.write(Buffer.alloc(1)), 100);
    req.socket.on('close', () => clearInterval(timer));
  };
  routes['/silent.pth'] = (_req, res) => { open.add(res); };
  routes['/owner/silent/resolve/main/config.json'] = (_req, res) => { open.add(res); };
  const dest = join(root, 'out', 'file.pth');
  let start = Date.now();
  await assert.rejects(downloadFile(`${base}/slow.pth`, dest, { timeoutS: 0.3, progress: false }),
    new RegExp(`^Error: ${escape(base)}/slow\\.pth: the download stalled \\(under 1024 bytes in 0\\.3 s, after \\d+ bytes of 100\\); run again to retry, or raise REALS_DOWNLOAD_TIMEOUT_S$`));
  assert.ok(Date.now() - start < 5000, `given up after ${Date.now() - start} ms`);
  assert.deepEqual(readdirSync(join(root, 'out')), [], 'no temporary left');

  process.env.REALS_DOWNLOAD_TIMEOUT_S = '0.3';
  start = Date.now();
  await assert.rejects(downloadFile(`${base}/silent.pth`, dest, { progress: false }),
    { message: `no answer in 0.3 s (REALS_DOWNLOAD_TIMEOUT_S): cannot fetch ${base}/silent.pth; download it by hand to ${dest}` });
  await assert.rejects(hfHubDownload('owner/silent', 'config.json'), new RegExp(`^Error: no answer in 0\\.3 s \\(REALS_DOWNLOAD_TIMEOUT_S\\): cannot fetch ${escape(base)}/owner/silent/resolve/main/config\\.json`));
  assert.ok(Date.now() - start < 5000, `given up after ${Date.now() - start} ms`);
  process.env.REALS_DOWNLOAD_TIMEOUT_S = 'soon';
  await assert.rejects(downloadFile(`${base}/silent.pth`, dest), { message: "environment variable REALS_DOWNLOAD_TIMEOUT_S must be a number of seconds in [0.001, 86400], got 'soon'" });
  for (const res of open) res.destroy();
  rmSync(root, { recursive: true, force: true });
});

test('a body is read no further than its Content-Length, the published size or the cap; a larger announced size or an encoded body is refused before reading', { timeout: 60_000 }, async () => {
  const dest = join(root, 'out', 'file.pth');
  // Past its Content-Length: the bytes after it are never part of the file.
  const spill = await rawServer((socket) => {
    socket.write('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n');
    socket.write(Buffer.concat([WEIGHTS.subarray(0, 100), Buffer.alloc(100_000, 1)]));
  });
  await downloadFile(`${spill.url}/spill.pth`, dest, { progress: false });
  assert.deepEqual(readFileSync(dest), WEIGHTS.subarray(0, 100));
  await spill.close();

  // The hub publishes 100 bytes; the CDN sends without end, or announces 40 MiB.
  const stream = endless();
  routes['/cdn/endless'] = stream.handler;
  routes['/cdn/announced'] = (_req, res) => {
    res.writeHead(200, { 'Content-Length': String(40 * 2 ** 20) });
    res.write(Buffer.alloc(1 << 16));
  };
  for (const [name, cdn] of [['endless.bin', '/cdn/endless'], ['announced.bin', '/cdn/announced']] as const) {
    routes[`/owner/big/resolve/main/${name}`] = (_req, res) => {
      res.writeHead(302, { Location: `${base}${cdn}`, 'X-Repo-Commit': COMMIT, 'X-Linked-Etag': `"${'e'.repeat(64)}"`, 'X-Linked-Size': '100' });
      res.end();
    };
  }
  const url = `${base}/owner/big/resolve/main/endless.bin`;
  await assert.rejects(hfHubDownload('owner/big', 'endless.bin', { progress: false }),
    { message: `${url}: the body runs past 100 bytes (the size the hub publishes); stopped there, not kept` });
  const sent = await stream.sent;
  assert.ok(sent < 32 * 2 ** 20, `the server got to write ${sent} bytes before the connection closed`);
  await assert.rejects(hfHubDownload('owner/big', 'announced.bin', { progress: false }),
    { message: `${base}/owner/big/resolve/main/announced.bin: the server announces ${40 * 2 ** 20} bytes (Content-Length) where the hub publishes 100; not downloaded` });
  assert.deepEqual(readdirSync(join(hfRepoCacheDir('owner/big'), 'blobs')), [], 'nothing kept, no temporary left');

  // A declared cap, for hosts that publish no size.
  const capped = endless();
  routes['/cdn/endless'] = capped.handler;
  await assert.rejects(downloadFile(`${base}/cdn/endless`, dest, { maxBytes: 1000, progress: false }),
    { message: `${base}/cdn/endless: the body runs past 1000 bytes (this file's cap); stopped there, not kept` });
  assert.ok(await capped.sent < 32 * 2 ** 20);
  routes['/files/weights.pth'] = (_req, res) => { res.writeHead(200, { 'Content-Length': String(WEIGHTS.length) }); res.end(WEIGHTS); };
  await assert.rejects(downloadFile(`${base}/files/weights.pth`, dest, { maxBytes: 1000, progress: false }),
    { message: `${base}/files/weights.pth: 3000 bytes announced, over this file's cap of 1000; not downloaded` });

  // A size announced that the disk cannot hold is refused before the body is read.
  routes['/files/huge.pth'] = (_req, res) => { res.writeHead(200, { 'Content-Length': '900000000000000' }); res.write(Buffer.alloc(1 << 16)); };
  await assert.rejects(downloadFile(`${base}/files/huge.pth`, dest, { progress: false }),
    new RegExp(`^Error: ${escape(base)}/files/huge\\.pth: 900000000000000 bytes do not fit in the \\d+ bytes free in ${escape(join(root, 'out'))}; not downloaded$`));

  // gzip asked not to be sent: its Content-Length counts compressed bytes and bounds nothing.
  const bomb = gzipSync(Buffer.alloc(8 * 2 ** 20));
  routes['/files/bomb.pth'] = (_req, res) => { res.writeHead(200, { 'Content-Length': String(bomb.length), 'Content-Encoding': 'gzip' }); res.end(bomb); };
  await assert.rejects(downloadFile(`${base}/files/bomb.pth`, dest, { progress: false }),
    { message: `${base}/files/bomb.pth: the server answers Content-Encoding "gzip" where identity was asked for; not downloaded` });
  assert.deepEqual(readdirSync(join(root, 'out')), ['file.pth'], 'only the first download was kept');
  rmSync(root, { recursive: true, force: true });
});

test('a download first removes the .incomplete-<pid> files of processes that are gone, and keeps those of live ones', async () => {
  const dead = spawn('true');
  await new Promise((resolve) => dead.once('exit', resolve));
  const running = spawn('sleep', ['30']);
  const checkpoints = join(root, 'torch', 'hub', 'checkpoints');
  const blobs = join(hfRepoCacheDir('owner/vae'), 'blobs');
  mkdirSync(checkpoints, { recursive: true });
  mkdirSync(blobs, { recursive: true });
  const stale = [join(checkpoints, `other.pth.incomplete-${dead.pid}`), join(blobs, `${'f'.repeat(64)}.incomplete-${dead.pid}`)];
  const kept = [join(checkpoints, `live.pth.incomplete-${running.pid}`), join(checkpoints, `other.pth.tmp-${dead.pid}`)];
  for (const path of [...stale, ...kept]) writeFileSync(path, 'partial');
  routes['/files/weights.pth'] = (_req, res) => { res.writeHead(200, { 'Content-Length': String(WEIGHTS.length) }); res.end(WEIGHTS); };
  routes['/owner/vae/resolve/main/config.json'] = hubFile(CONFIG, { ETag: `"${sha256(CONFIG)}"` });
  await torchHubCheckpoint(`${base}/files/weights.pth`, { progress: false });
  await hfHubDownload('owner/vae', 'config.json', { progress: false });
  for (const path of stale) assert.ok(!existsSync(path), `${path} removed`);
  for (const path of kept) assert.ok(existsSync(path), `${path} kept (a live process's, or not a download's)`);
  running.kill();
  rmSync(root, { recursive: true, force: true });
});
