#!/usr/bin/env bash
# reals as another project gets it: pack the tarball, install it into a new project (its install
# step builds the addon against the libtorch it finds), import it under plain node, run a tiny
# forward through the public entries, type-check a TypeScript user of them, and run `npx reals --help`.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tarball=$(npm pack --silent --pack-destination "$work" | tail -1)
for path in $(tar -tzf "$work/$tarball"); do
  case "$path" in package/test/*|package/bench/*|package/src/*|package/native/build/*) echo "package-test: $path must not be in the tarball" >&2; exit 1;; esac
done
mkdir "$work/app"
cd "$work/app"
npm init -y > /dev/null
npm install --no-audit --no-fund --prefer-offline "$work/$tarball" > install.log 2>&1 || { cat install.log >&2; exit 1; }

cat > use.mjs <<'JS'
import assert from 'node:assert/strict';
import { AutoencoderKL, SiT, torch, runSample } from 'reals';
import { Linear } from 'reals/nn';
import { createTransport } from 'reals/diffusion';
import { frechetDistance } from 'reals/eval';
import { trainGenerator } from 'reals/train';
import { DINOV2_CONFIGS } from 'reals/models';
torch.manualSeed(0);
const sit = new SiT({ depth: 1, hiddenSize: 32, patchSize: 2, numHeads: 2, inputSize: 8, inChannels: 4, numClasses: 3 }).eval();
const out = torch.noGrad(() => sit.forward(torch.randn([2, 4, 8, 8]), torch.tensor([0.5, 0.25]), torch.tensor([0, 2], { dtype: 'int64' })));
assert.deepEqual(out.shape, [2, 4, 8, 8]); // learnSigma: SiT returns the mean half, as upstream
const vae = new AutoencoderKL({ blockOutChannels: [8, 16], downBlockTypes: ['DownEncoderBlock2D', 'DownEncoderBlock2D'],
  upBlockTypes: ['UpDecoderBlock2D', 'UpDecoderBlock2D'], layersPerBlock: 1, normNumGroups: 4, latentChannels: 4 }).eval();
const z = torch.noGrad(() => vae.encode(torch.randn([1, 3, 16, 16])).mode());
assert.deepEqual(z.shape, [1, 4, 8, 8]);
assert.deepEqual(new Linear(3, 2).forward(torch.ones([1, 3])).shape, [1, 2]);
for (const f of [createTransport, frechetDistance, trainGenerator, runSample]) assert.equal(typeof f, 'function');
assert.ok(DINOV2_CONFIGS.dinov2_vitb14);
console.log(`reals from plain node: SiT out [${out.shape}], VAE latent [${z.shape}]`);
JS
node use.mjs

cat > use.ts <<'TS'
import { SiT, torch, type AlignTrainRunOptions, type SiTConfig } from 'reals';
import type { Tensor } from 'reals/torch';
const config: SiTConfig = { depth: 1, hiddenSize: 32, patchSize: 2, numHeads: 2 };
const model: SiT = new SiT(config);
const x: Tensor = torch.randn([1, 4, 32, 32]);
const options: AlignTrainRunOptions = { dataPath: 'images/', dinoCkpt: 'dinov2_vitb14_pretrain.pth', batchSize: 8 };
export { model, x, options };
TS
# Only what the install brought: reals' .d.ts need Node's types, which it depends on (@types/node).
"$repo/node_modules/.bin/tsc" --noEmit --strict --module nodenext --moduleResolution nodenext use.ts

npx --no-install reals --help | grep -q '^Usage: reals' || { echo 'package-test: `npx reals --help` did not print the usage' >&2; exit 1; }
echo "package-test: $tarball installs, imports under plain node, type-checks, and runs \`npx reals --help\`"
