#!/usr/bin/env bash
# The latent-channel study (docs/study/channels/PROTOCOL.md): every (channels, seed) cell of
# `reals demo channels`, two at a time (scripts/study-cells.sh), seed 0 of every width first; then
# the table and plot (docs/study/channels/README.md). Rerunning it continues the study.
#   bash scripts/study-channels.sh [--commit] [SEEDS [CHANNELS]]   defaults: "0 1 2", "4 32 8 16"
# --commit commits each finished cell's metrics file alone, as soon as it is written.
# STUDY_OUT and STUDY_WORK (defaults docs/study/channels and study-work, from the repository root)
# let a checkout of a fixed commit run the cells into another checkout's folders, so that edits
# made meanwhile in that checkout cannot reach a study that is running.
set -euo pipefail
cd "$(dirname "$0")/.."
commit=0
if [ "${1:-}" = --commit ]; then commit=1; shift; fi
seeds=${1:-0 1 2}
channels=${2:-4 32 8 16}
out=$(realpath -m "${STUDY_OUT:-docs/study/channels}")
work=$(realpath -m "${STUDY_WORK:-study-work}")
mkdir -p "$out"
source scripts/study-env.sh
# The evaluation classifier first, alone, so that the two cells that start together do not both train it.
node bin/reals.js demo channels-classifier --work "$work"
for seed in $seeds; do for c in $channels; do
  echo "$out/c$c-seed$seed.json channels --channels $c --seed $seed --work $work --out $out"
done; done | STUDY_WORK="$work" STUDY_COMMIT="$commit" bash scripts/study-cells.sh
node bin/reals.js demo channels-report --out "$out"
