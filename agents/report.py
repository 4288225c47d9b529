"""What the agent did to a test set: draft vs final BLEU/chrF, how often it fixed and how often it
broke a sentence, what it cost, and a result record (stage ``agent``) with paired significance
against the draft. Every metric comes from evals.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from typing import Any

from evals.metrics import score_corpus, sentence_chrf
from evals.records import ResultRecord, make_record
from evals.significance import DEFAULT_SEED, paired_delta_ci, paired_significance


def change_rates(drafts: Sequence[str], finals: Sequence[str], refs: Sequence[str], eps: float = 1e-9) -> dict:
    """Per-sentence chrF++ of draft vs final: fixed (improved), harmed (worsened), unchanged."""
    if not (len(drafts) == len(finals) == len(refs)):
        raise ValueError(f"{len(drafts)} drafts, {len(finals)} finals, {len(refs)} references")
    fixed = harmed = changed = 0
    for d, f, r in zip(drafts, finals, refs):
        if d == f:
            continue
        changed += 1
        delta = sentence_chrf(f, r) - sentence_chrf(d, r)
        fixed += delta > eps
        harmed += delta < -eps
    n = max(len(refs), 1)
    return {"n": len(refs), "changed": changed, "fixed": fixed, "harmed": harmed, "unchanged": len(refs) - fixed - harmed,
            "fix_rate": fixed / n, "harm_rate": harmed / n, "unchanged_rate": (len(refs) - fixed - harmed) / n,
            "harm_to_fix": harmed / fixed if fixed else None}


def cost_summary(records: Sequence[dict]) -> dict:
    """Draft, agent and total cost from trace records (each sentence's shares summed)."""
    out: dict[str, Any] = {}
    for part in ("draft", "agent"):
        out[part] = {k: sum(r["cost"][part].get(k) or 0.0 for r in records) for k in ("forward_calls", "flops", "seconds")}
    out["total"] = {k: out["draft"][k] + out["agent"][k] for k in out["draft"]}
    d = out["draft"]["forward_calls"]
    out["multiple_forward_calls"] = out["total"]["forward_calls"] / d if d else None
    ds, df = out["draft"]["seconds"], out["draft"]["flops"]
    out["multiple_seconds"] = out["total"]["seconds"] / ds if ds else None
    out["multiple_flops"] = out["total"]["flops"] / df if df else None
    return out


def behaviour(records: Sequence[dict]) -> dict:
    """How the agent behaved: flags on the drafts, tools used, stop reasons, steps."""
    flags, actions, kept, reasons = Counter(), Counter(), Counter(), Counter()
    for r in records:
        flags.update(r["steps"][0].get("flags", []))
        for st in r["steps"][1:]:
            actions[st["action"]] += 1
            kept[st["action"]] += bool(st.get("kept"))
        reasons[r["decision"]["reason"]] += 1
    return {"draft_flags": dict(flags), "tool_calls": dict(actions), "tool_kept": dict(kept),
            "stop_reasons": dict(reasons), "mean_tool_steps": sum(r["decision"]["tool_steps"] for r in records) / max(len(records), 1)}


def summary(records: Sequence[dict], refs: Sequence[str], trg_lang: str = "de") -> dict:
    """Everything ``python -m agents report`` prints: scores, change rates, cost, behaviour."""
    drafts, finals = [r["draft"] for r in records], [r["final"] for r in records]
    d, f = score_corpus(drafts, refs, trg_lang=trg_lang), score_corpus(finals, refs, trg_lang=trg_lang)
    return {"draft": {"bleu": d["bleu"], "chrf": d["chrf"]}, "final": {"bleu": f["bleu"], "chrf": f["chrf"]},
            "delta": {"bleu": f["bleu"] - d["bleu"], "chrf": f["chrf"] - d["chrf"]},
            "changes": change_rates(drafts, finals, refs), "cost": cost_summary(records),
            "behaviour": behaviour(records)}


def agent_records(records: Sequence[dict], refs: Sequence[str], *, pair: str, test_set: str, system: str,
                  draft_system: str, final_hyp_path: str, draft_hyp_path: str | None = None,
                  draft_stage: str | None = None, tok_refs: Sequence[str] | None = None, ref_path: str | None = None,
                  tok_ref_path: str | None = None, src_path: str | None = None, config: dict | None = None,
                  config_path: str | None = None, train_seconds: float | None = None, device: str | None = None,
                  n_samples: int = 1000, seed: int = DEFAULT_SEED) -> list[ResultRecord]:
    """The agent's result record (and, with ``draft_stage``, one for a draft the agent decoded itself).

    ``p_vs_prev`` is the paired bootstrap p-value of the agent against its draft (BLEU); the paired
    interval of the lift, chrF's p-value and the fix/harm/cost figures go to ``significance`` and
    ``extra``. ``p_vs_baseline`` stays None: the ladder's baseline lives in another results file.
    """
    trg_lang = pair.split("-", 1)[1]
    drafts, finals = [r["draft"] for r in records], [r["final"] for r in records]
    cost = cost_summary(records)
    common = dict(tok_refs=tok_refs, ref_path=ref_path, tok_ref_path=tok_ref_path, src_path=src_path,
                  n_samples=n_samples, seed=seed)

    def compute(part: dict) -> dict:
        return {"train_seconds": train_seconds, "decode_seconds": round(part["seconds"], 3),
                "forward_calls": int(round(part["forward_calls"])), "flops": part["flops"], "device": device}

    out = []
    if draft_stage is not None:
        if draft_hyp_path is None:
            raise ValueError("a draft record needs draft_hyp_path")
        out.append(make_record(draft_system, draft_stage, pair, test_set, drafts, refs, hyp_path=draft_hyp_path,
                               compute=compute(cost["draft"]), config=config, config_path=config_path,
                               extra={"role": "the agent's draft"}, **common))
    rec = make_record(system, "agent", pair, test_set, finals, refs, hyp_path=final_hyp_path,
                      compute=compute(cost["total"]), config=config, config_path=config_path,
                      extra={"draft_system": draft_system, "changes": change_rates(drafts, finals, refs),
                             "cost": cost, "behaviour": behaviour(records)}, **common)
    sig: dict[str, Any] = {"metric": "bleu", "test": "bs", "n_samples": n_samples, "seed": seed,
                           "baseline": None, "prev": draft_system}
    for metric in ("bleu", "chrf"):
        res = paired_significance(drafts, {system: finals}, refs, metric, "bs", n_samples, seed,
                                  baseline_name=draft_system, trg_lang=trg_lang)
        key = "" if metric == "bleu" else "chrf_"
        sig[f"{key}score"] = res[system]["score"]
        sig[f"{key}p_vs_prev"] = res[system]["p_value"]
        sig[f"{key}delta_vs_prev"] = res[system]["score"] - res[draft_system]["score"]
        sig[f"{key}delta_vs_prev_ci"] = paired_delta_ci(drafts, finals, refs, metric, n_samples, seed, trg_lang)
    out.append(dataclasses.replace(rec, p_vs_prev=sig["p_vs_prev"], significance=sig))
    return out
