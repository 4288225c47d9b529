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


def resolve_precision(setting: str, device: str = "cpu", explain: bool = False):
    """``auto`` -> ``bf16`` or ``fp32`` for this device; ``fp32`` stays; ``bf16`` is refused where the
    hardware lacks it. With ``explain``, returns (precision, reason)."""
    if setting not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {setting!r}")
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
