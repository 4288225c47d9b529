"""Candidate pools at a compute budget: beam n-best lists, samples, and de-duplicated unions of them.

A ``CandidateSpec`` names one or more generation methods; ``generate_candidates`` runs each over all
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


@dataclass
class MethodSpec:
    """One generation method. Every field is a YAML key of an item of ``candidates.methods``."""

    name: str = ""  # label in n-best sidecars and result records (default: derived, e.g. beam8, sample32)
    method: str = "beam"  # greedy | beam | sample
    beam_size: int = 5  # beam: width (1-64)
    nbest: int = 0  # beam: hypotheses kept per source (0: all beam_size)
    length_penalty: float = 1.0  # beam: finished hypotheses rank by logprob / length ** length_penalty
    num_samples: int = 1  # sample: candidates drawn per source
    temperature: float = 1.0  # sample: softmax temperature
    top_k: int = 0  # sample: keep the k most likely tokens (0: all)
    top_p: float = 1.0  # sample: nucleus mass (1.0: all)
    epsilon: float = 0.0  # sample: drop tokens with probability below epsilon (0: none)
    seed: int = 1234  # sample: seed of this method's generator

    def __post_init__(self) -> None:
        if self.method not in ("greedy", "beam", "sample"):
            raise ValueError(f"method must be greedy, beam or sample, got {self.method!r}")
        if self.method == "beam" and not 0 <= self.nbest <= self.beam_size:
            raise ValueError(f"nbest must be between 0 (all) and beam_size={self.beam_size}, got {self.nbest}")
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {self.num_samples}")
        if not self.name:
            self.name = default_name(self)

    def n_candidates(self) -> int:
        """Candidates per source before de-duplication."""
        return {"greedy": 1, "beam": self.nbest or self.beam_size, "sample": self.num_samples}[self.method]


def default_name(m: MethodSpec) -> str:
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

    methods: list[MethodSpec] = field(default_factory=lambda: [MethodSpec()])  # generation methods, pooled per source
    dedupe: bool = True  # merge equal texts (keep the best log-probability; remember methods and counts)
    batch_size: int = 64  # sentences per batch (rows per batch = this x beam or samples)
    max_len_a: float = 1.5  # max target tokens = a * source tokens + b
    max_len_b: int = 10

    def __post_init__(self) -> None:
        if not self.methods:
            raise ValueError("candidates.methods must name at least one method")
        names = [m.name for m in self.methods]
        if len(set(names)) != len(names):
            raise ValueError(f"candidates.methods: names must be distinct, got {names}")

    @property
    def name(self) -> str:
        return "+".join(m.name for m in self.methods)

    def settings(self, m: MethodSpec) -> DecodeSettings:
        """The core_seq2seq decode settings of one method of this pool."""
        return DecodeSettings(method=m.method, beam_size=m.beam_size if m.method == "beam" else 1,
                              nbest=(m.nbest or m.beam_size) if m.method == "beam" else 1,
                              length_penalty=m.length_penalty, num_samples=m.num_samples, temperature=m.temperature,
                              top_k=m.top_k, top_p=m.top_p, epsilon=m.epsilon, max_len_a=self.max_len_a,
                              max_len_b=self.max_len_b, batch_size=self.batch_size, seed=m.seed)

    def to_dict(self) -> dict:
        return asdict(self)


def beam_spec(beam_size: int, nbest: int = 0, **kw) -> CandidateSpec:
    """Shorthand: one beam search."""
    return CandidateSpec(methods=[MethodSpec(method="beam", beam_size=beam_size, nbest=nbest)], **kw)


def sample_spec(num_samples: int, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, epsilon: float = 0.0,
                seed: int = 1234, **kw) -> CandidateSpec:
    """Shorthand: one sampling method."""
    return CandidateSpec(methods=[MethodSpec(method="sample", num_samples=num_samples, temperature=temperature,
                                             top_k=top_k, top_p=top_p, epsilon=epsilon, seed=seed)], **kw)


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
    results = [(m.name, translator.translate(sources, spec.settings(m))) for m in spec.methods]
    return [pool([(name, res[i]) for name, res in results], spec.dedupe) for i in range(len(sources))]
