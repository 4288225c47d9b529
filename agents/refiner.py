"""A learned refiner: a core_seq2seq translator whose source is the sentence *and* a draft of its
translation, trained to output the reference (draft-then-refine; Niehues et al. 2016 "Pre-translation
for NMT", Xia et al. 2017 "Deliberation networks").

Why it can add what reranking cannot: every other tool re-searches the same forward model, whose
preferences the draft's reranker already used. The refiner is a second model that reads a complete
draft, so it sees the whole target sentence (later words included) before it writes a word.

Training data must contain the errors the refiner will meet at test time. Drafts of the final model
on its own training data are too good (it has seen those references), so the drafts come from an
earlier checkpoint of the same run (or from jackknifed models), and a sentence may appear with
several drafts of different quality; ``refiner_corpus`` writes them as plain parallel files for
``python -m core_seq2seq train`` (``data.corpus: files``). The model is an ordinary LSTM translator:
``refiner_source(source, draft)`` is its input text, at training and at inference alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from core_seq2seq.search import DecodeCounter
from core_seq2seq.translator import DecodeSettings, Metered, Translator
from evals.textio import atomic_write_lines, check_same_length, read_lines

from .errors import AgentInputError

SEPARATOR = " ||| "  # between source and draft in the refiner's input (the joint BPE learns it as a token)


def refiner_source(source: str, draft: str) -> str:
    """The refiner's input text for one sentence."""
    return f"{source.strip()}{SEPARATOR}{draft.strip()}"


def refiner_corpus(sources: Sequence[str], drafts: Sequence[Sequence[str]], references: Sequence[str],
                   ) -> tuple[list[str], list[str]]:
    """Refiner training pairs: one ``(refiner_source(source, draft), reference)`` per draft list and line.

    Lines whose draft is empty are skipped (a draft that failed is no example of one to fix)."""
    src_out, tgt_out = [], []
    for d in drafts:
        if len(d) != len(sources) or len(references) != len(sources):
            raise ValueError("sources, every draft list and references must have the same length")
        for s, h, r in zip(sources, d, references):
            if s.strip() and h.strip() and r.strip():
                src_out.append(refiner_source(s, h))
                tgt_out.append(r.strip())
    return src_out, tgt_out


def write_refiner_corpus(src_path: str, ref_path: str, draft_paths: Sequence[str], out_src: str | Path,
                         out_tgt: str | Path) -> int:
    """Read the files (errors name file and line), write the refiner pairs atomically; returns their count."""
    sources, refs = read_lines(src_path), read_lines(ref_path)
    drafts = [read_lines(p) for p in draft_paths]
    check_same_length([(src_path, sources), (ref_path, refs)] + list(zip(draft_paths, drafts)))
    for path, lines in [(src_path, sources)] + list(zip(draft_paths, drafts)):
        for number, line in enumerate(lines, start=1):
            if SEPARATOR.strip() in line:
                raise AgentInputError(f"contains the refiner separator {SEPARATOR.strip()!r}", path, number)
    src_out, tgt_out = refiner_corpus(sources, drafts, refs)
    atomic_write_lines(out_src, src_out)
    atomic_write_lines(out_tgt, tgt_out)
    return len(src_out)


class RefinerView:
    """The refiner as the agent sees it: for a (source, draft) pair, its n-best rewrites and its
    log-prob of any hypothesis, both conditioned on ``refiner_source(source, draft)``.

    Decodes are memoised per (source, draft): the critic's ``refiner_margin`` signal and the
    ``refine`` tool use the same beam search, so the tool costs no second decode.

    ``Metered`` through its translator (read by the loop's cost meter), not a Translator itself.
    """

    members: Sequence[Metered] = ()

    def __init__(self, translator: Translator, settings: DecodeSettings):
        self.translator, self.settings = translator, settings
        self._nbest: dict[tuple[str, str], list] = {}
        self._best_norm: dict[tuple[str, str], float | None] = {}

    @property
    def counter(self) -> DecodeCounter | None:
        return self.translator.counter

    @property
    def models(self) -> Sequence[torch.nn.Module]:
        return self.translator.models

    def flops(self, counts: DecodeCounter | Mapping[str, float]) -> float:
        flops = self.translator.flops(counts)
        return 0.0 if flops is None else flops  # a refiner without a FLOP model is charged nothing

    def nbest(self, sources: Sequence[str], drafts: Sequence[str]) -> list[list]:
        """The refiner's n-best ``Candidate`` lists (its own log-probs), best first."""
        keys = list(zip(sources, drafts))
        todo = list(dict.fromkeys(k for k in keys if k not in self._nbest))
        if todo:
            cands = self.translator.translate([refiner_source(s, d) for s, d in todo], self.settings)
            for k, cs in zip(todo, cands):
                self._nbest[k] = [c for c in cs if c.text.strip()]
        return [self._nbest[k] for k in keys]

    def best_norm(self, sources: Sequence[str], drafts: Sequence[str]) -> list[float | None]:
        """``score`` of the refiner's own best rewrite (None: it produced none), memoised like ``nbest``:
        every critic call on a sentence's proposals compares against the same number."""
        keys = list(zip(sources, drafts))
        todo = list(dict.fromkeys(k for k in keys if k not in self._best_norm))
        if todo:
            best = [cs[0].text if cs else "" for cs in self.nbest([s for s, _ in todo], [d for _, d in todo])]
            have = [(k, b) for k, b in zip(todo, best) if b]
            scores = self.score([s for (s, _), _ in have], [d for (_, d), _ in have], [b for _, b in have])
            self._best_norm.update({k: None for k in todo})
            self._best_norm.update({k: v for (k, _), v in zip(have, scores)})
        return [self._best_norm[k] for k in keys]

    def score(self, sources: Sequence[str], drafts: Sequence[str], hyps: Sequence[str]) -> list[float]:
        """Refiner log p(hyp </s> | source ||| draft) per target token."""
        totals = self.translator.score([refiner_source(s, d) for s, d in zip(sources, drafts)], list(hyps))
        return [lp / max(n, 1) for lp, n in totals]
