"""``python -m inference_compute nbest|rerank|tune|mbr|pairs|sweep|lm|r2l --config FILE.yaml [--set key=value ...]``

Each command reads its own section of the YAML file (the command's name, or ``--section``), so one
file can hold a whole workflow (``configs/inference_toy.yaml``). Every output is written atomically
with the resolved config beside it (``<output>.config.yaml``). Bad input prints ``error: ...`` naming
the file (and line) and exits with status 2.
"""

from __future__ import annotations


import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core_seq2seq import distributed
from core_seq2seq.config import ConfigError, from_dict, read_config

from .candidates import CandidateSpec
from .mbr import MbrConfig
from .sweep import SweepConfig
from .tune import TuneConfig


@dataclass
class ScorerPaths:
    """Models that score candidates. Every field is a YAML key of ``<command>.models``."""

    forward: str | list[str] | None = None  # forward model dir(s) to re-score candidates (null: the n-best file's own logprobs)
    reverse: str | list[str] | None = None  # reverse (target->source) model dir: the noisy channel (null: none)
    lm: str | None = None  # target-side LM dir (see inference_compute.lm) (null: none)
    lm_placeholder: str = "."  # the LM's stand-in for an empty source, as in its training data
    r2l: str | list[str] | None = None  # right-to-left model dir (trained on word-reversed targets) (null: none)
    alt: str | list[str] | None = None  # another source->target model dir, a second opinion (null: none)
    device: str = "cpu"  # torch device


@dataclass
class NbestCommand:
    model: str | list[str] = ""  # forward model dir (a list: a checkpoint ensemble)
    src: str = ""  # source sentences, one per line (.gz allowed)
    out: str = ""  # n-best file to write (sidecars: OUT.jsonl, OUT.meta.json)
    candidates: CandidateSpec = field(default_factory=CandidateSpec)
    shard_size: int = 256  # sentences per resumable shard
    limit: int = 0  # only the first N sources (0: all)
    device: str = "cpu"  # torch device


@dataclass
class RerankCommand:
    nbest: str = ""  # n-best file (written by the nbest command)
    src: str = ""  # its source sentences
    weights: str = ""  # frozen weights JSON (written by the tune command)
    models: ScorerPaths = field(default_factory=ScorerPaths)
    out: str = ""  # selected hypotheses, one per source
    features_out: str | None = None  # also write every candidate's features as JSONL (null: no)
    score_margin: float | None = None  # score with the models only the candidates whose free score (forward, length)
    #   is within this of the best's (rerank.within_margin: where the forward model is sure, nothing is scored); null: all
    limit: int = 0  # only the first N sources (0: all)

    def __post_init__(self) -> None:
        from .rerank import check_margin

        check_margin(self.score_margin)
        if self.score_margin is not None and self.features_out:
            raise ValueError("features_out needs every candidate scored: it cannot go with a score_margin")
        if self.score_margin is not None and self.models.forward:
            raise ValueError("score_margin needs the n-best file's own log-probabilities: it cannot go with models.forward")


@dataclass
class TuneCommand:
    nbest: str = ""  # n-best file of the tuning set (val)
    src: str = ""  # its source sentences
    ref: str = ""  # its references
    models: ScorerPaths = field(default_factory=ScorerPaths)
    out: str = ""  # weights JSON to write (frozen, with this config)
    search: TuneConfig = field(default_factory=TuneConfig)
    limit: int = 0  # only the first N sources (0: all)


@dataclass
class MbrCommand:
    nbest: str = ""  # n-best file or samples (written by the nbest command)
    out: str = ""  # selected hypotheses, one per source
    utility: str = "chrf"  # chrf | bleu
    weighting: str = "uniform"  # uniform | count (sample frequencies) | model (softmax of logprob / temperature)
    temperature: float = 1.0  # weighting=model: softmax temperature


@dataclass
class LmCommand:
    monolingual: list[str] = field(default_factory=list)  # target-language monolingual files (.gz allowed)
    val: str = ""  # target-language validation sentences (e.g. Multi30K val.de)
    exclude: list[str] = field(default_factory=list)  # files whose lines must not be trained on (val/test references)
    lang: str = "de"  # the target language
    out_dir: str = ""  # writes train.tsv, val.tsv, lm_train.yaml, corpus_stats.json here; the run goes to OUT_DIR/run
    placeholder: str = "."  # the stand-in for an empty source
    model: dict[str, Any] = field(default_factory=dict)  # core_seq2seq model section overrides
    train: dict[str, Any] = field(default_factory=dict)  # core_seq2seq train section overrides
    tokenizer: dict[str, Any] = field(default_factory=dict)  # core_seq2seq tokenizer section overrides


def load_section(cls: type, path: str, section: str, overrides: Sequence[str] = ()):
    body = read_config(path, overrides, section)
    try:
        return from_dict(cls, body, section)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def _write_config(out: str | Path, cfg: Any, command: str) -> None:
    from evals.textio import atomic_write_text

    atomic_write_text(f"{out}.config.yaml", f"# python -m inference_compute {command}\n"
                      + yaml.safe_dump({command: asdict(cfg)}, sort_keys=False, allow_unicode=True))


def _load(paths, device: str):
    if not paths:
        return None
    from core_seq2seq.translator import LSTMTranslator

    return LSTMTranslator.load(paths, device=device)


def _nbest_direction(nbest_path: str) -> Any | None:
    """The languages of the model that generated an n-best file (its meta sidecar names the model
    directory), as a stand-in forward model for the direction checks; None when unknown."""
    from types import SimpleNamespace

    from core_seq2seq.translator import model_languages

    from .nbest import read_meta, sidecars

    if not sidecars(nbest_path)[1].exists():
        return None
    model = read_meta(nbest_path).get("model")
    dirs = [model] if isinstance(model, str) else model if isinstance(model, list) else []
    for d in dirs:
        if isinstance(d, str) and d and Path(d).is_dir():
            langs = model_languages(d)
            if langs is not None:
                return SimpleNamespace(src_lang=langs[0], tgt_lang=langs[1], model_dir=d)
    return None


def _scorers(m: ScorerPaths, nbest_path: str | None, typical_ratio: float):
    from .features import Scorers

    scorers = Scorers.load(forward=m.forward, reverse=m.reverse, lm=m.lm, r2l=m.r2l, alt=m.alt, device=m.device,
                           lm_placeholder=m.lm_placeholder, typical_ratio=typical_ratio)
    # With forward: null the candidates keep the generator's log-probabilities; its direction (from
    # the n-best file's meta sidecar) is still what every other scorer must fit.
    generator = _nbest_direction(nbest_path) if nbest_path else None
    forward = scorers.forward if scorers.forward is not None else generator
    if scorers.forward is not None and generator is not None:
        have, made = (forward.src_lang, forward.tgt_lang), (generator.src_lang, generator.tgt_lang)
        if have != made:
            raise ConfigError(f"models.forward translates {have[0]}->{have[1]}, but {nbest_path} holds {made[0]}->{made[1]} "
                              f"candidates (generated by {generator.model_dir})")
    try:
        scorers.check(generator)
    except ValueError as e:
        given = {k: getattr(m, k) for k in ("forward", "reverse", "lm", "r2l", "alt") if getattr(m, k)}
        origin = (f"; the forward direction is that of {forward.model_dir}, which generated {nbest_path}"
                  if scorers.forward is None and forward is not None else "")
        raise ConfigError(f"models: {e} (models: {json.dumps(given)}{origin})") from None
    return scorers


def _read_sources(path: str, limit: int) -> list[str]:
    from evals.textio import read_lines

    lines = read_lines(path)
    return lines[:limit] if limit else lines


def _nbest_for(path: str, n_sources: int, limit: int, src_path: str):
    from .nbest import read_nbest

    nbest = read_nbest(path)
    nbest = nbest[:limit] if limit else nbest
    if len(nbest) != n_sources:
        raise ValueError(f"{path} has {len(nbest)} sources but {src_path} has {n_sources} lines")
    return nbest


def cmd_nbest(cfg: NbestCommand, log) -> None:
    from .generate import generate_nbest_file

    sources = _read_sources(cfg.src, cfg.limit)
    translator = _load(cfg.model, cfg.device)
    if translator is None:
        raise ConfigError("nbest.model: a model directory is required")
    _, compute = generate_nbest_file(translator, sources, cfg.candidates, cfg.out, shard_size=cfg.shard_size,
                                     meta={"model": cfg.model, "src_path": cfg.src, "config": asdict(cfg)},
                                     key_extra=cfg.model, log=log)
    _write_config(cfg.out, cfg, "nbest")
    log(f"wrote {cfg.out} ({len(sources)} sources); compute: {json.dumps(_brief(compute))}")


def _brief(compute: dict) -> dict:
    return {k: compute.get(k) for k in ("forward_calls", "decoder_row_steps", "flops", "decode_seconds",
                                        "seconds_per_sentence") if k in compute}


def _metered(scorers, n_sentences: int, fn, *args):
    """``fn(*args)`` and the compute the scorers spent on it."""
    from .compute import ComputeMeter

    with ComputeMeter(scorers.meters(), n_sentences=n_sentences) as meter:
        out = fn(*args)
    return out, meter.result


def _features(sources, nbest, scorers):
    return _metered(scorers, len(sources), scorers.features, sources, nbest)


def cmd_tune(cfg: TuneCommand, log) -> None:
    from evals.textio import check_same_length, read_lines

    from .features import length_ratio
    from .rerank import save_weights
    from .tune import tune_weights

    sources = _read_sources(cfg.src, cfg.limit)
    refs = read_lines(cfg.ref)
    refs = refs[:cfg.limit] if cfg.limit else refs
    check_same_length([(cfg.src, sources), (cfg.ref, refs)])
    nbest = _nbest_for(cfg.nbest, len(sources), cfg.limit, cfg.src)
    ratio = length_ratio(sources, refs)
    feats, compute = _features(sources, nbest, _scorers(cfg.models, cfg.nbest, ratio))
    result = tune_weights(feats, [[c.text for c in cs] for cs in nbest], refs, cfg.search)
    save_weights(cfg.out, result.weights, tuned_on=cfg.ref, nbest=cfg.nbest, objective=cfg.search.metric,
                 tuned_score=result.score, forward_only_score=result.start_score, trials=result.trials,
                 typical_ratio=ratio, scoring_compute=_brief(compute), config=asdict(cfg))
    _write_config(cfg.out, cfg, "tune")
    log(f"tuned on {len(sources)} sentences: {cfg.search.metric} {result.start_score:.2f} (forward only) -> "
        f"{result.score:.2f}; weights {json.dumps(result.weights)} written to {cfg.out}")


def cmd_rerank(cfg: RerankCommand, log) -> None:
    from evals.textio import atomic_write_lines, atomic_write_text

    from .rerank import load_weights, select

    sources = _read_sources(cfg.src, cfg.limit)
    nbest = _nbest_for(cfg.nbest, len(sources), cfg.limit, cfg.src)
    weights = load_weights(cfg.weights)
    ratio = float(json.loads(Path(cfg.weights).read_text(encoding="utf-8")).get("typical_ratio", 1.0))
    scorers = _scorers(cfg.models, cfg.nbest, ratio)
    if cfg.score_margin is None:
        feats, compute = _features(sources, nbest, scorers)
        picks = select(feats, weights)
    else:
        picks, compute = _metered(scorers, len(sources), scorers.select, sources, nbest, weights, cfg.score_margin)
    atomic_write_lines(cfg.out, [nbest[i][p].text for i, p in enumerate(picks)])
    if cfg.features_out:
        atomic_write_text(cfg.features_out, "".join(
            json.dumps({"sent_id": i, "rank": r, **f}) + "\n" for i, fs in enumerate(feats) for r, f in enumerate(fs)))
    _write_config(cfg.out, cfg, "rerank")
    log(f"wrote {cfg.out}; reranking changed {sum(p != 0 for p in picks)} of {len(picks)} choices; "
        f"scoring compute: {json.dumps(_brief(compute))}")


def cmd_mbr(cfg: MbrCommand, log) -> None:
    import time

    from evals.textio import atomic_write_lines

    from .mbr import mbr_decode
    from .nbest import read_nbest

    settings = MbrConfig(cfg.utility, cfg.weighting, cfg.temperature)
    nbest = read_nbest(cfg.nbest)
    start = time.perf_counter()
    picks, calls = mbr_decode(nbest, settings)
    atomic_write_lines(cfg.out, [nbest[i][p].text for i, p in enumerate(picks)])
    _write_config(cfg.out, cfg, "mbr")
    log(f"wrote {cfg.out}; {calls} utility evaluations in {time.perf_counter() - start:.1f}s; "
        f"MBR changed {sum(p != 0 for p in picks)} of {len(picks)} choices")


@dataclass
class PairsCommand:
    nbest: str = ""  # n-best file (written by the nbest command), beam order: rank 0 is the beam's best
    src: str = ""  # its source sentences
    selector: str = "rerank"  # rerank (frozen weights over features) | mbr (expected utility)
    weights: str = ""  # selector=rerank: frozen weights JSON (written by the tune command)
    models: ScorerPaths = field(default_factory=ScorerPaths)  # selector=rerank: the feature models, as for rerank
    mbr: MbrConfig = field(default_factory=MbrConfig)  # selector=mbr: utility, weighting, temperature
    out: str = ""  # preference pairs JSONL {id, src, chosen, rejected, ...} for python -m core_seq2seq posttrain
    distill_out: str | None = None  # also write every source with the selector's pick as TSV (distillation data)
    limit: int = 0  # only the first N sources (0: all)

    def __post_init__(self) -> None:
        if self.selector not in ("rerank", "mbr"):
            raise ValueError(f"selector must be rerank or mbr, got {self.selector!r}")


def cmd_pairs(cfg: PairsCommand, log) -> None:
    from evals.textio import atomic_write_text, check_output_path

    from .mbr import expected_utility, reference_weights
    from .preference import preference_pairs
    from .rerank import linear_scores, load_weights

    for key in ("nbest", "src", "out") + (("weights",) if cfg.selector == "rerank" else ()):
        if not getattr(cfg, key):
            raise ConfigError(f"pairs.{key} is required")
    for key in ("out", "distill_out"):  # both outputs are checked before either is written
        check_output_path(getattr(cfg, key), f"pairs.{key}")
    sources = _read_sources(cfg.src, cfg.limit)
    nbest = _nbest_for(cfg.nbest, len(sources), cfg.limit, cfg.src)
    if cfg.selector == "rerank":
        weights = load_weights(cfg.weights)
        ratio = float(json.loads(Path(cfg.weights).read_text(encoding="utf-8")).get("typical_ratio", 1.0))
        feats, _ = _features(sources, nbest, _scorers(cfg.models, cfg.nbest, ratio))
        scores = linear_scores(feats, weights)
    else:
        scores = [expected_utility([c.text for c in cs], cfg.mbr.utility, reference_weights(cs, cfg.mbr)) for cs in nbest]
    pairs, dropped = preference_pairs(sources, nbest, scores)
    atomic_write_text(cfg.out, "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs))
    if cfg.distill_out:
        from .rerank import argmax

        atomic_write_text(cfg.distill_out, "".join(f"{s}\t{cs[argmax(row)].text}\n"
                                                   for s, cs, row in zip(sources, nbest, scores)))
    _write_config(cfg.out, cfg, "pairs")
    log(f"wrote {len(pairs)} preference pairs to {cfg.out} ({dropped['no_alternative']} of {len(sources)} sources had "
        f"no candidate differing from the pick beyond punctuation)")


def cmd_sweep(cfg: SweepConfig, log) -> None:
    from .sweep import run_sweep

    summary = run_sweep(cfg, log)
    Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
    _write_config(Path(cfg.out_dir) / "sweep", cfg, "sweep")
    log(f"best on {cfg.tune_split}: {summary['best_on_val']}")


@dataclass
class R2lCommand:
    train_src: str = ""  # parallel training data, source side (.gz allowed)
    train_tgt: str = ""  # its target side, line-aligned; its words are reversed
    val_src: str = ""  # validation source (early stopping on reversed-target BLEU)
    val_tgt: str = ""  # validation target, line-aligned
    src_lang: str = "en"  # source language
    tgt_lang: str = "de"  # target language
    out_dir: str = ""  # writes train.tsv, val.tsv, r2l_train.yaml, corpus_stats.json here; the run goes to OUT_DIR/run
    model: dict[str, Any] = field(default_factory=dict)  # core_seq2seq model section overrides
    train: dict[str, Any] = field(default_factory=dict)  # core_seq2seq train section overrides
    tokenizer: dict[str, Any] = field(default_factory=dict)  # core_seq2seq tokenizer section overrides


def cmd_r2l(cfg: R2lCommand, log) -> None:
    from evals.textio import read_lines

    from .r2l import build_r2l_corpus

    for key in ("train_src", "train_tgt", "val_src", "val_tgt", "out_dir"):
        if not getattr(cfg, key):
            raise ValueError(f"r2l.{key} is required")
    names = {k: getattr(cfg, k) for k in ("train_src", "train_tgt", "val_src", "val_tgt")}
    sections = {k: v for k, v in (("model", cfg.model), ("train", cfg.train), ("tokenizer", cfg.tokenizer)) if v}
    build_r2l_corpus(cfg.out_dir, (read_lines(cfg.train_src), read_lines(cfg.train_tgt)),
                     (read_lines(cfg.val_src), read_lines(cfg.val_tgt)), cfg.src_lang, cfg.tgt_lang, names, **sections)
    _write_config(Path(cfg.out_dir) / "r2l", cfg, "r2l")
    stats = json.loads((Path(cfg.out_dir) / "corpus_stats.json").read_text())
    log(f"right-to-left corpus in {cfg.out_dir}: {json.dumps(stats)}; train with: "
        f"python -m core_seq2seq train {cfg.out_dir}/r2l_train.yaml (then use {cfg.out_dir}/run/best)")


def cmd_lm(cfg: LmCommand, log) -> None:
    from evals.textio import read_lines

    from .lm import build_lm_corpus

    mono = [line for p in cfg.monolingual for line in read_lines(p)]
    exclude = [line for p in cfg.exclude for line in read_lines(p)]
    sections = {k: v for k, v in (("model", cfg.model), ("train", cfg.train), ("tokenizer", cfg.tokenizer)) if v}
    build_lm_corpus(cfg.out_dir, mono, read_lines(cfg.val), exclude, cfg.lang, cfg.placeholder, **sections)
    _write_config(Path(cfg.out_dir) / "lm", cfg, "lm")
    stats = json.loads((Path(cfg.out_dir) / "corpus_stats.json").read_text())
    log(f"LM corpus in {cfg.out_dir}: {json.dumps(stats)}; train with: "
        f"python -m core_seq2seq train {cfg.out_dir}/lm_train.yaml (then use {cfg.out_dir}/run/last)")


COMMANDS = {"nbest": (NbestCommand, cmd_nbest), "rerank": (RerankCommand, cmd_rerank),
            "tune": (TuneCommand, cmd_tune), "mbr": (MbrCommand, cmd_mbr), "pairs": (PairsCommand, cmd_pairs),
            "sweep": (SweepConfig, cmd_sweep),
            "lm": (LmCommand, cmd_lm), "r2l": (R2lCommand, cmd_r2l)}


def build_parser(prog: str = "python -m inference_compute") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Inference-time compute for decade's translators: n-best "
                                     "lists, noisy-channel reranking, MBR, and the quality-for-compute sweep.")
    sub = parser.add_subparsers(dest="command", required=True)
    helps = {"nbest": "generate candidates (beams, samples, unions) to an n-best file",
             "rerank": "select with frozen reranker weights", "tune": "tune reranker weights on val (corpus BLEU)",
             "mbr": "MBR selection over an n-best file",
             "pairs": "preference pairs (chosen: the reranker's or MBR's pick) and distillation data from an n-best file",
             "sweep": "the quality-for-compute grid on val and test",
             "lm": "write a target-LM training corpus and config (placeholder source)",
             "r2l": "write a right-to-left training corpus (word-reversed targets) and config"}
    for name in COMMANDS:
        p = sub.add_parser(name, help=helps[name])
        p.add_argument("--config", required=True, help="YAML file with a section named after the command")
        p.add_argument("--section", help="read this section instead (default: the command's name)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a key of the section, e.g. --set candidates.dedupe=false (YAML value)")
    return parser


@distributed.driven
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cls, fn = COMMANDS[args.command]

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    try:
        cfg = load_section(cls, args.config, args.section or args.command, args.set)
        fn(cfg, log)
    except BrokenPipeError:
        raise  # run_cli ends quietly when the reader of stdout goes away
    except (ConfigError, ValueError, FileNotFoundError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
