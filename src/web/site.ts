// The static site of `reals export web` (index.html, app.js, onnxruntime-web's files, the models
// folder of `reals export onnx`) and `reals serve`, a static server on 127.0.0.1 for it.
import { copyFileSync, createReadStream, existsSync, mkdirSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { createRequire } from 'node:module';
import { dirname, extname, join, normalize, resolve, sep } from 'node:path';
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

/** Serves the files under `root` on host:port (port 0: any free one); resolves once listening. */
export async function serveStatic(root: string, options: { port?: number; host?: string } = {}): Promise<{ server: Server; url: string }> {
  const base = resolve(root);
  if (!existsSync(base) || !statSync(base).isDirectory()) throw new Error(`${root}: not a folder (write one with reals export web)`);
  const host = options.host ?? '127.0.0.1';
  const server = createServer((request, response) => {
    const path = decodeURIComponent(new URL(request.url ?? '/', 'http://x').pathname);
    const file = normalize(join(base, path.endsWith('/') ? `${path}index.html` : path));
    if (!(file === base || file.startsWith(base + sep)) || !existsSync(file) || !statSync(file).isFile()) {
      response.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
      return;
    }
    response.writeHead(200, { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream', 'cache-control': 'no-cache' });
    createReadStream(file).pipe(response);
  });
  await new Promise<void>((done, fail) => {
    server.once('error', (error: NodeJS.ErrnoException) => fail(new Error(`reals serve: cannot listen on ${host}:${options.port ?? 8000} (${error.code ?? error.message})`)));
    server.listen(options.port ?? 8000, host, done);
  });
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : options.port;
  return { server, url: `http://${host}:${port}/` };
}
