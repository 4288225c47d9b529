"""Tools that revise a hypothesis: re-decode wider, sample and rerank, MBR among the candidates so
far, constrained re-decoding, and the learned refiner's rewrite of the draft (``agents.refiner``).
(The last tool, "accept", is the policy's stop decision.)

Each tool proposes at most one new hypothesis per sentence and adds every candidate it produced
to the sentence's pool (for MBR later); whether a proposal replaces the current hypothesis is the
policy's acceptance rule, not the tool's.

Constrained re-decoding (``constraint_hook``) runs ``core_seq2seq.search.beam_search`` with a
``step_hook`` that edits each row's next-token log-probs:

* **ban** a token sequence (a repeated n-gram's second occurrence, a source word copied
  untranslated, a stutter): when a row's prefix ends with all but the last token of the sequence
  and the sequence already occurs ``allowed`` times, the last token gets -inf;
* **require** a target word for a missed source word (its lexicon translations, any one of them
  satisfies the requirement): until the decoded prefix contains one of them, the next token of
  each alternative's subword sequence (continuing a partial match when the prefix ends inside one,
  else its first token) gets a bonus of ``bonus / len(tokens)`` nats, and ``</s>`` a penalty of
  ``eos_penalty``. A hypothesis collects the bonus once however early or late it places the
  word, so the model, not the bonus, decides where the word goes; beam search (not greedy) lets a
  hypothesis that places the word later survive. The constraint is soft: a word the model finds
  very unlikely in every position still loses, which protects against a wrong lexicon entry.

Bonuses distort the search's totals, so the chosen hypothesis is rescored with the translator.

Batching: the hook gets no sentence index, and search drops finished sentences from the batch, so
a row's sentence is not known from its position. ``_TaggingEnsemble`` carries each row's sentence
id through the decoder states (``EncoderState.select_rows`` is how search reorders, expands and
drops rows) and exposes it to the hook, so one batched beam search serves many sentences, each under
its own constraints. A test holds it equal to decoding each sentence alone.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch

from core_seq2seq import search
from core_seq2seq.modeling_lstm import EncoderState
from core_seq2seq.tokenizer import decode_batch, encode_batch
from core_seq2seq.translator import Candidate, DecodeSettings, LSTMTranslator, Translator, source_tensor

from .critic import selection_score
from .lexicon import Lexicon, words

TOOLS = ("wider_beam", "sample_rerank", "mbr", "constrained", "refine")


@dataclass
class MBRConfig:
    utility: str = "chrf"  # chrf | bleu (inference_compute.mbr)
    weighted: bool = True  # weight pool candidates by their forward probability (else uniform)
    min_pool: int = 3  # MBR needs at least this many distinct candidates


@dataclass
class ConstrainedConfig:
    MOVED = {"beam_size": "tools.constrained.decode.beam_size"}

    # the constrained re-decode: a beam search (core_seq2seq decode keys; its n-best is the whole beam)
    decode: DecodeSettings = field(default_factory=lambda: DecodeSettings(method="beam", beam_size=5, nbest=0))
    bonus: float = 4.0  # nats added over a required word's tokens until it is produced
    eos_penalty: float = 4.0  # nats taken from </s> while a required word is missing
    no_repeat_ngram: int = 0  # also ban every repeated subword n-gram of this size (0: only the critic's)
    max_requirements: int = 3  # at most this many required words per re-decode

    def __post_init__(self) -> None:
        if self.decode.method != "beam":
            raise ValueError(f"decode.method must be beam (constrained decoding is a beam search), got {self.decode.method!r}")


@dataclass
class ToolsConfig:
    """Every field is a YAML key of the ``tools:`` section; a tool's decode keys are those of a decode section."""

    MOVED = {"batch_size": "batch_size in each tool's decode keys (tools.wider_beam.batch_size, ...)"}

    # the wider re-decode: its nbest hypotheses are reranked and added to the pool
    wider_beam: DecodeSettings = field(default_factory=lambda: DecodeSettings(method="beam", beam_size=16, nbest=8))
    # sampling: num_samples per sentence, reranked (the seed is policy.seed + 1000 * step)
    sample_rerank: DecodeSettings = field(default_factory=lambda: DecodeSettings(method="sample", num_samples=16, top_p=0.95))
    mbr: MBRConfig = field(default_factory=MBRConfig)
    constrained: ConstrainedConfig = field(default_factory=ConstrainedConfig)
    # the refiner's decode of "source ||| draft": its nbest rewrites are reranked and added to the pool
    refine: DecodeSettings = field(default_factory=lambda: DecodeSettings(method="beam", beam_size=5, nbest=0))  # 0: all

    def __post_init__(self) -> None:
        for key, method in (("wider_beam", "beam"), ("sample_rerank", "sample"), ("refine", "beam")):
            if getattr(self, key).method != method:
                raise ValueError(f"{key}.method must be {method}, got {getattr(self, key).method!r}")


# ---- constraints ------------------------------------------------------------------------------

@dataclass
class Constraints:
    """What constrained re-decoding must do for one sentence, as words (for the trace) and token ids."""

    require_words: list[list[str]] = field(default_factory=list)  # per missed source word: acceptable translations
    require: list[list[list[int]]] = field(default_factory=list)  # the same as subword id sequences
    ban_text: list[str] = field(default_factory=list)  # banned word sequences
    ban: list[tuple[list[int], int]] = field(default_factory=list)  # (ids, occurrences allowed)

    def empty(self) -> bool:
        return not (self.require or self.ban)

    def describe(self) -> dict:
        return {"require": self.require_words, "ban": self.ban_text}

    def key(self) -> str:
        return repr((sorted(map(tuple, self.require_words)), sorted(self.ban_text)))


def _variants(word: str) -> list[str]:
    """A word as it may be written: as given, and capitalised (sentence-initially)."""
    return list(dict.fromkeys([word, word[:1].upper() + word[1:]]))


def constraints_from_evidence(evidence: dict[str, list], tokenizer, max_requirements: int = 3) -> Constraints:
    """Turn the critic's evidence into constraints: repeated n-grams -> bans of another occurrence;
    copied source words -> bans of the copy plus a required translation; uncovered source words ->
    required translations."""
    c = Constraints()

    def ids(text: str) -> list[int]:
        return encode_batch(tokenizer, [text])[0]

    for item in evidence.get("repeated_ngrams", []):
        c.ban_text.append(item["ngram"])
        c.ban.append((ids(item["ngram"]), int(item["allowed"])))
    required: list[list[str]] = []
    for item in evidence.get("copied_source", []):
        for form in _variants(item["word"]):
            c.ban_text.append(form)
            c.ban.append((ids(form), 0))
        if item["translations"]:
            required.append(item["translations"])
    for item in evidence.get("uncovered_source", []):
        if item["translations"] and item["translations"] not in required:
            required.append(item["translations"])
    for alternatives in required[:max_requirements]:
        forms = list(dict.fromkeys(v for a in alternatives for v in _variants(a)))
        c.require_words.append(alternatives)
        c.require.append([ids(f) for f in forms if ids(f)])
    return c


def _ends_with(prefix: list[int], part: list[int]) -> bool:
    return not part or (len(prefix) >= len(part) and prefix[len(prefix) - len(part):] == part)


def _count(prefix: list[int], seq: list[int]) -> int:
    n = len(seq)
    return sum(prefix[i:i + n] == seq for i in range(len(prefix) - n + 1))


def _next_token(prefix: list[int], seq: list[int]) -> int:
    """The token of ``seq`` that continues the longest partial match at the end of ``prefix``."""
    for j in range(len(seq) - 1, 0, -1):
        if _ends_with(prefix, seq[:j]):
            return seq[j]
    return seq[0]


@dataclass
class _TaggedState(EncoderState):
    """Decoder state that also carries each row's sentence id (B,) through every row selection."""

    sid: torch.Tensor | None = None

    def select_rows(self, rows: torch.Tensor, sentences: torch.Tensor | None = None) -> "_TaggedState":
        return replace(super().select_rows(rows, sentences), sid=self.sid.index_select(0, rows))


def _tag(state: EncoderState, sid: torch.Tensor) -> _TaggedState:
    return _TaggedState(*state.astuple(), sid=sid)


@dataclass
class _TaggingEnsemble(search.Ensemble):
    """An Ensemble whose ``rows`` tells a step hook which sentence each row of the current step is."""

    rows: torch.Tensor | None = None

    def start(self, src: torch.Tensor, src_lengths: torch.Tensor) -> list[EncoderState]:
        sid = torch.arange(src.size(0), device=src.device)
        return [_tag(s, sid) for s in super().start(src, src_lengths)]

    def step(self, tokens: torch.Tensor, states: list[EncoderState]) -> tuple[torch.Tensor, list[EncoderState]]:
        self.rows = states[0].sid
        logp, new = super().step(tokens, states)
        return logp, [_tag(s, self.rows) for s in new]  # decode_step returns plain states: re-tag


def _row_edits(c: Constraints, required: list[set[str]], prefix: list[int], decode: Callable[[list[int]], str],
               bonus: float, no_repeat_ngram: int) -> tuple[dict[int, float], list[int], bool]:
    """For one row: token bonuses, banned tokens, and whether a requirement is still unmet."""
    boost: dict[int, float] = {}
    unmet = False
    if c.require:
        present = set(words(decode(prefix)))
        for i, alts in enumerate(required):
            if alts & present:
                continue
            unmet = True
            for seq in c.require[i]:
                tok = _next_token(prefix, seq)
                boost[tok] = max(boost.get(tok, 0.0), bonus / len(seq))
    banned = [seq[-1] for seq, allowed in c.ban
              if seq and _ends_with(prefix, seq[:-1]) and _count(prefix, seq) >= allowed]
    if no_repeat_ngram and len(prefix) >= no_repeat_ngram:
        n, tail = no_repeat_ngram, prefix[len(prefix) - no_repeat_ngram + 1:]
        banned += [prefix[i + n - 1] for i in range(len(prefix) - n + 1) if prefix[i:i + n - 1] == tail]
    return boost, banned, unmet


def constraint_hook(cs: Sequence[Constraints], row_sentence: Callable[[], torch.Tensor],
                    decode: Callable[[list[int]], str], eos_id: int, bonus: float, eos_penalty: float,
                    no_repeat_ngram: int = 0) -> search.StepHook:
    """A ``step_hook`` for ``core_seq2seq.search`` applying ``cs[sentence]`` to each row (see the
    module doc); ``row_sentence()`` gives the sentence of every row of the current step."""
    required = [[{w.lower() for w in alts} for alts in c.require_words] for c in cs]

    def hook(prefixes: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
        logp = logp.clone()
        sentence = row_sentence().tolist()
        for r, prefix in enumerate(prefixes.tolist()):
            i = sentence[r]
            boost, banned, unmet = _row_edits(cs[i], required[i], prefix, decode, bonus, no_repeat_ngram)
            for tok, b in boost.items():
                logp[r, tok] += b
            if unmet:
                logp[r, eos_id] -= eos_penalty
            if banned:
                logp[r, banned] = -math.inf
        return logp

    return hook


@torch.no_grad()
def constrained_decode(translator, sources: Sequence[str], cs: Sequence[Constraints], cfg: ConstrainedConfig
                       ) -> list[list[Candidate]]:
    """Batched beam search, each sentence under its own constraints; n-best with the model's own log-probs."""
    tok = translator.tokenizer
    ids = encode_batch(tok, list(sources))
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # length-sorted batches pad little
    out: list[list[Candidate]] = [[] for _ in ids]
    d = cfg.decode
    for start in range(0, len(order), d.batch_size):
        batch = order[start:start + d.batch_size]
        src, lengths = source_tensor([ids[i] for i in batch], translator.pad_id, translator.device)
        max_len = (lengths.float() * d.max_len_a + d.max_len_b).long()
        ensemble = _TaggingEnsemble(translator.models, translator.counter)
        hook = constraint_hook([cs[i] for i in batch], lambda: ensemble.rows, tok.backend_tokenizer.decode,
                               translator.eos_id, cfg.bonus, cfg.eos_penalty, cfg.no_repeat_ngram)
        hyps = search.beam_search(ensemble, src, lengths, translator.tag_id, translator.eos_id, max_len,
                                  d.beam_size, d.beam_size, d.length_penalty, step_hook=hook)
        for i, hs in zip(batch, hyps):
            texts = decode_batch(tok, [h.tokens for h in hs])
            out[i] = [Candidate(t, 0.0, 0, h.score, h.tokens) for t, h in zip(texts, hs)]
    flat = [(i, c) for i, cands in enumerate(out) for c in cands]
    true = translator.score([sources[i] for i, _ in flat], [c.text for _, c in flat])  # totals without bonuses
    for (_, c), (lp, n) in zip(flat, true):
        c.logprob, c.length = lp, n
    return out


def satisfied(c: Constraints, text: str) -> int:
    """How many requirements ``text`` meets."""
    present = set(words(text))
    return sum(bool({w.lower() for w in alts} & present) for alts in c.require_words)


# ---- candidate generation and choice -----------------------------------------------------------

def sample(translator: Translator, sources: Sequence[str], settings: DecodeSettings, seed: int) -> list[list[Candidate]]:
    return translator.translate(list(sources), replace(settings, seed=seed))


def rerank_scores(candidates: Sequence[Sequence[Candidate]], sources: Sequence[str], reverse: Translator | None,
                  reverse_weight: float) -> list[list[float]]:
    """``selection_score`` of every candidate: the same estimate the acceptance rule uses, so a tool
    proposes the candidate the policy is most likely to keep."""
    flat_src = [s for s, cs in zip(sources, candidates) for _ in cs]
    flat = [c for cs in candidates for c in cs]
    rev = reverse.score([c.text for c in flat], flat_src) if reverse is not None and reverse_weight and flat else None
    scores = [selection_score(c.logprob / max(c.length, 1), rev[i][0] / max(rev[i][1], 1) if rev else None,
                              reverse_weight) for i, c in enumerate(flat)]
    out, k = [], 0
    for cs in candidates:
        out.append(scores[k:k + len(cs)])
        k += len(cs)
    return out


def best_new(candidates: Sequence[Candidate], scores: Sequence[float], seen: set[str]) -> int | None:
    """Index of the best-scoring candidate whose text has not been proposed or held before."""
    best = None
    for i, (c, s) in enumerate(zip(candidates, scores)):
        if c.text.strip() and c.text not in seen and (best is None or s > scores[best]):
            best = i
    return best


def mbr_pick(texts: Sequence[str], logprobs: Sequence[float], cfg: MBRConfig) -> int:
    """MBR among the pool through inference_compute (uniform or forward-probability weights)."""
    from inference_compute.mbr import mbr_select, model_weights

    weights = model_weights(list(logprobs)) if cfg.weighted else None
    return int(mbr_select(list(texts), utility=cfg.utility, weights=weights))


def mbr_available() -> bool:
    try:
        return importlib.util.find_spec("inference_compute.mbr") is not None
    except ModuleNotFoundError:
        return False


# ---- the toolbox the loop calls ----------------------------------------------------------------

@dataclass
class Proposal:
    text: str | None  # the proposed hypothesis (None: nothing new)
    args: dict  # what the tool did, for the trace
    pool: list[tuple[str, float, int]] = field(default_factory=list)  # (text, logprob, length) produced


class Toolbox:
    """Binds the tools to the models and config; runs one tool for a group of sentences at once."""

    def __init__(self, forward: Translator, reverse: Translator | None, lexicon: Lexicon | None, cfg: ToolsConfig,
                 reverse_weight: float = 1.0, seed: int = 1234, refiner=None, refiner_weight: float = 0.0):
        self.forward, self.reverse, self.lexicon, self.cfg = forward, reverse, lexicon, cfg
        self.reverse_weight, self.seed = reverse_weight, seed
        self.refiner, self.refiner_weight = refiner, refiner_weight  # an agents.refiner.RefinerView, or None
        self.available = {"wider_beam", "sample_rerank"}
        if refiner is not None:
            self.available.add("refine")
        if isinstance(forward, LSTMTranslator):  # constrained search steps decade's own LSTM search
            self.available.add("constrained")
        if mbr_available():
            self.available.add("mbr")
        # Set to {} by tuning: a proposal is memoised on everything it depends on, so re-running the
        # loop under other thresholds re-decodes only sentences whose path changed. (Samples then
        # come from the batch they were first drawn in; tuning re-runs the chosen setting fresh.)
        self.cache: dict | None = None

    def constraints(self, evidence: dict[str, list]) -> Constraints | None:
        if "constrained" not in self.available:
            return None
        c = constraints_from_evidence(evidence, self.forward.tokenizer, self.cfg.constrained.max_requirements)
        return None if c.empty() else c

    def applicable(self, action: str, state) -> bool:
        """Can ``action`` do something new for this sentence (``state``: a loop.SentenceState)?"""
        if action == "accept":
            return True
        if action not in self.available:
            return False
        if action == "constrained":
            c = self.constraints(state.evidence)
            return c is not None and f"constrained:{c.key()}" not in state.tried
        if action == "mbr":
            return len(state.pool) >= self.cfg.mbr.min_pool and "mbr" not in state.tried
        return action not in state.tried

    def action_key(self, action: str, state) -> str:
        if action == "constrained":
            return f"constrained:{self.constraints(state.evidence).key()}"
        return action

    def run(self, action: str, states: Sequence, step: int) -> list[Proposal]:
        if self.cache is None:
            return self._run(action, states, step)
        keys = [self._cache_key(action, s, step) for s in states]
        todo = {k: s for k, s in zip(keys, states) if k not in self.cache}
        if todo:
            for k, p in zip(todo, self._run(action, list(todo.values()), step)):
                self.cache[k] = p
        return [self.cache[k] for k in keys]

    def _cache_key(self, action: str, state, step: int) -> tuple:
        return (action, step if action == "sample_rerank" else 0, self.reverse_weight, self.refiner_weight,
                state.source, state.draft, state.current,
                tuple(sorted(state.seen)), tuple(sorted(state.pool)) if action == "mbr" else ())

    def _run(self, action: str, states: Sequence, step: int) -> list[Proposal]:
        if action in ("wider_beam", "sample_rerank"):
            return self._generate(action, states, step)
        if action == "mbr":
            return [self._mbr(s) for s in states]
        if action == "constrained":
            return self._constrained(states)
        if action == "refine":
            return self._refine(states)
        raise ValueError(f"unknown tool {action!r}; known: {', '.join(TOOLS)}")

    def _generate(self, action: str, states: Sequence, step: int) -> list[Proposal]:
        sources = [s.source for s in states]
        if action == "wider_beam":
            cands = self.forward.translate(list(sources), self.cfg.wider_beam)
            args = {"beam_size": self.cfg.wider_beam.beam_size, "nbest": self.cfg.wider_beam.nbest}
        else:
            seed = self.seed + 1000 * step  # deterministic under the policy seed, different per step
            cands = sample(self.forward, sources, self.cfg.sample_rerank, seed)
            args = {"num_samples": self.cfg.sample_rerank.num_samples, "seed": seed}
        cands = [_dedupe(cs) for cs in cands]
        scores = rerank_scores(cands, sources, self.reverse, self.reverse_weight)
        out = []
        for s, cs, sc in zip(states, cands, scores):
            i = best_new(cs, sc, s.seen)
            out.append(Proposal(cs[i].text if i is not None else None,
                                {**args, "candidates": len(cs), "rank_score": round(sc[i], 4) if i is not None else None},
                                [(c.text, c.logprob, c.length) for c in cs]))
        return out

    def _mbr(self, state) -> Proposal:
        texts = list(state.pool)
        i = mbr_pick(texts, [state.pool[t][0] for t in texts], self.cfg.mbr)
        text = texts[i]
        return Proposal(text if text not in state.seen else None,
                        {"utility": self.cfg.mbr.utility, "pool": len(texts), "weighted": self.cfg.mbr.weighted})

    def _constrained(self, states: Sequence) -> list[Proposal]:
        cs = [self.constraints(s.evidence) for s in states]
        cands = constrained_decode(self.forward, [s.source for s in states], cs, self.cfg.constrained)
        out = []
        for state, c, cc in zip(states, cs, cands):
            # Soft constraints can fail: prefer hypotheses meeting the most requirements, then the search's order.
            order = sorted(range(len(cc)), key=lambda i: (-satisfied(c, cc[i].text), i))
            pick = next((i for i in order if cc[i].text.strip() and cc[i].text not in state.seen), None)
            out.append(Proposal(cc[pick].text if pick is not None else None,
                                {**c.describe(), "met": satisfied(c, cc[pick].text) if pick is not None else 0,
                                 "beam_size": self.cfg.constrained.decode.beam_size},
                                [(x.text, x.logprob, x.length) for x in cc]))
        return out

    def _refine(self, states: Sequence) -> list[Proposal]:
        """The refiner's n-best rewrites of each draft, ranked by the selection score (forward,
        reverse and refiner per-token log-probs), the best new one proposed."""
        sources, drafts = [s.source for s in states], [s.draft for s in states]
        cands = [_dedupe(cs) for cs in self.refiner.nbest(sources, drafts)]
        flat = [(k, c) for k, cs in enumerate(cands) for c in cs]
        fwd = self.forward.score([sources[k] for k, _ in flat], [c.text for _, c in flat]) if flat else []
        rescored = [[] for _ in states]  # the same texts with forward log-probs: pool and MBR weights
        own = [[] for _ in states]
        for (k, c), (lp, n) in zip(flat, fwd):
            rescored[k].append(Candidate(c.text, lp, n, lp / max(n, 1), c.tokens))
            own[k].append(c.logprob / max(c.length, 1))
        scores = rerank_scores(rescored, sources, self.reverse, self.reverse_weight)
        out = []
        for k, s in enumerate(states):
            sc = [x + self.refiner_weight * r for x, r in zip(scores[k], own[k])]
            i = best_new(rescored[k], sc, s.seen)
            out.append(Proposal(rescored[k][i].text if i is not None else None,
                                {"nbest": len(rescored[k]), "refiner_rank": i,
                                 "rank_score": round(sc[i], 4) if i is not None else None},
                                [(c.text, c.logprob, c.length) for c in rescored[k]]))
        return out


def _dedupe(cands: Sequence[Candidate]) -> list[Candidate]:
    """One candidate per distinct text (different subword splits decode to the same text)."""
    seen: dict[str, Candidate] = {}
    for c in cands:
        if c.text not in seen or c.logprob > seen[c.text].logprob:
            seen[c.text] = c
    return list(seen.values())
