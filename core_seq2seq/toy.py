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
                   n_mono: int = 3000, seed: int = 0, n_blind: int = 100) -> Path:
    """Write the toy task in the Multi30K layout (``task1/raw/{split}.{en,de}.gz``,
    ``task2/raw/train.1.{en,de}.gz`` and a blind set ``blind/test_2018_flickr_{a.en,b.de}.gz``) so
    every reader and stage works on it unchanged.

    The evaluation sets and the monolingual text are drawn first and the training pairs last, so a
    different ``n_train`` changes only the training set: no val, test or blind sentence can ever
    become a training pair."""
    import gzip

    def write(path: Path, lines: list[str]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")

    out = Path(out_dir)
    sizes = {"val": n_val, "test_2016_flickr": n_test, "blind_a": n_blind, "blind_b": n_blind,
             "mono_en": n_mono, "mono_de": n_mono, "train": n_train}
    src, tgt = toy_corpus(sum(sizes.values()), seed)
    spans, start = {}, 0
    for name, n in sizes.items():
        spans[name] = (start, start + n)
        start += n
    raw = out / "task1/raw"
    for split in ("train", "val", "test_2016_flickr"):
        a, b = spans[split]
        for lang, side in (("en", src), ("de", tgt)):
            write(raw / f"{split}.{lang}.gz", side[a:b])
    # Monolingual sides come from disjoint sentence sets: they are not translations of each other.
    for lang, side in (("en", src), ("de", tgt)):
        a, b = spans[f"mono_{lang}"]
        write(out / f"task2/raw/train.1.{lang}.gz", side[a:b])
    # The blind halves: English sources of one set of sentences, German sources of another.
    write(out / "blind/test_2018_flickr_a.en.gz", src[slice(*spans["blind_a"])])
    write(out / "blind/test_2018_flickr_b.de.gz", tgt[slice(*spans["blind_b"])])
    return out
