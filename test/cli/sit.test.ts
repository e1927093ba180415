import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Command } from 'commander';
import { resumeFlags } from '../../src/cli/parse.js';

test('resumeFlags: on --resume an optimizer flag left at its default is unset (the checkpoint\'s goes on); one given is kept', () => {
  const parse = (argv: string[]) => {
    const command = new Command('train').option('--resume <dir>').option('--lr <lr>', 'lr', Number, 1e-4).option('--ema-decay <d>', 'ema', Number, 0.9999);
    command.parse(argv, { from: 'user' });
    return resumeFlags(command, command.opts<{ resume?: string; lr?: number; emaDecay?: number }>(), ['lr', 'emaDecay']);
  };
  assert.deepEqual(parse([]), { lr: 1e-4, emaDecay: 0.9999 }, 'a new run takes the defaults');
  assert.deepEqual(parse(['--resume', 'run']), { resume: 'run' });
  assert.deepEqual(parse(['--resume', 'run', '--lr', '3e-4']), { resume: 'run', lr: 3e-4 });
});
