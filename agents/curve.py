"""The escalating agent's BLEU-vs-compute curve, tuned on val (``python -m agents curve``).

1. **One exhaustive val trace**: every sentence climbs every rung (``agents.escalate``). Because a
   sentence's path does not depend on the policy (only where it stops does), this trace holds every
   hypothesis and every step's metered cost any policy could produce.
2. **The learned policy** (``LearnedPolicy``) is fitted on it: one example per (sentence, rung),
   the critic's signals before the rung, label 1 when climbing on to the top improves the
   sentence's chrF++. Tuning uses cross-fitted values (each sentence scored by a model fitted
   without its fold); the saved model is fitted on all of val.
3. **Each budget** of ``escalate.curve`` (a fraction of the full reranker's FLOPs), for each policy:
   the threshold with the best val BLEU among those that harm at most ``max_harm_to_fix`` times the
   sentences they fix (against the draft), found by replaying the trace through the same ``climb``
   loop and budget enforcement the live run uses (``TraceRungs``; where the models are at hand, as
   in ``run_curve`` and ``replay_curve``, a step's bound is the live run's own worst-case bound, so
   the replay's per-sentence cap and corpus reservations see what the live run sees; without them,
   the recorded cost). The live run still differs in how it groups sentences: it spends its corpus
   budget chunk by chunk and shares a group's metered cost among that group's sentences.
4. **The pick**: the cheapest (policy, budget) whose val BLEU is within ``pick_within`` of the best
   one; ``escalate.tuned`` points a config at it (the ladder's +agent rung uses it).

The reference ("the full reranker") is the top ``rerank<N>`` rung run on every sentence, costed
without the critic's look: its beam-N decode and the scoring of its candidates. Fixed decoders on
the plot come from the same trace (the draft; each ``rerank<N>`` rung on every sentence), metered
by the same ``ComputeMeter``; records of inference_compute's sweep can be added (``--fixed``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path

from evals.metrics import corpus_bleu, sentence_chrf
from inference_compute.tune import coordinate_ascent
from evals.textio import atomic_write_bytes, atomic_write_lines, atomic_write_text, check_same_length, read_lines

from .errors import AgentInputError
from .escalate import (FEATURES, Budget, Climb, LearnedPolicy, ModelRungs, RulePolicy, StepResult, climb,
                       escalate_corpus, features, rung_beam)
from .gate import cross_validated_auc, fit_gate
from .loop import Cost
from .report import change_rates


def _cost(js: dict) -> Cost:
    return Cost(float(js.get("forward_calls") or 0.0), float(js.get("flops") or 0.0), float(js.get("seconds") or 0.0))


def exhaustive(agent, sources: Sequence[str], trace_path: str | None, models: tuple = (None, None, None, 1.0),
               log: Callable[[str], None] = lambda m: None, drafts: Sequence[str] | None = None) -> list[dict]:
    """Every sentence up every rung (no stop, no budget): the trace every policy is replayed from."""
    e = agent.cfg.escalate
    saved = (e.policy, e.threshold, e.budget.corpus, e.budget.sentence, e.budget.reference_flops_per_sentence)
    e.policy, e.threshold, e.budget.corpus, e.budget.sentence, e.budget.reference_flops_per_sentence = \
        "rules", None, 1.0, 0.0, None
    try:
        _, records, _ = escalate_corpus(agent, sources, trace_path, math.inf, models=models, log=log, drafts=drafts)
    finally:
        e.policy, e.threshold, e.budget.corpus, e.budget.sentence, e.budget.reference_flops_per_sentence = saved
    for r in records:
        if r["escalation"]["rungs_climbed"] != len(e.rungs):
            raise ValueError(f"sentence {r['id']} climbed {r['escalation']['rungs_climbed']} of {len(e.rungs)} rungs "
                             "in the exhaustive trace")
    return records


def path_of(rec: dict) -> list[str]:
    """The current hypothesis after 0, 1, ... rungs."""
    cur, out = rec["draft"], [rec["draft"]]
    for st in rec["steps"][1:]:
        if st.get("kept") and st.get("candidate") is not None:
            cur = st["candidate"]
        out.append(cur)
    return out


Bound = Callable[[int, Climb], float]  # (rung, sentence) -> FLOPs the rung may cost there at most


class TraceRungs:
    """Replays an exhaustive trace. A rung's bound for a sentence is ``bound`` (the live run's:
    ``ModelRungs.bound``, from the source's length, and the draft's for ``refine``) or, without it,
    what the rung cost there."""

    def __init__(self, records: Sequence[dict], names: Sequence[str], bound: Bound | None = None):
        self.names = list(names)
        self.by_id = {r["id"]: r for r in records}
        self._bound = bound

    def bound(self, rung: int, s: Climb) -> float:
        if self._bound is not None:
            return self._bound(rung, s)
        return float(self.by_id[s.id]["steps"][rung]["cost"].get("flops") or 0.0)

    def run(self, rung: int, group: Sequence[Climb]) -> list[StepResult]:
        out = []
        for s in group:
            st = dict(self.by_id[s.id]["steps"][rung])
            text = st["candidate"] if st.get("kept") and st.get("candidate") is not None else None
            out.append(StepResult(st, text, _cost(st["cost"])))
        return out


def replay_start(records: Sequence[dict]) -> list[Climb]:
    out = []
    for r in sorted(records, key=lambda r: r["id"]):
        step0 = r["steps"][0]
        s = Climb(r["id"], r["source"], r["draft"], r["draft"], step0, [step0], draft_cost=_cost(r["cost"]["draft"]))
        s.cost.add(_cost(step0["cost"]))
        out.append(s)
    return out


def reference_flops(records: Sequence[dict], names: Sequence[str]) -> float:
    """The full reranker's FLOPs on these sentences: the top rerank<N> rung on each, without the critic's look."""
    top = max((i for i, n in enumerate(names, start=1) if rung_beam(n)), key=lambda i: rung_beam(names[i - 1]),
              default=None)
    if top is None:
        raise AgentInputError("escalate.rungs has no rerank<N> rung: there is no full reranker to measure budgets against")
    return sum(float(r["steps"][top]["cost"].get("flops") or 0.0) - float(r["steps"][top]["args"].get("critic_flops") or 0.0)
               for r in records)


def budget_reference(records: Sequence[dict], cfg) -> float:
    """What the curve's budgets are fractions of: the full reranker's FLOPs on these sentences. The
    top rung as traced is the full reranker unless its candidates were scored within a
    ``score_margin``; then it is cheaper, and the figure must be given
    (``budget.reference_flops_per_sentence``: the ladder passes its reranker's val figure)."""
    if cfg.score_margin is None:
        return reference_flops(records, cfg.rungs)
    if not cfg.budget.reference_flops_per_sentence:
        raise AgentInputError("escalate.score_margin is set, so the top rung is not the full reranker: give "
                              "escalate.budget.reference_flops_per_sentence (the full reranker's mean FLOPs per sentence)")
    return float(cfg.budget.reference_flops_per_sentence) * len(records)


def replay(records: Sequence[dict], names: Sequence[str], policy, threshold: float | None, allowed: float,
           per_sentence: float = math.inf, bound: Bound | None = None) -> tuple[list[Climb], Budget]:
    states = replay_start(records)
    first = sum(s.spent for s in states)
    budget = Budget(max(allowed - first, 0.0), per_sentence)
    climb(states, TraceRungs(records, names, bound), policy, threshold, budget)
    return states, budget


def examples(records: Sequence[dict], refs: Sequence[str]) -> tuple[list[list[float]], list[int], list[int]]:
    """(features before rung r, climbing on to the top improves sentence chrF++, sentence id) per sentence and rung."""
    xs, ys, ids = [], [], []
    for r in records:
        path, ref = path_of(r), refs[r["id"]]
        top = sentence_chrf(path[-1], ref)
        view = r["steps"][0]
        for k in range(1, len(path)):
            changed = k > 1 and path[k - 1] != path[k - 2]
            xs.append(features(r["source"], view, k, changed))
            ys.append(int(top > sentence_chrf(path[k - 1], ref) + 1e-9))
            ids.append(r["id"])
            if "values" in r["steps"][k]:
                view = r["steps"][k]
    return xs, ys, ids


def fit_policy(records: Sequence[dict], refs: Sequence[str], l2: float, folds: int) -> tuple:
    """The learned policy fitted on all of val, its cross-fitted twin for tuning, and the fit's facts."""
    xs, ys, ids = examples(records, refs)
    if len(set(ys)) < 2:
        return None, None, {"examples": len(ys), "positive": sum(ys), "note": "one outcome only: nothing to learn"}
    info = {"examples": len(ys), "positive": sum(ys), "l2": l2, "folds": folds,
            "cross_validated_auc": cross_validated_auc(xs, ys, ids, folds, l2)}
    model = fit_gate(xs, ys, l2, info, FEATURES)
    per_fold = {}
    for k in range(folds):
        train = [i for i, s in enumerate(ids) if s % folds != k]
        if len({ys[i] for i in train}) < 2:
            continue
        per_fold[k] = fit_gate([xs[i] for i in train], [ys[i] for i in train], l2, {}, FEATURES)
    per_sentence = {r["id"]: per_fold.get(r["id"] % folds, model) for r in records}
    return model, LearnedPolicy(model, per_sentence), info


def _thresholds(values: Sequence[float], n: int = 12) -> list[float | None]:
    vals = sorted(values)
    out: list[float | None] = [None]
    for q in range(1, n):
        v = vals[min(len(vals) - 1, int(q / n * len(vals)))]
        if v not in out:
            out.append(v)
    return out


@lru_cache(maxsize=None)
def _chrf(hyp: str, ref: str) -> float:  # a replay re-scores the same few texts per sentence many times
    return sentence_chrf(hyp, ref)


def evaluate(states: Sequence[Climb], refs: Sequence[str], trg: str) -> dict:
    """Corpus BLEU, and sentences fixed / harmed against the draft (sentence chrF++, as ``report`` counts them)."""
    finals = [s.current for s in states]
    deltas = [_chrf(s.current, refs[s.id]) - _chrf(s.draft, refs[s.id]) for s in states if s.current != s.draft]
    bleu = corpus_bleu(finals, [refs[s.id] for s in states])
    return {"bleu": bleu, "fixed": sum(d > 1e-9 for d in deltas), "harmed": sum(d < -1e-9 for d in deltas),
            "changed": len(deltas), "flops": sum(s.spent for s in states), "escalated": sum(s.rung > 0 for s in states)}


def tune_curve(records: Sequence[dict], refs: Sequence[str], cfg, trg: str, policies: dict,
               log: Callable[[str], None] = lambda m: None, bound: Bound | None = None) -> list[dict]:
    """For every budget and policy: the admissible threshold with the best val BLEU (see the module doc)."""
    names = cfg.rungs
    ref = budget_reference(records, cfg)
    per_sentence = cfg.budget.sentence * ref / len(records) if cfg.budget.sentence else math.inf
    draft_bleu = corpus_bleu([r["draft"] for r in records], [refs[r["id"]] for r in records])
    first_look = sum(s.spent for s in replay_start(records))

    def admissible_gain(a: dict, b: dict | None) -> bool:
        return a["harmed"] <= cfg.max_harm_to_fix * a["fixed"] and (b is None or a["bleu"] > b["bleu"] + 1e-9)

    points = []
    for budget in cfg.curve:
        if first_look > budget * ref:
            log(f"curve: budget {budget:g} skipped: the drafts and the critic's first look alone cost "
                f"{first_look / ref:.3f} of the reranker's FLOPs")
            continue
        for name, policy in policies.items():
            first = [policy.value(r["source"], r["steps"][0], 1, False, r["id"]) for r in records]
            # One pass over the thresholds (a one-coordinate ascent from nothing): the admissible one
            # with the best val BLEU (math.inf: never escalate, which harms nothing).
            thr, ev, _ = coordinate_ascent(
                None, None, [[lambda _, t=t: (f"threshold={t}", t) for t in _thresholds(first) + [math.inf]]],
                lambda t: evaluate(replay(records, names, policy, t, budget * ref, per_sentence, bound)[0], refs, trg), 1,
                better=admissible_gain)
            best = {**ev, "threshold": None if thr is None else (thr if math.isfinite(thr) else 1e30)}
            point = {"policy": name, "budget": budget, **best, "fraction": best["flops"] / ref, "draft_bleu": draft_bleu}
            log(f"curve: {name} at {budget:.2f}: val BLEU {point['bleu']:.2f} (draft {draft_bleu:.2f}), "
                f"{point['fraction']:.3f} of the reranker's FLOPs, fixed {point['fixed']} / harmed {point['harmed']}")
            points.append(point)
    return points


def pick(points: Sequence[dict], within: float) -> dict:
    """The cheapest point whose val BLEU is within ``within`` of the best point's."""
    if not points:
        raise AgentInputError("escalate.curve: no budget covers the drafts and the critic's first look; "
                         "add larger budgets (fractions of the reranker's FLOPs)")
    top = max(p["bleu"] for p in points)
    return min((p for p in points if p["bleu"] >= top - within), key=lambda p: (p["flops"], -p["bleu"]))


def fixed_points(records: Sequence[dict], names: Sequence[str]) -> list[dict]:
    """The fixed decoders inside the exhaustive trace: the draft, and each rerank<N> rung on every sentence."""
    out = [{"system": "draft", "stage": "beam", "hyps": [r["draft"] for r in records],
            "flops": sum(_cost(r["cost"]["draft"]).flops for r in records)}]
    for k, name in enumerate(names, start=1):
        if rung_beam(name):
            out.append({"system": name, "stage": "rerank",
                        "hyps": [r["steps"][k]["candidate"] or r["draft"] for r in records],
                        "flops": sum(_cost(r["steps"][k]["cost"]).flops - float(r["steps"][k]["args"].get("critic_flops") or 0)
                                     for r in records)})
    return out


def curve_records(records: Sequence[dict], refs: Sequence[str], points: Sequence[dict], cfg, *, pair: str,
                  test_set: str, out_dir: Path, policies: dict, ref_path: str | None = None,
                  bound: Bound | None = None) -> list:
    """Result records for the fixed decoders and one per curve point (hypotheses replayed from the trace)."""
    from evals.records import make_record

    names, trg = cfg.rungs, pair.split("-", 1)[1]
    ordered = sorted(records, key=lambda r: r["id"])
    refs_o = [refs[r["id"]] for r in ordered]
    ref = budget_reference(records, cfg)
    recs = []
    for f in fixed_points(ordered, names):
        path = out_dir / "hyps" / f"{pair}.{test_set}.{f['system']}.{trg}"
        atomic_write_lines(path, f["hyps"])
        recs.append(make_record(f["system"], f["stage"], pair, test_set, f["hyps"], refs_o, hyp_path=str(path),
                                compute={"flops": f["flops"], "forward_calls": 0, "decode_seconds": 0.0,
                                         "train_seconds": None, "device": None},
                                ref_path=ref_path, extra={"from": "exhaustive escalation trace"}, n_samples=200))
    for p in points:
        system, states, b = replay_point(records, p, policies, cfg, bound)
        thr = p["threshold"]
        hyps = [s.current for s in states]
        path = out_dir / "hyps" / f"{pair}.{test_set}.{system}.{trg}"
        atomic_write_lines(path, hyps)
        flops = sum(s.spent for s in states)
        recs.append(make_record(system, "agent", pair, test_set, hyps, refs_o, hyp_path=str(path),
                                compute={"flops": flops, "forward_calls": 0, "decode_seconds": 0.0,
                                         "train_seconds": None, "device": None},
                                ref_path=ref_path, n_samples=200,
                                extra={"budget": p["budget"], "policy": p["policy"], "threshold": thr,
                                       "fraction_of_reranker": flops / ref, "within_budget": flops <= p["budget"] * ref * (1 + 1e-9),
                                       "bound_violations": b.violations,
                                       "changes": change_rates([s.draft for s in states], hyps, refs_o)}))
    return recs


def replay_point(records: Sequence[dict], point: dict, policies: dict, cfg,
                 bound: Bound | None = None) -> tuple[str, list[Climb], Budget]:
    """One curve point (policy, threshold, budget) replayed on a trace: its system name, the sentences'
    states in id order, and the budget it spent (shares of the full reranker's FLOPs on these sentences)."""
    ref = budget_reference(records, cfg)
    per_sentence = cfg.budget.sentence * ref / len(records) if cfg.budget.sentence else math.inf
    states, b = replay(records, cfg.rungs, policies[point["policy"]], point["threshold"], point["budget"] * ref,
                       per_sentence, bound)
    return f"agent-{point['policy']}@{point['budget']:g}", sorted(states, key=lambda s: s.id), b


def curve_hyps(records: Sequence[dict], points: Sequence[dict], policies: dict, cfg,
               bound: Bound | None = None) -> dict[str, list[str]]:
    """The translations of every system of the curve (the fixed decoders of the trace and each curve
    point) on a set without references, such as the blind set: system name -> hypotheses in id order."""
    ordered = sorted(records, key=lambda r: r["id"])
    out = {f["system"]: f["hyps"] for f in fixed_points(ordered, cfg.rungs)}
    for p in points:
        system, states, _ = replay_point(records, p, policies, cfg, bound)
        out[system] = [s.current for s in states]
    return out


def plot(recs: Sequence, path: Path) -> bool:
    """The agent's curve and the fixed decoders on one BLEU-vs-FLOPs plot (evals.plots)."""
    from evals.leaderboard import build_rows
    from evals.plots import plot_compute

    png = plot_compute(build_rows(list(recs)))
    if png is None:
        return False
    atomic_write_bytes(path, png)
    return True


def save(path: str | Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, ensure_ascii=False, default=str) + "\n")


def replay_curve(agent, points: Sequence[dict], policies: dict, sources: Sequence[str], refs: Sequence[str], out: Path,
                 pair: str, models: tuple, test_set: str, ref_path: str | None = None,
                 log: Callable[[str], None] = lambda m: None) -> list:
    """The val curve's points (each policy, threshold and budget val tuned) on another set: its exhaustive
    trace (``out/trace.<test_set>.jsonl``, resumable), each point replayed on it, beside the fixed decoders
    of the same trace. Returns their records; nothing here is chosen."""
    trace = exhaustive(agent, sources, str(out / f"trace.{test_set}.jsonl"), models, log)
    return curve_records(trace, refs, points, agent.cfg.escalate, pair=pair, test_set=test_set, out_dir=out,
                         policies=policies, ref_path=ref_path, bound=live_bound(agent, models))


def live_bound(agent, models: tuple) -> Bound:
    """The live run's worst-case bound of a rung on a sentence (``ModelRungs.bound``: from the source's
    length and the models' FLOP counts), for replays that must block what the live run blocks."""
    rungs, memo = ModelRungs(agent, agent.cfg.escalate, *models), {}

    def bound(rung: int, s: Climb) -> float:  # a tuning pass asks for the same bounds many times over
        key = (rung, s.source, s.draft)
        if key not in memo:
            memo[key] = rungs.bound(rung, s)
        return memo[key]
    return bound


def run_curve(agent, sources, refs, out, pair, models, src_path=None, ref_path=None, test_src=None, test_ref=None,
              test_set="test", fixed=None, log: Callable[[str], None] = lambda m: None) -> dict:
    """The whole ``curve`` command (also the ladder's): exhaustive val trace, learned policy, the
    curve on val, the pick; with a test set: its exhaustive trace replayed at the val choices."""
    from evals.records import read_records, write_records

    e, trg = agent.cfg.escalate, pair.split("-", 1)[1]
    out.mkdir(parents=True, exist_ok=True)
    val = exhaustive(agent, sources, str(out / "trace.val.jsonl"), models, log)
    model, cross_fitted, fit = fit_policy(val, refs, e.l2, e.folds)
    policies = {"rules": RulePolicy()}
    if model is not None:
        model.save(out / "policy.json")
        policies["learned"] = cross_fitted
    bound = live_bound(agent, models)
    points = tune_curve(val, refs, e, trg, policies, log, bound)
    chosen = pick(points, e.pick_within)
    ref_total = budget_reference(val, e)
    result = {"pair": pair, "val": {"src": src_path, "ref": ref_path, "n": len(sources)}, "rungs": e.rungs,
              "score_margin": e.score_margin, "sentence_budget": e.budget.sentence,
              "reference_flops_per_sentence": ref_total / len(sources), "length_ratio": e.length_ratio,
              "model": str(out / "policy.json") if model is not None else "", "learned_fit": fit,
              "pick": {k: chosen[k] for k in ("policy", "budget", "threshold", "bleu", "fraction", "fixed", "harmed")},
              "points": points}
    recs = curve_records(val, refs, points, e, pair=pair, test_set="val", out_dir=out, policies=policies,
                         ref_path=ref_path, bound=bound)
    extra = [r for r in read_records(fixed) if r.pair == pair and r.stage != "agent"] if fixed else []  # fixed decoders only
    plot(recs + [r for r in extra if r.test_set == "val"], out / f"curve_{pair}_val.png")
    if test_src:
        tsrc, tref = read_lines(test_src), read_lines(test_ref)
        check_same_length([(test_src, tsrc), (test_ref, tref)])
        final = {"rules": RulePolicy(), **({"learned": LearnedPolicy(model)} if model is not None else {})}
        trecs = replay_curve(agent, points, final, tsrc, tref, out, pair, models, test_set, test_ref, log)
        plot(trecs + [r for r in extra if r.test_set == test_set], out / f"curve_{pair}_{test_set}.png")
        recs += trecs
    write_records(out / "records.jsonl", recs)
    save(out / "curve.json", result)
    log(f"curve: val picks {chosen['policy']} at budget {chosen['budget']} (val BLEU {chosen['bleu']:.2f}, "
         f"{chosen['fraction']:.3f} of the reranker's FLOPs) -> {out / 'curve.json'}")
    return result
