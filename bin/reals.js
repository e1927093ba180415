#!/usr/bin/env node
// The `reals` command. In a checkout (src/ present) it runs the TypeScript sources through tsx, so
// that an edit needs no build; an installed package runs its compiled dist/.
import { existsSync } from 'node:fs';

const sources = new URL('../src/cli/main.ts', import.meta.url);
let main;
if (existsSync(sources)) {
  const { register } = await import('tsx/esm/api');
  register();
  ({ main } = await import(sources.href));
} else {
  ({ main } = await import(new URL('../dist/cli/main.js', import.meta.url).href));
}
await main(process.argv);
