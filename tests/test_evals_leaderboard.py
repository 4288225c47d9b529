"""The leaderboard rendered from the committed example results file."""

from __future__ import annotations

import csv
import dataclasses
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from evals.leaderboard import build_rows, group_records, render_leaderboard
from evals.plots import compute_axis, pareto_front
from evals.records import read_records

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "benchmarks" / "results" / "example_results.jsonl"


@pytest.fixture(scope="module")
def records():
    return read_records(EXAMPLE)


@pytest.fixture(scope="module")
def rendered(records, tmp_path_factory):
    out = tmp_path_factory.mktemp("board")
    return render_leaderboard(records, out), out


def test_markdown_tables(rendered, records):
    markdown, out = rendered
    assert (out / "leaderboard.md").read_text(encoding="utf-8") == markdown
    for pair in ("en-de", "de-en"):
        assert f"### {pair} · example_test (200 segments)" in markdown
    rows = [line for line in markdown.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(rows) == len(records) == 12
    first, second = rows[0].split(" | "), rows[1].split(" | ")
    assert first[1] == "example-baseline-greedy" and first[6] == "–"
    assert second[6].startswith("+") and second[6].endswith("*")  # lift with CI and significance mark
    assert "(n.s.)" in markdown  # the example ladder has one step that does not help significantly
    assert "`nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0`" in markdown
    assert "paired bootstrap resampling, 1000 samples, seed 12345" in markdown


def test_csv_and_json(rendered, records):
    _, out = rendered
    with open(out / "leaderboard.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 12
    assert float(rows[1]["bleu"]) == pytest.approx(records[1].bleu)
    assert float(rows[1]["p_vs_prev"]) == pytest.approx(records[1].p_vs_prev)
    assert rows[0]["delta_vs_prev"] == "" and float(rows[1]["delta_vs_prev_ci_low"]) > 0
    data = json.loads((out / "leaderboard.json").read_text(encoding="utf-8"))
    assert [(g["pair"], g["test_set"], len(g["rows"])) for g in data["groups"]] == [
        ("en-de", "example_test", 6), ("de-en", "example_test", 6)]


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize("name", ["waterfall_en-de_example_test.png", "compute_en-de_example_test.png",
                                  "waterfall_de-en_example_test.png", "compute_de-en_example_test.png"])
def test_pngs_written_and_not_trivial(rendered, name):
    import matplotlib.image

    _, out = rendered
    data = (out / name).read_bytes()
    width, height = _png_size(data)
    assert width > 600 and height > 400 and len(data) > 20_000
    pixels = matplotlib.image.imread(out / name)[::3, ::3, :3]
    assert np.std(pixels) > 0.05  # not a blank canvas
    colours = np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 50  # bars, text, anti-aliased lines


def test_committed_docs_are_current(rendered):
    markdown, out = rendered
    docs = ROOT / "docs" / "example_leaderboard"
    hint = ("regenerate: python -m evals leaderboard benchmarks/results/example_results.jsonl "
            "--out docs/example_leaderboard")
    assert (docs / "leaderboard.md").read_text(encoding="utf-8") == markdown, hint
    assert (docs / "leaderboard.csv").read_bytes() == (out / "leaderboard.csv").read_bytes(), hint


def test_markdown_only_without_out_dir(records, tmp_path):
    assert render_leaderboard(records).startswith("## Leaderboard")


def test_later_duplicate_replaces_earlier(records):
    rerun = dataclasses.replace(records[0], bleu=10.0)
    with pytest.warns(UserWarning, match="two records for 'example-baseline-greedy'"):
        groups = group_records([*records[:6], rerun])
    (_, rows), = groups
    assert len(rows) == 6 and rows[-1].bleu == 10.0


def test_p_value_tested_against_another_row_is_flagged(records):
    reordered = [records[0], records[2], records[1]]  # bt now sits under baseline, but was tested against beam
    rows = build_rows(reordered)
    assert rows[1]["prev_mismatch"]  # its p_vs_prev was computed against a row that now comes after it
    assert not rows[1]["baseline_mismatch"] and not rows[2]["baseline_mismatch"]
    assert "†" in render_leaderboard(reordered)
    # beam was tested against the baseline, an earlier row: it is shown against that row, and says so.
    assert not rows[2]["prev_mismatch"] and rows[2]["prev_system"] == records[0].system
    assert rows[2]["delta_vs_prev"] == rows[2]["delta_vs_baseline"]
    assert f"(vs {records[0].system})" in render_leaderboard(reordered)


@pytest.mark.parametrize("points, front", [
    ([(1, 10), (2, 12), (3, 11), (4, 15)], [0, 1, 3]),
    ([(5, 20), (1, 10), (1, 12)], [2, 0]),
    ([(1, 10)], [0]),
])
def test_pareto_front(points, front):
    assert pareto_front(points) == front


def test_compute_axis_prefers_flops_then_calls():
    assert compute_axis([{"flops": 1e9, "forward_calls": 5}, {"flops": 2e9, "forward_calls": 9}]) == "flops"
    assert compute_axis([{"flops": None, "forward_calls": 5}, {"flops": 2e9, "forward_calls": 9}]) == "forward_calls"
    assert compute_axis([{"decode_seconds": None}, {"decode_seconds": None}]) is None
