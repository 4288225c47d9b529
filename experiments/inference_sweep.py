"""Issue 5's Multi30K sweep: beams 1-64, samples 4-64, noisy-channel reranking and MBR, chosen on val,
reported on test_2016_flickr, with the BLEU-vs-compute plot and the decision against beam 5.

    python experiments/inference_sweep.py \
        --forward runs/multi30k_en_de/best --reverse runs/multi30k_de_en/best --lm runs/multi30k_lm_de/run/last

Reads the ``sweep`` section of ``--config`` (default ``configs/inference_multi30k.yaml``) and
overrides the model paths and outputs. Writes ``experiments/results/inference_<pair>.jsonl`` (evals
result records), hypothesis files under ``experiments/results/hyps/``, the plots
``experiments/results/inference_<pair>_<split>[_beams].png`` and
``experiments/results/inference_<pair>_summary.{md,json}``. Resumable: the caches under ``--cache``
keep every grid point's n-best lists, features, weights and selections; rerun the same command.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/inference_multi30k.yaml", help="YAML with a 'sweep' section")
    parser.add_argument("--forward", nargs="+", help="forward model dir(s) (several: an ensemble)")
    parser.add_argument("--reverse", help="reverse model dir (noisy channel)")
    parser.add_argument("--lm", help="target LM dir (its run's last/)")
    parser.add_argument("--r2l", help="right-to-left model dir")
    parser.add_argument("--alt", nargs="+", help="other source->target model dir(s): a second-opinion feature")
    parser.add_argument("--no-lm", action="store_true", help="run without a target LM even if the config names one")
    parser.add_argument("--cache", help="cache directory (default: the config's out_dir)")
    parser.add_argument("--results-dir", default="experiments/results", help="records, plots and summary go here")
    parser.add_argument("--limit", type=int, default=0, help="first N lines of every split (smoke runs; 0: all)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a key of the sweep section (YAML value), e.g. --set beams=[1,5]")
    args = parser.parse_args(argv)

    import torch
    from transformers.utils import logging as hf_logging

    from core_seq2seq.config import ConfigError
    from inference_compute.cli import load_section
    from inference_compute.sweep import SweepConfig, run_sweep

    hf_logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    try:
        cfg = load_section(SweepConfig, args.config, "sweep", args.set)
        models = cfg.models
        if args.forward:
            models = replace(models, forward=args.forward if len(args.forward) > 1 else args.forward[0])
        for name in ("reverse", "lm", "r2l", "alt"):
            value = getattr(args, name)
            if value:
                models = replace(models, **{name: value[0] if isinstance(value, list) and len(value) == 1 else value})
        if args.no_lm:
            models = replace(models, lm=None)
        out = Path(args.results_dir)
        splits = [replace(s, limit=args.limit) for s in cfg.splits] if args.limit else cfg.splits
        cfg = replace(cfg, models=models, splits=splits, out_dir=args.cache or cfg.out_dir,
                      hyp_dir=str(out / "hyps"), results=str(out / f"inference_{cfg.pair}.jsonl"), plot_dir=str(out))
        summary = run_sweep(cfg, log)
    except (ConfigError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from inference_compute.sweep import render_summary

    print(render_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
