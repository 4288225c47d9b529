"""Training-speed levers of core_seq2seq, measured side by side in one run.

Each lever is timed against the plain path on the same model and the same batches, alternating
the variants round by round so that a busy or throttled machine slows both alike; the ratios are
medians over rounds. Levers:

* ``fused_ce``: the output layer + cross-entropy fused and chunked (``modeling_lstm``), padding
  dropped before the output layer, against full (B, T, V) logits and ``F.cross_entropy``;
* ``bf16``: bf16 mixed precision (``torch.autocast``), only where ``core_seq2seq.precision`` says
  the hardware runs it (else reported as skipped, with the reason);
* ``batch_tokens``: 4,000 instead of 2,000 tokens per batch (target tokens/s);
* ``threads``: 1 thread against the machine's default.

    python benchmarks/train_levers.py --rounds 7 --out benchmarks/results/train_levers.json

The JSON names the CPU, its flags, torch's threads and every median; it is a tool, reusable on any
machine (its figures are only meaningful with the machine it names).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from core_seq2seq.configuration_lstm import LSTMTranslatorConfig
from core_seq2seq.modeling_lstm import LSTMTranslatorForCausalLM
from core_seq2seq.precision import cpu_facts, resolve_precision
from core_seq2seq.training import ModelConfig


def plain_loss(model: LSTMTranslatorForCausalLM, src, src_lengths, tgt_in, tgt_out, smoothing: float):
    """The reference path: full logits for every position, padding included."""
    features, _ = model.model.decode_sequence(tgt_in, model.encode(src, src_lengths))
    logits = model.lm_head(features)  # (B, T, V)
    return F.cross_entropy(logits.flatten(0, 1).float(), tgt_out.flatten(), ignore_index=model.config.pad_token_id,
                           label_smoothing=smoothing, reduction="sum")


def make_batch(batch_tokens: int, vocab: int, seed: int, src_len: int = 14, tgt_len: int = 15):
    """Multi30K-like shapes: sentences of ~14 subwords, lengths varying by +-3 inside a batch."""
    g = torch.Generator().manual_seed(seed)
    b = max(1, batch_tokens // max(src_len, tgt_len))
    sl = torch.randint(src_len - 3, src_len + 4, (b,), generator=g)
    tl = torch.randint(tgt_len - 3, tgt_len + 4, (b,), generator=g)
    src = torch.randint(8, vocab, (b, int(sl.max())), generator=g)
    tgt_out = torch.randint(8, vocab, (b, int(tl.max())), generator=g)
    for i in range(b):
        src[i, sl[i]:] = 0
        tgt_out[i, tl[i]:] = 0
    tgt_in = torch.cat([torch.full((b, 1), 4), tgt_out[:, :-1]], dim=1)
    return src, sl, tgt_in, tgt_out, int((tl).sum())


def step_seconds(model, opt, batch, variant: str) -> float:
    src, sl, tgt_in, tgt_out, _ = batch
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=variant == "bf16"):
        if variant == "plain":
            loss = plain_loss(model, src, sl, tgt_in, tgt_out, 0.1)
        else:
            loss, _ = model.loss(src, sl, tgt_in, tgt_out, 0.1)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--batch-tokens", type=int, default=2000)
    p.add_argument("--out", default="")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    sizes = dataclasses.asdict(ModelConfig())  # the training default (its values: configuration_lstm.py)
    cfg = LSTMTranslatorConfig(vocab_size=args.vocab, lang_token_ids=[3, 4, 5, 6], pad_token_id=0, eos_token_id=2,
                               unk_token_id=1, **sizes)
    model = LSTMTranslatorForCausalLM(cfg).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    precision, why = resolve_precision("auto", "cpu", explain=True)
    variants = ["plain", "fused_ce"] + (["bf16"] if precision == "bf16" else [])
    batches = {bt: [make_batch(bt, args.vocab, seed) for seed in range(4)] for bt in (args.batch_tokens, 2 * args.batch_tokens)}
    default_threads = torch.get_num_threads()
    times: dict[str, list[float]] = {v: [] for v in variants + ["batch_tokens_x2", "threads_1"]}
    tokens = {bt: sum(b[4] for b in bs) for bt, bs in batches.items()}
    for v in variants:  # warm-up
        step_seconds(model, opt, batches[args.batch_tokens][0], v)
    for r in range(args.rounds):
        for v in variants:
            times[v].append(sum(step_seconds(model, opt, b, v) for b in batches[args.batch_tokens]))
        times["batch_tokens_x2"].append(sum(step_seconds(model, opt, b, "fused_ce") for b in batches[2 * args.batch_tokens]))
        torch.set_num_threads(1)
        times["threads_1"].append(sum(step_seconds(model, opt, b, "fused_ce") for b in batches[args.batch_tokens]))
        torch.set_num_threads(default_threads)
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()), flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    tok_s = {k: (tokens[2 * args.batch_tokens] if k == "batch_tokens_x2" else tokens[args.batch_tokens]) / med[k]
             for k in med}
    result = {
        "machine": cpu_facts(), "torch": torch.__version__, "torch_threads": default_threads,
        "auto_precision": precision, "auto_precision_reason": why,
        "model": {**{k: sizes[k] for k in ("embed_size", "encoder_hidden_size", "decoder_hidden_size", "encoder_layers",
                                           "decoder_layers")}, "vocab": args.vocab},
        "batch_tokens": args.batch_tokens, "rounds": args.rounds,
        "target_tokens_per_s": {k: round(v) for k, v in tok_s.items()},
        "speedup_vs_plain": {k: round(tok_s[k] / tok_s["plain"], 3) for k in tok_s},
        "bf16": "measured" if "bf16" in variants else f"skipped: {why}",
        "command": "python benchmarks/train_levers.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
