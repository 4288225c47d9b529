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
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from . import search
from .modeling_lstm import LSTMTranslatorForCausalLM
from .precision import autocast, resolve_precision
from .tokenizer import decode_batch, encode_batch, lang_tag


@dataclass
class DecodeSettings:
    """How to decode. Every field is a YAML key of the ``decode:`` section."""

    method: str = "beam"  # greedy | beam | sample
    beam_size: int = 5  # beam width (1-64)
    nbest: int = 1  # hypotheses returned per source (beam: <= beam_size)
    length_penalty: float = 1.0  # beam ranking: logprob / length ** length_penalty
    num_samples: int = 1  # sample: candidates per source
    temperature: float = 1.0  # sample: softmax temperature
    top_k: int = 0  # sample: keep the k most likely tokens (0: all)
    top_p: float = 1.0  # sample: nucleus mass (1.0: all)
    epsilon: float = 0.0  # sample: drop tokens with probability below epsilon
    max_len_a: float = 1.5  # max target tokens = a * source tokens + b
    max_len_b: int = 10
    batch_size: int = 64  # sentences per batch
    seed: int = 1234  # sampling seed

    def __post_init__(self) -> None:
        if self.method not in ("greedy", "beam", "sample"):
            raise ValueError(f"decode.method must be greedy, beam or sample, got {self.method!r}")
        if not 1 <= self.beam_size <= 256:
            raise ValueError(f"decode.beam_size must be in 1..256, got {self.beam_size}")
        from .config import check_ranges

        check_ranges(self, {"nbest": (1, None), "num_samples": (1, None), "temperature": (1e-6, None),
                            "top_k": (0, None), "top_p": (1e-6, 1.0), "epsilon": (0.0, 0.999), "max_len_a": (0.0, None),
                            "max_len_b": (0, None), "batch_size": (1, None)})


@dataclass
class Candidate:
    text: str
    logprob: float  # total log p(candidate </s> | source) under the translator
    length: int  # target tokens including </s>
    score: float  # the decoder's ranking score
    tokens: list[int] = field(default_factory=list)


@runtime_checkable
class Translator(Protocol):
    """What synth, inference_compute and agents need from a translation model."""

    src_lang: str
    tgt_lang: str

    def translate(self, sources: Sequence[str], settings: DecodeSettings) -> list[list[Candidate]]:
        """n-best (or samples) per source, best first."""

    def score(self, sources: Sequence[str], targets: Sequence[str]) -> list[tuple[float, int]]:
        """(total log p(target </s> | source), target length in tokens) per pair."""


def _batches(order: list[int], size: int):
    for i in range(0, len(order), size):
        yield order[i:i + size]


class LSTMTranslator:
    """decade's LSTM (one model or an ensemble sharing a tokenizer) behind the Translator interface."""

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

    @classmethod
    def load(cls, model_dirs: str | Path | Sequence[str | Path], src_lang: str | None = None,
             tgt_lang: str | None = None, device: str = "cpu", precision: str = "auto") -> "LSTMTranslator":
        """Load one model directory (or several, as an ensemble) saved by training; the tokenizer and
        the languages are read from the first directory."""
        dirs = [Path(model_dirs)] if isinstance(model_dirs, (str, Path)) else [Path(d) for d in model_dirs]
        for d in dirs:
            if not (d / "config.json").exists():
                raise FileNotFoundError(f"{d}: not a model directory (no config.json)")
        for d in dirs:
            if not (d / "tokenizer.json").exists():
                raise FileNotFoundError(f"{d}: no tokenizer.json beside the model")
        vocab = (dirs[0] / "tokenizer.json").read_bytes()
        for d in dirs[1:]:
            if (d / "tokenizer.json").read_bytes() != vocab:
                # An ensemble averages per-token log-probs, so its members must share one vocabulary;
                # models with their own tokenizers can still be combined as scorers (inference_compute.MeanScorer).
                raise ValueError(f"{d}: its tokenizer differs from {dirs[0]}'s; an ensemble needs one shared tokenizer")
        metas = [json.loads((d / "decade_meta.json").read_text()) if (d / "decade_meta.json").exists() else {} for d in dirs]
        for d, m in zip(dirs[1:], metas[1:]):  # an ensemble averages one direction's predictions
            pair = (m.get("src_lang"), m.get("tgt_lang"))
            first = (metas[0].get("src_lang"), metas[0].get("tgt_lang"))
            if None not in pair + first and pair != first:
                raise ValueError(f"{d} translates {pair[0]}->{pair[1]} but {dirs[0]} translates {first[0]}->{first[1]}: "
                                 "an ensemble needs one direction")
        models = [AutoModelForCausalLM.from_pretrained(d) for d in dirs]
        tokenizer = PreTrainedTokenizerFast.from_pretrained(dirs[0])
        meta_path = dirs[0] / "decade_meta.json"
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        src_lang, tgt_lang = src_lang or meta.get("src_lang"), tgt_lang or meta.get("tgt_lang")
        if not src_lang or not tgt_lang:
            raise ValueError(f"{dirs[0]}: languages unknown (no decade_meta.json); pass src_lang and tgt_lang")
        return cls(models, tokenizer, src_lang, tgt_lang, device, precision)

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
        lengths = torch.tensor([max(len(x), 1) for x in ids])
        src = torch.full((len(ids), int(lengths.max())), self.pad_id, dtype=torch.long)
        for i, x in enumerate(ids):
            src[i, :len(x)] = torch.tensor(x, dtype=torch.long)
        return src.to(self.device), lengths.to(self.device)

    @torch.no_grad()
    def translate(self, sources: Sequence[str], settings: DecodeSettings | None = None) -> list[list[Candidate]]:
        with autocast(self.precision, self.device):
            return self._translate(sources, settings or DecodeSettings())

    def _translate(self, sources: Sequence[str], settings: DecodeSettings) -> list[list[Candidate]]:
        start = time.perf_counter()
        ensemble = search.Ensemble(self.models, self.counter)
        ids = encode_batch(self.tokenizer, list(sources))
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # length-sorted batches pad little
        out: list[list[Candidate]] = [[] for _ in ids]
        generator = torch.Generator(device=self.device).manual_seed(settings.seed)
        for batch in _batches(order, settings.batch_size):
            src, lengths = self._source_tensor([ids[i] for i in batch])
            max_len = (lengths.float() * settings.max_len_a + settings.max_len_b).long()
            if settings.method == "greedy":
                hyps = [[h] for h in search.greedy_search(ensemble, src, lengths, self.tag_id, self.eos_id, max_len)]
            elif settings.method == "beam":
                hyps = search.beam_search(ensemble, src, lengths, self.tag_id, self.eos_id, max_len,
                                          settings.beam_size, settings.nbest, settings.length_penalty)
            else:
                hyps = search.sample(ensemble, src, lengths, self.tag_id, self.eos_id, max_len, settings.num_samples,
                                     settings.temperature, settings.top_k, settings.top_p, settings.epsilon, generator)
            for i, hs in zip(batch, hyps):
                texts = decode_batch(self.tokenizer, [h.tokens for h in hs])
                out[i] = [Candidate(t, h.logprob, h.length, h.score, h.tokens) for t, h in zip(texts, hs)]
        self.decode_seconds += time.perf_counter() - start
        return out

    @torch.no_grad()
    def score(self, sources: Sequence[str], targets: Sequence[str], batch_size: int = 128) -> list[tuple[float, int]]:
        """Batched log p(target </s> | source), averaged over ensemble members."""
        if len(sources) != len(targets):
            raise ValueError(f"score: {len(sources)} sources but {len(targets)} targets")
        with autocast(self.precision, self.device):
            return self._score(sources, targets, batch_size)

    def _score(self, sources: Sequence[str], targets: Sequence[str], batch_size: int) -> list[tuple[float, int]]:
        src_ids = encode_batch(self.tokenizer, list(sources))
        tgt_ids = encode_batch(self.tokenizer, list(targets))
        out: list[tuple[float, int]] = [(0.0, 0)] * len(src_ids)
        order = sorted(range(len(src_ids)), key=lambda i: len(tgt_ids[i]))
        for batch in _batches(order, batch_size):
            src, lengths = self._source_tensor([src_ids[i] for i in batch])
            tgt_in, tgt_out = target_tensors([tgt_ids[i] for i in batch], self.tag_id, self.eos_id, self.pad_id)
            tgt_in, tgt_out = tgt_in.to(self.device), tgt_out.to(self.device)
            logp = torch.stack([m.token_logprobs(src, lengths, tgt_in, tgt_out).sum(1) for m in self.models]).mean(0)
            self.counter.encoder_calls += len(self.models)
            self.counter.encoder_rows += len(batch) * len(self.models)
            self.counter.encoder_token_steps += int(lengths.sum()) * len(self.models)
            self.counter.decoder_calls += len(self.models)
            self.counter.decoder_row_steps += int(tgt_out.ne(self.pad_id).sum()) * len(self.models)
            for i, lp in zip(batch, logp.tolist()):
                out[i] = (lp, len(tgt_ids[i]) + 1)
        return out

    def compute(self) -> dict:
        """Compute spent so far, for result records."""
        return {**asdict(self.counter), "forward_calls": self.counter.decoder_calls,
                "decode_seconds": round(self.decode_seconds, 3),
                "flops": self.flops(self.counter)}


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
    """Any transformers ``AutoModelForSeq2SeqLM`` (Marian, T5, ...) behind the Translator interface."""

    def __init__(self, model, tokenizer, src_lang: str, tgt_lang: str, device: str = "cpu"):
        self.model = model.eval().to(device)
        self.tokenizer = tokenizer
        self.src_lang, self.tgt_lang = src_lang, tgt_lang
        self.device = torch.device(device)
        self.counter = search.DecodeCounter()

    @torch.no_grad()
    def translate(self, sources: Sequence[str], settings: DecodeSettings | None = None) -> list[list[Candidate]]:
        settings = settings or DecodeSettings()
        out: list[list[Candidate]] = []
        torch.manual_seed(settings.seed)
        for i in range(0, len(sources), settings.batch_size):
            batch = list(sources[i:i + settings.batch_size])
            enc = self.tokenizer(batch, return_tensors="pt", padding=True).to(self.device)
            n = {"greedy": 1, "beam": settings.nbest, "sample": settings.num_samples}[settings.method]
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
