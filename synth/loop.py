"""Iterative back-translation (Hoang et al. 2018): the two directions improve each other in rounds.

Round 0 holds the starting models (given, or trained on the real data only). Round r >= 1, for
each direction a->b: back-translate the b-side monolingual text with round r-1's b->a model
(and/or, for self-training, forward-translate the a-side text with round r-1's a->b model),
optionally filter, mix with the real data, train a fresh a->b model through
``core_seq2seq.training.train``. The loop stops when no direction's validation BLEU improved by
more than ``min_improvement`` over its best so far, or after ``max_rounds``.

Layout of ``output_dir``::

    round-0/<a>-<b>/model/        round-0 models trained here (absent when given)
    round-<r>/<a>-<b>/bt/         back-translation shards + synthetic.jsonl (synth.backtranslate)
    round-<r>/<a>-<b>/ft/         forward translations (self-training)
    round-<r>/<a>-<b>/filtered.jsonl
    round-<r>/<a>-<b>/mix/        the Dataset added through data.extra_train
    round-<r>/<a>-<b>/model/      the training run (best/ is the round's model)
    round-<r>/round.json          written last: the round is done (models, val BLEU)
    loop.json                     summary: val BLEU per round, best round, why it stopped

Every step skips work already done (finished shards, a saved mix, a finished training run), and a
round whose ``round.json`` exists is not redone: rerunning the command resumes.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from core_seq2seq.config import from_dict, read_config

from .backtranslate import BacktranslateConfig, GenerationConfig, ReplayTranslator, backtranslate, replayable
from .filter import FilterConfig, ScoringConfig, SelectionConfig, filter_pairs
from .io import SynthError, read_json, write_json, write_yaml
from .mix import META as MIX_META
from .mix import MixConfig, mix

STRATEGIES = ("back_translation", "self_training", "both")


@dataclass
class LoopFilterConfig:
    scoring: ScoringConfig = field(default_factory=ScoringConfig)  # see synth.filter
    selection: SelectionConfig = field(default_factory=SelectionConfig)


@dataclass
class LoopConfig:
    output_dir: str = "runs/synth_loop"  # rounds and summary; rerunning resumes
    src_lang: str = "en"  # the pair's first language (forward direction src->tgt)
    tgt_lang: str = "de"  # the pair's second language
    experiment: str = "configs/multi30k_train.yaml"  # training config (ExperimentConfig YAML) of both directions: its pair: is set to each
    experiment_overrides: dict = field(default_factory=dict)  # merged into both directions' experiments, e.g. {train: {max_steps: 100}}
    forward_model: str | None = None  # round-0 src->tgt model dir (e.g. runs/multi30k_en_de/best); null: train it in round-0/
    reverse_model: str | None = None  # round-0 tgt->src model dir; null: train it in round-0/
    mono_src: str | None = None  # prepared src-language text (back-translated for tgt->src; forward-translated in self-training)
    mono_tgt: str | None = None  # prepared tgt-language text (back-translated for src->tgt)
    max_mono_lines: int = 0  # use only the first N lines of each monolingual file (0: all)
    max_rounds: int = 2  # rounds after round 0
    min_improvement: float = 0.0  # stop when no direction's val BLEU improves by more than this
    strategy: str = "back_translation"  # back_translation | self_training (forward translation) | both
    generation: GenerationConfig = field(default_factory=GenerationConfig)  # how synthetic data is generated (synth.backtranslate)
    filter: LoopFilterConfig | None = None  # filter the synthetic pairs (null: keep all)
    tag: str = ""  # tag on synthetic sources, e.g. "<BT>" (null/"": untagged)
    real_ratio: float = 0.0  # real:synthetic ratio by upsampling real pairs (0: real pairs once)
    device: str = "cpu"  # torch device for generation and filtering
    progress: bool = True  # progress bars

    MOVED = {k: "experiment (one training config for both directions, its pair: set to each)"
             for k in ("forward_experiment", "reverse_experiment")}

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if self.max_rounds < 0:
            raise ValueError(f"max_rounds must be >= 0, got {self.max_rounds}")


# ---- steps (each skips work already done; the benchmark uses them too) ---------------------------

def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = _merge(out.get(key) or {}, value) if isinstance(value, dict) else copy.deepcopy(value)
    return out


def experiment_dict(path: str | Path, overrides: dict | None = None, pair: str | None = None) -> dict:
    """An experiment YAML as a dict for direction ``pair`` (its ``{src}``/``{tgt}`` filled; see
    ``core_seq2seq.config.expand_pair``) with ``overrides`` merged in."""
    return _merge(read_config(path, [f"pair={pair}"] if pair else []), overrides or {})


def train_step(experiment: dict, output_dir: str | Path, extra_train: list[str] = (),
               log: Callable[[str], None] = print) -> Path:
    """Train (or resume, or skip if finished) a model; returns its ``best/`` directory."""
    from core_seq2seq.training import experiment_from_dict, train

    run = Path(output_dir)
    best, marker = run / "best", run / "synth_trained.json"
    if marker.exists() and (best / "config.json").exists():
        return best
    data = copy.deepcopy(experiment)
    data["output_dir"] = str(run)
    data.setdefault("data", {})
    data["data"]["extra_train"] = list(data["data"].get("extra_train") or []) + [str(p) for p in extra_train]
    cfg = experiment_from_dict(data)
    train(cfg, log=log)
    if not (best / "config.json").exists():
        raise SynthError(f"{run}: training ended without a best/ model")
    write_json(marker, {"best": str(best), "val": val_scores(best), "extra_train": data["data"]["extra_train"]})
    return best


def val_scores(model_dir: str | Path) -> dict:
    """The validation scores training recorded with a model (greedy BLEU on the val set)."""
    meta = Path(model_dir) / "decade_meta.json"
    return (read_json(meta).get("val") or {}) if meta.exists() else {}


def translation_step(mono: str | Path, model_dir: str | Path, out_dir: str | Path, gen: GenerationConfig,
                     mode: str = "back", max_lines: int = 0, device: str = "cpu", progress: bool = True,
                     log: Callable[[str], None] = print, replay_from: str | Path | None = None) -> Path:
    """Back- (or forward-) translate ``mono`` with ``model_dir``; resumable; returns synthetic.jsonl.

    ``replay_from``: a finished beam run of the same model; noised beam then reuses its outputs
    (``ReplayTranslator``) instead of decoding again."""
    cfg = BacktranslateConfig(input=str(mono), output_dir=str(out_dir), model=str(model_dir), mode=mode,
                              max_lines=max_lines, device=device, progress=progress, generation=gen)
    merged = Path(out_dir) / "synthetic.jsonl"
    if merged.exists() and (Path(out_dir) / "synthetic.json").exists():
        return merged
    translator = None
    if replay_from is not None and replayable(replay_from, gen, str(model_dir), mode):
        log(f"{gen.method}: replaying the beam outputs of {replay_from} (no new decode)")
        translator = ReplayTranslator(Path(replay_from) / "synthetic.jsonl", mode)
    return backtranslate(cfg, translator=translator, model_name=str(model_dir), log=log)


def filter_step(synthetic: list[Path], out: Path, forward_model: Path, reverse_model: Path, fcfg: LoopFilterConfig,
                device: str = "cpu", progress: bool = True, log: Callable[[str], None] = print) -> list[Path]:
    """Filter each synthetic file (scores cached beside the output); returns the kept-pair files."""
    outs = []
    for i, path in enumerate(synthetic):
        target = out.with_name(f"{out.stem}.{i}{out.suffix}") if len(synthetic) > 1 else out
        if not (target.exists() and target.with_name(target.name + ".report.json").exists()):
            filter_pairs(FilterConfig(input=str(path), output=str(target), forward_model=str(forward_model),
                                      reverse_model=str(reverse_model), device=device, progress=progress,
                                      scoring=fcfg.scoring, selection=fcfg.selection), log=log)
        outs.append(target)
    return outs


def mix_step(synthetic: list[Path], out: Path, src_lang: str, tgt_lang: str, tag: str, real_ratio: float,
             real_data: dict | None, log: Callable[[str], None] = print) -> Path:
    """Mix for ``data.extra_train``; skipped when the Dataset exists."""
    from core_seq2seq.training import DataConfig

    if (out / MIX_META).exists():
        return out
    real = None
    if real_ratio > 0 and real_data is not None:
        real = from_dict(DataConfig, {**real_data, "extra_train": []}, "data")
    return mix(MixConfig(src_lang=src_lang, tgt_lang=tgt_lang, synthetic=[str(p) for p in synthetic],
                         output=str(out), tag=tag, use="extra_train", real_ratio=real_ratio, real=real), log=log)


# ---- the loop ----------------------------------------------------------------------------------

def _pairs(cfg: LoopConfig) -> dict[str, tuple[str, str, str]]:
    """direction name -> (source language, target language, experiment YAML)."""
    s, t = cfg.src_lang, cfg.tgt_lang
    return {f"{s}-{t}": (s, t, cfg.experiment), f"{t}-{s}": (t, s, cfg.experiment)}


def _round0(cfg: LoopConfig, root: Path, log) -> dict[str, str]:
    given = {f"{cfg.src_lang}-{cfg.tgt_lang}": cfg.forward_model, f"{cfg.tgt_lang}-{cfg.src_lang}": cfg.reverse_model}
    models = {}
    for name, (_s, _t, exp) in _pairs(cfg).items():
        if given[name]:
            if not (Path(given[name]) / "config.json").exists():
                raise SynthError(f"{given[name]}: not a model directory (no config.json)")
            models[name] = given[name]
        else:
            log(f"loop: round 0: training {name} on the real data")
            models[name] = str(train_step(experiment_dict(exp, cfg.experiment_overrides, name),
                                          root / "round-0" / name / "model", log=log))
    return models


def run_round(cfg: LoopConfig, r: int, previous: dict[str, str], log=print) -> dict:
    """One round r >= 1: synthetic data from round r-1's models, one new model per direction."""
    root = Path(cfg.output_dir)
    mono = {cfg.src_lang: cfg.mono_src, cfg.tgt_lang: cfg.mono_tgt}
    models, val = {}, {}
    for name, (a, b, exp) in _pairs(cfg).items():
        d = root / f"round-{r}" / name
        reverse_name = f"{b}-{a}"
        synthetic: list[Path] = []
        if cfg.strategy in ("back_translation", "both"):
            if not mono[b]:
                raise SynthError(f"loop: back-translation for {name} needs monolingual {b} text (mono_{'tgt' if b == cfg.tgt_lang else 'src'})")
            synthetic.append(translation_step(mono[b], previous[reverse_name], d / "bt", cfg.generation, "back",
                                              cfg.max_mono_lines, cfg.device, cfg.progress, log))
        if cfg.strategy in ("self_training", "both"):
            if not mono[a]:
                raise SynthError(f"loop: self-training for {name} needs monolingual {a} text")
            synthetic.append(translation_step(mono[a], previous[name], d / "ft", cfg.generation, "forward",
                                              cfg.max_mono_lines, cfg.device, cfg.progress, log))
        if cfg.filter is not None:
            synthetic = filter_step(synthetic, d / "filtered.jsonl", Path(previous[name]), Path(previous[reverse_name]),
                                    cfg.filter, cfg.device, cfg.progress, log)
        experiment = experiment_dict(exp, cfg.experiment_overrides, name)
        mixed = mix_step(synthetic, d / "mix", a, b, cfg.tag, cfg.real_ratio, experiment.get("data"), log)
        best = train_step(experiment, d / "model", [str(mixed)], log)
        models[name], val[name] = str(best), val_scores(best).get("val_bleu")
    return {"round": r, "models": models, "val_bleu": val, "done": True}


def decide(history: list[dict], min_improvement: float) -> bool:
    """True if the last round improved some direction's val BLEU by more than ``min_improvement``
    over its best in the earlier rounds."""
    last = history[-1]["val_bleu"]
    for name, bleu in last.items():
        earlier = [h["val_bleu"].get(name) for h in history[:-1] if h["val_bleu"].get(name) is not None]
        if bleu is not None and (not earlier or bleu > max(earlier) + min_improvement):
            return True
    return False


def run_loop(cfg: LoopConfig, log: Callable[[str], None] = print) -> dict:
    """Run (or resume) the rounds; returns the summary also written to ``loop.json``."""
    root = Path(cfg.output_dir)
    root.mkdir(parents=True, exist_ok=True)
    write_yaml(root / "config.yaml", asdict(cfg))
    history: list[dict] = []
    r0 = root / "round-0/round.json"
    if r0.exists():
        history.append(read_json(r0))
    else:
        models = _round0(cfg, root, log)
        history.append({"round": 0, "models": models,
                        "val_bleu": {n: val_scores(m).get("val_bleu") for n, m in models.items()}, "done": True})
        write_json(r0, history[0])
    stop = "max_rounds"
    for r in range(1, cfg.max_rounds + 1):
        path = root / f"round-{r}/round.json"
        if path.exists():
            log(f"loop: round {r} already done")
            result = read_json(path)
        else:
            log(f"loop: round {r}")
            result = run_round(cfg, r, history[-1]["models"], log)
            write_json(path, result)
        history.append(result)
        log(f"loop: round {r} val BLEU " + ", ".join(f"{n} {b}" for n, b in result["val_bleu"].items()))
        if not decide(history, cfg.min_improvement):
            stop = "no_improvement"
            break
    best = {}
    for name in history[0]["models"]:
        scored = [(h["val_bleu"].get(name), h["round"]) for h in history if h["val_bleu"].get(name) is not None]
        best[name] = max(scored)[1] if scored else len(history) - 1
    summary = {"rounds": history, "stop": stop, "best_round": best,
               "best_models": {n: history[r]["models"][n] for n, r in best.items()}}
    write_json(root / "loop.json", summary)
    log(f"loop: stopped ({stop}); best rounds {best}")
    return summary
