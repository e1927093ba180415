// `reals serve` under bad requests and hostile folders: it answers each with a status and keeps
// serving. Requests go over raw sockets, so that the method, path and Host are exactly the ones
// a hostile page or client would send.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serveStatic } from '../../src/web/site.js';

interface Reply { status: number; headers: Record<string, string>; body: string }

/** One HTTP/1.1 request over a fresh socket, as written; `host: null` sends no Host header. */
function send(port: number, options: { method?: string; path?: string; host?: string | null; version?: string } = {}): Promise<Reply> {
  const { method = 'GET', path = '/', host = `127.0.0.1:${port}`, version = '1.1' } = options;
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    socket.setTimeout(5000, () => socket.destroy(new Error(`${method} ${path}: no answer in 5 s`)));
    socket.on('data', (chunk) => chunks.push(chunk));
    socket.on('error', reject);
    socket.on('close', () => {
      const text = Buffer.concat(chunks).toString('latin1');
      const [head = '', body = ''] = text.split('\r\n\r\n', 2);
      const [statusLine = '', ...lines] = head.split('\r\n');
      const status = Number(/^HTTP\/1\.\d (\d{3})/.exec(statusLine)?.[1] ?? NaN);
      const headers = Object.fromEntries(lines.map((line) => [line.slice(0, line.indexOf(':')).toLowerCase(), line.slice(line.indexOf(':') + 1).trim()]));
      resolve({ status, headers, body });
    });
    socket.write(`${method} ${path} HTTP/${version}\r\n${host === null ? '' : `Host: ${host}\r\n`}Connection: close\r\n\r\n`);
  });
}

async function withServer(fn: (root: string, port: number, outside: string) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'reals-serve-'));
  const root = join(dir, 'site');
  const outside = join(dir, 'outside');
  mkdirSync(join(root, 'models'), { recursive: true });
  mkdirSync(outside);
  writeFileSync(join(root, 'index.html'), '<!doctype html><title>page</title>');
  writeFileSync(join(root, 'app.js'), 'console.log(1);');
  writeFileSync(join(root, 'models', 'model.json'), '{}');
  writeFileSync(join(outside, 'secret.txt'), 'secret');
  const { server } = await serveStatic(root, { port: 0 });
  const address = server.address();
  try {
    await fn(root, typeof address === 'object' && address !== null ? address.port : 0, outside);
    assert.equal((await send(typeof address === 'object' && address !== null ? address.port : 0)).status, 200, 'the server still serves the page');
  } finally {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

test('files are served with nosniff, a CSP and their type; HEAD has the headers and no body', { timeout: 30_000 }, () => withServer(async (_root, port) => {
  const page = await send(port);
  assert.equal(page.status, 200);
  assert.equal(page.body, '<!doctype html><title>page</title>');
  assert.equal(page.headers['content-type'], 'text/html; charset=utf-8');
  assert.equal(page.headers['x-content-type-options'], 'nosniff');
  assert.match(page.headers['content-security-policy']!, /default-src 'none'; script-src 'self' 'wasm-unsafe-eval';.* frame-ancestors 'none'/);
  const head = await send(port, { method: 'HEAD', path: '/app.js' });
  assert.deepEqual([head.status, head.headers['content-type'], head.headers['content-length'], head.body], [200, 'text/javascript', '15', '']);
  assert.equal((await send(port, { path: '/models/model.json' })).body, '{}');
}));

test('methods other than GET and HEAD get 405 with Allow', { timeout: 30_000 }, () => withServer(async (_root, port) => {
  for (const method of ['POST', 'PUT', 'DELETE', 'OPTIONS', 'PATCH', 'TRACE', 'PROPFIND']) {
    const reply = await send(port, { method, path: '/index.html' });
    assert.deepEqual([reply.status, reply.headers.allow], [405, 'GET, HEAD'], method);
  }
}));

test('malformed paths get 400 and the server goes on', { timeout: 30_000 }, () => withServer(async (_root, port) => {
  for (const path of ['/%', '/%zz', '/%E0%A4%A', '/%C0%AF', '/app.js%00', '/%00/index.html']) {
    assert.equal((await send(port, { path })).status, 400, path);
  }
}));

test('a Host other than the bound address is refused (DNS rebinding); the loopback names at the port are served', { timeout: 30_000 }, () => withServer(async (_root, port) => {
  for (const host of [`127.0.0.1:${port}`, `localhost:${port}`, `LOCALHOST:${port}`, `[::1]:${port}`]) {
    assert.equal((await send(port, { host })).status, 200, host);
  }
  for (const host of [`evil.example:${port}`, 'evil.example', `127.0.0.1:${port + 1}`, '127.0.0.1', `localhost.evil.example:${port}`, `127.0.0.1:${port}@evil`, '', null]) {
    assert.equal((await send(port, { host, version: host === null ? '1.0' : '1.1' })).status, 403, `Host ${JSON.stringify(host)}`);
  }
}));

test('paths and links that lead out of the folder, FIFOs and devices are not served', { timeout: 30_000 }, () => withServer(async (root, port, outside) => {
  symlinkSync(join(outside, 'secret.txt'), join(root, 'secret.txt'));
  symlinkSync(outside, join(root, 'out'));
  symlinkSync('/dev/zero', join(root, 'zero.js'));
  symlinkSync('/etc', join(root, 'etc'));
  symlinkSync(join(root, 'app.js'), join(root, 'inside.js'));
  execFileSync('mkfifo', [join(root, 'fifo.js')]);
  for (const path of ['/secret.txt', '/out/secret.txt', '/zero.js', '/etc/passwd', '/fifo.js', '/models', '/../outside/secret.txt', '/%2e%2e/outside/secret.txt', '/models/%2e%2e%2f%2e%2e/outside/secret.txt', '/nothing']) {
    const reply = await send(port, { path });
    assert.equal(reply.status, 404, path);
    assert.doesNotMatch(reply.body, /secret/, path);
  }
  assert.equal((await send(port, { path: '/inside.js' })).body, 'console.log(1);', 'a link that stays inside the folder is followed');
}));

test('a file that cannot be opened, or is removed while it is requested, does not stop the server', { timeout: 60_000 }, () => withServer(async (root, port) => {
  const locked = join(root, 'locked.js');
  writeFileSync(locked, 'x');
  chmodSync(locked, 0);
  // root reads it regardless of its mode; others get 404.
  assert.equal((await send(port, { path: '/locked.js' })).status, process.getuid?.() === 0 ? 200 : 404);
  // Files appear and vanish while they are requested: every answer is a 200 or a 404.
  const churn = join(root, 'churn.js');
  let running = true;
  const toggler = (async () => {
    for (let i = 0; running; i++) {
      if (i % 2 === 0) writeFileSync(churn, 'y'.repeat(1 << 16));
      else unlinkSync(churn);
      await new Promise((done) => setImmediate(done));
    }
  })();
  const statuses = new Set<number>();
  for (let round = 0; round < 40; round++) {
    for (const reply of await Promise.all(Array.from({ length: 5 }, () => send(port, { path: '/churn.js' })))) statuses.add(reply.status);
  }
  running = false;
  await toggler;
  assert.deepEqual([...statuses].filter((s) => s !== 200 && s !== 404), []);
}));
