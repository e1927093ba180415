#!/usr/bin/env bash
# Runs study cells two at a time (one per core; STUDY_JOBS sets how many), under nice, with the
# study's computation (scripts/study-env.sh: one thread, OpenBLAS's SkylakeX kernels). Each line
# of stdin is one cell: its metrics file, then the arguments of `reals demo` that write it, e.g.
#   docs/study/channels/c8-seed0.json channels --channels 8 --seed 0
# A cell whose metrics file exists is skipped, and a killed one resumes from its last finished
# stage, so running the same lines again continues the study. Each running cell's PID is in
# /tmp/study-pids, one a line, while it runs (SIGSTOP and SIGCONT pause and resume it); its log is
# $STUDY_WORK/logs/<file name>.log. With STUDY_COMMIT=1 each finished metrics file is committed
# alone, as soon as it is written, with its headline numbers in the message.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${STUDY_WORK:?STUDY_WORK: the work folder}"
mkdir -p "$STUDY_WORK/logs"
touch /tmp/study-pids
source scripts/study-env.sh
export STUDY_WORK STUDY_COMMIT="${STUDY_COMMIT:-0}"
xargs -P "${STUDY_JOBS:-2}" -L 1 bash -c '
  file=$0
  [ -f "$file" ] && exit 0
  log="$STUDY_WORK/logs/$(basename "$file" .json).log"
  nice -n 10 node bin/reals.js demo "$@" >> "$log" 2>&1 &
  pid=$!
  flock /tmp/study-pids.lock sh -c "echo $pid >> /tmp/study-pids"
  status=0
  wait "$pid" || status=$?
  flock /tmp/study-pids.lock sed -i "/^$pid\$/d" /tmp/study-pids
  if [ "$status" != 0 ]; then echo "cell $file failed (exit $status): see $log" >&2; exit 0; fi
  [ "$STUDY_COMMIT" = 1 ] || exit 0
  message=$(node -e "
    const m = JSON.parse(require(\"fs\").readFileSync(process.argv[1], \"utf8\"));
    const last = m.curve.at(-1);
    const cell = m.study === \"alignment\"
      ? \`alignment C=\${m.channels} \${m.arm}\${m.teacher.name === \"none\" ? \"\" : \` (\${m.teacher.name})\`} seed \${m.seed}\`
      : \`channels C=\${m.channels} seed \${m.seed}\`;
    console.log(\`study: \${cell}: FID \${last.fid.toFixed(2)} (SiT step \${last.step}), rFID \${m.reconstruction.rfid.toFixed(2)}, iFID \${m.reconstruction.ifid.toFixed(2)} (\${Math.round(m.wallSeconds)} s)\`);" "$file")
  dir=$(dirname "$file")
  # Only this file goes into the commit (what others staged stays staged); a busy index is retried.
  for try in 1 2 3 4 5 6 7 8 9 10; do
    git -C "$dir" add -- "$(basename "$file")" && git -C "$dir" commit -q -m "$message" -- "$(basename "$file")" && break
    sleep 5
  done'
