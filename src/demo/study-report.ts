// The latent-channel study's table and plot (`reals demo channels-report`): reads the committed
// cell files (c<C>-seed<S>.json) of one folder and writes its README.md and channels.png, mean ±
// sample standard deviation over the seeds that have finished. Cells of another profile or
// classifier than the first file's are refused, naming the file.
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { savePlot, type PlotSeries } from '../runlog/images.js';
import { compare, formatValues, mean } from './report.js';
import { STUDY_CHANNELS, STUDY_SEEDS, type ChannelCellMetrics } from './study.js';

const CELL_FILE = /^c(\d+)-seed(\d+)\.json$/;

/** The cell files of `dir`, by channels then seed; all of one profile and one classifier. */
export function readChannelCells(dir: string): ChannelCellMetrics[] {
  const files = readdirSync(dir).filter((name) => CELL_FILE.test(name));
  const cells = files.map((name) => ({ name, metrics: JSON.parse(readFileSync(join(dir, name), 'utf8')) as ChannelCellMetrics }));
  const first = cells[0];
  for (const { name, metrics } of cells) {
    if (name !== `c${metrics.channels}-seed${metrics.seed}.json`) throw new Error(`${join(dir, name)}: holds channels ${metrics.channels}, seed ${metrics.seed}`);
    if (JSON.stringify(metrics.profile) !== JSON.stringify(first!.metrics.profile)) throw new Error(`${join(dir, name)}: another profile than ${first!.name}'s`);
    if (metrics.classifier.sha256 !== first!.metrics.classifier.sha256) {
      throw new Error(`${join(dir, name)}: classifier ${metrics.classifier.sha256} is not ${first!.name}'s ${first!.metrics.classifier.sha256}`);
    }
  }
  return cells.map((c) => c.metrics).sort((a, b) => a.channels - b.channels || a.seed - b.seed);
}

interface Column { label: string; decimals: number; value: (m: ChannelCellMetrics) => number }

function columns(steps: readonly number[]): Column[] {
  const last = steps.length - 1;
  return [
    { label: 'rFID', decimals: 2, value: (m) => m.reconstruction.rfid },
    { label: 'iFID', decimals: 2, value: (m) => m.reconstruction.ifid },
    ...steps.map((step, i): Column => ({ label: `FID @${step}`, decimals: 2, value: (m) => m.curve[i]!.fid })),
    { label: `precision @${steps[last]}`, decimals: 3, value: (m) => m.curve[last]!.precision },
    { label: `recall @${steps[last]}`, decimals: 3, value: (m) => m.curve[last]!.recall },
    { label: `class accuracy @${steps[last]}`, decimals: 3, value: (m) => m.curve[last]!.classAccuracy },
  ];
}

/** Whether the means of `values` per channel count only fall (-1) or only rise (+1) as C grows; 0 otherwise. */
function trend(means: readonly number[]): -1 | 0 | 1 {
  const deltas = means.slice(1).map((v, i) => v - means[i]!);
  if (deltas.length > 0 && deltas.every((d) => d < 0)) return -1;
  if (deltas.length > 0 && deltas.every((d) => d > 0)) return 1;
  return 0;
}

const TREND_WORDS = { '-1': 'falls with each wider latent', '0': 'does not move one way as C grows', '1': 'rises with each wider latent' } as const;

/** The README's findings paragraph, from the numbers alone. */
function findings(byChannels: Map<number, ChannelCellMetrics[]>, cols: Column[], finalStep: number): string[] {
  const channels = [...byChannels.keys()];
  if (channels.length < 2) return ['Fewer than two channel counts have finished: no trend yet.'];
  const [low, high] = [byChannels.get(channels[0]!)!, byChannels.get(channels.at(-1)!)!];
  const rfid = cols[0]!;
  const fid = cols.find((c) => c.label === `FID @${finalStep}`)!;
  const line = (col: Column, better: 'lower'): string => {
    const means = channels.map((c) => mean(byChannels.get(c)!.map(col.value)));
    const gap = compare(high.map(col.value), low.map(col.value), better);
    const spread = gap.beyondSpread === null ? '' : `, ${gap.beyondSpread ? 'beyond' : 'within'} the two seed spreads together`;
    return `- ${col.label} (mean over seeds) ${TREND_WORDS[String(trend(means)) as '-1' | '0' | '1']}: ` +
      `${means.map((v, i) => `C=${channels[i]} ${v.toFixed(col.decimals)}`).join(', ')}; C=${channels.at(-1)} against C=${channels[0]}: ` +
      `${gap.better ? 'lower' : 'higher'}${spread}.`;
  };
  const rfidTrend = trend(channels.map((c) => mean(byChannels.get(c)!.map(rfid.value))));
  const fidTrend = trend(channels.map((c) => mean(byChannels.get(c)!.map(fid.value))));
  const verdict = rfidTrend === -1 && fidTrend === 1
    ? 'The dilemma appears in the means: reconstruction improves with every widening of the latent while generation worsens.'
    : `The dilemma, as PROTOCOL.md defines it (rFID falls and generation FID at the last checkpoint rises with C), does not appear in full: rFID ${TREND_WORDS[String(rfidTrend) as '-1' | '0' | '1']}, FID ${TREND_WORDS[String(fidTrend) as '-1' | '0' | '1']}.`;
  const fewest = Math.min(...[...byChannels.values()].map((group) => group.length));
  const caveat = fewest < 2 ? ' Some widths have one seed only: there is no spread to judge these differences against yet.' : '';
  return [line(rfid, 'lower'), line(cols[1]!, 'lower'), line(fid, 'lower'), '', verdict + caveat];
}

function count(n: number): string {
  return n.toLocaleString('en-US');
}

/** Writes `<dir>/README.md` and `<dir>/channels.png` from the cell files of `dir`. */
export async function writeChannelStudyReport(dir: string): Promise<{ cells: number }> {
  const cells = readChannelCells(dir);
  if (cells.length === 0) throw new Error(`${dir}: no cell files (c<C>-seed<S>.json)`);
  const profile = cells[0]!.profile;
  const steps = cells[0]!.curve.map((p) => p.step);
  const cols = columns(steps);
  const byChannels = new Map<number, ChannelCellMetrics[]>();
  for (const cell of cells) byChannels.set(cell.channels, [...(byChannels.get(cell.channels) ?? []), cell]);
  const cpuMinutes = cells.flatMap((c) => (c.cpuSeconds === undefined ? [] : [c.cpuSeconds / 60]));
  const wallHours = cells.reduce((sum, c) => sum + c.wallSeconds, 0) / 3600;

  const meanTable = [
    `| C | seeds | ${cols.map((c) => c.label).join(' | ')} |`,
    `|---|---|${cols.map(() => '---').join('|')}|`,
    ...[...byChannels].map(([c, group]) => `| ${c} | ${group.map((m) => m.seed).join(', ')} | ${cols.map((col) => formatValues(group.map(col.value), col.decimals)).join(' | ')} |`),
  ];
  const cellTable = [
    `| cell | ${cols.map((c) => c.label).join(' | ')} | SiT loss | wall minutes | CPU minutes |`,
    `|---|${cols.map(() => '---').join('|')}|---|---|---|`,
    ...cells.map((m) => `| [c${m.channels}-seed${m.seed}](c${m.channels}-seed${m.seed}.json) | ${cols.map((col) => col.value(m).toFixed(col.decimals)).join(' | ')} | ` +
      `${m.sit.finalLoss.toFixed(4)} | ${(m.wallSeconds / 60).toFixed(1)} | ${m.cpuSeconds === undefined ? 'not recorded' : (m.cpuSeconds / 60).toFixed(1)} |`),
  ];

  const series: PlotSeries[] = cols.filter((c) => c.label === 'rFID' || c.label === 'iFID' || c.label.startsWith('FID @')).map((col) => ({
    name: col.label, points: [...byChannels].map(([c, group]): [number, number] => [c, mean(group.map(col.value))]),
  }));
  await savePlot(join(dir, 'channels.png'), series, { title: 'FID, rFID and iFID against latent channels (mean over seeds)', logY: true, xLabel: 'latent channels' });

  const classifier = cells[0]!.classifier;
  const cpu = [...new Set(cells.map((m) => m.environment.cpu))].join('; ');
  const lines = [
    '# Latent-channel study: results',
    '',
    `Written by \`reals demo channels-report\` from the ${cells.length} cell files in this folder (profile \`${profile.name}\`); the protocol is`,
    '[PROTOCOL.md](PROTOCOL.md). Values are mean ± sample standard deviation over the seeds listed. FID, precision and recall:',
    `${count(profile.samples)} ODE samples of the SiT at each step, against the first ${count(profile.referenceImages)} test images; rFID and iFID: ${count(profile.ifid.images)} test images,`,
    `in the features of one classifier (sha256 ${classifier.sha256.slice(0, 16)}…, accuracy ${classifier.testAccuracy.toFixed(4)} on ${count(classifier.testImages)} test images).`,
    '',
    ...meanTable,
    '',
    '![FID at each SiT checkpoint, rFID and iFID against latent channels](channels.png)',
    '',
    '## What the numbers say',
    '',
    ...findings(byChannels, cols, steps.at(-1)!),
    '',
    '## Every cell',
    '',
    ...cellTable,
    '',
    `Time: ${wallHours.toFixed(2)} wall hours for these ${cells.length} cells, one thread each, on a shared machine (${cpu}); ` +
      (cpuMinutes.length === 0 ? 'no cell recorded its CPU time.' : `${mean(cpuMinutes).toFixed(1)} CPU minutes a cell (mean over the ${cpuMinutes.length} that recorded it), ` +
        `so the ${STUDY_CHANNELS.length * STUDY_SEEDS.length} cells of the sweep take about ${(mean(cpuMinutes) * STUDY_CHANNELS.length * STUDY_SEEDS.length / 60).toFixed(1)} CPU-hours.`),
    '',
  ];
  writeFileSync(join(dir, 'README.md'), lines.join('\n'));
  return { cells: cells.length };
}
