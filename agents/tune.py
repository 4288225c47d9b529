"""Choose the critic's thresholds and the acceptance margins on val (never on a test set).

Coordinate ascent: each signal in turn tries thresholds at quantiles of its values on the val
drafts (flag the worst 2%, 5%, ... of drafts, or never), keeping the one that gives the best
corpus score of the *whole loop's* output on val; then the acceptance margins and vetoes; repeated
for a few passes. A setting counts only if it harms at most ``max_harm_to_fix`` times as many sentences as
it fixes (sentence chrF++ against the val references): the issue's harm criterion, enforced on val.

The loop is re-run for every trial, but cheaply: the critic's measurements and the tools'
proposals are memoised, so a trial re-decodes only sentences whose path changed. The chosen
setting is then run once more without memos, and that run's val score is the one reported.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace

from evals.metrics import new_metric
from evals.textio import atomic_write_text

from inference_compute.tune import TuneConfig, coordinate_ascent

from .config import agent_hash, to_dict
from .critic import SIGNALS
from .loop import run_agent
from .policy import SelectionConfig, make_policy
from .report import change_rates
from .run import Agent, make_drafts


def corpus_score(hyps: Sequence[str], refs: Sequence[str], objective: str) -> float:
    return float(new_metric(objective).corpus_score(list(hyps), [list(refs)]).score)


def candidate_thresholds(values: Sequence[float | None], signal: str, quantiles: Sequence[float]) -> list[float | None]:
    """Thresholds that flag about each ``quantiles`` fraction of the drafts (and None: never)."""
    vals = sorted(v for v in values if v is not None)
    out: list[float | None] = [None]
    if not vals:
        return out
    high = SIGNALS[signal].bad_when == "high"
    for q in quantiles:
        k = min(len(vals) - 1, max(0, int(round((1 - q if high else q) * (len(vals) - 1)))))
        v = round(float(vals[k]), 6)
        if v not in out:
            out.append(v)
    return out


@dataclass
class Trial:
    score: float
    fixed: int
    harmed: int
    admissible: bool


def tune(agent: Agent, sources: Sequence[str], refs: Sequence[str], tc: TuneConfig, drafts: Sequence[str] | None = None,
         log: Callable[[str], None] = lambda m: None) -> dict:
    """Tune ``agent``'s thresholds and selection margins on (sources, refs); returns the tuned-file
    content and leaves the agent configured with the result."""
    cfg = agent.cfg
    base_hash = agent_hash(cfg)
    agent.critic.cache, agent.toolbox.cache = {}, {}
    pools, costs = make_drafts(agent, sources, drafts)
    draft_texts = [p[0][0] for p in pools]
    measurements = agent.critic.measure(sources, draft_texts, draft_texts)
    ids = list(range(len(sources)))
    draft_score = corpus_score(draft_texts, refs, tc.metric)

    def trial(thresholds: dict, selection: SelectionConfig) -> Trial:
        agent.critic.thresholds = thresholds
        policy = make_policy(cfg.policy, thresholds)
        agent.toolbox.reverse_weight = selection.reverse_weight
        agent.toolbox.refiner_weight = selection.refiner_weight
        states = run_agent(ids, sources, pools, agent.critic, agent.toolbox, policy, selection, cfg.policy.budget, costs)
        finals = [s.current for s in states]
        rates = change_rates(draft_texts, finals, refs)
        ok = rates["harmed"] <= tc.max_harm_to_fix * rates["fixed"]
        return Trial(corpus_score(finals, refs, tc.metric), rates["fixed"], rates["harmed"], ok)

    def value(t: Trial) -> float:
        return t.score if t.admissible else -math.inf

    thresholds = {k: v for k, v in cfg.critic.thresholds.items()}
    selection = replace(cfg.selection)
    best = trial(thresholds, selection)
    history = [{"what": "start", "score": best.score, "fixed": best.fixed, "harmed": best.harmed}]
    log(f"tune: draft {tc.metric} {draft_score:.2f}; start {best.score:.2f} (fixed {best.fixed}, harmed {best.harmed})")
    if not best.admissible:
        # The configured start harms too much, and one coordinate step rarely repairs that. Start
        # instead from the agent that changes nothing (0 fixed, 0 harmed: admissible) and let the
        # ascent switch signals on only while the harm criterion holds.
        thresholds = {k: None for k in thresholds}
        best = trial(thresholds, selection)
        history.append({"what": "all signals off", "score": best.score, "fixed": best.fixed, "harmed": best.harmed})
    # A signal that harms too much under the current acceptance rule may pass under a stricter one:
    # each threshold is also tried with the strictest rule of the grids (no score drop, largest gain).
    grid = tc.grid
    strictest = replace(selection, max_score_drop=min(grid["max_score_drop"], default=selection.max_score_drop),
                        min_score_gain=max(grid["min_score_gain"], default=selection.min_score_gain),
                        max_reverse_drop=min(grid["max_reverse_drop"], default=selection.max_reverse_drop))
    if "uncovered_source" in cfg.critic.signals:
        strictest = replace(strictest, max_uncovered_rise=min(grid["max_uncovered_rise"], default=selection.max_uncovered_rise))
    if selection.gate:
        strictest = replace(strictest, gate_threshold=max(grid["gate_threshold"], default=selection.gate_threshold))

    # A point is (thresholds, selection). Each signal is one coordinate: its thresholds, each tried
    # with the current acceptance rule and then with the strictest one (skipped once the threshold
    # is taken); then each acceptance setting's grid.
    Point = tuple[dict, SelectionConfig]

    def threshold(signal: str, thr, strict: bool):
        def move(point: Point) -> tuple[str, Point] | None:
            thresholds, current = point
            if thr == thresholds.get(signal) or (strict and strictest == current):
                return None
            what = f"{signal}={thr}" + (" (strictest acceptance)" if strict else "")
            return what, ({**thresholds, signal: thr}, strictest if strict else current)
        return move

    def setting(knob: str, v: float):
        def move(point: Point) -> tuple[str, Point] | None:
            thresholds, current = point
            return None if v == getattr(current, knob) else (f"{knob}={v}", (thresholds, replace(current, **{knob: v})))
        return move

    coordinates = [[threshold(signal, thr, strict)
                    for thr in candidate_thresholds([m.values.get(signal) for m in measurements], signal, tc.quantiles)
                    for strict in (False, True)] for signal in cfg.critic.signals]
    knobs = ["max_score_drop", "min_score_gain"] + (["refiner_weight"] if agent.critic.refiner is not None else []) \
        + (["max_reverse_drop"] if agent.critic.reverse is not None else []) \
        + (["max_uncovered_rise"] if "uncovered_source" in cfg.critic.signals else []) \
        + (["gate_threshold"] if selection.gate else [])
    coordinates += [[setting(knob, v) for v in grid[knob]] for knob in knobs]

    def on_trial(what: str, t: Trial, gain: bool) -> None:
        history.append({"what": what, "score": t.score, "fixed": t.fixed, "harmed": t.harmed})
        if gain:
            log(f"tune: {what}: {t.score:.2f} (fixed {t.fixed}, harmed {t.harmed})")

    (thresholds, selection), best, _ = coordinate_ascent(
        (thresholds, selection), best, coordinates, lambda p: trial(*p), tc.coordinate_rounds,
        better=lambda a, b: value(a) > value(b) + 1e-9, on_trial=on_trial)
    if not best.admissible:  # nothing met the harm criterion: the agent keeps every draft
        thresholds = {k: None for k in thresholds}
        log("tune: no setting met the harm criterion; all signals off")
    # The honest number: the chosen setting run afresh (no memos, samples drawn in their own batches).
    agent.critic.cache, agent.toolbox.cache = None, None
    cfg.critic.thresholds, cfg.selection = thresholds, selection
    agent.retune()
    check = trial(thresholds, selection)
    log(f"tune: chosen setting re-run on val: {check.score:.2f} (draft {draft_score:.2f}, fixed {check.fixed}, "
        f"harmed {check.harmed})")
    return {"thresholds": thresholds, "selection": asdict(selection), "metric": tc.metric,
            "tune": asdict(tc), "base_config_hash": base_hash, "tuned_config_hash": agent_hash(cfg),
            "val": {"n": len(sources), "draft": draft_score, "tuned": check.score, "fixed": check.fixed,
                    "harmed": check.harmed, "admissible": check.admissible},
            "seed": cfg.policy.seed, "history": history, "config": to_dict(cfg)}


def save_tuned(path: str, result: dict) -> None:
    atomic_write_text(path, json.dumps(result, indent=2, ensure_ascii=False, default=str) + "\n")
