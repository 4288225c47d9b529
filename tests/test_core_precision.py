"""Precision: auto picks bf16 only where the hardware has it; the fused output layer equals the plain one."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from core_seq2seq import precision
from core_seq2seq.modeling_lstm import _FusedOutputCrossEntropy


@pytest.mark.parametrize("flags, setting, expect", [
    (["avx2", "fma"], "auto", "fp32"),                          # AVX2-only CPU: bf16 would crash or crawl
    (["avx2", "avx512f"], "auto", "fp32"),                      # AVX-512 without bf16 instructions
    (["avx2", "avx512f", "avx512_bf16"], "auto", "bf16"),       # native bf16
    (["avx2", "amx_bf16"], "auto", "bf16"),
    (["avx2", "avx512f", "avx512_bf16"], "fp32", "fp32"),       # asked for fp32: fp32
    (["avx2", "avx512f", "avx512_bf16"], "bf16", "bf16"),
    (["avx2"], "bf16", ValueError),                             # asked for bf16 without it: refused, with the reason
    (["avx2"], "fp16", ValueError),                             # not a precision
])
def test_automatic_precision_follows_the_cpu_flags(monkeypatch, flags, setting, expect):
    monkeypatch.setattr(precision, "cpu_facts", lambda: {"cpu": "test CPU", "flags": flags})
    if expect is ValueError:
        with pytest.raises(ValueError, match="precision"):
            precision.resolve_precision(setting, "cpu")
    else:
        assert precision.resolve_precision(setting, "cpu") == expect


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("rows, chunk", [(37, 8), (64, 64), (5, 512)])
def test_fused_output_cross_entropy_matches_the_plain_one(smoothing, rows, chunk):
    torch.manual_seed(rows)
    x = torch.randn(rows, 16, requires_grad=True)
    w = torch.randn(50, 16, requires_grad=True)
    target = torch.randint(0, 50, (rows,))
    fused = _FusedOutputCrossEntropy.apply(x, w, target, smoothing, chunk)
    (3 * fused).backward()
    gx, gw = x.grad.clone(), w.grad.clone()
    x.grad = w.grad = None
    plain = F.cross_entropy(x @ w.t(), target, label_smoothing=smoothing, reduction="sum")
    (3 * plain).backward()
    assert torch.allclose(fused, plain, rtol=1e-5, atol=1e-4)
    assert torch.allclose(gx, x.grad, atol=1e-5) and torch.allclose(gw, w.grad, atol=1e-5)


@pytest.mark.skipif(precision.resolve_precision("auto", "cpu") != "bf16", reason="this CPU has no native bf16")
def test_bf16_training_learns_the_toy_task_and_decodes_like_fp32(tmp_path):
    from core_seq2seq.testing import train_toy_translator
    from core_seq2seq.translator import DecodeSettings, LSTMTranslator

    model = train_toy_translator(tmp_path / "bf16", "en", "de", steps=600)  # auto precision: bf16 here
    import json

    meta = json.loads((tmp_path / "bf16/best/decade_meta.json").read_text())
    assert meta["precision"] == "bf16" and meta["val"]["val_bleu"] > 80  # fp32 reaches ~99 here
    from core_seq2seq.data import read_multi30k

    test, _ = read_multi30k("test_2016_flickr", "en", "de", root=tmp_path / "bf16/toy_data")
    settings = DecodeSettings(method="beam", beam_size=4)
    fp32_model = LSTMTranslator.load(tmp_path / "bf16/best", precision="fp32")
    bf16 = [c[0] for c in model.translate(test.src, settings)]
    fp32 = [c[0] for c in fp32_model.translate(test.src, settings)]
    same = [a.text == b.text for a, b in zip(bf16, fp32)]
    # bf16 features move each token's log-prob by hundredths: a prefix at the beam's edge can drop out,
    # so a few outputs differ (1 of 200 here, 2026-12-02), and the search is as good as fp32's
    assert sum(same) >= 0.95 * len(same)
    from evals.metrics import corpus_bleu
    assert abs(corpus_bleu([a.text for a in bf16], test.tgt) - corpus_bleu([b.text for b in fp32], test.tgt)) < 1.0
    # the same hypothesis scores alike in both precisions
    assert all(abs(a.logprob - b.logprob) < 0.05 * abs(b.logprob) + 0.05 for a, b, k in zip(bf16, fp32, same) if k)


def test_the_output_layer_keeps_fp32_logits_under_bf16_autocast():
    """bf16 rounds logits to 1/16-1/8 at the sizes they reach, which slowed training badly; the fused
    loss and every log-prob the model gives compute the logits in fp32 from (bf16) features. Runs on
    any CPU: bf16 tensors are fed in directly, no bf16 kernel speed is needed."""
    from core_seq2seq import LSTMTranslatorConfig, LSTMTranslatorForCausalLM

    torch.manual_seed(0)
    x = (torch.randn(300, 64) * 2).bfloat16().requires_grad_()  # features as autocast leaves them
    w = (torch.randn(500, 64) * 0.5).requires_grad_()
    target = torch.randint(0, 500, (300,))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as training runs it
        loss = _FusedOutputCrossEntropy.apply(x, w, target, 0.1, 128)
    loss.backward()
    x32, w32 = x.detach().float().requires_grad_(), w.detach().clone().requires_grad_()
    exact = F.cross_entropy(x32 @ w32.t(), target, label_smoothing=0.1, reduction="sum")
    exact.backward()
    assert abs(float(loss.detach()) - float(exact)) < 1e-6 * float(exact)  # bf16 logits: 8.6e-5 off
    # the gradients too (bf16 products there, which slowed learning: 2e-3 to 9e-3 off)
    assert float((w.grad - w32.grad).norm() / w32.grad.norm()) < 1e-5
    assert float((x.grad.float() - x32.grad).norm() / x32.grad.norm()) < 1e-2  # x's own bf16 rounding
    model = LSTMTranslatorForCausalLM(LSTMTranslatorConfig(vocab_size=500, embed_size=64, encoder_hidden_size=32,
                                                           decoder_hidden_size=64))
    features = (torch.randn(7, 64) * 2).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model.logits(features)
    assert logits.dtype == torch.float32
    assert torch.allclose(logits, features.float() @ model.lm_head.weight.t(), atol=1e-5)


def test_a_run_pins_what_auto_means_and_gives_it_back(monkeypatch):
    """A ladder that trains in fp32 decodes and scores in fp32 on a CPU with bf16 too."""
    monkeypatch.setattr(precision, "bf16_support", lambda device="cpu": (True, "mocked: bf16"))
    assert precision.resolve_precision("auto") == "bf16"
    try:
        precision.set_run_precision("fp32")
        assert precision.resolve_precision("auto") == "fp32" and precision.resolve_precision("bf16") == "bf16"
    finally:
        precision.set_run_precision("auto")
    assert precision.resolve_precision("auto") == "bf16"
    with pytest.raises(ValueError, match="precision must be one of"):
        precision.set_run_precision("fp16")


def test_helper_processes_load_a_translator_in_the_precision_the_driver_resolved(toy_en_de, toy_models_dir,
                                                                                  monkeypatch):
    """torchrun helpers decode their share as the driver does, whatever ``auto`` means in their process."""
    from core_seq2seq.translator import LSTMTranslator

    monkeypatch.setattr(precision, "bf16_support", lambda device="cpu": (True, "mocked: bf16"))
    try:
        precision.set_run_precision("fp32")
        driver = LSTMTranslator.load(toy_models_dir / "en_de/best")
    finally:
        precision.set_run_precision("auto")
    assert driver.precision == "fp32" and driver.load_args[-1] == "fp32"  # not "auto", which is bf16 here
