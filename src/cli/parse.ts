// Flag parsers shared by the commands (commander argParsers: they throw InvalidArgumentError,
// which commander prints as one line naming the flag), and running a command's parser alone.
import { existsSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import { type Command, Help, InvalidArgumentError, Option } from 'commander';
import { checkDevice } from '../torch/device.js';
import { PRECISIONS, type Precision } from '../torch/precision.js';
import { checkWritableDir } from '../io/file.js';

export function integer(min: number, max = Number.MAX_SAFE_INTEGER): (value: string) => number {
  return (value) => {
    const n = /^-?\d+$/.test(value) ? Number(value) : NaN;
    if (!Number.isSafeInteger(n) || n < min || n > max) {
      throw new InvalidArgumentError(max === Number.MAX_SAFE_INTEGER ? `expected an integer >= ${min}, got '${value}'` : `expected an integer in [${min}, ${max}], got '${value}'`);
    }
    return n;
  };
}

export function number(min: number, max = Infinity): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (value.trim() === '' || !Number.isFinite(n) || n < min || n > max) throw new InvalidArgumentError(`expected a number in [${min}, ${max}], got '${value}'`);
    return n;
  };
}

export function positive(value: string): number {
  const n = number(0)(value);
  if (n === 0) throw new InvalidArgumentError(`expected a number > 0, got '${value}'`);
  return n;
}

/** SiT's none_or_str: the word None is null. */
export function noneOr<T extends string>(choices: readonly T[]): (value: string) => T | null {
  return (value) => {
    if (value === 'None') return null;
    if (!choices.includes(value as T)) throw new InvalidArgumentError(`expected one of None, ${choices.join(', ')}, got '${value}'`);
    return value as T;
  };
}

export function oneOf<T extends string>(choices: readonly T[]): (value: string) => T {
  return (value) => {
    if (!(choices as readonly string[]).includes(value)) throw new InvalidArgumentError(`expected one of ${choices.join(', ')}, got '${value}'`);
    return value as T;
  };
}

/** `cpu`, `cuda` or `cuda:N`, on a build that has that device. */
export function device(value: string): string {
  try {
    checkDevice(value, '');
  } catch (error) {
    throw new InvalidArgumentError((error as Error).message.trim());
  }
  return value;
}

/** A file to write at the end of a run (`--json`): its folder must be writable now, before any work. */
export function outputFile(value: string): string {
  if (existsSync(value) && statSync(value).isDirectory()) throw new InvalidArgumentError(`${value} is a folder`);
  try {
    checkWritableDir(dirname(value), 'the folder of');
  } catch (error) {
    throw new InvalidArgumentError((error as Error).message);
  }
  return value;
}

/** A comma-separated list, each item parsed by `item`. */
export function list<T>(item: (value: string) => T): (value: string) => T[] {
  return (value) => value.split(',').map((part) => item(part.trim()));
}

/** `min,max`: two numbers in [low, high] with min <= max. */
export function range(low: number, high: number): (value: string) => [number, number] {
  return (value) => {
    const parts = value.split(',').map((p) => p.trim());
    const [a, b] = parts.map(Number) as [number, number];
    if (parts.length !== 2 || parts.some((p) => p === '') || !Number.isFinite(a) || !Number.isFinite(b) || a < low || b > high || a > b) {
      throw new InvalidArgumentError(`expected min,max with ${low} <= min <= max <= ${high}, got '${value}'`);
    }
    return [a, b];
  };
}

/**
 * `flags` with the options `names` unset where they hold commander's default, when resuming: a
 * resumed run continues with its checkpoint's optimizer settings unless one is given again
 * (then the trainer applies it and says so), and its metadata records what ran.
 */
export function resumeFlags<F extends { resume?: string }>(command: Command, flags: F, names: readonly (keyof F & string)[]): F {
  return flags.resume === undefined ? flags : givenFlags(command, flags, names);
}

/** `flags` with the options `names` unset where they hold commander's default, so the library can tell a value given from a default. */
export function givenFlags<F>(command: Command, flags: F, names: readonly (keyof F & string)[]): F {
  const out = { ...flags };
  for (const name of names) if (command.getOptionValueSource(name) === 'default') delete out[name];
  return out;
}

/** A leaf command (`sit train`) of a command group. */
export function subcommand(group: Command, name: string): Command {
  const found = group.commands.find((c) => c.name() === name);
  if (found === undefined) throw new Error(`reals ${group.name()} has no subcommand ${name}`);
  return found;
}

/** The flags `argv` gives `command`, parsed (validated, defaults filled) by the command's own options, without running it. */
export function parseFlags<T>(command: Command, argv: readonly string[]): T {
  let flags: T | null = null;
  command.exitOverride().configureOutput({ writeErr: (text) => process.stderr.write(text) });
  command.action((opts: T) => { flags = opts; });
  command.parse([...argv], { from: 'user' });
  if (flags === null) throw new Error(`${command.name()} ${argv.join(' ')}: the flags did not parse`);
  return flags;
}

/** Appends "(required)" to the help of every mandatory option of `command` and its subcommands, keeping each one's other help settings. */
export function markRequiredOptions(command: Command): Command {
  const base = Help.prototype.optionDescription;
  command.configureHelp({
    ...command.configureHelp(),
    optionDescription(option: Option) {
      const text = base.call(this, option);
      return option.mandatory ? `${text} (required)` : text;
    },
  });
  for (const sub of command.commands) markRequiredOptions(sub);
  return command;
}

/** --cfg-channels: a count of leading channels (at least 1), or `all`. */
export function cfgChannels(value: string): number | 'all' {
  return value === 'all' ? 'all' : integer(1)(value);
}

/** `--offline`, and with `revision` `--revision`, of the commands that read published weights (src/hub). */
export function hubFlags(command: Command, revision: boolean): Command {
  command.option('--offline', 'download nothing (also HF_HUB_OFFLINE=1): weights must already be in the torch hub or Hugging Face caches');
  return revision ? command.option('--revision <rev>', 'branch, tag or commit of a Hugging Face repo id given as the VAE (default: main)') : command;
}

/** `--allow-vae-mismatch` of the commands that decode a generator's latents (sample, export onnx/web). */
export function allowVaeMismatchFlag(command: Command): Command {
  return command.option('--allow-vae-mismatch', 'decode with --vae-path even where --ckpt records that it was trained on another VAE (default: refuse, naming both)', false);
}

/**
 * `--precision fp32|bf16|auto` of the commands that run networks: bf16 runs the forwards under
 * bfloat16 autocast (weights and optimizer state stay float32); auto picks bf16 on CUDA and on
 * CPUs with AMX or AVX512-BF16.
 */
export function precisionFlag(command: Command, defaultValue: Precision): Command {
  return command.addOption(new Option('--precision <p>', 'fp32, bf16 (autocast), or auto: bf16 on CUDA and on CPUs with amx_bf16/avx512_bf16, else fp32')
    .choices([...PRECISIONS]).default(defaultValue));
}
