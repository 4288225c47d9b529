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
    srcs = ["the dog sees a red ball .", "a small cat follows the old man ."]
    bf16 = model.translate(srcs, DecodeSettings(method="beam", beam_size=4))
    fp32 = LSTMTranslator.load(tmp_path / "bf16/best", precision="fp32").translate(srcs, DecodeSettings(method="beam", beam_size=4))
    assert [c[0].text for c in bf16] == [c[0].text for c in fp32]
    assert all(abs(a[0].logprob - b[0].logprob) < 0.05 * abs(b[0].logprob) + 0.05 for a, b in zip(bf16, fp32))
