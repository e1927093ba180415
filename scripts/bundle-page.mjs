// `npm run build`'s second step: the web page's script (src/web/page.ts with the shared sampler
// and noise) bundled into dist/web/app.js, which `reals export web` copies in an installed package.
import { build } from 'esbuild';

await build({
  entryPoints: ['src/web/page.ts'], bundle: true, format: 'esm', platform: 'browser', outfile: 'dist/web/app.js',
  external: ['./ort/*'], logLevel: 'warning',
});
