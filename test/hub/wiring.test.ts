// The pipelines fetch what they are not given: a Hugging Face --vae-path, the DINOv2, LPIPS and
// Inception weights; offline, each missing file is an error naming its URL and cache path.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as torch from '../../src/torch/index.js';
import { AutoencoderKL } from '../../src/models/autoencoder-kl.js';
import { runSample } from '../../src/pipelines/sample.js';
import { runAlignTrain } from '../../src/pipelines/align.js';
import { fidInceptionExtractor } from '../../src/eval/evaluate.js';
import { FIXTURES } from '../helpers.js';

torch.setNumThreads(1);
const COMMIT = 'b'.repeat(40);
let server: Server;
let root = '';
let served: Record<string, Buffer> = {};

before(async () => {
  root = mkdtempSync(join(tmpdir(), 'reals-hub-wiring-'));
  torch.manualSeed(0);
  const vae = join(root, 'vae-source');
  new AutoencoderKL({
    blockOutChannels: [8, 8], downBlockTypes: ['DownEncoderBlock2D', 'DownEncoderBlock2D'], upBlockTypes: ['UpDecoderBlock2D', 'UpDecoderBlock2D'],
    normNumGroups: 4, layersPerBlock: 1, latentChannels: 4,
  }).savePretrained(vae);
  served = Object.fromEntries(readdirSync(vae).map((name) => [`/owner/tiny-vae/resolve/main/vae/${name}`, readFileSync(join(vae, name))]));
  server = createServer((req, res) => {
    const bytes = served[req.url!];
    if (bytes === undefined) {
      res.writeHead(404);
      return res.end();
    }
    res.writeHead(200, { 'Content-Length': String(bytes.length), 'X-Repo-Commit': COMMIT, ETag: `"${createHash('sha256').update(bytes).digest('hex')}"` });
    res.end(req.method === 'HEAD' ? undefined : bytes);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  process.env.HF_ENDPOINT = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  process.env.HF_HOME = join(root, 'hf');
  process.env.TORCH_HOME = join(root, 'torch');
  delete process.env.HF_HUB_OFFLINE;
});
after(() => {
  server.close();
  rmSync(root, { recursive: true, force: true });
});

test('sample --vae-path owner/name/vae fetches the diffusers folder into the Hugging Face cache and samples with it', async () => {
  const model = join(root, 'tiny.json');
  writeFileSync(model, JSON.stringify({ depth: 2, hiddenSize: 16, patchSize: 2, numHeads: 2 }));
  const result = await runSample('ode', {
    model, ckpt: join(FIXTURES, 'models', 'sit_checkpoint.pt'), vaePath: 'owner/tiny-vae/vae', sampleDir: join(root, 'samples'),
    imageSize: 8, numClasses: 3, numFidSamples: 2, perProcBatchSize: 2, numSamplingSteps: 2, samplingMethod: 'euler', log: () => {},
  });
  assert.equal(result.numSamples, 2);
  const snapshot = join(root, 'hf', 'hub', 'models--owner--tiny-vae', 'snapshots', COMMIT, 'vae');
  assert.deepEqual(readdirSync(snapshot).sort(), ['config.json', 'diffusion_pytorch_model.safetensors']);
  await assert.rejects(runSample('ode', { model, ckpt: 'x.pt', vaePath: 'owner/missing', sampleDir: join(root, 'samples'), log: () => {} }),
    /^Error: --vae-path owner\/missing: no such folder, nor a Hugging Face model: .*owner\/missing\/resolve\/main\/config\.json: HTTP 404/);
});

test('offline, a weight that is not cached is an error naming its URL and the path to put it in: DINOv2, LPIPS, Inception', async () => {
  const checkpoints = join(root, 'torch', 'hub', 'checkpoints');
  const align = (extra: object) => runAlignTrain({ dataPath: 'fashion-mnist', imageSize: 32, resultsDir: join(root, 'results'), offline: true, log: () => {}, ...extra });
  await assert.rejects(align({ dinoModel: 'dinov2_vits14_reg' }), {
    message: 'offline (--offline or HF_HUB_OFFLINE=1) and not in the torch hub cache: cannot fetch ' +
      `https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/dinov2_vits14_reg4_pretrain.pth; download it by hand to ${join(checkpoints, 'dinov2_vits14_reg4_pretrain.pth')}`,
  });
  const teacher = join(root, 'dino.pth');
  writeFileSync(teacher, '');
  await assert.rejects(align({ dinoModel: 'dinov2_vits14', dinoCkpt: teacher, lpipsWeight: 1 }),
    new RegExp(`cannot fetch https://download\\.pytorch\\.org/models/vgg16-397923af\\.pth; download it by hand to ${join(checkpoints, 'vgg16-397923af.pth')}; ` +
      'or give --lpips-vgg and --lpips-lin, or train without LPIPS: --lpips-weight 0$'));
  const saved = process.env.REALS_INCEPTION_WEIGHTS;
  delete process.env.REALS_INCEPTION_WEIGHTS;
  try {
    await assert.rejects(fidInceptionExtractor({ offline: true }),
      new RegExp(`cannot fetch https://github\\.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d\\.pth; download it by hand to ${join(checkpoints, 'pt_inception-2015-12-05-6726825d.pth')}$`));
  } finally {
    if (saved !== undefined) process.env.REALS_INCEPTION_WEIGHTS = saved;
  }
});
