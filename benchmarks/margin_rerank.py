"""The reranker's costly scorers only where the forward model is unsure: quality and FLOPs of the
full noisy-channel reranker against the same reranker with a margin, side by side in one run.

    python benchmarks/margin_rerank.py --forward RUN/model.fwd.en-de/model/best \
        --reverse RUN/model.fwd.de-en/model/best --r2l RUN/model.r2l.en-de/model/best --lm RUN/model.lm.de/model/best \
        --pair en-de --nbest 8 --val-limit 500 --out benchmarks/results/margin_rerank/quickstart_en-de_n8.json

For val (its first ``--val-limit`` lines) and test_2016_flickr of Multi30K (``--data``): beam 5
(the draft a reranker is compared with), the beam-N n-best as the ladder's rerank stage makes it, the reranker's weights tuned on val
over every candidate (``inference_compute.tune``; or ``--weights``, e.g. a ladder's rerank stage's ``weights.json``), then the reranker at each
``--margins`` value (``Scorers.select``: the channel, R2L model and LM score only the candidates
whose free score, forward log-probability per token and length terms, is within the margin of the
best's; ``inf`` is the full reranker). Every FLOP is metered (``ComputeMeter``), not estimated: a
margin's cost is the n-best's decoding plus the scoring it did. Val picks the margin: the cheapest
whose val BLEU is within ``--pick-within`` of the full reranker's. Test scores come with paired
bootstrap p-values and 95% intervals of the difference (1,000 resamples, seed 12345) against the
full reranker and against beam 5. FLOPs are a property of the models and the data, not of the CPU,
so the ratios hold on any machine; seconds are recorded but depend on the load.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
sys.path.insert(0, str(ROOT / "benchmarks"))

MARGINS = [0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, math.inf]


def read(path: Path, limit: int = 0) -> list[str]:
    from core_seq2seq.data import read_text_lines

    lines = read_text_lines(path)
    return lines[:limit] if limit else lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--forward", required=True, help="forward model dir (makes the n-best)")
    ap.add_argument("--reverse", help="reverse model dir: the noisy channel")
    ap.add_argument("--r2l", help="right-to-left model dir")
    ap.add_argument("--lm", help="target LM dir")
    ap.add_argument("--pair", default="en-de")
    ap.add_argument("--data", default="", help="Multi30K root (default: the one decade finds)")
    ap.add_argument("--test-set", default="test_2016_flickr")
    ap.add_argument("--nbest", type=int, default=8, help="beam width and n-best size of the reranker")
    ap.add_argument("--val-limit", type=int, default=0, help="first N val lines tune the weights and pick the margin (0: all)")
    ap.add_argument("--weights", default="", help="frozen reranker weights JSON (default: tuned here on val)")
    ap.add_argument("--margins", default=",".join(str(m) for m in MARGINS))
    ap.add_argument("--pick-within", type=float, default=0.1)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True, help="JSON results")
    args = ap.parse_args(argv)

    import torch

    from core_seq2seq.data import find_multi30k
    from core_seq2seq.translator import DecodeSettings, LSTMTranslator
    from decode_throughput import machine_info
    from evals.metrics import score_corpus
    from evals.significance import paired_delta_ci, paired_significance
    from evals.textio import atomic_write_text
    from inference_compute.candidates import CandidateSpec, generate_candidates
    from inference_compute.compute import ComputeMeter
    from inference_compute.features import Scorers, length_ratio
    from inference_compute.rerank import load_weights
    from inference_compute.tune import TuneConfig, tune_weights

    torch.set_num_threads(args.threads)
    src_lang, tgt_lang = args.pair.split("-")
    raw = (Path(args.data) if args.data else find_multi30k()) / "task1/raw"
    sets = {"val": (read(raw / f"val.{src_lang}.gz", args.val_limit), read(raw / f"val.{tgt_lang}.gz", args.val_limit)),
            args.test_set: (read(raw / f"{args.test_set}.{src_lang}.gz"), read(raw / f"{args.test_set}.{tgt_lang}.gz"))}
    margins = sorted({float(m) for m in args.margins.split(",")} | {math.inf})  # inf: the full reranker, always
    fwd = LSTMTranslator.load(args.forward)
    scorers = Scorers.load(reverse=args.reverse, r2l=args.r2l, lm=args.lm,
                           typical_ratio=length_ratio(*sets["val"]))
    scorers.check(fwd)

    def decode(sources: list[str], width: int, nbest: int) -> tuple[list, dict]:
        """The candidates as the ladder's rerank stage makes them (``generate_candidates``: deduplicated)."""
        spec = CandidateSpec(methods=[DecodeSettings(method="beam", beam_size=width, nbest=nbest, batch_size=args.batch_size)])
        with ComputeMeter({"forward": fwd}, n_sentences=len(sources)) as m:
            out = generate_candidates(fwd, sources, spec)
        return out, m.result

    results: dict = {"argv": sys.argv[1:] if argv is None else argv, "machine": machine_info(),
                     "date": time.strftime("%Y-%m-%d"), "nbest": args.nbest, "sets": {}}
    weights = None
    for name, (sources, refs) in sets.items():
        beam5, beam5_cost = decode(sources, 5, 1)
        nbest, gen_cost = decode(sources, args.nbest, args.nbest)
        if weights is None:  # val comes first: tune over every candidate (or read frozen weights)
            if args.weights:
                weights = load_weights(args.weights)
            else:
                feats = scorers.features(sources, nbest)
                weights = tune_weights(feats, [[c.text for c in cs] for cs in nbest], refs, TuneConfig()).weights
            results["weights"] = weights
        systems = {"beam5": ([cs[0].text for cs in beam5], beam5_cost["flops"], beam5_cost["decode_seconds"])}
        needed = scorers.needed(weights)
        for margin in margins:
            with ComputeMeter(needed.meters(), n_sentences=len(sources)) as m:
                picks = needed.select(sources, nbest, weights, margin)
            label = "full" if math.isinf(margin) else f"margin {margin:g}"
            systems[label] = ([cs[p].text for cs, p in zip(nbest, picks)], gen_cost["flops"] + m.result["flops"],
                              gen_cost["decode_seconds"] + m.result["decode_seconds"])
        full_flops = systems["full"][1]
        rows = {}
        for label, (hyps, flops, seconds) in systems.items():
            s = score_corpus(hyps, refs, trg_lang=tgt_lang)
            rows[label] = {"bleu": s["bleu"], "chrf": s["chrf"], "ter": s["ter"], "flops": flops,
                           "flops_of_full": flops / full_flops, "seconds": seconds}
        if name != "val":
            for base in ("full", "beam5"):
                others = {k: v[0] for k, v in systems.items() if k != base}
                sig = paired_significance(systems[base][0], others, refs, baseline_name=base, trg_lang=tgt_lang)
                for k in others:
                    rows[k][f"p_vs_{base}"] = sig[k]["p_value"]
                    rows[k][f"delta_ci_vs_{base}"] = paired_delta_ci(systems[base][0], others[k], refs, trg_lang=tgt_lang)
        results["sets"][name] = {"sentences": len(sources), "systems": rows}
    val = results["sets"]["val"]["systems"]
    ok = [k for k in val if k != "beam5" and val[k]["bleu"] >= val["full"]["bleu"] - args.pick_within]
    results["val_pick"] = min(ok, key=lambda k: (val[k]["flops"], k))
    atomic_write_text(args.out, json.dumps(results, indent=1) + "\n")
    for name, r in results["sets"].items():
        print(f"{name} ({r['sentences']} sentences), FLOPs as a share of the full reranker's:")
        for k, v in r["systems"].items():
            extra = "".join(f"  Δ vs {b} {v[f'delta_ci_vs_{b}'][0]:+.2f}..{v[f'delta_ci_vs_{b}'][1]:+.2f} p={v[f'p_vs_{b}']:.3f}"
                            for b in ("full", "beam5") if f"p_vs_{b}" in v)
            pick = "  <- val's pick" if k == results["val_pick"] else ""
            print(f"  {k:12s} BLEU {v['bleu']:6.2f} chrF++ {v['chrf']:6.2f} FLOPs {v['flops_of_full']:.3f}{extra}{pick}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
