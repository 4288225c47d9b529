#!/bin/bash
# On the finished full en-de run: force the rerank_mbr stage, SIGKILL it midway, rerun without --force,
# and compare the leaderboard records with the committed uninterrupted run's.
cd "$(dirname "$0")/.." && mkdir -p runs/kill_demo
cp runs/ladder_en_de/results.jsonl runs/kill_demo/en_de_results_before.jsonl
cp runs/ladder_en_de/rerank_mbr/stage.json runs/kill_demo/en_de_rerank_stage_before.json
decade run configs/multi30k_en_de.yaml --set train.num_threads=1 --force rerank_mbr > runs/kill_demo/en_de_forced.log 2>&1 &
pid=$!
sleep 90
echo "$(date -Is) SIGKILL $pid mid rerank_mbr; stage.json exists: $(test -e runs/ladder_en_de/rerank_mbr/stage.json && echo yes || echo no)"
pkill -9 -f "decade run configs/multi30k_en_de.yaml"
wait $pid
echo "$(date -Is) rerun without --force"
decade run configs/multi30k_en_de.yaml --set train.num_threads=1 > runs/kill_demo/en_de_rerun.log 2>&1
echo "$(date -Is) rerun exit $?"
python - <<'PY'
import json
keys = ("system", "test_set", "bleu", "chrf", "bleu_ci", "p_vs_prev", "p_vs_baseline")
a = [json.loads(l) for l in open("runs/kill_demo/en_de_results_before.jsonl")]
b = [json.loads(l) for l in open("runs/ladder_en_de/results.jsonl")]
same = [{k: r.get(k) for k in keys} for r in a] == [{k: r.get(k) for k in keys} for r in b]
print(f"records before: {len(a)}, after: {len(b)}, equal on {keys}: {same}")
PY
