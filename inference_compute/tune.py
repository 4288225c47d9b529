"""Choosing settings on val: the one tuner of decade (the reranker's weights here; the agent's
thresholds and margins in ``agents.tune`` through the same ``coordinate_ascent`` and ``TuneConfig``).

Reranker weights: seeded random search, then coordinate ascent, for corpus BLEU.

The objective is evals' own corpus metric (``evals.metrics.new_metric``: sacreBLEU 13a or chrF++),
computed from per-candidate sufficient statistics extracted once (the way MERT does and the way
sacrebleu's own significance tests resample), so each trial costs a sum instead of a re-tokenisation
of the corpus; ``tests/test_inference_compute.py`` holds it equal to ``evals.metrics.score_corpus``.
"""

from __future__ import annotations

import operator
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import numpy as np

from core_seq2seq.config import KEYED_WHEN_SET

from .rerank import select


class CorpusObjective:
    """Corpus score of a selection (one candidate index per source) against references."""

    def __init__(self, nbest_texts: Sequence[Sequence[str]], refs: Sequence[str], metric: str = "bleu"):
        from evals.metrics import new_metric

        if len(nbest_texts) != len(refs):
            raise ValueError(f"{len(nbest_texts)} n-best lists but {len(refs)} references")
        if metric not in ("bleu", "chrf"):
            raise ValueError(f"tuning metric must be bleu or chrf, got {metric!r}")
        self.metric_name = metric
        self.metric = new_metric(metric)
        rows, self.offsets = [], []
        for cands, ref in zip(nbest_texts, refs):
            # sacrebleu's segment statistics, references prepared once per source (private but stable
            # API; evals.significance uses the same to resample).
            ref_info = self.metric._cache_references([[ref]])[0]
            self.offsets.append(len(rows))
            rows.extend(self.metric._compute_segment_statistics(self.metric._preprocess_segment(c), ref_info)
                        for c in cands)
        self.stats = np.asarray(rows, dtype=np.int64)
        self.offsets_arr = np.asarray(self.offsets, dtype=np.int64)

    def __call__(self, selection: Sequence[int]) -> float:
        total = self.stats[self.offsets_arr + np.asarray(selection, dtype=np.int64)].sum(0)
        return float(self.metric._compute_score_from_stats(total.tolist()).score)


# The agent's acceptance settings (``agents.policy.SelectionConfig`` fields) and the values tried for each.
AGENT_GRID: dict[str, list[float]] = {
    "max_score_drop": [0.0, 0.25, 0.5, 1.0, 2.0, 1e9], "min_score_gain": [0.0, 0.05, 0.1, 0.25],
    "refiner_weight": [0.0, 0.5, 1.0, 2.0],  # with a refiner
    "max_reverse_drop": [1e9],  # the veto (1e9 alone: never veto)
    "max_uncovered_rise": [1e9],  # with uncovered_source measured
    "gate_threshold": [0.5],  # with selection.gate set
}


@dataclass
class TuneConfig:
    """How settings are chosen on val. Every field is a YAML key of a ``tune`` section: the sweep's,
    the tune command's ``search``, the agent's (``agents.tune``). ``tune_weights`` reads the fields
    marked reranker; ``agents.tune`` those after ``seed``, which stay out of cache keys (``key_dict``)
    while they hold their defaults."""

    features: list[str] = field(default_factory=lambda: ["fwd_per_token", "rev_per_token", "lm_per_token",
                                                          "r2l_per_token", "alt_per_token", "tokens",
                                                          "len_ratio_dev"])  # reranker: features given weights
    anchor: str = "fwd_per_token"  # reranker: feature whose weight starts at 1 (the forward-only reranker, always tried)
    metric: str = "bleu"  # objective on val: bleu | chrf (corpus-level, through evals)
    random_trials: int = 200  # reranker: random weight vectors tried (uniform in [-scale, scale], anchor in [0, scale])
    scale: float = 1.0  # reranker: range of the random weights, in units of each feature's standard deviation
    coordinate_rounds: int = 5  # passes of coordinate ascent (0: none; a pass without gain ends it; the agent's default: 2)
    steps: list[float] = field(default_factory=lambda: [-1.0, -0.5, -0.25, -0.1, -0.05, 0.05, 0.1, 0.25, 0.5, 1.0])  # reranker: coordinate moves
    seed: int = 1  # seeds the random search
    # the agent's critic thresholds and acceptance settings (agents.tune):
    quantiles: list[float] = field(default_factory=lambda: [0.02, 0.05, 0.1, 0.2, 0.35, 0.5],
                                   metadata=KEYED_WHEN_SET)  # flag rates tried per signal
    max_harm_to_fix: float = field(default=0.5, metadata=KEYED_WHEN_SET)  # a setting may harm at most this many sentences per one it fixes
    grid: dict[str, list[float]] = field(default_factory=lambda: {k: list(v) for k, v in AGENT_GRID.items()},
                                         metadata=KEYED_WHEN_SET)  # values tried per acceptance setting (one not named: AGENT_GRID's; []: none)

    def __post_init__(self) -> None:
        if self.metric not in ("bleu", "chrf"):
            raise ValueError(f"tune.metric must be bleu or chrf, got {self.metric!r}")
        unknown = sorted(set(self.grid) - set(AGENT_GRID))
        if unknown:
            raise ValueError(f"tune.grid: unknown setting(s) {', '.join(unknown)} (known: {', '.join(AGENT_GRID)})")
        self.grid = {**{k: list(v) for k, v in AGENT_GRID.items()}, **self.grid}


P = TypeVar("P")  # a point of the search (a weight vector; thresholds and acceptance settings)
V = TypeVar("V")  # its value (a score; a trial with its harm counts)
Move = Callable[[P], "tuple[str, P] | None"]  # from the best point so far: (label, a point to try), or None: nothing new


def coordinate_ascent(point: P, value: V, coordinates: Sequence[Sequence[Move]], evaluate: Callable[[P], V],
                      rounds: int, better: Callable[[V, V], bool] = operator.gt,
                      on_trial: Callable[[str, V, bool], None] = lambda label, value, gain: None) -> tuple[P, V, int]:
    """Greedy ascent: each round tries every move of every coordinate, each from the best point so
    far, and keeps a trial only when ``better``; stops after ``rounds`` or a round without gain.
    Returns the best point, its value and the number of trials. (Random search is one round of one
    coordinate whose moves ignore the point.)"""
    trials = 0
    for _ in range(rounds):
        improved = False
        for moves in coordinates:
            for move in moves:
                step = move(point)
                if step is None:
                    continue
                label, candidate = step
                score = evaluate(candidate)
                trials += 1
                gain = better(score, value)
                on_trial(label, score, gain)
                if gain:
                    point, value, improved = candidate, score, True
        if not improved:
            break
    return point, value, trials


@dataclass
class TuneResult:
    weights: dict[str, float]
    score: float  # tuned objective on the tuning set
    start_score: float  # objective of the anchor-only (forward) reranker
    trials: int
    history: list[tuple[str, float]] = field(default_factory=list)  # (phase, best score so far) on each gain

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def tune_weights(features: Sequence[Sequence[Mapping[str, float]]], nbest_texts: Sequence[Sequence[str]],
                 refs: Sequence[str], cfg: TuneConfig | None = None) -> TuneResult:
    """Weights maximising the corpus metric of the reranked selection; deterministic under ``cfg.seed``."""
    cfg = cfg or TuneConfig()
    available = set(features[0][0]) if features and features[0] else set()
    names = [f for f in cfg.features if f in available]
    if cfg.anchor not in names:
        raise ValueError(f"anchor feature {cfg.anchor!r} not among the features present ({', '.join(sorted(available))})")
    objective = CorpusObjective(nbest_texts, refs, cfg.metric)
    # Features as one array per source: each trial is then a few matrix-vector products. The search
    # runs on features divided by their spread, so one step size suits counts and log-probabilities
    # alike; weights go back to raw-feature units at the end (a per-feature constant shift never
    # changes an argmax, so centring is not needed).
    mats = [np.asarray([[f[n] for n in names] for f in cands], dtype=np.float64) for cands in features]
    spread = np.concatenate(mats).std(0)
    spread[spread == 0] = 1.0
    mats = [m / spread for m in mats]

    def evaluate(w: np.ndarray) -> float:
        return objective([int(np.argmax(m @ w)) for m in mats])  # np.argmax: first on ties, like rerank.argmax

    anchor = names.index(cfg.anchor)
    start_w = np.zeros(len(names))
    start_w[anchor] = 1.0
    start = evaluate(start_w)
    history = [("start", start)]
    rng = random.Random(cfg.seed)

    def draw(w: np.ndarray) -> tuple[str, np.ndarray]:
        return "random", np.array([rng.uniform(0.0 if i == anchor else -cfg.scale, cfg.scale) for i in range(len(names))])

    def step(i: int, s: float) -> Move:
        def move(w: np.ndarray) -> tuple[str, np.ndarray]:
            w = w.copy()
            w[i] += s * cfg.scale
            return f"coordinate:{names[i]}", w
        return move

    def on_trial(label: str, score: float, gain: bool) -> None:
        if gain:
            history.append((label, score))

    best_w, best, random_trials = coordinate_ascent(start_w, start, [[draw] * cfg.random_trials], evaluate, 1,
                                                    on_trial=on_trial)
    best_w, best, ascent_trials = coordinate_ascent(best_w, best, [[step(i, s) for s in cfg.steps] for i in range(len(names))],
                                                    evaluate, cfg.coordinate_rounds, on_trial=on_trial)
    trials = 1 + random_trials + ascent_trials
    # Ranking is scale-invariant: report raw-unit weights with the anchor's weight 1 (or the largest
    # magnitude 1 if the anchor's is 0) for readability.
    raw = best_w / spread
    norm = float(abs(raw[anchor])) or float(np.abs(raw).max()) or 1.0
    weights = {n: float(v) / norm for n, v in zip(names, raw)}
    final = objective(select(features, weights))  # re-check through the public selector
    return TuneResult(weights, final, start, trials, history)


MARGINS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)  # scoring margins tried on val (units of the linear score)


def tune_margin(features: Sequence[Sequence[Mapping[str, float]]], nbest_texts: Sequence[Sequence[str]],
                refs: Sequence[str], weights: Mapping[str, float], margins: Sequence[float] = MARGINS,
                within: float = 0.1, metric: str = "bleu") -> dict[str, Any]:
    """The scoring margin chosen on val (``rerank.within_margin``; ``Scorers.select`` applies it).

    From the features of every candidate (no model runs): for each margin, the val score of the
    picks a reranker with that margin makes and the share of the candidates' tokens it would score
    (an estimate of its share of the scoring FLOPs: each scorer's work grows with the tokens of the
    candidates it reads). The pick: the margin with the smallest share whose score is within
    ``within`` of the full reranker's; None when none is, or when none scores less than all."""
    from .rerank import linear_scores, within_margin

    objective = CorpusObjective(nbest_texts, refs, metric)
    scores = linear_scores(features, weights)
    full = objective([int(np.argmax(row)) for row in scores])
    total = sum(f["tokens"] for cands in features for f in cands) or 1.0
    rows = []
    for m in margins:
        kept = within_margin(features, weights, m)
        picks = [max(k, key=lambda j, row=row: (row[j], -j)) for k, row in zip(kept, scores)]
        share = sum(features[i][j]["tokens"] for i, k in enumerate(kept) if len(k) > 1 for j in k) / total
        rows.append({"margin": m, "score": objective(picks), "scored_share": share})
    close = [r for r in rows if r["score"] >= full - within and r["scored_share"] < 1.0]
    pick = min(close, key=lambda r: (r["scored_share"], r["margin"]))["margin"] if close else None
    return {"metric": metric, "full": full, "within": within, "margins": rows, "pick": pick}
