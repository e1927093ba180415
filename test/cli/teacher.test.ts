import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildProgram } from '../../src/cli/main.js';
import { subcommand } from '../../src/cli/parse.js';

const REALS = join(dirname(fileURLToPath(import.meta.url)), '../../bin/reals.js');

function reals(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const { status, stdout, stderr } = spawnSync(process.execPath, [REALS, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { status, stdout, stderr };
}

test('teacher train --help lists the DINOv2-named flags with their defaults, and marks the required ones', () => {
  const teacher = subcommand(buildProgram(), 'teacher');
  const help = subcommand(teacher, 'train').helpInformation();
  const flags = [
    '--data-path', '--image-size', '--dino-model', '--global-crops-size', '--global-crops-scale', '--local-crops-number', '--local-crops-size',
    '--local-crops-scale', '--head-n-prototypes', '--head-hidden-dim', '--head-bottleneck-dim', '--teacher-temp', '--warmup-teacher-temp',
    '--momentum-teacher', '--koleo-loss-weight', '--ibot-loss-weight', '--mask-ratio-min-max', '--mask-sample-probability', '--lr',
    '--weight-decay', '--batch-size', '--max-steps', '--epochs', '--results-dir', '--resume', '--seed', '--ckpt-every', '--log-every',
    '--num-workers', '--probe-images', '--out',
  ];
  for (const flag of flags) assert.ok(help.includes(flag), flag);
  const compact = help.replace(/\s+/g, ' ');
  for (const shown of ['(default: 0.32,1.0)', '(default: 0.05,0.32)', '(default: 0.1,0.5)', '(default: 1024)', '(default: 0.04)', 'DINOv2: 0.07',
    '(default: 0.98)', '(default: 64)', '(default: 2000)', '0.004 x sqrt(batch-size / 1024)', '(default: "results")']) {
    assert.ok(compact.includes(shown), shown);
  }
  assert.equal(compact.match(/\(required\)/g)?.length, 2, '--data-path and --dino-model');
  assert.equal(subcommand(teacher, 'probe').helpInformation().replace(/\s+/g, ' ').match(/\(required\)/g)?.length, 3);
});

test('a bad flag value is refused with a one-line error, before anything loads', () => {
  const scale = reals(['teacher', 'train', '--data-path', 'fashion-mnist', '--dino-model', 'x.json', '--global-crops-scale', '0.5,0.2']);
  assert.equal(scale.status, 1);
  assert.match(scale.stderr, /^error: option '--global-crops-scale <min,max>' argument '0\.5,0\.2' is invalid\. expected min,max with 0 <= min <= max <= 1, got '0\.5,0\.2'$/m);
  const model = reals(['teacher', 'train', '--data-path', 'fashion-mnist', '--dino-model', 'vit_tiny']);
  assert.equal(model.status, 1);
  assert.match(model.stderr, /^error: --dino-model vit_tiny: not one of dinov2_vits14, .*, nor a \.json config$/m);
  const crops = reals(['teacher', 'train', '--data-path', 'fashion-mnist', '--dino-model', 'dinov2_vits14']);
  assert.equal(crops.status, 1);
  assert.match(crops.stderr, /^error: --global-crops-size 32 is not a multiple of the patch size 14 of --dino-model dinov2_vits14$/m);
});
