"""Scoring candidates: one feature dict per candidate. Selecting one is ``rerank``'s job.

Features (log-probabilities in nats; ``*_per_token`` divides by the scored sequence's tokens incl. ``</s>``):

=================  ==========================================================================
``fwd``            log p(candidate | source) under the forward model
``fwd_per_token``  ``fwd`` / candidate tokens
``rev``            noisy channel: log p(source | candidate) under the reverse model
``rev_per_token``  ``rev`` / source tokens (under the reverse model's tokenizer)
``lm``             log p(candidate) under the target-side language model
``lm_per_token``   ``lm`` / candidate tokens (under the LM's tokenizer)
``r2l``            log p(reversed candidate | source) under a right-to-left model
``r2l_per_token``  ``r2l`` / its tokens
``alt``            log p(candidate | source) under another left-to-right model (a second opinion:
                   a differently seeded or differently trained forward model; a list: their mean)
``alt_per_token``  ``alt`` / its tokens
``tokens``         candidate tokens (forward model, incl. ``</s>``)
``len_ratio_dev``  | candidate words / source words - typical ratio |
=================  ==========================================================================

Every model scores all (source, candidate) pairs of all sentences in one batched ``score`` call.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from core_seq2seq.translator import Candidate, Translator

from .lm import PLACEHOLDER, TargetLM


class MeanScorer:
    """Several source->target Translators, each with its own tokenizer, scoring as one: the mean of
    their log-probabilities and of their token counts. (An ``LSTMTranslator`` ensemble needs one
    shared vocabulary; for models that share it the two give the same ``alt`` score.)

    A scorer, not a Translator (it cannot merge n-best lists written in different tokens). To a
    meter it is its ``members``: each is charged on its own counter and FLOP model."""

    counter = None  # nothing of its own: the members count their work
    models: Sequence[torch.nn.Module] = ()

    def __init__(self, members: Sequence[Translator]):
        if not members:
            raise ValueError("MeanScorer needs at least one translator")
        self.members = list(members)

    @property
    def src_lang(self) -> str:
        return self.members[0].src_lang

    @property
    def tgt_lang(self) -> str:
        return self.members[0].tgt_lang

    def flops(self, counts: Mapping[str, float]) -> None:
        return None  # its work is its members': see ``members``

    def score(self, sources: Sequence[str], targets: Sequence[str]) -> list[tuple[float, int]]:
        scored = [m.score(sources, targets) for m in self.members]
        n = len(scored)
        return [(sum(s[i][0] for s in scored) / n, round(sum(s[i][1] for s in scored) / n))
                for i in range(len(sources))]


def load_scorer(paths: str | Sequence[str] | None, device: str = "cpu") -> Translator | MeanScorer | None:
    """One model directory as a Translator; several as a ``MeanScorer`` (each keeps its tokenizer)."""
    from core_seq2seq.translator import LSTMTranslator

    if not paths:
        return None
    if isinstance(paths, str):
        return LSTMTranslator.load(paths, device=device)
    members = [LSTMTranslator.load(p, device=device) for p in paths]
    return members[0] if len(members) == 1 else MeanScorer(members)


def _langs(model: Translator | MeanScorer | TargetLM | None) -> tuple[str, str] | None:
    if model is None:
        return None
    src, tgt = model.src_lang, model.tgt_lang
    return (src, tgt) if src and tgt else None


def check_directions(forward: Any, reverse: Any | None = None, lm: Any | None = None, r2l: Any | None = None,
                     alt: Any | None = None) -> None:
    """Every scorer must fit the forward model's direction: a channel model translates back, an LM
    and a right-to-left or second model write the forward model's target language. A swapped model
    would rerank silently and badly; this names it instead."""
    fwd = _langs(forward)
    if fwd is None:
        return
    src, tgt = fwd
    expected = {"reverse (noisy channel)": (reverse, (tgt, src)), "r2l": (r2l, (src, tgt)), "alt": (alt, (src, tgt))}
    for role, (model, want) in expected.items():
        members = (model.members or [model]) if model is not None else []
        for m in members:
            got = _langs(m)
            if got is not None and got != want:
                raise ValueError(f"{role} model translates {got[0]}->{got[1]}, but the forward model is {src}->{tgt}: "
                                 f"expected {want[0]}->{want[1]}")
    got = _langs(lm)
    if lm is not None and got is not None and got[1] != tgt:
        raise ValueError(f"the LM writes {got[1]}, but the forward model's target language is {tgt}")


def reverse_words(text: str) -> str:
    """The word-reversed text a right-to-left model is trained on and scores."""
    return " ".join(reversed(text.split()))


def length_ratio(sources: Sequence[str], targets: Sequence[str]) -> float:
    """Target words per source word over a corpus (the 'typical' ratio of ``len_ratio_dev``)."""
    src = sum(len(s.split()) for s in sources)
    return sum(len(t.split()) for t in targets) / max(src, 1)


def _flatten(sources: Sequence[str], nbest: Sequence[Sequence[Candidate]]) -> tuple[list[str], list[Candidate], list[int]]:
    if len(sources) != len(nbest):
        raise ValueError(f"{len(sources)} sources but {len(nbest)} n-best lists")
    srcs, cands, counts = [], [], []
    for s, cs in zip(sources, nbest):
        srcs.extend([s] * len(cs))
        cands.extend(cs)
        counts.append(len(cs))
    return srcs, cands, counts


def _add(rows: list[dict[str, float]], name: str, scored: Sequence[tuple[float, int]]) -> None:
    for row, (logprob, length) in zip(rows, scored):
        row[name] = float(logprob)
        row[f"{name}_per_token"] = float(logprob) / max(int(length), 1)


def compute_features(sources: Sequence[str], nbest: Sequence[Sequence[Candidate]], forward: Any | None,
                     reverse: Any | None = None, lm: Any | None = None, *, r2l: Any | None = None,
                     alt: Any | None = None, typical_ratio: float = 1.0) -> list[list[dict[str, float]]]:
    """Features of every candidate, as ``nbest``-shaped lists of dicts.

    ``forward``: the Translator whose ``score`` gives ``fwd``; None takes each candidate's own
    ``logprob`` and ``length`` (the model that generated it: no extra compute). ``reverse``: a
    target->source Translator (noisy channel). ``lm``: a ``TargetLM`` (or a Translator, wrapped with
    the placeholder source). ``r2l``: a Translator trained on word-reversed targets. ``alt``: another
    source->target Translator, or a ``MeanScorer`` of several (their mean).
    """
    check_directions(forward, reverse, lm, r2l, alt)
    srcs, cands, counts = _flatten(sources, nbest)
    texts = [c.text for c in cands]
    rows: list[dict[str, float]] = [{} for _ in cands]
    fwd = forward.score(srcs, texts) if forward is not None else [(c.logprob, c.length) for c in cands]
    _add(rows, "fwd", fwd)
    if reverse is not None:
        _add(rows, "rev", reverse.score(texts, srcs))
    if lm is not None:
        _add(rows, "lm", (lm if isinstance(lm, TargetLM) else TargetLM(lm)).score(texts))
    if r2l is not None:
        _add(rows, "r2l", r2l.score(srcs, [reverse_words(t) for t in texts]))
    if alt is not None:
        _add(rows, "alt", alt.score(srcs, texts))
    for row, (_, length), s, t in zip(rows, fwd, srcs, texts):
        row["tokens"] = float(length)
        row["len_ratio_dev"] = abs(len(t.split()) / max(len(s.split()), 1) - typical_ratio)
    out, i = [], 0
    for n in counts:
        out.append(rows[i:i + n])
        i += n
    return out


# Features every candidate of a beam carries at no cost (its own score and length terms), in the order
# a tuner weighs them; every other feature needs a scoring model (``Scorers.select``'s margin saves those).
FREE_FEATURES = ("fwd_per_token", "tokens", "len_ratio_dev", "fwd")
# The order in which the scorers' ``*_per_token`` features are tuned (a tuner's random draws follow it).
SCORER_ROLES = ("reverse", "r2l", "lm", "alt")
FEATURE_OF = {"reverse": "rev", "r2l": "r2l", "lm": "lm", "alt": "alt"}


@dataclass
class Scorers:
    """The models that score an n-best besides the one that generated it, with the data's typical
    length ratio: every reranker (the ladder's, the sweep's, the CLI's, the agent's rungs, a
    ``RerankedTranslator``) loads, checks, meters and scores through one of these, and ``select``
    and ``tune_weights`` pick over what ``features`` returns."""

    reverse: Any | None = None  # target->source Translator: the noisy channel (``rev``)
    r2l: Any | None = None  # source->target Translator trained on word-reversed targets (``r2l``)
    lm: TargetLM | None = None  # target-language LM (``lm``)
    alt: Any | None = None  # another source->target Translator, or a MeanScorer of several (``alt``)
    forward: Any | None = None  # rescores ``fwd``; None: each candidate's own log-probability (free)
    typical_ratio: float = 1.0  # target words per source word on the tuning set (``len_ratio_dev``)

    @classmethod
    def load(cls, *, reverse: str | Sequence[str] | None = None, r2l: str | Sequence[str] | None = None, lm: str | None = None,
             alt: str | Sequence[str] | None = None, forward: str | Sequence[str] | None = None,
             typical_ratio: float = 1.0, device: str = "cpu", lm_placeholder: str = "") -> "Scorers":
        """Model directories -> models (a list for ``reverse``/``r2l``/``forward``: one ensemble; for ``alt``: the
        mean of several, each with its own tokenizer); None or empty: not used."""
        from core_seq2seq.translator import LSTMTranslator

        def translator(paths: str | Sequence[str] | None) -> Any | None:
            if not paths:
                return None
            return LSTMTranslator.load(paths if isinstance(paths, str) or len(paths) > 1 else paths[0], device=device)

        target_lm = TargetLM.load(lm, lm_placeholder or PLACEHOLDER, device) if lm else None
        return cls(reverse=translator(reverse), r2l=translator(r2l), lm=target_lm, alt=load_scorer(alt, device),
                   forward=translator(forward), typical_ratio=typical_ratio)

    @property
    def any_model(self) -> bool:
        """Whether any model beyond the forward one scores (without one, reranking is the forward score)."""
        return any(getattr(self, role) is not None for role in SCORER_ROLES)

    def check(self, generator: Any | None) -> None:
        """Every scorer fits the direction of ``forward`` (else of the model that made the candidates)."""
        check_directions(self.forward if self.forward is not None else generator, self.reverse, self.lm, self.r2l, self.alt)

    def feature_names(self) -> list[str]:
        """The per-token features a reranker weighs: the forward score, length, the length ratio's
        deviation, then one per scorer present."""
        return list(FREE_FEATURES[:3]) + [
            f"{FEATURE_OF[role]}_per_token" for role in SCORER_ROLES if getattr(self, role) is not None]

    def meters(self) -> dict[str, Any]:
        """The models to charge for scoring (``ComputeMeter``'s argument), by role."""
        return {"forward": self.forward, **{role: getattr(self, role) for role in SCORER_ROLES}}

    def needed(self, weights: Mapping[str, float]) -> "Scorers":
        """Only the scorers whose features carry weight (a zero-weighted scorer changes no choice)."""
        return replace(self, **{role: None for role in SCORER_ROLES
                                if not weights.get(f"{FEATURE_OF[role]}_per_token") and not weights.get(FEATURE_OF[role])})

    def features(self, sources: Sequence[str], nbest: Sequence[Sequence[Candidate]]) -> list[list[dict[str, float]]]:
        """``compute_features`` with these models: one feature dict per candidate, ``nbest``-shaped."""
        return compute_features(sources, nbest, self.forward, self.reverse, self.lm, r2l=self.r2l, alt=self.alt,
                                typical_ratio=self.typical_ratio)

    def select(self, sources: Sequence[str], nbest: Sequence[Sequence[Candidate]], weights: Mapping[str, float],
               margin: float | None = None) -> list[int]:
        """The reranker's pick per source (an index into its n-best). With ``margin``, the models
        score only the candidates ``rerank.within_margin`` keeps (a source left with one candidate
        is not scored at all): the same pick as without it wherever the full reranker's pick is
        among those kept. A rescoring ``forward`` model makes nothing free, so it takes no margin."""
        from . import rerank

        rerank.check_margin(margin, "margin")
        if margin is None or margin == math.inf:
            return rerank.select(self.features(sources, nbest), weights)
        if self.forward is not None:
            raise ValueError("a scoring margin needs the candidates' own scores: it cannot go with a rescoring forward model")
        have = set(FREE_FEATURES) | {f"{FEATURE_OF[r]}{s}" for r in SCORER_ROLES if getattr(self, r) is not None
                                     for s in ("", "_per_token")}
        missing = sorted(k for k, w in weights.items() if w and k not in have)
        if missing:  # without a margin the first candidate's features would say so; here none might be scored
            raise ValueError(f"the weights weigh {', '.join(missing)} but no model scores it (have: {', '.join(sorted(have))})")
        free = compute_features(sources, nbest, None, typical_ratio=self.typical_ratio)
        kept = rerank.within_margin(free, weights, margin)
        todo = [i for i, k in enumerate(kept) if len(k) > 1]
        picks = [k[0] for k in kept]
        if todo:
            feats = self.features([sources[i] for i in todo], [[nbest[i][j] for j in kept[i]] for i in todo])
            for i, p in zip(todo, rerank.select(feats, weights)):
                picks[i] = kept[i][p]
        return picks
