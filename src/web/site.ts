// The static site of `reals export web` (index.html, app.js, onnxruntime-web's files, the models
// folder of `reals export onnx`) and `reals serve`, a static server on 127.0.0.1 for it.
import { createHash } from 'node:crypto';
import { constants, copyFileSync, existsSync, mkdirSync, realpathSync, statSync, writeFileSync } from 'node:fs';
import { open, realpath, type FileHandle } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { isIP } from 'node:net';
import { createRequire } from 'node:module';
import { dirname, extname, join, normalize, sep } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';

/** onnxruntime-web's files the page loads: the WebGPU bundle (which falls back to wasm) and its wasm binary. */
const ORT_FILES = ['ort.webgpu.bundle.min.mjs', 'ort-wasm-simd-threaded.asyncify.mjs', 'ort-wasm-simd-threaded.asyncify.wasm'];

const PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>reals: sample in the browser</title>
<link rel="icon" href="data:,">
<style>
  body { font: 15px/1.4 system-ui, sans-serif; margin: 2em; max-width: 56em; }
  label { display: inline-block; margin: 0 1em 0.5em 0; }
  input { width: 5em; }
  canvas { width: 256px; height: 256px; image-rendering: pixelated; border: 1px solid #ccc; margin-right: 1em; }
  #backend, #progress { color: #555; }
</style>
</head>
<body>
<h1>Sample a ReaLS latent space in the browser</h1>
<p id="backend">loading the models…</p>
<p>
  <label>class <select id="class"></select></label>
  <label>CFG scale <input id="cfg" type="number" step="0.1" min="1" value="4"></label>
  <label>guidance interval <input id="low" type="number" step="0.05" min="0" max="1" value="0"> to <input id="high" type="number" step="0.05" min="0" max="1" value="1"></label>
  <label>steps <input id="steps" type="number" min="2" value="50"></label>
  <label>sampler <select id="sampler"><option value="heun2">Heun</option><option value="euler">Euler</option></select></label>
  <label>seed <input id="seed" type="number" min="0" value="0"></label>
  <button id="generate">generate</button>
</p>
<p id="progress"></p>
<canvas id="image"></canvas><canvas id="overlay"></canvas>
<p>Left: the decoded sample. Right: the segmentation read out of its latents by the alignment MLPs and a linear head (when the export has one).</p>
<script type="module" src="app.js"></script>
</body>
</html>
`;

/** The page's script: dist/web/app.js in an installed package (bundled by `npm run build`), else bundled now from src/web/page.ts. */
async function writeApp(out: string): Promise<void> {
  const here = dirname(fileURLToPath(import.meta.url));
  const built = join(here, 'app.js');
  if (existsSync(built)) {
    copyFileSync(built, out);
    return;
  }
  const esbuild = await import('esbuild');
  await esbuild.build({ entryPoints: [join(here, 'page.ts')], bundle: true, format: 'esm', platform: 'browser', outfile: out, external: ['./ort/*'], logLevel: 'silent' });
}

function ortDist(): string {
  try {
    return dirname(createRequire(import.meta.url).resolve('onnxruntime-web'));
  } catch (error) {
    throw new Error('reals export web needs the onnxruntime-web package for the page: npm install onnxruntime-web', { cause: error });
  }
}

/** Writes index.html, app.js and ort/ into `out`; the models go to `out`/models (written by the caller). */
export async function writeWebSite(out: string): Promise<string[]> {
  const dist = ortDist();
  mkdirSync(join(out, 'ort'), { recursive: true });
  for (const file of ORT_FILES) copyFileSync(join(dist, file), join(out, 'ort', file));
  writeFileSync(join(out, 'index.html'), PAGE);
  await writeApp(join(out, 'app.js'));
  return ['index.html', 'app.js', ...ORT_FILES.map((f) => `ort/${f}`)];
}

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.mjs': 'text/javascript', '.json': 'application/json',
  '.wasm': 'application/wasm', '.onnx': 'application/octet-stream', '.png': 'image/png', '.css': 'text/css',
};

/**
 * What the page needs and nothing more: its own scripts and workers, onnxruntime-web's wasm
 * compiled from its own files ('wasm-unsafe-eval'), fetches of its own models, the inline <style>
 * by hash, the data: favicon; no frames, forms or plugins.
 */
function contentSecurityPolicy(): string {
  const style = /<style>([^]*?)<\/style>/.exec(PAGE)![1]!;
  return [
    "default-src 'none'", "script-src 'self' 'wasm-unsafe-eval'", "worker-src 'self'", "connect-src 'self'",
    `style-src 'sha256-${createHash('sha256').update(style).digest('base64')}'`, "img-src 'self' data:",
    "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'",
  ].join('; ');
}

/**
 * The Host headers a request may carry: the loopback names and the bound host at the bound port.
 * Any other name may be a DNS-rebinding page whose domain now resolves to 127.0.0.1. Bound to every
 * interface, any IP literal is accepted too (rebinding needs a domain name).
 */
function hostAllowed(hostHeader: string | undefined, boundHost: string, port: number): boolean {
  if (hostHeader === undefined) return false;
  const match = /^(\[[0-9a-f:.]+\]|[^:\[\]]+):(\d+)$/i.exec(hostHeader.trim());
  if (match === null || Number(match[2]) !== port) return false;
  const name = match[1]!.toLowerCase();
  const bound = isIP(boundHost) === 6 ? `[${boundHost.toLowerCase()}]` : boundHost.toLowerCase();
  if (['127.0.0.1', 'localhost', '[::1]', bound].includes(name)) return true;
  return (boundHost === '0.0.0.0' || boundHost === '::') && isIP(name.replace(/^\[(.*)\]$/, '$1')) !== 0;
}

/** The regular file under `base` (its real path) that `urlPath` names, or null: outside it, through a link out of it, or not a regular file. */
async function openServedFile(base: string, urlPath: string): Promise<{ handle: FileHandle; size: number; type: string } | null> {
  const file = normalize(join(base, urlPath.endsWith('/') ? `${urlPath}index.html` : urlPath));
  if (!(file === base || file.startsWith(base + sep))) return null;
  let real: string;
  try {
    real = await realpath(file);
  } catch {
    return null;
  }
  if (!real.startsWith(base + sep)) return null;
  let handle: FileHandle;
  try {
    // O_NONBLOCK: a FIFO in the folder opens at once (and is refused below) instead of blocking.
    handle = await open(real, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch {
    return null;
  }
  const stats = await handle.stat().catch(() => null);
  if (stats === null || !stats.isFile()) {
    await handle.close();
    return null;
  }
  return { handle, size: stats.size, type: TYPES[extname(real)] ?? 'application/octet-stream' };
}

/**
 * Serves the files under `root` on host:port (port 0: any free one); resolves once listening.
 * GET and HEAD only; links that lead out of `root` are not followed; a request with a Host other
 * than the bound address is refused (DNS rebinding); no request, however malformed, and no file,
 * however it fails to read, stops the server.
 */
export async function serveStatic(root: string, options: { port?: number; host?: string } = {}): Promise<{ server: Server; url: string }> {
  if (!existsSync(root) || !statSync(root).isDirectory()) throw new Error(`${root}: not a folder (write one with reals export web)`);
  const base = realpathSync(root);
  const host = options.host ?? '127.0.0.1';
  const headers = { 'x-content-type-options': 'nosniff', 'content-security-policy': contentSecurityPolicy(), 'referrer-policy': 'no-referrer' };
  let port = options.port ?? 8000;
  const reply = (response: ServerResponse, status: number, text: string, extra: Record<string, string> = {}): void => {
    response.writeHead(status, { ...headers, ...extra, 'content-type': 'text/plain; charset=utf-8' }).end(text);
  };
  const handle = async (request: IncomingMessage, response: ServerResponse): Promise<void> => {
    if (request.method !== 'GET' && request.method !== 'HEAD') return reply(response, 405, 'method not allowed', { allow: 'GET, HEAD' });
    if (!hostAllowed(request.headers.host, host, port)) return reply(response, 403, 'forbidden host');
    let path: string;
    try {
      path = decodeURIComponent(new URL(request.url ?? '/', 'http://x').pathname);
    } catch {
      return reply(response, 400, 'bad request path');
    }
    if (path.includes('\0')) return reply(response, 400, 'bad request path');
    const file = await openServedFile(base, path);
    if (file === null) return reply(response, 404, 'not found');
    try {
      response.writeHead(200, { ...headers, 'content-type': file.type, 'content-length': file.size, 'cache-control': 'no-cache' });
      if (request.method === 'HEAD' || file.size === 0) {
        response.end();
        return;
      }
      // Read what fstat saw: a file that grows meanwhile does not outrun its content-length.
      await pipeline(file.handle.createReadStream({ start: 0, end: file.size - 1, autoClose: false }), response);
    } finally {
      await file.handle.close();
    }
  };
  const server = createServer((request, response) => {
    handle(request, response).catch(() => {
      // A read that failed half way: the client sees a cut response, the server goes on.
      if (response.headersSent) response.destroy();
      else reply(response, 500, 'cannot read the file');
    });
  });
  await new Promise<void>((done, fail) => {
    server.once('error', (error: NodeJS.ErrnoException) => fail(new Error(`reals serve: cannot listen on ${host}:${port} (${error.code ?? error.message})`)));
    server.listen(port, host, done);
  });
  // After listening, an error (EMFILE on accept) is one connection's, not the server's end.
  server.on('error', (error) => process.emitWarning(`reals serve: ${error.message}`));
  const address = server.address();
  if (typeof address === 'object' && address !== null) port = address.port;
  return { server, url: `http://${isIP(host) === 6 ? `[${host}]` : host}:${port}/` };
}
