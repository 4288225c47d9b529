"""Learning from one's own ranked outputs: preference pairs from an n-best and a selector's scores, and
``RerankedTranslator``, the reranker (or MBR) over a beam n-best behind the ``Translator`` interface.

Preference pairs need no reference: per source, chosen = the selector's pick (the reranker's or
MBR's), rejected = the beam's best where it differs from the pick, else the next candidate below
the pick in the selector's order. A pair whose sides are identical or differ only in punctuation
and spacing teaches nothing and is dropped (``core_seq2seq.posttrain.differ_beyond_punctuation``);
sources where no candidate differs that way give no pair. The pairs are what
``python -m core_seq2seq posttrain`` (dpo, cpo, orpo) reads; the picks alone are distillation data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from core_seq2seq.posttrain import differ_beyond_punctuation
from core_seq2seq.translator import Candidate, DecodeSettings, Metered, Translator

from .features import Scorers
from .rerank import argmax


def preference_pairs(sources: Sequence[str], nbest: Sequence[Sequence[Candidate]],
                     scores: Sequence[Sequence[float]]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Pairs ``{"id", "src", "chosen", "rejected", "chosen_rank", "rejected_rank", "rejected_is"}`` (ranks
    in the n-best's own order, 0 = the beam's best) and counts of the sources that gave none."""
    if not len(sources) == len(nbest) == len(scores):
        raise ValueError(f"preference_pairs: {len(sources)} sources, {len(nbest)} n-best lists, {len(scores)} score lists")
    pairs, dropped = [], {"no_alternative": 0}
    for i, (src, cands, row) in enumerate(zip(sources, nbest, scores)):
        if len(cands) != len(row):
            raise ValueError(f"source {i}: {len(cands)} candidates but {len(row)} scores")
        if not cands:
            dropped["no_alternative"] += 1
            continue
        pick = argmax(row)
        chosen = cands[pick].text
        if not chosen.strip():  # an empty pick (the beam can end at once): nothing to learn to say
            dropped["empty_pick"] = dropped.get("empty_pick", 0) + 1
            continue
        if pick != 0 and cands[0].text.strip() and differ_beyond_punctuation(chosen, cands[0].text):
            rejected, kind = 0, "beam_best"
        else:
            below = sorted((r for r in range(len(cands)) if (row[r] < row[pick] or (row[r] == row[pick] and r > pick))
                            and cands[r].text.strip()), key=lambda r: (-row[r], r))
            rejected = next((r for r in below if differ_beyond_punctuation(chosen, cands[r].text)), None)
            kind = "next_ranked"
            if rejected is None:
                dropped["no_alternative"] += 1
                continue
        pairs.append({"id": i, "src": src, "chosen": chosen, "rejected": cands[rejected].text, "chosen_rank": pick,
                      "rejected_rank": rejected, "rejected_is": kind})
    return pairs, dropped


Ranker = Callable[[list[str]], tuple[list[list[Candidate]], list[list[float]]]]  # RerankedTranslator.rank


def preference_pairs_in_shards(rank: Ranker, sources: Sequence[str], shard_dir: str | Path, shard_size: int,
                               log: Callable[[str], None] = print,
                               ranked: Sequence[str | Path] = ()) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """``preference_pairs`` of ``sources`` ranked by ``rank``, ``shard_size`` lines at a time.

    Each shard's pairs go to ``shard_dir`` atomically as soon as they are made, so a killed run redoes
    only the shard in flight (ranking a 64-best with three scorers is the slow part). A shard file
    made from other source lines is an error, never reused; the key is the source lines only, so a
    caller that changes ``rank`` gives it another ``shard_dir`` (the ladder's stage directory is keyed
    by its teacher). ``ranked``: directories where the same ``rank`` already saved the pairs of the
    lines it translated (``RerankedTranslator(keep_pairs=...)``); a shard found there is not ranked
    again. Ids count from the first source."""
    from core_seq2seq.cache import cached, lines_digest, write_json
    from core_seq2seq.data import DataError

    shard_dir = Path(shard_dir)
    shard_dir.mkdir(parents=True, exist_ok=True)
    pairs: list[dict[str, Any]] = []
    dropped = {"no_alternative": 0}
    n_shards = (len(sources) + shard_size - 1) // shard_size
    for k, first in enumerate(range(0, len(sources), shard_size)):
        chunk = list(sources[first:first + shard_size])
        digest = lines_digest(chunk)
        path = shard_dir / f"shard-{k:05d}.json"
        done = cached(path, digest, field="sha256")  # the pairs and their key in one atomically written file
        if done is None:
            if path.exists():
                raise DataError(f"{path}: made from other source lines; remove {shard_dir} to rank again")
            kept = next((d for d in (cached(Path(r) / f"pairs-{digest}.json", digest, field="sha256") for r in ranked)
                         if d is not None), None)
            if kept is not None:
                made, lost, how = kept["pairs"], kept["dropped"], "taken from the ranking made for distillation"
            else:
                made, lost = preference_pairs(chunk, *rank(chunk))
                how = "ranked"
            done = {"first": first, "sources": len(chunk), "sha256": digest, "dropped": lost,
                    "pairs": [{**p, "id": p["id"] + first} for p in made]}
            write_json(path, done, indent=None)
            log(f"preference pairs: shard {k + 1}/{n_shards} {how} ({first + len(chunk)} of {len(sources)} sources)")
        pairs += done["pairs"]
        for key, count in done["dropped"].items():
            dropped[key] = dropped.get(key, 0) + count
    return pairs, dropped


class RerankedTranslator:
    """A beam n-best of ``forward`` ordered by a selector: reranker weights over features (noisy channel,
    right-to-left, LM), or MBR when ``mbr`` is given. ``translate`` returns every candidate, the
    selector's pick first; ``score`` is the forward model's. This is how a stacked system translates
    new text (distillation data) and ranks its own candidates (preference pairs).

    Its work is counted on the models it runs (their own counters), none on its own."""

    counter = None
    members: Sequence[Metered] = ()
    models: Sequence[torch.nn.Module] = ()

    def __init__(self, forward: Translator, nbest: int, weights: Mapping[str, float] | None = None,
                 scorers: Scorers | None = None, mbr: Any = None, batch_size: int = 64,
                 keep_pairs: str | Path | None = None):
        if weights is None and mbr is None:
            raise ValueError("RerankedTranslator: give reranker weights or an MBR config")
        self.forward, self.nbest, self.weights, self.mbr = forward, nbest, dict(weights or {}), mbr
        # keep_pairs: a directory where ``translate`` also saves the preference pairs of what it ranked
        # (one file per call, named by the sources' digest): the ranking is the slow part, and a
        # system that translates text for distillation has then ranked it for preference pairs too.
        self.keep_pairs = Path(keep_pairs) if keep_pairs is not None else None
        self.scorers, self.batch_size = scorers if scorers is not None else Scorers(), batch_size
        self.scorers.check(forward)
        self.src_lang, self.tgt_lang, self.tokenizer = forward.src_lang, forward.tgt_lang, forward.tokenizer

    def rank(self, sources: Sequence[str]) -> tuple[list[list[Candidate]], list[list[float]]]:
        """The beam n-best of every source (beam order) and the selector's score of each candidate."""
        from .candidates import beam_spec, generate_candidates
        from .mbr import expected_utility, reference_weights
        from .rerank import linear_scores

        nbest = generate_candidates(self.forward, list(sources), beam_spec(self.nbest, batch_size=self.batch_size))
        if self.mbr is not None:
            scores = [expected_utility([c.text for c in cs], self.mbr.utility, reference_weights(cs, self.mbr))
                      for cs in nbest]
        else:
            feats = self.scorers.features(list(sources), nbest)
            scores = linear_scores(feats, self.weights)
        return nbest, scores

    def translate(self, sources: Sequence[str], settings: DecodeSettings | None = None) -> list[list[Candidate]]:
        nbest, scores = self.rank(sources)
        if self.keep_pairs is not None:
            from core_seq2seq.cache import lines_digest, write_json

            digest = lines_digest(list(sources))
            made, lost = preference_pairs(list(sources), nbest, scores)
            self.keep_pairs.mkdir(parents=True, exist_ok=True)
            write_json(self.keep_pairs / f"pairs-{digest}.json",
                       {"sources": len(sources), "sha256": digest, "dropped": lost, "pairs": made}, indent=None)
        out = []
        for cands, row in zip(nbest, scores):
            order = sorted(range(len(cands)), key=lambda r: (-row[r], r))
            out.append([replace(cands[r], score=row[r]) for r in order])
        return out

    def score(self, sources: Sequence[str], targets: Sequence[str]) -> list[tuple[float, int]]:
        return self.forward.score(sources, targets)

    def token_logprobs(self, sources: Sequence[str], targets: Sequence[str],
                       batch_size: int = 64) -> list[list[float]] | None:
        return self.forward.token_logprobs(sources, targets, batch_size)

    def flops(self, counts: Mapping[str, float]) -> None:
        return None  # nothing counted on its own counter
