"""Candidate pools at a compute budget: beam n-best lists, samples, and de-duplicated unions of them.

A ``CandidateSpec`` lists one or more generation methods (each a ``DecodeSettings``); ``generate_candidates`` runs each over all
sources (the translator batches sentences, beams and samples: there is no per-sentence Python loop
around the model) and pools the results per source. Several token sequences can detokenise to the
same text (two subword segmentations of one word), and a union of methods finds the same text more
than once: de-duplication keeps the highest log-probability per text and remembers which methods
produced it and how often (the count is what a sampling-based MBR estimate needs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from core_seq2seq.translator import Candidate, DecodeSettings, Translator


@dataclass
class PooledCandidate(Candidate):
    """A ``Candidate`` that remembers where it came from."""

    method: str = ""  # the method whose copy was kept (highest log-probability)
    methods: list[str] = field(default_factory=list)  # every method that produced this text
    count: int = 1  # how many times it was produced (over all methods)


def default_name(m: DecodeSettings) -> str:
    """A method's label in n-best sidecars and result records: beam8, beam8n4, sample32_eps0.02, greedy."""
    if m.method == "greedy":
        return "greedy"
    if m.method == "beam":
        return f"beam{m.beam_size}" + (f"n{m.nbest}" if m.nbest and m.nbest != m.beam_size else "")
    parts = [f"sample{m.num_samples}"]
    for key, default, tag in (("temperature", 1.0, "t"), ("top_k", 0, "k"), ("top_p", 1.0, "p"), ("epsilon", 0.0, "eps")):
        value = getattr(m, key)
        if value != default:
            parts.append(f"{tag}{value:g}")
    return "_".join(parts)


@dataclass
class CandidateSpec:
    """A candidate pool. Every field is a YAML key of the ``candidates`` section."""

    MOVED = {k: f"{k} in each item of candidates.methods" for k in ("batch_size", "max_len_a", "max_len_b")}
    ITEM_DEFAULTS = {"methods": {"nbest": 0}}  # a pool keeps a beam's whole n-best unless nbest says otherwise

    # generation methods, pooled per source; each item has the keys of a decode section (core_seq2seq
    # DecodeSettings), except that nbest defaults to 0 (all beam_size hypotheses)
    methods: list[DecodeSettings] = field(default_factory=lambda: [DecodeSettings(nbest=0)])
    names: list[str] = field(default_factory=list)  # labels of the methods, in order ([]: derived, e.g. beam8, sample32)
    dedupe: bool = True  # merge equal texts (keep the best log-probability; remember methods and counts)

    def __post_init__(self) -> None:
        if not self.methods:
            raise ValueError("candidates.methods must name at least one method")
        if self.names and len(self.names) != len(self.methods):
            raise ValueError(f"candidates.names: {len(self.names)} names for {len(self.methods)} methods")
        names = self.method_names
        if len(set(names)) != len(names):
            raise ValueError(f"candidates.methods: names must be distinct, got {names}")

    @property
    def method_names(self) -> list[str]:
        return list(self.names) or [default_name(m) for m in self.methods]

    @property
    def name(self) -> str:
        return "+".join(self.method_names)

    def to_dict(self) -> dict:
        return asdict(self)


def beam_spec(beam_size: int, nbest: int = 0, batch_size: int = 64, **kw) -> CandidateSpec:
    """Shorthand: one beam search."""
    return CandidateSpec(methods=[DecodeSettings(method="beam", beam_size=beam_size, nbest=nbest, batch_size=batch_size)],
                         **kw)


def sample_spec(num_samples: int, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, epsilon: float = 0.0,
                seed: int = 1234, batch_size: int = 64, **kw) -> CandidateSpec:
    """Shorthand: one sampling method."""
    return CandidateSpec(methods=[DecodeSettings(method="sample", num_samples=num_samples, temperature=temperature,
                                                 top_k=top_k, top_p=top_p, epsilon=epsilon, seed=seed,
                                                 batch_size=batch_size)], **kw)


def pool(per_method: Sequence[tuple[str, list[Candidate]]], dedupe: bool = True) -> list[PooledCandidate]:
    """One source's candidates from several methods, pooled.

    Without de-duplication the methods' lists are concatenated in order. With it, each text appears
    once (its best log-probability kept) and the pool is ranked by log-probability per token, the
    one scale on which beam hypotheses and samples are comparable (beam scores are length-normalised
    and sample scores are not). A single method's de-duplicated list keeps that method's order.
    """
    out: list[PooledCandidate] = []
    by_text: dict[str, PooledCandidate] = {}
    for name, cands in per_method:
        for c in cands:
            seen = by_text.get(c.text) if dedupe else None
            if seen is None:
                p = PooledCandidate(c.text, c.logprob, c.length, c.score, list(c.tokens), method=name, methods=[name])
                out.append(p)
                if dedupe:
                    by_text[c.text] = p
                continue
            seen.count += 1
            if name not in seen.methods:
                seen.methods.append(name)
            if c.logprob > seen.logprob:
                seen.logprob, seen.length, seen.score, seen.tokens, seen.method = (
                    c.logprob, c.length, c.score, list(c.tokens), name)
    if dedupe and len(per_method) > 1:
        out.sort(key=lambda p: -p.logprob / max(p.length, 1))  # stable: ties keep generation order
    return out


def generate_candidates(translator: Translator, sources: Sequence[str], spec: CandidateSpec) -> list[list[Candidate]]:
    """Candidates per source (best first) under ``spec``: every method batched over all sources, then pooled.

    The returned items are ``PooledCandidate`` (a ``Candidate`` with ``method``, ``methods`` and ``count``).
    """
    sources = list(sources)
    results = [(name, translator.translate(sources, m)) for name, m in zip(spec.method_names, spec.methods)]
    return [pool([(name, res[i]) for name, res in results], spec.dedupe) for i in range(len(sources))]
