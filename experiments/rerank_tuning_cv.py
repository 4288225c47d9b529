"""How well do reranker weights tuned on val carry to unseen sentences? K-fold cross-validation on
val alone (never a test set): the weights are tuned on K-1 folds of val's n-best lists and select on
the held-out fold; the held-out selections of all folds give one corpus BLEU (and chrF++) on val,
the estimate of what each tuning recipe delivers on new text. Reads a ladder stage's cached n-best
lists with their features (``<run>/<pair>.rerank_mbr/nbest.val.json``), so it decodes nothing.

    python experiments/rerank_tuning_cv.py ~/decade-runs/multi30k/en-de.rerank_mbr/nbest.val.json \\
        ../shared/data/multi30k/task1/raw/val.de.gz --folds 5

Recipes: ``search`` (the ladder's: 200 random draws, then coordinate ascent; BLEU), ``search-chrf``
(the same on chrF++), ``ascent`` (coordinate ascent from the forward model alone, no random
draws), ``bagged`` (``search`` on 5 bootstrap resamples of the tuning folds, weights averaged; each
is already scaled to a forward weight of 1), ``flat`` (no tuning: every model's per-token log-prob weighted
1, no length terms) and ``forward`` (the forward model alone). Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evals.metrics import corpus_bleu, new_metric  # noqa: E402
from evals.textio import atomic_write_lines, check_same_length, read_lines  # noqa: E402
from inference_compute.rerank import select  # noqa: E402
from inference_compute.tune import TuneConfig, tune_weights  # noqa: E402

MODELS = ("fwd_per_token", "rev_per_token", "r2l_per_token", "lm_per_token")


def corpus_chrf(hyps: list, refs: list) -> float:
    return float(new_metric("chrf").corpus_score(hyps, [list(refs)]).score)


def recipe_weights(name: str, feats: list, texts: list, refs: list, seed: int, order: list[str]) -> dict[str, float]:
    """``order``: the features in the order the ladder tuned them (its random draws follow it)."""
    if name == "forward":
        return {"fwd_per_token": 1.0}
    if name == "flat":
        return {m: 1.0 for m in MODELS if m in feats[0][0]}
    if name == "search":
        return tune_weights(feats, texts, refs, TuneConfig(features=order, seed=seed)).weights
    if name == "search-chrf":
        return tune_weights(feats, texts, refs, TuneConfig(features=order, seed=seed, metric="chrf")).weights
    if name == "ascent":
        return tune_weights(feats, texts, refs, TuneConfig(features=order, seed=seed, random_trials=0)).weights
    if name == "bagged":
        rng, acc = random.Random(seed), {}
        for b in range(5):
            idx = [rng.randrange(len(feats)) for _ in feats]
            w = tune_weights([feats[i] for i in idx], [texts[i] for i in idx], [refs[i] for i in idx],
                             TuneConfig(features=order, seed=seed + b)).weights
            for k, v in w.items():
                acc[k] = acc.get(k, 0.0) + v / 5
        return acc
    raise ValueError(name)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("nbest_json", help="a ladder rerank stage's nbest.val.json (n-best lists with features)")
    p.add_argument("ref", help="val references")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--recipes", default="forward,flat,search,search-chrf,ascent,bagged")
    p.add_argument("--test-nbest", help="the same stage's nbest.<test>.json: the recipe with the best cross-validated "
                                        "val BLEU, and the ladder's (search), tuned on all of val, select on it once")
    p.add_argument("--hyps-dir", help="with --test-nbest: where their test hypotheses are written")
    args = p.parse_args()
    if args.test_nbest and not args.hyps_dir:
        p.error("--test-nbest needs --hyps-dir (where the test hypotheses go)")
    data = json.loads(Path(args.nbest_json).read_text())
    feats, texts, refs = data["features"], [[c[0] for c in cs] for cs in data["nbest"]], read_lines(args.ref)
    check_same_length([(args.nbest_json, texts), (args.ref, refs)])
    weights_json = Path(args.nbest_json).with_name("weights.json")  # the stage's tuned weights: their feature order
    order = (json.loads(weights_json.read_text())["features"] if weights_json.exists()
             else ["fwd_per_token", "rev_per_token", "lm_per_token", "r2l_per_token", "tokens", "len_ratio_dev"])
    n = len(refs)
    out = {"nbest": args.nbest_json, "sentences": n, "folds": args.folds, "feature_order": order, "recipes": {}}
    for name in args.recipes.split(","):
        picks: list[str | None] = [None] * n
        fold_weights = []
        for k in range(args.folds):
            train = [i for i in range(n) if i % args.folds != k]
            held = [i for i in range(n) if i % args.folds == k]
            w = recipe_weights(name, [feats[i] for i in train], [texts[i] for i in train], [refs[i] for i in train],
                               args.seed, order)
            fold_weights.append(w)
            for i, j in zip(held, select([feats[i] for i in held], w)):
                picks[i] = texts[i][j]
        full = recipe_weights(name, feats, texts, refs, args.seed, order)
        tuned_on_all = [texts[i][j] for i, j in enumerate(select(feats, full))]
        out["recipes"][name] = {"cv_bleu": corpus_bleu(picks, refs), "cv_chrf": corpus_chrf(picks, refs),
                                "val_bleu_tuned_on_val": corpus_bleu(tuned_on_all, refs),
                                "weights_on_all_val": full, "fold_weights": fold_weights}
        print(name, round(out["recipes"][name]["cv_bleu"], 2), round(out["recipes"][name]["cv_chrf"], 2),
              round(out["recipes"][name]["val_bleu_tuned_on_val"], 2), file=sys.stderr)
    if args.test_nbest:
        best = max(out["recipes"], key=lambda r: out["recipes"][r]["cv_bleu"])
        test = json.loads(Path(args.test_nbest).read_text())
        d = Path(args.hyps_dir)
        d.mkdir(parents=True, exist_ok=True)
        out["test"] = {"nbest": args.test_nbest, "chosen_on_val": best, "hyps": {}}
        for name in dict.fromkeys(["search", best]):  # the ladder's recipe always, beside val's choice
            weights = (out["recipes"][name]["weights_on_all_val"] if name in out["recipes"]
                       else recipe_weights(name, feats, texts, refs, args.seed, order))
            picks = select(test["features"], weights)
            path = d / f"{Path(args.test_nbest).parent.name}.{Path(args.test_nbest).stem}.{name}.txt"  # <pair>.rerank_mbr.nbest.<set>
            atomic_write_lines(path, [test["nbest"][i][j][0] for i, j in enumerate(picks)])
            out["test"]["hyps"][name] = str(path)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
