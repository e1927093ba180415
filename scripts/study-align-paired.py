#!/usr/bin/env python3
"""The alignment study's paired FID differences, recomputed from the cell files by code independent
of `reals demo align-report` (scipy's Student-t), so a reader can check the tables against the
committed metrics.  Usage: python3 scripts/study-align-paired.py [FOLDER]  (default
docs/study/alignment).  Prints, for each width, a markdown grid of arm minus control (mean [95%
interval] and the seeds where the arm's FID was lower) at every SiT checkpoint of the cells, and the
primary endpoint's comparisons Bonferroni-corrected for their number at that width."""
import glob
import json
import os
import re
import statistics
import sys

from scipy import stats

folder = sys.argv[1] if len(sys.argv) > 1 else 'docs/study/alignment'
NAME = re.compile(r'^c(\d+)-([a-z]+)(?:-([a-z]+))?-seed(\d+)\.json$')
cells = {}  # (channels, arm, teacher) -> {seed: [fid at each checkpoint]}
steps = None
for path in sorted(glob.glob(os.path.join(folder, 'c*-seed*.json'))):
    match = NAME.match(os.path.basename(path))
    if match is None:
        continue
    with open(path) as f:
        cell = json.load(f)
    channels, arm, teacher, seed = int(match[1]), match[2], match[3] or 'none', int(match[4])
    assert (cell['channels'], cell['arm'], cell['seed']) == (channels, arm, seed), f'{path}: its name and contents differ'
    cell_steps = [point['step'] for point in cell['curve']]
    assert steps is None or cell_steps == steps, f'{path}: checkpoints {cell_steps}, others {steps}'
    steps = cell_steps
    cells.setdefault((channels, arm, teacher), {})[seed] = [point['fid'] for point in cell['curve']]
if not cells:
    sys.exit(f'{folder}: no alignment cell files (c<C>-<arm>[-<teacher>]-seed<S>.json)')


def paired(arm_fids, control_fids, checkpoint, level=0.95):
    seeds = sorted(set(arm_fids) & set(control_fids))
    diffs = [arm_fids[s][checkpoint] - control_fids[s][checkpoint] for s in seeds]
    mean = statistics.mean(diffs)
    if len(diffs) < 2:
        return mean, None, diffs
    half = stats.t.ppf(0.5 + level / 2, len(diffs) - 1) * statistics.stdev(diffs) / len(diffs) ** 0.5
    return mean, (mean - half, mean + half), diffs


def signed(value):
    return ('+' if value >= 0 else '−') + f'{abs(value):.2f}'


def entry(result):
    mean, interval, diffs = result
    text = signed(mean) if interval is None else f'{signed(mean)} [{signed(interval[0])}, {signed(interval[1])}]'
    if interval is not None and interval[1] < 0:
        text = f'**{text}**'
    return f'{text} {sum(d < 0 for d in diffs)}/{len(diffs)}'


for channels in sorted({key[0] for key in cells}):
    control = cells.get((channels, 'control', 'none'))
    if control is None:
        continue
    arms = sorted((key for key in cells if key[0] == channels and key[1] != 'control'), key=lambda k: (k[1], k[2]))
    if not arms:
        continue
    print(f'## C = {channels}: FID, arm minus control (paired over seeds)\n')
    print('| arm (teacher) | ' + ' | '.join(f'@{s}' for s in steps) + ' |')
    print('|---|' + '---|' * len(steps))
    for key in arms:
        print(f'| {key[1]} ({key[2]}) | ' + ' | '.join(entry(paired(cells[key], control, i)) for i in range(len(steps))) + ' |')
    compared = [key for key in arms if len(set(cells[key]) & set(control)) >= 2]
    if not compared:
        continue
    level = 1 - 0.05 / len(compared)
    corrected = [(key, paired(cells[key], control, len(steps) - 1, level)[1]) for key in compared]
    excluding = [f'{k[1]} ({k[2]}) [{signed(i[0])}, {signed(i[1])}]' for k, i in corrected if i[1] < 0 or i[0] > 0]
    print(f'\nBonferroni-corrected for the {len(compared)} comparison{"" if len(compared) == 1 else "s"} at @{steps[-1]} ({100 * level:.2f}% intervals): '
          + (f"{'; '.join(excluding)} {'excludes' if len(excluding) == 1 else 'exclude'} 0." if excluding else 'none excludes 0.') + '\n')
