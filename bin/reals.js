#!/usr/bin/env node
// The `reals` command. An installed package runs its compiled dist/. In a checkout (src/ present)
// it runs dist/ too when `npm run build` wrote it after the last edit (every src/**/*.ts older
// than its dist/**/*.js), since compiling the sources through tsx at each start takes seconds;
// otherwise it runs the TypeScript sources through tsx, so that an edit needs no build.
import { existsSync, readdirSync, statSync } from 'node:fs';

const sources = new URL('../src/', import.meta.url);
const compiled = new URL('../dist/', import.meta.url);

/** Whether every .ts under `dir` (relative to src/) has its .js in dist/ written after it. */
function compiledIsFresh(dir = '') {
  for (const entry of readdirSync(new URL(dir, sources), { withFileTypes: true })) {
    const path = `${dir}${entry.name}`;
    if (entry.isDirectory()) {
      if (!compiledIsFresh(`${path}/`)) return false;
    } else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts')) {
      const js = new URL(path.replace(/\.ts$/, '.js'), compiled);
      if (!existsSync(js) || statSync(js).mtimeMs < statSync(new URL(path, sources)).mtimeMs) return false;
    }
  }
  return true;
}

let main;
if (existsSync(sources) && !compiledIsFresh()) {
  const { register } = await import('tsx/esm/api');
  register();
  ({ main } = await import(new URL('cli/main.ts', sources).href));
} else {
  ({ main } = await import(new URL('cli/main.js', compiled).href));
}
await main(process.argv);
