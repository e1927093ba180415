// The demo's report: report.md and report.html, written from the run's own results (the same
// numbers as the JSON files beside them), with the FID-over-SiT-steps and loss curves drawn from the
// runs' files, the sample grids and reconstructions, the command line of each step and its time.
// It opens with one sentence: whether ReaLS beat the control on FID at equal SiT steps, and
// whether the difference lies beyond the seed spread; in the alignment study's winning regime
// (study-finding.ts), first what the study found there.
import { readdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join, relative } from 'node:path';
import { FASHION_MNIST_CLASSES } from '../data/index.js';
import { formatDuration, savePlot, type PlotSeries } from '../runlog/index.js';
import { metricPoints, readMetrics, toHtml, toMarkdown, type Block } from '../pipelines/report.js';
import { SAMPLERS, baselineOf, type DemoResult, type LatentSpace, type LatentSpaceResult, type TeacherRecord } from './results.js';
import { ALIGNMENT_FINDING, ALIGNMENT_FINDING_CPU, ALIGNMENT_FINDING_LOSS_RESULTS, ALIGNMENT_REPLICATION, isFindingRegime } from './study-finding.js';

/** A row of the tables: how to read its value from one latent space's results, and which way is better. */
export interface TableRow {
  label: string;
  value: (result: LatentSpaceResult) => number | null;
  decimals: number;
  better: 'lower' | 'higher';
}

/** The rows for a run whose SiT checkpoints were scored at `curveSteps`. */
export function tableRows(curveSteps: readonly number[]): TableRow[] {
  const last = curveSteps.length - 1;
  return [
    { label: 'reconstruction MSE (test images, [-1, 1])', value: (r) => r.reconstruction.mse, decimals: 5, better: 'lower' },
    { label: 'rFID (reconstructions vs test images)', value: (r) => r.reconstruction.rfid, decimals: 3, better: 'lower' },
    ...curveSteps.map((step, i): TableRow => ({
      label: `ODE samples: FID at SiT step ${step}${i === last ? ' (final)' : ''}`, value: (r) => r.curve[i]?.ode.fid ?? null, decimals: 3, better: 'lower',
    })),
    ...SAMPLERS.flatMap((sampler): TableRow[] => {
      const name = sampler.toUpperCase();
      return [
        ...(sampler === 'sde' ? [{ label: `${name} samples: FID (final)`, value: (r: LatentSpaceResult) => r.sampling.sde.fid, decimals: 3, better: 'lower' as const }] : []),
        { label: `${name} samples: precision`, value: (r) => r.sampling[sampler].precision, decimals: 3, better: 'higher' },
        { label: `${name} samples: recall`, value: (r) => r.sampling[sampler].recall, decimals: 3, better: 'higher' },
        { label: `${name} samples: class accuracy (classifier)`, value: (r) => r.sampling[sampler].classAccuracy, decimals: 3, better: 'higher' },
      ];
    }),
    { label: 'SiT training loss (last logged mean)', value: (r) => r.sitFinalLoss, decimals: 4, better: 'lower' },
    { label: 'linear head on latents: pixel accuracy', value: (r) => r.headLatent.pixelAccuracy, decimals: 3, better: 'higher' },
    { label: 'linear head on latents: mIoU', value: (r) => r.headLatent.mIoU, decimals: 3, better: 'higher' },
    { label: 'linear head on alignment-MLP features: mIoU', value: (r) => r.headMlp?.mIoU ?? null, decimals: 3, better: 'higher' },
  ];
}

function threadsText(threads: DemoResult['threads']): string {
  return typeof threads === 'number' ? `${threads} torch thread(s)` : `torch threads by precision (${threads.bf16} in bf16 steps, ${threads.fp32} in fp32 ones)`;
}

export function mean(values: readonly number[]): number {
  return values.reduce((a, b) => a + b, 0) / values.length;
}

/** The sample standard deviation (n - 1), 0 for one value. */
export function std(values: readonly number[]): number {
  if (values.length < 2) return 0;
  const m = mean(values);
  return Math.sqrt(values.reduce((a, v) => a + (v - m) ** 2, 0) / (values.length - 1));
}

/** One value as printed, or over several seeds `mean ± sample standard deviation`. */
export function formatValues(values: readonly number[], decimals: number): string {
  if (values.length === 1) return values[0]!.toFixed(decimals);
  return `${mean(values).toFixed(decimals)} ± ${std(values).toFixed(decimals)}`;
}

/** The values of `row` for `space` over the run's seeds (none where the space has no such value). */
export function seedValues(result: DemoResult, space: string, row: TableRow): number[] {
  return result.profile.seeds.map((seed) => row.value(result.runs[String(seed)]![space]!)).filter((v): v is number => v !== null);
}

/** How `candidate` compares with `baseline` on a row: which is better, and (several seeds) whether the gap exceeds the two standard deviations together. */
export interface Comparison { better: boolean; tie: boolean; beyondSpread: boolean | null }

export function compare(candidate: readonly number[], baseline: readonly number[], better: 'lower' | 'higher'): Comparison {
  const [c, b] = [mean(candidate), mean(baseline)];
  const spread = candidate.length > 1 && baseline.length > 1 ? Math.abs(c - b) > std(candidate) + std(baseline) : null;
  return { better: better === 'lower' ? c < b : c > b, tie: c === b, beyondSpread: c === b ? null : spread };
}

export function describeComparison(comparison: Comparison, names: [string, string]): string {
  if (comparison.tie) return 'tie';
  const winner = comparison.better ? names[0] : names[1];
  return comparison.beyondSpread === null ? winner : `${winner}, ${comparison.beyondSpread ? 'beyond' : 'within'} the spread`;
}

/** The ReaLS space the headline speaks of: the first fine-tuned one (the paper's protocol), else the first. */
export function headlineSpace(spaces: readonly LatentSpace[]): LatentSpace | null {
  const reals = spaces.filter((s) => s.role === 'reals');
  return reals.find((s) => s.protocol === 'finetune') ?? reals[0] ?? null;
}

/** A signed number as the study's tables print it: `+0.20`, `−1.53` (a minus sign). */
export function signed(value: number): string {
  return `${value >= 0 ? '+' : '−'}${Math.abs(value).toFixed(2)}`;
}

/** An interval as the study's tables print it: `[−1.53, −0.13]`. */
export function interval([low, high]: [number, number]): string {
  return `[${signed(low)}, ${signed(high)}]`;
}

/** The alignment study's finding in words (ALIGNMENT_FINDING). */
export function findingSentence(): string {
  const f = ALIGNMENT_FINDING;
  return `**The alignment study (docs/study/alignment/ in the repository) found VA-VAE's vf loss winning on its primary endpoint: at ${f.channels} latent channels, ` +
    `fine-tuning the VAE with it and the training-free HOG teacher gave ${Math.abs(f.fidDifference).toFixed(2)} lower FID than the fair control ` +
    `(the same fine-tuning without alignment) at ${f.sitSteps.toLocaleString('en-US')} SiT steps: paired difference ${signed(f.fidDifference)}, ` +
    `95% interval ${interval(f.interval)}, lower on ${f.wins} of ${f.seeds} seeds (on an ${ALIGNMENT_FINDING_CPU}). The effect is small: Bonferroni-corrected for the ${f.arms} arms compared ` +
    `there, the interval is ${interval(f.correctedInterval)} and spans 0.** ${replicationSentence()} ${otherCellsSentence()}`;
}

const TEACHER_NAMES = { hog: 'HOG', supervised: 'the supervised ViT', ssl: 'the self-supervised ViT' } as const;

/** The finding's loss in the study's other cells of its arm (ALIGNMENT_FINDING_LOSS_RESULTS), width by width. */
function otherCellsSentence(): string {
  const results = ALIGNMENT_FINDING_LOSS_RESULTS;
  const widths = [...new Set(results.map((r) => r.channels))].map((channels) => {
    const atWidth = results.filter((r) => r.channels === channels).map((r) => `${TEACHER_NAMES[r.teacher]} ${signed(r.fidDifference)}, ` +
      `95% interval ${interval(r.interval)}, lower on ${r.wins} of ${r.seeds} seeds (${r.interval[1] < 0 ? 'below 0' : 'spanning 0'})`);
    return `at ${channels} channels${channels === 4 ? ' (the paper\'s width)' : ''}, ${atWidth.join('; ')}`;
  });
  const below = results.filter((r) => r.fidDifference < 0).length;
  return `The same loss in the study's other cells, each against its own width's controls: ${widths.join('; ')}. ` +
    `${below === results.length ? `All ${below}` : `${below} of the ${results.length}`} means ${below === 1 ? 'is' : 'are'} below 0, as the finding's is.`;
}

/** The replication with another CPU's kernels (ALIGNMENT_REPLICATION), as far as it has run. */
function replicationSentence(): string {
  const r = ALIGNMENT_REPLICATION;
  const within = r.interval === null ? '' : `, 95% interval ${interval(r.interval)}`;
  const seeds = `${r.seeds} of ${ALIGNMENT_FINDING.seeds} paired seeds${r.seeds < ALIGNMENT_FINDING.seeds ? ' so far' : ''}`;
  const verdict = r.interval !== null && r.interval[1] < 0 ? ': its interval, too, lies below 0 (one comparison, so no correction applies)' : '';
  return `Its replication on an ${r.cpu} (the same commands with the matmul kernels OpenBLAS picks there, so other bits throughout, scored by the classifier they train; ${seeds}): ` +
    `paired difference ${signed(r.fidDifference)}${within}, lower on ${r.wins} of ${r.seeds}${verdict}.`;
}

/**
 * The opening sentence: did the headline ReaLS space beat its baseline on FID at equal SiT steps, and
 * beyond the seed spread? In the alignment study's winning regime, the study's finding comes first.
 */
export function headlineSentence(result: DemoResult): string {
  const space = headlineSpace(result.spaces);
  if (space === null) return 'This run trained no ReaLS VAE.';
  const baseline = result.spaces.find((s) => s.id === baselineOf(space))!;
  const rows = tableRows(curveStepsOf(result));
  const finals = [rows.find((r) => r.label.startsWith('ODE samples: FID') && r.label.endsWith('(final)'))!, rows.find((r) => r.label === 'SDE samples: FID (final)')!];
  const parts = finals.map((row, i) => {
    const [mine, theirs] = [seedValues(result, space.id, row), seedValues(result, baseline.id, row)];
    return { name: i === 0 ? 'ODE' : 'SDE', mine, theirs, comparison: compare(mine, theirs, 'lower') };
  });
  const { profile } = result;
  const seeds = profile.seeds.length;
  const winners = parts.filter((p) => p.comparison.better);
  const them = `the ${baseline.id === 'control' ? 'control' : baseline.label} on FID`;
  const verdict = winners.length === 2 ? `beat ${them}` : winners.length === 0 ? `did not beat ${them}` : `beat ${them} with the ${winners[0]!.name} sampler only`;
  const numbers = parts.map((p) => `${formatValues(p.mine, 2)} vs ${formatValues(p.theirs, 2)} (${p.name})`).join(' and ');
  const spread = seeds < 2
    ? 'with one seed there is no spread to judge the difference by (the full profile runs three)'
    : parts[0]!.comparison.beyondSpread === parts[1]!.comparison.beyondSpread
      ? `both differences are ${parts[0]!.comparison.beyondSpread ? 'beyond' : 'within'} the seed spread (${seeds} seeds)`
      : parts.map((p) => `the ${p.name} difference is ${p.comparison.beyondSpread ? 'beyond' : 'within'} the seed spread`).join(', ') + ` (${seeds} seeds)`;
  const atEqualSteps = `equal SiT steps (${profile.sit.steps.toLocaleString('en-US')}), ${space.label} ${verdict}: ${numbers}`;
  if (!isFindingRegime(space, profile.vae.latentChannels)) return `**At ${atEqualSteps}; ${spread}.**`;
  const f = ALIGNMENT_FINDING;
  const smaller = profile.samples < f.samples && seeds < f.seeds ? 'smaller ' : '';
  return `${findingSentence()} This run, ${seeds === 1 ? 'one seed' : `${seeds} seeds`} at the \`${profile.name}\` profile's ${smaller}budget ` +
    `(${profile.samples.toLocaleString('en-US')} samples per checkpoint, against the study's ${f.samples.toLocaleString('en-US')} on each of ${f.seeds} paired seeds), ` +
    `cannot confirm or refute it: at ${atEqualSteps}${seeds < 2 ? '' : `; ${spread}`}.`;
}

/** The SiT steps whose checkpoints were scored. */
export function curveStepsOf(result: DemoResult): number[] {
  const first = result.runs[String(result.profile.seeds[0])]![result.spaces[0]!.id]!;
  return first.curve.map((p) => p.step);
}

/** The points of `name` in a run's metrics.jsonl. */
function metricSeries(path: string, name: string): [number, number][] {
  return metricPoints(readMetrics(path), name);
}

/** The figures drawn from the run's files; returns their paths relative to the output folder. */
async function drawCurves(result: DemoResult): Promise<{ src: string; alt: string }[]> {
  const { out, spaces } = result;
  const seed = result.profile.seeds[0]!;
  const runDir = (space: string, kind: 'vae' | 'sit'): string => {
    const dir = join(out, `seed-${seed}`, space, kind);
    const run = readdirSync(dir).find((name) => /^\d{3}-/.test(name));
    if (run === undefined) throw new Error(`report: no run folder in ${dir}`);
    return join(dir, run);
  };
  const reals = spaces.filter((s) => s.role === 'reals');
  const figures: { file: string; alt: string; series: PlotSeries[]; logY: boolean }[] = [
    {
      file: 'curves-fid.png', logY: true,
      alt: `FID of ODE samples against SiT training steps, one curve per latent space (mean over ${result.profile.seeds.length} seed(s))`,
      series: spaces.map((space) => ({
        name: space.id,
        points: curveStepsOf(result).map((step, i): [number, number] => [step, mean(result.profile.seeds.map((s) => result.runs[String(s)]![space.id]!.curve[i]!.ode.fid))]),
      })),
    },
    {
      file: 'curves-sit.png', alt: `SiT training loss (velocity MSE) on each latent space, seed ${seed}`, logY: false,
      series: spaces.map((space) => ({ name: space.id, points: metricSeries(join(runDir(space.id, 'sit'), 'metrics.jsonl'), 'loss') })),
    },
    {
      file: 'curves-vae-reconstruction.png', alt: `VAE training: reconstruction loss (MSE) of each VAE run (stage 1, then the fine-tuning runs from their own step 0), seed ${seed}`, logY: true,
      series: spaces.map((space) => ({ name: space.id, points: metricSeries(join(runDir(space.id, 'vae'), 'metrics.jsonl'), 'rec') })),
    },
    ...(reals.length === 0 ? [] : [{
      file: 'curves-vae-alignment.png', logY: false,
      alt: `VAE training: cosine similarity of the alignment MLPs' outputs to the teacher's patch tokens, seed ${seed}`,
      series: reals.map((space) => ({ name: space.id, points: metricSeries(join(runDir(space.id, 'vae'), 'metrics.jsonl'), 'patch_cos') })),
    }]),
  ];
  for (const f of figures) await savePlot(join(out, 'figures', f.file), f.series, { title: f.alt.split(',')[0], logY: f.logY });
  return figures.map((f) => ({ src: `figures/${f.file}`, alt: f.alt }));
}

/** Writes report.md and report.html (and the curve PNGs) into result.out. */
export async function writeReport(result: DemoResult): Promise<void> {
  const { out, profile, spaces } = result;
  const seeds = profile.seeds;
  const rows = tableRows(curveStepsOf(result));
  const cellOf = (space: string, row: TableRow) => {
    const values = seedValues(result, space, row);
    return values.length === 0 ? '—' : formatValues(values, row.decimals);
  };
  const reals = spaces.filter((s) => s.role === 'reals');
  const comparisons = reals.map((space) => {
    const baseline = baselineOf(space);
    let wins = 0;
    let compared = 0;
    let beyond = 0;
    const cells = rows.map((row) => {
      const [mine, theirs] = [seedValues(result, space.id, row), seedValues(result, baseline, row)];
      if (mine.length === 0 || theirs.length === 0) return '—';
      const comparison = compare(mine, theirs, row.better);
      compared++;
      if (comparison.better) wins++;
      if (comparison.beyondSpread === true) beyond++;
      return describeComparison(comparison, ['ReaLS', baseline]);
    });
    return { space, baseline, cells, wins, compared, beyond };
  });

  const teacherLines = Object.values(result.teachers).map((record) => teacherLine(record));
  const t = profile.teacher;
  const hasVitTeacher = Object.values(result.teachers).some((record) => record.kind !== 'hog');
  const alignment = (s: LatentSpace) => (s.loss === 'vf' ? 'VA-VAE\'s vf loss with its adaptive weight' : `alignment weight ${s.alignWeight}`);
  const firstSeed = seeds[0]!;
  const blocks: Block[] = [
    { kind: 'h', level: 1, text: 'reals demo: ReaLS on Fashion-MNIST' },
    { kind: 'p', text: headlineSentence(result) },
    {
      kind: 'p', text: `Profile \`${profile.name}\`, ${seeds.length} seed(s) (${seeds.join(', ')}); ${threadsText(result.threads)} on a ${cpus().length}-core ` +
        `${cpus()[0]?.model ?? 'CPU'}; the whole run took ${formatDuration(result.totalSeconds)} (${result.totalSeconds.toFixed(0)} s). ` +
        `Every number below is read from this run's files (\`metrics.json\`, \`seed-N/<latent space>/*.json\`).`,
    },
    { kind: 'h', level: 2, text: 'The latent spaces' },
    {
      kind: 'list', items: spaces.map((s) => `\`${s.id}\`: ${s.label}` + (s.role === 'pretrained'
        ? ` — ${profile.vae.steps} steps from scratch at lr ${profile.vae.lr}, no alignment: the stand-in for the pretrained SD-VAE the paper starts from.`
        : s.protocol === 'finetune'
          ? ` — the stage-1 VAE fine-tuned for ${profile.finetune.steps} more steps at lr ${profile.finetune.lr}, ${alignment(s)}` +
            `${s.role === 'control' ? ' (the control: the same fine-tuning without alignment, separating the effect of alignment from that of more training)' : ''}.`
          : ` — ${profile.vae.steps} steps from scratch with ${alignment(s)}, compared with the stage-1 VAE (the same steps without alignment).`)),
    },
    {
      kind: 'p', text: `Every VAE of a seed has the same architecture (${profile.vae.latentChannels} latent channels), data order and seed, and is trained by the same \`reals align train\`; ` +
        `the alignment weight is \`--patch-weight\`/\`--cls-weight\`${spaces.some((s) => s.loss === 'vf') ? ' (the vf loss: `--align-loss vf`, no CLS term, VA-VAE\'s adaptive weight)' : ''}. A SiT of the same size is trained on each latent space for ${profile.sit.steps} steps, ` +
        `and its checkpoints at steps ${curveStepsOf(result).join(', ')} are sampled and scored. ${seeds.length > 1 ? 'Cells: mean ± standard deviation over the seeds.' : ''}`,
    },
    { kind: 'table', header: ['metric', ...spaces.map((s) => `\`${s.id}\``), 'better'], rows: rows.map((row) => [row.label, ...spaces.map((s) => cellOf(s.id, row)), row.better]) },
    { kind: 'h', level: 2, text: 'ReaLS against its baseline' },
    {
      kind: 'p', text: 'Each fine-tuned ReaLS VAE is compared with the control (the same start and steps without alignment); each from-scratch one with the ' +
        'stage-1 VAE (the same steps without alignment). ' + (seeds.length > 1
        ? '"Beyond the spread": the gap exceeds the two standard deviations together (a rough, conservative test).'
        : 'With one seed, differences of this size can be noise.'),
    },
    { kind: 'table', header: ['metric', ...comparisons.map((c) => `\`${c.space.id}\` vs \`${c.baseline}\``)], rows: rows.map((row, i) => [row.label, ...comparisons.map((c) => c.cells[i]!)]) },
    {
      kind: 'list', items: comparisons.map((c) => `\`${c.space.id}\` is better than \`${c.baseline}\` on ${c.wins} of ${c.compared} metrics` +
        (seeds.length > 1 ? `; ${c.beyond} of the ${c.compared} differences (either way) exceed the spread.` : '.')),
    },
  ];
  if (seeds.length > 1) {
    blocks.push({ kind: 'h', level: 3, text: 'Per seed' }, {
      kind: 'table', header: ['metric', ...spaces.flatMap((s) => seeds.map((seed) => `\`${s.id}\`, seed ${seed}`))],
      rows: rows.map((row) => [row.label, ...spaces.flatMap((s) => seeds.map((seed) => {
        const value = row.value(result.runs[String(seed)]![s.id]!);
        return value === null ? '—' : value.toFixed(row.decimals);
      }))]),
    });
  }
  const curves = await drawCurves(result);
  const head = result.runs[String(firstSeed)]![spaces[0]!.id]!.headLatent;
  blocks.push(
    { kind: 'h', level: 2, text: 'FID over SiT training, and the loss curves' },
    ...curves.map((f): Block => ({ kind: 'img', ...f })),
    { kind: 'h', level: 2, text: 'What stands in for what' },
    {
      kind: 'list', items: [
        hasVitTeacher
          ? `**Teachers.** DINOv2's weights cannot be downloaded here, so the frozen ViT teacher is DINOv2's architecture (\`DinoVisionTransformer\`, ` +
            `patch 4 on the 32x32 images, width ${t.embedDim}, depth ${t.depth}) trained on Fashion-MNIST. It is saved in torch-hub naming and read by ` +
            '`--dino-model`/`--dino-ckpt` as a DINOv2 checkpoint would be.'
          : '**Teachers.** DINOv2\'s weights cannot be downloaded here; the HOG teacher needs none.',
        ...teacherLines,
        '**Losses.** No LPIPS (its VGG weights cannot be downloaded) and no PatchGAN term (`--disc-start` after the last step): the VAEs train on MSE + KL (+ alignment).',
        `**Metrics.** FID, rFID, precision and recall (k = 3) are computed as the ADM evaluator does, but in the 128-d feature space of a separately trained ` +
        `Fashion-MNIST CNN (test accuracy ${result.classifier.testAccuracy.toFixed(3)}), not Inception's; the reference batch is the first ${profile.testImages} test images. ` +
        'The numbers are not comparable with ImageNet FIDs. Class accuracy: how often the classifier assigns a sample the class it was sampled for (chance: 0.1).',
        `**Sampling.** ${profile.samples} samples per latent space, sampler and checkpoint (classes in turn), CFG scale ${profile.cfgScale} on all latent channels, ` +
        `${profile.samplingSteps} time-grid points: ODE heun2 at every scored checkpoint, SDE Euler-Maruyama (last step Mean) at the final one.`,
        `**Head readout.** \`reals heads train-linear\` on Fashion-MNIST "class as mask" (pixels above 25/255 take the image's class, the rest background; 11 classes): ` +
        `a linear head fitted on ${head.train} images, scored on ${head.heldOut} held out, ` +
        'on the latents themselves (every VAE) and on the alignment MLPs\' teacher-like features (ReaLS only; the other VAEs have no trained MLPs).',
      ],
    },
    { kind: 'h', level: 2, text: 'Samples at the final SiT step, one row per class' },
    { kind: 'p', text: `Rows, top to bottom: ${FASHION_MNIST_CLASSES.join(', ')}. Seed ${firstSeed}.` },
    ...spaces.flatMap((s) => SAMPLERS.map((sampler): Block => ({
      kind: 'img', src: `figures/samples-${s.id}-${sampler}.png`, alt: `${s.label}, ${sampler.toUpperCase()} sampler, CFG ${profile.cfgScale}`,
    }))),
    { kind: 'h', level: 2, text: 'Reconstructions' },
    { kind: 'p', text: 'Top row: test images; bottom row: decode(encode(x).mode()).' },
    ...spaces.map((s): Block => ({ kind: 'img', src: `figures/reconstructions-${s.id}-seed${firstSeed}.png`, alt: `${s.label}, seed ${firstSeed}` })),
    ...webPageBlocks(result),
    { kind: 'h', level: 2, text: 'Reproduce step by step' },
    {
      kind: 'p', text: 'Each step below ran as the command shown (parsed by that command\'s own flags); run them in order to redo the demo by hand. ' +
        'Steps marked *demo only* have no command of their own: the supervised ablation teacher, the evaluation classifier and the scoring in its feature space (src/demo).',
    },
    {
      kind: 'table', header: ['step', 'time', 'command'],
      rows: result.steps.map((s) => [s.name, `${s.seconds.toFixed(1)} s`, s.command === null ? '*demo only*' : `\`${s.command}\``]),
    },
    { kind: 'code', text: [`# this whole run: ${demoCommandLine(result)}`, ...result.steps.flatMap((s) => (s.command === null ? [] : [s.command]))].join('\n') },
  );
  const title = 'reals demo: ReaLS on Fashion-MNIST';
  writeFileSync(join(out, 'report.md'), toMarkdown(blocks));
  writeFileSync(join(out, 'report.html'), toHtml(blocks, title));
}

/** The section on the exported page: where it is and the one command that serves it. */
function webPageBlocks(result: DemoResult): Block[] {
  const page = result.webPage;
  if (page === null) return [];
  if ('error' in page) return [{ kind: 'h', level: 2, text: 'In the browser' }, { kind: 'p', text: `No page was written: ${page.error}` }];
  return [
    { kind: 'h', level: 2, text: 'In the browser' },
    {
      kind: 'p', text: `[The page](${relative(result.out, page.dir) || '.'}/index.html) samples the ReaLS SiT in the browser with onnxruntime-web (WebGPU, else wasm), decodes with the VAE ` +
        'and overlays the segmentation read out of the latents by the alignment MLPs and the linear head. Serve it with one command, then open the address it prints:',
    },
    { kind: 'code', text: `reals serve ${page.dir}` },
  ];
}

/** The `reals demo` line that repeats this run. */
export function demoCommandLine(result: Pick<DemoResult, 'profile' | 'cells' | 'out'>): string {
  const { cells } = result;
  return `reals demo --profile ${result.profile.name} --seeds ${result.profile.seeds.join(',')} --teacher ${cells.teachers.join(',')} ` +
    `--protocol ${cells.protocols.join(',')} --loss ${cells.losses.join(',')} --align-weight ${cells.alignWeights.join(',')} ` +
    `--latent-channels ${result.profile.vae.latentChannels} --out ${result.out}`;
}

/** The report's line on one teacher: what it is, and its linear-probe accuracy. */
function teacherLine(t: TeacherRecord): string {
  const probe = `linear-probe accuracy ${t.probeAccuracy.toFixed(3)}`;
  const random = `a randomly initialised backbone: ${t.randomProbeAccuracy?.toFixed(3)}`;
  switch (t.kind) {
    case 'ssl':
      return '**Self-supervised teacher** (`reals teacher train`, DINO/iBOT self-distillation with KoLeo, no labels): ' +
        `${probe} on frozen features (${random}), ${t.params.toLocaleString('en-US')} parameters.`;
    case 'supervised':
      return '**Supervised teacher** (the ablation; trained as a Fashion-MNIST classifier, so class labels reach the latents through it): ' +
        `test accuracy ${t.testAccuracy?.toFixed(3)}, ${probe} (${random}).`;
    case 'hog':
      return '**HOG teacher** (`--dino-model hog`, the alignment study\'s: histograms of oriented gradients on the 4-pixel cells of the latent grid, ' +
        `nothing trained and no weights; its CLS stand-in is the mean token): ${probe} on its features.`;
  }
}
