"""The critic: reference-free signals about a hypothesis, and thresholds that turn them into flags.

Measuring and judging are separate. ``Critic.measure`` runs the models (batched over sentences)
and the small pure signal functions below, each returning a ``Finding``: a value and the evidence
behind it (which words are missing, which n-gram repeats), which the tools use to repair. ``judge``
compares the values with thresholds (tuned on val by ``agents.tune``) and is free, so tuning can
re-judge cached measurements under many thresholds.

Signals (``SIGNALS``; "high"/"low" says which side of the threshold is bad):

==================  ====  =====================================================================
round_trip          low   chrF++ of the back-translation (reverse model, greedy) against the source
noisy_channel       low   reverse log p(source | hyp) per source token
length_ratio        high  | log(hyp words / source words) - its mean on the training data |
repeated_ngrams     high  extra occurrences of repeated word bigrams (and stutters) beyond the source's own
copied_source       high  source words left untranslated in the hyp although the lexicon translates them
low_confidence      low   the lowest forward log-prob of any hypothesis token (``</s>`` included)
uncovered_source    high  reliably-translated source words with no lexicon counterpart in the hyp
refiner_margin      high  how much more the learned refiner (``agents.refiner``) prefers its own
                          rewrite of the draft than the hyp, per target token
==================  ====  =====================================================================

The last signal needs a refiner model (``models.refiner``); the others need at most the forward
and reverse models and the lexicon.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from core_seq2seq.tokenizer import encode_batch
from core_seq2seq.translator import DecodeSettings, Translator
from evals.metrics import sentence_chrf

from .lexicon import WORD_RE, Lexicon, words


@dataclass(frozen=True)
class Signal:
    bad_when: str  # "high" | "low"
    needs: str  # what it costs: "text" (free), "forward", "reverse" or "round_trip" (a reverse decode)
    help: str


SIGNALS: dict[str, Signal] = {
    "round_trip": Signal("low", "round_trip", "chrF++ of the back-translation against the source"),
    "noisy_channel": Signal("low", "reverse", "reverse log p(source | hyp) per source token"),
    "length_ratio": Signal("high", "text", "|log(hyp/source word ratio) - training mean|"),
    "repeated_ngrams": Signal("high", "text", "extra repeated bigrams/stutters beyond the source's"),
    "copied_source": Signal("high", "text", "source words copied untranslated"),
    "low_confidence": Signal("low", "forward", "lowest forward token log-prob"),
    "uncovered_source": Signal("high", "text", "source words with no lexicon counterpart"),
    "refiner_margin": Signal("high", "refiner", "refiner log p(own rewrite) - log p(hyp) per token"),
}
WITHOUT_REFINER = [s for s, sig in SIGNALS.items() if sig.needs != "refiner"]

# Untuned starting points: the word signals flag any occurrence; the model-based ones are off until
# ``agents.tune`` sets them from val (their scale depends on the model).
DEFAULT_THRESHOLDS: dict[str, float | None] = {
    "round_trip": None, "noisy_channel": None, "length_ratio": 0.7, "repeated_ngrams": 0.0,
    "copied_source": 0.0, "low_confidence": None, "uncovered_source": 0.0, "refiner_margin": None,
}


@dataclass
class CriticConfig:
    """Every field is a YAML key of the ``critic:`` section."""

    signals: list[str] = field(default_factory=lambda: list(WITHOUT_REFINER))  # signals measured
    thresholds: dict[str, float | None] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    round_trip_beam: int = 1  # beam of the back-translation (1: greedy)
    max_ngram: int = 4  # longest repeated n-gram reported as evidence
    cover_min_strength: float = 0.5  # a source word needs a counterpart only if its best translation is this strong
    cover_alt_min: float = 0.1  # a translation at least this strong counts as the counterpart
    require_rel: float = 0.5  # constrained re-decoding may use translations >= require_rel * the best one
    stem_min: int = 4  # inflections (shared prefix this long, all but 2 letters) and compounds match (0: exact only)
    copy_min_strength: float = 0.5  # a source word "should be translated" if its best translation is this strong...
    copy_identity_max: float = 0.1  # ...and the lexicon links it to itself at most this strongly
    batch_size: int = 64  # sentences per batched model call

    def __post_init__(self) -> None:
        unknown = [s for s in self.signals if s not in SIGNALS]
        unknown += [s for s in self.thresholds if s not in SIGNALS]
        if unknown:
            raise ValueError(f"unknown signal {unknown[0]!r}; known: {', '.join(SIGNALS)}")
        for name, v in self.thresholds.items():
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise ValueError(f"thresholds.{name}: expected a number or null, got {v!r}")
        self.thresholds = {**DEFAULT_THRESHOLDS, **self.thresholds}


@dataclass(frozen=True)
class Finding:
    value: float | None  # None: not measurable here (e.g. no token scores from this translator)
    evidence: tuple = ()  # what the tools need to repair it, and what the trace shows


@dataclass
class Measurement:
    """Everything the critic measured about one (source, hypothesis) pair."""

    values: dict[str, float | None]
    evidence: dict[str, list]
    fwd_norm: float  # forward log p(hyp </s> | src) per target token
    fwd_len: int  # target tokens, </s> included
    rev_norm: float | None  # reverse log p(src </s> | hyp) per source token (None without a reverse model)
    ref_norm: float | None = None  # refiner log p(hyp </s> | src ||| draft) per token (None without a refiner)

    def to_json(self) -> dict:
        out = {"values": {k: _round(v) for k, v in self.values.items()}, "evidence": self.evidence,
               "fwd_norm": _round(self.fwd_norm), "fwd_len": self.fwd_len, "rev_norm": _round(self.rev_norm)}
        if self.ref_norm is not None:
            out["ref_norm"] = _round(self.ref_norm)
        return out


def _round(v: float | None, digits: int = 4) -> float | None:
    return None if v is None else round(float(v), digits)


# ---- the signals: small pure functions ------------------------------------------------------

def round_trip(source: str, back_translation: str) -> Finding:
    """chrF++ of the back-translation against the source: meaning lost on the way shows up here."""
    return Finding(sentence_chrf(back_translation, source), (back_translation,))


def noisy_channel(reverse_logprob: float, source_tokens: int) -> Finding:
    """Reverse log p(source | hyp) per source token: how well the hypothesis explains the source."""
    return Finding(reverse_logprob / max(source_tokens, 1))


def length_ratio(source: str, hyp: str, mean_log_ratio: float) -> Finding:
    """Distance of log(hyp words / source words) from its training mean (too short or too long)."""
    s, h = max(len(words(source)), 1), max(len(words(hyp)), 1)
    ratio = math.log(h / s)
    return Finding(abs(ratio - mean_log_ratio), (f"{h}/{s} words",))


def _repeats(ws: Sequence[str]) -> int:
    bigrams = Counter(zip(ws, ws[1:]))
    stutters = sum(a == b for a, b in zip(ws, ws[1:]))
    return sum(c - 1 for c in bigrams.values()) + stutters


def repeated_ngrams(source: str, hyp: str, max_n: int = 4) -> Finding:
    """Extra occurrences of repeated word bigrams plus immediate word repeats, beyond the source's own
    count (a source that repeats itself licenses as many repeats). Evidence: the longest repeated
    n-grams (cased, as in the hyp), each with how often it may occur ("allowed")."""
    value = max(0, _repeats(words(hyp)) - _repeats(words(source)))
    if value == 0:
        return Finding(0.0)
    cased = WORD_RE.findall(hyp)
    low = [w.lower() for w in cased]
    evidence: list[dict] = []
    covered: set[tuple[str, ...]] = set()
    for n in range(min(max_n, len(low)), 1, -1):
        counts = Counter(tuple(low[i:i + n]) for i in range(len(low) - n + 1))
        for i in range(len(low) - n + 1):
            gram = tuple(low[i:i + n])
            if counts[gram] > 1 and gram not in covered and not any(_contains(c, gram) for c in covered):
                covered.add(gram)
                evidence.append({"ngram": " ".join(cased[i:i + n]), "allowed": 1})
    for i in range(len(low) - 1):
        if low[i] == low[i + 1] and (low[i], low[i]) not in covered:
            covered.add((low[i], low[i]))
            evidence.append({"ngram": f"{cased[i]} {cased[i + 1]}", "allowed": 0})
    return Finding(float(value), tuple(evidence))


def _contains(big: tuple[str, ...], small: tuple[str, ...]) -> bool:
    n = len(small)
    return any(big[i:i + n] == small for i in range(len(big) - n + 1))


def _matches(a: str, b: str, stem_min: int) -> bool:
    """Same word; an inflection of it (a shared prefix of >= stem_min letters and all but 2); or
    a compound containing it (hyp word ``a`` contains ``b`` of >= stem_min letters: "Handtasche")."""
    if a == b:
        return True
    if not stem_min:
        return False
    if len(b) >= stem_min and b in a:
        return True
    k = 0
    for x, y in zip(a, b):
        if x != y:
            break
        k += 1
    return k >= stem_min and k >= min(len(a), len(b)) - 2


def _should_translate(word: str, lexicon: Lexicon, min_strength: float, identity_max: float) -> bool:
    best = lexicon.best(word)
    return (best is not None and best.strength >= min_strength and best.word != word
            and lexicon.strength(word, word) <= identity_max and not word.isdigit())


def copied_source(source: str, hyp: str, lexicon: Lexicon, min_strength: float = 0.5,
                  identity_max: float = 0.1, explain_min: float = 0.1) -> Finding:
    """Source words that appear verbatim in the hypothesis although the lexicon translates them to
    something else, and that no other source word of the sentence translates to (German "an" is
    fine in a hypothesis when the source has "at")."""
    src, hyp_words = words(source), set(words(hyp))
    copied = []
    for w in dict.fromkeys(src):
        if w in hyp_words and _should_translate(w, lexicon, min_strength, identity_max):
            explained = any(lexicon.strength(v, w) >= explain_min for v in src if v != w)
            if not explained:
                copied.append({"word": w, "translations": _alternatives(lexicon, w, 0.5)})
    return Finding(float(len(copied)), tuple(copied))


def _alternatives(lexicon: Lexicon, word: str, rel: float) -> list[str]:
    """Surface forms of the word's translations within ``rel`` of the best one's strength."""
    ts = lexicon.translations(word)
    if not ts:
        return []
    return [lexicon.surface_form(t.word) for t in ts if t.strength >= rel * ts[0].strength]


def uncovered_source(source: str, hyp: str, lexicon: Lexicon, need_strength: float = 0.5, alt_min: float = 0.1,
                     stem_min: int = 4, require_rel: float = 0.5, identity_max: float = 0.1) -> Finding:
    """Source words whose translation the lexicon is sure of (best strength >= need_strength) but
    for which no hypothesis word is a translation (strength >= alt_min, inflections matched by
    prefix). Matching is one-to-one, most reliable source words first, so a source that says "the"
    twice needs two articles."""
    src = words(source)
    free = Counter(words(hyp))
    needs = [(w, lexicon.best(w)) for w in src]
    needs = [(w, b) for w, b in needs if b is not None and b.strength >= need_strength]
    needs.sort(key=lambda wb: -wb[1].strength)
    missing = []
    for w, _ in needs:
        options = [t.word for t in lexicon.translations(w, alt_min)]
        if not _should_translate(w, lexicon, need_strength, identity_max):
            options.append(w)  # names, numbers, cognates: the word itself is a fine counterpart
        hit = next((h for h in sorted(free) if free[h] > 0 and any(_matches(h, o, stem_min) for o in options)), None)
        if hit is None:
            missing.append({"word": w, "translations": _alternatives(lexicon, w, require_rel)})
        else:
            free[hit] -= 1
    return Finding(float(len(missing)), tuple(missing))


def low_confidence(token_logprobs: Sequence[float] | None, pieces: Sequence[str] = (), show: int = 3) -> Finding:
    """The lowest forward log-prob among the hypothesis tokens; evidence: the ``show`` lowest tokens."""
    if token_logprobs is None or not len(token_logprobs):
        return Finding(None)
    order = sorted(range(len(token_logprobs)), key=lambda i: token_logprobs[i])[:show]
    evidence = tuple({"token": pieces[i] if i < len(pieces) else "</s>", "position": i,
                      "logprob": round(float(token_logprobs[i]), 3)} for i in order)
    return Finding(float(min(token_logprobs)), evidence)


# ---- thresholds -----------------------------------------------------------------------------

def flagged(name: str, value: float | None, threshold: float | None) -> bool:
    """Is ``value`` on the bad side of ``threshold`` for signal ``name``? (None: never.)"""
    if value is None or threshold is None:
        return False
    return value > threshold if SIGNALS[name].bad_when == "high" else value < threshold


def judge(m: Measurement, thresholds: dict[str, float | None]) -> list[str]:
    """The flagged signals of one measurement, in ``SIGNALS`` order."""
    return [name for name in SIGNALS if name in m.values and flagged(name, m.values[name], thresholds.get(name))]


def selection_score(fwd_norm: float, rev_norm: float | None, reverse_weight: float, ref_norm: float | None = None,
                    refiner_weight: float = 0.0) -> float:
    """A reference-free quality estimate to compare candidates: forward plus weighted reverse per-token
    log-prob (noisy-channel reranking, Yee et al. 2019, without the language model), plus the
    weighted refiner log-prob per token when there is a refiner."""
    return (fwd_norm + (reverse_weight * rev_norm if rev_norm is not None else 0.0)
            + (refiner_weight * ref_norm if ref_norm is not None and refiner_weight else 0.0))


def refiner_margin(own_best_norm: float, hyp_norm: float) -> Finding:
    """How much more (per token) the refiner likes its own best rewrite of the draft than the hyp:
    0 when the hyp is the refiner's choice, large when the refiner would write something else."""
    return Finding(own_best_norm - hyp_norm)


class Critic:
    """Measures the signals of (source, hypothesis) pairs, batched; judges them against thresholds."""

    def __init__(self, forward: Translator, reverse: Translator | None, lexicon: Lexicon | None, cfg: CriticConfig,
                 refiner=None):
        needs = {SIGNALS[s].needs for s in cfg.signals}
        if reverse is None and needs & {"reverse", "round_trip"}:
            raise ValueError("critic: round_trip and noisy_channel need a reverse model (models.reverse)")
        if refiner is None and "refiner" in needs:
            raise ValueError("critic: refiner_margin needs a refiner model (models.refiner)")
        if lexicon is None and {"length_ratio", "copied_source", "uncovered_source"} & set(cfg.signals):
            raise ValueError("critic: the word signals need a lexicon (lexicon.path)")
        self.forward, self.reverse, self.lexicon, self.cfg = forward, reverse, lexicon, cfg
        self.refiner = refiner  # an agents.refiner.RefinerView, or None
        self.thresholds = dict(cfg.thresholds)
        self.cache: dict[tuple[str, str, str], Measurement] | None = None  # set by tuning: measure each once

    def judge(self, m: Measurement) -> list[str]:
        return judge(m, {k: v for k, v in self.thresholds.items() if k in self.cfg.signals})

    def measure(self, sources: Sequence[str], hyps: Sequence[str], drafts: Sequence[str] | None = None
                ) -> list[Measurement]:
        """Measure each (source, hyp); ``drafts`` (the sentence's draft, default the hyp itself) is the
        context the refiner reads."""
        drafts = list(hyps) if drafts is None else list(drafts)
        if self.cache is None:
            return self._measure(sources, hyps, drafts)
        keys = list(zip(sources, hyps, drafts))
        todo = sorted({k for k in keys if k not in self.cache})
        if todo:
            for key, m in zip(todo, self._measure(*map(list, zip(*todo)))):
                self.cache[key] = m
        return [self.cache[k] for k in keys]

    def _measure(self, sources: Sequence[str], hyps: Sequence[str], drafts: Sequence[str]) -> list[Measurement]:
        cfg, on = self.cfg, set(self.cfg.signals)
        n = len(sources)
        if n == 0:
            return []
        tok_lp = self.forward.token_logprobs(sources, hyps, cfg.batch_size)
        if tok_lp is None:  # a translator without token scores: totals only
            totals = self.forward.score(sources, hyps)
        else:
            totals = [(sum(t), len(t)) for t in tok_lp]
        rev: list[tuple[float, int]] | None = self.reverse.score(hyps, sources) if self.reverse is not None else None
        back = None
        if "round_trip" in on:
            settings = DecodeSettings(method="greedy" if cfg.round_trip_beam <= 1 else "beam",
                                      beam_size=max(cfg.round_trip_beam, 1), batch_size=cfg.batch_size)
            back = [c[0].text if c else "" for c in self.reverse.translate(list(hyps), settings)]
        ref = margins = None
        if self.refiner is not None:
            ref = self.refiner.score(sources, drafts, hyps)
            margins = [refiner_margin(b, h) if b is not None else Finding(None)
                       for b, h in zip(self.refiner.best_norm(sources, drafts), ref)]
        pieces = None
        if "low_confidence" in on and tok_lp is not None:
            tok = self.forward.tokenizer
            pieces = [tok.convert_ids_to_tokens(ids) for ids in encode_batch(tok, list(hyps))]
        out = []
        for i, (src, hyp) in enumerate(zip(sources, hyps)):
            found: dict[str, Finding] = {}
            if "round_trip" in on:
                found["round_trip"] = round_trip(src, back[i])
            if "noisy_channel" in on:
                found["noisy_channel"] = noisy_channel(*rev[i])
            if "length_ratio" in on:
                found["length_ratio"] = length_ratio(src, hyp, self.lexicon.length_log_ratio[0])
            if "repeated_ngrams" in on:
                found["repeated_ngrams"] = repeated_ngrams(src, hyp, cfg.max_ngram)
            if "copied_source" in on:
                found["copied_source"] = copied_source(src, hyp, self.lexicon, cfg.copy_min_strength,
                                                       cfg.copy_identity_max, cfg.cover_alt_min)
            if "low_confidence" in on:
                found["low_confidence"] = low_confidence(tok_lp[i] if tok_lp is not None else None,
                                                         pieces[i] if pieces is not None else ())
            if "uncovered_source" in on:
                found["uncovered_source"] = uncovered_source(src, hyp, self.lexicon, cfg.cover_min_strength,
                                                             cfg.cover_alt_min, cfg.stem_min, cfg.require_rel,
                                                             cfg.copy_identity_max)
            if "refiner_margin" in on:
                found["refiner_margin"] = margins[i]
            out.append(Measurement(
                values={k: f.value for k, f in found.items()},
                evidence={k: list(f.evidence) for k, f in found.items() if f.evidence},
                fwd_norm=totals[i][0] / max(totals[i][1], 1),
                fwd_len=totals[i][1],
                rev_norm=rev[i][0] / max(rev[i][1], 1) if rev is not None else None,
                ref_norm=ref[i] if ref is not None else None,
            ))
        return out
