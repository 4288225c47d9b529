"""Mix real and synthetic pairs into one ``datasets`` Dataset on disk that training reads.

* Tagged back-translation (Caswell et al. 2019): ``tag`` (e.g. ``<BT>``) is prepended to every
  synthetic source, so the model can tell synthetic from real input; real sources (and test
  sources) carry no tag. The tag is plain text, not a special token: the run's subword tokenizer
  is trained on the training corpus, mixed data included, and learns ``▁<BT>`` as one piece
  (tests/test_synth.py checks this); a tokenizer trained without it still maps the tag to a fixed
  sequence of pieces, so the signal survives either way.
* The real:synthetic ratio is controlled by upsampling the real pairs (whole copies, as Edunov et
  al. 2018 upsample the bitext): ``real_ratio: 1.0`` aims at as many real rows as synthetic ones.

Columns: one per language code (e.g. ``en``, ``de``) and ``provenance`` (``real`` or
``synthetic:<method>``; forward translations are ``synthetic:ft_<method>``). ``use: extra_train``
writes only what training should add to its own corpus (``data.extra_train``): the synthetic
pairs plus the extra copies of the real ones; ``use: sole_corpus`` writes every row (train with
``data.corpus: files``, ``data.train_src: <this dir>``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from core_seq2seq.config import config_hash
from core_seq2seq.training import DataConfig, load_corpora

from .io import SynthError, fresh_tmp_dir, read_json, read_jsonl, replace_dir, write_json

META = "synth_mix.json"  # the sidecar inside the dataset directory (datasets ignores unknown files)


@dataclass
class MixConfig:
    src_lang: str = "en"  # source language code: the column of (synthetic) sources
    tgt_lang: str = "de"  # target language code
    synthetic: list[str] = field(default_factory=list)  # JSONL files of synthetic pairs (backtranslate or filter output)
    output: str = "runs/synth/mix.en-de"  # the Dataset directory (save_to_disk); replaced atomically
    tag: str = ""  # prepended to synthetic sources, e.g. "<BT>" (tagged back-translation); "": untagged
    use: str = "extra_train"  # extra_train: rows to add to a training corpus | sole_corpus: the whole corpus
    real_ratio: float = 0.0  # aim for real:synthetic rows = this, by upsampling real pairs (0: real pairs once)
    max_synthetic: int = 0  # use only the first N synthetic pairs (0: all)
    real: DataConfig | None = None  # the real parallel data (same keys as an experiment's data: section); needed for sole_corpus or real_ratio

    def __post_init__(self) -> None:
        if self.use not in ("extra_train", "sole_corpus"):
            raise ValueError(f"use must be extra_train or sole_corpus, got {self.use!r}")
        if self.tag and len(self.tag.split()) != 1:
            raise ValueError(f"tag must be one word without spaces, got {self.tag!r}")
        if self.real_ratio < 0:
            raise ValueError(f"real_ratio must be >= 0, got {self.real_ratio}")


def real_copies(n_real: int, n_synthetic: int, ratio: float) -> int:
    """Whole copies of the real pairs that bring real:synthetic closest to ``ratio`` (at least 1)."""
    if ratio <= 0 or n_real == 0:
        return 1
    return max(1, round(ratio * n_synthetic / n_real))


def provenance_of(record: dict) -> str:
    method = record.get("method", "unknown")
    return f"synthetic:ft_{method}" if record.get("mode") == "forward" else f"synthetic:{method}"


def tag_source(text: str, tag: str) -> str:
    return f"{tag} {text}" if tag else text


def mix_columns(real_src: Sequence[str], real_tgt: Sequence[str], synthetic: Sequence[dict], src_lang: str,
                tgt_lang: str, tag: str, copies: int) -> dict[str, list[str]]:
    """The rows of the mixed corpus as columns: ``copies`` x real pairs, then the synthetic pairs."""
    src = [s for _ in range(copies) for s in real_src]
    tgt = [t for _ in range(copies) for t in real_tgt]
    prov = ["real"] * len(src)
    for r in synthetic:
        src.append(tag_source(r["src"], tag))
        tgt.append(r["tgt"])
        prov.append(provenance_of(r))
    return {src_lang: src, tgt_lang: tgt, "provenance": prov}


def read_synthetic(paths: Sequence[str], max_pairs: int = 0) -> tuple[list[dict], int]:
    """Synthetic pairs of the files, and how many were dropped for an empty side (a sampled
    translation can be just ``</s>``; training would drop the pair anyway, here it is counted)."""
    records: list[dict] = []
    for p in paths:
        records.extend(read_jsonl(p, required=("src", "tgt")))
    if max_pairs:
        records = records[:max_pairs]
    usable = [r for r in records if str(r["src"]).strip() and str(r["tgt"]).strip()]
    return usable, len(records) - len(usable)


def mix(cfg: MixConfig, log: Callable[[str], None] = print) -> Path:
    """Build and save the mixed Dataset; returns its directory."""
    import datasets

    if not cfg.synthetic:
        raise SynthError("mix: no synthetic files given (mix.synthetic)")
    for path in cfg.synthetic:  # back-translation records the pair it made; a swapped model shows here
        info = Path(path).with_name("synthetic.json")
        if info.exists():
            made = read_json(info)
            if not isinstance(made, dict):
                raise SynthError(f"{info}: expected a JSON object (the provenance of {path})")
            pair = (made.get("src_lang"), made.get("tgt_lang"))
            if None not in pair and "?" not in pair and pair != (cfg.src_lang, cfg.tgt_lang):
                raise SynthError(f"{path}: holds {pair[0]}-{pair[1]} pairs ({info}) but the mix is "
                                 f"{cfg.src_lang}-{cfg.tgt_lang}: was it made by a model of the wrong direction?")
    synthetic, empty = read_synthetic(cfg.synthetic, cfg.max_synthetic)
    if not synthetic:
        raise SynthError(f"mix: no usable synthetic pairs in {', '.join(cfg.synthetic)}")
    out = Path(cfg.output)
    real_src: list[str] = []
    real_tgt: list[str] = []
    if cfg.use == "sole_corpus" or cfg.real_ratio > 0:
        if cfg.real is None:
            raise SynthError("mix: use=sole_corpus and real_ratio need the real data (mix.real)")
        if (cfg.real.src_lang, cfg.real.tgt_lang) != (cfg.src_lang, cfg.tgt_lang):
            raise SynthError(f"mix.real is {cfg.real.src_lang}-{cfg.real.tgt_lang} but the mix is {cfg.src_lang}-{cfg.tgt_lang}")
        train, _val, _reports = load_corpora(cfg.real, out.parent)
        real_src, real_tgt = train.src, train.tgt
    copies = real_copies(len(real_src), len(synthetic), cfg.real_ratio)
    # extra_train: training reads the real corpus itself, so the mix adds copies - 1 of it.
    in_mix = copies if cfg.use == "sole_corpus" else (copies - 1 if real_src else 0)
    columns = mix_columns(real_src, real_tgt, synthetic, cfg.src_lang, cfg.tgt_lang, cfg.tag, in_mix)
    counts = Counter(columns["provenance"])
    datasets.disable_progress_bars()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = fresh_tmp_dir(out)
    datasets.Dataset.from_dict(columns).save_to_disk(str(tmp))
    report = {"rows": len(columns["provenance"]), "by_provenance": dict(counts), "real_pairs": len(real_src),
              "real_copies_total": copies, "real_copies_in_mix": in_mix, "synthetic_pairs": len(synthetic), "synthetic_dropped_empty": empty,
              "real_to_synthetic": (copies * len(real_src)) / max(1, len(synthetic)) if real_src else None,
              "tag": cfg.tag, "use": cfg.use, "config": asdict(cfg), "config_hash": config_hash(cfg)}
    write_json(tmp / META, report)
    replace_dir(tmp, out)
    log(f"mix: {report['rows']} rows ({', '.join(f'{k} {v}' for k, v in counts.items())}) -> {out}")
    return out
