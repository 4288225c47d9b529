"""Decoding throughput: sentences/second at beam 5, beam 64 (64-best lists) and 64 samples.

    python benchmarks/decode_throughput.py                       # runs/multi30k_en_de/best on test_2016_flickr
    python benchmarks/decode_throughput.py --model DIR --src FILE --limit 200 --out PATH

Every setting goes through ``inference_compute.candidates.generate_candidates`` (the batched path the
sweep uses: all sources x beams or samples in one batch per ``--batch-size`` sentences). The exact
decoder-call counts are reported beside the times: a per-sentence loop would show up as calls
growing with the number of sentences instead of with the longest output. Results are printed and
written to ``benchmarks/results/decode_throughput.json`` with the machine they were measured on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path


SETTINGS = {
    "beam5": {"method": "beam", "beam_size": 5, "nbest": 1},
    "beam64": {"method": "beam", "beam_size": 64, "nbest": 64},
    "sample64": {"method": "sample", "num_samples": 64, "epsilon": 0.02},
}


def machine_info() -> dict:
    import torch

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def default_source(src_lang: str) -> str:
    from core_seq2seq.data import find_multi30k

    return str(find_multi30k() / f"task1/raw/test_2016_flickr.{src_lang}.gz")


def measure(translator, sources: list[str], name: str, setting: dict, batch_size: int) -> dict:
    from core_seq2seq.translator import DecodeSettings
    from inference_compute.candidates import CandidateSpec, generate_candidates
    from inference_compute.compute import ComputeMeter

    spec = CandidateSpec(methods=[DecodeSettings(**setting, batch_size=batch_size)], names=[name],
                         dedupe=False)
    generate_candidates(translator, sources[:8], spec)  # warm-up: first-call allocations are not throughput
    with ComputeMeter({"forward": translator}, n_sentences=len(sources)) as meter:
        nbest = generate_candidates(translator, sources, spec)
    seconds = meter.result["decode_seconds"]
    n_cands = sum(len(c) for c in nbest)
    return {"setting": name, **setting, "batch_size": batch_size, "sentences": len(sources),
            "candidates": n_cands, "seconds": round(seconds, 3),
            "sentences_per_second": round(len(sources) / seconds, 2),
            "candidates_per_second": round(n_cands / seconds, 1),
            "decoder_calls": meter.result["forward_calls"], "decoder_row_steps": meter.result["decoder_row_steps"],
            "flops": meter.result["flops"],
            "decoder_calls_per_batch": round(meter.result["forward_calls"] / -(-len(sources) // batch_size), 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="runs/multi30k_en_de/best", help="model dir (several: an ensemble)",
                        nargs="+")
    parser.add_argument("--src", help="source file (default: Multi30K test_2016_flickr in the model's source language)")
    parser.add_argument("--limit", type=int, default=0, help="first N sentences only (0: all)")
    parser.add_argument("--batch-size", type=int, default=64, help="sentences per batch")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="benchmarks/results/decode_throughput.json")
    args = parser.parse_args(argv)

    import torch
    from transformers.utils import logging as hf_logging

    from core_seq2seq.translator import LSTMTranslator
    from evals.textio import atomic_write_text, read_lines

    hf_logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        translator = LSTMTranslator.load(args.model if len(args.model) > 1 else args.model[0], device=args.device)
        src = args.src or default_source(translator.src_lang)
        sources = read_lines(src)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sources = sources[:args.limit] if args.limit else sources
    results = []
    for name in args.settings:
        r = measure(translator, sources, name, SETTINGS[name], args.batch_size)
        results.append(r)
        print(f"{name:9s} {r['sentences_per_second']:8.2f} sentences/s  {r['candidates_per_second']:9.1f} candidates/s"
              f"  {r['decoder_calls']} decoder calls ({r['decoder_calls_per_batch']} per batch of {args.batch_size})",
              flush=True)
    payload = {"model": args.model, "src": src, "pair": f"{translator.src_lang}-{translator.tgt_lang}",
               "device": args.device, "machine": machine_info(), "results": results,
               "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "command": "python benchmarks/decode_throughput.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(payload, indent=1) + "\n")
    print(f"written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
