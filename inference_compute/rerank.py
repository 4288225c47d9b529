"""Selecting one candidate per source with a linear model over features (scoring is ``features``),
and choosing which candidates are worth scoring at all (``within_margin``).

Weights are frozen to a JSON file together with what made them (``tune.py`` writes them; the
rerank command and the sweep read them), so a test-set number always comes from weights fixed on val.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from evals.textio import atomic_write_text

WEIGHTS_FORMAT = "decade-rerank-weights"


def linear_scores(features: Sequence[Sequence[Mapping[str, float]]], weights: Mapping[str, float]) -> list[list[float]]:
    """``sum_k weights[k] * feature[k]`` per candidate. A weighted feature missing from a candidate is an error."""
    out = []
    for sent_id, cands in enumerate(features):
        row = []
        for rank, f in enumerate(cands):
            try:
                row.append(sum(w * f[k] for k, w in weights.items() if w))
            except KeyError as e:
                raise ValueError(f"candidate {rank} of source {sent_id} has no feature {e.args[0]!r} "
                                 f"(has: {', '.join(sorted(f))}); was its model given to compute_features?") from None
        out.append(row)
    return out


def argmax(values: Sequence[float]) -> int:
    """Index of the largest value; ties go to the earliest (the generator's better-ranked) candidate."""
    if not values:
        raise ValueError("cannot select from an empty candidate list")
    best = 0
    for i, v in enumerate(values):
        if v > values[best]:
            best = i
    return best


def select(features: Sequence[Sequence[Mapping[str, float]]], weights: Mapping[str, float]) -> list[int]:
    """The index of the best candidate of each source under the linear model ``weights``."""
    return [argmax(row) for row in linear_scores(features, weights)]


def check_margin(margin: float | None, key: str = "score_margin") -> None:
    """A scoring margin is null (score every candidate) or a number >= 0 (inf: every candidate too)."""
    if margin is not None and not margin >= 0:  # NaN fails this too
        raise ValueError(f"{key} must be >= 0 (or null: score every candidate), got {margin}")


def within_margin(features: Sequence[Sequence[Mapping[str, float]]], weights: Mapping[str, float],
                  margin: float) -> list[list[int]]:
    """Per source, the candidates worth scoring with the other models: those whose free part of the
    linear score (the weighted ``features.FREE_FEATURES``) is within ``margin`` of the best free score.

    The forward model's own confidence decides where the costly scorers are spent: where its best
    candidate leads by more than ``margin``, only that candidate is kept (nothing to score); where
    several are close, each of them is. ``margin`` is in the units of the linear score (with the
    tuner's anchor, weight 1 on ``fwd_per_token``: about nats per token); ``inf`` keeps every
    candidate (the full reranker). The kept indices are in n-best order, so ties still go to the
    better-ranked candidate, as in ``select``."""
    from .features import FREE_FEATURES

    check_margin(margin, "margin")
    free = {k: w for k, w in weights.items() if k in FREE_FEATURES}
    kept = []
    for sent_id, row in enumerate(linear_scores(features, free)):
        if not row:
            raise ValueError(f"source {sent_id} has no candidates to select from")
        top = max(row)
        kept.append([i for i, v in enumerate(row) if v >= top - margin])
    return kept


def save_weights(path: str | os.PathLike, weights: Mapping[str, float], **meta: Any) -> None:
    """Freeze weights to JSON with their provenance (tuning set, objective, seed, config...)."""
    payload = {"format": WEIGHTS_FORMAT, "weights": dict(weights), **meta}
    atomic_write_text(path, json.dumps(payload, indent=1, ensure_ascii=False, default=str) + "\n")


def load_weights(path: str | os.PathLike) -> dict[str, float]:
    """Weights saved by :func:`save_weights` (or a plain ``{"feature": weight}`` JSON object)."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such weights file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    weights = data.get("weights", data) if isinstance(data, dict) else None
    if not isinstance(weights, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in weights.values()):
        raise ValueError(f"{path}: expected {{'weights': {{feature: number}}}}")
    return {str(k): float(v) for k, v in weights.items()}
