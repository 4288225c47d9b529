"""A target-side language model for the noisy channel: decade's own LSTM trained on monolingual
target captions with a (placeholder) empty source, so it scores ``log p(candidate)``.

core_seq2seq's data cleaning drops every pair with an empty side (``data.clean_pairs``), so a truly
empty source never reaches training. Until core_seq2seq accepts empty sources, the source is a
one-token placeholder (``"."``), used identically in training and scoring: the model then learns
p(target | ".") = p(target). The LM's run is used from ``<run>/last`` (or an average of its
checkpoints): ``best/`` is chosen by greedy-decoding BLEU, which means nothing for an LM whose
greedy output is one sentence for every input.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from core_seq2seq.search import DecodeCounter
from core_seq2seq.translator import Metered, Translator
from evals.textio import atomic_write_text

PLACEHOLDER = "."  # the "empty" source (see the module docstring)


class TargetLM:
    """``score(targets) -> [(log p(target </s>), length)]`` through a Translator and a placeholder source.

    Not a Translator itself (it scores targets alone), but ``Metered`` through its translator's counter
    and FLOP model, and it names its language: ``src_lang`` = ``tgt_lang`` = the language it writes."""

    members: Sequence[Metered] = ()

    def __init__(self, translator: Translator, placeholder: str = PLACEHOLDER):
        self.translator = translator
        self.placeholder = placeholder

    @property
    def counter(self) -> DecodeCounter | None:  # so ComputeMeter can charge it
        return self.translator.counter

    @property
    def models(self) -> Sequence[torch.nn.Module]:
        return self.translator.models

    @property
    def src_lang(self) -> str:
        return self.translator.src_lang

    @property
    def tgt_lang(self) -> str:
        return self.translator.tgt_lang

    def flops(self, counts: DecodeCounter | Mapping[str, float]) -> float | None:
        return self.translator.flops(counts)

    def score(self, targets: Sequence[str]) -> list[tuple[float, int]]:
        return self.translator.score([self.placeholder] * len(targets), list(targets))

    @classmethod
    def load(cls, model_dir: str | Path, placeholder: str = PLACEHOLDER, device: str = "cpu") -> "TargetLM":
        from core_seq2seq.translator import LSTMTranslator

        return cls(LSTMTranslator.load(model_dir, device=device), placeholder)


def lm_pairs(monolingual: Iterable[str], exclude: Iterable[str] = (), placeholder: str = PLACEHOLDER,
             dedupe: bool = True) -> tuple[list[tuple[str, str]], dict[str, int]]:
    """(placeholder, target) training pairs from monolingual lines, without empty lines, lines of the
    evaluation sets (``exclude``: val/test references) and, with ``dedupe``, repeats. Runs of
    whitespace inside a line (Multi30K task 2 has a caption with a tab) become one space, counted.
    Also returns counts."""
    banned = {" ".join(line.split()) for line in exclude}
    pairs, seen = [], set()
    stats = {"read": 0, "empty": 0, "whitespace_normalised": 0, "eval_overlap": 0, "duplicate": 0, "kept": 0}
    for line in monolingual:
        stats["read"] += 1
        text = " ".join(line.split())
        if text != line.strip():
            stats["whitespace_normalised"] += 1
        if not text:
            stats["empty"] += 1
        elif text in banned:
            stats["eval_overlap"] += 1
        elif dedupe and text in seen:
            stats["duplicate"] += 1
        else:
            seen.add(text)
            pairs.append((placeholder, text))
    stats["kept"] = len(pairs)
    return pairs, stats


def write_tsv(path: str | os.PathLike, pairs: Sequence[tuple[str, str]]) -> None:
    for number, (s, t) in enumerate(pairs, start=1):
        if "\t" in s + t or "\n" in s + t:
            raise ValueError(f"pair {number} contains a tab or a line break; cannot write it to {os.fspath(path)}")
    atomic_write_text(path, "".join(f"{s}\t{t}\n" for s, t in pairs))


def lm_experiment(output_dir: str | Path, train_tsv: str | Path, val_tsv: str | Path, lang: str,
                  **sections: dict) -> dict:
    """An ``ExperimentConfig`` dict (``core_seq2seq.training.experiment_from_dict``) training the LM on
    (placeholder, target) TSV files. ``sections`` override/extend ``model``, ``train``, ``tokenizer``."""
    cfg: dict[str, Any] = {
        "output_dir": str(output_dir),
        # src_lang = tgt_lang: the "source" is the placeholder; the language tag is the target's.
        "data": {"corpus": "files", "src_lang": lang, "tgt_lang": lang, "train_src": str(train_tsv),
                 "val_src": str(val_tsv)},
        "train": {"eval_max_sentences": 50},  # greedy BLEU of an LM is meaningless: keep validation cheap
    }
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value}
    return cfg


def build_lm_corpus(out_dir: str | Path, monolingual: Iterable[str], val_targets: Sequence[str],
                    exclude: Iterable[str], lang: str, placeholder: str = PLACEHOLDER, **sections: dict) -> dict:
    """Write ``train.tsv``/``val.tsv`` of (placeholder, target) pairs and return the experiment dict
    (also written as ``lm_train.yaml``: ``python -m core_seq2seq train OUT/lm_train.yaml``)."""
    import json

    import yaml

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pairs, stats = lm_pairs(monolingual, exclude, placeholder)
    val_pairs, _ = lm_pairs(val_targets, (), placeholder)
    write_tsv(out / "train.tsv", pairs)
    write_tsv(out / "val.tsv", val_pairs)
    cfg = lm_experiment(out / "run", out / "train.tsv", out / "val.tsv", lang, **sections)
    atomic_write_text(out / "lm_train.yaml", "# written by inference_compute.lm.build_lm_corpus\n"
                      + yaml.safe_dump(cfg, sort_keys=False))
    atomic_write_text(out / "corpus_stats.json", json.dumps({"placeholder": placeholder, **stats}, indent=1) + "\n")
    return cfg
