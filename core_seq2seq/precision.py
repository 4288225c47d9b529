"""Numeric precision: bf16 mixed precision where the hardware runs it faster, fp32 everywhere else.

``train.precision: auto`` (the default) picks bf16 on a GPU that supports it and on a CPU with native
bf16 instructions (``avx512_bf16`` or ``amx_bf16``), fp32 otherwise. Why flags and not a guess: on
the AVX-512 bf16 machines here a 2048x2048 bf16 matrix product runs at 415 GFLOP/s against 194 in
fp32, while on the AVX2-only ones bf16 matmul has no native kernel (under 1 GFLOP/s), ``nn.LSTM``
under bf16 autocast fails inside oneDNN, and an LSTM cast to bf16 runs 42x slower than fp32
(``../shared/notes/machines-here.md``). So auto never turns bf16 on where it would crash or crawl,
and an explicit ``bf16`` there is refused with the reason.

Mixed precision keeps fp32 master weights; matrix products run in bf16 under ``torch.autocast``;
softmax, log-probabilities and the loss are computed in fp32 (``modeling_lstm``).
"""

from __future__ import annotations

import functools
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

PRECISIONS = ("auto", "fp32", "bf16")
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.lru_cache(maxsize=1)
def cpu_facts() -> dict[str, Any]:
    """The CPU's model, the flags that decide speed, and torch's view of it (read once)."""
    facts: dict[str, Any] = {"cpu": platform.processor() or None, "flags": [],
                             "torch_cpu_capability": getattr(torch.backends.cpu, "get_cpu_capability", lambda: None)()}
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return facts
    for line in info.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and facts["cpu"] in (None, "", "x86_64"):
            facts["cpu"] = value.strip()
        elif key.strip() == "flags" and not facts["flags"]:
            wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")
            facts["flags"] = [f for f in value.split() if f in wanted]
    return facts


def bf16_support(device: str = "cpu") -> tuple[bool, str]:
    """Whether ``device`` runs bf16 natively, and why (said in logs and records)."""
    if str(device).startswith("cuda"):
        ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return ok, "GPU supports bf16" if ok else "GPU without bf16 support"
    flags = cpu_facts()["flags"]
    have = [f for f in BF16_CPU_FLAGS if f in flags]
    if have:
        return True, f"CPU has {'/'.join(have)}"
    return False, ("CPU without avx512_bf16/amx_bf16: bf16 matmul has no native kernel there and nn.LSTM "
                   "under bf16 autocast fails in oneDNN, so fp32")


_RUN_PRECISION = "auto"  # what ``auto`` means in this process; a run pins it (set_run_precision)


def set_run_precision(setting: str) -> None:
    """Make ``auto`` mean ``setting`` in this process: a ladder that trains in fp32 decodes and scores in
    fp32 too, so it gives the same systems on a CPU with bf16 and on one without. ``auto``: the hardware
    decides again."""
    global _RUN_PRECISION
    if setting not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {setting!r}")
    _RUN_PRECISION = setting


def resolve_precision(setting: str, device: str = "cpu", explain: bool = False):
    """``auto`` -> ``bf16`` or ``fp32`` for this device (or what the run pinned); ``fp32`` stays; ``bf16``
    is refused where the hardware lacks it. With ``explain``, returns (precision, reason)."""
    if setting not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {setting!r}")
    if setting == "auto" and _RUN_PRECISION != "auto":
        setting = _RUN_PRECISION
    ok, why = bf16_support(device)
    if setting == "fp32":
        chosen, why = "fp32", "fp32 asked for"
    elif setting == "bf16":
        if not ok:
            raise ValueError(f"precision bf16 asked for, but {why}; use auto or fp32")
        chosen = "bf16"
    else:
        chosen = "bf16" if ok else "fp32"
    return (chosen, why) if explain else chosen


def autocast(precision: str, device: str | torch.device = "cpu"):
    """The autocast context of a resolved precision (a no-op context for fp32)."""
    device_type = torch.device(device).type
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bf16")


def matmul_gflops(size: int = 2048, threads: int = 2, seconds: float = 5.0, per_round: int = 3,
                  dtype: str = "float32") -> dict[str, Any]:
    """GFLOP/s of ``torch.matmul`` on ``size`` x ``size`` matrices with ``threads`` threads: the
    ceiling a training run's achieved GFLOP/s is compared with (an n x n product is 2 n^3 FLOPs).
    Rounds of a few products; the best round is the ceiling, the median says how steady the machine was."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        gen = torch.Generator().manual_seed(0)
        kind = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
        a = torch.randn(size, size, generator=gen).to(kind)
        b = torch.randn(size, size, generator=gen).to(kind)
        out = torch.empty(size, size, dtype=kind)
        for _ in range(2):  # warm-up: thread pool start, page faults, oneDNN/MKL dispatch
            torch.matmul(a, b, out=out)
        flops = 2.0 * size**3 * per_round
        rounds: list[float] = []
        start = time.perf_counter()
        while not rounds or time.perf_counter() - start < seconds:
            t0 = time.perf_counter()
            for _ in range(per_round):
                torch.matmul(a, b, out=out)
            rounds.append(flops / (time.perf_counter() - t0) / 1e9)
    finally:
        torch.set_num_threads(previous)
    return {"size": size, "threads": threads, "dtype": dtype, "rounds": len(rounds),
            "products_per_round": per_round, "gflops_best": max(rounds),
            "gflops_median": statistics.median(rounds), "torch_version": torch.__version__}
