"""The learning-curve stage of the ladder: nested subsets, the baseline reused, records, the worth column."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from core_seq2seq.config import ConfigError
from pipeline.cli import main as decade_main
from pipeline.curve import subset_sizes
from pipeline.ladder import check_force, load_pipeline_config

ROOT = Path(__file__).resolve().parents[1]


def test_fractions_too_small_for_the_data_are_a_config_error():
    ladder = SimpleNamespace(cfg=SimpleNamespace(curve=SimpleNamespace(fractions=[0.5, 0.25, 0.125])))
    assert subset_sizes(ladder, 1000) == [125, 250, 500]  # smallest first, whatever the config's order
    with pytest.raises(ConfigError, match=r"curve\.fractions: .* of 4 real pairs give \[0, 1, 2\] pairs"):
        subset_sizes(ladder, 4)
    ladder.cfg.curve.fractions = [0.3, 0.31]
    with pytest.raises(ConfigError, match="a size of its own"):
        subset_sizes(ladder, 10)


def test_curve_stages_can_be_forced_by_name():
    cfg = load_pipeline_config(ROOT / "configs/toy.yaml")
    check_force(cfg, {"data.curve1.en-de", "model.curve2.de-en", "en-de.curve3"})
    with pytest.raises(ConfigError, match="no stage 'model.curve.en-de'"):
        check_force(cfg, {"model.curve.en-de"})


def test_shipped_configs_switch_the_curve_as_documented():
    assert load_pipeline_config(ROOT / "configs/multi30k.yaml").curve.enabled
    assert not load_pipeline_config(ROOT / "configs/quickstart.yaml").curve.enabled


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


@pytest.mark.slow
def test_curve_trains_nested_subsets_reuses_the_baseline_and_puts_the_worth_on_the_leaderboard(toy_distill_curve_run,
                                                                                              tmp_path, capsys):
    config, run, first_out, first_err = toy_distill_curve_run  # en-de, distillation and the curve on
    first = SimpleNamespace(out=first_out, err=first_err)

    # Nested seeded subsets of the real pairs, aligned, smallest first.
    train_en = set(_lines(run / "data.curve2.en-de/train.en.txt"))
    small_en, small_de = _lines(run / "data.curve1.en-de/train.en.txt"), _lines(run / "data.curve1.en-de/train.de.txt")
    assert len(small_en) == len(small_de) == 375 and len(train_en) == 750 and set(small_en) < train_en
    # The full-data point is the baseline model: trained once, never again for the curve.
    assert first.err.count("[model.fwd.en-de] running (") == 1
    assert "[model.curve1.en-de] running (" in first.err and "[en-de.curve2] running (" in first.err
    points = [json.loads(line) for line in _lines(run / "en-de/curve/results.jsonl")]
    assert [p["system"] for p in points] == ["curve1", "curve2", "curve-full"]
    assert [p["extra"]["real_pairs"] for p in points] == [375, 750, 1500]
    baseline = json.loads(_lines(run / "en-de/results.jsonl")[0])
    assert points[-1]["hyp_path"] == baseline["hyp_path"] and points[-1]["bleu"] == baseline["bleu"]
    assert all(p["decode"]["method"] == "greedy" for p in points)  # decoded exactly like the baseline rung

    # The toy models are barely trained, so whether their curve rises is not up to the test. Make it rise by
    # construction: the smaller points' outputs are cut back (empty lines score nothing), then rerun: every
    # stage is cached, only the reports are recomputed.
    base_hyps = _lines(Path(baseline["hyp_path"]))
    for k, keep in ((1, len(base_hyps) // 4), (2, len(base_hyps) // 2)):
        path = run / f"en-de.curve{k}/hyps.test_2016_flickr.txt"
        path.write_text("\n".join(base_hyps[:keep] + [""] * (len(base_hyps) - keep)) + "\n", encoding="utf-8")
        val = run / f"en-de.curve{k}/hyps.val.txt"
        val_base = _lines(run / "en-de.baseline/hyps.val.txt")
        val.write_text("\n".join(val_base[:keep // 4] + [""] * (len(val_base) - keep // 4)) + "\n", encoding="utf-8")
    assert decade_main(["run", str(config), "--out", str(run)]) == 0
    second = capsys.readouterr()
    assert "running (" not in second.err
    report = json.loads((run / "en-de/curve/exchange.json").read_text())
    assert "error" not in report and report["form"]["on"] == "val"
    result = report["sets"]["test_2016_flickr"]["bleu"]
    assert [p["pairs"] for p in result["points"]] == [375, 750, 1500]
    records = {r["system"]: r for r in map(json.loads, _lines(run / "en-de/results.jsonl"))}
    for name, rec in records.items():
        worth = rec["extra"].get("exchange")
        assert (worth is not None) == rec["extra"]["kept"], name  # kept rungs only
        if worth:
            assert {k: worth["bleu"][k] for k in result["steps"][name]} == result["steps"][name]
            assert set(worth) == {"bleu", "chrf"} and worth["bleu"]["form"] == report["form"]["chosen"]
    assert "Worth x real pairs [95% CI]" in second.out and "## Learning curve: en-de" in second.out
    assert "held-out largest point" in second.out
    assert (run / "en-de/curve/exchange_en-de_test_2016_flickr.png").stat().st_size > 10_000
    csv_head = _lines(run / "en-de/leaderboard/leaderboard.csv")[0]
    assert csv_head.endswith("worth_multiple,worth_ci_low,worth_ci_high,worth_pairs,worth_extrapolation")

    # Published, the curve's records re-score from their copied hypotheses; its fits and plots travel along.
    from evals.cli import main as evals_main

    published = tmp_path / "published"
    assert decade_main(["publish", str(run), "--to", str(published), "--blind-to", str(published / "blind")]) == 0
    assert evals_main(["verify", str(published / "en-de/curve/results.jsonl")]) == 0
    assert {p.name for p in (published / "en-de/curve").iterdir()} >= {
        "results.jsonl", "exchange.json", "curve.md", "exchange_en-de_test_2016_flickr.png", "hyps"}
