"""What does the escalating agent escalate, and where does escalation help or hurt? Reads the output
directory of ``python -m agents curve`` (its ``curve.json`` and an exhaustive trace), replays the
setting val picked (or every curve point) on that trace, and counts, by the draft's flagged critic
signals: sentences escalated, and among them those whose sentence chrF++ rose (fixed) or fell
(harmed) against the draft. Also: fixed/harmed had every sentence been escalated (the full
reranker's view), so the policy's choice can be judged against it; and how predictable, from the
draft alone (the learned policy's features), two things are: whether climbing every rung changes the
draft, and, among the sentences it changes, whether the change fixes or harms (cross-validated AUC,
folds by sentence; 0.5 is chance). With ``--live``, the same counts for a live run's trace.

The settings are replayed with each rung's recorded cost as its bound (the live run's worst-case
bounds need the models), so where the per-sentence cap binds a replay may escalate more than the
live run did; ``--live`` counts what the live run did.

    python benchmarks/escalation_analysis.py CURVE_DIR --trace trace.test_2016_flickr.jsonl --ref test.de

Prints JSON to stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.curve import reference_flops, replay  # noqa: E402
from agents.escalate import FEATURES, LearnedPolicy, RulePolicy, features  # noqa: E402
from agents.gate import cross_validated_auc, load_gate  # noqa: E402
from agents.trace import read_trace  # noqa: E402
from evals.metrics import sentence_chrf  # noqa: E402
from evals.textio import read_lines  # noqa: E402


def analyse(records: list[dict], refs: list[str], finals: dict[int, str], escalated: set[int]) -> dict:
    by_flag: dict[str, Counter] = {}
    totals = Counter()
    for r in records:
        flags = r["steps"][0].get("flags") or ["(none)"]
        d = sentence_chrf(r["draft"], refs[r["id"]])
        f = sentence_chrf(finals[r["id"]], refs[r["id"]])
        outcome = "fixed" if f > d + 1e-9 else "harmed" if f < d - 1e-9 else "same"
        for flag in flags:
            c = by_flag.setdefault(flag, Counter())
            c["sentences"] += 1
            if r["id"] in escalated:
                c["escalated"] += 1
                c[outcome] += 1
        totals["sentences"] += 1
        if r["id"] in escalated:
            totals["escalated"] += 1
            totals[outcome] += 1
    return {"total": dict(totals), "by_draft_flag": {k: dict(v) for k, v in sorted(by_flag.items())}}


def predictability(records: list[dict], refs: list[str], folds: int = 5) -> dict:
    """Cross-validated AUC, from the draft's features, of 'the full climb changes the draft' (all
    sentences) and of 'the change fixes rather than harms' (changed sentences with a chrF++ change)."""
    xs, changed, fx, fy, fids = [], [], [], [], []
    for r in records:
        x = features(r["source"], r["steps"][0], 1, False)
        xs.append(x)
        changed.append(int(r["final"] != r["draft"]))
        delta = sentence_chrf(r["final"], refs[r["id"]]) - sentence_chrf(r["draft"], refs[r["id"]])
        if changed[-1] and abs(delta) > 1e-9:
            fx.append(x), fy.append(int(delta > 0)), fids.append(r["id"])
    ids = [r["id"] for r in records]
    return {"changes": {"n": len(changed), "positive": sum(changed), "cv_auc": _auc(xs, changed, ids, folds)},
            "fix_vs_harm": {"n": len(fy), "fixed": sum(fy), "cv_auc": _auc(fx, fy, fids, folds)}}


def _auc(xs: list, ys: list[int], ids: list[int], folds: int) -> float | None:
    """None where some training fold holds one outcome only (too few examples of one kind to fit)."""
    try:
        return cross_validated_auc(xs, ys, ids, folds) if 0 < sum(ys) < len(ys) else None
    except ValueError:
        return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("curve_dir")
    p.add_argument("--trace", required=True, help="an exhaustive trace in CURVE_DIR (trace.val.jsonl, trace.<test>.jsonl)")
    p.add_argument("--ref", required=True, help="its references")
    p.add_argument("--sentence-cap", type=float, default=None,
                   help="escalate.budget.sentence of the curve's config (default: curve.json's, else 2.0)")
    p.add_argument("--live", help="also: a live run's trace of the same sentences (e.g. the ladder's "
                                  "<pair>.agent/trace.<test>.jsonl): what it escalated, fixed and harmed")
    args = p.parse_args()
    d = Path(args.curve_dir)
    curve = json.loads((d / "curve.json").read_text())
    records, refs = read_trace(d / args.trace), read_lines(args.ref)
    names = curve["rungs"]
    sentence_cap = args.sentence_cap if args.sentence_cap is not None else curve.get("sentence_budget", 2.0)
    # the full reranker on these sentences, as the curve's records: its top rung, unless that scored within a margin
    ref_total = (reference_flops(records, names) if curve.get("score_margin") is None
                 else curve["reference_flops_per_sentence"] * len(records))
    policies = {"rules": RulePolicy()}
    if curve.get("model"):
        policies["learned"] = LearnedPolicy(load_gate(curve["model"], FEATURES))
    out = {"trace": str(d / args.trace), "pick": curve["pick"], "settings": []}
    top = {r["id"]: r["final"] for r in records}
    out["every_sentence_escalated"] = analyse(records, refs, top, {r["id"] for r in records})
    out["predictable_from_the_draft"] = predictability(records, refs)
    if args.live:
        live = read_trace(args.live)
        out["live"] = {"trace": args.live, **analyse(live, refs, {r["id"]: r["final"] for r in live},
                                                       {r["id"] for r in live if r["escalation"]["rungs_climbed"] > 0})}
    for point in curve["points"]:
        thr = point["threshold"]
        cap = sentence_cap * ref_total / len(records) if sentence_cap else math.inf
        states, _ = replay(records, names, policies[point["policy"]], thr, point["budget"] * ref_total, cap)
        finals = {s.id: s.current for s in states}
        esc = {s.id for s in states if s.rung > 0}
        picked = all(point[k] == curve["pick"][k] for k in ("policy", "budget"))
        out["settings"].append({"policy": point["policy"], "budget": point["budget"], "threshold": thr,
                                "picked_on_val": picked, "flops_fraction": sum(s.spent for s in states) / ref_total,
                                **analyse(records, refs, finals, esc)})
    print(json.dumps(out, indent=1, default=lambda x: None if isinstance(x, float) and not math.isfinite(x) else x))


if __name__ == "__main__":
    main()
