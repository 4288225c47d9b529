"""decade's scoring harness: standard metrics, significance, result records, leaderboard.

It imports nothing from the other decade packages; everything else scores through it.
Submodules are imported lazily by their users (``from evals.metrics import score_corpus``)
so that ``import evals`` stays cheap and never loads matplotlib.
"""

from .errors import EvalsInputError

__all__ = ["EvalsInputError"]
