#!/usr/bin/env bash
# Issue 4 at longer, equal budgets: the de-en baseline and the tagged-beam BT model, each trained for
# 2x and 3x the 3,055 steps of issue 2's 58-minute budget (2,000 target tokens a step).
#
# Each longer run resumes the shorter run's copy. That equals training from scratch for the longer
# budget: the learning-rate schedule (inverse_sqrt) does not depend on max_steps, and resume is exact.
#   stage 1: runs/multi30k_de_en (3,055 steps, real pairs) and runs/bt_multi30k/de-en/beam_tagged
#            (3,055 steps, real + tagged BT) come from issue 2 and benchmarks/bt_multi30k.py.
#   stage 2: copies resumed to 6,110 steps   -> benchmarks/results/bt_de_en_6110_steps/
#   stage 3: those copied and resumed to 9,165 -> benchmarks/results/bt_de_en_9165_steps/
# The two trainings of a stage run side by side, one thread each (about 40 min each on the 2-core CPU).
# Rerunning skips finished trainings and decodes.
set -euo pipefail
cd "$(dirname "$0")/.."

link_shared() {  # the prepared monolingual text, BT corpus and mix of the 1x run (never rebuilt)
  local w=$1
  mkdir -p "$w/de-en/baseline" "$w/de-en/beam_tagged"
  for f in mono.en.txt mono.en.txt.report.json; do ln -sfn "$PWD/runs/bt_multi30k/$f" "$w/$f"; done
  ln -sfn "$PWD/runs/bt_multi30k/de-en/bt.beam" "$w/de-en/bt.beam"
  ln -sfn "$PWD/runs/bt_multi30k/de-en/beam_tagged/mix" "$w/de-en/beam_tagged/mix"
}

copy_run() {  # copy_run FROM TO: a finished run, made resumable again (its done-marker removed)
  [ -d "$2" ] && return 0
  cp -r "$1" "$2"
  rm -rf "$2/averaged" "$2/synth_trained.json"
}

stage() {  # stage WORK STEPS BASELINE_FROM BT_FROM RESULTS
  local w=$1 steps=$2
  link_shared "$w"
  copy_run "$3" "$w/de-en/baseline/model"
  copy_run "$4" "$w/de-en/beam_tagged/model"
  local common=(--work-dir "$w" --pairs de-en --max-steps "$steps" --max-minutes 400 --device-label cpu-2core --quiet)
  python benchmarks/bt_multi30k.py "${common[@]}" --variants baseline --train-baseline --results-dir "$w/scratch_base" &
  python benchmarks/bt_multi30k.py "${common[@]}" --variants beam_tagged --results-dir "$w/scratch_bt" &
  wait
  python benchmarks/bt_multi30k.py "${common[@]}" --variants baseline beam_tagged --train-baseline --results-dir "$5"
}

stage runs/bt_long 6110 runs/multi30k_de_en runs/bt_multi30k/de-en/beam_tagged/model \
  benchmarks/results/bt_de_en_6110_steps
stage runs/bt_long3 9165 runs/bt_long/de-en/baseline/model runs/bt_long/de-en/beam_tagged/model \
  benchmarks/results/bt_de_en_9165_steps
