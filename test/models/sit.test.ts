import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as torch from '../../src/torch/index.js';
import type { Tensor } from '../../src/torch/index.js';
import { load, loadSafetensors, saveSafetensors } from '../../src/io/index.js';
import { DiT, LabelEmbedder, SiT, SIT_CONFIGS, get2dSincosPosEmbed, type SiTConfig, type SiTName } from '../../src/models/index.js';
import { FIXTURES, assertClose, loadFixture } from '../helpers.js';

// Written by test/fixtures/make_sit.py.
const fixture = loadFixture('models/sit.json');
const data = loadSafetensors(join(FIXTURES, 'models', 'sit_parity.safetensors'));
const CHECKPOINT = join(FIXTURES, 'models', 'sit_checkpoint.pt');

function camelConfig(sizes: Record<string, number>, learnSigma = true): SiTConfig {
  return {
    inputSize: sizes.input_size, patchSize: sizes.patch_size!, inChannels: sizes.in_channels, hiddenSize: sizes.hidden_size!,
    depth: sizes.depth!, numHeads: sizes.num_heads!, classDropoutProb: sizes.class_dropout_prob, numClasses: sizes.num_classes, learnSigma,
  };
}
const PARITY = camelConfig(fixture.parity);
const TINY = camelConfig(fixture.tiny);

function withPrefix(prefix: string): Record<string, Tensor> {
  return Object.fromEntries(Object.entries(data).filter(([k]) => k.startsWith(prefix)).map(([k, v]) => [k.slice(prefix.length), v]));
}
const WEIGHTS = withPrefix('model.');

function parityModel<M extends DiT>(Model: new (config: SiTConfig) => M, learnSigma = true): M {
  const model = new Model({ ...PARITY, learnSigma }).eval();
  model.loadStateDict(learnSigma ? WEIGHTS : { ...WEIGHTS, ...withPrefix('nosigma.') });
  return model;
}

const d = (key: string): Tensor => data[key]!;

/**
 * Parity to 1e-5 relative; the absolute floor is 1e-6 of the output's largest magnitude, as
 * guidance (uncond + 4 (cond - uncond)) amplifies float32 rounding of elements near zero.
 */
function assertMatches(actual: Tensor, expected: Tensor, what: string): void {
  assertClose(actual, expected, 1e-5, 1e-6 * expected.abs().max().item(), what);
}

test('SiT and DiT forward equal the PyTorch reference on random weights (learnSigma: SiT returns the first half)', () => {
  const sit = parityModel(SiT);
  const dit = parityModel(DiT);
  torch.noGrad(() => {
    assertMatches(sit.forward(d('x'), d('t'), d('y')), d('sit'), 'SiT forward');
    assertMatches(dit.forward(d('x'), d('t_dit'), d('y')), d('dit'), 'DiT forward');
    assertMatches(parityModel(SiT, false).forward(d('x'), d('t'), d('y')), d('sit_nosigma'), 'SiT forward, learnSigma false');
  });
  assert.equal(dit.outChannels, 8);
  assert.deepEqual(d('sit').shape, [4, 4, 8, 8]);
});

test('forwardWithCfg equals the reference: SiT guides 3 channels by default, DiT 4, channels "all" guides inChannels', () => {
  const sit = parityModel(SiT);
  const dit = parityModel(DiT);
  const scale = fixture.cfg_scale as number;
  const [x, t, tDit, y] = [d('x'), d('t'), d('t_dit'), d('y_cfg')];
  torch.noGrad(() => {
    assertMatches(sit.forwardWithCfg(x, t, y, scale), d('sit_cfg'), 'SiT cfg (3 channels)');
    assertMatches(sit.forwardWithCfg(x, t, y, scale, { channels: 3 }), d('sit_cfg'), 'SiT cfg (channels: 3)');
    assertMatches(sit.forwardWithCfg(x, t, y, scale, { channels: 'all' }), d('sit_cfg_all'), 'SiT cfg (all channels)');
    assertMatches(dit.forwardWithCfg(x, tDit, y, scale), d('dit_cfg'), 'DiT cfg (3 channels)');
    assertMatches(dit.forwardWithCfg(x, tDit, y, scale, { channels: 'all' }), d('dit_cfg_all'), 'DiT cfg (all = inChannels)');
    assertMatches(parityModel(SiT, false).forwardWithCfg(x, t, y, scale), d('sit_nosigma_cfg'), 'SiT cfg, learnSigma false');
  });
  // The two guidance modes differ on channel 3 only, so the checks above tell them apart.
  assert.ok(d('sit_cfg').sub(d('sit_cfg_all')).abs().max().item() > 1e-2);
  assert.throws(() => sit.forwardWithCfg(x.slice(0, 0, 3), t.slice(0, 0, 3), y.slice(0, 0, 3), scale), /SiT\.forwardWithCfg: the batch must hold a conditional and an unconditional half, got 3 samples/);
  assert.throws(() => sit.forwardWithCfg(x, t, y, scale, { channels: 5 }), /channels must be 'all' or an integer in \[1, 4\], got 5/);
});

test('training mode drops labels to the null class numClasses as PyTorch does from the same seed', () => {
  const sit = parityModel(SiT);
  const dropped = fixture.train_dropped as boolean[];
  assert.ok(dropped.includes(true) && dropped.includes(false), 'the fixture drops some labels and keeps others');
  sit.train();
  torch.manualSeed(fixture.train_seed);
  const out = torch.noGrad(() => sit.forward(d('x'), d('t'), d('y')));
  assertMatches(out, d('sit_train'), 'train-mode forward');
  // The same output as evaluating with the dropped labels replaced by the null class.
  const nullY = torch.where(torch.tensor(dropped), PARITY.numClasses!, d('y'));
  assertClose(torch.noGrad(() => sit.eval().forward(d('x'), d('t'), nullY)), out, 1e-6, 1e-7, 'eval with null labels');
});

test('LabelEmbedder: forced drops give the null row, eval keeps labels, dropoutProb 0 has no null class', () => {
  const embedder = new LabelEmbedder(5, 8, 0.1);
  assert.deepEqual(embedder.embeddingTable.weight.shape, [6, 8]);
  const labels = torch.tensor([0, 4, 2]);
  const table = embedder.embeddingTable.weight;
  const forced = embedder.forward(labels, false, torch.tensor([1, 0, 1]));
  assertClose(forced, torch.stack([table.select(0, 5), table.select(0, 4), table.select(0, 5)]), 0, 0, 'forced drop');
  assertClose(embedder.forward(labels, false), table.indexSelect(0, labels), 0, 0, 'eval');
  const always = new LabelEmbedder(5, 8, 1);
  assert.deepEqual(always.tokenDrop(labels).tolist(), [5, 5, 5]);
  const never = new LabelEmbedder(5, 8, 0);
  assert.deepEqual(never.embeddingTable.weight.shape, [5, 8]);
  assertClose(never.forward(labels, true), never.embeddingTable.weight.indexSelect(0, labels), 0, 0, 'no dropout');
});

test('the reference initialisation draws the same weights as PyTorch from the same seed (SiT; DiT keeps the conv bias)', () => {
  const reference = load(CHECKPOINT) as { model: Record<string, Tensor> };
  torch.manualSeed(fixture.init_seed);
  const sit = new SiT(TINY).stateDict();
  assert.deepEqual([...sit.keys()], Object.keys(reference.model));
  for (const [key, value] of sit) assertClose(value, reference.model[key]!, 0, 0, `SiT init ${key}`);
  torch.manualSeed(fixture.init_seed);
  const dit = new DiT(TINY).stateDict();
  for (const [key, value] of dit) {
    assertClose(value, key === 'x_embedder.proj.bias' ? fixture.dit_init_proj_bias : reference.model[key]!, 0, 0, `DiT init ${key}`);
  }
});

test('the 2-D sin-cos position embedding equals MAE\'s numpy formula; pos_embed is a parameter without grad', () => {
  assertClose(get2dSincosPosEmbed(64, 8), d('pos_embed_8x64'), 0, 0, 'get2dSincosPosEmbed(64, 8)');
  const model = new SiT(PARITY);
  assertClose(model.posEmbed, WEIGHTS.pos_embed!, 0, 0, 'pos_embed');
  assert.equal(model.posEmbed.requiresGrad, false);
  assert.ok(model.stateDict().has('pos_embed'));
  assert.throws(() => get2dSincosPosEmbed(30, 2), /embedDim 30 must be a multiple of 4/);
});

/** Parameters of models.py's network, counted from the config (pos_embed included, as upstream's count). */
function parameterCount(c: SiTConfig): number {
  const d = c.hiddenSize;
  const inChannels = c.inChannels ?? 4;
  const p = c.patchSize;
  const out = (c.learnSigma ?? true ? 2 : 1) * inChannels;
  const mlp = Math.trunc(d * (c.mlpRatio ?? 4));
  const tokens = ((c.inputSize ?? 32) / p) ** 2;
  const linear = (i: number, o: number): number => i * o + o;
  const block = linear(d, 3 * d) + linear(d, d) + linear(d, mlp) + linear(mlp, d) + linear(d, 6 * d);
  return linear(inChannels * p * p, d) + linear(256, d) + linear(d, d) + ((c.numClasses ?? 1000) + 1) * d + tokens * d
    + c.depth * block + linear(d, p * p * out) + linear(d, 2 * d);
}

test('parameter counts: S/2 and B/2 by construction equal the formula; S/2 33.0M, B/2 130.5M, L/2 458.1M, XL/2 675.1M', () => {
  for (const name of ['SiT-S/2', 'DiT-B/2'] as const) {
    const model = torch.scope(() => (name.startsWith('DiT') ? new DiT(SIT_CONFIGS[name]) : new SiT(SIT_CONFIGS[name])));
    const n = model.numParameters();
    assert.equal(n, parameterCount(SIT_CONFIGS[name]), name);
    assert.equal(model.numParameters({ trainableOnly: true }), n - model.posEmbed.numel(), `${name} trainable`);
    if (name === 'SiT-S/2') checkInitProperties(model as SiT);
    for (const p of model.parameters()) p.dispose();
  }
  const millions = (name: SiTName): number => Math.round(parameterCount(SIT_CONFIGS[name]) / 1e5) / 10;
  assert.deepEqual((['SiT-S/2', 'SiT-B/2', 'SiT-L/2', 'SiT-XL/2'] as const).map(millions), [33.0, 130.5, 458.1, 675.1]);
  assert.equal(parameterCount(SIT_CONFIGS['SiT-XL/2']), 675_129_632);
  assert.deepEqual(SIT_CONFIGS['DiT-XL/2'], SIT_CONFIGS['SiT-XL/2']);
});

/** adaLN-Zero and the final layer start at zero, Linear weights are xavier-uniform, embeddings N(0, 0.02). */
function checkInitProperties(model: SiT): void {
  torch.scope(() => {
    const sd = model.stateDict();
    const get = (key: string): Tensor => sd.get(key)!;
    for (const key of [...sd.keys()].filter((k) => k.includes('adaLN_modulation') || k.startsWith('final_layer.linear'))) {
      assert.equal(get(key).abs().max().item(), 0, `${key} is zero`);
    }
    assert.equal(get('x_embedder.proj.bias').abs().max().item(), 0, 'SiT zeroes the patch-embed bias');
    assert.equal(get('blocks.3.attn.qkv.bias').abs().max().item(), 0, 'Linear biases are zero');
    const checkXavier = (key: string, fanIn: number, fanOut: number): void => {
      const bound = Math.sqrt(6 / (fanIn + fanOut));
      const max = get(key).abs().max().item();
      assert.ok(max <= bound && max > 0.99 * bound, `${key}: max |w| ${max}, xavier bound ${bound}`);
    };
    checkXavier('blocks.0.attn.qkv.weight', 384, 1152);
    checkXavier('blocks.11.mlp.fc2.weight', 1536, 384);
    checkXavier('x_embedder.proj.weight', 4 * 2 * 2, 384);
    for (const key of ['y_embedder.embedding_table.weight', 't_embedder.mlp.0.weight', 't_embedder.mlp.2.weight']) {
      const std = get(key).std().item();
      assert.ok(Math.abs(std / 0.02 - 1) < 0.02, `${key}: std ${std}, expected 0.02`);
    }
    assertClose(get('pos_embed').squeeze(0), get2dSincosPosEmbed(384, 16), 0, 0, 'pos_embed');
  });
}

test('fromCheckpoint loads a {model, ema, opt, args} .pt written by torch.save, choosing EMA unless told otherwise', () => {
  const checkpoint = load(CHECKPOINT) as { model: Record<string, Tensor>; ema: Record<string, Tensor>; args: Record<string, unknown> };
  assert.equal(checkpoint.args.__class__, 'argparse.Namespace');
  const sit = SiT.fromCheckpoint(CHECKPOINT, TINY).eval();
  assert.ok(sit instanceof SiT);
  for (const [key, value] of sit.stateDict()) assertClose(value, checkpoint.ema[key]!, 0, 0, `ema ${key}`);
  const out = torch.noGrad(() => sit.forward(fixture.ema_x, fixture.ema_t, fixture.ema_y));
  assertMatches(out, fixture.ema_out, 'EMA model forward');

  const raw = SiT.fromCheckpoint(CHECKPOINT, TINY, { weights: 'model' });
  for (const [key, value] of raw.stateDict()) assertClose(value, checkpoint.model[key]!, 0, 0, `model ${key}`);
  const dit = DiT.fromCheckpoint(checkpoint, TINY);
  assert.ok(dit instanceof DiT && !(dit instanceof SiT));
  assertClose(dit.finalLayer.linear.weight, checkpoint.ema['final_layer.linear.weight']!, 0, 0, 'DiT from a loaded object');
});

test('fromCheckpoint takes plain state dicts: a record, a Map, a .safetensors file', () => {
  const { ema } = load(CHECKPOINT) as { ema: Record<string, Tensor> };
  const expected = ema['blocks.1.attn.qkv.weight']!;
  const check = (model: SiT, what: string): void => assertClose(model.blocks.at(1).attn.qkv.weight, expected, 0, 0, what);
  check(SiT.fromCheckpoint(ema, TINY), 'record');
  check(SiT.fromCheckpoint(SiT.fromCheckpoint(ema, TINY).stateDict(), TINY), 'Map');
  check(SiT.fromCheckpoint({ model: ema }, TINY), '{model} without ema');
  const dir = mkdtempSync(join(tmpdir(), 'reals-sit-'));
  try {
    const path = join(dir, 'sit.safetensors');
    saveSafetensors(path, ema);
    check(SiT.fromCheckpoint(path, TINY), 'safetensors');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('fromCheckpoint errors name the file and every bad key', () => {
  const { ema } = load(CHECKPOINT) as { ema: Record<string, Tensor> };
  assert.throws(() => SiT.fromCheckpoint(CHECKPOINT, { ...TINY, learnSigma: false }),
    (e: Error) => e.message.startsWith(CHECKPOINT) && /shape mismatch \[final_layer\.linear\.weight: checkpoint \[32,16\] vs model \[16,16\], final_layer\.linear\.bias: /.test(e.message));
  const { 'final_layer.linear.bias': _, ...missing } = ema;
  assert.throws(() => SiT.fromCheckpoint({ ...missing, 'extra.weight': torch.zeros([1]) }, TINY),
    /^Error: checkpoint: loadStateDict\(SiT\): missing keys \[final_layer\.linear\.bias\], unexpected keys \[extra\.weight\]/);
  assert.throws(() => SiT.fromCheckpoint({ step: 3, args: {} }, TINY), /checkpoint: neither a state dict nor a checkpoint with a 'model' state dict \(top-level keys: step, args\)/);
  assert.throws(() => SiT.fromCheckpoint(ema, TINY, { weights: 'ema' }), /checkpoint: a plain state dict, not a training checkpoint with 'ema' weights/);
  assert.throws(() => new SiT(TINY).forward(torch.zeros([1, 4, 8, 8]), torch.zeros([1]), torch.zeros([1], { dtype: 'int64' })),
    /PatchEmbed: expected input \[N, C, 4, 4\], got \[1,4,8,8\]/);
});

test('a config with a non-positive or absurd size is refused before any weight is allocated, naming the field', () => {
  const base = { depth: 1, hiddenSize: 16, patchSize: 2, numHeads: 2, inputSize: 4, inChannels: 4, numClasses: 3 };
  assert.throws(() => new SiT({ ...base, depth: -1 }), /^Error: SiT: config\.depth must be a positive integer, got -1$/);
  assert.throws(() => new DiT({ ...base, numClasses: 0 }), /^Error: DiT: config\.numClasses must be a positive integer, got 0$/);
  assert.throws(() => new SiT({ ...base, mlpRatio: -4 }), /config\.mlpRatio must be a positive number, got -4/);
  const start = performance.now();
  assert.throws(() => new SiT({ ...base, hiddenSize: 1e9 }), /^Error: SiT: config\.depth 1 x config\.hiddenSize 1000000000 \(mlpRatio 4\) make ~1\.8e\+19 weights, .*an absurd size$/);
  assert.ok(performance.now() - start < 100);
});
