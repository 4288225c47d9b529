"""Confidence intervals and paired significance through sacrebleu's ``PairedTest``.

sacrebleu takes its resampling seed from the ``SACREBLEU_SEED`` environment variable
when a ``PairedTest`` is built (the baseline's interval is computed right there), so
:func:`_seeded` sets it for exactly that span; the seed we pass is the one recorded.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import numpy as np
from sacrebleu.significance import PairedTest

from .errors import EvalsInputError
from .metrics import METRICS, new_metric, tokenize_lc

DEFAULT_SEED = 12345
TESTS = {"bs": "paired bootstrap resampling", "ar": "approximate randomisation"}


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    old = os.environ.get("SACREBLEU_SEED")
    os.environ["SACREBLEU_SEED"] = str(seed)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("SACREBLEU_SEED", None)
        else:
            os.environ["SACREBLEU_SEED"] = old


def _check_args(metric: str, test: str, n_samples: int, seed: int) -> None:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")
    if test not in TESTS:
        raise ValueError(f"unknown test {test!r}; expected 'bs' or 'ar'")
    if n_samples < 1:
        raise ValueError("n_samples must be >= 1")
    # sacrebleu treats a seed of 0 as "unseeded" (`seed if seed else None`): refuse it.
    if isinstance(seed, bool) or not isinstance(seed, int) or seed <= 0:
        raise ValueError("seed must be a positive integer")


def _prepare(hyps: Sequence[str], metric: str, trg_lang: str) -> list[str]:
    hyps = list(hyps)
    return tokenize_lc(hyps, trg_lang) if metric == "tok_bleu" else hyps


def _interval(result) -> list[float] | None:
    # sacrebleu reports the bootstrap mean and the half-width of its 95% percentile interval;
    # we store the interval as [mean - half, mean + half], as its command line prints it.
    if result.mean is None or result.ci is None:
        return None
    return [float(result.mean - result.ci), float(result.mean + result.ci)]


def paired_significance(
    baseline_hyps: Sequence[str],
    systems: Mapping[str, Sequence[str]],
    refs: Sequence[str],
    metric: str = "bleu",
    test: str = "bs",
    n_samples: int = 1000,
    seed: int = DEFAULT_SEED,
    *,
    baseline_name: str = "baseline",
    trg_lang: str = "de",
    n_ci_samples: int = 1000,
) -> dict[str, dict]:
    """Score each system against the baseline with a paired test on the same segments.

    Returns ``{name: {"score", "ci": [low, high], "mean", "p_value", "n_differing"}}`` for
    the baseline (``p_value`` None) and every system; ``n_differing`` counts the segments
    whose output differs from the baseline's, and identical outputs get ``p_value`` 1.0.
    ``test`` is "bs" (``n_samples`` resamples) or "ar" (``n_samples`` trials; intervals
    then use ``n_ci_samples`` bootstrap resamples).
    For ``metric="tok_bleu"`` the hypotheses are raw and ``refs`` are the tok-lc references.
    """
    _check_args(metric, test, n_samples, seed)
    refs = list(refs)
    if baseline_name in systems:
        raise ValueError(f"system name {baseline_name!r} is taken by the baseline")
    named = [(baseline_name, _prepare(baseline_hyps, metric, trg_lang))]
    named += [(name, _prepare(hyps, metric, trg_lang)) for name, hyps in systems.items()]
    for name, hyps in named:
        if not hyps:
            raise EvalsInputError(f"system {name!r} has no hypotheses")
        if len(hyps) != len(refs):
            raise EvalsInputError(f"system {name!r} has {len(hyps)} hypotheses but there are {len(refs)} references")
    with _seeded(seed):
        paired = PairedTest(
            named,
            {metric: new_metric(metric)},
            references=[refs],
            test_type=test,
            n_samples=n_samples,
            n_ar_confidence=n_ci_samples if test == "ar" else -1,
            n_jobs=1,  # worker processes cost more than they save on small test sets and 2 cores
        )
        _signatures, scores = paired()
    (key,) = [k for k in scores if k != "System"]
    base = named[0][1]
    out: dict[str, dict] = {}
    for (name, hyps), result in zip(named, scores[key]):
        n_differing = sum(h != b for h, b in zip(hyps, base))
        p_value = None if result.p_value is None else float(result.p_value)
        if name != baseline_name and n_differing == 0:
            # sacrebleu counts only resamples whose difference is strictly greater than the
            # observed one, so two identical outputs (every difference exactly 0) come out at
            # the minimum p = 1/(n+1). Identical outputs carry no evidence of a difference: p = 1.
            p_value = 1.0
        elif test == "ar" and 0 < n_differing < 10:
            warnings.warn(
                f"{name!r} differs from {baseline_name!r} on only {n_differing} segment(s); sacrebleu's "
                "approximate randomisation ignores exact ties and understates p here; prefer test='bs'",
                stacklevel=2,
            )
        out[name] = {
            "score": float(result.score),
            "ci": _interval(result),
            "mean": None if result.mean is None else float(result.mean),
            "p_value": p_value,
            "n_differing": n_differing,
        }
    out[baseline_name]["p_value"] = None
    return out


def bootstrap_ci(
    hyps: Sequence[str],
    refs: Sequence[str],
    metric: str = "bleu",
    n_samples: int = 1000,
    seed: int = DEFAULT_SEED,
    trg_lang: str = "de",
) -> list[float]:
    """The 95% bootstrap interval [low, high] of one system's corpus score (sacrebleu's resampling)."""
    result = paired_significance(hyps, {}, refs, metric, "bs", n_samples, seed, trg_lang=trg_lang)
    return result["baseline"]["ci"]


def paired_delta_ci(
    baseline_hyps: Sequence[str],
    system_hyps: Sequence[str],
    refs: Sequence[str],
    metric: str = "bleu",
    n_samples: int = 1000,
    seed: int = DEFAULT_SEED,
    trg_lang: str = "de",
) -> list[float]:
    """95% paired-bootstrap interval of (system - baseline), on the same resamples sacrebleu's "bs" test draws.

    sacrebleu's PairedTest reports p-values and per-system intervals but no interval for the
    difference, which is what a lift is; this uses its metric's sufficient statistics and
    the same seeded index draw, so both come from one set of resamples.
    """
    _check_args(metric, "bs", n_samples, seed)
    refs = list(refs)
    if not baseline_hyps or len(baseline_hyps) != len(refs) or len(system_hyps) != len(refs):
        raise EvalsInputError(f"need equally many hypotheses and references "
                              f"(got {len(baseline_hyps)}, {len(system_hyps)}, {len(refs)})")
    stats = [sentence_stats(h, refs, metric, trg_lang) for h in (baseline_hyps, system_hyps)]
    scores = bootstrap_scores(stats, metric, n_samples, seed)  # (n_samples, 2)
    deltas = np.sort(scores[:, 1] - scores[:, 0])
    lower = n_samples // 40  # sacrebleu's estimate_ci convention for the 2.5% / 97.5% points
    return [float(deltas[lower]), float(deltas[n_samples - lower - 1])]


def sentence_stats(hyps: Sequence[str], refs: Sequence[str], metric: str = "bleu", trg_lang: str = "de") -> np.ndarray:
    """Per-sentence sufficient statistics of ``metric`` (sacrebleu's own), shape (n_sentences, n_stats).

    Summing rows and scoring the sum gives the corpus score, so resampled corpus scores cost a sum
    each (``bootstrap_scores``). For "tok_bleu", ``refs`` are the tok-lc references.
    """
    if metric not in ("bleu", "chrf", "tok_bleu"):
        raise ValueError(f"no additive sentence statistics for {metric!r}; expected bleu, chrf or tok_bleu")
    hyps, refs = _prepare(hyps, metric, trg_lang), list(refs)
    if not hyps or len(hyps) != len(refs):
        raise EvalsInputError(f"need equally many hypotheses and references (got {len(hyps)}, {len(refs)})")
    return np.array(new_metric(metric)._extract_corpus_statistics(hyps, [refs]), dtype="float32")


def score_from_stats(stats: np.ndarray, metric: str = "bleu") -> float:
    """The corpus score of summed sufficient statistics (shape (n_stats,))."""
    return float(new_metric(metric)._compute_score_from_stats(stats).score)


def bootstrap_scores(stats: Sequence[np.ndarray], metric: str = "bleu", n_samples: int = 1000,
                     seed: int = DEFAULT_SEED) -> np.ndarray:
    """Corpus scores of every system on the same resamples of sentences: shape (n_samples, n_systems).

    ``stats`` holds each system's ``sentence_stats`` on one test set. One index draw per replicate
    is shared by all systems (a paired bootstrap), drawn as sacrebleu's "bs" test draws it.
    """
    _check_args(metric, "bs", n_samples, seed)
    n = {len(s) for s in stats}
    if len(n) != 1 or 0 in n:
        raise EvalsInputError(f"every system needs statistics for the same, non-empty test set (got lengths {sorted(n)})")
    m = new_metric(metric)
    rng = np.random.default_rng(seed)
    idxs = rng.choice(n.pop(), size=(n_samples, len(stats[0])), replace=True)
    return np.array([[m._compute_score_from_stats(s[idx].sum(0)).score for s in stats] for idx in idxs])
