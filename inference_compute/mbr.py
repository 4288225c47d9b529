"""Minimum Bayes risk decoding: choose the candidate with the highest expected utility against the
candidate set itself as pseudo-references (Kumar & Byrne 2004; Eikema & Aziz 2020).

``expected_utility`` (scoring) and ``mbr_select`` (selecting) are separate. Utilities are evals'
sentence metrics (sacreBLEU chrF++ and smoothed sentence BLEU, hypothesis first, pseudo-reference
second). For chrF++ the utility matrix comes from ``evals.metrics.chrf_matrix``, which extracts each
sentence's n-grams once through sacrebleu's routines; evals' tests and ours hold it equal to
pairwise ``sentence_chrf``.

Expectations are over the pseudo-references ``j`` with weights ``w_j``: uniform (each distinct
candidate once), ``count`` (how often a sampler produced it: the Monte Carlo estimate over samples)
or ``model`` (softmax of log-probabilities / temperature).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

UTILITIES = ("chrf", "bleu")
WEIGHTINGS = ("uniform", "count", "model")


@dataclass
class MbrConfig:
    """MBR settings. Every field is a YAML key of the ``mbr`` section."""

    utility: str = "chrf"  # chrf (chrF++) | bleu (sentence BLEU), both sacrebleu through evals
    weighting: str = "uniform"  # uniform | count (sample frequencies) | model (softmax of logprob / temperature)
    temperature: float = 1.0  # weighting=model: softmax temperature over total log-probabilities

    def __post_init__(self) -> None:
        if self.utility not in UTILITIES:
            raise ValueError(f"mbr.utility must be one of {', '.join(UTILITIES)}, got {self.utility!r}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"mbr.weighting must be one of {', '.join(WEIGHTINGS)}, got {self.weighting!r}")
        if self.temperature <= 0:
            raise ValueError(f"mbr.temperature must be > 0, got {self.temperature}")


def utility_matrix(candidates: Sequence[str], utility: str = "chrf") -> list[list[float]]:
    """``U[i][j]`` = utility of candidate ``i`` against candidate ``j`` as the reference."""
    from evals import metrics

    candidates = list(candidates)
    if utility == "chrf":
        fast = getattr(metrics, "chrf_matrix", None)
        if fast is not None:
            return fast(candidates)
        fn = metrics.sentence_chrf  # evals without the one-extraction path: same values, pairwise
    elif utility == "bleu":
        fn = metrics.sentence_bleu
    else:
        raise ValueError(f"utility must be one of {', '.join(UTILITIES)}, got {utility!r}")
    return [[fn(h, r) for r in candidates] for h in candidates]


def model_weights(logprobs: Sequence[float], temperature: float = 1.0) -> list[float]:
    """Softmax of ``logprobs / temperature`` (numerically stable)."""
    if not logprobs:
        return []
    scaled = [lp / temperature for lp in logprobs]
    top = max(scaled)
    exps = [math.exp(s - top) for s in scaled]
    total = sum(exps)
    return [e / total for e in exps]


def expected_utility(candidates: list[str], utility: str = "chrf", weights: list[float] | None = None) -> list[float]:
    """Expected utility of each candidate against the candidate set as pseudo-references.

    ``weights`` (any non-negative numbers; normalised here) weight the pseudo-references; None is uniform.
    """
    if not candidates:
        return []
    _check_weights(len(candidates), weights)
    return expected_from_matrix(utility_matrix(candidates, utility), weights)


def _check_weights(n: int, weights: Sequence[float] | None) -> None:
    if weights is None:
        return
    if len(weights) != n:
        raise ValueError(f"{n} candidates but {len(weights)} weights")
    if any(w < 0 or not math.isfinite(w) for w in weights) or sum(weights) <= 0:
        raise ValueError("weights must be finite, non-negative and not all zero")


def expected_from_matrix(matrix: Sequence[Sequence[float]], weights: Sequence[float] | None = None) -> list[float]:
    """Expected utilities from a ready utility matrix (one matrix serves several weightings)."""
    n = len(matrix)
    _check_weights(n, weights)
    total = float(sum(weights)) if weights is not None else float(n)
    probs = [w / total for w in weights] if weights is not None else [1.0 / n] * n
    return [sum(p * u for p, u in zip(probs, row)) for row in matrix]


def mbr_select(candidates: list[str], utility: str = "chrf", weights: list[float] | None = None) -> int:
    """Index of the candidate with the highest expected utility (ties: the earliest)."""
    from .rerank import argmax

    return argmax(expected_utility(candidates, utility, weights))


def reference_weights(cands: Sequence, cfg: MbrConfig) -> list[float] | None:
    """The pseudo-reference weights of one source's candidates under ``cfg`` (None: uniform)."""
    if cfg.weighting == "uniform":
        return None
    if cfg.weighting == "count":
        return [float(getattr(c, "count", 1)) for c in cands]
    return model_weights([c.logprob for c in cands], cfg.temperature)


def mbr_decode(nbest: Sequence[Sequence], cfg: MbrConfig | None = None) -> tuple[list[int], int]:
    """MBR over every source's candidates (``Candidate``-like: ``text``, ``logprob``, ``count``).

    Returns the selected indices and the number of utility evaluations (the cost of MBR is quadratic).
    """
    cfg = cfg or MbrConfig()
    picks, calls = [], 0
    for cands in nbest:
        texts = [c.text for c in cands]
        picks.append(mbr_select(texts, cfg.utility, reference_weights(cands, cfg)))
        calls += len(texts) ** 2
    return picks, calls
