"""Decoding and scoring in fp32 against bf16, side by side in one run: speed, BLEU and agreement.

    python benchmarks/decode_precision.py --model RUN/model.fwd.en-de/best --limit 500 \
        --out benchmarks/results/decode_precision.json

One model, the same sources, each phase timed in both precisions with the precisions alternating
round by round (a busy machine slows both alike; the ratio is the median over rounds):

* ``beam5``: beam search, width 5 (the cheap decoder every rung is compared at);
* ``nbest64``: the 64-best of beam 64 (what the reranker scores);
* ``score``: forced-decoding log-probabilities of the fp32 beam-5 outputs (what every reranking
  feature computes).

Quality: BLEU of each precision's beam-5 and 64-best-top output against the references (when
``--ref`` is given or found beside a Multi30K source), the share of sentences with identical output,
and the largest and mean absolute difference of the sentence scores. bf16 runs only where
``core_seq2seq.precision`` says the hardware has it; elsewhere it is reported as skipped, with the
reason. The JSON names the CPU, its flags and torch's threads: its figures mean nothing without them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

PHASES = ("beam5", "nbest64", "score")


def _find_ref(src: str, src_lang: str, tgt_lang: str) -> str | None:
    """Multi30K's layout: ``val.en.gz`` beside ``val.de.gz``."""
    cand = Path(src).with_name(Path(src).name.replace(f".{src_lang}", f".{tgt_lang}", 1))
    return str(cand) if cand != Path(src) and cand.exists() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a model directory saved by training")
    parser.add_argument("--src", help="sources (default: Multi30K val in the model's source language)")
    parser.add_argument("--ref", help="references (default: the matching Multi30K file, when found)")
    parser.add_argument("--limit", type=int, default=500, help="first N sentences (0: all)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per precision and phase")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (a ladder worker uses 1)")
    parser.add_argument("--out", default="benchmarks/results/decode_precision.json")
    args = parser.parse_args(argv)

    import torch
    from transformers.utils import logging as hf_logging

    from core_seq2seq.precision import bf16_support, cpu_facts
    from core_seq2seq.translator import DecodeSettings, LSTMTranslator
    from evals.metrics import corpus_bleu
    from evals.textio import atomic_write_text, read_lines

    hf_logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    try:
        fp32 = LSTMTranslator.load(args.model, precision="fp32")
        src = args.src
        if not src:
            from core_seq2seq.data import find_multi30k
            src = str(find_multi30k() / f"task1/raw/val.{fp32.src_lang}.gz")
        sources = read_lines(src)
        ref_path = args.ref or _find_ref(src, fp32.src_lang, fp32.tgt_lang)
        refs = read_lines(ref_path) if ref_path else None
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.limit:
        sources = sources[:args.limit]
        refs = refs[:args.limit] if refs else None
    ok, why = bf16_support("cpu")
    translators = {"fp32": fp32}
    if ok:
        translators["bf16"] = LSTMTranslator.load(args.model, precision="bf16")

    beam5 = DecodeSettings(method="beam", beam_size=5, nbest=1, batch_size=args.batch_size)
    nbest64 = DecodeSettings(method="beam", beam_size=64, nbest=64, batch_size=args.batch_size)
    outputs: dict[str, dict] = {p: {} for p in translators}
    seconds: dict[str, dict[str, list[float]]] = {p: {ph: [] for ph in PHASES} for p in translators}
    for t in translators.values():  # warm-up: first-call allocations are not throughput
        t.translate(sources[:8], beam5)
    for phase in PHASES:
        for _ in range(args.rounds):
            for prec, t in translators.items():
                t0 = time.perf_counter()
                if phase == "beam5":
                    out = [c[0].text for c in t.translate(sources, beam5)]
                elif phase == "nbest64":
                    out = [c[0].text for c in t.translate(sources, nbest64)]
                else:
                    out = [s for s, _n in t.score(sources, outputs["fp32"]["beam5"])]
                seconds[prec][phase].append(time.perf_counter() - t0)
                outputs[prec][phase] = out
            if phase == "nbest64":
                break  # one round of the 64-best: minutes per precision

    phases = {}
    for phase in PHASES:
        row = {p: {"seconds_median": round(statistics.median(seconds[p][phase]), 3),
                   "rounds": len(seconds[p][phase])} for p in translators}
        for p in translators:
            row[p]["sentences_per_second"] = round(len(sources) / row[p]["seconds_median"], 2)
            if refs and phase != "score":
                row[p]["bleu"] = round(corpus_bleu(outputs[p][phase], refs), 2)
        if "bf16" in translators:
            row["speedup_bf16"] = round(row["fp32"]["seconds_median"] / row["bf16"]["seconds_median"], 3)
            a, b = outputs["fp32"][phase], outputs["bf16"][phase]
            if phase == "score":
                diffs = [abs(x - y) for x, y in zip(a, b)]
                row["score_abs_diff"] = {"max": round(max(diffs), 4), "mean": round(statistics.fmean(diffs), 4)}
            else:
                row["identical_outputs"] = round(sum(x == y for x, y in zip(a, b)) / len(a), 4)
        phases[phase] = row
        print(f"{phase:8s} " + "  ".join(f"{p}: {row[p]['sentences_per_second']:.1f} sent/s"
                                         + (f", BLEU {row[p]['bleu']:.2f}" if "bleu" in row[p] else "")
                                         for p in translators)
              + (f"  bf16 x{row['speedup_bf16']}" if "speedup_bf16" in row else ""), flush=True)
    payload = {"model": args.model, "src": src, "ref": ref_path, "sentences": len(sources),
               "pair": f"{fp32.src_lang}-{fp32.tgt_lang}", "threads": args.threads,
               "batch_size": args.batch_size, "machine": cpu_facts(),
               "bf16": "measured" if ok else f"skipped: {why}", "phases": phases,
               "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "command": "python benchmarks/decode_precision.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(payload, indent=1) + "\n")
    print(f"written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
