"""Metric values pinned to the sacrebleu command line on committed fixtures."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest
from sacrebleu.metrics import BLEU

from evals.errors import EvalsInputError
from evals.metrics import (chrf_matrix, corpus_bleu, score_corpus, sentence_bleu, sentence_chrf, sentence_scores,
                           tokenize_lc)
from evals.textio import read_lines

FIX = Path(__file__).parent / "fixtures" / "evals"
ROOT = Path(__file__).resolve().parents[1]
SIG_BLEU = "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0"
SIG_CHRF = "nrefs:1|case:mixed|eff:yes|nc:6|nw:2|space:no|version:2.6.0"
SIG_TER = "nrefs:1|case:lc|tok:tercom|norm:no|punct:yes|asian:no|version:2.6.0"

# Values printed by sacrebleu 2.6.0's command line, run in tests/fixtures/evals:
#   sacrebleu ref.de -i hyp_a.de -m bleu chrf ter --chrf-word-order 2 -w 4
#   sacrebleu ref.de -i hyp_b.de -m bleu chrf ter --chrf-word-order 2 -w 4
PINNED = [
    ("hyp_a.de", 36.6287, 65.5279, 43.4211),
    ("hyp_b.de", 80.0186, 90.6000, 11.1842),
]


def lines(name: str) -> list[str]:
    return read_lines(FIX / name)


@pytest.mark.parametrize("hyp, bleu, chrf, ter", PINNED)
def test_corpus_scores_match_sacrebleu_cli(hyp, bleu, chrf, ter):
    got = score_corpus(lines(hyp), lines("ref.de"))
    assert round(got["bleu"], 4) == bleu
    assert round(got["chrf"], 4) == chrf
    assert round(got["ter"], 4) == ter
    assert got["signature"] == {"bleu": SIG_BLEU, "chrf": SIG_CHRF, "ter": SIG_TER, "tok_bleu": None}
    assert got["tok_bleu"] is None and got["n_lines"] == 16
    assert round(corpus_bleu(lines(hyp), lines("ref.de")), 4) == bleu  # BLEU alone, what val's choices use


def test_tok_lc_bleu_equals_independent_computation():
    got = score_corpus(lines("hyp_a.de"), lines("ref.de"), tok_refs=lines("ref.lc.norm.tok.de"), trg_lang="de")
    # Independent: sacrebleu with tokenize="none" on the hand-tokenised, lower-cased fixture files.
    # Its command line prints the same: sacrebleu ref.lc.norm.tok.de -i hyp_a.lc.norm.tok.de -m bleu
    #   --tokenize none --lowercase --force -w 4   ->  38.6209
    independent = BLEU(tokenize="none", force=True).corpus_score(lines("hyp_a.lc.norm.tok.de"),
                                                                 [lines("ref.lc.norm.tok.de")]).score
    assert got["tok_bleu"] == pytest.approx(independent, abs=1e-9)
    assert round(got["tok_bleu"], 4) == 38.6209
    assert got["signature"]["tok_bleu"].startswith("nrefs:1|case:lc|eff:no|tok:none|smooth:exp|version:2.6.0|pretok:")


@pytest.mark.parametrize("raw, tok", [("ref.de", "ref.lc.norm.tok.de"), ("hyp_a.de", "hyp_a.lc.norm.tok.de")])
def test_tokenize_lc_matches_hand_tokenised_fixture(raw, tok):
    assert tokenize_lc(lines(raw), "de") == lines(tok)


@pytest.mark.parametrize("text, lang, expected", [
    ("Ein Café namens „Zur Post“.", "de", "ein café namens &quot; zur post &quot; ."),
    ("A girl's kite, stuck.", "en", "a girl &apos;s kite , stuck ."),
    ("Lidé se účastní J. P. Morgan Corporate Challenge.", "cs", "lidé se účastní j. p. morgan corporate challenge ."),
])
def test_tokenize_lc_conventions(text, lang, expected):
    assert tokenize_lc(text, lang) == expected


MULTI30K = ROOT.parent / "shared" / "data" / "multi30k" / "task1"


@pytest.mark.skipif(not MULTI30K.is_dir(), reason="Multi30K copy not present (optional check)")
@pytest.mark.parametrize("lang", ["de", "en"])
def test_tokenize_lc_reproduces_multi30k_tok_files(lang):
    raw = gzip.decompress((MULTI30K / "raw" / f"test_2016_flickr.{lang}.gz").read_bytes()).decode().splitlines()
    tok = (MULTI30K / "tok" / f"test_2016_flickr.lc.norm.tok.{lang}").read_text(encoding="utf-8").splitlines()
    mismatches = sum(a != b for a, b in zip(tokenize_lc(raw, lang), tok))
    assert len(raw) == len(tok) == 1000 and mismatches <= 1


def test_sentence_scores():
    ref = "Zwei Kinder spielen im Park mit einem Ball."
    assert sentence_chrf(ref, ref) == pytest.approx(100.0)
    assert sentence_bleu(ref, ref) == pytest.approx(100.0)
    worse = "Zwei Kinder spielen mit einem Ball in dem Park."
    assert 0 < sentence_chrf(worse, ref) < 100 and 0 < sentence_bleu(worse, ref) < 100
    assert sentence_scores([worse, ref], [ref, ref], "chrf") == [sentence_chrf(worse, ref), sentence_chrf(ref, ref)]


def test_chrf_matrix_equals_sentence_chrf():
    hyps = lines("hyp_a.de")[:6] + lines("hyp_b.de")[:6] + [""]
    refs = lines("ref.de")[:4]
    assert chrf_matrix(hyps) == [[sentence_chrf(h, r) for r in hyps] for h in hyps]
    assert chrf_matrix(hyps, refs) == [[sentence_chrf(h, r) for r in refs] for h in hyps]


@pytest.mark.parametrize("hyps, refs, tok_refs, message", [
    ([], [], None, "no hypotheses"),
    (["a"], ["a", "b"], None, "1 hypotheses but 2 references"),
    (["a"], ["a"], ["a", "b"], "tokenised references"),
])
def test_score_corpus_rejects_misaligned_input(hyps, refs, tok_refs, message):
    with pytest.raises(EvalsInputError, match=message):
        score_corpus(hyps, refs, tok_refs)


def test_example_fixture_is_not_empty():
    assert os.path.getsize(FIX / "example" / "test.de") > 1000
