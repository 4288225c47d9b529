"""Compute accounting: exact decoder calls and row-steps from each translator's ``DecodeCounter``,
a FLOP estimate, and wall time, for every method (generation, scoring, MBR utilities).

``ComputeMeter`` snapshots the counters of the translators a method uses, runs, and reports the
difference, so one translator shared by several methods is charged to each correctly. Counters
count one batched decoder call per ensemble member as one call, and rows x steps summed over
members; the FLOP estimate multiplies row-steps by the mean member's FLOPs per target token
(``LSTMTranslator.compute()`` does the same).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from core_seq2seq.translator import Metered

COUNTER_KEYS = ("decoder_calls", "decoder_row_steps", "encoder_calls", "encoder_rows", "encoder_token_steps")


def flops_of(translator: Metered, counts: Mapping[str, int]) -> float | None:
    """Estimated FLOPs (encoder and decoder) of the work in ``counts``, a counter delta; None when the
    translator cannot say."""
    flops = translator.flops(counts)
    return None if flops is None else float(flops)


def add_compute(*parts: Mapping[str, Any]) -> dict[str, Any]:
    """Sum compute dicts (numbers add; a None makes the sum None; per-model entries merge)."""
    out: dict[str, Any] = {}
    per_model: dict[str, dict[str, Any]] = {}
    for part in parts:
        for key, value in part.items():
            if key == "per_model":
                for name, sub in value.items():
                    per_model[name] = add_compute(per_model.get(name, {}), sub)
            elif key == "n_sentences":
                out[key] = value  # a property of the data, not summed
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                out[key] = None if key in out and out[key] is None else out.get(key, 0) + value
            elif value is None:
                out[key] = None
    if per_model:
        out["per_model"] = per_model
    if out.get("n_sentences") and out.get("decode_seconds") is not None:
        out["seconds_per_sentence"] = out["decode_seconds"] / out["n_sentences"]
    return out


class ComputeMeter:
    """Measure the compute a block of work spends on some named translators::

        with ComputeMeter({"forward": fwd, "reverse": rev}, n_sentences=len(src)) as meter:
            ...
        meter.result  # {"forward_calls", "decoder_row_steps", "flops", "decode_seconds", ...}
    """

    def __init__(self, translators: Mapping[str, Metered | None], n_sentences: int | None = None, **extra: Any):
        self.translators: dict[str, Metered] = {}
        for k, t in translators.items():
            if t is not None and t.members:  # a MeanScorer: charge each member separately
                self.translators.update({f"{k}[{i}]": m for i, m in enumerate(t.members)})
            elif t is not None:
                self.translators[k] = t
        self.n_sentences = n_sentences
        self.extra = extra
        self.result: dict[str, Any] = {}

    def __enter__(self) -> "ComputeMeter":
        self._before = {k: asdict(t.counter) for k, t in self.translators.items() if t.counter is not None}
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        seconds = time.perf_counter() - self._start
        per_model: dict[str, dict[str, Any]] = {}
        flops: float | None = 0.0
        calls = steps = 0
        for name, t in self.translators.items():
            c = t.counter
            if c is None:
                flops = None
                continue
            delta = {k: getattr(c, k) - self._before[name][k] for k in COUNTER_KEYS}
            delta["flops"] = flops_of(t, delta)
            per_model[name] = delta
            calls += delta["decoder_calls"]
            steps += delta["decoder_row_steps"]
            flops = None if flops is None or delta["flops"] is None else flops + delta["flops"]
        self.result = {"forward_calls": calls, "decoder_row_steps": steps, "flops": flops,
                       "decode_seconds": seconds, "n_sentences": self.n_sentences, "per_model": per_model,
                       **self.extra}
        if self.n_sentences:
            self.result["seconds_per_sentence"] = seconds / self.n_sentences


def record_compute(compute: Mapping[str, Any], train_seconds: float | None = None, device: str | None = "cpu") -> dict[str, Any]:
    """The ``compute`` field of an evals result record (required keys first; details kept)."""
    out = {"train_seconds": train_seconds, "decode_seconds": round(float(compute.get("decode_seconds") or 0.0), 4),
           "forward_calls": int(compute.get("forward_calls") or 0), "flops": compute.get("flops"), "device": device}
    for key, value in compute.items():
        if key not in out:
            out[key] = value
    return out
