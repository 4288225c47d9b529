"""Result records: building, significance ladder, schema checks on write and read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evals.errors import EvalsInputError
from evals.records import (ResultRecord, append_records, attach_significance, config_hash, make_record,
                           read_records, write_records)
from evals.textio import read_lines

FIX = Path(__file__).parent / "fixtures" / "evals"
ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "benchmarks" / "results" / "example_results.jsonl"
REF, A, B, TOK = (read_lines(FIX / n) for n in ("ref.de", "hyp_a.de", "hyp_b.de", "ref.lc.norm.tok.de"))


@pytest.fixture(scope="module")
def ladder():
    records = [
        make_record(name, stage, "en-de", "fixture", hyps, REF, TOK, hyp_path=f"tests/fixtures/evals/{file}",
                    compute={"train_seconds": 10.0, "decode_seconds": 1.5, "forward_calls": 300, "device": "cpu"},
                    config={"beam": beam, "model": "m"}, n_samples=200, ref_path="tests/fixtures/evals/ref.de")
        for name, stage, hyps, file, beam in (("sys-a", "baseline", A, "hyp_a.de", 1),
                                              ("sys-same", "beam", list(A), "hyp_a.de", 5),
                                              ("sys-b", "rerank", B, "hyp_b.de", 5))
    ]
    return attach_significance(records, ["sys-a", "sys-same", "sys-b"],
                               {"sys-a": A, "sys-same": A, "sys-b": B}, REF, n_samples=200, seed=4242)


def test_make_record_scores_and_fills(ladder):
    a = ladder[0]
    assert round(a.bleu, 4) == 36.6287 and round(a.chrf, 4) == 65.5279 and round(a.tok_bleu, 4) == 38.6209
    assert a.bleu_ci[0] < a.bleu < a.bleu_ci[1] and a.tok_bleu_ci is not None
    assert a.compute == {"train_seconds": 10.0, "decode_seconds": 1.5, "forward_calls": 300, "device": "cpu"}
    assert a.config_hash == config_hash({"model": "m", "beam": 1}) and len(a.config_hash) == 16
    assert a.n_lines == 16 and a.trg_lang == "de"


def test_attach_significance(ladder):
    a, same, b = ladder
    assert a.p_vs_prev is None and a.p_vs_baseline is None
    assert same.p_vs_prev == same.p_vs_baseline == 1.0  # identical output
    assert b.p_vs_prev < 0.05 and b.p_vs_baseline < 0.05
    assert b.seed == 4242 and b.significance["prev"] == "sys-same" and b.significance["baseline"] == "sys-a"
    lo, hi = b.significance["delta_vs_prev_ci"]
    assert lo < b.significance["delta_vs_prev"] < hi and lo > 0


def test_round_trip_and_append(tmp_path, ladder):
    path = tmp_path / "r.jsonl"
    write_records(path, ladder[:2])
    append_records(path, ladder[2:])
    back = read_records(path)
    assert back == list(ladder)
    assert all(isinstance(r, ResultRecord) for r in back)


def test_example_results_file_is_valid_and_labelled():
    records = read_records(EXAMPLE)
    assert len(records) == 12
    assert all("example" in r.system and r.extra.get("example") for r in records)
    for r in records:
        assert (ROOT / r.hyp_path).is_file() and r.hyp_path.startswith("tests/fixtures/evals/")


def _valid_line() -> dict:
    return json.loads(EXAMPLE.read_text(encoding="utf-8").splitlines()[0])


def _mutate(**changes):
    def apply(d):
        for key, value in changes.items():
            if value is _DROP:
                d.pop(key)
            elif "." in key:
                outer, inner = key.split(".")
                if value is _DROP:
                    d[outer].pop(inner)
                else:
                    d[outer][inner] = value
            else:
                d[key] = value
        return d
    return apply


_DROP = object()


def _drop_sub(outer, inner):
    def apply(d):
        d[outer].pop(inner)
        return d
    return apply


BAD_RECORDS = [
    (_mutate(compute=_DROP), "missing required key(s): compute"),
    (_mutate(hyp_path=_DROP, tok_bleu=_DROP), "missing required key(s): tok_bleu, hyp_path"),
    (_drop_sub("compute", "forward_calls"), "'compute' is missing key(s): forward_calls"),
    (_mutate(**{"compute.decode_seconds": "fast"}), "'compute.decode_seconds' must be a finite number"),
    (_mutate(**{"compute.forward_calls": 1.5}), "'compute.forward_calls' must be an integer"),
    (_mutate(bleu="36.1"), "field 'bleu' must be a finite number"),
    (_mutate(bleu=True), "field 'bleu' must be a finite number"),
    (_mutate(bleu=140.0), "field 'bleu' must be <= 100"),
    (_mutate(bleu_ci=[40.0, 30.0]), "low must not exceed high"),
    (_mutate(bleu_ci=[30.0]), "'bleu_ci' must be a list [low, high]"),
    (_mutate(p_vs_prev=1.5), "field 'p_vs_prev' must be <= 1"),
    (_mutate(pair="english to german"), "field 'pair' must look like 'en-de'"),
    (_mutate(system=""), "field 'system' must be a non-empty string"),
    (_mutate(bleu_score=1.0), "unknown key(s): bleu_score (put additional information under 'extra')"),
    (_drop_sub("signature", "bleu"), "'signature' is missing key 'bleu'"),
    (_mutate(**{"signature.tok_bleu": None}), "'signature.tok_bleu' must be given when 'tok_bleu' is"),
    (lambda d: [d], "a record must be a JSON object, got list"),
]


@pytest.mark.parametrize("mutate, message", BAD_RECORDS)
def test_read_rejects_bad_record_naming_file_and_line(tmp_path, mutate, message):
    good = json.dumps(_valid_line())
    bad = json.dumps(mutate(_valid_line()))
    path = tmp_path / "results.jsonl"
    path.write_text(f"{good}\n{good}\n{bad}\n", encoding="utf-8")
    with pytest.raises(EvalsInputError) as err:
        read_records(path)
    assert str(err.value).startswith(f"{path}:3: ")
    assert message in str(err.value)


@pytest.mark.parametrize("text, message", [
    ('{"system": "x"\n', ":1: not valid JSON"),
    ("", ": file is empty"),
    ("\n\n", ": contains no records"),
])
def test_read_rejects_bad_files(tmp_path, text, message):
    path = tmp_path / "results.jsonl"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(EvalsInputError, match=message):
        read_records(path)


def test_incomplete_last_line_is_an_error(tmp_path):
    text = EXAMPLE.read_text(encoding="utf-8")
    path = tmp_path / "results.jsonl"
    cut = text.index("\n", len(text) // 3) + 40  # 40 characters into a line, as if a writer died there
    path.write_text(text[:cut], encoding="utf-8")
    line = text[:cut].count("\n") + 1
    with pytest.raises(EvalsInputError, match=rf"results\.jsonl:{line}: not valid JSON"):
        read_records(path)


def test_write_refuses_invalid_record_and_writes_nothing(tmp_path, ladder):
    bad = ResultRecord(**{**ladder[0].to_dict(), "chrf": float("nan")})
    path = tmp_path / "out.jsonl"
    with pytest.raises(EvalsInputError, match=r"out\.jsonl:2: invalid record for system 'sys-a': field 'chrf'"):
        write_records(path, [ladder[0], bad])
    assert not path.exists()


def test_attach_significance_checks_its_ladder(ladder):
    with pytest.raises(ValueError, match="no record or hypotheses for: ghost"):
        attach_significance(ladder, ["sys-a", "ghost"], {"sys-a": A}, REF)


def test_compare_to_tests_a_row_against_a_named_earlier_row(ladder):
    # The agent case: "sys-b" started from "sys-a", so its p_vs_prev is against sys-a, not sys-same.
    out = attach_significance(ladder, ["sys-a", "sys-same", "sys-b"], {"sys-a": A, "sys-same": A, "sys-b": B},
                              REF, n_samples=200, seed=4242, compare_to={"sys-b": "sys-a"})
    b = out[2]
    assert b.significance["prev"] == "sys-a" and b.p_vs_prev == b.p_vs_baseline
    assert b.significance["delta_vs_prev"] == b.significance["delta_vs_baseline"]
    with pytest.raises(ValueError, match="must come after"):
        attach_significance(ladder, ["sys-a", "sys-same", "sys-b"], {"sys-a": A, "sys-same": A, "sys-b": B},
                            REF, n_samples=200, compare_to={"sys-a": "sys-b"})
