// `reals demo`: the whole method on Fashion-MNIST with a report (src/demo does the work).
import { Command, Option } from 'commander';
import { DEMO_PROFILES, runDemo, type ProfileName } from '../demo/index.js';
import { integer } from './sit.js';

interface DemoFlags { profile: ProfileName; out: string; threads: number }

export function demoCommand(): Command {
  return new Command('demo')
    .description('train a ViT teacher, a plain and a ReaLS VAE, a SiT on each, sample, score and report, on Fashion-MNIST (no downloads)')
    .addOption(new Option('--profile <p>', 'quick: under 15 minutes on 2 cores; full: longer, 3 seeds; test: seconds, for the test suite')
      .choices(Object.keys(DEMO_PROFILES)).default('quick'))
    .option('--out <dir>', 'output folder (report.md, report.html, figures/, the runs)', 'demo-out')
    .option('--threads <n>', 'torch threads (1 is fastest on a busy 2-core machine)', integer(1), 1)
    .action(async (flags: DemoFlags) => {
      await runDemo({ profile: DEMO_PROFILES[flags.profile], out: flags.out, threads: flags.threads });
    });
}
