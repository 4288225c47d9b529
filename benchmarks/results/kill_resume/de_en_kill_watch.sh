#!/bin/bash
# Kill the de-en full ladder with SIGKILL in the middle of its backtranslation stage, then rerun it.
cd /work/main
S=runs/ladder_de_en/backtranslation/bt/shards
while true; do
  n=$(ls $S/*.jsonl 2>/dev/null | wc -l)
  if [ "$n" -ge 11 ]; then break; fi
  sleep 2
done
pid=$(pgrep -f "decade run configs/multi30k_de_en.yaml")
echo "$(date -Is) shards done: $(ls $S/*.json 2>/dev/null | wc -l) json, $n jsonl; SIGKILL $pid"
ls -l $S > runs/kill_demo/shards_at_kill.txt
kill -9 $pid
sleep 3
echo "$(date -Is) rerunning"
echo "=== RERUN AFTER SIGKILL $(date -Is) ===" >> runs/ladder_de_en.log
decade run configs/multi30k_de_en.yaml --set train.num_threads=1 >> runs/ladder_de_en.log 2>&1
echo "$(date -Is) rerun exit $?"
