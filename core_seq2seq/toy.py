"""A toy translation task generated deterministically: tests and the offline quickstart learn it in seconds.

"English" sentences come from a small grammar; the "German" side maps every word through a
lexicon, makes determiners and adjectives agree with the noun's gender, and moves the verb to
the end when the sentence has an adverb (a verb-final reordering). Monolingual text on both sides
comes from the same grammar with a different seed.
"""

from __future__ import annotations

import random
from pathlib import Path

# noun: (German noun, gender)
NOUNS = {
    "dog": ("Hund", "m"), "cat": ("Katze", "f"), "child": ("Kind", "n"), "man": ("Mann", "m"),
    "woman": ("Frau", "f"), "ball": ("Ball", "m"), "house": ("Haus", "n"), "car": ("Auto", "n"),
    "tree": ("Baum", "m"), "street": ("Straße", "f"), "bird": ("Vogel", "m"), "boat": ("Boot", "n"),
    "girl": ("Mädchen", "n"), "boy": ("Junge", "m"), "bike": ("Fahrrad", "n"), "door": ("Tür", "f"),
}
ADJECTIVES = {"big": "groß", "small": "klein", "red": "rot", "old": "alt", "young": "jung", "green": "grün",
              "fast": "schnell", "happy": "froh"}
VERBS = {"sees": "sieht", "finds": "findet", "likes": "mag", "follows": "folgt", "paints": "malt",
         "carries": "trägt", "watches": "beobachtet", "hears": "hört"}
ADVERBS = {"today": "heute", "often": "oft", "now": "jetzt", "again": "wieder", "quickly": "schnell"}
DETERMINER = {"the": {"m": "der", "f": "die", "n": "das"}, "a": {"m": "ein", "f": "eine", "n": "ein"}}
# Adjective endings after the determiner (nominative, simplified): agreement the model must learn.
ENDING = {"the": {"m": "e", "f": "e", "n": "e"}, "a": {"m": "er", "f": "e", "n": "es"}}


def _noun_phrase(rng: random.Random) -> tuple[list[str], list[str]]:
    det = rng.choice(["the", "a"])
    noun = rng.choice(sorted(NOUNS))
    de_noun, gender = NOUNS[noun]
    en, de = [det], [DETERMINER[det][gender]]
    if rng.random() < 0.5:
        adj = rng.choice(sorted(ADJECTIVES))
        en.append(adj)
        de.append(ADJECTIVES[adj] + ENDING[det][gender])
    return en + [noun], de + [de_noun]


def toy_pair(rng: random.Random) -> tuple[str, str]:
    """One (English-like, German-like) sentence pair."""
    subj_en, subj_de = _noun_phrase(rng)
    obj_en, obj_de = _noun_phrase(rng)
    verb = rng.choice(sorted(VERBS))
    en = subj_en + [verb] + obj_en
    if rng.random() < 0.4:
        adv = rng.choice(sorted(ADVERBS))
        en = en + [adv]
        de = subj_de + [ADVERBS[adv]] + obj_de + [VERBS[verb]]  # verb-final when an adverb is present
    else:
        de = subj_de + [VERBS[verb]] + obj_de
    return _sentence(en), _sentence(de)


def _sentence(words: list[str]) -> str:
    text = " ".join(words)
    return text[0].upper() + text[1:] + "."


def toy_corpus(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """``n`` distinct pairs, deterministic in ``seed``."""
    rng = random.Random(seed)
    src, tgt, seen = [], [], set()
    while len(src) < n:
        s, t = toy_pair(rng)
        if s not in seen:
            seen.add(s)
            src.append(s)
            tgt.append(t)
    return src, tgt


def write_toy_task(out_dir: str | Path, n_train: int = 3000, n_val: int = 200, n_test: int = 200,
                   n_mono: int = 3000, seed: int = 0) -> Path:
    """Write the toy task in the Multi30K layout (``task1/raw/{split}.{en,de}.gz`` and
    ``task2/raw/train.1.{en,de}.gz``) so every reader and stage works on it unchanged."""
    import gzip

    out = Path(out_dir)
    src, tgt = toy_corpus(n_train + n_val + n_test + 2 * n_mono, seed)
    splits = {"train": (0, n_train), "val": (n_train, n_train + n_val),
              "test_2016_flickr": (n_train + n_val, n_train + n_val + n_test)}
    raw = out / "task1/raw"
    raw.mkdir(parents=True, exist_ok=True)
    for split, (a, b) in splits.items():
        for lang, side in (("en", src), ("de", tgt)):
            with gzip.open(raw / f"{split}.{lang}.gz", "wt", encoding="utf-8") as f:
                f.write("\n".join(side[a:b]) + "\n")
    mono = out / "task2/raw"
    mono.mkdir(parents=True, exist_ok=True)
    start = n_train + n_val + n_test
    # Monolingual sides come from disjoint sentence sets: they are not translations of each other.
    for lang, side, offset in (("en", src, 0), ("de", tgt, n_mono)):
        with gzip.open(mono / f"train.1.{lang}.gz", "wt", encoding="utf-8") as f:
            f.write("\n".join(side[start + offset:start + offset + n_mono]) + "\n")
    return out
