import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import * as torch from '../../src/torch/index.js';
import type { Tensor } from '../../src/torch/index.js';
import { load, loadSafetensors } from '../../src/io/index.js';
import {
  DINOV2_CONFIGS, DinoVisionTransformer, hubToHuggingFace, huggingFaceToHub, preprocessImages, type DinoV2Config,
} from '../../src/models/index.js';
import { FIXTURES, assertClose } from '../helpers.js';

// Written by test/fixtures/make_dinov2.py (see its docstring for the three tiny variants).
const MODELS = join(FIXTURES, 'models');
const data = loadSafetensors(join(MODELS, 'dinov2.safetensors'));
const d = (key: string): Tensor => {
  const t = data[key];
  if (t === undefined) throw new Error(`dinov2.safetensors has no ${key}`);
  return t;
};

const TINY = { patchSize: 14, inChans: 3, embedDim: 32, depth: 2, numHeads: 2, mlpRatio: 4, initValues: 1 } as const;
const VARIANTS = {
  plain: {
    config: { ...TINY, imgSize: 28, ffnLayer: 'mlp', numRegisterTokens: 0, interpolateAntialias: false, interpolateOffset: 0.1 },
    file: 'dinov2_plain_hub.pth',
  },
  reg: {
    config: { ...TINY, imgSize: 42, ffnLayer: 'mlp', numRegisterTokens: 4, interpolateAntialias: true, interpolateOffset: 0 },
    file: 'dinov2_reg_hf.safetensors',
  },
  swiglu: {
    config: { ...TINY, imgSize: 28, ffnLayer: 'swiglufused', numRegisterTokens: 0, interpolateAntialias: false, interpolateOffset: 0.1 },
    file: 'dinov2_swiglu_hf.safetensors',
  },
} satisfies Record<string, { config: DinoV2Config; file: string }>;
type Variant = keyof typeof VARIANTS;

function model(variant: Variant): DinoVisionTransformer {
  const { config, file } = VARIANTS[variant];
  return new DinoVisionTransformer(config).eval().loadCheckpoint(join(MODELS, file));
}

/** Bit-identical values (compared in float32) and equal shapes. */
function same(a: Tensor, b: Tensor): boolean {
  return a.shape.join() === b.shape.join() && a.float().eq(b.float()).all().item() === 1;
}

/** Parity to 1e-5 relative with an absolute floor of 1e-6 of the reference's largest magnitude. */
function assertParity(actual: Tensor, expected: Tensor, what: string): void {
  if (expected.numel() === 0) return assert.deepEqual(actual.shape, expected.shape, what); // no register tokens
  assertClose(actual, expected, 1e-5, 1e-6 * expected.abs().max().item(), what);
}

for (const variant of Object.keys(VARIANTS) as Variant[]) {
  const input = (): Tensor => d(`${variant}.x`).float();

  test(`${variant}: forwardFeatures equals the reference at an input size unlike the pos_embed grid`, () => {
    torch.noGrad(() => {
      const net = model(variant);
      const x = input();
      assert.notEqual(x.size(2) * x.size(3), VARIANTS[variant].config.imgSize ** 2);
      const out = net.forwardFeatures(x);
      assertParity(out.xNormClstoken, d(`${variant}.cls`), 'x_norm_clstoken');
      assertParity(out.xNormRegtokens, d(`${variant}.reg`), 'x_norm_regtokens');
      assertParity(out.xNormPatchtokens, d(`${variant}.patch`), 'x_norm_patchtokens');
      assertParity(out.xPrenorm, d(`${variant}.prenorm`), 'x_prenorm');
      assertParity(net.forward(x), d(`${variant}.cls`), 'forward (identity head)');
    });
  });

  test(`${variant}: getIntermediateLayers equals the reference (reshape, class token, norm options)`, () => {
    torch.noGrad(() => {
      const net = model(variant);
      const x = input();
      const pairs = net.getIntermediateLayers(x, 2, { reshape: true, returnClassToken: true, norm: true });
      assert.equal(pairs.length, 2);
      pairs.forEach(([patch, cls], i) => {
        assertParity(patch, d(`${variant}.layers_reshape_cls.${i}.patch`), `layer ${i} patch map`);
        assertParity(cls, d(`${variant}.layers_reshape_cls.${i}.cls`), `layer ${i} class token`);
      });
      const [first] = net.getIntermediateLayers(x, [0], { norm: false });
      assertParity(first!, d(`${variant}.layers_first_nonorm`), 'block 0 without norm');
      const last = net.getIntermediateLayers(x);
      assert.equal(last.length, 1);
      assertParity(last[0]!, d(`${variant}.layers_last`), 'last block');
    });
  });
}

test('plain: no interpolation at the grid size, interpolation at its patch count when not square, and mask_token', () => {
  torch.noGrad(() => {
    const net = model('plain');
    assertParity(net.forwardFeatures(d('plain.x_grid').float()).xNormPatchtokens, d('plain.grid_patch'), 'grid-size patch tokens');
    assertParity(net.forwardFeatures(d('plain.x_strip').float()).xPrenorm, d('plain.strip_prenorm'), '1x4-patch x_prenorm');
    const masks = d('plain.masks');
    assert.equal(masks.dtype, 'bool');
    assertParity(net.forwardFeatures(d('plain.x').float(), masks).xPrenorm, d('plain.masked_prenorm'), 'masked x_prenorm');
  });
});

test('getIntermediateLayers refuses blocks the model does not have', () => {
  torch.noGrad(() => {
    const net = model('plain');
    assert.throws(() => net.getIntermediateLayers(d('plain.x').float(), [0, 5]), /only 1 of the blocks \[0,5\]/);
  });
});

test('Hugging Face mapping: hub -> HF equals the converter output, and HF -> hub restores the hub keys and values', () => {
  torch.noGrad(() => {
    for (const variant of ['reg', 'swiglu'] as const) {
      const hf = loadSafetensors(join(MODELS, VARIANTS[variant].file));
      const hub = model(variant).stateDict();
      const mapped = hubToHuggingFace(hub);
      assert.deepEqual([...mapped.keys()].sort(), Object.keys(hf).sort(), `${variant}: HF keys`);
      for (const [key, t] of mapped) assert.ok(same(t, hf[key]!), `${variant}: ${key}`);
      const back = huggingFaceToHub(mapped);
      assert.deepEqual([...back.keys()].sort(), [...hub.keys()].sort(), `${variant}: hub keys`);
      for (const [key, t] of back) assert.ok(same(t, hub.get(key)!), `${variant}: ${key}`);
    }
    const plainHub = load(join(MODELS, VARIANTS.plain.file)) as Record<string, Tensor>;
    const roundTrip = huggingFaceToHub(hubToHuggingFace(plainHub));
    assert.deepEqual([...roundTrip.keys()].sort(), Object.keys(plainHub).sort());
    for (const [key, t] of roundTrip) assert.ok(same(t, plainHub[key]!), `plain: ${key}`);
  });
});

test('HF-named and hub-named weights give identical outputs', () => {
  torch.noGrad(() => {
    for (const variant of ['reg', 'swiglu'] as const) {
      const x = d(`${variant}.x`).float();
      const fromHf = model(variant);
      const fromHub = new DinoVisionTransformer(VARIANTS[variant].config).eval();
      fromHub.loadStateDict(huggingFaceToHub(loadSafetensors(join(MODELS, VARIANTS[variant].file))));
      assert.ok(same(fromHf.forwardFeatures(x).xPrenorm, fromHub.forwardFeatures(x).xPrenorm), variant);
    }
  });
});

test('mapping and loading errors name the file and the bad keys', () => {
  const hf = loadSafetensors(join(MODELS, VARIANTS.reg.file));
  const { 'encoder.layer.1.attention.attention.key.weight': _dropped, ...partial } = hf;
  assert.throws(() => huggingFaceToHub({ ...partial, 'encoder.layer.0.extra': hf['layernorm.bias']! }),
    /keys with no torch-hub name \[encoder\.layer\.0\.extra\]/);
  assert.throws(() => huggingFaceToHub(partial), /blocks\.1\.attn\.qkv\.weight \(no key\)/);
  assert.throws(() => hubToHuggingFace({ 'blocks.0.attn.qkv.weight': hf['layernorm.bias']!, 'head.weight': hf['layernorm.bias']! }),
    /keys with no Hugging Face name \[head\.weight\]/);
  // The reg weights into a model without registers: the file and the unexpected key are named.
  const file = join(MODELS, VARIANTS.reg.file);
  const net = new DinoVisionTransformer({ ...VARIANTS.reg.config, numRegisterTokens: 0 });
  assert.throws(() => net.loadCheckpoint(file), (e: Error) => e.message.includes(file) && /unexpected keys \[register_tokens\]/.test(e.message));
});

test('preprocessImages equals ImageNet normalization of [-1, 1] images and torch bicubic resize', () => {
  const image = d('preprocess.image').float();
  assertParity(preprocessImages(image, [28, 42], { antialias: true }), d('preprocess.up_aa'), 'upsampled, antialias');
  assertParity(preprocessImages(image, 14, { antialias: true }), d('preprocess.down_aa'), 'downsampled, antialias');
  assertParity(preprocessImages(image, 14), d('preprocess.down_noaa'), 'downsampled, no antialias');
});

test('named configs follow dinov2/hub/backbones.py and build the published key layout', () => {
  const g = DINOV2_CONFIGS.dinov2_vitg14_reg!;
  assert.deepEqual([g.embedDim, g.depth, g.numHeads, g.ffnLayer, g.numRegisterTokens, g.interpolateAntialias, g.interpolateOffset],
    [1536, 40, 24, 'swiglufused', 4, true, 0]);
  const s = DINOV2_CONFIGS.dinov2_vits14!;
  assert.deepEqual([s.embedDim, s.depth, s.numHeads, s.imgSize, s.patchSize, s.numRegisterTokens, s.interpolateAntialias, s.interpolateOffset],
    [384, 12, 6, 518, 14, 0, false, 0.1]);
  assert.deepEqual([DINOV2_CONFIGS.dinov2_vitb14!.embedDim, DINOV2_CONFIGS.dinov2_vitl14!.depth], [768, 24]);
  // SwiGLU hidden size (int(160 * 2 / 3) + 7) // 8 * 8 = 112 for a narrow vitg14_reg.
  const narrow = new DinoVisionTransformer({ ...g, embedDim: 40, depth: 1, numHeads: 2 });
  const shapes = new Map([...narrow.stateDict()].map(([k, t]) => [k, t.shape]));
  assert.deepEqual(shapes.get('blocks.0.mlp.w12.weight'), [224, 40]);
  assert.deepEqual(shapes.get('blocks.0.mlp.w3.weight'), [40, 112]);
  assert.deepEqual(shapes.get('register_tokens'), [1, 4, 40]);
  assert.deepEqual(shapes.get('pos_embed'), [1, 37 * 37 + 1, 40]);
});
