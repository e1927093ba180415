// Pictures a training run leaves behind: sample grids laid out as torchvision's make_grid /
// save_image (what DiT/SiT write for their samples) and line charts of the logged losses.
import { writeFileSync } from 'node:fs';
import sharp from 'sharp';
import * as torch from '../torch/index.js';

const F = torch.nnFunctional;

/** A uint8 image [H, W, C] (C = 1, 2, 3 or 4) as PNG bytes. */
export async function encodePng(image: torch.Tensor): Promise<Buffer> {
  const [height, width, channels] = image.shape;
  if (image.dtype !== 'uint8' || image.ndim !== 3 || ![1, 2, 3, 4].includes(channels!)) {
    throw new Error(`encodePng: expected a uint8 [H, W, C] tensor with C in 1..4, got ${image.dtype} [${image.shape}]`);
  }
  const data = image.toArray() as Uint8Array;
  return sharp(data, { raw: { width: width!, height: height!, channels: channels as 1 | 2 | 3 | 4 } }).png().toBuffer();
}

export interface GridOptions {
  /** Images per row (torchvision's default 8). */
  nrow?: number;
  /** Black pixels between and around the images (torchvision's default 2). */
  padding?: number;
  /** The value range of float images, mapped to 0..255 after clamping (default [-1, 1], DiT's `value_range`). */
  range?: [number, number];
}

/**
 * torchvision.utils.make_grid + save_image's conversion: `images` [N, C, H, W] (float in `range`,
 * or uint8) become one uint8 image [H', W', C] (C = 1 becomes 3, as make_grid does), image k at
 * row floor(k / nrow), column k % nrow, each cell offset by `padding` with `padding` more at the
 * right and bottom edges; a single image is returned without padding, as make_grid does.
 */
export function makeGrid(images: torch.Tensor, options: GridOptions = {}): torch.Tensor {
  const { nrow = 8, padding = 2, range = [-1, 1] } = options;
  if (images.ndim !== 4) throw new Error(`makeGrid: expected images [N, C, H, W], got [${images.shape}]`);
  const [n, channels, height, width] = images.shape as [number, number, number, number];
  if (n === 0) throw new Error('makeGrid: no images');
  return torch.scope(() => {
    let x = images.detach().cpu();
    if (x.dtype !== 'uint8') {
      if (!x.isFloatingPoint()) throw new Error(`makeGrid: images must be floating point or uint8, got ${x.dtype}`);
      const [low, high] = range;
      // save_image: normalize to [0, 1] with value_range, then mul(255).add_(0.5).clamp_(0, 255) and truncate.
      x = x.float().clamp(low, high).sub(low).div(Math.max(high - low, 1e-5)).mul(255).add(0.5).clamp(0, 255).to('uint8');
    }
    if (channels === 1) x = torch.cat([x, x, x], 1);
    const c = x.shape[1]!;
    if (n === 1) return x.reshape(c, height, width).permute(1, 2, 0).contiguous();
    const columns = Math.min(nrow, n);
    const rows = Math.ceil(n / columns);
    // Each cell is an image with `padding` above and to its left; the blank cells fill the last row.
    let cells = F.pad(x, [padding, 0, padding, 0]);
    if (rows * columns > n) cells = torch.cat([cells, torch.zeros([rows * columns - n, c, height + padding, width + padding], { dtype: 'uint8' })]);
    const grid = cells.reshape(rows, columns, c, height + padding, width + padding).permute(2, 0, 3, 1, 4)
      .reshape(c, rows * (height + padding), columns * (width + padding));
    return F.pad(grid, [0, padding, 0, padding]).permute(1, 2, 0).contiguous();
  });
}

/** Writes `images` [N, C, H, W] as one PNG grid, as torchvision.utils.save_image(images, path, nrow, padding, normalize=True, value_range). */
export async function saveImageGrid(path: string, images: torch.Tensor, options: GridOptions = {}): Promise<void> {
  const grid = makeGrid(images, options);
  try {
    writeFileSync(path, await encodePng(grid));
  } finally {
    grid.dispose();
  }
}

// ---------------------------------------------------------------------------------------------
// Line charts, drawn as SVG and rasterized by sharp (librsvg), which also renders the text.

export interface PlotSeries { name: string; points: [number, number][] }
export interface PlotOptions { title?: string; logY?: boolean; width?: number; height?: number; /** Default 'step'. */ xLabel?: string }

// matplotlib's tab10 colours, so curves look the way users know them.
export const PLOT_COLORS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];
const MARGIN = { left: 70, top: 40, bottom: 45 };

/** Tick positions covering [low, high] at a 1-2-5 step, and the axis bounds they round it to. */
function linearTicks(low: number, high: number): { ticks: number[]; low: number; high: number } {
  if (low === high) [low, high] = [low - Math.max(Math.abs(low) * 0.1, 1), high + Math.max(Math.abs(high) * 0.1, 1)];
  const raw = (high - low) / 5;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * magnitude).find((s) => s >= raw)!;
  const first = Math.floor(low / step);
  const last = Math.ceil(high / step);
  const ticks = Array.from({ length: last - first + 1 }, (_, i) => (first + i) * step);
  return { ticks, low: first * step, high: last * step };
}

function label(value: number): string { return String(Number(value.toPrecision(6))); }

function escapeXml(text: string): string {
  return text.replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** Writes a line chart of `series` as a PNG (one colour per series, legend on the right). */
export async function savePlot(path: string, series: PlotSeries[], options: PlotOptions = {}): Promise<void> {
  // The legend's column is as wide as its longest name (about 7 px a character at 12 px), the plot keeps 630 px.
  const legendWidth = Math.max(170, 50 + 7 * Math.max(...series.map((s) => s.name.length)));
  const { title = '', logY = false, width = 630 + legendWidth, xLabel = 'step' } = options;
  // Tall enough for every legend row (20 px each).
  const height = Math.max(options.height ?? 450, MARGIN.top + 20 * series.length + 20);
  const points = series.flatMap((s) => s.points);
  if (points.length === 0) throw new Error(`savePlot(${path}): no points to plot`);
  for (const s of series) {
    for (const [step, value] of s.points) {
      if (!Number.isFinite(step) || !Number.isFinite(value)) throw new Error(`savePlot(${path}): series "${s.name}" has a non-finite point (${step}, ${value})`);
      if (logY && value <= 0) throw new Error(`savePlot(${path}): series "${s.name}" has value ${value} at step ${step}, which a log scale cannot show`);
    }
  }
  const fy = logY ? Math.log10 : (v: number) => v;
  const xs = points.map(([step]) => step);
  const ys = points.map(([, value]) => fy(value));
  const x = linearTicks(Math.min(...xs), Math.max(...xs));
  let y: { ticks: number[]; low: number; high: number };
  if (logY) {
    const low = Math.floor(Math.min(...ys));
    const high = Math.max(Math.ceil(Math.max(...ys)), low + 1);
    const every = Math.ceil((high - low) / 8);
    y = { ticks: Array.from({ length: Math.floor((high - low) / every) + 1 }, (_, i) => low + i * every), low, high };
  } else {
    y = linearTicks(Math.min(...ys), Math.max(...ys));
  }

  const plotWidth = width - MARGIN.left - legendWidth;
  const plotHeight = height - MARGIN.top - MARGIN.bottom;
  const px = (v: number) => (MARGIN.left + ((v - x.low) / (x.high - x.low)) * plotWidth).toFixed(2);
  const py = (v: number) => (MARGIN.top + plotHeight - ((v - y.low) / (y.high - y.low)) * plotHeight).toFixed(2);
  const right = MARGIN.left + plotWidth;
  const bottom = MARGIN.top + plotHeight;
  const text = (tx: number | string, ty: number | string, anchor: string, content: string, size = 12) =>
    `<text x="${tx}" y="${ty}" text-anchor="${anchor}" font-family="sans-serif" font-size="${size}" fill="#000">${escapeXml(content)}</text>`;

  const svg: string[] = [`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}">`, `<rect width="${width}" height="${height}" fill="#fff"/>`];
  for (const t of x.ticks) {
    svg.push(`<line x1="${px(t)}" y1="${MARGIN.top}" x2="${px(t)}" y2="${bottom}" stroke="#ddd"/>`, text(px(t), bottom + 16, 'middle', label(t)));
  }
  for (const t of y.ticks) {
    svg.push(`<line x1="${MARGIN.left}" y1="${py(t)}" x2="${right}" y2="${py(t)}" stroke="#ddd"/>`, text(MARGIN.left - 6, Number(py(t)) + 4, 'end', label(logY ? 10 ** t : t)));
  }
  svg.push(`<rect x="${MARGIN.left}" y="${MARGIN.top}" width="${plotWidth}" height="${plotHeight}" fill="none" stroke="#000"/>`);
  svg.push(text(width / 2, 24, 'middle', title, 16), text(MARGIN.left + plotWidth / 2, height - 8, 'middle', xLabel));
  series.forEach((s, i) => {
    const color = PLOT_COLORS[i % PLOT_COLORS.length]!;
    const coords = s.points.map(([step, value]) => [px(step), py(fy(value))] as const);
    if (coords.length === 1) svg.push(`<circle cx="${coords[0]![0]}" cy="${coords[0]![1]}" r="3" fill="${color}"/>`);
    else if (coords.length > 1) svg.push(`<polyline points="${coords.map((c) => c.join(',')).join(' ')}" fill="none" stroke="${color}" stroke-width="2"/>`);
    const ly = MARGIN.top + 10 + i * 20;
    svg.push(`<rect x="${right + 15}" y="${ly}" width="20" height="10" fill="${color}"/>`, text(right + 42, ly + 10, 'start', s.name));
  });
  svg.push('</svg>');
  writeFileSync(path, await sharp(Buffer.from(svg.join(''))).png().toBuffer());
}
