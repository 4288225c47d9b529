"""Source-side noise for noised back-translation (Edunov et al. 2018, "Understanding Back-Translation
at Scale", section 3): delete words with probability 0.1, replace words by a filler token with
probability 0.1, and shuffle words locally, no word moving more than three positions.

Hand-written (a few lines) because the libraries that have it (fairseq's ``noising.py``) work on
their own tensor dictionaries and are not installable beside this stack. Words are whitespace
tokens of the detokenised synthetic source.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass
class NoiseConfig:
    word_dropout: float = 0.1  # probability of deleting each word (at least one word is always kept)
    blank_prob: float = 0.1  # probability of replacing each word with blank_token
    blank_token: str = "<blank>"  # the filler token (plain text: the tokenizer learns it from the mixed corpus)
    shuffle_window: int = 3  # local shuffle: no word moves more than this many positions (0: no shuffle)

    def __post_init__(self) -> None:
        for name in ("word_dropout", "blank_prob"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"noise.{name} must be in [0, 1), got {getattr(self, name)}")
        if self.shuffle_window < 0:
            raise ValueError(f"noise.shuffle_window must be >= 0, got {self.shuffle_window}")


def word_dropout(words: list[str], p: float, rng: random.Random) -> list[str]:
    if p <= 0 or not words:
        return list(words)
    kept = [w for w in words if rng.random() >= p]
    return kept or [rng.choice(words)]  # an empty source teaches nothing


def blank_words(words: list[str], p: float, token: str, rng: random.Random) -> list[str]:
    if p <= 0:
        return list(words)
    return [token if rng.random() < p else w for w in words]


def local_shuffle(words: list[str], k: int, rng: random.Random) -> list[str]:
    """Sort positions by ``i + U(0, k + 1)``: word i can only pass words less than k + 1 positions
    away, so no word moves more than k positions (Lample et al. 2018's permutation)."""
    if k <= 0 or len(words) < 2:
        return list(words)
    keys = [i + rng.uniform(0, k + 1) for i in range(len(words))]
    return [w for _, w in sorted(zip(keys, words), key=lambda kw: kw[0])]


def add_noise(text: str, cfg: NoiseConfig, rng: random.Random) -> str:
    """Delete, then blank, then locally shuffle the words of ``text``."""
    words = text.split()
    words = word_dropout(words, cfg.word_dropout, rng)
    words = blank_words(words, cfg.blank_prob, cfg.blank_token, rng)
    words = local_shuffle(words, cfg.shuffle_window, rng)
    return " ".join(words)
