"""Why the encoder runs on padded tensors: nn.LSTM forward+backward on a PackedSequence vs on a plain
padded tensor (oneDNN's fused kernel), at JoeyNMT's sizes, measured side by side in one process.

    python benchmarks/encoder_paths.py            # 2 threads, a 280 x 15 batch (about 4,000 tokens)

Prints seconds per forward+backward for: the packed bidirectional 2-layer encoder (decade before
2026-11-24), the same module on a padded tensor, and decade's encoder (``_run_encoder``: one layer
and direction at a time on padded tensors, the backward direction reversed within each length),
and the ratios. The packed and decade paths give the same outputs; the plain padded call does not
(its backward direction reads the padding) and is shown only as the kernel's speed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from core_seq2seq.configuration_lstm import LSTMTranslatorConfig  # noqa: E402
from core_seq2seq.modeling_lstm import LSTMTranslatorModel  # noqa: E402


def seconds_per_call(fn, repeats: int) -> float:
    for _ in range(2):  # warm-up: oneDNN primitive creation, allocator
        fn().sum().backward()
    start = time.perf_counter()
    for _ in range(repeats):
        fn().sum().backward()
    return (time.perf_counter() - start) / repeats


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=280)
    p.add_argument("--length", type=int, default=15)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = LSTMTranslatorConfig(vocab_size=8000, embed_size=256, encoder_hidden_size=512, decoder_hidden_size=512,
                                  encoder_layers=2, decoder_layers=2, dropout=0.3)
    model = LSTMTranslatorModel(config).train()
    B, S = args.batch, args.length
    emb = torch.randn(B, S, config.embed_size, requires_grad=True)
    lengths = torch.randint(S - 3, S + 1, (B,))
    lengths[0] = S

    def packed():
        out, _ = model.encoder(pack_padded_sequence(emb, lengths, batch_first=True, enforce_sorted=False))
        return pad_packed_sequence(out, batch_first=True, total_length=S)[0]

    paths = {"packed (nn.LSTM on a PackedSequence)": packed,
             "padded (nn.LSTM on a tensor, wrong on padding)": lambda: model.encoder(emb)[0],
             "decade (_run_encoder)": lambda: model._run_encoder(emb, lengths)[0]}
    times = {name: seconds_per_call(fn, args.repeats) for name, fn in paths.items()}
    base = times["packed (nn.LSTM on a PackedSequence)"]
    print(f"torch {torch.__version__}, {args.threads} threads, batch {B} x {S}, forward+backward")
    for name, t in times.items():
        print(f"{name:48s} {t:7.3f} s   {base / t:5.2f}x the packed path")
    return 0


if __name__ == "__main__":
    sys.exit(main())
