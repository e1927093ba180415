// `reals report RUN...`: one HTML page (and its PNGs) for training run folders and sample folders
// (src/pipelines/report.ts writeRunReport).
import { Command } from 'commander';
import { writeRunReport } from '../pipelines/report.js';

export const REPORT_DEFAULT_OUT = 'report';

export function reportCommand(): Command {
  return new Command('report')
    .description('write one HTML page for run folders (align/sit/dit/teacher train) and sample folders: loss curves overlaid, learning rate, reconstructions, sample grids by class, args')
    .argument('<runs...>', 'run folders, sample folders (or their .npz), or folders of them such as results/')
    .option('--out <dir>', 'where report.html and figures/ go', REPORT_DEFAULT_OUT)
    .option('--data-path <path>', 'the data whose class names label the sample rows: an ImageNet-layout folder or `fashion-mnist` (default: the names a sit/dit run\'s checkpoints record, else the --data-path a run recorded)')
    .action(async (runs: string[], flags: { out: string; dataPath?: string }) => {
      const result = await writeRunReport({ runs, out: flags.out, dataPath: flags.dataPath });
      console.log(`wrote ${result.html} (${result.runs.length} run(s), ${result.figures.length} figure(s))`);
    });
}
