"""The exchange rate of a ladder step in real pairs, on constructed systems whose worth is known.

Every sentence has 6 distinct words; a system gets a sentence either exactly right or with no word
right, at the same length, so its corpus BLEU is exactly 100 x the share it gets right. A "plain
recipe trained on n pairs" gets the first q(n) = 0.10 + 0.05 log2(n / 1000) of a fixed order of the
sentences right (nested, as better models are), so a step that scores q(2N) is worth 2x the N pairs.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from evals.errors import EvalsInputError
from evals.exchange import chi2_sf, choose_form, exchange_rates, fit_curve, held_out_check, worth_cell
from evals.significance import sentence_stats

N_SENT = 1000
PAIRS = [1000, 2000, 4000, 8000]
ORDER = np.random.default_rng(0).permutation(N_SENT)
REFS = [" ".join(f"w{i}x{j}" for j in range(6)) for i in range(N_SENT)]


def share(pairs: float) -> float:
    return 0.10 + 0.05 * math.log2(pairs / 1000)


def system(q: float, order: np.ndarray = ORDER) -> np.ndarray:
    right = set(order[:round(q * N_SENT)].tolist())
    hyps = [REFS[i] if i in right else " ".join(f"z{i}x{j}" for j in range(6)) for i in range(N_SENT)]
    return sentence_stats(hyps, REFS, "bleu")


@pytest.fixture(scope="module")
def result():
    curve = [system(share(n)) for n in PAIRS]
    steps = {"doubled": system(share(16000)), "same": system(share(8000)), "half": system(share(2000))}
    return exchange_rates(curve, PAIRS, steps, "bleu", n_samples=300, seed=7)


def test_a_step_equal_to_doubling_the_data_is_worth_2x_and_its_interval_covers_it(result):
    assert [p["score"] for p in result["points"]] == pytest.approx([10, 15, 20, 25])
    assert result["fit"]["form"] == "loglinear" and "within the points' test-set noise" in result["fit"]["reason"]
    doubled = result["steps"]["doubled"]
    assert doubled["score"] == pytest.approx(30)
    assert doubled["multiple"] == pytest.approx(2.0, rel=0.01)
    assert doubled["pairs"] == pytest.approx(16000, rel=0.01)
    lo, hi = doubled["multiple_ci"]
    assert lo < 2.0 < hi and hi / lo < 4  # covers the truth, and says something
    assert doubled["pairs_ci"] == pytest.approx([lo * 8000, hi * 8000])
    # Beyond the largest trained point: marked, with how far.
    assert doubled["extrapolation"]["direction"] == "above"
    assert doubled["extrapolation"]["text"] == "x2.0 beyond the largest point"
    assert worth_cell(doubled).startswith("2.00x [") and worth_cell(doubled).endswith(
        "= 16,000 pairs (extrapolated: x2.0 beyond the largest point)")


def test_intervals_cover_the_truth_on_noisy_test_sets():
    """Twenty test sets on which every system gets each sentence right independently, with its expected
    share: the curve's points and the step are noisy, and the step's true worth is still 2x."""
    right, wrong = system(1.0), system(0.0)
    covered, multiples = 0, []
    for trial in range(20):
        rng = np.random.default_rng(100 + trial)

        def noisy(q: float) -> np.ndarray:
            return np.where((rng.random(N_SENT) < q)[:, None], right, wrong)

        curve = [noisy(share(n)) for n in PAIRS]
        step = exchange_rates(curve, PAIRS, {"doubled": noisy(share(16000))}, "bleu", n_samples=200,
                              seed=trial + 1)["steps"]["doubled"]
        lo, hi = (math.inf if v == "inf" else v for v in step["multiple_ci"])
        covered += lo <= 2.0 <= hi
        multiples.append(step["multiple"])
    assert covered >= 18  # a 95% interval; all 20 cover here
    assert 1.8 < float(np.median(multiples)) < 2.2


def test_steps_inside_the_trained_range_are_not_marked(result):
    same, half = result["steps"]["same"], result["steps"]["half"]
    assert same["multiple"] == pytest.approx(1.0, rel=0.01) and same["extrapolation"] is None
    assert half["multiple"] == pytest.approx(0.25, rel=0.01) and half["extrapolation"] is None
    assert half["multiple_ci"][0] < 0.25 < half["multiple_ci"][1]
    assert "extrapolated" not in worth_cell(same)


def test_the_held_out_largest_point_is_predicted_by_the_smaller_ones(result):
    held = result["held_out"]
    assert held["fitted_on"] == [1000, 2000, 4000] and held["pairs"] == 8000
    assert held["error"] == pytest.approx(0, abs=0.05)
    assert held["error_ci"][0] <= 0 <= held["error_ci"][1]
    assert held["worth_of_held_out"] == pytest.approx(1.0, rel=0.02)
    assert max(abs(r) for r in result["fit"]["residuals"]) < 0.05


@pytest.mark.parametrize("scores, error", [
    ([10, 15, 20, 25], 0.0),    # on the line: predicted exactly
    ([10, 15, 20, 22], 3.0),    # the full-data point falls 3 BLEU short of the line: over-predicted by 3
    ([10, 15, 20, 26.5], -1.5),  # above the line: under-predicted
])
def test_held_out_check_reports_the_error_in_score(scores, error):
    held = held_out_check(PAIRS, scores)
    assert held["predicted"] == pytest.approx(25) and held["error"] == pytest.approx(error)
    assert "needs at least 3 points" in held_out_check(PAIRS[:2], scores[:2])["why"]


def test_a_saturating_curve_is_chosen_only_when_the_points_demand_it():
    n = np.array([500, 1000, 2000, 4000, 8000])
    ceiling = 40 - 300 * n ** -0.5
    form, why, lack = choose_form(n, ceiling, variances=[0.04] * 5)
    assert form == "saturating" and lack["p_value"] < 0.05
    fit = fit_curve(n, ceiling, variances=[0.04] * 5)
    assert fit.params["c"] == pytest.approx(40, abs=0.2) and max(map(abs, fit.residuals)) < 0.1
    assert math.isinf(fit.invert(41))  # above the ceiling: no amount of real data reaches it
    # The same curvature with the noise of a small test set does not reject the straight line.
    assert choose_form(n, ceiling, variances=[4.0] * 5)[0] == "loglinear"
    # Points that bend upwards (faster than log-linear) have no ceiling: the straight line stays.
    accelerating = 10 + 0.5 * np.log(n) ** 2
    form, why, lack = choose_form(n, accelerating, variances=[0.04] * 5)
    assert form == "loglinear" and lack["p_value"] < 0.05 and "bend upwards" in why
    # Two points cannot test curvature.
    assert "two points" in choose_form(n[:2], ceiling[:2], [0.04] * 2)[1]


@pytest.mark.parametrize("pairs, scores, message", [
    ([1000], [10.0], "at least 2 points"),
    ([], [], "at least 2 points"),
    ([1000, 1000], [10.0, 12.0], "strictly increasing"),
    ([2000, 1000], [10.0, 12.0], "strictly increasing"),
    ([0, 1000], [10.0, 12.0], "positive"),
    ([1000, 2000], [10.0, 12.0, 13.0], "one score per point"),
])
def test_bad_curves_are_clear_errors(pairs, scores, message):
    with pytest.raises(EvalsInputError, match=message):
        fit_curve(pairs, scores)


def test_a_falling_curve_is_refused_and_chi2_tail_is_right():
    with pytest.raises(EvalsInputError, match="no rising loglinear curve fits the points"):
        fit_curve([1000, 2000, 4000], [20, 18, 15])
    # Closed-form tails against the textbook 5% points.
    for df, x in ((1, 3.841), (2, 5.991), (3, 7.815), (4, 9.488), (5, 11.070)):
        assert chi2_sf(x, df) == pytest.approx(0.05, abs=2e-4)


SMALL = 200  # the command scores whole records (TER included): a smaller test set keeps it quick


def _hyps(q: float) -> list[str]:
    right = set(np.random.default_rng(1).permutation(SMALL)[:round(q * SMALL)].tolist())
    return [REFS[i] if i in right else " ".join(f"z{i}x{j}" for j in range(6)) for i in range(SMALL)]


def test_exchange_command_values_systems_from_records(tmp_path, capsys):
    from evals.cli import main as evals_main
    from evals.records import make_record, write_records

    (tmp_path / "ref.txt").write_text("\n".join(REFS[:SMALL]) + "\n")

    def record(name: str, q: float, **extra) -> object:
        path = tmp_path / f"{name}.txt"
        hyps = _hyps(q)
        path.write_text("\n".join(hyps) + "\n")
        return make_record(name, "curve" if "real_pairs" in extra else name, "en-de", "test", hyps, REFS[:SMALL],
                           hyp_path=str(path), ref_path=str(tmp_path / "ref.txt"), n_samples=20, extra=extra)

    write_records(tmp_path / "curve.jsonl", [record(f"curve{n}", share(n), real_pairs=n) for n in PAIRS])
    write_records(tmp_path / "results.jsonl", [record("baseline", share(8000), kept=True),
                                               record("+bt", share(16000), kept=True),
                                               record("+worse", share(4000), kept=False)])
    out = tmp_path / "out"
    assert evals_main(["exchange", str(tmp_path / "curve.jsonl"), str(tmp_path / "results.jsonl"), "--n-samples", "200",
                       "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| +bt | 30.00 | 2.00x [" in text and "x2.0 beyond the largest point" in text
    assert "| baseline | 25.00 | 1.00x [" in text and "+worse" not in text  # kept systems only
    assert (out / "exchange_en-de_test.png").stat().st_size > 10_000 and (out / "exchange.json").exists()
    # A curve record without its number of real pairs is named, file and line.
    bad = tmp_path / "bad.jsonl"
    write_records(bad, [record("curve1000", share(1000), real_pairs=1000), record("x", share(2000), fraction=0.5)])
    assert evals_main(["exchange", str(bad), str(tmp_path / "results.jsonl")]) == 2
    assert f"{bad}:2: curve record 'x' needs extra.real_pairs" in capsys.readouterr().err


def test_the_leaderboard_shows_the_worth_of_rows_that_have_one(result, tmp_path):
    import dataclasses
    from pathlib import Path

    from evals.leaderboard import render_leaderboard
    from evals.records import read_records

    example = Path(__file__).resolve().parents[1] / "benchmarks/results/example_results.jsonl"
    first, second = read_records(example)[:2]
    worth = {"bleu": {**result["steps"]["doubled"], "form": "loglinear", "used_pairs": 8000.0, "largest_point": 8000}}
    records = [first, dataclasses.replace(second, extra={**second.extra, "exchange": worth})]
    markdown = render_leaderboard(records, tmp_path, plots=False)
    head, row1, row2 = [line for line in markdown.splitlines() if line.startswith("| ")][:3]
    assert head.endswith("| Worth x real pairs [95% CI] |") and row1.endswith("| – |")
    assert row2.endswith("= 16,000 pairs (extrapolated: x2.0 beyond the largest point) |")
    assert "log-linear learning curve fitted on real-data fractions up to 8,000 pairs" in markdown
    assert (tmp_path / "leaderboard.csv").read_text().splitlines()[0].endswith(",worth_extrapolation")
    # Without a measured curve the table is as it always was.
    assert "Worth" not in render_leaderboard([first, second], plots=False)
