# 1. the killed-and-resumed de-en back-translation vs an uninterrupted one
python - <<'PY'
import yaml
cfg = yaml.safe_load(open("runs/ladder_de_en/backtranslation/bt/config.yaml"))
cfg["output_dir"] = "runs/kill_demo/bt_de_en_uninterrupted"
cfg["num_threads"] = 1
yaml.safe_dump({"backtranslate": cfg}, open("runs/kill_demo/bt_de_en_uninterrupted.yaml", "w"))
PY
rm -rf runs/kill_demo/bt_de_en_uninterrupted
python -m synth backtranslate --config runs/kill_demo/bt_de_en_uninterrupted.yaml > runs/kill_demo/bt_verify.log 2>&1
python - <<'PY' >> runs/kill_demo/bt_verify.log
import json
a = [json.loads(l) for l in open("runs/ladder_de_en/backtranslation/bt/synthetic.jsonl")]
b = [json.loads(l) for l in open("runs/kill_demo/bt_de_en_uninterrupted/synthetic.jsonl")]
keys = ("id", "k", "src", "tgt")
same = [{k: r[k] for k in keys} for r in a] == [{k: r[k] for k in keys} for r in b]
lp = max(abs(x["logprob"] - y["logprob"]) for x, y in zip(a, b))
print(f"killed+resumed: {len(a)} pairs, uninterrupted: {len(b)} pairs; ids {len({r['id'] for r in a})} distinct; "
      f"identical (id, k, src, tgt): {same}; max |logprob diff| {lp:.2e}")
PY
echo "$(date -Is) bt verified"
