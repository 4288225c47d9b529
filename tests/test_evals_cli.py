"""The command line: outputs, and a clear error (file and line, exit 2, no partial output) for bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from evals.cli import main

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "tests" / "fixtures" / "evals"
EXAMPLE = ROOT / "benchmarks" / "results" / "example_results.jsonl"


@pytest.fixture
def files(tmp_path):
    for name in ("ref.de", "hyp_a.de", "hyp_b.de", "src.en", "ref.lc.norm.tok.de"):
        shutil.copy(FIX / name, tmp_path / name)
    return tmp_path


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_score_text_and_json(files, capsys):
    code, out, _ = run(capsys, "score", "--hyp", files / "hyp_a.de", "--ref", files / "ref.de",
                       "--tok-ref", files / "ref.lc.norm.tok.de", "--n-samples", 200)
    assert code == 0
    assert "BLEU          36.63" in out and "chrF++        65.53" in out and "TER           43.42" in out
    assert "tok-lc BLEU   38.62" in out and "nrefs:1|case:mixed|eff:no|tok:13a" in out
    code, out, _ = run(capsys, "score", "--hyp", files / "hyp_b.de", "--ref", files / "ref.de", "--json", "--no-ci")
    assert code == 0 and round(json.loads(out)["bleu"], 4) == 80.0186


def test_score_writes_sentences_and_record(files, capsys):
    tsv, results = files / "s.tsv", files / "r.jsonl"
    code, _, _ = run(capsys, "score", "--hyp", files / "hyp_a.de", "--ref", files / "ref.de", "--src", files / "src.en",
                     "--sentences", tsv, "--record", results, "--system", "a", "--stage", "baseline",
                     "--pair", "en-de", "--test-set", "fixture", "--n-samples", 200)
    assert code == 0
    rows = tsv.read_text(encoding="utf-8").splitlines()
    assert len(rows) == 17 and rows[0].endswith("\tsrc")
    record = json.loads(results.read_text(encoding="utf-8"))
    assert record["system"] == "a" and record["compute"]["train_seconds"] is None


def test_compare(files, capsys):
    code, out, _ = run(capsys, "compare", files / "hyp_a.de", files / "hyp_b.de", "--ref", files / "ref.de",
                       "--src", files / "src.en", "--names", "A", "B", "--n-samples", 200, "--top", 2)
    assert code == 0
    assert "## B vs A (16 segments, 16 differ)" in out
    bleu_row = next(line for line in out.splitlines() if line.startswith("| BLEU |"))
    assert bleu_row.startswith("| BLEU | 36.63 | 80.02 | +43.39 [") and bleu_row.endswith("* |")
    assert "### Where B beats A most" in out and "- SRC: " in out and "- REF: " in out


def test_leaderboard_and_verify(tmp_path, capsys):
    # Plots are checked in test_evals_leaderboard.py; skipping them here keeps the suite fast.
    code, out, _ = run(capsys, "leaderboard", EXAMPLE, "--out", tmp_path / "board", "--no-plots")
    assert code == 0 and out.startswith("## Leaderboard") and (tmp_path / "board" / "leaderboard.csv").exists()
    code, out, _ = run(capsys, "verify", EXAMPLE)
    assert code == 0 and out.count("ok   ") == 12


def test_verify_detects_changed_hypotheses(tmp_path, capsys):
    hyp = tmp_path / "h.de"
    hyp.write_text((FIX / "hyp_a.de").read_text(encoding="utf-8").replace("Hund", "Katze"), encoding="utf-8")
    results = tmp_path / "r.jsonl"
    run(capsys, "score", "--hyp", FIX / "hyp_a.de", "--ref", FIX / "ref.de", "--record", results, "--system", "a",
        "--stage", "baseline", "--pair", "en-de", "--test-set", "t", "--n-samples", 100)
    results.write_text(results.read_text().replace(str(FIX / "hyp_a.de"), str(hyp)))
    code, out, _ = run(capsys, "verify", results)
    assert code == 1 and "FAIL" in out and "hypothesis file changed" in out


# --- bad input ---------------------------------------------------------------------------

def _record_lines() -> list[str]:
    return EXAMPLE.read_text(encoding="utf-8").splitlines()


def _bad_results(kind: str) -> str:
    lines = _record_lines()[:3]
    if kind == "malformed":
        lines[1] = lines[1][:-20]
    elif kind == "missing_key":
        d = json.loads(lines[2])
        del d["compute"]
        lines[2] = json.dumps(d)
    elif kind == "missing_compute":
        d = json.loads(lines[2])
        del d["compute"]["forward_calls"]
        lines[2] = json.dumps(d)
    elif kind == "wrong_type":
        d = json.loads(lines[1])
        d["bleu"] = "high"
        lines[1] = json.dumps(d)
    return "\n".join(lines) + "\n"


BAD_SCORE = [
    # (what to break, argv builder, expected message pieces)
    ("short_hyp", lambda d: ["score", "--hyp", d / "hyp_a.de", "--ref", d / "ref.de"],
     ["ref.de:16: line counts differ", "hyp_a.de has 15"]),
    ("empty_hyp", lambda d: ["score", "--hyp", d / "hyp_a.de", "--ref", d / "ref.de"], ["hyp_a.de: file is empty"]),
    ("bad_utf8_ref", lambda d: ["score", "--hyp", d / "hyp_a.de", "--ref", d / "ref.de"],
     ["ref.de:3: invalid UTF-8"]),
    ("short_src", lambda d: ["score", "--hyp", d / "hyp_a.de", "--ref", d / "ref.de", "--src", d / "src.en"],
     ["ref.de:16: line counts differ", "src.en has 15"]),
    ("short_tok_ref", lambda d: ["score", "--hyp", d / "hyp_a.de", "--ref", d / "ref.de", "--tok-ref",
                                 d / "ref.lc.norm.tok.de"], ["line counts differ", "ref.lc.norm.tok.de has 15"]),
    ("short_b", lambda d: ["compare", d / "hyp_a.de", d / "hyp_b.de", "--ref", d / "ref.de"],
     ["line counts differ", "hyp_b.de has 15"]),
    ("missing", lambda d: ["score", "--hyp", d / "nope.de", "--ref", d / "ref.de"], ["nope.de: no such file"]),
]


def _break(d: Path, kind: str) -> None:
    def cut(name):
        lines = (d / name).read_text(encoding="utf-8").splitlines()[:-1]
        (d / name).write_text("\n".join(lines) + "\n", encoding="utf-8")

    if kind == "short_hyp":
        cut("hyp_a.de")
    elif kind == "empty_hyp":
        (d / "hyp_a.de").write_bytes(b"")
    elif kind == "bad_utf8_ref":
        data = (d / "ref.de").read_bytes().split(b"\n")
        data[2] = data[2][:10] + b"\xc3\x28" + data[2][10:]
        (d / "ref.de").write_bytes(b"\n".join(data))
    elif kind == "short_src":
        cut("src.en")
    elif kind == "short_tok_ref":
        cut("ref.lc.norm.tok.de")
    elif kind == "short_b":
        cut("hyp_b.de")


@pytest.mark.parametrize("kind, argv, pieces", BAD_SCORE, ids=[c[0] for c in BAD_SCORE])
def test_bad_text_input(files, capsys, kind, argv, pieces):
    _break(files, kind)
    outputs = ["--sentences", files / "out.tsv"] if argv(files)[0] == "score" else ["--out", files / "out.md"]
    code, out, err = run(capsys, *argv(files), *outputs)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and "Traceback" not in err
    for piece in pieces:
        assert piece in err
    assert not (files / "out.tsv").exists() and not (files / "out.md").exists()


BAD_RESULTS = [
    ("malformed", "results.jsonl:2: not valid JSON"),
    ("missing_key", "results.jsonl:3: record is missing required key(s): compute"),
    ("missing_compute", "results.jsonl:3: field 'compute' is missing key(s): forward_calls"),
    ("wrong_type", "results.jsonl:2: field 'bleu' must be a finite number"),
    ("empty", "results.jsonl: file is empty"),
]


@pytest.mark.parametrize("kind, message", BAD_RESULTS, ids=[c[0] for c in BAD_RESULTS])
def test_bad_results_file(tmp_path, capsys, kind, message):
    results = tmp_path / "results.jsonl"
    results.write_text("" if kind == "empty" else _bad_results(kind), encoding="utf-8")
    good = tmp_path / "good.jsonl"
    shutil.copy(EXAMPLE, good)
    code, out, err = run(capsys, "leaderboard", good, results, "--out", tmp_path / "board")
    assert code == 2 and out == "" and "Traceback" not in err
    assert err.startswith("error: ") and message in err
    assert not (tmp_path / "board").exists()  # nothing written, not even from the good file


def test_python_m_evals_exit_status_and_message(tmp_path):
    (tmp_path / "h.de").write_bytes(b"eins\nzwei \xff\n")
    (tmp_path / "r.de").write_text("eins\nzwei\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "evals", "score", "--hyp", str(tmp_path / "h.de"),
                           "--ref", str(tmp_path / "r.de")], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == f"error: {tmp_path / 'h.de'}:2: invalid UTF-8 (byte 0xff at byte 6 of the line)\n"
