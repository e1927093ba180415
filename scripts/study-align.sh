#!/usr/bin/env bash
# The alignment study (docs/study/alignment/PROTOCOL.md): every missing cell of
# `reals demo align` in the protocol's order, two at a time (scripts/study-cells.sh), then the
# tables (docs/study/alignment/README.md). Rerunning it continues the study.
#   bash scripts/study-align.sh [--commit] [CHANNELS [TEACHERS [SEEDS]]]   defaults: "8 4", "hog supervised ssl", "0 1 2 3 4 5"
# A teacher whose files are missing (docs/study/teachers/README.md says how to make them) makes its
# cells fail with the command that makes it; the other cells run. --commit, STUDY_OUT and
# STUDY_WORK as in scripts/study-channels.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
commit=0
if [ "${1:-}" = --commit ]; then commit=1; shift; fi
widths=${1:-8 4}
teachers=${2:-hog supervised ssl}
seeds=${3:-0 1 2 3 4 5}
out=$(realpath -m "${STUDY_OUT:-docs/study/alignment}")
work=$(realpath -m "${STUDY_WORK:-study-work}")
mkdir -p "$out" "$work/logs"
node bin/reals.js demo channels-classifier --work "$work"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 STUDY_WORK="$work"
# Each (width, seed)'s stage-1 VAE once (two at a time), before its arms run side by side.
for c in $widths; do for seed in $seeds; do echo "$c $seed"; done; done |
  xargs -P 2 -L 1 bash -c 'nice -n 10 node bin/reals.js demo align --stage-one-only --channels $0 --seed $1 --work "$STUDY_WORK" >> "$STUDY_WORK/logs/stage-one-c$0-seed$1.log" 2>&1'
cell() { # width arm teacher seed
  local name="c$1-$2-$3-seed$4"
  case $2 in control|eq) name="c$1-$2-seed$4" ;; esac
  echo "$out/$name.json align --channels $1 --arm $2 --teacher $3 --seed $4 --work $work --out $out"
}
first=${teachers%% *}
for teacher in $teachers; do for c in $widths; do
  # The teacher-free arms (control, eq) once per width and seed, with the first teacher's cells.
  for seed in $seeds; do
    if [ "$teacher" = "$first" ]; then cell "$c" control "$teacher" "$seed"; fi
    cell "$c" cos "$teacher" "$seed"
  done
  for seed in $seeds; do cell "$c" vf "$teacher" "$seed"; cell "$c" patch "$teacher" "$seed"; done
  if [ "$teacher" = "$first" ]; then for seed in $seeds; do cell "$c" eq "$teacher" "$seed"; done; fi
done; done | STUDY_COMMIT="$commit" bash scripts/study-cells.sh
node bin/reals.js demo align-report --out "$out"
