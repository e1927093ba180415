// The demo's report: report.md and report.html, written from the run's own results (the same
// numbers as the JSON files beside them), with the loss curves drawn from the runs' metrics.jsonl,
// the sample grids and reconstructions, the command line of each step and the time it took.
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { FASHION_MNIST_CLASSES } from '../data/index.js';
import { formatDuration, parseMetrics, savePlot, type PlotSeries } from '../train/index.js';
import { RESULT_FILES, SAMPLERS, VARIANTS, type DemoResult, type Variant, type VariantResult } from './results.js';

/** A row of the comparison table: which result file and field it shows, and which way is better. */
export interface TableRow {
  label: string;
  file: keyof typeof RESULT_FILES;
  field: string;
  decimals: number;
  better: 'lower' | 'higher';
}

export const TABLE_ROWS: readonly TableRow[] = [
  { label: 'reconstruction MSE (test images, [-1, 1])', file: 'reconstruction', field: 'mse', decimals: 5, better: 'lower' },
  ...SAMPLERS.flatMap((sampler): TableRow[] => {
    const name = sampler.toUpperCase();
    return [
      { label: `${name} samples: FID (classifier features)`, file: sampler, field: 'fid', decimals: 3, better: 'lower' },
      { label: `${name} samples: precision`, file: sampler, field: 'precision', decimals: 3, better: 'higher' },
      { label: `${name} samples: recall`, file: sampler, field: 'recall', decimals: 3, better: 'higher' },
      { label: `${name} samples: class accuracy (classifier)`, file: sampler, field: 'classAccuracy', decimals: 3, better: 'higher' },
    ];
  }),
  { label: 'linear head on latents: pixel accuracy', file: 'headLatent', field: 'pixelAccuracy', decimals: 3, better: 'higher' },
  { label: 'linear head on latents: mIoU', file: 'headLatent', field: 'mIoU', decimals: 3, better: 'higher' },
  { label: 'linear head on alignment-MLP features: mIoU', file: 'headMlp', field: 'mIoU', decimals: 3, better: 'higher' },
];

/** The value of `row` in one variant's results (null: the variant has none, as the plain VAE has no MLPs). */
export function rowValue(result: VariantResult, row: TableRow): number | null {
  const source = row.file === 'reconstruction' ? result.reconstruction
    : row.file === 'ode' || row.file === 'sde' ? result.sampling[row.file]
      : row.file === 'headLatent' ? result.headLatent : result.headMlp;
  return source === null ? null : (source as unknown as Record<string, number>)[row.field]!;
}

/** One value as printed, or over several seeds `mean ± sample standard deviation`. */
function mean(values: readonly number[]): number {
  return values.reduce((a, b) => a + b, 0) / values.length;
}

/** The sample standard deviation (n - 1), 0 for one value. */
function std(values: readonly number[]): number {
  if (values.length < 2) return 0;
  const m = mean(values);
  return Math.sqrt(values.reduce((a, v) => a + (v - m) ** 2, 0) / (values.length - 1));
}

export function formatValues(values: readonly number[], decimals: number): string {
  if (values.length === 1) return values[0]!.toFixed(decimals);
  return `${mean(values).toFixed(decimals)} ± ${std(values).toFixed(decimals)}`;
}

const VARIANT_NAMES: Record<Variant, string> = { plain: 'plain VAE', reals: 'ReaLS VAE' };

type Block =
  | { kind: 'h'; level: number; text: string }
  | { kind: 'p'; text: string }
  | { kind: 'list'; items: string[] }
  | { kind: 'table'; header: string[]; rows: string[][] }
  | { kind: 'img'; src: string; alt: string }
  | { kind: 'code'; text: string };

function toMarkdown(blocks: readonly Block[]): string {
  const cell = (text: string) => text.replaceAll('|', '\\|');
  return blocks.map((b) => {
    switch (b.kind) {
      case 'h': return `${'#'.repeat(b.level)} ${b.text}`;
      case 'p': return b.text;
      case 'list': return b.items.map((item) => `- ${item}`).join('\n');
      case 'table': return [b.header, b.header.map(() => '---'), ...b.rows].map((r) => `| ${r.map(cell).join(' | ')} |`).join('\n');
      case 'img': return `![${b.alt}](${b.src})`;
      case 'code': return `\`\`\`bash\n${b.text}\n\`\`\``;
    }
  }).join('\n\n') + '\n';
}

function escapeHtml(text: string): string {
  return text.replace(/[<>&"]/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** The Markdown inline marks the report uses (`code`, **bold**, *italic*) as HTML, the rest escaped. */
function inlineHtml(text: string): string {
  const emphasis = (part: string) => escapeHtml(part).replace(/\*\*(.+?)\*\*/g, '<strong>$1</strong>').replace(/\*(.+?)\*/g, '<em>$1</em>');
  return text.split('`').map((part, i) => (i % 2 === 1 ? `<code>${escapeHtml(part)}</code>` : emphasis(part))).join('');
}

function toHtml(blocks: readonly Block[], title: string): string {
  const body = blocks.map((b) => {
    switch (b.kind) {
      case 'h': return `<h${b.level}>${inlineHtml(b.text)}</h${b.level}>`;
      case 'p': return `<p>${inlineHtml(b.text)}</p>`;
      case 'list': return `<ul>${b.items.map((item) => `<li>${inlineHtml(item)}</li>`).join('')}</ul>`;
      case 'table': return `<table><tr>${b.header.map((h) => `<th>${inlineHtml(h)}</th>`).join('')}</tr>` +
        `${b.rows.map((r) => `<tr>${r.map((c) => `<td>${inlineHtml(c)}</td>`).join('')}</tr>`).join('')}</table>`;
      case 'img': return `<figure><img src="${escapeHtml(b.src)}" alt="${escapeHtml(b.alt)}"><figcaption>${escapeHtml(b.alt)}</figcaption></figure>`;
      case 'code': return `<pre><code>${escapeHtml(b.text)}</code></pre>`;
    }
  }).join('\n');
  const style = 'body{font-family:sans-serif;max-width:1000px;margin:2em auto;padding:0 1em}table{border-collapse:collapse}' +
    'td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}img{max-width:100%;image-rendering:pixelated}pre{background:#f4f4f4;padding:8px;overflow-x:auto}';
  return `<!doctype html>\n<html><head><meta charset="utf-8"><title>${escapeHtml(title)}</title><style>${style}</style></head>\n<body>\n${body}\n</body></html>\n`;
}

/** The points of `name` in a run's metrics.jsonl. */
function metricSeries(path: string, name: string): [number, number][] {
  if (!existsSync(path)) throw new Error(`report: ${path} is missing (the run wrote no metrics)`);
  return parseMetrics(readFileSync(path, 'utf8'), path).filter((r) => Number.isFinite(r.values[name])).map((r) => [r.step, r.values[name]!]);
}

/** The loss-curve figures of the first seed; returns their paths relative to the output folder. */
async function drawCurves(result: DemoResult): Promise<{ src: string; alt: string }[]> {
  const { out } = result;
  const seed = result.profile.seeds[0]!;
  const runDir = (variant: Variant, kind: 'vae' | 'sit'): string => {
    const dir = join(out, `seed-${seed}`, variant, kind);
    const run = readdirSync(dir).find((name) => /^\d{3}-/.test(name));
    if (run === undefined) throw new Error(`report: no run folder in ${dir}`);
    return join(dir, run);
  };
  const figures: { file: string; alt: string; series: PlotSeries[]; logY: boolean }[] = [
    {
      file: 'curves-vae-reconstruction.png', alt: 'VAE training: reconstruction loss (MSE), plain vs ReaLS', logY: true,
      series: VARIANTS.map((v) => ({ name: VARIANT_NAMES[v], points: metricSeries(join(runDir(v, 'vae'), 'metrics.jsonl'), 'rec') })),
    },
    {
      file: 'curves-vae-alignment.png', alt: 'VAE training: cosine similarity of the MLP outputs to the teacher\'s tokens (trained only for ReaLS)', logY: false,
      series: VARIANTS.flatMap((v) => (['patch_cos', 'cls_cos'] as const).map((m) => ({
        name: `${VARIANT_NAMES[v]} ${m}`, points: metricSeries(join(runDir(v, 'vae'), 'metrics.jsonl'), m),
      }))),
    },
    {
      file: 'curves-sit.png', alt: 'SiT training loss (velocity MSE) on each latent space', logY: false,
      series: VARIANTS.map((v) => ({ name: VARIANT_NAMES[v], points: metricSeries(join(runDir(v, 'sit'), 'metrics.jsonl'), 'loss') })),
    },
    {
      file: 'curves-teacher-classifier.png', alt: 'Cross-entropy of the ViT teacher and of the evaluation classifier', logY: true,
      series: [
        { name: 'ViT teacher', points: metricSeries(join(out, 'teacher', 'metrics.jsonl'), 'loss') },
        { name: 'classifier', points: metricSeries(join(out, 'classifier', 'metrics.jsonl'), 'loss') },
      ],
    },
  ];
  for (const f of figures) await savePlot(join(out, 'figures', f.file), f.series, { title: f.alt.split(':')[0], logY: f.logY });
  return figures.map((f) => ({ src: `figures/${f.file}`, alt: f.alt }));
}


/** Writes report.md and report.html (and the loss-curve PNGs) into result.out. */
export async function writeReport(result: DemoResult): Promise<void> {
  const { out, profile } = result;
  const seeds = profile.seeds;
  const valuesOf = (variant: Variant, row: TableRow): number[] =>
    seeds.map((seed) => rowValue(result.runs[String(seed)]![variant], row)).filter((v): v is number => v !== null);
  let wins = 0;
  let compared = 0;
  let beyondSpread = 0;
  const rows = TABLE_ROWS.map((row) => {
    const cells = VARIANTS.map((v) => {
      const values = valuesOf(v, row);
      return values.length === 0 ? '—' : formatValues(values, row.decimals);
    });
    const [plain, reals] = VARIANTS.map((v) => valuesOf(v, row));
    let better = '—';
    if (plain!.length > 0 && reals!.length > 0) {
      const realsBetter = row.better === 'lower' ? mean(reals!) < mean(plain!) : mean(reals!) > mean(plain!);
      const tie = mean(reals!) === mean(plain!);
      better = tie ? 'tie' : realsBetter ? 'ReaLS' : 'plain';
      compared++;
      if (realsBetter) wins++;
      // With several seeds: does the gap exceed the two spreads together (a rough, conservative test)?
      if (seeds.length > 1 && !tie) {
        const clear = Math.abs(mean(reals!) - mean(plain!)) > std(reals!) + std(plain!);
        better += clear ? ', beyond the spread' : ', within the spread';
        if (clear) beyondSpread++;
      }
    }
    return [row.label, ...cells, `${row.better} is better: ${better}`];
  });

  const t = profile.teacher;
  const firstSeed = seeds[0]!;
  const head = result.runs[String(firstSeed)]!.reals.headLatent;
  const blocks: Block[] = [
    { kind: 'h', level: 1, text: 'reals demo: ReaLS on Fashion-MNIST' },
    {
      kind: 'p', text: `Profile \`${profile.name}\`, seeds ${seeds.join(', ')}; ${result.threads} torch thread(s) on a ${cpus().length}-core ` +
        `${cpus()[0]?.model ?? 'CPU'}; the whole run took ${formatDuration(result.totalSeconds)} (${result.totalSeconds.toFixed(0)} s). ` +
        `Every number below is read from this run's files (\`metrics.json\`, \`seed-N/<vae>/*.json\`).`,
    },
    { kind: 'h', level: 2, text: 'plain VAE vs ReaLS VAE' },
    {
      kind: 'p', text: 'Both VAEs have the same architecture, data, seed and number of steps, trained by the same `reals align train`; ' +
        'the only difference is the alignment loss (`--patch-weight`/`--cls-weight` 0.5 for ReaLS, 0 for the plain VAE). ' +
        `A SiT of the same size is trained on each latent space. ${seeds.length > 1 ? 'Cells: mean ± standard deviation over the seeds.' : ''}`,
    },
    { kind: 'table', header: ['metric', VARIANT_NAMES.plain, VARIANT_NAMES.reals, 'better'], rows },
    {
      kind: 'p', text: `ReaLS is better on ${wins} of the ${compared} metrics both VAEs have. ` + (seeds.length > 1
        ? `Over ${seeds.length} seeds, ${beyondSpread} of the ${compared} differences (either way) exceed the sum of the two standard ` +
          'deviations ("beyond the spread"); the others are within what the seeds alone vary by.'
        : 'This is one seed of a short run: differences of this size can be noise. `reals demo --profile full` trains longer on three seeds and reports the spread.'),
    },
  ];
  if (seeds.length > 1) {
    blocks.push({ kind: 'h', level: 3, text: 'Per seed' }, {
      kind: 'table', header: ['metric', ...VARIANTS.flatMap((v) => seeds.map((seed) => `${VARIANT_NAMES[v]}, seed ${seed}`))],
      rows: TABLE_ROWS.map((row) => [row.label, ...VARIANTS.flatMap((v) => seeds.map((seed) => {
        const value = rowValue(result.runs[String(seed)]![v], row);
        return value === null ? '—' : value.toFixed(row.decimals);
      }))]),
    });
  }
  blocks.push(
    { kind: 'h', level: 2, text: 'What stands in for what' },
    {
      kind: 'list', items: [
        `**Teacher.** DINOv2's weights cannot be downloaded here, so the frozen teacher is DINOv2's architecture (\`DinoVisionTransformer\`, ` +
        `patch 4 on the 32x32 images, width ${t.embedDim}, depth ${t.depth}, ${result.teacher.params.toLocaleString('en-US')} parameters) trained for ` +
        `${t.steps} steps as a *supervised* Fashion-MNIST classifier (CLS token → Linear; test accuracy ${result.teacher.testAccuracy.toFixed(3)}), ` +
        'not self-supervised as DINOv2 is. It is saved in torch-hub naming and read by `--dino-model`/`--dino-ckpt` as a DINOv2 checkpoint would be.',
        '**Losses.** No LPIPS (its VGG weights cannot be downloaded) and no PatchGAN term (`--disc-start` after the last step): the VAEs train on MSE + KL (+ alignment).',
        `**Metrics.** FID, precision and recall (k = 3) are computed as the ADM evaluator does, but in the 128-d feature space of a separately trained ` +
        `Fashion-MNIST CNN (test accuracy ${result.classifier.testAccuracy.toFixed(3)}), not Inception's; the reference batch is ${profile.testImages} test images. ` +
        'The numbers are not comparable with ImageNet FIDs. Class accuracy: how often the classifier assigns a sample the class it was sampled for (chance: 0.1).',
        `**Sampling.** ${profile.samples} samples per VAE and sampler (classes in turn), CFG scale ${profile.cfgScale} on all latent channels, ` +
        `${profile.samplingSteps} time-grid points: ODE heun2, SDE Euler-Maruyama (last step Mean).`,
        `**Head readout.** \`reals heads train-linear\` on Fashion-MNIST "class as mask" (pixels above 25/255 take the image's class, the rest background; 11 classes): ` +
        `a linear head fitted on ${head.train} images, scored on ${head.heldOut} held out, ` +
        'on the latents themselves (both VAEs) and on the alignment MLPs\' DINOv2-like features (ReaLS only; the plain VAE has no trained MLPs).',
      ],
    },
    { kind: 'h', level: 2, text: 'Samples, one row per class' },
    { kind: 'p', text: `Rows, top to bottom: ${FASHION_MNIST_CLASSES.join(', ')}. Seed ${firstSeed}.` },
    ...VARIANTS.flatMap((v) => SAMPLERS.map((s): Block => ({
      kind: 'img', src: `figures/samples-${v}-${s}.png`, alt: `${VARIANT_NAMES[v]}, ${s.toUpperCase()} sampler, CFG ${profile.cfgScale}`,
    }))),
    { kind: 'h', level: 2, text: 'Reconstructions' },
    { kind: 'p', text: 'Top row: test images; bottom row: decode(encode(x).mode()).' },
    ...VARIANTS.map((v): Block => ({ kind: 'img', src: `figures/reconstructions-${v}-seed${firstSeed}.png`, alt: `${VARIANT_NAMES[v]}, seed ${firstSeed}` })),
    { kind: 'h', level: 2, text: 'Loss curves' },
    ...(await drawCurves(result)).map((f): Block => ({ kind: 'img', ...f })),
    { kind: 'h', level: 2, text: 'Reproduce step by step' },
    {
      kind: 'p', text: 'Each step below ran as the command shown (parsed by that command\'s own flags); run them in order to redo the demo by hand. ' +
        'Steps marked *demo only* have no command of their own: they are the stand-in teacher, the evaluation classifier and the scoring in its feature space (src/demo).',
    },
    {
      kind: 'table', header: ['step', 'time', 'command'],
      rows: result.steps.map((s) => [s.name, `${s.seconds.toFixed(1)} s`, s.command === null ? '*demo only*' : `\`${s.command}\``]),
    },
    { kind: 'code', text: [`# this whole run: reals demo --profile ${profile.name} --out ${out}`, ...result.steps.flatMap((s) => (s.command === null ? [] : [s.command]))].join('\n') },
  );
  const title = 'reals demo: ReaLS on Fashion-MNIST';
  writeFileSync(join(out, 'report.md'), toMarkdown(blocks));
  writeFileSync(join(out, 'report.html'), toHtml(blocks, title));
}

