#!/usr/bin/env python3
"""Paired differences of the reproduction study: each ReaLS latent space minus its own baseline,
within one seed (so within one run and one evaluation classifier), then mean and standard deviation
over seeds.  Usage: python3 scripts/study-paired.py METRICS.json [METRICS.json ...]
Prints a markdown table (docs/reproduction.md, "Paired over seeds")."""
import json
import statistics
import sys

METRICS = [
    ('FID, ODE, final', lambda s: s['sampling']['ode']['fid'], 'lower'),
    ('FID, SDE, final', lambda s: s['sampling']['sde']['fid'], 'lower'),
    ('FID, ODE, 50% of the steps', lambda s: s['curve'][1]['ode']['fid'], 'lower'),
    ('rFID', lambda s: s['reconstruction']['rfid'], 'lower'),
    ('recall, ODE', lambda s: s['sampling']['ode']['recall'], 'higher'),
    ('recall, SDE', lambda s: s['sampling']['sde']['recall'], 'higher'),
    ('reconstruction MSE', lambda s: s['reconstruction']['mse'], 'lower'),
]


def baseline(space):
    return 'control' if '-finetune-' in space else 'pretrained'


def main(paths):
    per_seed = {}
    for path in paths:
        with open(path) as f:
            result = json.load(f)
        for seed, spaces in result['runs'].items():
            if seed in per_seed:
                sys.exit(f'{path}: seed {seed} appears twice')
            per_seed[seed] = (spaces, result['classifier']['testAccuracy'])
    seeds = sorted(per_seed, key=int)
    spaces = [s for s in per_seed[seeds[0]][0] if s.startswith('reals-')]
    print(f'Seeds {", ".join(seeds)}; evaluation classifier test accuracy per seed: '
          + ', '.join(f'{per_seed[s][1]:.3f}' for s in seeds) + '.\n')
    print('| ReaLS minus its baseline | ' + ' | '.join(f'`{s}` − `{baseline(s)}`' for s in spaces) + ' |')
    print('| --- |' + ' --- |' * len(spaces))
    for name, read, better in METRICS:
        cells = []
        for space in spaces:
            diffs = [read(per_seed[s][0][space]) - read(per_seed[s][0][baseline(space)]) for s in seeds]
            wins = sum(1 for d in diffs if (d < 0 if better == 'lower' else d > 0))
            mean = statistics.mean(diffs)
            spread = statistics.stdev(diffs) if len(diffs) > 1 else float('nan')
            digits = 4 if 'MSE' in name else 3 if 'recall' in name else 2
            cells.append(f'{mean:+.{digits}f} ± {spread:.{digits}f} ({wins}/{len(diffs)})')
        print(f'| {name} ({better} is better) | ' + ' | '.join(cells) + ' |')


if __name__ == '__main__':
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
