#!/usr/bin/env bash
# Every cell of docs/reproduction.md, each part skipping what is already done. Part 1: for each
# seed and teacher, one `reals demo` run of the quick profile at 4 latent channels with the cos
# loss (as it ran before the demo's default moved to 8 channels and the vf loss), both protocols and
# both alignment weights (a pretrained VAE, its control, and four ReaLS VAEs, each with a SiT scored
# at 25%, 50% and 100% of its steps), two runs at a time (one per core), then one merged report
# over all of them; a run whose metrics.json exists is kept.
# Part 2: the latent-channel cells (scripts/study-channels.sh); part 3: the alignment cells
# (scripts/study-align.sh), both into docs/study/ (--commit commits each cell's file when done).
# About 3 + 1.5 + 11 CPU-hours (docs/reproduction.md, "Running every cell").
#   bash scripts/reproduce.sh [--commit] [OUT [TEACHERS [SEEDS]]]    part 1's defaults: study, "ssl supervised", "0 1 2"
set -euo pipefail
cd "$(dirname "$0")/.."
commit=()
if [ "${1:-}" = --commit ]; then commit=(--commit); shift; fi
out=${1:-study}
teachers=${2:-ssl supervised}
seeds=${3:-0 1 2}
mkdir -p "$out/runs" "$out/logs"
export OPENBLAS_NUM_THREADS=1 REALS_STUDY_OUT="$out"
for seed in $seeds; do for teacher in $teachers; do echo "$teacher $seed"; done; done |
  xargs -P 2 -L 1 bash -c '
    run="$REALS_STUDY_OUT/runs/$0-seed$1"
    [ -f "$run/metrics.json" ] && exit 0
    node bin/reals.js demo --profile quick --precision fp32 --threads 1 --seeds "$1" --teacher "$0" --protocol finetune,scratch \
      --loss cos --align-weight 0.25,1 --latent-channels 4 --out "$run" > "$REALS_STUDY_OUT/logs/$0-seed$1.log" 2>&1'
node bin/reals.js demo merge "$out"/runs/* --out "$out"
bash scripts/study-channels.sh "${commit[@]}"
bash scripts/study-align.sh "${commit[@]}"
