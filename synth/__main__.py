"""``python -m synth prepare|backtranslate|filter|mix|loop --config FILE.yaml [--set key=value ...]``

Each command reads the section of the YAML file named like the command (``prepare:``,
``backtranslate:``, ``filter:``, ``mix:``, ``loop:``), so one file can describe a whole
back-translation pipeline (see ``configs/synth_toy.yaml`` and ``configs/synth_multi30k.yaml``).
Bad input (missing files, bad UTF-8, unknown config keys) prints ``error: ...`` and exits with 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from core_seq2seq import distributed
from core_seq2seq.config import ConfigError, from_dict, read_config
from evals.textio import run_cli


def _commands() -> dict[str, tuple[type, Callable[[Any], Any]]]:
    # Imported when a command runs, so that one broken stage cannot break the others' commands.
    from .backtranslate import BacktranslateConfig, backtranslate
    from .filter import FilterConfig, filter_pairs
    from .loop import LoopConfig, run_loop
    from .mix import MixConfig, mix
    from .prepare import PrepareConfig, prepare

    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    return {
        "prepare": (PrepareConfig, lambda c: prepare(c, log=log)),
        "backtranslate": (BacktranslateConfig, lambda c: backtranslate(c, log=log)),
        "filter": (FilterConfig, lambda c: filter_pairs(c, log=log)),
        "mix": (MixConfig, lambda c: mix(c, log=log)),
        "loop": (LoopConfig, lambda c: run_loop(c, log=log)),
    }


def load_section(cls: type, path: str, section: str, overrides: list[str] | None = None):
    """The ``section`` of the YAML file at ``path`` as dataclass ``cls`` (errors name file and key)."""
    body = read_config(path, overrides or [], section)
    try:
        return from_dict(cls, body, section)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


@distributed.driven
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m synth", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    helps = {"prepare": "normalise, de-duplicate and decontaminate monolingual text",
             "backtranslate": "back-translate (or forward-translate) monolingual text, sharded and resumable",
             "filter": "score synthetic pairs (length ratio, round trip, dual cross-entropy) and keep the best",
             "mix": "mix real and synthetic pairs (tagged or not) into a datasets Dataset for training",
             "loop": "iterative back-translation in rounds, both directions, until val BLEU stops improving"}
    for name, text in helps.items():
        p = sub.add_parser(name, help=text)
        p.add_argument("--config", required=True, help=f"YAML file with a '{name}:' section")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a key of the section, e.g. generation.decode.method=sample")
    args = parser.parse_args(argv)
    try:
        cls, run = _commands()[args.command]
        run(load_section(cls, args.config, args.command, args.set))
    except BrokenPipeError:
        raise  # run_cli ends quietly when the reader of stdout goes away
    except (ValueError, OSError) as e:  # DataError, SynthError and ConfigError are ValueErrors; OSError: a path that cannot be used
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    run_cli(main)
