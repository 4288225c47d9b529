"""Do other models' candidates help the val-best reranker? A val-only check for issues 5 and 6.

The best non-agent de-en setting reranks the forward model's 64-best with frozen weights (fwd, noisy
channel, R2L, LM, alt; ``experiments/results/inference_de_en_r2l/weights/beam64.json``). The agent's
tools can only add candidates, and its acceptance can at best apply that same reranker. This script
measures the ceiling of that idea on val: add the 8-best of the right-to-left model and/or of the
alt model (issue 4's tagged-BT model) to each 64-best list, score the new candidates with all five
models, and rerank the union with the same frozen weights.

    python experiments/union_rerank.py            # de-en val, about 10 one-thread minutes

Reads the sweep cache of ``experiments/inference_sweep.py --config configs/inference_multi30k_de_en.yaml
--r2l --lm`` (``--sweep-dir``: its 64-best lists and features); decodes and scores into ``--cache``
(resumable); writes ``--out`` (JSON: BLEU with signature per pool, sentences changed, new
candidates per sentence). Only val is read: this is a design check, not a reported test number.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path



def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sweep-dir", default="runs/multi30k_inference/sweep_de_en_r2l")
    p.add_argument("--pool", default="beam64", help="the cached pool the val-best system reranks")
    p.add_argument("--weights", default="experiments/results/inference_de_en_r2l/weights/beam64.json")
    p.add_argument("--src", default="../shared/data/multi30k/task1/raw/val.de.gz")
    p.add_argument("--ref", default="../shared/data/multi30k/task1/raw/val.en.gz")
    p.add_argument("--forward", default="runs/multi30k_de_en/best")
    p.add_argument("--reverse", default="runs/multi30k_en_de/best")
    p.add_argument("--r2l", default="runs/multi30k_r2l_de_en/run/best")
    p.add_argument("--alt", default="runs/bt_multi30k/de-en/beam_tagged/model/best")
    p.add_argument("--lm", default="runs/multi30k_lm_en/run/last")
    p.add_argument("--beam", type=int, default=8, help="beam (= n-best) of the extra decodes")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cache", default="runs/union_rerank/de-en_val")
    p.add_argument("--out", default="experiments/results/union_rerank_de_en_val.json")
    args = p.parse_args(argv)

    import torch

    from core_seq2seq.translator import Candidate, DecodeSettings, LSTMTranslator
    from evals.metrics import new_metric, signature_of
    from evals.textio import atomic_write_text, read_lines
    from inference_compute.features import compute_features, length_ratio, reverse_words
    from inference_compute.lm import TargetLM
    from inference_compute.nbest import read_nbest
    from inference_compute.rerank import argmax, linear_scores, load_weights

    sweep = Path(args.sweep_dir)
    needed = [sweep / "features/val" / f"{args.pool}.json", sweep / "nbest/val" / f"{args.pool}.nbest", Path(args.weights),
              Path(args.src), Path(args.ref)]
    missing = [str(x) for x in needed if not x.exists()]
    if missing:  # the sweep must have run first; say so instead of a traceback
        raise SystemExit(f"error: missing {', '.join(missing)}; run experiments/inference_sweep.py with the de-en "
                         "config first (see this script's docstring)")
    torch.set_num_threads(args.threads)
    split = "val"
    src, ref = read_lines(args.src), read_lines(args.ref)
    weights = load_weights(args.weights)
    cached = json.loads((sweep / "features" / split / f"{args.pool}.json").read_text())
    base_feats = [[dict(zip(cached["names"], row)) for row in rows] for rows in cached["values"]]
    base_texts = [[c.text for c in cs] for cs in read_nbest(sweep / "nbest" / split / f"{args.pool}.nbest")]
    if len(base_texts) != len(src):
        raise SystemExit(f"error: {sweep}: {len(base_texts)} n-best lists for {len(src)} source lines")

    def bleu(hyps: list[str]) -> dict:
        b = new_metric("bleu")
        score = b.corpus_score(hyps, [ref]).score
        return {"bleu": round(score, 2), "signature": signature_of(b)}

    def rerank(feats: list[list[dict]], texts: list[list[str]]) -> list[str]:
        return [ts[argmax(row)] for ts, row in zip(texts, linear_scores(feats, weights))]

    base = rerank(base_feats, base_texts)
    out = {"split": split, "pool": args.pool, "weights": args.weights, "extra_beam": args.beam,
           "systems": {args.pool: {**bleu(base), "changed_vs_pool": 0, "new_candidates_per_sentence": 0.0}}}
    print(f"{args.pool} reranked: {out['systems'][args.pool]['bleu']}", file=sys.stderr)

    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    load = lambda d: LSTMTranslator.load(d)  # noqa: E731
    fwd, rev, r2l, alt = load(args.forward), load(args.reverse), load(args.r2l), load(args.alt)
    lm = TargetLM.load(args.lm)
    typical = length_ratio(src, ref)  # as the sweep: the tuning split's ratio
    settings = DecodeSettings(method="beam", beam_size=args.beam, nbest=args.beam, batch_size=64)
    decoded: dict[str, list[list[str]]] = {}
    for name, model, undo in (("r2l", r2l, reverse_words), ("alt", alt, lambda t: t)):
        path = cache / f"{name}.beam{args.beam}.json"
        if not path.exists():
            lists = [[undo(c.text) for c in cs] for cs in model.translate(src, settings)]
            atomic_write_text(path, json.dumps(lists, ensure_ascii=False))
        decoded[name] = json.loads(path.read_text())

    for members in (["r2l"], ["alt"], ["r2l", "alt"]):
        name = f"{args.pool}+" + "+".join(members)
        extra = []
        for i, texts in enumerate(base_texts):
            seen, new = set(texts), []
            for m in members:
                for t in decoded[m][i]:
                    if t.strip() and t not in seen:
                        seen.add(t)
                        new.append(t)
            extra.append(new)
        path = cache / f"features.{'+'.join(members)}.json"
        if not path.exists():
            cands = [[Candidate(t, 0.0, 1, 0.0) for t in new] for new in extra]  # scored below, not by the generator
            feats = compute_features(src, cands, fwd, rev, lm, r2l=r2l, alt=alt, typical_ratio=typical)
            atomic_write_text(path, json.dumps(feats))
        feats = json.loads(path.read_text())
        hyps = rerank([b + f for b, f in zip(base_feats, feats)], [b + e for b, e in zip(base_texts, extra)])
        out["systems"][name] = {**bleu(hyps), "changed_vs_pool": sum(a != b for a, b in zip(hyps, base)),
                                "new_candidates_per_sentence": round(sum(map(len, extra)) / len(src), 2)}
        print(f"{name}: {out['systems'][name]}", file=sys.stderr)
    atomic_write_text(args.out, json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
