// Reports read from files a run left behind. The document blocks (headings, tables, figures)
// written as Markdown and as one HTML page serve both the demo's report and `reals report`, which
// draws a page for any run folders: loss curves overlaid across runs, the learning rate, the
// reconstructions an alignment run saved, sample grids one row per class named as the dataset
// names it, and each run's arguments. It reads files only: no model is loaded.
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, relative, resolve } from 'node:path';
import sharp from 'sharp';
import * as torch from '../torch/index.js';
import { NpzFile, SafetensorsFile, readJsonFile } from '../io/index.js';
import { parseMetrics, type MetricRecord } from '../runlog/metrics.js';
import { encodePng, makeGrid, savePlot, type PlotSeries } from '../runlog/images.js';
import { formatDuration } from '../runlog/progress.js';
import { datasetClassNames } from '../data/inputs.js';
import { SAMPLING_SETTINGS } from '../sampling/sample.js';

export type Block =
  | { kind: 'h'; level: number; text: string }
  | { kind: 'p'; text: string }
  | { kind: 'list'; items: string[] }
  | { kind: 'table'; header: string[]; rows: string[][] }
  | { kind: 'img'; src: string; alt: string }
  | { kind: 'code'; text: string };

export function toMarkdown(blocks: readonly Block[]): string {
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

/** The Markdown inline marks the reports use (`code`, **bold**, *italic*) as HTML, the rest escaped. */
function inlineHtml(text: string): string {
  const emphasis = (part: string) => escapeHtml(part).replace(/\*\*(.+?)\*\*/g, '<strong>$1</strong>').replace(/\*(.+?)\*/g, '<em>$1</em>');
  return text.split('`').map((part, i) => (i % 2 === 1 ? `<code>${escapeHtml(part)}</code>` : emphasis(part))).join('');
}

export function toHtml(blocks: readonly Block[], title: string): string {
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
    'td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}td code{overflow-wrap:anywhere}img{max-width:100%;image-rendering:pixelated}pre{background:#f4f4f4;padding:8px;overflow-x:auto}';
  return `<!doctype html>\n<html><head><meta charset="utf-8"><title>${escapeHtml(title)}</title><style>${style}</style></head>\n<body>\n${body}\n</body></html>\n`;
}

/** The records of a run's metrics.jsonl; an error names the file when it is missing. */
export function readMetrics(path: string): MetricRecord[] {
  if (!existsSync(path)) throw new Error(`report: ${path} is missing (the run wrote no metrics)`);
  return parseMetrics(readFileSync(path, 'utf8'), path);
}

/** The finite [step, value] points of `name` in `records`. */
export function metricPoints(records: readonly MetricRecord[], name: string): [number, number][] {
  return records.filter((r) => Number.isFinite(r.values[name])).map((r) => [r.step, r.values[name]!]);
}

// --- reals report ------------------------------------------------------------------------------

/** A training run folder (`reals align|sit|dit|teacher train`): metrics.jsonl, args.json, checkpoints/, reconstructions/. */
export interface TrainingRun {
  type: 'training';
  path: string;
  label: string;
  /** The command that wrote it, as far as its args and name tell. */
  command: string;
  args: Record<string, unknown> | null;
  metrics: MetricRecord[];
  checkpointSteps: number[];
  /** reconstructions/NNNNNNN.png by step. */
  reconstructions: { step: number; path: string }[];
}

/** A sample folder of `reals sample`: sampling.json inside, `<folder>.npz` (and `.png`) beside it. */
export interface SampleRun {
  type: 'samples';
  path: string;
  label: string;
  settings: Record<string, unknown> | null;
  npz: string;
}

export type ReportRun = TrainingRun | SampleRun;

const STEP_FILE = /^(\d{7})\.(safetensors|png)$/;

function isFolder(path: string): boolean { return existsSync(path) && statSync(path).isDirectory(); }

function isTrainingRun(path: string): boolean {
  return ['metrics.jsonl', 'args.json'].some((name) => existsSync(join(path, name))) || isFolder(join(path, 'checkpoints'));
}

function stepFiles(folder: string, extension: string): { step: number; path: string }[] {
  if (!isFolder(folder)) return [];
  return readdirSync(folder).map((name) => STEP_FILE.exec(name)).filter((m): m is RegExpExecArray => m !== null && m[2] === extension)
    .map((m) => ({ step: Number(m[1]), path: join(folder, m[0]) })).sort((a, b) => a.step - b.step);
}

function commandOf(path: string, args: Record<string, unknown> | null): string {
  if (args === null) return 'unknown (no args.json)';
  if ('patchWeight' in args || 'vaeConfig' in args) return 'align train';
  if ('probeImages' in args) return 'teacher train';
  if (typeof args.model === 'string') return /^\d+-DiT/.test(basename(path)) ? 'dit train' : 'sit train';
  return 'unknown';
}

function readTrainingRun(path: string): TrainingRun {
  const argsPath = join(path, 'args.json');
  const args = existsSync(argsPath) ? readJsonFile(argsPath) as Record<string, unknown> : null;
  const metricsPath = join(path, 'metrics.jsonl');
  return {
    type: 'training', path, label: basename(path), command: commandOf(path, args), args,
    metrics: existsSync(metricsPath) ? readMetrics(metricsPath) : [],
    checkpointSteps: stepFiles(join(path, 'checkpoints'), 'safetensors').map((f) => f.step),
    reconstructions: stepFiles(join(path, 'reconstructions'), 'png'),
  };
}

function readSampleRun(folder: string): SampleRun {
  const settingsPath = join(folder, SAMPLING_SETTINGS);
  const npz = `${folder}.npz`;
  if (!existsSync(npz)) throw new Error(`report: ${folder} holds samples but no ${basename(npz)} beside it (the sampling run has not finished)`);
  return { type: 'samples', path: folder, label: basename(folder), settings: existsSync(settingsPath) ? readJsonFile(settingsPath) as Record<string, unknown> : null, npz };
}

/**
 * The runs named by `path`: a training run folder, a sample folder (or its .npz), or a folder of
 * those (a results or samples folder), each of its run and sample folders in name order.
 */
export function findRuns(path: string): ReportRun[] {
  if (!existsSync(path)) throw new Error(`report: ${path}: no such file or folder`);
  if (path.endsWith('.npz') && !isFolder(path)) return [readSampleRun(path.slice(0, -'.npz'.length))];
  if (!isFolder(path)) throw new Error(`report: ${path} is a file, not a run folder, sample folder or .npz`);
  if (isTrainingRun(path)) return [readTrainingRun(path)];
  if (existsSync(join(path, SAMPLING_SETTINGS))) return [readSampleRun(path)];
  const inside = readdirSync(path).sort().map((name) => join(path, name)).filter(isFolder)
    .filter((sub) => isTrainingRun(sub) || existsSync(join(sub, SAMPLING_SETTINGS)));
  if (inside.length === 0) {
    throw new Error(`report: ${path} is neither a run folder (metrics.jsonl, args.json, checkpoints/), a sample folder (${SAMPLING_SETTINGS}) nor a folder of them`);
  }
  return inside.flatMap(findRuns);
}

/** Labels that tell runs apart: the folder name, with its parent's where two runs share one. */
function uniqueLabels(runs: ReportRun[]): void {
  const count = new Map<string, number>();
  for (const run of runs) count.set(run.label, (count.get(run.label) ?? 0) + 1);
  for (const run of runs) if (count.get(run.label)! > 1) run.label = `${basename(dirname(resolve(run.path)))}/${run.label}`;
}

/** A file name made of a label: letters, digits, '.', '_' and '-' only. */
function slug(text: string): string { return text.replace(/[^A-Za-z0-9._-]+/g, '_'); }

/** Values that stay the same over a whole run (lpips 0 without LPIPS) draw no curve. */
function varies(points: [number, number][]): boolean { return points.some(([, v]) => v !== points[0]![1]); }

/** A log scale for positive curves spanning two decades or more. */
function wantsLogY(series: PlotSeries[]): boolean {
  const values = series.flatMap((s) => s.points.map(([, v]) => v));
  return values.every((v) => v > 0) && Math.max(...values) / Math.min(...values) >= 100;
}

/** Each run's learning rate: logged as `lr` (the teacher's schedule), else args.json's constant lr over the logged steps. */
function learningRates(runs: TrainingRun[]): { series: PlotSeries[]; constant: string[]; unknown: string[] } {
  const series: PlotSeries[] = [];
  const constant: string[] = [];
  const unknown: string[] = [];
  for (const run of runs) {
    const logged = metricPoints(run.metrics, 'lr');
    const steps = run.metrics.map((r) => r.step);
    if (logged.length > 0) series.push({ name: run.label, points: logged });
    else if (typeof run.args?.lr === 'number' && steps.length > 0) {
      series.push({ name: run.label, points: [[Math.min(...steps), run.args.lr], [Math.max(...steps), run.args.lr]] });
      constant.push(run.label);
    } else unknown.push(run.label);
  }
  return { series, constant, unknown };
}

/** Rows of the labelled grid: at most this many classes, this many samples each. */
const GRID_CLASSES = 16;
const GRID_PER_CLASS = 8;
/** Cells smaller than this are enlarged (nearest neighbour) so a row is as tall as its name. */
const MIN_CELL = 32;

/**
 * The labels of a sample batch: its `arr_1` (guided-diffusion's class-conditional .npz), else
 * reals' class-balanced order (sample i has class i mod the class count); null when neither
 * tells (samples drawn with another label order and no labels stored).
 */
function sampleLabels(npz: NpzFile, count: number, numClasses: number, settings: Record<string, unknown> | null): number[] | null {
  if (npz.has('arr_1')) {
    const labels = npz.get('arr_1');
    try {
      return Array.from(labels.toArray() as ArrayLike<number | bigint>, Number);
    } finally {
      labels.dispose();
    }
  }
  if (settings !== null && settings.labelSampling !== undefined && settings.labelSampling !== 'balanced') return null;
  return Array.from({ length: count }, (_, i) => i % numClasses);
}

/** Enlarges a uint8 [H, W, C] image by an integer factor, each pixel a block. */
function enlarge(image: torch.Tensor, factor: number): torch.Tensor {
  return factor === 1 ? image : image.repeatInterleave(factor, 0).repeatInterleave(factor, 1);
}

/**
 * A grid of `npz`'s samples, one row per class (up to GRID_CLASSES rows of up to GRID_PER_CLASS,
 * blank where a class has fewer), the class's name at the left of its row; PNG bytes. Returns null
 * where the labels are not known.
 */
export async function labelledSampleGrid(npzPath: string, classNames: readonly string[], settings: Record<string, unknown> | null): Promise<Buffer | null> {
  const npz = NpzFile.open(npzPath);
  try {
    const [count, height, width, channels] = npz.header('arr_0').shape as [number, number, number, number];
    const labels = sampleLabels(npz, count, classNames.length, settings);
    if (labels === null) return null;
    const outside = labels.find((label) => label < 0 || label >= classNames.length);
    if (outside !== undefined) throw new Error(`report: ${npzPath} has samples of class ${outside}, but the data has ${classNames.length} classes`);
    const rows = classNames.map((name, label) => ({ name, indices: labels.flatMap((l, i) => (l === label ? [i] : [])).slice(0, GRID_PER_CLASS) }))
      .filter((row) => row.indices.length > 0).slice(0, GRID_CLASSES);
    const columns = Math.max(...rows.map((row) => row.indices.length));
    const factor = Math.max(1, Math.ceil(MIN_CELL / height));
    return await composeGrid(torch.scope(() => {
      const blank = torch.zeros([1, height, width, channels], { dtype: 'uint8' });
      const cells = rows.flatMap((row) => Array.from({ length: columns }, (_, k) => (k < row.indices.length ? npz.readRows('arr_0', row.indices[k]!, 1) : blank)));
      const grid = enlarge(makeGrid(torch.cat(cells).permute(0, 3, 1, 2), { nrow: columns }), factor);
      const [gridHeight, gridWidth] = grid.shape as [number, number, number];
      const names = rows.map((row) => (row.name.length > 24 ? `${row.name.slice(0, 23)}…` : row.name));
      const labelWidth = 16 + 7 * Math.max(...names.map((n) => n.length));
      const rowHeight = (height + 2) * factor;
      const text = names.map((name, i) => `<text x="${labelWidth - 8}" y="${(2 * factor + i * rowHeight + (height * factor) / 2 + 4).toFixed(1)}" ` +
        `text-anchor="end" font-family="sans-serif" font-size="12" fill="#000">${name.replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`)}</text>`).join('');
      const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${labelWidth}" height="${gridHeight}"><rect width="${labelWidth}" height="${gridHeight}" fill="#fff"/>${text}</svg>`;
      return { grid: grid.toArray() as Uint8Array, gridWidth, gridHeight, labelWidth, svg };
    }));
  } finally {
    npz.close();
  }
}

/** Writes the labelled grid's parts as one PNG. */
async function composeGrid(parts: { grid: Uint8Array; gridWidth: number; gridHeight: number; labelWidth: number; svg: string }): Promise<Buffer> {
  const { grid, gridWidth, gridHeight, labelWidth, svg } = parts;
  const gridPng = await sharp(grid, { raw: { width: gridWidth, height: gridHeight, channels: 3 } }).png().toBuffer();
  return sharp(Buffer.from(svg)).extend({ right: gridWidth, background: '#fff' })
    .composite([{ input: gridPng, left: labelWidth, top: 0 }]).png().toBuffer();
}

/** The first GRID_CLASSES x GRID_PER_CLASS samples as a near-square grid, for batches whose labels are not known. */
async function plainSampleGrid(npzPath: string): Promise<Buffer> {
  const npz = NpzFile.open(npzPath);
  try {
    const count = Math.min(npz.header('arr_0').shape[0]!, GRID_PER_CLASS * GRID_PER_CLASS);
    const images = npz.readRows('arr_0', 0, count);
    const grid = torch.scope(() => makeGrid(images.permute(0, 3, 1, 2), { nrow: Math.ceil(Math.sqrt(count)) }));
    images.dispose();
    try {
      return await encodePng(grid);
    } finally {
      grid.dispose();
    }
  } finally {
    npz.close();
  }
}

export interface RunReportOptions {
  /** Run folders, sample folders or .npz files, or folders of them (`results/`). */
  runs: string[];
  /** Where report.html and figures/ go. */
  out: string;
  /**
   * The data whose class names label the sample grids (a folder or `fashion-mnist`); default the
   * names a generator run's checkpoints record, else the --data-path of the first run that has one.
   */
  dataPath?: string;
}

export interface RunReportResult { html: string; figures: string[]; runs: ReportRun[] }

/** The class names a generator run's last checkpoint records (metadata class_names), or null. */
function checkpointClassNames(run: TrainingRun): string[] | null {
  const step = run.checkpointSteps.at(-1);
  if (step === undefined) return null;
  const file = SafetensorsFile.open(join(run.path, 'checkpoints', `${String(step).padStart(7, '0')}.safetensors`));
  file.close();
  const recorded = file.metadata.class_names;
  return recorded === undefined ? null : JSON.parse(recorded) as string[];
}

/** The class names of the report's samples and where they came from, or why there are none. */
function reportClassNames(options: RunReportOptions, training: TrainingRun[]): { names: string[]; source: string } | { names: null; why: string } {
  if (options.dataPath !== undefined) return { names: datasetClassNames(options.dataPath), source: `--data-path ${options.dataPath}` };
  for (const run of training.filter((r) => r.command === 'sit train' || r.command === 'dit train')) {
    const names = checkpointClassNames(run);
    if (names !== null) return { names, source: `the checkpoints of ${run.label}` };
  }
  const run = training.find((r) => typeof r.args?.dataPath === 'string');
  if (run === undefined) return { names: null, why: 'no run records a --data-path; give reals report --data-path to name the classes' };
  const dataPath = run.args!.dataPath as string;
  try {
    return { names: datasetClassNames(dataPath), source: `the --data-path of ${run.label}, ${dataPath}` };
  } catch (error) {
    return { names: null, why: `${(error as Error).message} (recorded by ${run.label}); give reals report --data-path` };
  }
}

/** Writes `out/report.html` and its figures for the runs. */
export async function writeRunReport(options: RunReportOptions): Promise<RunReportResult> {
  if (options.runs.length === 0) throw new Error('report: name at least one run folder');
  const runs = options.runs.flatMap(findRuns);
  uniqueLabels(runs);
  const figuresDir = join(options.out, 'figures');
  mkdirSync(figuresDir, { recursive: true });
  const figures: string[] = [];
  const figure = (file: string): string => {
    figures.push(join(figuresDir, file));
    return join(figuresDir, file);
  };
  const src = (path: string) => relative(options.out, path);
  const training = runs.filter((r): r is TrainingRun => r.type === 'training');
  const samples = runs.filter((r): r is SampleRun => r.type === 'samples');

  const blocks: Block[] = [
    { kind: 'h', level: 1, text: 'reals report' },
    {
      kind: 'table', header: ['run', 'written by', 'folder', 'logged steps', 'checkpoints (steps)', 'wall time'],
      rows: runs.map((run) => {
        if (run.type === 'samples') return [run.label, 'sample', `\`${run.path}\``, '—', '—', '—'];
        const steps = run.metrics.map((r) => r.step);
        const times = run.metrics.map((r) => r.time);
        return [
          run.label, run.command, `\`${run.path}\``, steps.length === 0 ? 'none' : `${Math.min(...steps)}–${Math.max(...steps)}`,
          run.checkpointSteps.length === 0 ? 'none' : run.checkpointSteps.join(', '),
          times.length < 2 ? '—' : formatDuration(Math.max(...times) - Math.min(...times)),
        ];
      }),
    },
  ];

  // One figure per logged value, every run that logged it a curve.
  const names = [...new Set(training.flatMap((run) => run.metrics.flatMap((r) => Object.keys(r.values))))].filter((n) => n !== 'lr');
  const flat: string[] = [];
  const curves: Block[] = [];
  for (const name of names) {
    const series = training.map((run) => ({ name: run.label, points: metricPoints(run.metrics, name) })).filter((s) => s.points.length > 0);
    if (!series.some((s) => varies(s.points))) {
      flat.push(`\`${name}\` ${series.map((s) => s.points[0]![1]).join(' / ')}`);
      continue;
    }
    const logY = wantsLogY(series);
    await savePlot(figure(`metric-${slug(name)}.png`), series, { title: `${name}${logY ? ' (log scale)' : ''}`, logY });
    curves.push({ kind: 'img', src: src(join(figuresDir, `metric-${slug(name)}.png`)), alt: `${name} (metrics.jsonl) over the training steps, one curve per run` });
  }
  if (training.length > 0) {
    blocks.push({ kind: 'h', level: 2, text: 'Losses and logged values' });
    if (curves.length === 0 && flat.length === 0) blocks.push({ kind: 'p', text: 'No run logged any values (metrics.jsonl is missing or empty).' });
    blocks.push(...curves);
    if (flat.length > 0) blocks.push({ kind: 'p', text: `Constant over every run (no curve): ${flat.join('; ')}.` });

    const lr = learningRates(training);
    blocks.push({ kind: 'h', level: 2, text: 'Learning rate' });
    if (lr.series.length > 0) {
      await savePlot(figure('learning-rate.png'), lr.series, { title: 'learning rate', logY: wantsLogY(lr.series) });
      blocks.push({ kind: 'img', src: 'figures/learning-rate.png', alt: 'learning rate over the training steps, one curve per run' });
    }
    if (lr.constant.length > 0) blocks.push({ kind: 'p', text: `Constant, args.json's \`lr\` (these trainers have no schedule): ${lr.constant.join(', ')}.` });
    if (lr.unknown.length > 0) blocks.push({ kind: 'p', text: `Not recorded (no \`lr\` in metrics.jsonl or args.json): ${lr.unknown.join(', ')}.` });
  }

  const withReconstructions = training.filter((run) => run.reconstructions.length > 0);
  if (withReconstructions.length > 0) {
    blocks.push({ kind: 'h', level: 2, text: 'Reconstructions' }, { kind: 'p', text: 'At each saved step: the fixed images above, their reconstructions below.' });
    for (const run of withReconstructions) {
      for (const { step, path } of run.reconstructions) {
        const copy = figure(`reconstructions-${slug(run.label)}-${String(step).padStart(7, '0')}.png`);
        copyFileSync(path, copy);
        blocks.push({ kind: 'img', src: src(copy), alt: `${run.label}, step ${step}` });
      }
    }
  }

  if (samples.length > 0) {
    const classes = reportClassNames(options, training);
    blocks.push({ kind: 'h', level: 2, text: 'Samples' }, {
      kind: 'p', text: classes.names === null
        ? `The first samples, unlabelled: ${classes.why}.`
        : `One row per class (the first ${GRID_CLASSES} classes with samples, ${GRID_PER_CLASS} samples each), named from ${classes.source}.`,
    });
    for (const run of samples) {
      const grid = classes.names === null ? null : await labelledSampleGrid(run.npz, classes.names, run.settings);
      const png = grid ?? await plainSampleGrid(run.npz);
      const file = figure(`samples-${slug(run.label)}.png`);
      writeFileSync(file, png);
      blocks.push({ kind: 'img', src: src(file), alt: `${run.label}${grid === null && classes.names !== null ? ' (labels not recorded for this label order: unlabelled)' : ''}` });
      if (run.settings !== null) {
        blocks.push({ kind: 'table', header: ['sampling setting', 'value'], rows: Object.entries(run.settings).map(([k, v]) => [k, `\`${JSON.stringify(v)}\``]) });
      }
    }
  }

  const withArgs = training.filter((run) => run.args !== null);
  if (withArgs.length > 0) {
    const keys = [...new Set(withArgs.flatMap((run) => Object.keys(run.args!)))];
    const shown = (run: TrainingRun, key: string) => (run.args![key] === undefined ? '—' : `\`${JSON.stringify(run.args![key])}\``);
    blocks.push({ kind: 'h', level: 2, text: 'Arguments (args.json)' }, {
      kind: 'table', header: ['argument', ...withArgs.map((run) => run.label)], rows: keys.map((key) => [key, ...withArgs.map((run) => shown(run, key))]),
    });
  }

  const html = join(options.out, 'report.html');
  writeFileSync(html, toHtml(blocks, `reals report: ${runs.map((r) => r.label).join(', ')}`));
  return { html, figures, runs };
}
