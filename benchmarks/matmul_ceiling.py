"""This machine's fp32 matrix-multiply throughput through torch: the ceiling for training GFLOP/s.

    python benchmarks/matmul_ceiling.py --threads 2 --size 2048 --seconds 5

An n x n by n x n product is 2 n^3 floating-point operations (one multiply and one add per term).
The loop runs in rounds of a few products; the best round is the ceiling, the median says how steady
the machine was (a background job shows as a median well below the best).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def matmul_gflops(size: int = 2048, threads: int = 2, seconds: float = 5.0, per_round: int = 3) -> dict:
    """GFLOP/s of ``torch.matmul`` on fp32 ``size`` x ``size`` matrices with ``threads`` threads."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        gen = torch.Generator().manual_seed(0)
        a = torch.randn(size, size, generator=gen)
        b = torch.randn(size, size, generator=gen)
        out = torch.empty(size, size)
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
    return {"size": size, "threads": threads, "dtype": "float32", "rounds": len(rounds),
            "products_per_round": per_round, "gflops_best": max(rounds),
            "gflops_median": statistics.median(rounds), "torch_version": torch.__version__}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=2048, help="matrix side (default 2048)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--seconds", type=float, default=5.0, help="how long to loop (default 5)")
    args = parser.parse_args(argv)
    if args.size < 1 or args.threads < 1 or args.seconds <= 0:
        parser.error("--size and --threads must be >= 1 and --seconds > 0")
    print(json.dumps(matmul_gflops(args.size, args.threads, args.seconds), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
