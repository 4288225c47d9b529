"""A right-to-left model for reranking: decade's LSTM trained on the same parallel data with each
target's words in reverse order, so it scores ``log p(reversed candidate | source)`` (the ``r2l``
feature). It reads a sentence from the other end: errors a left-to-right model makes late in a
sentence it sees early, which is why the two disagree usefully (Liu et al. 2016).

Words are reversed on whitespace (``features.reverse_words``), identically in training and scoring;
subwords are then learnt on the reversed text by the model's own tokenizer.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evals.textio import atomic_write_text

from .features import reverse_words
from .lm import write_tsv


def r2l_pairs(sources: Sequence[str], targets: Sequence[str], names: tuple[str, str] = ("source", "target")
              ) -> tuple[list[tuple[str, str]], dict[str, int]]:
    """(source, word-reversed target) pairs; lines must align. Empty pairs are dropped and counted."""
    if len(sources) != len(targets):
        raise ValueError(f"{names[0]} has {len(sources)} lines but {names[1]} has {len(targets)}: not aligned")
    pairs, stats = [], {"read": len(sources), "empty": 0, "kept": 0}
    for s, t in zip(sources, targets):
        s, t = " ".join(s.split()), " ".join(t.split())
        if not s or not t:
            stats["empty"] += 1
            continue
        pairs.append((s, reverse_words(t)))
    stats["kept"] = len(pairs)
    return pairs, stats


def build_r2l_corpus(out_dir: str | Path, train_data: tuple[list[str], list[str]], val_data: tuple[list[str], list[str]],
                     src_lang: str, tgt_lang: str, names: dict[str, str] | None = None, **sections: dict) -> dict:
    """Write ``train.tsv``/``val.tsv`` of (source, reversed target) pairs and ``r2l_train.yaml``
    (``python -m core_seq2seq train OUT/r2l_train.yaml``); return that experiment dict."""
    import yaml

    names = names or {}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pairs, stats = r2l_pairs(*train_data, (names.get("train_src", "train source"), names.get("train_tgt", "train target")))
    val_pairs, val_stats = r2l_pairs(*val_data, (names.get("val_src", "val source"), names.get("val_tgt", "val target")))
    write_tsv(out / "train.tsv", pairs)
    write_tsv(out / "val.tsv", val_pairs)
    cfg: dict[str, Any] = {"output_dir": str(out / "run"),
                           "data": {"corpus": "files", "src_lang": src_lang, "tgt_lang": tgt_lang,
                                    "train_src": str(out / "train.tsv"), "val_src": str(out / "val.tsv")}}
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value}
    atomic_write_text(out / "r2l_train.yaml", "# written by inference_compute.r2l.build_r2l_corpus\n"
                      + yaml.safe_dump(cfg, sort_keys=False))
    atomic_write_text(out / "corpus_stats.json", json.dumps({"train": stats, "val": val_stats}, indent=1) + "\n")
    return cfg
