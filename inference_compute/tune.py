"""Tuning reranker weights on val for corpus BLEU: seeded random search, then coordinate ascent.

The objective is evals' own corpus metric (``evals.metrics.new_metric``: sacreBLEU 13a or chrF++),
computed from per-candidate sufficient statistics extracted once (the way MERT does and the way
sacrebleu's own significance tests resample), so each trial costs a sum instead of a re-tokenisation
of the corpus; ``tests/test_inference_compute.py`` holds it equal to ``evals.metrics.score_corpus``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

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


@dataclass
class TuneConfig:
    """How to tune. Every field is a YAML key of the ``tune`` section."""

    features: list[str] = field(default_factory=lambda: ["fwd_per_token", "rev_per_token", "lm_per_token",
                                                          "r2l_per_token", "alt_per_token", "tokens",
                                                          "len_ratio_dev"])  # features given weights
    anchor: str = "fwd_per_token"  # feature whose weight starts at 1 (the forward-only reranker, always tried)
    metric: str = "bleu"  # objective on val: bleu | chrf (corpus-level, through evals)
    random_trials: int = 200  # random weight vectors tried (uniform in [-scale, scale], anchor in [0, scale])
    scale: float = 1.0  # range of the random weights, in units of each feature's standard deviation
    coordinate_rounds: int = 5  # passes of coordinate ascent from the best random point (0: none)
    steps: list[float] = field(default_factory=lambda: [-1.0, -0.5, -0.25, -0.1, -0.05, 0.05, 0.1, 0.25, 0.5, 1.0])  # coordinate moves
    seed: int = 1  # seeds the random search


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
    best_w = np.zeros(len(names))
    best_w[anchor] = 1.0
    best = start = evaluate(best_w)
    history = [("start", start)]
    trials = 1
    rng = random.Random(cfg.seed)
    for _ in range(cfg.random_trials):
        w = np.array([rng.uniform(0.0 if i == anchor else -cfg.scale, cfg.scale) for i in range(len(names))])
        score = evaluate(w)
        trials += 1
        if score > best:
            best, best_w = score, w
            history.append(("random", best))
    for _ in range(cfg.coordinate_rounds):
        improved = False
        for i in range(len(names)):
            for step in cfg.steps:
                w = best_w.copy()
                w[i] += step * cfg.scale
                score = evaluate(w)
                trials += 1
                if score > best:
                    best, best_w, improved = score, w, True
                    history.append((f"coordinate:{names[i]}", best))
        if not improved:
            break
    # Ranking is scale-invariant: report raw-unit weights with the anchor's weight 1 (or the largest
    # magnitude 1 if the anchor's is 0) for readability.
    raw = best_w / spread
    norm = float(abs(raw[anchor])) or float(np.abs(raw).max()) or 1.0
    weights = {n: float(v) / norm for n, v in zip(names, raw)}
    final = objective(select(features, weights))  # re-check through the public selector
    return TuneResult(weights, final, start, trials, history)
