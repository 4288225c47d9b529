"""Every Translator in the tree (and every Metered scorer that is not one) has what the protocol
declares, with the documented meaning: callers use the members directly, never probe for them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from types import SimpleNamespace

import pytest
import torch
from transformers import PreTrainedTokenizerBase

from core_seq2seq.search import DecodeCounter
from core_seq2seq.translator import DecodeSettings, HFSeq2SeqTranslator, LSTMTranslator, Metered, Translator

SRC, TGT = "The dog sees a cat.", "Der Hund sieht eine Katze."
COUNTS = {"decoder_row_steps": 12, "encoder_token_steps": 5}


def marian(toy):
    from transformers import MarianConfig, MarianMTModel

    tok = toy.tokenizer
    torch.manual_seed(0)
    config = MarianConfig(vocab_size=len(tok), d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                          decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=64,
                          pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                          decoder_start_token_id=tok.pad_token_id, forced_eos_token_id=None)
    return HFSeq2SeqTranslator(MarianMTModel(config), tok, "en", "de")


def replay(toy, tmp_path):
    from synth.backtranslate import ReplayTranslator

    (tmp_path / "synthetic.json").write_text(json.dumps({"src_lang": "de", "tgt_lang": "en"}))
    (tmp_path / "synthetic.jsonl").write_text(json.dumps({"id": 1, "k": 0, "src": TGT, "tgt": SRC, "logprob": -2.0,
                                                          "length": 7}) + "\n")
    return ReplayTranslator(tmp_path / "synthetic.jsonl")


def reranked(toy, tmp_path):
    from inference_compute.preference import RerankedTranslator

    return RerankedTranslator(toy, 3, {"fwd_per_token": 1.0})


def fake_refiner(toy, tmp_path):
    from test_agents import SourceOnlyRefiner

    return SourceOnlyRefiner(toy)


# name: (make(toy_en_de, tmp_path), has a counter, gives FLOPs, gives token log-probs, ensemble size)
TRANSLATORS = {
    "LSTMTranslator": (lambda toy, tmp: toy, True, True, True, 1),
    "LSTMTranslator ensemble": (lambda toy, tmp: LSTMTranslator(toy.models * 2, toy.tokenizer, "en", "de"), True, True,
                                True, 2),
    "HFSeq2SeqTranslator": (lambda toy, tmp: marian(toy), True, False, False, 1),
    "RerankedTranslator": (reranked, False, False, True, 0),
    "ReplayTranslator": (replay, False, False, False, 0),
    "SourceOnlyRefiner (tests)": (fake_refiner, True, False, False, 1),
}


@pytest.mark.parametrize("name", TRANSLATORS)
def test_every_translator_has_the_whole_protocol(name, toy_en_de, tmp_path):
    make, counted, has_flops, has_token_logprobs, n_models = TRANSLATORS[name]
    t = make(toy_en_de, tmp_path)
    assert isinstance(t, Translator) and isinstance(t, Metered)
    assert isinstance(t.src_lang, str) and isinstance(t.tgt_lang, str) and t.src_lang != t.tgt_lang
    assert isinstance(t.counter, DecodeCounter) if counted else t.counter is None
    assert isinstance(t.members, Sequence) and len(t.members) == 0  # each counts its own work (or none)
    assert isinstance(t.models, Sequence) and len(t.models) == n_models
    assert all(isinstance(m, torch.nn.Module) for m in t.models)
    flops = t.flops(COUNTS)
    if has_flops:
        assert isinstance(flops, float) and flops > 0
        assert t.flops(DecodeCounter(**COUNTS)) == flops  # a counter or its delta as a dict
    else:
        assert flops is None
    assert t.tokenizer is None or isinstance(t.tokenizer, PreTrainedTokenizerBase)
    token_lp = t.token_logprobs([SRC], [TGT])
    if not has_token_logprobs:
        assert token_lp is None
        return
    assert t.tokenizer is not None  # the critic reads the tokens' pieces through it
    (total, length), = t.score([SRC], [TGT])
    assert len(token_lp) == 1 and len(token_lp[0]) == length  # every target token, </s> last
    assert sum(token_lp[0]) == pytest.approx(total, abs=1e-4)


def test_ensemble_flops_charge_every_member(toy_en_de):
    """An ensemble's counter counts each member's rows, and flops() turns them into the ensemble's cost."""
    single, double = toy_en_de, LSTMTranslator(toy_en_de.models * 2, toy_en_de.tokenizer, "en", "de")
    rows = {k: v * len(double.models) for k, v in COUNTS.items()}
    assert double.flops(rows) == pytest.approx(2 * single.flops(COUNTS))


def test_scorers_that_are_not_translators_are_metered(toy_en_de, toy_de_en):
    from agents.refiner import RefinerView
    from inference_compute.features import MeanScorer
    from inference_compute.lm import TargetLM

    lm = TargetLM(toy_en_de)
    assert isinstance(lm, Metered) and not isinstance(lm, Translator)  # it scores targets alone
    assert lm.counter is toy_en_de.counter and lm.models == toy_en_de.models and not lm.members
    assert lm.flops(COUNTS) == toy_en_de.flops(COUNTS) and (lm.src_lang, lm.tgt_lang) == ("en", "de")

    mean = MeanScorer([toy_en_de, toy_en_de])
    assert isinstance(mean, Metered) and not isinstance(mean, Translator)  # it cannot merge n-best lists
    assert mean.counter is None and mean.flops(COUNTS) is None and not mean.models
    assert list(mean.members) == [toy_en_de, toy_en_de] and (mean.src_lang, mean.tgt_lang) == ("en", "de")

    view = RefinerView(toy_de_en, DecodeSettings())
    assert isinstance(view, Metered) and not isinstance(view, Translator)
    assert view.counter is toy_de_en.counter and view.flops(COUNTS) == toy_de_en.flops(COUNTS) and not view.members


def test_an_object_missing_a_declared_member_is_not_a_translator(toy_en_de):
    """isinstance checks the whole protocol: a translate/score pair alone is not enough."""
    bare = SimpleNamespace(src_lang="en", tgt_lang="de", translate=toy_en_de.translate, score=toy_en_de.score)
    assert not isinstance(bare, Translator)
    whole = SimpleNamespace(**vars(bare), tokenizer=None, counter=None, members=(), models=(),
                            flops=lambda counts: None, token_logprobs=lambda s, t, batch_size=64: None)
    assert isinstance(whole, Translator)
    for name in ("tokenizer", "counter", "members", "models", "flops", "token_logprobs"):
        partial = SimpleNamespace(**{k: v for k, v in vars(whole).items() if k != name})
        assert not isinstance(partial, Translator), name
