import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as torch from '../../src/torch/index.js';
import type { Tensor } from '../../src/torch/index.js';
import { SafetensorsFile, saveSafetensors } from '../../src/io/index.js';
import {
  AutoencoderKL, AUTOENCODER_KL_CONFIGS, DiagonalGaussianDistribution, convertDeprecatedAttentionKeys, configFromDiffusers, configToDiffusers,
  type AutoencoderKLConfig,
} from '../../src/models/autoencoder-kl.js';
import { FIXTURES, assertClose, assertCloseToScale, assertSameDraw, float32Tolerance, loadFixture } from '../helpers.js';

const fx = loadFixture('autoencoder_kl/expected.json');
const x: Tensor = fx.x;
const z: Tensor = fx.z;

function config(blockOutChannels: number[], normNumGroups: number, midBlockAddAttention = true): Partial<AutoencoderKLConfig> {
  return {
    blockOutChannels, normNumGroups, midBlockAddAttention, layersPerBlock: 1, latentChannels: 4,
    downBlockTypes: blockOutChannels.map(() => 'DownEncoderBlock2D' as const),
    upBlockTypes: blockOutChannels.map(() => 'UpDecoderBlock2D' as const),
  };
}

/**
 * make_autoencoder_kl.py's weight recipe: torch.manual_seed(seed), then per key in sorted order
 * randn * fan_in^-1/2 (conv, linear), 1 + 0.1 randn (GroupNorm weights), 0.1 randn (biases). The
 * recorded sums tell an RNG mismatch apart from a forward-pass mismatch.
 */
function build(cfg: Partial<AutoencoderKLConfig>, reference: { seed: number; weights: { sum: number; abs_sum: number } }): AutoencoderKL {
  const model = new AutoencoderKL(cfg).eval();
  torch.manualSeed(reference.seed);
  const state = model.stateDict();
  torch.noGrad(() => {
    for (const name of [...state.keys()].sort()) {
      const p = state.get(name)!;
      const noise = torch.randn(p.shape);
      if (p.ndim > 1) p.copy_(noise.mul(1 / Math.sqrt(p.numel() / p.size(0))));
      else if (name.split('.').at(-2)!.includes('norm') && name.endsWith('.weight')) p.copy_(noise.mul(0.1).add(1));
      else p.copy_(noise.mul(0.1));
    }
  });
  assertSameDraw([...state.values()], reference.weights, 'the weight recipe');
  return model;
}

const SMALL = config([32, 64], 8);

// The fixtures come from PyTorch on one CPU; another CPU's kernels sum in another order
// (float32Tolerance). The longest sums are the 3x3 convolutions over 64 channels (576 products);
// the encoder chains 12 such layers (convolutions and the mid-block attention), the decoder 16.
const ENCODER_TOLERANCE = float32Tolerance(9 * 64, 12);
const DECODER_TOLERANCE = float32Tolerance(9 * 64, 16);
const FORWARD_TOLERANCE = float32Tolerance(9 * 64, 28);
const small = build(SMALL, fx.small);

function tempDir(): string { return mkdtempSync(join(tmpdir(), 'reals-vae-')); }

function assertEqual(actual: Tensor, expected: Tensor, what: string): void {
  assert.deepEqual(actual.shape, expected.shape, `${what}: shape`);
  assert.equal(actual.sub(expected).abs().max().item(), 0, `${what}: not identical`);
}

test('state-dict keys, shapes and order equal the diffusers reference', () => {
  assert.deepEqual([...small.stateDict()].map(([k, t]) => [k, t.shape]), fx.small.keys);
});

test('small config: encode mean/logvar, decode and forward (mode) match the diffusers reference within float32 summation-order error', () => {
  torch.noGrad(() => {
    const posterior = small.encode(x);
    assertCloseToScale(posterior.mean, fx.small.mean, ENCODER_TOLERANCE, 'mean');
    assertCloseToScale(posterior.logvar, fx.small.logvar, ENCODER_TOLERANCE, 'logvar');
    assert.equal(posterior.mode(), posterior.mean);
    assertCloseToScale(small.decode(z), fx.small.decoded, DECODER_TOLERANCE, 'decode(z)');
    assertCloseToScale(small.forward(x), fx.small.forward, FORWARD_TOLERANCE, 'forward(x)');
  });
});

test('posterior.sample() after torch.manualSeed equals mean + std * randn after torch.manual_seed', () => {
  torch.noGrad(() => {
    const posterior = small.encode(x);
    torch.manualSeed(fx.sample_seed);
    assertCloseToScale(posterior.sample(), fx.small.sample, ENCODER_TOLERANCE, 'sample()');
    const noise = torch.randn(posterior.mean.shape);
    assertEqual(posterior.sample(noise), posterior.mean.add(posterior.std.mul(noise)), 'sample(noise)');
    assert.throws(() => posterior.sample(torch.randn([1, 4, 8, 8])), /noise shape \[1,4,8,8\] differs from the mean's \[2,4,8,8\]/);
    torch.manualSeed(fx.sample_seed);
    const sampled = small.forward(x, { samplePosterior: true });
    assertCloseToScale(sampled, small.decode(fx.small.sample), FORWARD_TOLERANCE, 'forward(x, { samplePosterior })');
  });
});

test('kl() and kl(other) match the reference', () => {
  torch.noGrad(() => {
    const posterior = small.encode(x);
    assertCloseToScale(posterior.kl(), fx.small.kl, ENCODER_TOLERANCE, 'kl()');
    assertCloseToScale(posterior.kl(small.encode(x.flip(-1))), fx.small.kl_other, ENCODER_TOLERANCE, 'kl(other)');
  });
});

test('logvar is clamped to [-30, 20] before std and var, as diffusers', () => {
  const parameters = torch.tensor([[[[1]], [[-2]], [[50]], [[-50]]]]);
  const posterior = new DiagonalGaussianDistribution(parameters);
  assert.deepEqual(posterior.mean.flatten().tolist(), [1, -2]);
  assert.deepEqual(posterior.logvar.flatten().tolist(), [20, -30]);
  assertClose(posterior.var.flatten(), torch.tensor([Math.exp(20), Math.exp(-30)]), 1e-6, 0);
  assertClose(posterior.std.flatten(), torch.tensor([Math.exp(10), Math.exp(-15)]), 1e-6, 0);
});

test('mid_block_add_attention false: no attention weights, forward matches the reference', () => {
  const model = build(config([32, 64], 8, false), fx.no_attention);
  assert.ok(![...model.stateDict().keys()].some((k) => k.includes('attentions')));
  torch.noGrad(() => assertCloseToScale(model.forward(x.narrow(0, 0, 1)), fx.no_attention.forward, FORWARD_TOLERANCE, 'forward'));
});

test('an old diffusers folder loads: .bin through torch.load, query/key/value/proj_attn names, defaults, mean_std.json', () => {
  const model = AutoencoderKL.fromPretrained(join(FIXTURES, 'autoencoder_kl', 'legacy_bin'));
  assert.equal(model.training, false, 'fromPretrained returns the model in eval mode');
  assert.deepEqual(model.config.blockOutChannels, [4, 8]);
  assert.equal(model.config.useQuantConv, true);
  assert.equal(model.config.midBlockAddAttention, true);
  assert.equal(model.config.shiftFactor, null);
  assert.equal(model.config.scalingFactor, 0.18215);
  assert.deepEqual(model.latentStats, { mean: [0.5, -0.25, 0.125, 0], std: [2, 4, 0.5, 1] });
  torch.noGrad(() => assertCloseToScale(model.forward(x.narrow(0, 0, 1)), fx.tiny.forward, FORWARD_TOLERANCE, 'forward'));
});

/** Writes `tensors` and `config` as a diffusers folder (safetensors weights). */
function writeFolder(dir: string, config: AutoencoderKLConfig, tensors: Map<string, Tensor>): void {
  writeFileSync(join(dir, 'config.json'), JSON.stringify(configToDiffusers(config)));
  saveSafetensors(join(dir, 'diffusion_pytorch_model.safetensors'), Object.fromEntries(tensors));
}

const LEGACY: [string, string][] = [['to_q', 'query'], ['to_k', 'key'], ['to_v', 'value'], ['to_out.0', 'proj_attn']];

test('weights under the old attention names give outputs identical to the new names', () => {
  const legacy = new Map([...small.stateDict()].map(([key, t]) => {
    for (const [current, old] of LEGACY) key = key.replace(`.attentions.0.${current}.`, `.attentions.0.${old}.`);
    return [key, t];
  }));
  assert.ok(legacy.has('encoder.mid_block.attentions.0.proj_attn.weight') && legacy.has('decoder.mid_block.attentions.0.query.bias'));
  const dir = tempDir();
  try {
    writeFolder(dir, small.config, legacy);
    const loaded = AutoencoderKL.fromPretrained(dir);
    torch.noGrad(() => assertEqual(loaded.forward(x), small.forward(x), 'forward'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const renamed = convertDeprecatedAttentionKeys(new Map([
    ['encoder.mid_block.attentions.0.key.weight', z], ['decoder.query.weight', z], ['encoder.mid_block.attentions.0.to_q.bias', z],
  ]), ['encoder.mid_block.attentions.0']);
  assert.deepEqual([...renamed.keys()], ['encoder.mid_block.attentions.0.to_k.weight', 'decoder.query.weight', 'encoder.mid_block.attentions.0.to_q.bias'],
    'only keys under an attention module are renamed');
});

test('savePretrained → fromPretrained round-trips weights, config and mean_std.json; files are diffusers\'', () => {
  const dir = tempDir();
  try {
    small.latentStats = { mean: [0.1, 0.2, 0.3, 0.4], std: [1, 2, 3, 4] };
    small.savePretrained(dir);
    small.latentStats = null;
    const loaded = AutoencoderKL.fromPretrained(dir);
    assert.deepEqual(loaded.config, small.config);
    assert.deepEqual(loaded.latentStats, { mean: [0.1, 0.2, 0.3, 0.4], std: [1, 2, 3, 4] });
    torch.noGrad(() => assertEqual(loaded.forward(x), small.forward(x), 'forward'));

    const text = readFileSync(join(dir, 'config.json'), 'utf8');
    const json = JSON.parse(text) as Record<string, unknown>;
    assert.deepEqual(Object.keys(json), Object.keys(json).sort(), 'keys sorted, as diffusers writes them');
    assert.equal(text, `${JSON.stringify(json, null, 2)}\n`);
    assert.equal(json._class_name, 'AutoencoderKL');
    assert.deepEqual(json.block_out_channels, [32, 64]);
    assert.equal(json.mid_block_add_attention, true);
    assert.equal(json.scaling_factor, 0.18215);
    assert.equal(json.shift_factor, null);
    assert.deepEqual(JSON.parse(readFileSync(join(dir, 'mean_std.json'), 'utf8')), { mean: [0.1, 0.2, 0.3, 0.4], std: [1, 2, 3, 4] });
    const file = SafetensorsFile.open(join(dir, 'diffusion_pytorch_model.safetensors'));
    try {
      assert.deepEqual(file.metadata, { format: 'pt' });
      assert.deepEqual(file.keys().sort(), [...small.stateDict().keys()].sort());
    } finally {
      file.close();
    }

    small.savePretrained(dir);
    assert.equal(existsSync(join(dir, 'mean_std.json')), false, 'a stale mean_std.json is removed');
    assert.equal(AutoencoderKL.fromPretrained(dir).latentStats, null);
  } finally {
    small.latentStats = null;
    rmSync(dir, { recursive: true, force: true });
  }
});

test('missing, unexpected and mis-shaped weights: the error names the file and every key', () => {
  const dir = tempDir();
  try {
    const tensors = new Map(small.stateDict());
    tensors.delete('decoder.conv_out.bias');
    tensors.set('decoder.extra.weight', z);
    tensors.set('quant_conv.weight', torch.zeros([8, 8, 3, 3]));
    writeFolder(dir, small.config, tensors);
    const file = join(dir, 'diffusion_pytorch_model.safetensors');
    assert.throws(() => AutoencoderKL.fromPretrained(dir), (error: Error) => {
      assert.ok(error.message.startsWith(`${file}: `), error.message);
      assert.match(error.message, /missing keys \[decoder\.conv_out\.bias\]/);
      assert.match(error.message, /unexpected keys \[decoder\.extra\.weight\]/);
      assert.match(error.message, /quant_conv\.weight: checkpoint \[8,8,3,3\] vs model \[8,8,1,1\]/);
      return true;
    });
    rmSync(file);
    assert.throws(() => AutoencoderKL.fromPretrained(dir), /no diffusers weights \(neither diffusion_pytorch_model\.safetensors nor diffusion_pytorch_model\.bin\)/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('config.json and mean_std.json errors name the file and the field', () => {
  const file = '/x/config.json';
  const valid = { _class_name: 'AutoencoderKL', block_out_channels: [32, 64], norm_num_groups: 8,
    down_block_types: ['DownEncoderBlock2D', 'DownEncoderBlock2D'], up_block_types: ['UpDecoderBlock2D', 'UpDecoderBlock2D'] };
  assert.deepEqual(configFromDiffusers({ ...valid, _name_or_path: 'x', unknown_field: 1 }, file).blockOutChannels, [32, 64]);
  assert.throws(() => configFromDiffusers({ ...valid, layers_per_block: 'two' }, file), /^Error: \/x\/config\.json: invalid AutoencoderKL config: layers_per_block: /);
  assert.throws(() => configFromDiffusers({ ...valid, down_block_types: ['DownEncoderBlock2D'] }, file),
    /\/x\/config\.json: .*down_block_types: has 1 entries, expected 2 \(one per block\)/);
  assert.throws(() => configFromDiffusers({ ...valid, up_block_types: ['AttnUpDecoderBlock2D', 'UpDecoderBlock2D'] }, file),
    /\/x\/config\.json: .*up_block_types\.0: /);
  assert.throws(() => configFromDiffusers({ ...valid, norm_num_groups: 5 }, file), /block_out_channels\.0: 32 channels do not split into 5 groups/);
  assert.throws(() => configFromDiffusers({ ...valid, latents_mean: [0, 0, 0, 0] }, file), /latents_std: is missing while its mean\/std counterpart is given/);
  assert.throws(() => configFromDiffusers({ ...valid, _class_name: 'UNet2DModel' }, file), /\/x\/config\.json: _class_name is "UNet2DModel", expected "AutoencoderKL"/);
  assert.throws(() => new AutoencoderKL({ blockOutChannels: [32, 64] }), /^Error: AutoencoderKL: invalid AutoencoderKL config: downBlockTypes: has 1 entries/);

  const dir = tempDir();
  try {
    small.savePretrained(dir);
    writeFileSync(join(dir, 'mean_std.json'), JSON.stringify({ mean: [0, 0, 0], std: [1, 1, 1] }));
    assert.throws(() => AutoencoderKL.fromPretrained(dir), new RegExp(`${join(dir, 'mean_std.json')}: mean has 3 entries but latent_channels is 4`));
    writeFileSync(join(dir, 'mean_std.json'), JSON.stringify({ mean: [0, 0, 0, 0], std: [1, 0, 1, 1] }));
    assert.throws(() => AutoencoderKL.fromPretrained(dir), /mean_std\.json: expected \{"mean".*std\.1: /);
    writeFileSync(join(dir, 'config.json'), '{"block_out_channels": [32, 64],');
    assert.throws(() => AutoencoderKL.fromPretrained(dir), new RegExp(`${join(dir, 'config.json')}: not valid JSON`));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('normalizeLatents / denormalizeLatents: mean_std.json, else latents_mean/std, else shift and scaling factors', () => {
  const latents = torch.randn([2, 4, 3, 3]);
  const channel = (values: number[]): Tensor => torch.tensor(values).view(1, 4, 1, 1);
  const cases: [string, AutoencoderKL, Tensor][] = [];

  const withStats = new AutoencoderKL({ latentChannels: 4, blockOutChannels: [32], normNumGroups: 8 });
  withStats.latentStats = { mean: [1, 2, 3, 4], std: [0.5, 1, 2, 4] };
  cases.push(['mean_std.json', withStats, latents.sub(channel([1, 2, 3, 4])).div(channel([0.5, 1, 2, 4]))]);

  const sdxl = new AutoencoderKL({ blockOutChannels: [32], normNumGroups: 8, scalingFactor: 0.5, latentsMean: [1, 2, 3, 4], latentsStd: [0.5, 1, 2, 4] });
  cases.push(['latents_mean/std', sdxl, latents.sub(channel([1, 2, 3, 4])).mul(0.5).div(channel([0.5, 1, 2, 4]))]);

  const flux = new AutoencoderKL({ blockOutChannels: [32], normNumGroups: 8, scalingFactor: 0.3611, shiftFactor: 0.1159 });
  cases.push(['shift_factor', flux, latents.sub(0.1159).mul(0.3611)]);
  const sd = new AutoencoderKL({ blockOutChannels: [32], normNumGroups: 8 });
  cases.push(['scaling_factor', sd, latents.mul(0.18215)]);

  for (const [what, model, expected] of cases) {
    const normalized = model.normalizeLatents(latents);
    assertClose(normalized, expected, 1e-6, 1e-7, `normalize (${what})`);
    assertClose(model.denormalizeLatents(normalized), latents, 1e-6, 1e-6, `denormalize (${what})`);
  }
  assert.throws(() => withStats.normalizeLatents(torch.randn([1, 3, 2, 2])), /latents of shape \[1,3,2,2\] do not have 4 channels in dim 1/);
});

test('useSlicing encodes and decodes one image at a time with the same results', () => {
  torch.noGrad(() => {
    const whole = small.encode(x).mean;
    const decoded = small.decode(z);
    small.useSlicing = true;
    try {
      assertClose(small.encode(x).mean, whole, 1e-5, 1e-5, 'sliced encode');
      assertClose(small.decode(z), decoded, 1e-5, 1e-5, 'sliced decode');
    } finally {
      small.useSlicing = false;
    }
  });
});

test('the named SD-VAE config has the published model\'s 83,653,863 parameters', () => {
  const model = new AutoencoderKL(AUTOENCODER_KL_CONFIGS['sd-vae']);
  assert.equal(model.numParameters(), 83_653_863);
  const state = model.stateDict();
  assert.deepEqual(state.get('encoder.down_blocks.0.downsamplers.0.conv.weight')!.shape, [128, 128, 3, 3]);
  assert.deepEqual(state.get('decoder.up_blocks.3.resnets.2.conv2.weight')!.shape, [128, 128, 3, 3]);
  assert.ok(!state.has('decoder.up_blocks.1.resnets.0.conv_shortcut.weight'), 'no shortcut where the channels stay 512');
  assert.deepEqual(state.get('decoder.up_blocks.2.resnets.0.conv_shortcut.weight')!.shape, [256, 512, 1, 1]);
  assert.deepEqual(state.get('quant_conv.weight')!.shape, [8, 8, 1, 1]);
  const flux = new AutoencoderKL(AUTOENCODER_KL_CONFIGS['flux-vae']);
  assert.ok(!flux.stateDict().has('quant_conv.weight') && !flux.stateDict().has('post_quant_conv.weight'));
});
