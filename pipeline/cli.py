"""``decade``: ``decade run CONFIG`` runs the ladder; the stages' own CLIs live under the same roof.

    decade run configs/quickstart.yaml [--out DIR] [--force STAGE ...] [--set train.num_threads=1 ...] [--plan]
    decade publish RUN_DIR [--to benchmarks/results/ladder]   (records, hyps, leaderboards, blind outputs)
    decade train|translate|score|average|posttrain ...  -> python -m core_seq2seq ...
    decade prepare|backtranslate|filter|mix|loop ...    -> python -m synth ...
    decade nbest|rerank|tune|mbr|sweep|pairs ...        -> python -m inference_compute ...
    decade correct|escalate|explain ...                 -> python -m agents ...
    decade score-hyps|compare|leaderboard|verify|exchange ... -> python -m evals score|compare|leaderboard|verify|exchange ...
"""

from __future__ import annotations

import argparse
import sys

from core_seq2seq import distributed
from evals.textio import run_cli

STAGE_CLIS = {
    "train": ("core_seq2seq", "train"), "translate": ("core_seq2seq", "translate"),
    "score": ("core_seq2seq", "score"), "average": ("core_seq2seq", "average"), "posttrain": ("core_seq2seq", "posttrain"),
    "prepare": ("synth", "prepare"), "backtranslate": ("synth", "backtranslate"), "filter": ("synth", "filter"),
    "mix": ("synth", "mix"), "loop": ("synth", "loop"),
    "nbest": ("inference_compute", "nbest"), "rerank": ("inference_compute", "rerank"),
    "tune": ("inference_compute", "tune"), "mbr": ("inference_compute", "mbr"), "sweep": ("inference_compute", "sweep"),
    "pairs": ("inference_compute", "pairs"),
    "correct": ("agents", "correct"), "escalate": ("agents", "escalate"), "explain": ("agents", "explain"),
    "score-hyps": ("evals", "score"), "compare": ("evals", "compare"), "leaderboard": ("evals", "leaderboard"),
    "verify": ("evals", "verify"), "exchange": ("evals", "exchange"),
}


def _run(args: argparse.Namespace) -> int:
    from .ladder import load_pipeline_config, run_ladder

    cfg = load_pipeline_config(args.config, args.set)
    markdown = run_ladder(cfg, set(args.force or ()), log=lambda m: print(m, file=sys.stderr, flush=True),
                          config_path=args.config, out=args.out, plan=args.plan)
    print(markdown)
    return 0


def _publish(args: argparse.Namespace) -> int:
    from .publish import publish

    pairs = publish(args.run_dir, args.to, args.blind_to)
    print(f"published {', '.join(pairs)} to {args.to} (blind outputs: {args.blind_to})")
    return 0


@distributed.driven
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in STAGE_CLIS:
        package, command = STAGE_CLIS[argv[0]]
        # evals and inference_compute keep their CLI in cli.py (their __main__ exits on import).
        module_name = f"{package}.cli" if package in ("evals", "inference_compute") else f"{package}.__main__"
        module = __import__(module_name, fromlist=["main"])
        return module.main([command] + argv[1:]) or 0
    parser = argparse.ArgumentParser(prog="decade", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run (or resume) the whole ladder from a YAML config and print the leaderboard")
    p.add_argument("config")
    p.add_argument("--out", metavar="DIR",
                   help="run directory (default: the config's run_dir, else $DECADE_RUNS/<config name>, "
                        "else ~/decade-runs/<config name>); rerunning into it continues whatever finished")
    p.add_argument("--force", action="append", metavar="STAGE",
                   help="rerun this stage even if cached: a directory name inside the run directory, e.g. "
                        "model.fwd.en-de, en-de.beam5, en-de.rerank_mbr")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.num_threads=1 (YAML value; recorded in run.json)")
    p.add_argument("--plan", action="store_true",
                   help="run nothing: print what each stage would do now (cached, resume, start, or start over "
                        "clearing another config's work), up to the first stages that would run")
    p.set_defaults(func=_run)
    p = sub.add_parser("publish", help="copy a finished run's records, hypotheses, leaderboards, summary and blind "
                                      "outputs into the repository (re-scorable with python -m evals verify)")
    p.add_argument("run_dir")
    p.add_argument("--to", default="benchmarks/results/ladder", help="records and leaderboards (default: %(default)s)")
    p.add_argument("--blind-to", default="benchmarks/results/blind", help="blind outputs (default: %(default)s)")
    p.set_defaults(func=_publish)
    for name in STAGE_CLIS:
        sub.add_parser(name, help=f"python -m {STAGE_CLIS[name][0]} {STAGE_CLIS[name][1]} ...")
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:
        raise  # run_cli ends quietly when the reader of stdout goes away
    except (ValueError, OSError) as e:  # ConfigError and DataError are ValueErrors; OSError: a path that cannot be used
        print(f"error: {e}", file=sys.stderr)
        return 2


def console_main() -> None:
    """The ``decade`` console script."""
    run_cli(main)


if __name__ == "__main__":
    run_cli(main)
