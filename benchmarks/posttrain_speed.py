"""Metric RL on the LSTM: decade's own minimum-risk loop (batched sampler) against trl's GRPOTrainer
(transformers' generate()), side by side on one model and one batch shape.

    python benchmarks/posttrain_speed.py                           # a toy model (trained here once, ~1 min)
    python benchmarks/posttrain_speed.py --model DIR --pairs FILE.tsv --steps 10 --rounds 3

Both methods run ``--steps`` updates of ``--batch`` sources x ``--samples`` samples with the same chrF++
reward, alternating (mrt, grpo, mrt, grpo, ...) for ``--rounds`` rounds so that a busy machine slows
both alike. GRPO runs with beta=0 (no reference model), its cheapest setting; MRT adds the NLL of the
references (nll_weight=1), which GRPO lacks. Seconds per update and sampled sentences per second are
printed with their ratio, and written with the machine to ``benchmarks/results/posttrain_speed.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="model dir (default: a toy en->de model, trained under --work once)")
    p.add_argument("--pairs", help=".tsv reference pairs (default: 200 toy pairs)")
    p.add_argument("--work", default=str(Path.home() / "decade-runs/bench_posttrain"))
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results/posttrain_speed.json"))
    args = p.parse_args()

    import torch

    from benchmarks.decode_throughput import machine_info
    from core_seq2seq.posttrain import PosttrainConfig, posttrain
    from core_seq2seq.precision import cpu_facts
    from core_seq2seq.toy import toy_corpus

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    model = args.model
    if not model:
        from core_seq2seq.testing import train_toy_translator

        train_toy_translator(work / "toy_en_de", "en", "de", steps=600)
        model = str(work / "toy_en_de/best")
    pairs = args.pairs
    if not pairs:
        src, tgt = toy_corpus(200, seed=99)
        pairs = str(work / "pairs.tsv")
        Path(pairs).write_text("".join(f"{s}\t{t}\n" for s, t in zip(src, tgt)), encoding="utf-8")
    seconds: dict[str, list[float]] = {"mrt": [], "grpo": []}
    for r in range(args.rounds):
        for method in ("mrt", "grpo"):
            with tempfile.TemporaryDirectory() as tmp:
                cfg = PosttrainConfig(method=method, model=model, data=pairs, output_dir=tmp, max_steps=args.steps,
                                      batch_size=args.batch, num_samples=args.samples, beta=0.0, seed=r + 1,
                                      log_every_steps=args.steps)
                out = posttrain(cfg, log=lambda m: None)
                info = json.loads((out / "decade_meta.json").read_text())["posttrain"]
            seconds[method].append(info["train_seconds"] / args.steps)
    sentences = args.batch * args.samples
    result = {"model": model, "pairs": pairs, "steps": args.steps, "batch_sources": args.batch, "samples": args.samples,
              "rounds": args.rounds, "threads": args.threads, "machine": {**machine_info(), **cpu_facts()},
              "date": time.strftime("%Y-%m-%d")}
    for method, xs in seconds.items():
        result[method] = {"seconds_per_update_median": statistics.median(xs), "all": xs,
                          "sampled_sentences_per_s": sentences / statistics.median(xs)}
    result["grpo_over_mrt_seconds"] = result["grpo"]["seconds_per_update_median"] / result["mrt"]["seconds_per_update_median"]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    for method in seconds:
        print(f"{method}: {result[method]['seconds_per_update_median']:.3f} s/update, "
              f"{result[method]['sampled_sentences_per_s']:.0f} sampled sentences/s")
    print(f"grpo / mrt time per update: {result['grpo_over_mrt_seconds']:.2f}x ({args.threads} thread(s))")


if __name__ == "__main__":
    main()
