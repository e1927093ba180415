// Run logging: what a long-running command reports while it runs and leaves behind. Which process
// this is (rank, device, a log only rank 0 prints), progress bars, metrics.jsonl, TensorBoard event
// files, and pictures (PNG, grids, plots).
// May import: torch, io. Everything that runs for long imports it; it imports no trainer or model.
export { processContext, withDefaults, type ProcessContext } from './process.js';
export { MetricsLog, parseMetrics, type MetricRecord, type MetricsLogOptions } from './metrics.js';
export { SummaryWriter, crc32c, maskedCrc32c, tfRecord, type SummaryWriterOptions } from './tensorboard.js';
export { progress, formatDuration, type Progress, type ProgressOptions, type ProgressFields } from './progress.js';
export { encodePng, makeGrid, saveImageGrid, savePlot, PLOT_COLORS, type GridOptions, type PlotSeries, type PlotOptions } from './images.js';
