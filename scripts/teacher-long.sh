#!/usr/bin/env bash
# The self-supervised teacher of `reals teacher train` trained far longer than the demo's 200 steps
# (docs/study/teachers/README.md): the demo's architecture (configs/teacher/vit-tiny.json) and
# settings (src/demo/pipeline.ts, SSL_TEACHER), fp32 on one thread, with the schedules spanning
# TEACHER_LONG_STEPS. One command starts the run or continues it from its newest checkpoint, so a
# run stopped by a signal (it saves first), a crash or the end of a session goes on where it was;
# every checkpoint is kept, so each milestone can be probed later
# (`reals teacher probe --dino-ckpt <run>/checkpoints/000N000.safetensors`).
#   bash scripts/teacher-long.sh [EXTRA_TEACHER_TRAIN_FLAGS...]
# TEACHER_LONG_DIR (default study-work/teacher-long), TEACHER_LONG_STEPS (10000) and
# TEACHER_LONG_CKPT_EVERY (250) set the folder, the target (fixed once the run starts: the script
# refuses to continue a run to another) and the checkpoint spacing; extra flags
# come last, so they override (the test trains a smaller head for seconds). The trainer's PID is in
# TEACHER_LONG_PIDS (default /tmp/study-pids) while it runs, for SIGSTOP/SIGCONT; SIGTERM or SIGINT
# to this script reaches the trainer, which saves a checkpoint and stops.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${TEACHER_LONG_DIR:-study-work/teacher-long}
steps=${TEACHER_LONG_STEPS:-10000}
ckpt_every=${TEACHER_LONG_CKPT_EVERY:-250}
run="$dir/000-teacher"
if compgen -G "$run/checkpoints/*.safetensors" > /dev/null; then
  # The schedules span --max-steps: another target would change them in the middle of the run.
  was=$(node -p 'JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).maxSteps' "$run/args.json")
  if [ "$was" != "$steps" ]; then
    echo "teacher-long: $run trains to $was steps (its schedules span them), not TEACHER_LONG_STEPS $steps" >&2
    exit 1
  fi
  where=(--resume "$run")
elif [ -e "$run" ]; then
  echo "teacher-long: $run exists but holds no checkpoint to continue from; remove it to start again" >&2
  exit 1
else
  where=(--results-dir "$dir")
fi
pids=${TEACHER_LONG_PIDS:-/tmp/study-pids}
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
node bin/reals.js teacher train --data-path fashion-mnist --dino-model configs/teacher/vit-tiny.json \
  --batch-size 64 --local-crops-number 6 --lr 1e-3 --teacher-temp 0.04 --warmup-teacher-temp 0.04 --momentum-teacher 0.98 \
  --layerwise-decay 0.9 --patch-embed-lr-mult 0.2 --seed 0 --num-workers 0 --precision fp32 \
  --max-steps "$steps" --ckpt-every "$ckpt_every" --log-every 50 --probe-images 0 "${where[@]}" "$@" &
pid=$!
flock "$pids.lock" sh -c "echo $pid >> '$pids'"
trap 'kill -TERM $pid 2>/dev/null || true' TERM
trap 'kill -INT $pid 2>/dev/null || true' INT
status=0
wait "$pid" || status=$?
# A trapped signal ends `wait` early; wait again for the trainer's own status.
while kill -0 "$pid" 2>/dev/null; do status=0; wait "$pid" || status=$?; done
flock "$pids.lock" sed -i "/^$pid\$/d" "$pids"
exit "$status"
