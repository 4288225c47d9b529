"""What separates the agent's fixes from its harms? Reads a traced run on **val** (never test: this
is for choosing settings) and, for every sentence whose final differs from its draft, compares the
critic's reference-free measurements of the final with those of the draft.

    python experiments/agent_changes.py TRACE.val.jsonl --ref ../shared/data/multi30k/task1/raw/val.de.gz

For each measured difference (forward, reverse, refiner log-prob per token; uncovered source
words; length in words) it prints the mean among fixed and among harmed sentences (by sentence
chrF++, as the report counts them) and the AUC: the chance that a random fix scores higher than a
random harm (0.5: no separation). Then, for the reverse-score drop, how many fixes and harms a veto
at each margin would have reverted, assuming the veto only reverts (in the loop it can also let
another candidate through). Prints JSON to stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


from agents.gate import auc  # noqa: E402
from agents.trace import read_trace  # noqa: E402
from evals.metrics import sentence_chrf  # noqa: E402
from evals.textio import read_lines  # noqa: E402


def final_step(record: dict) -> dict:
    return record["steps"][record["decision"]["final_from_step"]]


def differences(record: dict) -> dict[str, float | None]:
    """final minus draft for each measurement both carry."""
    first, last = record["steps"][0], final_step(record)
    out: dict[str, float | None] = {}
    for key in ("fwd_norm", "rev_norm", "ref_norm"):
        a, b = first.get(key), last.get(key)
        out[key] = None if a is None or b is None else b - a
    a, b = first.get("values", {}).get("uncovered_source"), last.get("values", {}).get("uncovered_source")
    out["uncovered_source"] = None if a is None or b is None else b - a
    out["words"] = len(record["final"].split()) - len(record["draft"].split())
    out["draft_refiner_margin"] = first.get("values", {}).get("refiner_margin")
    return out


def analyse(records: list[dict], refs: list[str]) -> dict:
    rows = []
    for r in records:
        if r["final"] == r["draft"]:
            continue
        ref = refs[r["id"]]
        delta = sentence_chrf(r["final"], ref) - sentence_chrf(r["draft"], ref)
        rows.append((delta, differences(r)))
    fixed = [d for delta, d in rows if delta > 1e-9]
    harmed = [d for delta, d in rows if delta < -1e-9]
    out: dict = {"changed": len(rows), "fixed": len(fixed), "harmed": len(harmed), "features": {}}
    for key in ("fwd_norm", "rev_norm", "ref_norm", "uncovered_source", "words", "draft_refiner_margin"):
        pos = [d[key] for d in fixed if d[key] is not None]
        neg = [d[key] for d in harmed if d[key] is not None]
        out["features"][key] = {"mean_fixed": sum(pos) / len(pos) if pos else None,
                                "mean_harmed": sum(neg) / len(neg) if neg else None,
                                "auc": auc(pos + neg, [1] * len(pos) + [0] * len(neg))}
    out["reverse_veto"] = []
    for margin in (1.0, 0.5, 0.25, 0.1, 0.05, 0.0):
        kept_f = sum(1 for d in fixed if d["rev_norm"] is None or d["rev_norm"] >= -margin)
        kept_h = sum(1 for d in harmed if d["rev_norm"] is None or d["rev_norm"] >= -margin)
        out["reverse_veto"].append({"max_reverse_drop": margin, "fixed_left": kept_f, "harmed_left": kept_h})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trace", help="a val trace (jsonl or jsonl.gz)")
    ap.add_argument("--ref", required=True, help="the val references, one per line")
    args = ap.parse_args()
    if "test" in Path(args.trace).name:
        sys.exit("error: this analysis chooses settings; run it on a val trace, not a test one")
    print(json.dumps(analyse(read_trace(args.trace), read_lines(args.ref)), indent=1))


if __name__ == "__main__":
    main()
