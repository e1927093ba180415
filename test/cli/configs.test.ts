// The configs the package ships (configs/): each loads with the reader of the flag it is for
// (--vae-config, --dino-model, --model) and builds its model; the grid is complete, and the small
// and base sizes are the published architectures.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as torch from '../../src/torch/index.js';
import { AUTOENCODER_KL_CONFIGS, AutoencoderKL, resolveVaeConfig } from '../../src/models/autoencoder-kl.js';
import { DINOV2_CONFIGS, DinoVisionTransformer, resolveDinoConfig } from '../../src/models/dinov2.js';
import { SIT_CONFIGS } from '../../src/models/sit.js';
import { resolveGeneratorSpec } from '../../src/pipelines/generator.js';
import { buildGenerator, tokenWidthWarning } from '../../src/train/sit.js';

torch.setNumThreads(1);
const ROOT = join(dirname(fileURLToPath(import.meta.url)), '../..');
const CONFIGS = join(ROOT, 'configs');
const SIZES = ['tiny', 'small', 'base'];
const files = (folder: string) => readdirSync(join(CONFIGS, folder)).sort();

test('configs/ is in the package, and README names every shipped config folder', () => {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { files: string[] };
  assert.ok(pkg.files.includes('configs/'), `package.json "files": ${pkg.files.join(', ')}`);
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  assert.match(readme, /^## Configs$/m);
  for (const folder of readdirSync(CONFIGS)) assert.ok(readme.includes(`configs/${folder}/`), `README mentions configs/${folder}/`);
});

test('configs/vae: f4 and f8 with 4, 8, 16 and 32 latent channels at each size; each loads as --vae-config and builds', () => {
  const expected = ['f4', 'f8'].flatMap((f) => [4, 8, 16, 32].flatMap((c) => SIZES.map((size) => `${f}-c${c}-${size}.json`))).sort();
  assert.deepEqual(files('vae'), expected);
  for (const file of expected) {
    const [, factor, channels] = /^f(\d)-c(\d+)-/.exec(file)!.map(Number);
    torch.scope(() => {
      const vae = new AutoencoderKL(resolveVaeConfig(join(CONFIGS, 'vae', file)));
      assert.equal(vae.config.latentChannels, channels, file);
      assert.equal(vae.downsamplingFactor, factor, file);
      // Until `reals align convert` measures the latents' statistics, no SD-VAE scale is implied.
      assert.equal(vae.config.scalingFactor, 1, file);
      if (file.endsWith('-tiny.json')) {
        const x = torch.randn([1, 3, 32, 32]);
        const z = torch.noGrad(() => vae.encode(x).mode());
        assert.deepEqual(z.shape, [1, channels, 32 / factor!, 32 / factor!], file);
        assert.deepEqual(torch.noGrad(() => vae.decode(z)).shape, [1, 3, 32, 32], file);
      }
    });
  }
  // f8 base is the SD-VAE's layout, f4 base the same blocks less the last.
  const sd = AUTOENCODER_KL_CONFIGS['sd-vae']!;
  const base = resolveVaeConfig(join(CONFIGS, 'vae', 'f8-c4-base.json'));
  for (const key of ['blockOutChannels', 'layersPerBlock', 'normNumGroups', 'latentChannels'] as const) assert.deepEqual(base[key], sd[key], key);
  assert.deepEqual(resolveVaeConfig(join(CONFIGS, 'vae', 'f4-c4-base.json')).blockOutChannels, sd.blockOutChannels!.slice(0, 3));
});

test('configs/teacher: tiny, small and base ViTs load as --dino-model and build; small and base are DINOv2\'s ViT-S/14 and ViT-B/14', () => {
  assert.deepEqual(files('teacher'), SIZES.map((s) => `vit-${s}.json`).sort());
  for (const size of SIZES) {
    torch.scope(() => {
      const config = resolveDinoConfig(join(CONFIGS, 'teacher', `vit-${size}.json`));
      const side = 2 * config.patchSize;
      const out = torch.noGrad(() => new DinoVisionTransformer(config).eval().forwardFeatures(torch.randn([1, 3, side, side])));
      assert.deepEqual(out.xNormPatchtokens.shape, [1, 4, config.embedDim], size);
    });
  }
  for (const [size, hub] of [['small', 'dinov2_vits14'], ['base', 'dinov2_vitb14']] as const) {
    const { imgSize: _, ...shipped } = resolveDinoConfig(join(CONFIGS, 'teacher', `vit-${size}.json`));
    const { imgSize: __, ...published } = DINOV2_CONFIGS[hub]!;
    assert.deepEqual(shipped, published, size);
  }
});

test('configs/generator: tiny, small and base load as --model for SiT and DiT and build; small and base are SiT-S/2 and SiT-B/2', () => {
  assert.deepEqual(files('generator'), SIZES.map((s) => `${s}-2.json`).sort());
  for (const size of SIZES) {
    for (const kind of ['SiT', 'DiT'] as const) {
      // 32 channels of 8x8 latents (an f4 VAE on 32 px images): the widest the shipped VAEs give.
      const spec = resolveGeneratorSpec(join(CONFIGS, 'generator', `${size}-2.json`), kind, { inputSize: 8, inChannels: 32, numClasses: 10, classDropoutProb: 0.1 });
      assert.equal(spec.name, `${kind}-${size}-2`);
      // Each is at least as wide as a patch-2 token of 32 channels (2^2 x 32 = 128): RAE's rule holds for every shipped VAE.
      assert.equal(tokenWidthWarning(spec), null, spec.name);
      torch.scope(() => {
        const model = buildGenerator(spec).eval();
        const x = torch.randn([2, 32, 8, 8]);
        const out = torch.noGrad(() => model.forward(x, torch.tensor([0.5, 0.5]), torch.tensor([0, 9], { dtype: 'int64' })));
        assert.deepEqual(out.shape, kind === 'SiT' ? [2, 32, 8, 8] : [2, 64, 8, 8], spec.name);
      });
    }
  }
  for (const [size, name] of [['small', 'SiT-S/2'], ['base', 'SiT-B/2']] as const) {
    const shipped = JSON.parse(readFileSync(join(CONFIGS, 'generator', `${size}-2.json`), 'utf8')) as Record<string, unknown>;
    assert.deepEqual({ ...shipped, mlpRatio: undefined }, { ...SIT_CONFIGS[name], mlpRatio: undefined }, size);
    assert.equal(shipped.mlpRatio, 4);
  }
});
