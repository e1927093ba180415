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
mkdir -p "$out"
source scripts/study-env.sh
node bin/reals.js demo channels-classifier --work "$work"
export STUDY_WORK="$work"
cell() { # width arm teacher seed
  local name="c$1-$2-$3-seed$4"
  case $2 in control|eq) name="c$1-$2-seed$4" ;; esac
  echo "$out/$name.json align --channels $1 --arm $2 --teacher $3 --seed $4 --work $work --out $out"
}
first=${teachers%% *}
seed_list=($seeds)
# Seeds two by two, each arm of the group for both before the next: a paired comparison completes
# every few cells, and the two cells running side by side never train the same stage-1 VAE (a
# cell whose seed's VAE is being trained would wait for it).
by_pairs() { # teacher arm...
  local teacher=$1 arm s i
  shift
  for ((i = 0; i < ${#seed_list[@]}; i += 2)); do
    for arm in "$@"; do for s in "${seed_list[@]:i:2}"; do cell "$c" "$arm" "$teacher" "$s"; done; done
  done
}
# Width by width (the protocol's addendum of 2026-12-07 15:33: every teacher at C = 8 before C = 4).
for c in $widths; do for teacher in $teachers; do
  # The teacher-free arms (control, eq) once per width and seed, beside the first teacher's cells.
  if [ "$teacher" = "$first" ]; then by_pairs "$teacher" control cos; else by_pairs "$teacher" cos; fi
  by_pairs "$teacher" vf patch
  if [ "$teacher" = "$first" ]; then by_pairs "$teacher" eq; fi
done; done | STUDY_COMMIT="$commit" bash scripts/study-cells.sh
node bin/reals.js demo align-report --out "$out"
