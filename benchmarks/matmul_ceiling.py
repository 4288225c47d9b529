"""This machine's fp32 matrix-multiply throughput through torch: the ceiling for training GFLOP/s.

    python benchmarks/matmul_ceiling.py --threads 2 --size 2048 --seconds 5

An n x n by n x n product is 2 n^3 floating-point operations (one multiply and one add per term).
The loop runs in rounds of a few products; the best round is the ceiling, the median says how steady
the machine was (a background job shows as a median well below the best).
"""

from __future__ import annotations

import argparse
import json

from core_seq2seq.precision import matmul_gflops  # noqa: F401 (core_vs_joeynmt.py imports it from here)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=2048, help="matrix side (default 2048)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--seconds", type=float, default=5.0, help="how long to loop (default 5)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    args = parser.parse_args(argv)
    if args.size < 1 or args.threads < 1 or args.seconds <= 0:
        parser.error("--size and --threads must be >= 1 and --seconds > 0")
    print(json.dumps(matmul_gflops(args.size, args.threads, args.seconds, dtype=args.dtype), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
