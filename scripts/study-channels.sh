#!/usr/bin/env bash
# The latent-channel study (docs/study/channels/PROTOCOL.md): every (channels, seed) cell of
# `reals demo channels`, two at a time (one per core), under nice, seed 0 of every width first;
# then the table and plot (docs/study/channels/README.md). A cell whose metrics file exists is
# skipped and a killed one resumes from its last finished stage, so rerunning this continues the
# study. Each running cell's PID is in /tmp/study-pids, one a line, while it runs (SIGSTOP and
# SIGCONT pause and resume it).
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
mkdir -p "$work/logs" "$out"
touch /tmp/study-pids
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 STUDY_OUT="$out" STUDY_WORK="$work" STUDY_COMMIT="$commit"
# The evaluation classifier first, alone, so that the two cells that start together do not both train it.
node bin/reals.js demo channels-classifier --work "$work"
for seed in $seeds; do for c in $channels; do echo "$c $seed"; done; done |
  xargs -P 2 -L 1 bash -c '
    cell="c$0-seed$1"
    file="$STUDY_OUT/$cell.json"
    [ -f "$file" ] && exit 0
    log="$STUDY_WORK/logs/$cell.log"
    nice -n 10 node bin/reals.js demo channels --channels "$0" --seed "$1" --work "$STUDY_WORK" --out "$STUDY_OUT" >> "$log" 2>&1 &
    pid=$!
    flock /tmp/study-pids.lock sh -c "echo $pid >> /tmp/study-pids"
    status=0
    wait "$pid" || status=$?
    flock /tmp/study-pids.lock sed -i "/^$pid\$/d" /tmp/study-pids
    if [ "$status" != 0 ]; then echo "cell $cell failed (exit $status): see $log" >&2; exit 0; fi
    [ "$STUDY_COMMIT" = 1 ] || exit 0
    message=$(node -e "
      const m = JSON.parse(require(\"fs\").readFileSync(process.argv[1], \"utf8\"));
      const last = m.curve.at(-1);
      console.log(\`study: channels C=\${m.channels} seed \${m.seed}: FID \${last.fid.toFixed(2)} (SiT step \${last.step}), rFID \${m.reconstruction.rfid.toFixed(2)}, iFID \${m.reconstruction.ifid.toFixed(2)} (\${Math.round(m.wallSeconds)} s)\`);" "$file")
    # Only this file goes into the commit (what others staged stays staged); a busy index is retried.
    for try in 1 2 3 4 5 6 7 8 9 10; do
      git -C "$STUDY_OUT" add -- "$cell.json" && git -C "$STUDY_OUT" commit -q -m "$message" -- "$cell.json" && break
      sleep 5
    done'
node bin/reals.js demo channels-report --out "$out"
