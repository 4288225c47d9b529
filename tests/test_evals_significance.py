"""Paired significance through sacrebleu's PairedTest, checked against its command line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from evals.significance import bootstrap_ci, paired_delta_ci, paired_significance
from evals.textio import read_lines

FIX = Path(__file__).parent / "fixtures" / "evals"
REF, A, B = (read_lines(FIX / n) for n in ("ref.de", "hyp_a.de", "hyp_b.de"))


def test_matches_sacrebleu_cli_paired_bootstrap():
    # sacrebleu ref.de -i hyp_a.de hyp_b.de -m bleu chrf --chrf-word-order 2 --paired-bs -w 4 -f text
    #   Baseline hyp_a.de: BLEU 36.6287 (36.0959 ± 9.3211)   chrF2++ 65.5279 (65.6220 ± 5.8388)
    #   hyp_b.de:          BLEU 80.0186 (79.8374 ± 10.1967)  chrF2++ 90.6000 (90.6560 ± 4.3157), p = 0.0010
    for metric, base, system in (("bleu", (36.0959, 9.3211), (79.8374, 10.1967)),
                                 ("chrf", (65.6220, 5.8388), (90.6560, 4.3157))):
        res = paired_significance(A, {"b": B}, REF, metric=metric, test="bs", n_samples=1000, seed=12345)
        for name, (mean, half) in (("baseline", base), ("b", system)):
            lo, hi = res[name]["ci"]
            assert round(res[name]["mean"], 4) == mean
            assert round((hi - lo) / 2, 4) == half
        assert res["baseline"]["p_value"] is None
        assert round(res["b"]["p_value"], 4) == 0.0010


@pytest.mark.parametrize("test", ["bs", "ar"])
def test_identical_systems_p_close_to_one_and_better_system_significant(test):
    res = paired_significance(A, {"same": list(A), "better": B}, REF, test=test, n_samples=200, seed=7)
    assert res["same"]["p_value"] > 0.95
    assert res["better"]["p_value"] < 0.05
    assert res["same"]["score"] == res["baseline"]["score"]


def test_seed_is_used_and_environment_restored(monkeypatch):
    monkeypatch.setenv("SACREBLEU_SEED", "999")
    one = bootstrap_ci(A, REF, n_samples=200, seed=1)
    assert bootstrap_ci(A, REF, n_samples=200, seed=1) == one
    assert bootstrap_ci(A, REF, n_samples=200, seed=2) != one
    assert os.environ["SACREBLEU_SEED"] == "999"


def test_delta_ci_brackets_the_lift():
    lo, hi = paired_delta_ci(A, B, REF, n_samples=200)
    delta = paired_significance(A, {"b": B}, REF, n_samples=200)["b"]["score"] - 36.62873241370773
    assert 0 < lo < delta < hi


def test_tok_bleu_metric_uses_tokenised_refs():
    tok = read_lines(FIX / "ref.lc.norm.tok.de")
    res = paired_significance(A, {"b": B}, tok, metric="tok_bleu", n_samples=200)
    assert round(res["baseline"]["score"], 4) == 38.6209


@pytest.mark.parametrize("kwargs, message", [
    ({"metric": "meteor"}, "unknown metric"),
    ({"test": "t"}, "unknown test"),
    ({"seed": 0}, "positive integer"),
    ({"n_samples": 0}, "n_samples"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        paired_significance(A, {"b": B}, REF, **kwargs)
