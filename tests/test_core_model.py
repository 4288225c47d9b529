"""The LSTM translator: learning the toy task, search vs generate(), caches, save/load, tokenizer."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from core_seq2seq import LSTMTranslatorConfig, LSTMTranslatorForCausalLM
from core_seq2seq.data import read_multi30k
from core_seq2seq.search import Ensemble, beam_search, greedy_search
from core_seq2seq.tokenizer import decode_batch, encode_batch, lang_token_ids, train_tokenizer
from core_seq2seq.toy import toy_corpus
from core_seq2seq.translator import DecodeSettings, LSTMTranslator
from evals.metrics import score_corpus


def _toy_test_split(toy_models_dir):
    test, _ = read_multi30k("test_2016_flickr", "en", "de", root=toy_models_dir / "en_de/toy_data")
    return test


def test_toy_task_is_learned(toy_en_de, toy_models_dir):
    test = _toy_test_split(toy_models_dir)
    train, _ = read_multi30k("train", "en", "de", root=toy_models_dir / "en_de/toy_data")
    assert not set(test.src) & set(train.src), "toy test sentences must be unseen in training"
    hyps = [c[0].text for c in toy_en_de.translate(test.src, DecodeSettings(method="beam", beam_size=5))]
    assert score_corpus(hyps, test.tgt, trg_lang="de")["bleu"] >= 90.0


def _prompts(translator: LSTMTranslator, sources: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ``[source..., <2de>]`` prompts for generate()."""
    ids = encode_batch(translator.tokenizer, sources)
    L = max(len(x) for x in ids) + 1
    rows = [[translator.pad_id] * (L - len(x) - 1) + x + [translator.tag_id] for x in ids]
    input_ids = torch.tensor(rows)
    return input_ids, input_ids.ne(translator.pad_id).long()


def _own_search_inputs(translator: LSTMTranslator, sources: list[str], max_new: int):
    ids = encode_batch(translator.tokenizer, sources)
    src, lengths = translator._source_tensor(ids)
    return src, lengths, torch.full((len(ids),), max_new)


def _generated(out: torch.Tensor, prompt_len: int, eos: int, pad: int) -> list[list[int]]:
    rows = []
    for row in out[:, prompt_len:].tolist():
        rows.append([t for t in (row[:row.index(eos)] if eos in row else row) if t != pad])
    return rows


SOURCES = ["The small dog sees a red ball.", "A woman paints the old house today.", "The cat follows a bird."]


@pytest.mark.parametrize("call", [
    dict(padding=True),                                   # the HF adapter's and trl's collators' call
    dict(padding="max_length", max_length=20),
    dict(truncation=True, max_length=3),
    dict(text_target=["Ein Hund.", "Eine Katze sieht den Hund."], padding=True),
])
def test_ids_do_not_depend_on_what_transformers_left_in_the_shared_tokenizer(toy_en_de, call):
    """A tokenizer shared with transformers or trl (which leave padding/truncation switched on in its
    backend) still gives decade the exact ids: no padding inside sources, no silent truncation."""
    tok, texts = copy.deepcopy(toy_en_de.tokenizer), ["The dog sees a cat.", "A boy."]
    before = encode_batch(tok, texts)
    tok(texts, return_tensors="pt", **call)
    assert encode_batch(tok, texts) == before and 0 not in before[1]
    assert tok(texts, padding=True)["input_ids"][1][-1] == tok.pad_token_id  # transformers' own call still pads


def test_greedy_matches_generate_with_and_without_cache(toy_en_de):
    model = toy_en_de.models[0]
    input_ids, mask = _prompts(toy_en_de, SOURCES)
    kwargs = dict(max_new_tokens=20, do_sample=False, pad_token_id=toy_en_de.pad_id, eos_token_id=toy_en_de.eos_id)
    cached = model.generate(input_ids=input_ids, attention_mask=mask, use_cache=True, **kwargs)
    uncached = model.generate(input_ids=input_ids, attention_mask=mask, use_cache=False, **kwargs)
    assert torch.equal(cached, uncached)
    src, lengths, max_len = _own_search_inputs(toy_en_de, SOURCES, 20)
    own = greedy_search(Ensemble([model]), src, lengths, toy_en_de.tag_id, toy_en_de.eos_id, max_len)
    assert [h.tokens for h in own] == _generated(cached, input_ids.size(1), toy_en_de.eos_id, toy_en_de.pad_id)


def test_beam_matches_generate(toy_en_de):
    model = toy_en_de.models[0]
    input_ids, mask = _prompts(toy_en_de, SOURCES)
    for beam in (2, 5):
        kwargs = dict(max_new_tokens=20, num_beams=beam, num_return_sequences=beam, early_stopping=True,
                      length_penalty=1.0, do_sample=False, pad_token_id=toy_en_de.pad_id, eos_token_id=toy_en_de.eos_id,
                      return_dict_in_generate=True, output_scores=True)
        cached = model.generate(input_ids=input_ids, attention_mask=mask, use_cache=True, **kwargs)
        uncached = model.generate(input_ids=input_ids, attention_mask=mask, use_cache=False, **kwargs)
        assert torch.equal(cached.sequences, uncached.sequences)
        src, lengths, max_len = _own_search_inputs(toy_en_de, SOURCES, 20)
        own = beam_search(Ensemble([model]), src, lengths, toy_en_de.tag_id, toy_en_de.eos_id, max_len, beam, nbest=beam)
        hf = _generated(cached.sequences, input_ids.size(1), toy_en_de.eos_id, toy_en_de.pad_id)
        hf_scores = cached.sequences_scores.view(len(SOURCES), beam)
        for i, hyps in enumerate(own):
            assert [h.tokens for h in hyps] == hf[i * beam:(i + 1) * beam]
            assert torch.allclose(torch.tensor([h.score for h in hyps]), hf_scores[i], atol=1e-4)


def test_beam_nbest_scores_are_model_logprobs(toy_en_de):
    # In fp32, where the equality is exact: in bf16 (auto, on a CPU with avx512_bf16) a near-tie lets the
    # beam keep a second segmentation of the same words, which scoring the text tokenises the canonical
    # way (bf16's own tolerance is tested in test_core_precision.py).
    fp32 = LSTMTranslator(toy_en_de.models, toy_en_de.tokenizer, "en", "de", precision="fp32")
    nbest = fp32.translate(SOURCES[:2], DecodeSettings(method="beam", beam_size=4, nbest=4))
    for src, cands in zip(SOURCES[:2], nbest):
        assert len(cands) == 4 and len({c.text for c in cands}) == 4
        rescored = fp32.score([src] * 4, [c.text for c in cands])
        for c, (lp, n) in zip(cands, rescored):
            assert n == c.length
            assert abs(lp - c.logprob) < 1e-3


def test_sampling_is_seeded_and_batched(toy_en_de):
    settings = DecodeSettings(method="sample", num_samples=8, top_k=5, seed=7)
    a = toy_en_de.translate(SOURCES, settings)
    b = toy_en_de.translate(SOURCES, settings)
    assert [[c.text for c in s] for s in a] == [[c.text for c in s] for s in b]
    assert all(len(s) == 8 for s in a)


def test_save_load_round_trip_gives_identical_outputs(toy_en_de, tmp_path):
    model = toy_en_de.models[0]
    model.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m/model.safetensors").exists()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    assert isinstance(loaded, LSTMTranslatorForCausalLM)
    again = LSTMTranslator(loaded, toy_en_de.tokenizer, "en", "de")
    settings = DecodeSettings(method="beam", beam_size=3, nbest=3)
    first = toy_en_de.translate(SOURCES, settings)
    second = again.translate(SOURCES, settings)
    assert [[(c.text, round(c.logprob, 5)) for c in s] for s in first] == \
        [[(c.text, round(c.logprob, 5)) for c in s] for s in second]


def test_ensemble_of_one_model_twice_equals_the_model(toy_en_de):
    twice = LSTMTranslator([toy_en_de.models[0]] * 2, toy_en_de.tokenizer, "en", "de")
    settings = DecodeSettings(method="beam", beam_size=3)
    assert [c[0].text for c in twice.translate(SOURCES, settings)] == \
        [c[0].text for c in toy_en_de.translate(SOURCES, settings)]
    assert twice.counter.decoder_calls > 0


def test_ensemble_of_models_with_different_tokenizers_is_refused(toy_models_dir, tmp_path):
    import json
    import shutil

    other = tmp_path / "other"
    shutil.copytree(toy_models_dir / "en_de/best", other)
    tok = json.loads((other / "tokenizer.json").read_text())
    tok["model"]["vocab"]["zzzz"] = len(tok["model"]["vocab"])  # one more subword: another vocabulary
    (other / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(ValueError, match="other: its tokenizer differs"):
        LSTMTranslator.load([toy_models_dir / "en_de/best", other])


def test_teacher_forced_forward_equals_stepwise_decoding(toy_en_de):
    """The causal-LM forward (one pass, no time loop) gives the same log-probs as decode_step."""
    model = toy_en_de.models[0]
    src_text, tgt_text = SOURCES[0], "Der kleine Hund sieht einen roten Ball."
    src = encode_batch(toy_en_de.tokenizer, [src_text])[0]
    tgt = encode_batch(toy_en_de.tokenizer, [tgt_text])[0]
    seq = torch.tensor([src + [toy_en_de.tag_id] + tgt + [toy_en_de.eos_id]])
    logits = model(seq).logits[0]  # (L, V)
    full = torch.log_softmax(logits, -1)[len(src):len(src) + len(tgt) + 1]
    state = model.encode(torch.tensor([src]), torch.tensor([len(src)]))
    steps = []
    for tok in [toy_en_de.tag_id] + tgt:
        lp, state = model.decode_step(torch.tensor([tok]), state)
        steps.append(lp[0])
    assert torch.allclose(full, torch.stack(steps), atol=1e-4)


def test_tokenizer_round_trips_raw_text():
    texts = ["Ein Mann, der auf einer Bank sitzt.", "Two dogs  play in the snow!", "Straße (groß) -- 3,5 m."]
    tok = train_tokenizer(texts * 20, vocab_size=120, min_frequency=1)
    ids = encode_batch(tok, texts)
    assert decode_batch(tok, ids) == texts  # exactly as written, double space included
    assert all(tok.eos_token_id not in x for x in ids), "the tokenizer must not append </s> itself"
    assert len(lang_token_ids(tok)) == 4


def test_tokenizer_round_trips_toy_corpus():
    src, tgt = toy_corpus(300, seed=3)
    tok = train_tokenizer(src + tgt, vocab_size=150)
    assert decode_batch(tok, encode_batch(tok, src + tgt)) == src + tgt


def test_reverse_source_changes_encoding_not_shapes():
    cfg = dict(vocab_size=50, embed_size=8, encoder_hidden_size=8, decoder_hidden_size=8, lang_token_ids=[4], dropout=0.0)
    torch.manual_seed(0)
    a = LSTMTranslatorForCausalLM(LSTMTranslatorConfig(reverse_source=True, **cfg)).eval()
    b = LSTMTranslatorForCausalLM(LSTMTranslatorConfig(reverse_source=False, **cfg)).eval()
    b.load_state_dict(a.state_dict())
    src, lengths = torch.tensor([[5, 6, 7, 0], [8, 9, 0, 0]]), torch.tensor([3, 2])
    rev_src = torch.tensor([[7, 6, 5, 0], [9, 8, 0, 0]])
    ea, eb = a.encode(src, lengths), b.encode(rev_src, lengths)
    assert torch.allclose(ea.h, eb.h, atol=1e-6)


@pytest.mark.parametrize("bidirectional, layers", [(True, 2), (True, 1), (False, 2)])
def test_encoder_on_padded_tensors_equals_nn_lstm_on_packed_sequences(bidirectional, layers):
    """``_run_encoder`` (oneDNN on padded tensors, backward direction reversed within each length)
    must give what nn.LSTM gives on a PackedSequence: outputs at real positions and final states."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    torch.manual_seed(0)
    config = LSTMTranslatorConfig(vocab_size=50, embed_size=8, encoder_hidden_size=6, decoder_hidden_size=6,
                                  encoder_layers=layers, decoder_layers=1, bidirectional_encoder=bidirectional)
    model = LSTMTranslatorForCausalLM(config).model.eval()
    lengths = torch.tensor([7, 3, 1, 5, 7])
    emb = torch.randn(5, 7, 8)
    out, final = model._run_encoder(emb, lengths)
    packed_out, (h_n, _) = model.encoder(pack_padded_sequence(emb, lengths, batch_first=True, enforce_sorted=False))
    ref, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=7)
    real = (torch.arange(7) < lengths.unsqueeze(1)).unsqueeze(-1)
    torch.testing.assert_close(out * real, ref, rtol=1e-5, atol=1e-6)
    directions = 2 if bidirectional else 1
    ref_final = h_n.view(layers, directions, 5, 6)[-1].transpose(0, 1).reshape(5, -1)
    torch.testing.assert_close(final, ref_final, rtol=1e-5, atol=1e-6)


def test_an_ensemble_of_two_directions_is_refused(toy_en_de, toy_de_en, toy_models_dir):
    with pytest.raises(ValueError, match="an ensemble needs one direction"):
        LSTMTranslator.load([toy_models_dir / "en_de/best", toy_models_dir / "de_en/best"])


def test_a_saved_model_carries_a_model_card(toy_en_de, toy_models_dir):
    card = (toy_models_dir / "en_de/best/README.md").read_text()
    meta = json.loads((toy_models_dir / "en_de/best/decade_meta.json").read_text())
    assert card.startswith("---\nlibrary_name: transformers") and "en -> de" in card
    assert f"greedy BLEU {meta['val']['val_bleu']:.2f}" in card and f"step {meta['step']}" in card


def test_loading_a_model_draws_no_progress_bar_and_leaves_the_setting_alone(toy_en_de, toy_models_dir, capfd):
    from transformers.utils import logging as hf_logging

    for shown in (True, False):
        (hf_logging.enable_progress_bar if shown else hf_logging.disable_progress_bar)()
        LSTMTranslator.load(toy_models_dir / "en_de/best")
        assert "Loading weights" not in capfd.readouterr().err
        assert hf_logging.is_progress_bar_enabled() == shown
    hf_logging.enable_progress_bar()
