"""A bilingual word lexicon learned from the parallel training data with IBM Model 1, both directions.

Why IBM Model 1 and not Dice/PMI over sentence co-occurrence: co-occurrence scores cannot tell a
content word's translation from the function words that share its sentences ("dog" co-occurs
with "der" about as often as with "Hund"), and Dice/PMI reward rare pairs. IBM-1's EM makes the
source words of a sentence compete to explain each target word, so once "the" explains "der",
"dog" no longer needs to: the probabilities concentrate on real translations (Brown et al. 1993;
the alignment statistics behind Luong et al. 2015's rare-word lexicon). It is trained in both
directions and a pair's *strength* is the geometric mean sqrt(p(t|s) p(s|t)): a translation must
be likely both ways, which removes most of IBM-1's "garbage collector" links from rare words.

Why hand-written: nltk's ``IBMModel1`` is not a dependency and loops over Python dicts (minutes
on 29k pairs); this EM runs vectorised over the list of co-occurrences (seconds).

Words are lower-cased ``\\w+`` runs; each target word keeps its most frequent cased form
(``surface``) so constrained decoding can require "Hund", not "hund".
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from core_seq2seq.config import ConfigError, from_dict
from evals.textio import atomic_write_text

WORD_RE = re.compile(r"\w+", re.UNICODE)
FORMAT_VERSION = 1


def words(text: str) -> list[str]:
    """Lower-cased word tokens of a sentence: the unit the lexicon and the critic's word signals use."""
    return [w.lower() for w in WORD_RE.findall(text)]


@dataclass
class LexiconConfig:
    """How the lexicon is built, and where it lives. Every field is a YAML key of ``lexicon:``."""

    path: str = ""  # the lexicon JSON; built from src_path/tgt_path when missing
    src_path: str = ""  # parallel training data, source side (.gz allowed)
    tgt_path: str = ""  # target side, line-aligned with src_path
    iterations: int = 5  # EM iterations per direction
    min_count: int = 2  # source words seen fewer times get no entry (IBM-1 is unreliable on them)
    top_k: int = 5  # translations kept per source word
    min_strength: float = 0.02  # translations weaker than this are dropped
    max_pairs: int = 0  # use only the first N training pairs (0: all)


@dataclass(frozen=True)
class Translation:
    word: str  # lower-cased target word
    strength: float  # sqrt(p(t|s) * p(s|t))
    p_t_given_s: float
    p_s_given_t: float


@dataclass
class Lexicon:
    src_lang: str
    tgt_lang: str
    entries: dict[str, list[Translation]]  # source word -> translations, strongest first
    surface: dict[str, str]  # lower-cased target word -> its most frequent cased form
    length_log_ratio: tuple[float, float] = (0.0, 0.3)  # mean, std of log(target words / source words)
    config: dict = field(default_factory=dict)

    def translations(self, word: str, min_strength: float = 0.0) -> list[Translation]:
        return [t for t in self.entries.get(word, []) if t.strength >= min_strength]

    def strength(self, src_word: str, tgt_word: str) -> float:
        for t in self.entries.get(src_word, []):
            if t.word == tgt_word:
                return t.strength
        return 0.0

    def best(self, word: str) -> Translation | None:
        entry = self.entries.get(word)
        return entry[0] if entry else None

    def surface_form(self, tgt_word: str) -> str:
        return self.surface.get(tgt_word, tgt_word)

    def to_json(self) -> dict:
        return {
            "format_version": FORMAT_VERSION, "src_lang": self.src_lang, "tgt_lang": self.tgt_lang,
            "config": self.config, "length_log_ratio": list(self.length_log_ratio),
            "entries": {s: [[t.word, t.strength, t.p_t_given_s, t.p_s_given_t] for t in ts]
                        for s, ts in sorted(self.entries.items())},
            "surface": dict(sorted(self.surface.items())),
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write the lexicon (with the config that built it) atomically."""
        atomic_write_text(path, json.dumps(self.to_json(), ensure_ascii=False, indent=0) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Lexicon":
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"{path}: lexicon file not found")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            entries = {s: [Translation(w, float(a), float(b), float(c)) for w, a, b, c in ts]
                       for s, ts in data["entries"].items()}
            mean, std = data["length_log_ratio"]
            return cls(data["src_lang"], data["tgt_lang"], entries, dict(data["surface"]), (float(mean), float(std)),
                       dict(data.get("config", {})))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"{path}: not a lexicon file ({type(e).__name__}: {e})") from None


def ibm1(src_sents: Sequence[Sequence[int]], tgt_sents: Sequence[Sequence[int]], n_src: int,
         iterations: int) -> tuple[np.ndarray, np.ndarray]:
    """IBM Model 1 p(t|s) by EM. Source id 0 must be NULL and is added to every sentence here.

    Returns (pair keys s * V_t + t of every co-occurring pair, their probabilities), sorted by key.
    """
    n_tgt = 1 + max((max(t) for t in tgt_sents if len(t)), default=0)
    keys, occ, offset = [], [], 0
    for s, t in zip(src_sents, tgt_sents):
        if not len(t):
            continue
        s = np.concatenate([[0], np.asarray(s, dtype=np.int64)])
        t = np.asarray(t, dtype=np.int64)
        keys.append((s[None, :] * n_tgt + t[:, None]).ravel())  # (|t| * |s|,) target-major
        occ.append(offset + np.repeat(np.arange(len(t)), len(s)))  # which target token each entry explains
        offset += len(t)
    pair_keys, pair_of = np.unique(np.concatenate(keys), return_inverse=True)
    occ_id = np.concatenate(occ)
    src_of_pair = pair_keys // n_tgt
    prob = np.ones(len(pair_keys))  # uniform start: the first E-step splits each target token evenly
    for _ in range(iterations):
        num = prob[pair_of]
        post = num / np.bincount(occ_id, num, minlength=offset)[occ_id]  # E: who explains each target token
        counts = np.bincount(pair_of, post, minlength=len(pair_keys))
        totals = np.bincount(src_of_pair, counts, minlength=n_src)  # M: normalise per source word
        prob = counts / totals[src_of_pair]
    return pair_keys, prob


def _index(sents: list[list[str]], vocab: dict[str, int]) -> list[list[int]]:
    out = []
    for ws in sents:
        ids = []
        for w in ws:
            if w not in vocab:
                vocab[w] = len(vocab)
            ids.append(vocab[w])
        out.append(ids)
    return out


def train_lexicon(src_lines: Sequence[str], tgt_lines: Sequence[str], src_lang: str, tgt_lang: str,
                  cfg: LexiconConfig | None = None) -> Lexicon:
    """Learn a lexicon from aligned sentences (both directions of IBM-1, joined by geometric mean)."""
    cfg = cfg or LexiconConfig()
    if len(src_lines) != len(tgt_lines):
        raise ValueError(f"lexicon: {len(src_lines)} source lines but {len(tgt_lines)} target lines")
    if cfg.max_pairs:
        src_lines, tgt_lines = src_lines[:cfg.max_pairs], tgt_lines[:cfg.max_pairs]
    src_words = [words(s) for s in src_lines]
    tgt_words = [words(t) for t in tgt_lines]
    src_vocab: dict[str, int] = {"<null>": 0}
    tgt_vocab: dict[str, int] = {"<null>": 0}
    src_ids, tgt_ids = _index(src_words, src_vocab), _index(tgt_words, tgt_vocab)
    n_s, n_t = len(src_vocab), len(tgt_vocab)
    fwd_keys, fwd_p = ibm1(src_ids, tgt_ids, n_s, cfg.iterations)  # p(t|s), keys s * n_t + t
    rev_keys, rev_p = ibm1(tgt_ids, src_ids, n_t, cfg.iterations)  # p(s|t), keys t * n_s + s
    # Re-key the reverse table as s * n_t + t to join the two directions.
    rev_as_fwd = (rev_keys % n_s) * n_t + rev_keys // n_s
    order = np.argsort(rev_as_fwd)
    rev_as_fwd, rev_p = rev_as_fwd[order], rev_p[order]
    pos = np.clip(np.searchsorted(rev_as_fwd, fwd_keys), 0, len(rev_as_fwd) - 1)
    p_s_t = np.where(rev_as_fwd[pos] == fwd_keys, rev_p[pos], 0.0)
    strength = np.sqrt(fwd_p * p_s_t)

    src_count = Counter(w for ws in src_words for w in ws)
    src_names = {i: w for w, i in src_vocab.items()}
    tgt_names = {i: w for w, i in tgt_vocab.items()}
    entries: dict[str, list[Translation]] = {}
    keep = (strength >= cfg.min_strength) & (fwd_keys // n_t != 0) & (fwd_keys % n_t != 0)
    for k in np.flatnonzero(keep):
        s_word = src_names[int(fwd_keys[k] // n_t)]
        if src_count[s_word] < cfg.min_count:
            continue
        entries.setdefault(s_word, []).append(Translation(
            tgt_names[int(fwd_keys[k] % n_t)], round(float(strength[k]), 4), round(float(fwd_p[k]), 4),
            round(float(p_s_t[k]), 4)))
    for s_word, ts in entries.items():
        ts.sort(key=lambda t: (-t.strength, t.word))
        del ts[cfg.top_k:]
    kept_targets = {t.word for ts in entries.values() for t in ts}
    # Sentence-initial words are capitalised whatever they are: count them only as a fallback.
    inner, initial = Counter(), Counter()
    for line in tgt_lines:
        for i, w in enumerate(WORD_RE.findall(line)):
            if w.lower() in kept_targets:
                (initial if i == 0 else inner)[w] += 1
    surface: dict[str, str] = {}
    for counts in (inner, initial):
        for form, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
            surface.setdefault(form.lower(), form)
    ratios = [math.log(max(len(t), 1) / max(len(s), 1)) for s, t in zip(src_words, tgt_words) if s and t]
    mean = float(np.mean(ratios)) if ratios else 0.0
    std = float(np.std(ratios)) if ratios else 0.3
    return Lexicon(src_lang, tgt_lang, entries, surface, (round(mean, 5), round(std, 5)),
                   {**asdict(cfg), "n_pairs": len(src_lines), "src_lang": src_lang, "tgt_lang": tgt_lang})


def build_or_load(cfg: LexiconConfig, src_lang: str, tgt_lang: str, log=lambda m: None) -> Lexicon:
    """Load ``cfg.path``; build it from ``cfg.src_path``/``cfg.tgt_path`` (and save it) when missing.

    A lexicon built under a different config or language pair is an error, not a silent reuse.
    """
    from core_seq2seq.data import read_parallel_files

    if cfg.path and Path(cfg.path).exists():
        lex = Lexicon.load(cfg.path)
        if (lex.src_lang, lex.tgt_lang) != (src_lang, tgt_lang):
            raise ConfigError(f"{cfg.path}: lexicon is {lex.src_lang}->{lex.tgt_lang}, the agent is {src_lang}->{tgt_lang}")
        return lex
    if not (cfg.src_path and cfg.tgt_path):
        raise ConfigError(f"lexicon.path {cfg.path!r} does not exist and lexicon.src_path/tgt_path are not set")
    corpus, report = read_parallel_files(cfg.src_path, cfg.tgt_path, src_lang, tgt_lang)
    log(report.summary())
    lex = train_lexicon(corpus.src, corpus.tgt, src_lang, tgt_lang, cfg)
    if cfg.path:
        lex.save(cfg.path)
        log(f"lexicon: {len(lex.entries)} source words -> {cfg.path}")
    return lex


def config_from_dict(data: dict) -> LexiconConfig:
    return from_dict(LexiconConfig, data, "lexicon")
