// What a user sees when a command fails at run time: one line, `error: <message>`, exit code 1;
// the stack trace only with --verbose or REALS_DEBUG=1.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Command } from 'commander';
import { buildProgram, main } from '../../src/cli/main.js';

/** Runs main(argv) and returns what it wrote to stderr and the exit code it set. */
async function runMain(args: string[], env: Record<string, string | undefined> = {}): Promise<{ stderr: string; exitCode: number | undefined }> {
  const write = process.stderr.write.bind(process.stderr);
  const saved = Object.fromEntries(Object.keys(env).map((k) => [k, process.env[k]]));
  let stderr = '';
  process.stderr.write = ((chunk: string | Uint8Array) => { stderr += String(chunk); return true; }) as typeof process.stderr.write;
  for (const [k, v] of Object.entries(env)) if (v === undefined) delete process.env[k]; else process.env[k] = v;
  process.exitCode = undefined;
  try {
    await main(['node', 'reals', ...args]);
    return { stderr, exitCode: process.exitCode };
  } finally {
    process.stderr.write = write;
    process.exitCode = undefined;
    for (const [k, v] of Object.entries(saved)) if (v === undefined) delete process.env[k]; else process.env[k] = v;
  }
}

test('a runtime error is one line naming the file, with exit code 1; --verbose and REALS_DEBUG=1 add the stack', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'reals-main-'));
  try {
    const missing = join(dir, 'none.safetensors');
    const args = ['align', 'convert', '--ckpt', missing, '--output-dir', join(dir, 'out'), '--data-path', 'fashion-mnist', '--num-samples', '4'];
    const plain = await runMain(args, { REALS_DEBUG: undefined });
    assert.equal(plain.exitCode, 1);
    assert.match(plain.stderr, new RegExp(`^error: .*${missing.replaceAll('/', '\\/')}: no such checkpoint file.*\\n$`));
    assert.equal(plain.stderr.trim().split('\n').length, 1, plain.stderr);

    for (const [extra, env] of [[['--verbose'], {}], [[], { REALS_DEBUG: '1' }]] as const) {
      const verbose = await runMain([...args, ...extra], env);
      assert.equal(verbose.exitCode, 1);
      assert.match(verbose.stderr, /no such checkpoint file/);
      assert.match(verbose.stderr, /\n\s+at /, 'a stack trace');
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('--help marks every required option of every command, once', () => {
  const commands = (command: Command): Command[] => [command, ...command.commands.flatMap(commands)];
  let required = 0;
  for (const command of commands(buildProgram())) {
    const help = command.helpInformation().replace(/\s+/g, ' ');
    for (const option of command.options.filter((o) => o.mandatory)) {
      required++;
      const entry = help.slice(help.indexOf(option.flags));
      const next = entry.slice(option.flags.length).search(/ --[a-z]/);
      assert.match(next === -1 ? entry : entry.slice(0, option.flags.length + next), /\(required\)/, `${command.name()} ${option.flags}`);
    }
    assert.equal(help.match(/\(required\)/g)?.length ?? 0, command.options.filter((o) => o.mandatory).length, command.name());
  }
  assert.ok(required > 20, `${required} required options`);
});
