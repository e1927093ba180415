// The alignment study's tables and plots (`reals demo align-report`, and `reals demo merge --cells`):
// reads the committed cell files of one or more folders and writes README.md and alignment-c<C>.png:
// the means of every (channels, arm, teacher) over its seeds, and each arm's paired differences
// from the control of the same channels (within a seed), with their Student-t 95% intervals and
// the seeds it won. Cells of another profile or classifier than the first file's are refused, and
// so are two cells of one width and seed whose stage-1 VAEs differ (their arms would not pair).
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { savePlot, type PlotSeries } from '../runlog/images.js';
import { formatValues, interval, mean, signed } from './report.js';
import { formatPaired, intervalVerdict, pairedDifference, pairedInterval, type PairedDifference } from './paired.js';
import { ALIGN_ARMS, ALIGN_ARM_NAMES, ALIGN_TEACHERS, STAGE_ONE, alignCellName, type AlignCellMetrics } from './align-study.js';

const CELL_FILE = new RegExp(`^c\\d+-(${ALIGN_ARM_NAMES.join('|')})(-(${ALIGN_TEACHERS.join('|')}))?-seed\\d+\\.json$`);

/**
 * The cell files of `dirs`, each checked against its name, against the first file's profile and
 * classifier, and against the stage-1 VAE of the other cells of its width and seed.
 */
export function readAlignCells(dirs: readonly string[]): AlignCellMetrics[] {
  const files = dirs.flatMap((dir) => readdirSync(dir).filter((name) => CELL_FILE.test(name)).map((name) => join(dir, name)));
  const cells = files.map((path) => ({ path, metrics: JSON.parse(readFileSync(path, 'utf8')) as AlignCellMetrics }));
  const first = cells[0];
  const seen = new Map<string, string>();
  const stageOnes = new Map<string, { path: string; stageOne: AlignCellMetrics['stageOne'] }>();
  for (const { path, metrics: m } of cells) {
    const name = alignCellName(m.channels, m.arm, m.teacher.name, m.seed);
    if (m.study !== 'alignment' || basename(path) !== `${name}.json`) throw new Error(`${path}: holds cell ${name} of study ${m.study}`);
    if (seen.has(name)) throw new Error(`${path}: cell ${name} is also in ${seen.get(name)}`);
    seen.set(name, path);
    if (JSON.stringify(m.profile) !== JSON.stringify(first!.metrics.profile)) throw new Error(`${path}: another profile than ${first!.path}'s`);
    if (m.classifier.sha256 !== first!.metrics.classifier.sha256) throw new Error(`${path}: classifier ${m.classifier.sha256} is not ${first!.path}'s ${first!.metrics.classifier.sha256}`);
    const widthSeed = `C=${m.channels} seed ${m.seed}`;
    const other = stageOnes.get(widthSeed);
    if (other === undefined) stageOnes.set(widthSeed, { path, stageOne: m.stageOne });
    else if (JSON.stringify(m.stageOne) !== JSON.stringify(other.stageOne)) {
      throw new Error(`${path}: stage-1 VAE ${JSON.stringify(m.stageOne)} is not ${other.path}'s ${JSON.stringify(other.stageOne)} (${widthSeed}): its arms would not pair`);
    }
  }
  return cells.map((c) => c.metrics);
}

/**
 * `demo merge`'s test: `dirs` when every one of them holds alignment cell files and no demo run's
 * metrics.json; null when none does (demo runs); an error naming the folder when they are mixed.
 */
export function readAlignCellFolders(dirs: readonly string[]): string[] | null {
  const holdsCells = dirs.map((dir) => !existsSync(join(dir, 'metrics.json')) && existsSync(dir) && readdirSync(dir).some((name) => CELL_FILE.test(name)));
  if (holdsCells.every((x) => !x)) return null;
  const other = dirs.find((_, i) => !holdsCells[i]);
  if (other !== undefined) throw new Error(`demo merge: ${other} is not a folder of alignment cells like ${dirs[holdsCells.indexOf(true)]}; merge demo runs and cell folders separately`);
  return [...dirs];
}

interface Column { label: string; decimals: number; better: 'lower' | 'higher'; value: (m: AlignCellMetrics) => number }

function columns(steps: readonly number[]): Column[] {
  const last = steps.length - 1;
  return [
    { label: 'rFID', decimals: 2, better: 'lower', value: (m) => m.reconstruction.rfid },
    { label: 'iFID', decimals: 2, better: 'lower', value: (m) => m.reconstruction.ifid },
    ...steps.map((step, i): Column => ({ label: `FID @${step}`, decimals: 2, better: 'lower', value: (m) => m.curve[i]!.fid })),
    { label: `precision @${steps[last]}`, decimals: 3, better: 'higher', value: (m) => m.curve[last]!.precision },
    { label: `recall @${steps[last]}`, decimals: 3, better: 'higher', value: (m) => m.curve[last]!.recall },
  ];
}

/** One (channels, arm, teacher) with its cells by seed. */
export interface Group { channels: number; arm: AlignCellMetrics['arm']; teacher: string; cells: Map<number, AlignCellMetrics> }

function groupCells(cells: readonly AlignCellMetrics[]): Group[] {
  const groups = new Map<string, Group>();
  for (const m of cells) {
    const key = `${m.channels} ${m.arm} ${m.teacher.name}`;
    const group = groups.get(key) ?? { channels: m.channels, arm: m.arm, teacher: m.teacher.name, cells: new Map() };
    group.cells.set(m.seed, m);
    groups.set(key, group);
  }
  const order = (g: Group) => [g.channels, ALIGN_ARM_NAMES.indexOf(g.arm), ALIGN_TEACHERS.indexOf(g.teacher as typeof ALIGN_TEACHERS[number])];
  return [...groups.values()].sort((a, b) => {
    const [x, y] = [order(a), order(b)];
    return x[0]! - y[0]! || x[1]! - y[1]! || x[2]! - y[2]!;
  });
}

function groupLabel(g: Group): string {
  return ALIGN_ARMS[g.arm].teacherFree ? g.arm : `${g.arm} (${g.teacher})`;
}

function byColumn(group: Group, col: Column): Map<number, number> {
  return new Map([...group.cells].map(([seed, m]) => [seed, col.value(m)]));
}

/** One arm (with its teacher) at one width, its control, and its paired differences from that control by column label (`FID @1400`). */
export interface ArmDifferences { group: Group; control: Group; differences: Map<string, PairedDifference> }

/** Every arm of `cells` that has a control of its width, against that control: the rows of the README's paired table. */
export function armDifferences(cells: readonly AlignCellMetrics[]): ArmDifferences[] {
  const cols = columns(cells[0]!.curve.map((p) => p.step));
  const groups = groupCells(cells);
  const controls = new Map(groups.filter((g) => g.arm === 'control').map((g) => [g.channels, g]));
  return groups.filter((g) => g.arm !== 'control' && controls.has(g.channels)).map((group) => {
    const control = controls.get(group.channels)!;
    const differences = new Map<string, PairedDifference>();
    for (const col of cols) {
      const d = pairedDifference(byColumn(group, col), byColumn(control, col), col.better);
      if (d !== null) differences.set(col.label, d);
    }
    return { group, control, differences };
  });
}

/** The lines of the measures in `columns` whose paired interval excludes 0, for each arm. */
function beyondInterval(rows: ArmDifferences[], columns: Column[]): string[] {
  const lines: string[] = [];
  for (const { group, differences } of rows) {
    for (const col of columns) {
      const d = differences.get(col.label);
      if (d === undefined) continue;
      const verdict = intervalVerdict(d, col.better);
      if (verdict === 0) continue;
      lines.push(`- C=${group.channels}, ${groupLabel(group)} ${verdict === 1 ? 'beats' : 'loses to'} the control on ${col.label}: ` +
        `${formatPaired(d, col.decimals)} (paired over seeds ${d.seeds.join(', ')}, won ${d.wins.length} of ${d.seeds.length}).`);
    }
  }
  return lines;
}

/** The findings: each arm's FID intervals that exclude 0, in words, then the other measures'. */
function findings(rows: ArmDifferences[], fidColumns: Column[], otherColumns: Column[]): string[] {
  const lines = beyondInterval(rows, fidColumns);
  const others = beyondInterval(rows, otherColumns);
  const otherLines = others.length === 0 ? [] : ['', 'The other measures whose paired 95% interval excludes 0:', '', ...others];
  if (lines.length === 0) {
    const pairs = rows.map((r) => Math.max(...[...r.differences.values()].map((d) => d.seeds.length)));
    const [fewest, most] = pairs.length === 0 ? [0, 0] : [Math.min(...pairs), Math.max(...pairs)];
    return [`No arm's paired 95% interval for FID excludes 0 at any SiT step (${rows.length} arm-teacher rows, ${fewest === most ? fewest : `${fewest}–${most}`} paired seeds each).`, ...otherLines];
  }
  return [...lines, ...otherLines];
}

/** The rows of each width, in the order the widths first appear. */
function byWidth(rows: readonly ArmDifferences[]): Map<number, ArmDifferences[]> {
  const widths = new Map<number, ArmDifferences[]>();
  for (const r of rows) widths.set(r.group.channels, [...(widths.get(r.group.channels) ?? []), r]);
  return widths;
}

/** `mean [low, high] wins/seeds` of a paired FID difference; bold when its interval lies below 0. */
function gridEntry(d: PairedDifference | undefined): string {
  if (d === undefined) return '';
  const text = `${signed(d.mean)}${d.interval === null ? '' : ` ${interval(d.interval)}`}`;
  return `${intervalVerdict(d, 'lower') === 1 ? `**${text}**` : text} ${d.wins.length}/${d.seeds.length}`;
}

/**
 * The primary endpoint (`label`: FID at the last checkpoint) of every arm at each width, the teacher
 * arms as a grid of arm by teacher, and the same comparisons Bonferroni-corrected for their number
 * at that width (those with two or more paired seeds).
 */
function primaryEndpointGrids(rows: readonly ArmDifferences[], label: string): string[] {
  const lines: string[] = [];
  for (const [channels, atWidth] of byWidth(rows)) {
    const teachers = ALIGN_TEACHERS.filter((t) => atWidth.some((r) => r.group.teacher === t && !ALIGN_ARMS[r.group.arm].teacherFree));
    const teacherArms = ALIGN_ARM_NAMES.filter((arm) => !ALIGN_ARMS[arm].teacherFree && atWidth.some((r) => r.group.arm === arm));
    const entry = (arm: string, teacher: string) => gridEntry(atWidth.find((r) => r.group.arm === arm && r.group.teacher === teacher)?.differences.get(label));
    lines.push(`### C = ${channels}`, '');
    if (teacherArms.length > 0) {
      lines.push(`| arm − control | ${teachers.join(' | ')} |`, `|---|${teachers.map(() => '---').join('|')}|`,
        ...teacherArms.map((arm) => `| ${arm} | ${teachers.map((t) => entry(arm, t)).join(' | ')} |`), '');
    }
    for (const r of atWidth.filter((row) => ALIGN_ARMS[row.group.arm].teacherFree)) lines.push(`- ${r.group.arm} (no teacher): ${gridEntry(r.differences.get(label))}`);
    const compared = atWidth.map((r) => ({ r, d: r.differences.get(label) })).filter(({ d }) => d !== undefined && d.seeds.length >= 2);
    if (compared.length > 0) {
      const level = 1 - 0.05 / compared.length;
      const excluding = compared.map(({ r, d }) => ({ r, corrected: pairedInterval(d!, level)! })).filter(({ corrected }) => corrected[1] < 0 || corrected[0] > 0);
      const percent = `${(level * 100).toFixed(2).replace(/\.?0+$/, '')}%`;
      lines.push(`- Bonferroni-corrected for the ${compared.length} comparison${compared.length === 1 ? '' : 's'} at C = ${channels} (${percent} intervals): ` +
        (excluding.length === 0 ? 'none excludes 0.'
          : `${excluding.map(({ r, corrected }) => `${groupLabel(r.group)} ${interval(corrected)}`).join('; ')} ${excluding.length === 1 ? 'excludes' : 'exclude'} 0.`));
    }
    lines.push('');
  }
  return lines;
}

/**
 * The study's PROTOCOL.md as a link from `out`: in it, or in one of the two folders above (a CPU's
 * own set of cells sits in a subfolder of the study); named in words where there is none.
 */
function protocolLink(out: string): string {
  for (let up = 0, dir = resolve(out); up <= 2; up += 1, dir = dirname(dir)) {
    if (existsSync(join(dir, 'PROTOCOL.md'))) return `[PROTOCOL.md](${'../'.repeat(up)}PROTOCOL.md)`;
  }
  return 'docs/study/alignment/PROTOCOL.md in the reals repository';
}

/** Writes `<out>/README.md` and a plot a width, `<out>/alignment-c<C>.png`, from the cell files of `dirs` (default: `out` alone). */
export async function writeAlignStudyReport(out: string, dirs: readonly string[] = [out]): Promise<{ cells: number }> {
  const cells = readAlignCells(dirs);
  if (cells.length === 0) throw new Error(`${dirs.join(', ')}: no alignment cell files (c<C>-<arm>[-<teacher>]-seed<S>.json)`);
  const profile = cells[0]!.profile;
  const steps = cells[0]!.curve.map((p) => p.step);
  const cols = columns(steps);
  const fidColumns = cols.filter((c) => c.label.startsWith('FID @'));
  const groups = groupCells(cells);
  const rows = armDifferences(cells);

  const meanTable = [
    `| C | arm | seeds | ${cols.map((c) => c.label).join(' | ')} |`,
    `|---|---|---|${cols.map(() => '---').join('|')}|`,
    ...groups.map((g) => `| ${g.channels} | ${groupLabel(g)} | ${[...g.cells.keys()].sort((a, b) => a - b).join(', ')} | ` +
      `${cols.map((col) => formatValues([...byColumn(g, col).values()], col.decimals)).join(' | ')} |`),
  ];
  const lastFid = fidColumns.at(-1)!;
  const pairedTable = [
    `| C | arm − control | paired seeds | ${cols.map((c) => c.label).join(' | ')} | won on ${lastFid.label} |`,
    `|---|---|---|${cols.map(() => '---').join('|')}|---|`,
    ...rows.map(({ group, differences }) => {
      const final = differences.get(lastFid.label);
      return `| ${group.channels} | ${groupLabel(group)} | ${final?.seeds.join(', ') ?? ''} | ` +
        `${cols.map((col) => { const d = differences.get(col.label); return d === undefined ? '' : formatPaired(d, col.decimals); }).join(' | ')} | ` +
        `${final === undefined ? '' : `${final.wins.length}/${final.seeds.length}${final.wins.length > 0 ? ` (seeds ${final.wins.join(', ')})` : ''}`} |`;
    }),
  ];

  // One plot a width: each arm's paired FID difference from the control at every SiT checkpoint.
  const plots: string[] = [];
  for (const [channels, atWidth] of byWidth(rows)) {
    const series: PlotSeries[] = atWidth.map((r) => ({
      name: groupLabel(r.group),
      points: fidColumns.flatMap((col, i): [number, number][] => {
        const d = r.differences.get(col.label);
        return d === undefined ? [] : [[steps[i]!, d.mean]];
      }),
    })).filter((s) => s.points.length > 0);
    if (series.length === 0) continue;
    const file = `alignment-c${channels}.png`;
    await savePlot(join(out, file), series, { title: `C = ${channels}: FID, arm minus control (mean over paired seeds; below 0 is better)`, xLabel: 'SiT training steps' });
    plots.push(`![C = ${channels}: each arm's FID minus the control's against SiT steps](${file})`, '');
  }

  const cpuMinutes = cells.map((c) => c.cpuSeconds / 60);
  const stageOneMinutes = cells.map((c) => c.stages.filter((s) => s.name.startsWith(STAGE_ONE)).reduce((sum, s) => sum + s.cpuSeconds, 0) / 60);
  const designCells = (2 + (ALIGN_ARM_NAMES.length - 2) * ALIGN_TEACHERS.length) * 2 * 6;
  const cpu = [...new Set(cells.map((m) => m.environment.cpu))].join('; ');
  const classifier = cells[0]!.classifier;
  const lines = [
    '# Alignment study: results',
    '',
    `Written by \`reals demo align-report\` from the ${cells.length} cell files in this folder (profile \`${profile.name}\`); the protocol is`,
    `${protocolLink(out)}. Every arm fine-tunes the same stage-1 VAE of its seed for`,
    `${profile.finetune.steps} steps (lr ${profile.finetune.lr}); FID, precision and recall: ${profile.base.samples.toLocaleString('en-US')} ODE samples of the SiT at each step against`,
    `${profile.base.referenceImages.toLocaleString('en-US')} test images, in the features of one classifier (sha256 ${classifier.sha256.slice(0, 16)}…, accuracy ${classifier.testAccuracy.toFixed(4)}).`,
    '',
    '## Each arm against the control',
    '',
    'Arm minus control within a seed: mean ± sample standard deviation [Student-t 95% interval] over the paired seeds.',
    'Negative is better for FID, rFID and iFID; positive for precision and recall.',
    '',
    ...pairedTable,
    '',
    ...findings(rows, fidColumns, cols.filter((c) => !fidColumns.includes(c))),
    '',
    `## ${lastFid.label}, the primary endpoint, by teacher`,
    '',
    'Arm minus control, mean [Student-t 95% interval] and the seeds where the arm was lower of the paired seeds; bold where the interval lies below 0.',
    '',
    ...primaryEndpointGrids(rows, lastFid.label),
    ...plots,
    '## Means over seeds',
    '',
    ...meanTable,
    '',
    '## Arms',
    '',
    ...ALIGN_ARM_NAMES.map((arm) => `- \`${arm}\`: ${ALIGN_ARMS[arm].description}.`),
    '',
    `Time: ${mean(cpuMinutes).toFixed(1)} CPU minutes a cell for its fine-tuning and evaluation (mean over these ${cells.length}; ${cpu}), ` +
      `and ${mean(stageOneMinutes).toFixed(1)} for the stage-1 VAE that every arm of a width and seed shares; ` +
      `the full design (${designCells} cells: control and EQ-VAE, and three teacher arms with each of ${ALIGN_TEACHERS.length} teachers, at 2 widths, 6 seeds) ` +
      `takes about ${((mean(cpuMinutes) * designCells + mean(stageOneMinutes) * 2 * 6) / 60).toFixed(0)} CPU-hours.`,
    '',
  ];
  writeFileSync(join(out, 'README.md'), lines.join('\n'));
  return { cells: cells.length };
}
