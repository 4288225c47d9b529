"""The ``Translator`` interface every other stage uses: n-best translation with scores, and scoring of pairs.

Two implementations: ``LSTMTranslator`` (decade's model, one or an ensemble, decoded by
``search.py``) and ``HFSeq2SeqTranslator`` (any transformers ``AutoModelForSeq2SeqLM``, driven by
``generate()``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from safetensors import SafetensorError, safe_open
from transformers import AutoModelForCausalLM, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from . import distributed, search
from .config import KEYED_WHEN_SET
from .modeling_lstm import LSTMTranslatorForCausalLM
from .precision import autocast, resolve_precision
from .tokenizer import decode_batch, encode_batch, lang_tag


@dataclass
class DecodeSettings:
    """How to decode. Every field is a YAML key of the ``decode:`` section."""

    method: str = "beam"  # greedy | beam | sample
    beam_size: int = 5  # beam width (1-256)
    nbest: int = 1  # hypotheses returned per source (beam: <= beam_size; 0: all beam_size)
    length_penalty: float = 1.0  # beam ranking: logprob / length ** length_penalty
    num_samples: int = 1  # sample: candidates per source
    temperature: float = 1.0  # sample: softmax temperature
    top_k: int = 0  # sample: keep the k most likely tokens (0: all)
    top_p: float = 1.0  # sample: nucleus mass (1.0: all)
    epsilon: float = 0.0  # sample: drop tokens with probability below epsilon
    max_len_a: float = 1.5  # max target tokens = a * source tokens + b
    max_len_b: int = 10
    batch_size: int = 64  # sentences per batch
    batch_tokens: int = field(default=0, metadata=KEYED_WHEN_SET)  # also cap a batch at this many padded source tokens x beams/samples (0: sentences only)
    seed: int = 1234  # sampling seed (batch b of a call samples with its own generator, seeded from seed and b)

    def __post_init__(self) -> None:
        if self.method not in ("greedy", "beam", "sample"):
            raise ValueError(f"decode.method must be greedy, beam or sample, got {self.method!r}")
        if not 1 <= self.beam_size <= 256:
            raise ValueError(f"decode.beam_size must be in 1..256, got {self.beam_size}")
        from .config import check_ranges

        if self.method == "beam" and self.nbest > self.beam_size:
            raise ValueError(f"nbest must be between 0 (all) and beam_size={self.beam_size}, got {self.nbest}")
        check_ranges(self, {"nbest": (0, None), "num_samples": (1, None), "temperature": (1e-6, None),
                            "top_k": (0, None), "top_p": (1e-6, 1.0), "epsilon": (0.0, 0.999), "max_len_a": (0.0, None),
                            "max_len_b": (0, None), "batch_size": (1, None), "batch_tokens": (0, None)})

    def n_candidates(self) -> int:
        """Candidates per source this search returns."""
        return {"greedy": 1, "beam": self.nbest or self.beam_size, "sample": self.num_samples}[self.method]


@dataclass
class Candidate:
    text: str
    logprob: float  # total log p(candidate </s> | source) under the translator
    length: int  # target tokens including </s>
    score: float  # the decoder's ranking score
    tokens: list[int] = field(default_factory=list)


@runtime_checkable
class Metered(Protocol):
    """What the compute meters read from a model (``inference_compute.ComputeMeter``, the agents'
    FLOP bounds): every ``Translator``, and the scorers that are not translators (``TargetLM``,
    ``MeanScorer``, the agents' ``RefinerView``)."""

    # The work done so far (calls, row-steps; an ensemble counts each member). None: no work of its
    # own to count (it delegates to models metered on their own, or replays a finished run).
    counter: search.DecodeCounter | None
    # The separately metered models it combines (a MeanScorer's translators): a meter charges each
    # of them instead. Empty for a model that counts its own work; never the model itself.
    members: Sequence[Metered]
    # The networks every decoded row runs through (an ensemble's members; its counter counts each):
    # FLOPs of n decoded rows are flops() of n x len(models) counted rows. Empty when it runs none itself.
    models: Sequence[torch.nn.Module]

    def flops(self, counts: search.DecodeCounter | Mapping[str, float]) -> float | None:
        """Estimated forward FLOPs of the work in ``counts`` (a counter or its delta as a dict);
        None when it has no FLOP model (a meter then reports the FLOPs as unknown)."""


@runtime_checkable
class Translator(Metered, Protocol):
    """What synth, inference_compute and agents need from a translation model (with ``Metered``'s
    ``counter``, ``members``, ``models`` and ``flops``)."""

    src_lang: str
    tgt_lang: str
    tokenizer: PreTrainedTokenizerBase | None  # its scores' and token log-probs' tokens; None: none of its own

    def translate(self, sources: Sequence[str], settings: DecodeSettings) -> list[list[Candidate]]:
        """n-best (or samples) per source, best first."""

    def score(self, sources: Sequence[str], targets: Sequence[str]) -> list[tuple[float, int]]:
        """(total log p(target </s> | source), target length in tokens) per pair."""

    def token_logprobs(self, sources: Sequence[str], targets: Sequence[str],
                       batch_size: int = 64) -> list[list[float]] | None:
        """log p of every target token (``</s>`` last, in ``tokenizer``'s tokens) per pair, counted in
        ``counter``; None when it gives totals only (``score``)."""


def _batches(order: list[int], size: int, lengths: Sequence[int] = (), max_tokens: int = 0, rows: int = 1):
    """Consecutive slices of ``order`` (indices sorted by length): at most ``size`` items, and with
    ``max_tokens`` at most that many padded tokens (items x longest x ``rows`` per item, e.g. beams)."""
    batch: list[int] = []
    longest = 0
    for i in order:
        n = max(longest, lengths[i] if max_tokens else 0)
        if batch and (len(batch) == size or (max_tokens and (len(batch) + 1) * max(n, 1) * rows > max_tokens)):
            yield batch
            batch, n = [], lengths[i] if max_tokens else 0
        batch.append(i)
        longest = n
    if batch:
        yield batch


def batch_seed(seed: int, batch: int) -> int:
    """The sampling seed of batch ``batch`` of a call: each batch draws from its own generator, so a
    sentence's samples do not depend on which process decoded the batches before it."""
    return (seed + 1_000_003 * batch) % 2**63


def _serve(method: str, load_args: tuple, stamp: tuple, *args) -> None:
    """A helper process's part of a driver's ``translate``/``score`` call (``core_seq2seq.distributed``)."""
    try:
        translator = distributed.cached(_load_for_helper, load_args, stamp)
    except Exception as e:  # the driver raises it: a helper never hangs the run
        distributed.gather(("error", f"{type(e).__name__}: {e}", None), True)
        return
    with autocast(translator.precision, translator.device):  # as the driver's part runs
        getattr(translator, method)(*args, sharded=True)


def _load_for_helper(load_args: tuple, stamp: tuple) -> "LSTMTranslator":
    dirs, src, tgt, device, precision = load_args
    return LSTMTranslator.load(list(dirs) if len(dirs) > 1 else dirs[0], src, tgt, device, precision)


def load_model(path: str | Path) -> LSTMTranslatorForCausalLM:
    """A saved model (``save_pretrained`` directory), loaded without transformers' "Loading weights"
    progress bar: a ladder loads hundreds of models and one bar each buried its log."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        return AutoModelForCausalLM.from_pretrained(path)
    finally:
        if shown:
            hf_logging.enable_progress_bar()


class LSTMTranslator:
    """decade's LSTM (one model or an ensemble sharing a tokenizer) behind the Translator interface."""

    members: Sequence[Metered] = ()  # an ensemble is one model to a meter: one counter counts every member

    def __init__(self, models: LSTMTranslatorForCausalLM | Sequence[LSTMTranslatorForCausalLM],
                 tokenizer: PreTrainedTokenizerFast, src_lang: str, tgt_lang: str, device: str | torch.device = "cpu",
                 precision: str = "auto"):
        self.models = [models] if isinstance(models, LSTMTranslatorForCausalLM) else list(models)
        for m in self.models:
            m.eval().to(device)
        self.tokenizer = tokenizer
        self.src_lang, self.tgt_lang = src_lang, tgt_lang
        self.device = torch.device(device)
        self.tag_id = tokenizer.convert_tokens_to_ids(lang_tag(tgt_lang))
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id
        self.counter = search.DecodeCounter()
        self.decode_seconds = 0.0
        # Decoding and scoring follow the same precision rule as training (core_seq2seq.precision).
        self.precision = resolve_precision(precision, self.device.type)
        self.load_args: tuple | None = None  # set by load(): only a loaded translator is shared with helpers

    def _collective(self, method: str, *args):
        """Helpers join this call when the driver runs several processes and the model came from disk."""
        if self.load_args is None:
            return distributed.collective(None)
        weights = [Path(d) / "model.safetensors" for d in self.load_args[0]]
        stamp = tuple((p.stat().st_size, p.stat().st_mtime_ns) if p.exists() else None for p in weights)
        return distributed.collective(_serve, method, self.load_args, stamp, *args)

    @classmethod
    def load(cls, model_dirs: str | Path | Sequence[str | Path], src_lang: str | None = None,
             tgt_lang: str | None = None, device: str = "cpu", precision: str = "auto") -> "LSTMTranslator":
        """Load one model directory (or several, as an ensemble) saved by training; the tokenizer and
        the languages are read from the first directory.

        Every file is checked before torch sees it, so a bad directory is one error naming the file
        (``DataError``, or ``FileNotFoundError`` for a missing one), never a library traceback: the
        weights must be a complete ``model.safetensors`` (decade saves nothing else, and never
        unpickles weights), and languages passed in must match the ones the model was trained on
        (``decade_meta.json``): a model of the other direction would translate silently and badly."""
        from .data import DataError

        dirs = [Path(model_dirs)] if isinstance(model_dirs, (str, Path)) else [Path(d) for d in model_dirs]
        if not dirs:
            raise DataError("no model directory given")
        for d in dirs:
            if not d.exists():
                raise FileNotFoundError(f"{d}: no such model directory")
            if not d.is_dir():
                raise DataError(f"{d}: not a model directory (a file, not a directory)")
            if not (d / "config.json").exists():
                raise FileNotFoundError(f"{d}: not a model directory (no config.json)")
        for d in dirs:
            if not (d / "tokenizer.json").exists():
                raise FileNotFoundError(f"{d}: no tokenizer.json beside the model")
        for d in dirs:
            check_weights(d)
        vocab = (dirs[0] / "tokenizer.json").read_bytes()
        for d in dirs[1:]:
            if (d / "tokenizer.json").read_bytes() != vocab:
                # An ensemble averages per-token log-probs, so its members must share one vocabulary;
                # models with their own tokenizers can still be combined as scorers (inference_compute.MeanScorer).
                raise DataError(f"{d}: its tokenizer differs from {dirs[0]}'s; an ensemble needs one shared tokenizer")
        metas = [read_model_meta(d) for d in dirs]
        for d, m in zip(dirs[1:], metas[1:]):  # an ensemble averages one direction's predictions
            pair = (m.get("src_lang"), m.get("tgt_lang"))
            first = (metas[0].get("src_lang"), metas[0].get("tgt_lang"))
            if None not in pair + first and pair != first:
                raise DataError(f"{d} translates {pair[0]}->{pair[1]} but {dirs[0]} translates {first[0]}->{first[1]}: "
                                "an ensemble needs one direction")
        meta = metas[0]
        for d, m in zip(dirs, metas):
            for name, asked in (("src_lang", src_lang), ("tgt_lang", tgt_lang)):
                if asked and m.get(name) and m[name] != asked:
                    raise DataError(f"{d} translates {m.get('src_lang')}->{m.get('tgt_lang')} (decade_meta.json) but "
                                    f"{src_lang or m.get('src_lang')}->{tgt_lang or m.get('tgt_lang')} was asked for: "
                                    "is it the model of the other direction?")
        try:
            models = [load_model(d) for d in dirs]
            tokenizer = PreTrainedTokenizerFast.from_pretrained(dirs[0])
        except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as e:
            raise DataError(f"{', '.join(map(str, dirs))}: cannot load the model ({type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''})") from None
        src_lang, tgt_lang = src_lang or meta.get("src_lang"), tgt_lang or meta.get("tgt_lang")
        if not src_lang or not tgt_lang:
            raise DataError(f"{dirs[0]}: languages unknown (no decade_meta.json); pass src_lang and tgt_lang")
        translator = cls(models, tokenizer, src_lang, tgt_lang, device, precision)
        # What a helper process needs to load the same model (core_seq2seq.distributed); the weights'
        # size and mtime tell a reloaded directory from the one already cached.
        # (the precision as resolved here: a helper decodes as the driver does, whatever auto means there)
        translator.load_args = (tuple(str(d) for d in dirs), src_lang, tgt_lang, device, translator.precision)
        return translator

    def flops_per_token(self) -> float:
        """Decoder FLOPs of one target token, summed over ensemble members (encoder excluded)."""
        return sum(m.flops_per_target_token() for m in self.models)

    def flops(self, counts: search.DecodeCounter | Mapping[str, int]) -> float:
        """Estimated forward FLOPs of the work in ``counts`` (a counter or its delta as a dict): decoder
        row-steps times the decoder's cost per token plus encoded source tokens times the encoder's."""
        get = counts.get if isinstance(counts, Mapping) else lambda k, d=0: getattr(counts, k, d)
        n = len(self.models)
        dec = get("decoder_row_steps", 0) * self.flops_per_token() / n
        enc = get("encoder_token_steps", 0) * sum(m.encoder_flops_per_source_token() for m in self.models) / n
        return float(dec + enc)

    def _source_tensor(self, ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        return source_tensor(ids, self.pad_id, self.device)

    def _pair_logprobs(self, src_ids: list[list[int]], tgt_ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor,
                                                                                             torch.Tensor]:
        """Teacher-forced log p of each target token, averaged over members: ((B, T) log-probs, the
        (B, T) target with padding, the (B,) source lengths). Counting is the caller's."""
        src, lengths = self._source_tensor(src_ids)
        tgt_in, tgt_out = target_tensors(tgt_ids, self.tag_id, self.eos_id, self.pad_id)
        tgt_in, tgt_out = tgt_in.to(self.device), tgt_out.to(self.device)
        logp = torch.stack([m.token_logprobs(src, lengths, tgt_in, tgt_out) for m in self.models]).mean(0)
        return logp, tgt_out, lengths

    @torch.no_grad()
    def translate(self, sources: Sequence[str], settings: DecodeSettings | None = None) -> list[list[Candidate]]:
        settings = settings or DecodeSettings()
        with self._collective("_translate", list(sources), settings) as sharded, autocast(self.precision, self.device):
            return self._translate(sources, settings, sharded)

    @torch.no_grad()
    def _translate(self, sources: Sequence[str], settings: DecodeSettings, sharded: bool = False) -> list[list[Candidate]]:
        start = time.perf_counter()
        ensemble = search.Ensemble(self.models, self.counter)
        ids = encode_batch(self.tokenizer, list(sources))
        out: list[list[Candidate]] = [[] for _ in ids]
        # An empty (or blank) source is not decoded: the model would invent a sentence for it. It gets
        # empty candidates, as many as any other source, so outputs stay aligned with the input lines.
        n_out = settings.n_candidates()
        for i, text in enumerate(sources):
            if not text.strip():
                out[i] = [Candidate("", 0.0, 1, 0.0, []) for _ in range(n_out)]
        # length-sorted batches pad little
        order = sorted((i for i in range(len(ids)) if not out[i]), key=lambda i: len(ids[i]))
        rows = {"greedy": 1, "beam": settings.beam_size, "sample": settings.num_samples}[settings.method]
        batches = list(_batches(order, settings.batch_size, [len(x) for x in ids], settings.batch_tokens, rows))

        def work(batch: list[int], b: int) -> list[list[Candidate]]:
            src, lengths = self._source_tensor([ids[i] for i in batch])
            max_len = (lengths.float() * settings.max_len_a + settings.max_len_b).long()
            if settings.method == "greedy":
                hyps = [[h] for h in search.greedy_search(ensemble, src, lengths, self.tag_id, self.eos_id, max_len)]
            elif settings.method == "beam":
                hyps = search.beam_search(ensemble, src, lengths, self.tag_id, self.eos_id, max_len,
                                          settings.beam_size, n_out, settings.length_penalty)
            else:
                generator = torch.Generator(device=self.device).manual_seed(batch_seed(settings.seed, b))
                hyps = search.sample(ensemble, src, lengths, self.tag_id, self.eos_id, max_len, settings.num_samples,
                                     settings.temperature, settings.top_k, settings.top_p, settings.epsilon, generator)
            return [[Candidate(t, h.logprob, h.length, h.score, h.tokens)
                     for t, h in zip(decode_batch(self.tokenizer, [h.tokens for h in hs]), hs)] for hs in hyps]

        done = self._run_batches(batches, work, sharded)
        if done is None:  # a helper: the driver has the results
            return []
        for b, cands in done.items():
            for i, c in zip(batches[b], cands):
                out[i] = c
        self.decode_seconds += time.perf_counter() - start
        return out

    def _run_batches(self, batches: list[list[int]], work, sharded: bool) -> dict[int, list] | None:
        """``work(batch, b)`` for this process's share of ``batches`` (all of them unless sharded);
        sharded, the driver gets every batch's result and the helpers' decoder counts, helpers None."""
        before = asdict(self.counter)
        mine: dict[int, list] = {}
        try:
            for b in distributed.share(len(batches), sharded):
                mine[b] = work(batches[b], b)
            payload = ("ok", mine, {k: v - before[k] for k, v in asdict(self.counter).items()})
        except Exception as e:
            if not sharded:
                raise
            payload, error = ("error", f"{type(e).__name__}: {e}", None), e
        parts = distributed.gather(payload, sharded)
        if parts is None:
            return None
        done: dict[int, list] = {}
        for rank, (status, results, counts) in enumerate(parts):
            if status == "error":
                if rank == 0:
                    raise error
                raise RuntimeError(f"process {rank} of {len(parts)} failed: {results}")
            done.update(results)
            if rank > 0:  # count the helpers' work as this translator's: totals match one process
                self.counter.add(search.DecodeCounter(**counts))
        return done

    @torch.no_grad()
    def score(self, sources: Sequence[str], targets: Sequence[str], batch_size: int = 128) -> list[tuple[float, int]]:
        """Batched log p(target </s> | source), averaged over ensemble members."""
        if len(sources) != len(targets):
            raise ValueError(f"score: {len(sources)} sources but {len(targets)} targets")
        with self._collective("_score", list(sources), list(targets), batch_size) as sharded, \
                autocast(self.precision, self.device):
            return self._score(sources, targets, batch_size, sharded)

    @torch.no_grad()
    def _score(self, sources: Sequence[str], targets: Sequence[str], batch_size: int,
               sharded: bool = False) -> list[tuple[float, int]]:
        src_ids = encode_batch(self.tokenizer, list(sources))
        tgt_ids = encode_batch(self.tokenizer, list(targets))
        out: list[tuple[float, int]] = [(0.0, 0)] * len(src_ids)
        order = sorted(range(len(src_ids)), key=lambda i: len(tgt_ids[i]))
        batches = list(_batches(order, batch_size))

        def work(batch: list[int], b: int) -> list[tuple[float, int]]:
            logp, tgt_out, lengths = self._pair_logprobs([src_ids[i] for i in batch], [tgt_ids[i] for i in batch])
            logp = logp.sum(1)  # (B,): padded positions hold 0
            self.counter.encoder_calls += len(self.models)
            self.counter.encoder_rows += len(batch) * len(self.models)
            self.counter.encoder_token_steps += int(lengths.sum()) * len(self.models)
            self.counter.decoder_calls += len(self.models)
            self.counter.decoder_row_steps += int(tgt_out.ne(self.pad_id).sum()) * len(self.models)
            return [(lp, len(tgt_ids[i]) + 1) for i, lp in zip(batch, logp.tolist())]

        done = self._run_batches(batches, work, sharded)
        if done is None:
            return []
        for b, scores in done.items():
            for i, pair in zip(batches[b], scores):
                out[i] = pair
        return out

    @torch.no_grad()
    def token_logprobs(self, sources: Sequence[str], targets: Sequence[str], batch_size: int = 64) -> list[list[float]]:
        """log p of every target token (``</s>`` last) per pair, averaged over ensemble members; the
        decoder work is counted in ``counter`` (one process: the critic's per-token look)."""
        src_ids, tgt_ids = encode_batch(self.tokenizer, list(sources)), encode_batch(self.tokenizer, list(targets))
        out: list[list[float]] = [[] for _ in sources]
        order = sorted(range(len(sources)), key=lambda i: len(tgt_ids[i]))
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            with autocast(self.precision, self.device):  # as score(): the critic's tokens sum to the reranker's score
                logp, tgt_out, _ = self._pair_logprobs([src_ids[i] for i in batch], [tgt_ids[i] for i in batch])  # (B, T)
            self.counter.decoder_calls += len(self.models)
            self.counter.decoder_row_steps += int(tgt_out.ne(self.pad_id).sum()) * len(self.models)
            for row, i in enumerate(batch):
                out[i] = logp[row, :len(tgt_ids[i]) + 1].tolist()
        return out

    def compute(self) -> dict:
        """Compute spent so far, for result records."""
        return {**asdict(self.counter), "forward_calls": self.counter.decoder_calls,
                "decode_seconds": round(self.decode_seconds, 3),
                "flops": self.flops(self.counter)}


def read_model_meta(model_dir: str | Path) -> dict:
    """``decade_meta.json`` of a model directory (languages, config, scores); {} when there is none."""
    from .data import DataError

    path = Path(model_dir) / "decade_meta.json"
    if not path.exists():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise DataError(f"{path}: not a readable JSON file ({e})") from None
    if not isinstance(meta, dict):
        raise DataError(f"{path}: expected a JSON object")
    return meta


def model_languages(model_dir: str | Path) -> tuple[str, str] | None:
    """(source, target) language of a saved model, from its ``decade_meta.json`` (None if unknown)."""
    meta = read_model_meta(model_dir)
    src, tgt = meta.get("src_lang"), meta.get("tgt_lang")
    return (src, tgt) if src and tgt else None


def check_weights(model_dir: str | Path) -> None:
    """Raise ``FileNotFoundError``/``DataError`` naming ``model.safetensors`` if it is missing,
    truncated or not a safetensors file (its header is read and checked against the file size)."""
    from .data import DataError

    path = Path(model_dir) / "model.safetensors"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no model weights (decade saves them as model.safetensors)")
    try:
        with safe_open(str(path), framework="pt") as f:
            f.keys()
    except (SafetensorError, OSError, ValueError) as e:
        raise DataError(f"{path}: not a complete safetensors file, truncated or corrupt ({e})") from None


def source_tensor(ids: list[list[int]], pad: int, device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded source ids (B, S) and their lengths (B,) (an empty source counts as length 1)."""
    lengths = torch.tensor([max(len(x), 1) for x in ids])
    src = torch.full((len(ids), int(lengths.max())), pad, dtype=torch.long)
    for i, x in enumerate(ids):
        src[i, :len(x)] = torch.tensor(x, dtype=torch.long)
    return src.to(device), lengths.to(device)


def target_tensors(tgt_ids: list[list[int]], bos: int, eos: int, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoder input ``[<2xx>, y...]`` and output ``[y..., </s>]``, right-padded: each (B, T)."""
    T = max(len(y) for y in tgt_ids) + 1
    tgt_in = torch.full((len(tgt_ids), T), pad, dtype=torch.long)
    tgt_out = torch.full((len(tgt_ids), T), pad, dtype=torch.long)
    for i, y in enumerate(tgt_ids):
        tgt_in[i, :len(y) + 1] = torch.tensor([bos] + y, dtype=torch.long)
        tgt_out[i, :len(y) + 1] = torch.tensor(y + [eos], dtype=torch.long)
    return tgt_in, tgt_out


class HFSeq2SeqTranslator:
    """Any transformers ``AutoModelForSeq2SeqLM`` (Marian, T5, ...) behind the Translator interface.
    Its counter counts decoder calls only: it has no FLOP model and gives totals, not token log-probs."""

    members: Sequence[Metered] = ()

    def __init__(self, model, tokenizer, src_lang: str, tgt_lang: str, device: str = "cpu"):
        self.model = model.eval().to(device)
        self.tokenizer = tokenizer
        self.src_lang, self.tgt_lang = src_lang, tgt_lang
        self.device = torch.device(device)
        self.counter = search.DecodeCounter()

    @property
    def models(self) -> list[torch.nn.Module]:
        return [self.model]

    def flops(self, counts: search.DecodeCounter | Mapping[str, float]) -> None:
        return None

    def token_logprobs(self, sources: Sequence[str], targets: Sequence[str], batch_size: int = 64) -> None:
        return None

    @torch.no_grad()
    def translate(self, sources: Sequence[str], settings: DecodeSettings | None = None) -> list[list[Candidate]]:
        settings = settings or DecodeSettings()
        out: list[list[Candidate]] = []
        torch.manual_seed(settings.seed)
        for i in range(0, len(sources), settings.batch_size):
            batch = list(sources[i:i + settings.batch_size])
            enc = self.tokenizer(batch, return_tensors="pt", padding=True).to(self.device)
            n = settings.n_candidates()
            kwargs = dict(num_beams=settings.beam_size if settings.method == "beam" else 1,
                          do_sample=settings.method == "sample", num_return_sequences=n,
                          max_new_tokens=int(enc["input_ids"].size(1) * settings.max_len_a + settings.max_len_b),
                          length_penalty=settings.length_penalty, early_stopping=True)
            if settings.method == "sample":
                kwargs.update(temperature=settings.temperature, top_k=settings.top_k or None, top_p=settings.top_p,
                              epsilon_cutoff=settings.epsilon or None)
            gen = self.model.generate(**enc, **kwargs, return_dict_in_generate=True, output_scores=True)
            texts = self.tokenizer.batch_decode(gen.sequences, skip_special_tokens=True)
            pairs = self.score([s for s in batch for _ in range(n)], texts)
            self.counter.decoder_calls += len(gen.scores)
            for b in range(len(batch)):
                cands = [Candidate(texts[b * n + j], pairs[b * n + j][0], pairs[b * n + j][1], pairs[b * n + j][0])
                         for j in range(n)]
                out.append(cands)
        return out

    @torch.no_grad()
    def score(self, sources: Sequence[str], targets: Sequence[str]) -> list[tuple[float, int]]:
        enc = self.tokenizer(list(sources), text_target=list(targets), return_tensors="pt", padding=True).to(self.device)
        labels = enc.pop("labels")
        labels = labels.masked_fill(labels.eq(self.tokenizer.pad_token_id), -100)
        logits = self.model(**enc, labels=labels).logits
        logp = torch.log_softmax(logits.float(), -1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        logp = logp.masked_fill(labels.eq(-100), 0.0)
        self.counter.decoder_calls += 1
        return [(float(lp), int(n)) for lp, n in zip(logp.sum(1), labels.ne(-100).sum(1))]
