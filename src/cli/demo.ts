// `reals demo`: the whole method on Fashion-MNIST with a report (src/demo does the work), and
// `reals demo merge`: one report over several demo runs (the reproduction study's cells).
import { Command, Option } from 'commander';
import {
  ALIGN_ARM_NAMES, ALIGN_STUDY_PROFILES, ALIGN_TEACHERS, CHANNEL_STUDY_PROFILES, readAlignCellFolders, runAlignCell, trainStageOneVae, writeAlignStudyReport,
  type AlignArm, type AlignStudyProfileName, type AlignTeacher, ALIGN_LOSSES, DEFAULT_CELLS, DEMO_PROFILES, PROTOCOLS, TEACHER_KINDS, mergeDemoRuns, runChannelCell, runDemo, studyClassifier, writeChannelStudyReport,
  type ChannelStudyProfileName, type DemoCells, type ProfileName,
} from '../demo/index.js';
import { integer, list, number, oneOf } from './parse.js';
import { PRECISIONS, type Precision } from '../torch/precision.js';

interface DemoFlags {
  profile: ProfileName;
  out: string;
  threads?: number;
  seeds?: number[];
  teacher: DemoCells['teachers'];
  protocol: DemoCells['protocols'];
  loss: DemoCells['losses'];
  alignWeight: number[];
  latentChannels?: number;
  precision?: Precision;
}

export function demoCommand(): Command {
  const demo = new Command('demo')
    .enablePositionalOptions()
    .description('train teachers, a pretrained VAE, its fine-tuned control and ReaLS VAEs, a SiT on each; sample, score and report, on Fashion-MNIST (no downloads)')
    .addOption(new Option('--profile <p>', 'quick: under 15 minutes on 2 cores; full: longer, 3 seeds; test: seconds, for the test suite')
      .choices(Object.keys(DEMO_PROFILES)).default('quick'))
    .option('--out <dir>', 'output folder (report.md, report.html, figures/, the runs)', 'demo-out')
    .option('--threads <n>', 'torch threads for every step (default: all CPUs in bf16 steps, libtorch\'s default in fp32 ones; 1 per run when runs share the machine)', integer(1))
    .option('--seeds <list>', 'comma-separated seeds in place of the profile\'s (quick: 0; full: 0,1,2)', list(integer(0)))
    .option('--teacher <list>', `teachers to align to: ${TEACHER_KINDS.join(', ')} (a self-supervised ViT, the supervised ablation, ` +
      `or the training-free HOG teacher that the alignment study found a win with)`, list(oneOf(TEACHER_KINDS)), DEFAULT_CELLS.teachers)
    .option('--protocol <list>', `${PROTOCOLS.join(', ')}: fine-tune the stage-1 VAE (the paper's), or train the ReaLS VAE from scratch`,
      list(oneOf(PROTOCOLS)), DEFAULT_CELLS.protocols)
    .option('--loss <list>', `alignment losses: ${ALIGN_LOSSES.join(', ')} (ReaLS's cosine, one ReaLS VAE per --align-weight; ` +
      'or VA-VAE\'s vf loss with its adaptive weight, one ReaLS VAE)', list(oneOf(ALIGN_LOSSES)), DEFAULT_CELLS.losses)
    .option('--align-weight <list>', 'cos alignment weights (--patch-weight and --cls-weight of align train), one ReaLS VAE each',
      list(number(0)), DEFAULT_CELLS.alignWeights)
    .option('--latent-channels <n>', 'latent channels of every VAE (VA-VAE\'s reconstruction-generation dilemma grows from 4 to 32; ' +
      `default: the profile's, ${[...new Set(Object.values(DEMO_PROFILES).map((p) => p.vae.latentChannels))].join(' or ')})`, integer(1))
    .addOption(new Option('--precision <p>', 'every training, sampling and readout step in fp32, bf16 or auto (default: the commands\' own, auto)')
      .choices([...PRECISIONS]))
    .action(async (flags: DemoFlags) => {
      const profile = DEMO_PROFILES[flags.profile];
      await runDemo({
        profile: { ...profile, vae: { ...profile.vae, latentChannels: flags.latentChannels ?? profile.vae.latentChannels } },
        out: flags.out, threads: flags.threads, seeds: flags.seeds, precision: flags.precision,
        cells: { teachers: flags.teacher, protocols: flags.protocol, alignWeights: flags.alignWeight, losses: flags.loss },
      });
    });
  demo.addCommand(new Command('merge')
    .description('one report over several finished demo runs of the same profile (their seeds and latent spaces together), or over folders of alignment-study cells')
    .argument('<runs...>', 'demo output folders (each with metrics.json), or folders of alignment cell files (c<C>-<arm>[-<teacher>]-seed<S>.json)')
    .requiredOption('--out <dir>', 'folder of the merged report.md, report.html and metrics.json (demo runs) or README.md and alignment-c<C>.png (cells)')
    .action(async (runs: string[], flags: { out: string }) => {
      const cellFolders = readAlignCellFolders(runs);
      if (cellFolders !== null) {
        const { cells } = await writeAlignStudyReport(flags.out, cellFolders);
        console.log(`pooled ${cells} alignment cells from ${runs.length} folders; report: ${flags.out}/README.md`);
        return;
      }
      const merged = await mergeDemoRuns(runs, flags.out);
      console.log(`merged ${runs.length} runs: seeds ${merged.profile.seeds.join(', ')}, ${merged.spaces.length} latent spaces; report: ${flags.out}/report.md`);
    }));
  demo.addCommand(new Command('channels')
    .description('one cell of the latent-channel study (docs/study/channels/PROTOCOL.md): a plain VAE of --channels, its rFID and iFID, a SiT on its latents scored at 4 checkpoints; skipped when its metrics file exists, resumed from its last finished stage otherwise')
    .requiredOption('--channels <n>', 'latent channels of the VAE', integer(1))
    .requiredOption('--seed <n>', 'seed of the VAE, SiT and sampling', integer(0))
    .addOption(new Option('--profile <p>', 'study: the protocol\'s sizes; test: seconds, for the test suite').choices(Object.keys(CHANNEL_STUDY_PROFILES)).default('study'))
    .option('--work <dir>', 'checkpoints, latents, samples and the cached evaluation classifier', 'study-work')
    .option('--out <dir>', 'folder of the cell\'s metrics file c<C>-seed<S>.json', 'docs/study/channels')
    .action(async (flags: { channels: number; seed: number; profile: ChannelStudyProfileName; work: string; out: string }) => {
      await runChannelCell({ profile: CHANNEL_STUDY_PROFILES[flags.profile], channels: flags.channels, seed: flags.seed, work: flags.work, out: flags.out });
    }));
  demo.addCommand(new Command('channels-classifier')
    .description('train (or check) the latent-channel study\'s evaluation classifier once, before cells run in parallel')
    .addOption(new Option('--profile <p>', 'study or test').choices(Object.keys(CHANNEL_STUDY_PROFILES)).default('study'))
    .option('--work <dir>', 'the study\'s work folder', 'study-work')
    .action(async (flags: { profile: ChannelStudyProfileName; work: string }) => {
      const { record } = await studyClassifier(CHANNEL_STUDY_PROFILES[flags.profile], flags.work, (line) => console.log(line));
      console.log(`evaluation classifier: sha256 ${record.sha256}, test accuracy ${record.testAccuracy.toFixed(4)} on ${record.testImages} images`);
    }));
  demo.addCommand(new Command('channels-report')
    .description('the latent-channel study\'s table and plot: README.md and channels.png from the cell files c<C>-seed<S>.json of --out')
    .option('--out <dir>', 'folder of the cell files, and of README.md and channels.png', 'docs/study/channels')
    .action(async (flags: { out: string }) => {
      const { cells } = await writeChannelStudyReport(flags.out);
      console.log(`${flags.out}/README.md and channels.png from ${cells} cells`);
    }));
  demo.addCommand(new Command('align')
    .description('one cell of the alignment study (docs/study/alignment/PROTOCOL.md): the stage-1 VAE of the latent-channel cell (--channels, --seed) fine-tuned by --arm with --teacher, then rFID, iFID and a SiT scored at 4 checkpoints; skipped when its metrics file exists, resumed from its last finished stage otherwise')
    .requiredOption('--channels <n>', 'latent channels of the VAE', integer(1))
    .addOption(new Option('--arm <arm>', `${ALIGN_ARM_NAMES.join(', ')} (required but with --stage-one-only)`).choices(ALIGN_ARM_NAMES))
    .addOption(new Option('--teacher <t>', 'the teacher of the aligned arms (control and eq have none)').choices([...ALIGN_TEACHERS]).default('hog'))
    .requiredOption('--seed <n>', 'seed of the stage-1 VAE, the fine-tuning, the SiT and sampling', integer(0))
    .option('--stage-one-only', 'train (or find) the stage-1 VAE of (--channels, --seed) and stop: run it once per seed before that seed\'s arms run in parallel')
    .addOption(new Option('--profile <p>', 'study: the protocol\'s sizes; test: seconds, for the test suite').choices(Object.keys(ALIGN_STUDY_PROFILES)).default('study'))
    .option('--work <dir>', 'checkpoints, latents, samples, the teachers and the cached evaluation classifier', 'study-work')
    .option('--out <dir>', 'folder of the cell\'s metrics file', 'docs/study/alignment')
    .action(async (flags: { channels: number; arm?: AlignArm; teacher: AlignTeacher; seed: number; stageOneOnly?: boolean; profile: AlignStudyProfileName; work: string; out: string }) => {
      const profile = ALIGN_STUDY_PROFILES[flags.profile];
      if (flags.stageOneOnly === true) {
        const vae = await trainStageOneVae({ profile: profile.base, channels: flags.channels, seed: flags.seed, work: flags.work, log: (line) => console.log(line) });
        console.log(`stage-1 VAE of c${flags.channels}-seed${flags.seed}: ${vae.vaePath}`);
        return;
      }
      if (flags.arm === undefined) throw new Error(`demo align: --arm is required (one of ${ALIGN_ARM_NAMES.join(', ')}) unless --stage-one-only`);
      await runAlignCell({ profile, channels: flags.channels, arm: flags.arm, teacher: flags.teacher, seed: flags.seed, work: flags.work, out: flags.out });
    }));
  demo.addCommand(new Command('align-report')
    .description('the alignment study\'s tables and plots: README.md and a plot a width (alignment-c<C>.png) from the cell files of --out (paired differences from the control, 95% intervals)')
    .option('--out <dir>', 'folder of the cell files, and of README.md and the plots', 'docs/study/alignment')
    .action(async (flags: { out: string }) => {
      const { cells } = await writeAlignStudyReport(flags.out);
      console.log(`${flags.out}/README.md and its plots from ${cells} cells`);
    }));
  return demo;
}
