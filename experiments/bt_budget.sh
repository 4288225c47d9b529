#!/usr/bin/env bash
# Back-translation at longer, equal budgets: a pair's baseline and its tagged-beam BT model, each trained for
# 2x and 3x the steps of the component experiments' 58-minute budget (2,000 target tokens a step).
#
#   bash experiments/bt_budget.sh de-en 3055     # measured: experiments/results/bt_de_en_{6110,9165}_steps/
#   bash experiments/bt_budget.sh en-de 2995     # measured: experiments/results/bt_en_de_{5990,8985}_steps/
#
# Each longer run resumes the shorter run's copy. That equals training from scratch for the longer
# budget: the learning-rate schedule (inverse_sqrt) does not depend on max_steps, and resume is exact.
#   stage 1: runs/multi30k_<a>_<b> (real pairs) and runs/bt_multi30k/<a>-<b>/beam_tagged (real + tagged BT)
#            come from the 58-minute component runs and experiments/bt_multi30k.py (1x steps each).
#   stage 2: copies resumed to 2x the steps -> experiments/results/bt_<a>_<b>_<2x>_steps/
#   stage 3: those copied and resumed to 3x -> experiments/results/bt_<a>_<b>_<3x>_steps/
# The two trainings of a stage run side by side, one thread each (about 40 min each on the 2-core CPU).
# Rerunning skips finished trainings and decodes.
set -euo pipefail
cd "$(dirname "$0")/.."
pair=${1:?usage: bt_budget.sh PAIR BASE_STEPS}
base=${2:?usage: bt_budget.sh PAIR BASE_STEPS}
a=${pair%-*} b=${pair#*-}
tgt=$b  # the target side: its monolingual text was back-translated

link_shared() {  # the prepared monolingual text, BT corpus and mix of the 1x run (never rebuilt)
  local w=$1
  mkdir -p "$w/$pair/baseline" "$w/$pair/beam_tagged"
  for f in "mono.$tgt.txt" "mono.$tgt.txt.report.json"; do ln -sfn "$PWD/runs/bt_multi30k/$f" "$w/$f"; done
  ln -sfn "$PWD/runs/bt_multi30k/$pair/bt.beam" "$w/$pair/bt.beam"
  ln -sfn "$PWD/runs/bt_multi30k/$pair/beam_tagged/mix" "$w/$pair/beam_tagged/mix"
}

copy_run() {  # copy_run FROM TO: a finished run, made resumable again (its done-marker removed)
  [ -d "$2" ] && return 0
  cp -r "$1" "$2"
  rm -rf "$2/averaged" "$2/synth_trained.json"
}

stage() {  # stage WORK STEPS BASELINE_FROM BT_FROM
  local w=$1 steps=$2
  link_shared "$w"
  copy_run "$3" "$w/$pair/baseline/model"
  copy_run "$4" "$w/$pair/beam_tagged/model"
  local common=(--work-dir "$w" --pairs "$pair" --max-steps "$steps" --max-minutes 400 --device-label cpu-2core --quiet)
  python experiments/bt_multi30k.py "${common[@]}" --variants baseline --train-baseline --results-dir "$w/scratch_base" &
  python experiments/bt_multi30k.py "${common[@]}" --variants beam_tagged --results-dir "$w/scratch_bt" &
  wait
  python experiments/bt_multi30k.py "${common[@]}" --variants baseline beam_tagged --train-baseline \
    --results-dir "experiments/results/bt_${a}_${b}_${steps}_steps"
}

# de-en's work dirs keep the names they were measured under.
w2=runs/bt_long w3=runs/bt_long3
[ "$pair" = de-en ] || { w2=runs/bt_budget/${pair}_2x; w3=runs/bt_budget/${pair}_3x; }
stage "$w2" $((2 * base)) "runs/multi30k_${a}_${b}" "runs/bt_multi30k/$pair/beam_tagged/model"
stage "$w3" $((3 * base)) "$w2/$pair/baseline/model" "$w2/$pair/beam_tagged/model"
