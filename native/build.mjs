// Builds native/build/reals.node against libtorch, found as the Rust crate tch does:
// LIBTORCH (a libtorch folder, CPU or CUDA), else LIBTORCH_USE_PYTORCH=1 (python's torch),
// else Debian's libtorch-dev under /usr. Sources compile in parallel; a source is rebuilt only
// when it, a header of ours, or the chosen libtorch changed.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, statSync, writeFileSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cpus } from 'node:os';

const here = dirname(fileURLToPath(import.meta.url));

/** What to do about a missing prerequisite, as one message (this runs as the package's install step). */
function fail(message) {
  console.error(message);
  process.exit(1);
}
const outDir = process.env.REALS_NATIVE_BUILD_DIR ?? join(here, 'build');

function findLibtorch() {
  if (process.env.LIBTORCH) {
    const root = process.env.LIBTORCH;
    if (!existsSync(join(root, 'include/torch/csrc/api/include/torch/torch.h')) || !existsSync(join(root, 'lib'))) {
      fail(`reals: LIBTORCH=${root} is not a libtorch folder (it needs include/torch/csrc/api/include/torch/torch.h and lib/); unpack a libtorch zip there, or unset LIBTORCH`);
    }
    return {
      source: `LIBTORCH=${root}`,
      include: [join(root, 'include'), join(root, 'include/torch/csrc/api/include')],
      lib: join(root, 'lib'),
    };
  }
  if (process.env.LIBTORCH_USE_PYTORCH === '1') {
    const python = process.env.PYTHON ?? 'python3';
    // CUDA builds also need the CUDA toolkit's headers (cuda_runtime.h) beside torch's.
    const script =
      'import torch, torch.utils.cpp_extension as e, json, os; ' +
      'cuda = [os.path.join(e.CUDA_HOME, d) for d in ("include", "targets/x86_64-linux/include")] if e.CUDA_HOME else []; ' +
      'print(json.dumps({"include": e.include_paths() + [d for d in cuda if os.path.isdir(d)], ' +
      '"lib": e.library_paths()[0], "abi": int(torch._C._GLIBCXX_USE_CXX11_ABI)}))';
    const info = JSON.parse(execFileSync(python, ['-c', script], { encoding: 'utf8' }));
    return { source: `LIBTORCH_USE_PYTORCH=1 (${python})`, include: info.include, lib: info.lib, abi: info.abi };
  }
  if (existsSync('/usr/include/torch/csrc/api/include/torch/torch.h')) {
    return {
      source: "Debian's libtorch-dev",
      include: ['/usr/include', '/usr/include/torch/csrc/api/include'],
      lib: '/usr/lib/x86_64-linux-gnu',
    };
  }
  fail(
    'reals: libtorch not found, so the addon cannot be built. Install Debian 12\'s packages ' +
      '(apt-get install libtorch-dev libgloo-dev libopenblas0-pthread g++), or set LIBTORCH to an unpacked libtorch folder ' +
      '(LIBTORCH=/opt/libtorch, with include/ and lib/), or LIBTORCH_USE_PYTORCH=1 to use python3\'s torch; then run `npm rebuild reals`.',
  );
}

function nodeInclude() {
  const candidates = [
    process.env.NODE_INCLUDE,
    join(dirname(process.execPath), '../include/node'),
    '/usr/include/node',
  ].filter(Boolean);
  const found = candidates.find((dir) => existsSync(join(dir, 'node_api.h')));
  if (!found) fail(`reals: node_api.h (Node's headers) not found in ${candidates.join(', ')}: install Node with its headers (Debian's nodejs package has them), or set NODE_INCLUDE to the folder that holds it`);
  return found;
}

const torch = findLibtorch();
const libs = readdirSync(torch.lib);
const hasCuda = libs.some((f) => f.startsWith('libtorch_cuda'));
const linkLibs = ['c10', 'torch_cpu', 'torch'];
// Gloo's headers come with Debian's libgloo-dev, not with pip's torch: without them the addon
// offers NCCL only (CUDA builds) and says so when gloo is asked for.
const hasGloo = [...torch.include, '/usr/include'].some((dir) => existsSync(join(dir, 'gloo/config.h')));
if (hasCuda) linkLibs.push('torch_cuda', 'c10_cuda');

const flags = [
  '-std=c++17', '-O2', '-fPIC', '-Wall', '-Wno-unused-parameter', '-Wno-unknown-pragmas', '-Wno-psabi',
  '-DNAPI_EXPERIMENTAL', '-DUSE_DISTRIBUTED', ...(hasGloo ? ['-DUSE_C10D_GLOO'] : []),
  ...(hasCuda ? ['-DREALS_CUDA', '-DUSE_C10D_NCCL'] : []),
  ...(torch.abi !== undefined ? [`-D_GLIBCXX_USE_CXX11_ABI=${torch.abi}`] : []),
  `-I${nodeInclude()}`,
  ...torch.include.map((dir) => `-I${dir}`),
];
const linkFlags = [
  '-shared', `-L${torch.lib}`, `-Wl,-rpath,${torch.lib}`, '-Wl,--no-as-needed',
  ...linkLibs.map((l) => `-l${l}`),
];

mkdirSync(outDir, { recursive: true });
const srcDir = join(here, 'src');
const sources = readdirSync(srcDir).filter((f) => f.endsWith('.cc'));
const headers = readdirSync(srcDir).filter((f) => f.endsWith('.h'));
const stamp = JSON.stringify({ torch, flags, linkFlags });
const stampFile = join(outDir, 'config.json');
const configChanged = !existsSync(stampFile) || readFileSync(stampFile, 'utf8') !== stamp;
const newestHeader = Math.max(0, ...headers.map((h) => statSync(join(srcDir, h)).mtimeMs));

function run(cmd, args) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: 'inherit' });
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`${cmd} exited with ${code}`))));
  });
}

console.log(`reals native: libtorch from ${torch.source}${hasCuda ? ' (CUDA)' : ' (CPU)'}`);
const objects = sources.map((s) => join(outDir, s.replace(/\.cc$/, '.o')));
const stale = sources.filter((s, i) => {
  const obj = objects[i];
  if (configChanged || !existsSync(obj)) return true;
  const objTime = statSync(obj).mtimeMs;
  return statSync(join(srcDir, s)).mtimeMs > objTime || newestHeader > objTime;
});
const jobs = Math.max(1, Math.min(cpus().length, Number(process.env.JOBS ?? cpus().length)));
const started = Date.now();
const seconds = (since) => ((Date.now() - since) / 1000).toFixed(0);
// npm shows this only with --foreground-scripts; a whole build takes minutes (README: As a package).
if (stale.length > 0) console.log(`reals native: compiling ${stale.length} of ${sources.length} sources, ${jobs} at a time (about 3 minutes on 2 cores)`);
const queue = [...stale];
let done = 0;
await Promise.all(
  Array.from({ length: jobs }, async () => {
    for (let s = queue.shift(); s; s = queue.shift()) {
      const fileStarted = Date.now();
      await run('g++', [...flags, '-c', join(srcDir, s), '-o', join(outDir, s.replace(/\.cc$/, '.o'))]);
      console.log(`  [${++done}/${stale.length}] ${s} (${seconds(fileStarted)} s)`);
    }
  }),
);
const target = join(outDir, 'reals.node');
if (stale.length > 0 || !existsSync(target)) {
  const linkStarted = Date.now();
  await run('g++', [...objects, ...linkFlags, '-o', target]);
  console.log(`  linked reals.node (${seconds(linkStarted)} s)`);
}
writeFileSync(stampFile, stamp);
const total = (Date.now() - started) / 1000;
console.log(stale.length > 0 ? `reals native: built ${target} in ${Math.floor(total / 60)} min ${(total % 60).toFixed(0)} s` : `reals native: ${target} is up to date`);
