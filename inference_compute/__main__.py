"""``python -m inference_compute nbest|rerank|tune|mbr|sweep|lm --config FILE.yaml``"""

from evals.textio import run_cli

from .cli import main

run_cli(main)
