"""The stacked ladder: each rung takes the best system so far (chosen on val) and adds one step.

    baseline (greedy) -> +beam -> +bt -> +ensemble -> +rerank -> +mbr -> +distillation -> +agent

A rung that loses on val is still built, scored and shown, marked as not kept; the next rung builds
on the kept system. Its ``p_vs_prev`` compares it with the system it built on. With two directions
(``data.pairs: [en-de, de-en]``) every model is trained once: each direction's systems are the
other's back-translators and noisy-channel models.

Every step is a cached stage (``stages.StageRunner``) in the run directory; models are stages named
``model.<role>.<pair>`` and system outputs stages named ``<pair>.<rung>``. Stages talk through files.
A rerun continues from whatever finished. Settings are chosen on val; test and blind sets are only
decoded (and test sets scored).
"""

from __future__ import annotations

import functools
import gc
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from core_seq2seq import distributed
from core_seq2seq.config import ConfigError, apply_overrides, from_dict, key_dict, load_yaml
from core_seq2seq.data import DataError, DownloadError
from core_seq2seq.precision import resolve_precision, set_run_precision
from core_seq2seq.training import DataConfig, ExperimentConfig, ModelConfig, TrainConfig, train
from core_seq2seq.translator import DecodeSettings, LSTMTranslator
from evals.records import attach_significance, make_record, write_records
from evals.textio import atomic_write_bytes, atomic_write_lines, atomic_write_text, read_lines
from inference_compute.compute import ComputeMeter

from .config import PipelineConfig, RoleConfig
from .corpora import Corpora, EvalSet, resolve_corpora
from .stages import PlanStop, StageRunner
from .workers import die_with_parent

Log = Callable[[str], None]
RUNS_ENV = "DECADE_RUNS"
COMPUTE_KEYS = ("decode_seconds", "forward_calls", "decoder_row_steps", "flops")


# ---- configuration and run directory ------------------------------------------------------------

def load_pipeline_config(path: str | Path, overrides: list[str] | None = None) -> PipelineConfig:
    """Read a ladder config; ``overrides`` are ``--set a.b=value`` pairs (values parsed as YAML).
    Every key is checked here, the models' role overrides included, before anything runs."""
    try:
        cfg = from_dict(PipelineConfig, apply_overrides(load_yaml(path), list(overrides or ())))
        for pair in cfg.data.pairs:
            _split_pair(pair)
        roles = (("backtranslation.model", cfg.backtranslation.model), ("rerank.r2l_model", cfg.rerank.r2l_model),
                 ("rerank.lm_model", cfg.rerank.lm_model))
        for where, role in roles:
            role_sections(cfg, role, where)
        role_sections(cfg, RoleConfig(train=cfg.distillation.train), "distillation")
        ft = from_dict(TrainConfig, {**asdict(cfg.train), **cfg.backtranslation.model.train,
                                     **cfg.backtranslation.finetune_train}, "backtranslation.finetune_train")
        for key in ("max_steps", "init_from"):
            if key in cfg.backtranslation.finetune_train:
                raise ConfigError(f"backtranslation.finetune_train.{key}: set by the ladder (finetune_steps; the "
                                  "back-translation model); remove it")
        from core_seq2seq.posttrain import PosttrainConfig
        pc = from_dict(PosttrainConfig, cfg.distillation.posttrain, "distillation.posttrain")
        # an explicit bf16 where the hardware lacks it is refused now, not hours in when that model starts
        for where, precision in (("train.precision", cfg.train.precision),
                                 ("distillation.posttrain.precision", pc.precision),
                                 ("backtranslation.finetune_train.precision", ft.precision),
                                 ("distillation.train.precision", cfg.distillation.train.get("precision", "auto")),
                                 *((f"{w}.train.precision", r.train["precision"]) for w, r in roles if "precision" in r.train)):
            try:
                resolve_precision(precision, distributed.device())
            except ValueError as e:
                raise ConfigError(f"{where}: {e}") from None
        if not cfg.data.pairs:
            raise ConfigError("data.pairs: name at least one direction, e.g. [en-de]")
        if not cfg.beam.widths or min(cfg.beam.widths) < 1:
            raise ConfigError("beam.widths: give one or more widths >= 1")
        return cfg
    except ConfigError as e:
        message = str(e)
        raise ConfigError(message if message.startswith(f"{path}:") else f"{path}: {message}") from None


def _split_pair(pair: str) -> tuple[str, str]:
    from core_seq2seq.tokenizer import LANGUAGES

    src, sep, tgt = pair.partition("-")
    if not sep or not src or not tgt or src == tgt:
        raise ConfigError(f"data.pairs: {pair!r} is not a direction like en-de")
    for lang in (src, tgt):
        if lang not in LANGUAGES:  # each target language needs its own tag token in the shared vocabulary
            raise ConfigError(f"data.pairs: {pair!r}: language {lang!r} is not one of {', '.join(LANGUAGES)}")
    return src, tgt


def role_sections(cfg: PipelineConfig, role: RoleConfig | None, where: str = "") -> tuple[ModelConfig, TrainConfig]:
    """``model``/``train`` with one role's overrides applied (a bad key is a ConfigError naming it)."""
    role = role or RoleConfig()
    model = from_dict(ModelConfig, {**asdict(cfg.model), **role.model}, f"{where}.model" if where else "model")
    tc = from_dict(TrainConfig, {**asdict(cfg.train), **role.train}, f"{where}.train" if where else "train")
    return model, tc


def stage_patterns(cfg: PipelineConfig) -> list[str]:
    """Regular expressions of every stage name a run of ``cfg`` can make (``--force`` must name one)."""
    import re

    pairs = "|".join(re.escape(p) for p in cfg.data.pairs)
    rev = "|".join(re.escape("-".join(reversed(_split_pair(p)))) for p in cfg.data.pairs)
    langs = "|".join(sorted({lang for p in cfg.data.pairs for lang in _split_pair(p)}))
    return ["tokenizer", f"model\\.(fwd|bt|btft|r2l)\\.({pairs}|{rev})", f"model\\.lm\\.({langs})", f"(mono|data\\.lm)\\.({langs})",
            f"data\\.r2l\\.({pairs})", f"average\\.(fwd|bt|btft)\\.({pairs})",
            f"model\\.(dst|dstt|dpo|cpo|orpo|mrt|grpo)\\.({pairs})",
            f"({pairs})\\.(distill_data|distill_mix|distill_mix_tagged|preference_data|distillation_\\w+)",
            f"({pairs})\\.(baseline|beam\\d+|bt_data|bt|bt_ft|ensemble_\\w+|rerank_mbr|agent|agent_curve)",
            f"(data|model)\\.curve\\d+\\.({pairs})", f"({pairs})\\.curve\\d+"]


def check_force(cfg: PipelineConfig, force: set[str]) -> None:
    """``--force`` names stages of this run; a misspelled one is an error, not a silent no-op."""
    import re

    bad = sorted(f for f in force if not any(re.fullmatch(p, f) for p in stage_patterns(cfg)))
    if bad:
        raise ConfigError(f"--force: no stage {', '.join(map(repr, bad))} in this run; stages are named like "
                          f"tokenizer, model.fwd.{cfg.data.pairs[0]}, {cfg.data.pairs[0]}.beam5, "
                          f"{cfg.data.pairs[0]}.rerank_mbr (the directories of the run directory)")


def resolve_run_dir(cfg: PipelineConfig, out: str | None, config_path: str) -> Path:
    """``--out``, else the config's ``run_dir``, else ``$DECADE_RUNS/<config name>``, else
    ``~/decade-runs/<config name>``: runs live outside the source tree unless asked otherwise."""
    if out:
        return Path(out).expanduser()
    if cfg.run_dir:
        return Path(cfg.run_dir).expanduser()
    base = Path(os.environ.get(RUNS_ENV) or Path.home() / "decade-runs")
    return base / (Path(config_path).stem or "run")


# ---- systems ------------------------------------------------------------------------------------

@dataclass
class System:
    """One rung's output: what it decodes with, what it produced, what it cost, what it built on."""

    name: str  # the record's system name, e.g. "+beam"
    stage: str  # the rung kind, e.g. "beam"
    pair: str
    models: list[str]  # forward model dir(s) (several: an ensemble)
    decode: DecodeSettings  # the test-time search
    outputs: dict[str, dict]  # set -> {"hyp_path", "compute"}
    trained: list[str]  # model stages whose training this system needs (charged once each)
    built_on: str | None = None
    kept: bool = True
    val_bleu: float = float("-inf")
    stages: list[str] = field(default_factory=list)  # stages run for this rung (its own cost)
    provenance: dict[str, Any] = field(default_factory=dict)


def val_bleu(outputs: dict, sets: dict[str, EvalSet]) -> float:
    """sacreBLEU of a system's val output: the only score that chooses anything."""
    from evals.metrics import corpus_bleu

    if "val" not in outputs:
        return float("-inf")
    return corpus_bleu(read_lines(outputs["val"]["hyp_path"]), sets["val"].ref)


# ---- the ladder ---------------------------------------------------------------------------------

class Ladder:
    """Trains each model once, builds each direction's rungs on its best system so far."""

    def __init__(self, cfg: PipelineConfig, run_dir: Path, corpora: Corpora, runner: StageRunner, log: Log):
        self.cfg, self.run_dir, self.corpora, self.runner, self.log = cfg, run_dir, corpora, runner, log
        set_run_precision(cfg.train.precision)  # decoding and scoring follow the run's training precision
        self.pairs = list(cfg.data.pairs)
        self.sets = {p: corpora.eval_sets(*_split_pair(p), cfg.tune_set_limit) for p in self.pairs}
        self.systems: dict[str, list[System]] = {p: [] for p in self.pairs}
        self.models: dict[str, dict] = {}  # model stage -> outputs
        self.bt_models: dict[str, dict] = {}  # pair -> the back-translation model the +bt rung chose
        # pair -> the +distillation rung's side by side at one beam: "start" (its student) and each method -> outputs
        self.side_by_side: dict[str, dict[str, tuple[dict, dict | None]]] = {}  # pair -> label -> (decodes, training)
        self.agent_curves: dict[str, tuple[Path, dict]] = {}  # pair -> the +agent stage's val curve, its test replay
        self.progress = sys.stderr.isatty()
        self._pool: Any = None  # the worker processes, started at the first parallel step, kept to the end

    # -- shared pieces --

    def tokenizer(self) -> str:
        """One joint subword model over every language of the run's real training text, shared by every
        model (so any of them can be ensembled)."""
        from core_seq2seq.data import read_text_lines
        from core_seq2seq.tokenizer import train_tokenizer

        tc = self.cfg.tokenizer
        langs = sorted({lang for p in self.pairs for lang in _split_pair(p)})
        files = [self.corpora.train[lang] for lang in langs]

        def work(stage_dir: Path) -> dict:
            texts = [line for f in files for line in read_text_lines(f)[:self.cfg.data.max_train_pairs or None]]
            # The back-translation tag's characters must be in the alphabet (it is prepended to synthetic sources).
            tok = train_tokenizer(texts + [self.cfg.backtranslation.tag] * 2, tc.vocab_size, tc.kind, tc.min_frequency)
            tmp = stage_dir / "tokenizer.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            tok.save_pretrained(tmp)
            shutil.rmtree(stage_dir / "tokenizer", ignore_errors=True)
            os.replace(tmp, stage_dir / "tokenizer")
            return {"path": str(stage_dir / "tokenizer"), "vocab": len(tok)}

        if tc.path:
            return tc.path
        return self.runner.run("tokenizer", {**key_dict(tc), "tag": self.cfg.backtranslation.tag,
                                             "max_train_pairs": self.cfg.data.max_train_pairs},
                               {"files": files}, work)["path"]

    def train_model(self, role: str, src: str, tgt: str, data: DataConfig, role_cfg: RoleConfig | None = None,
                    inputs: dict | None = None) -> dict:
        """Train (or find trained) the model ``model.<role>.<src>-<tgt>``; returns its outputs."""
        name = f"model.{role}.{src}-{tgt}" if role != "lm" else f"model.lm.{tgt}"
        if name in self.models:
            return self.models[name]
        model, tc = role_sections(self.cfg, role_cfg)
        tok = replace(self.cfg.tokenizer, path=self.tokenizer())
        exp = ExperimentConfig(output_dir="", data=data, tokenizer=tok, model=model, train=replace(tc, progress=self.progress))

        def work(stage_dir: Path) -> dict:
            run = stage_dir / "model"
            exp.output_dir = str(run)
            start = time.perf_counter()
            train(exp, log=lambda m: self.log(f"[{name}] {m}"))
            meta = json.loads((run / "best/decade_meta.json").read_text())
            stop = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
            stop = [e for e in stop if e.get("event") == "stop"][-1]
            return {"model": str(run / "best"), "run": str(run), "train_seconds": time.perf_counter() - start,
                    "val_bleu": meta.get("val", {}).get("val_bleu"), "best_step": meta.get("step"),
                    "steps": stop["step"], "stop_reason": stop["reason"], "train_seconds_total": stop["elapsed"]}

        key = {k: v for k, v in key_dict(exp).items() if k != "output_dir"}
        key["train"].pop("progress")
        key["train"].pop("log_with", None)  # how training reports is not what it makes
        self.models[name] = self.runner.run(name, key, dict(inputs or {}), work)
        self.models[name]["stage"] = name
        return self.models[name]

    def data_config(self, src: str, tgt: str, extra: Sequence[str] = (), train: tuple[str, str] | None = None,
                    val: tuple[str, str] | None = None) -> DataConfig:
        c = self.corpora
        train_src, train_tgt = train or (c.train[src], c.train[tgt])
        val_src, val_tgt = val or (c.val[src], c.val[tgt])
        # A TSV/JSONL file holds both sides: its "target" file is not needed.
        return DataConfig(corpus="files", src_lang=src, tgt_lang=tgt, train_src=train_src,
                          train_tgt=None if train_tgt == train_src else train_tgt, val_src=val_src,
                          val_tgt=None if val_tgt == val_src else val_tgt, extra_train=list(extra),
                          max_train_pairs=self.cfg.data.max_train_pairs, max_chars=self.cfg.data.max_chars)

    def forward_model(self, pair: str) -> dict:
        src, tgt = _split_pair(pair)
        return self.train_model("fwd", src, tgt, self.data_config(src, tgt))

    def decode(self, name: str, models: list[str], settings: DecodeSettings, sets: dict[str, EvalSet]) -> dict:
        """Decode every set (val, tests, blind) with one search; hypotheses to files, compute per set."""
        def work(stage_dir: Path) -> dict:
            translator = LSTMTranslator.load(models[0] if len(models) == 1 else models, device=distributed.device())
            out = {}
            for set_name, data in sets.items():
                with ComputeMeter({"model": translator}) as meter:
                    hyps = [c[0].text for c in translator.translate(data.src, settings)]
                path = stage_dir / f"hyps.{set_name}.txt"
                atomic_write_lines(path, hyps)
                out[set_name] = {"hyp_path": str(path), "compute": {k: meter.result[k] for k in COMPUTE_KEYS}}
            return out

        return self.runner.run(name, key_dict(settings), {"models": models, "sets": _set_key(sets)}, work)

    def best(self, pair: str) -> System:
        """The kept system of ``pair`` so far: the last rung val kept."""
        return [s for s in self.systems[pair] if s.kept][-1]

    def add(self, system: System) -> System:
        """Score ``system`` on val and keep it only when it beats the system it built on."""
        sets = self.sets[system.pair]
        system.val_bleu = val_bleu(system.outputs, sets)
        if system.built_on is not None:
            base = next(s for s in self.systems[system.pair] if s.name == system.built_on)
            system.kept = system.val_bleu > base.val_bleu
            self.log(f"[{system.pair}] {system.name}: val BLEU {system.val_bleu:.2f} vs {base.val_bleu:.2f} "
                     f"({base.name}): {'kept' if system.kept else 'not kept'}")
        self.systems[system.pair].append(system)
        return system

    def beam(self, width: int) -> DecodeSettings:
        """Beam search of this width, as every rung that decodes with plain beam builds it (one way, so
        equal widths share their stage keys)."""
        return DecodeSettings(method="beam", beam_size=width, batch_size=self.cfg.batch_size)

    def reverse_system(self, pair: str) -> tuple[list[str], DecodeSettings, list[str]]:
        """The best model(s) of the other direction: its kept system when it is part of the run,
        else its forward model (trained here once) with beam search. Returns (models, search, trained)."""
        src, tgt = _split_pair(pair)
        rev = f"{tgt}-{src}"
        if rev in self.systems and self.systems[rev]:
            best = self.best(rev)
            return best.models, best.decode, best.trained
        model = self.forward_model(rev)
        width = self.cfg.beam.widths[0]
        return [model["model"]], self.beam(width), [model["stage"]]

    # -- parallel work --

    def parallel(self, jobs: list[tuple[str, tuple]]) -> None:
        """Run independent stage-making calls (``(method, args)``), up to ``workers`` at once, each in
        its own process with ``train.num_threads`` threads; their results land in this runner, so the
        rung code that follows finds them done. With one worker they simply run here, in order."""
        jobs = [j for j in jobs if j is not None]
        workers = min(self.cfg.workers, len(jobs))
        if self.runner.plan is not None:  # planning: walk every job here, then stop where any would run
            stopped = []
            for method, args in jobs:
                try:
                    getattr(self, method)(*args)
                except PlanStop as e:
                    stopped.append(str(e))
            if stopped:
                raise PlanStop(", ".join(stopped))
            return
        if workers <= 1:
            for method, args in jobs:
                getattr(self, method)(*args)
            return
        from concurrent.futures import FIRST_EXCEPTION, wait

        # a forced stage this invocation already remade is not forced again in a later job
        state = (self.cfg, self.run_dir, self.corpora, set(self.runner.force) - set(self.runner.done))
        futures = []
        try:
            futures = [self._workers().submit(_job, state, method, args) for method, args in jobs]
            wait(futures, return_when=FIRST_EXCEPTION)
            failed = [f for f in futures if f.done() and not f.cancelled() and f.exception() is not None]
            if failed:
                running = sum(not f.done() for f in futures)
                self.log(f"a parallel stage failed ({type(failed[0].exception()).__name__}); "
                         f"{running} stage(s) still running finish first (their work is kept)")
                raise failed[0].exception()
            for future in futures:
                done, timings, ran = future.result()
                # what this invocation ran stays "ran" when a later job finds it cached (the reranker's
                # models train beside the back-translation models and are looked up again at +rerank)
                ran_here = set(self.runner.timings) - self.runner.cached
                self.runner.done.update(done)
                self.runner.timings.update({k: v for k, v in timings.items() if k not in ran_here or k in ran})
                self.runner.cached = (self.runner.cached | (set(timings) - ran_here)) - set(ran)  # what the worker found cached stays so
        except BaseException:
            for future in futures:
                future.cancel()
            self.close()  # the jobs already running finish (or fail) before the error is reported
            raise

    def _workers(self) -> Any:
        """The run's worker processes: started once (each spends seconds importing torch and
        transformers) and reused by every parallel step until ``close``."""
        if self._pool is not None and self._pool._broken:  # a worker died between steps (out of memory, say)
            self.close()
        if self._pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(max_workers=self.cfg.workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=die_with_parent, initargs=(os.getpid(),))
        return self._pool

    def close(self) -> None:
        """Stop the worker processes (after the jobs they are running)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    # -- rungs: each takes every direction, so that independent work can run side by side --

    def baseline_and_beam(self) -> None:
        # Every forward model the run needs: its directions' and, for a one-direction run, the reverse
        # direction's (the back-translator and noisy channel).
        needed = list(self.pairs) + [f"{t}-{s}" for s, t in map(_split_pair, self.pairs) if f"{t}-{s}" not in self.pairs]
        self.parallel([("forward_model", (p,)) for p in needed])
        for pair in self.pairs:
            fwd = self.forward_model(pair)
            sets = self.sets[pair]
            greedy = DecodeSettings(method="greedy", batch_size=self.cfg.batch_size)
            out = self.decode(f"{pair}.baseline", [fwd["model"]], greedy, sets)
            self.add(System("baseline", "baseline", pair, [fwd["model"]], greedy, out, [fwd["stage"]],
                            stages=[fwd["stage"], f"{pair}.baseline"], provenance={"decode": "greedy"}))
            if not self.cfg.beam.enabled:
                continue
            # One stage per width; val chooses the width, the rung reports that one.
            tried = {}
            for width in self.cfg.beam.widths:
                settings = self.beam(width)
                name = f"{pair}.beam{width}"
                tried[width] = (settings, self.decode(name, [fwd["model"]], settings, sets), name)
            width = max(tried, key=lambda w: (val_bleu(tried[w][1], sets), -w))
            settings, out, name = tried[width]
            self.add(System("+beam", "beam", pair, [fwd["model"]], settings, out, [fwd["stage"]], built_on="baseline",
                            stages=[tried[w][2] for w in tried],
                            provenance={"decode": f"beam {width}", "val_bleu_by_width": {
                                str(w): round(val_bleu(tried[w][1], sets), 2) for w in tried}}))

    def bt_data(self, pair: str, back_translator: list[str]) -> dict:
        """Back-translate the target language's clean monolingual text with ``back_translator`` (the
        other direction's best model(s)) and mix it, tagged, with the upsampled real pairs."""
        from synth.backtranslate import BacktranslateConfig, backtranslate, generation_for
        from synth.mix import META as MIX_META, MixConfig, mix

        bt = self.cfg.backtranslation
        src, tgt = _split_pair(pair)
        mono = self.monolingual(tgt)
        name = f"{pair}.bt_data"

        def work(stage_dir: Path) -> dict:
            generation = generation_for(bt.method, beam_size=bt.beam_size, shard_size=bt.shard_size,
                                        batch_size=self.cfg.batch_size, seed=self.cfg.train.seed)
            model = back_translator if len(back_translator) > 1 else back_translator[0]
            synthetic = backtranslate(BacktranslateConfig(input=mono["path"], output_dir=str(stage_dir / "bt"),
                                                          model=model, max_lines=bt.max_monolingual,
                                                          progress=self.progress, generation=generation,
                                                          device=distributed.device()),
                                      log=lambda m: self.log(f"[{name}] {m}"))
            real = self.data_config(src, tgt)
            mixed = mix(MixConfig(src_lang=src, tgt_lang=tgt, synthetic=[str(synthetic)], output=str(stage_dir / "mix"),
                                  tag=bt.tag, real_ratio=bt.real_ratio, real=real if bt.real_ratio else None),
                        log=lambda m: self.log(f"[{name}] {m}"))
            meta = json.loads((Path(mixed) / MIX_META).read_text())
            return {"mix": str(mixed), "synthetic": str(synthetic), "synthetic_pairs": meta.get("synthetic_pairs"),
                    "real_copies": meta.get("real_copies_total")}

        # what makes the data (not the model trained on it, nor its fine-tuning)
        key = {k: v for k, v in key_dict(bt).items() if k not in ("model", "finetune_steps", "finetune_train")}
        return self.runner.run(name, {**key, "batch_size": self.cfg.batch_size, "seed": self.cfg.train.seed},
                               {"monolingual": mono["path"], "back_translator": back_translator}, work)

    def bt_model(self, pair: str, mix: str) -> dict:
        src, tgt = _split_pair(pair)
        return self.train_model("bt", src, tgt, self.data_config(src, tgt, [mix]), self.cfg.backtranslation.model,
                                {"mix": mix})

    def bt_finetune(self, pair: str, bt_model: str) -> dict:
        """``model.btft.<pair>``: the back-translation model fine-tuned on the real pairs alone, from its
        best checkpoint: the synthetic pairs' targets are other people's captions, not translations of the
        sources, and fine-tuning on real pairs moves the model back to the references' style."""
        bt = self.cfg.backtranslation
        src, tgt = _split_pair(pair)
        rc = RoleConfig(model=dict(bt.model.model), train={**bt.model.train, **bt.finetune_train, "init_from": bt_model,
                                                           "max_steps": bt.finetune_steps})
        return self.train_model("btft", src, tgt, self.data_config(src, tgt), rc, {"bt_model": bt_model})

    def backtranslation(self) -> None:
        bt = self.cfg.backtranslation
        # Each direction's back-translator is the other direction's best system before this rung, so
        # both directions' synthetic data (and then both models) can be made side by side.
        reverse = {pair: self.reverse_system(pair) for pair in self.pairs}
        for pair in self.pairs:
            self.monolingual(_split_pair(pair)[1])
        self.parallel([("bt_data", (pair, reverse[pair][0])) for pair in self.pairs])
        data = {pair: self.bt_data(pair, reverse[pair][0]) for pair in self.pairs}
        # The reranker's right-to-left models and LMs need only the real pairs and the monolingual text:
        # they join this batch and fill the worker that the shorter back-translation model leaves idle.
        self.parallel([("bt_model", (pair, data[pair]["mix"])) for pair in self.pairs] + self.scorer_model_jobs())
        tried: dict[str, dict[str, dict]] = {}  # pair -> "bt" | "bt+ft" -> the model's outputs
        for pair in self.pairs:
            tried[pair] = {"bt": self.bt_model(pair, data[pair]["mix"])}
        if bt.finetune_steps:
            self.parallel([("bt_finetune", (pair, tried[pair]["bt"]["model"])) for pair in self.pairs])
            for pair in self.pairs:
                tried[pair]["bt+ft"] = self.bt_finetune(pair, tried[pair]["bt"]["model"])
        names = {"bt": "bt", "bt+ft": "bt_ft"}
        decodes = {(pair, k): (f"{pair}.{names[k]}", [m["model"]], self.best(pair).decode, self.sets[pair])
                   for pair in self.pairs for k, m in tried[pair].items()}
        self.parallel([("decode", args) for args in decodes.values()])
        for pair in self.pairs:
            base, sets = self.best(pair), self.sets[pair]
            outs = {k: self.decode(*decodes[(pair, k)]) for k in tried[pair]}
            choice = max(outs, key=lambda k: val_bleu(outs[k], sets))  # a tie keeps the model without fine-tuning
            model = tried[pair][choice]
            rev_models, _, rev_trained = reverse[pair]
            system = self.add(System("+bt", "bt", pair, [model["model"]], base.decode, outs[choice],
                            _union(rev_trained, [m["stage"] for k, m in tried[pair].items() if k in ("bt", choice)]),
                            built_on=base.name,
                            stages=[f"{pair}.bt_data", *[m["stage"] for m in tried[pair].values()],
                                    *[decodes[(pair, k)][0] for k in tried[pair]]],
                            provenance={"back_translator": rev_models, "synthetic_pairs": data[pair]["synthetic_pairs"],
                                        "method": bt.method, "tag": bt.tag, "real_copies": data[pair]["real_copies"],
                                        "finetuned": choice == "bt+ft",
                                        **({"val_bleu_by_model": {k: round(val_bleu(v, sets), 2) for k, v in outs.items()}}
                                           if len(outs) > 1 else {})}))
            # what an ensemble with it trained: the back-translator, the BT model and its fine-tuning
            self.bt_models[pair] = {**model, "behind": system.trained}

    def monolingual(self, lang: str) -> dict:
        """The language's monolingual text, cleaned of every evaluation line (all languages, blind
        included) and of the training side; shared by back-translation and the LM."""
        from synth.prepare import PrepareConfig, prepare

        files = self.corpora.monolingual.get(lang) or []
        if not files:
            raise DataError(f"no monolingual {lang} text for back-translation or the LM "
                            f"(data.files.monolingual.{lang}); disable those rungs or add some")
        name = f"mono.{lang}"

        def work(stage_dir: Path) -> dict:
            path, report = prepare(PrepareConfig(lang=lang, output=str(stage_dir / f"mono.{lang}.txt"), corpus="files",
                                                 inputs=files, exclude_eval_files=self.corpora.decontamination_files(),
                                                 exclude_train_files=[self.corpora.train[lang]],
                                                 exclude_multi30k_eval=False, exclude_multi30k_train=False),
                                   log=lambda m: self.log(f"[{name}] {m}"))
            return {"path": str(path), "lines": report.kept, "removed": report.removed}

        return self.runner.run(name, {"lang": lang}, {"files": files, "exclude": self.corpora.decontamination_files(),
                                                      "train": self.corpora.train[lang]}, work)

    def ensemble(self) -> None:
        """Checkpoint averaging of the kept model(s), and an ensemble of every forward model of the
        direction; val picks one; the rung is kept if it beats the system so far on val."""
        from core_seq2seq.training import average_checkpoints

        ec = self.cfg.ensemble
        for pair in self.pairs:
            base = self.best(pair)
            sets = self.sets[pair]
            # the direction's forward models: real pairs only, and the model the +bt rung chose (fine-tuned or not)
            forward = [m for m in self.models.values() if m["stage"] == f"model.fwd.{pair}"]
            forward += [self.bt_models[pair]] if pair in self.bt_models else []
            averaged: dict[str, str] = {}
            if ec.average_last > 1:
                for m in forward:
                    name = f"average.{m['stage'].removeprefix('model.')}"

                    def work(stage_dir: Path, m: dict = m) -> dict:
                        ckpts = sorted(Path(m["run"]).glob("ckpt-*[0-9]"))[-ec.average_last:]
                        average_checkpoints(ckpts, stage_dir / "model")
                        return {"model": str(stage_dir / "model"), "checkpoints": [str(c) for c in ckpts]}

                    averaged[m["model"]] = self.runner.run(name, {"last": ec.average_last}, {"model": m["model"]},
                                                           work)["model"]
            candidates: dict[str, list[str]] = {}
            if averaged:
                candidates["average"] = [averaged.get(m, m) for m in base.models]
            if ec.combine and len(forward) > 1:
                candidates["ensemble"] = [m["model"] for m in forward]
                if averaged:
                    candidates["ensemble_of_averages"] = [averaged[m["model"]] for m in forward]
            if not candidates:
                self.log(f"[{pair}] +ensemble: nothing to try (one model, no averaging)")
                continue
            tried = {k: self.decode(f"{pair}.ensemble_{k}", v, base.decode, sets) for k, v in candidates.items()}
            choice = max(tried, key=lambda k: val_bleu(tried[k], sets))
            models = candidates[choice]
            trained = _union(base.trained, *([[m["stage"]] + m.get("behind", []) for m in forward]
                                             if "ensemble" in choice else []))
            self.add(System("+ensemble", "ensemble", pair, models, base.decode, tried[choice], trained,
                            built_on=base.name,
                            stages=[f"average.{m['stage'].removeprefix('model.')}" for m in forward if averaged]
                            + [f"{pair}.ensemble_{k}" for k in tried],
                            provenance={"choice": choice, "models": models, "val_bleu_by_candidate": {
                                k: round(val_bleu(v, sets), 2) for k, v in tried.items()}}))

    def r2l_model(self, pair: str) -> dict:
        """A right-to-left model of ``pair``: the real pairs with each target's words reversed."""
        from core_seq2seq.data import read_text_lines
        from inference_compute.r2l import build_r2l_corpus

        src, tgt = _split_pair(pair)
        c = self.corpora

        def work(stage_dir: Path) -> dict:
            build_r2l_corpus(stage_dir, (read_text_lines(c.train[src]), read_text_lines(c.train[tgt])),
                             (read_text_lines(c.val[src]), read_text_lines(c.val[tgt])), src, tgt)
            return {"train": str(stage_dir / "train.tsv"), "val": str(stage_dir / "val.tsv")}

        d = self.runner.run(f"data.r2l.{pair}", {}, {"train": [c.train[src], c.train[tgt]],
                                                     "val": [c.val[src], c.val[tgt]]}, work)
        data = self.data_config(src, tgt, train=(d["train"], d["train"]), val=(d["val"], d["val"]))
        return self.train_model("r2l", src, tgt, data, self.cfg.rerank.r2l_model, d)

    def lm_model(self, lang: str) -> dict:
        """A ``lang`` language model: its clean monolingual text plus the training side, scored as
        p(target | placeholder source) (``inference_compute.lm``)."""
        from core_seq2seq.data import read_text_lines
        from inference_compute.lm import build_lm_corpus

        mono = self.monolingual(lang)
        c = self.corpora

        def work(stage_dir: Path) -> dict:
            lines = read_text_lines(mono["path"]) + read_text_lines(c.train[lang])
            build_lm_corpus(stage_dir, lines, read_text_lines(c.val[lang]), [], lang)
            return {"train": str(stage_dir / "train.tsv"), "val": str(stage_dir / "val.tsv")}

        d = self.runner.run(f"data.lm.{lang}", {}, {"monolingual": mono["path"], "train": c.train[lang]}, work)
        data = self.data_config(lang, lang, train=(d["train"], d["train"]), val=(d["val"], d["val"]))
        return self.train_model("lm", lang, lang, data, self.cfg.rerank.lm_model, d)

    def rerank_outputs(self, pair: str, models: list[str], channel: list[str] | None, r2l: str | None,
                       lm: str | None, name: str = "") -> dict:
        """n-best of ``models``; noisy-channel features; weights tuned on val; MBR over the same lists."""
        from core_seq2seq.cache import cached, lines_digest, write_json
        from inference_compute.candidates import CandidateSpec, PooledCandidate, generate_candidates
        from inference_compute.features import Scorers, length_ratio
        from inference_compute.mbr import MbrConfig, mbr_decode
        from inference_compute.rerank import save_weights, select
        from inference_compute.tune import TuneConfig, tune_margin, tune_weights

        rc, mc = self.cfg.rerank, self.cfg.mbr
        sets = self.sets[pair]
        stage = name or f"{pair}.rerank_mbr"

        def work(stage_dir: Path) -> dict:
            device = distributed.device()
            forward = LSTMTranslator.load(models[0] if len(models) == 1 else models, device=device)
            scorers = Scorers.load(reverse=channel, r2l=r2l, lm=lm, device=device,
                                   typical_ratio=length_ratio(sets["val"].src, sets["val"].ref))
            scorers.check(forward)
            spec = CandidateSpec(methods=[DecodeSettings(method="beam", beam_size=rc.nbest, nbest=rc.nbest,
                                                         batch_size=self.cfg.batch_size)])
            nbest, features, compute = {}, {}, {}
            for set_name, data in sets.items():
                # Each set's n-best and features are saved as soon as they are made (the hour of a
                # full-size run is here), so a rerun of a killed stage redoes only the set in flight.
                path = stage_dir / f"nbest.{set_name}.json"
                saved = cached(path, lines_digest(data.src), field="sources_sha256")
                if saved is None:
                    start = time.perf_counter()
                    with ComputeMeter({**scorers.meters(), "forward": forward}) as meter:
                        made = generate_candidates(forward, data.src, spec)
                        feats = scorers.features(data.src, made)
                    # the hour of a full-size run has no bar: a line per set says where it is
                    self.log(f"[{stage}] {set_name}: {rc.nbest}-best and features of {len(data.src)} "
                             f"sources in {time.perf_counter() - start:.0f}s")
                    saved = {"sources_sha256": lines_digest(data.src), "compute": {k: meter.result[k] for k in COMPUTE_KEYS},
                             "nbest": [[[c.text, c.logprob, c.length, c.score, getattr(c, "count", 1)] for c in cs]
                                       for cs in made], "features": feats}
                    write_json(path, saved, indent=None)
                nbest[set_name] = [[PooledCandidate(t, lp, n, sc, count=k) for t, lp, n, sc, k in cs] for cs in saved["nbest"]]
                features[set_name], compute[set_name] = saved["features"], saved["compute"]
            names = scorers.feature_names()
            tuned = tune_weights(features["val"], [[c.text for c in cs] for cs in nbest["val"]], sets["val"].ref,
                                 TuneConfig(features=names, random_trials=rc.trials, seed=rc.seed))
            save_weights(stage_dir / "weights.json", tuned.weights, val_bleu=tuned.score, features=names)
            result: dict = {"weights": tuned.weights, "val_bleu_tuned": tuned.score, "rerank": {}, "mbr": {}}
            # What a scoring margin would keep of this reranker on val (from the features in hand: no model
            # runs); the agent's rungs take its pick with agent.score_margin: val.
            result["score_margin"] = tune_margin(features["val"], [[c.text for c in cs] for cs in nbest["val"]],
                                                 sets["val"].ref, tuned.weights)
            mbr_cfg = MbrConfig(utility=mc.utility, weighting=mc.weighting, temperature=mc.temperature)
            for set_name in sets:
                picks = select(features[set_name], tuned.weights)
                path = stage_dir / f"rerank.{set_name}.txt"
                atomic_write_lines(path, [cs[i].text for cs, i in zip(nbest[set_name], picks)])
                result["rerank"][set_name] = {"hyp_path": str(path), "compute": compute[set_name]}
                if mc.enabled:
                    start = time.perf_counter()
                    mbr_picks, utility_calls = mbr_decode(nbest[set_name], mbr_cfg)
                    path = stage_dir / f"mbr.{set_name}.txt"
                    atomic_write_lines(path, [cs[i].text for cs, i in zip(nbest[set_name], mbr_picks)])
                    c = dict(compute[set_name])
                    c["decode_seconds"] += time.perf_counter() - start
                    c["utility_calls"] = utility_calls
                    result["mbr"][set_name] = {"hyp_path": str(path), "compute": c}
            return result

        inputs = {"models": models, "channel": channel, "r2l": r2l, "lm": lm, "sets": _set_key(sets)}
        return self.runner.run(stage, {
            "rerank": {k: v for k, v in key_dict(rc).items() if not k.endswith("_model")}, "mbr": key_dict(mc),
            "batch_size": self.cfg.batch_size}, inputs, work)

    def scorer_model_jobs(self) -> list[tuple[str, tuple]]:
        """The reranker's own models (right-to-left, target LM) as parallel jobs; none when it is off."""
        rc = self.cfg.rerank
        if not rc.enabled:
            return []
        langs = sorted({_split_pair(p)[1] for p in self.pairs})
        for lang in langs if rc.lm else []:
            self.monolingual(lang)
        return (([("r2l_model", (p,)) for p in self.pairs] if rc.r2l else [])
                + ([("lm_model", (lang,)) for lang in langs] if rc.lm else []))

    def rerank_and_mbr(self) -> None:
        rc, mc = self.cfg.rerank, self.cfg.mbr
        self.parallel(self.scorer_model_jobs())
        plans = {}
        for pair in self.pairs:  # every direction's inputs are fixed before any reranked system is added
            base = self.best(pair)
            channel, _, channel_trained = self.reverse_system(pair) if rc.channel else (None, None, [])
            extra = {}
            if rc.r2l:
                extra["r2l"] = self.r2l_model(pair)
            if rc.lm:
                extra["lm"] = self.lm_model(_split_pair(pair)[1])
            args = (pair, base.models, channel, extra.get("r2l", {}).get("model"), extra.get("lm", {}).get("model"))
            plans[pair] = (base, channel, channel_trained, extra, args)
        self.parallel([("rerank_outputs", plan[-1]) for plan in plans.values()])
        for pair, (base, channel, channel_trained, extra, args) in plans.items():
            rm = self.rerank_outputs(*args)
            trained = _union(base.trained, channel_trained, [m["stage"] for m in extra.values()])
            decode = replace(base.decode, beam_size=rc.nbest, nbest=rc.nbest, method="beam")
            rerank = self.add(System("+rerank", "rerank", pair, base.models, decode, rm["rerank"], trained,
                                     built_on=base.name, stages=[f"{pair}.rerank_mbr", *[m["stage"] for m in extra.values()]],
                                     provenance={"nbest": rc.nbest, "weights": rm["weights"], "channel": channel,
                                                 "r2l": args[3], "lm": args[4],
                                                 **({"score_margin": rm["score_margin"]} if "score_margin" in rm else {})}))
            if mc.enabled:
                self.add(System("+mbr", "mbr", pair, base.models, decode, rm["mbr"], _union(base.trained),
                                built_on=self.best(pair).name, stages=[],
                                provenance={"nbest": rc.nbest, "utility": mc.utility, "weighting": mc.weighting,
                                            "candidates_from": base.name, "reranked": rerank.kept}))

    # -- +distillation: the model learns from the stacked system's own outputs --

    def teacher(self, base: System) -> dict:
        """What translates for distillation: the kept system's reranker or MBR over its n-best, or its
        plain search when neither was kept (a description: stage keys and worker jobs carry it)."""
        rc = self.cfg.rerank
        kind = base.stage if base.stage in ("rerank", "mbr") else "search"
        out = {"kind": kind, "system": base.name, "models": base.models, "decode": key_dict(base.decode), "nbest": rc.nbest}
        if kind == "rerank":
            p = base.provenance
            out.update(weights=p["weights"], channel=p.get("channel"), r2l=p.get("r2l"), lm=p.get("lm"))
        if kind == "mbr":
            mc = self.cfg.mbr
            out.update(mbr={"utility": mc.utility, "weighting": mc.weighting, "temperature": mc.temperature})
        return out

    def teacher_translator(self, pair: str, teacher: dict, keep_pairs: Path | None = None):
        """The teacher as a ``Translator``; ``keep_pairs``: where a reranker or MBR teacher also saves
        the preference pairs of what it translates (``RerankedTranslator``)."""
        from inference_compute.features import Scorers, length_ratio
        from inference_compute.mbr import MbrConfig
        from inference_compute.preference import RerankedTranslator

        models = teacher["models"]
        forward = LSTMTranslator.load(models[0] if len(models) == 1 else models)
        if teacher["kind"] == "search":
            return forward
        if teacher["kind"] == "mbr":
            return RerankedTranslator(forward, teacher["nbest"], mbr=MbrConfig(**teacher["mbr"]),
                                      batch_size=self.cfg.batch_size, keep_pairs=keep_pairs)
        val = self.sets[pair]["val"]
        scorers = Scorers.load(reverse=teacher.get("channel"), r2l=teacher.get("r2l"), lm=teacher.get("lm"),
                               typical_ratio=length_ratio(val.src, val.ref))
        return RerankedTranslator(forward, teacher["nbest"], teacher["weights"], scorers, batch_size=self.cfg.batch_size,
                                  keep_pairs=keep_pairs)

    def distill_data(self, pair: str, teacher: dict, mono: str) -> dict:
        """The system translates the source language's clean monolingual text (synth, sharded and
        resumable: the hours of the rung), keeping the preference pairs of what it ranked."""
        from synth.backtranslate import BacktranslateConfig, GenerationConfig, backtranslate

        dc = self.cfg.distillation
        src = _split_pair(pair)[0]
        name = f"{pair}.distill_data"

        def work(stage_dir: Path) -> dict:
            from core_seq2seq.data import read_text_lines

            d = teacher["decode"]
            generation = GenerationConfig(DecodeSettings(method="beam", beam_size=d["beam_size"],
                                                         length_penalty=d["length_penalty"], batch_size=self.cfg.batch_size,
                                                         seed=self.cfg.train.seed), shard_size=dc.shard_size)
            source, max_lines = mono, dc.max_monolingual
            if dc.train_sources:  # monolingual lines (they exclude the training side) then the training sources
                lines = read_text_lines(mono)[:dc.max_monolingual or None]
                lines += read_text_lines(self.corpora.train[src])[:self.cfg.data.max_train_pairs or None]
                source, max_lines = str(stage_dir / "sources.txt"), 0
                atomic_write_lines(source, lines)
            synthetic = backtranslate(BacktranslateConfig(input=source, output_dir=str(stage_dir / "distill"), mode="forward",
                                                          max_lines=max_lines, progress=self.progress,
                                                          generation=generation),
                                      translator=self.teacher_translator(pair, teacher, stage_dir / "pairs"),
                                      model_name=teacher["system"], log=lambda m: self.log(f"[{name}] {m}"))
            records = json.loads((Path(synthetic).parent / "synthetic.json").read_text())["records"]
            return {"synthetic": str(synthetic), "synthetic_pairs": records, "pairs": str(stage_dir / "pairs")}

        key = {"max_monolingual": dc.max_monolingual, "shard_size": dc.shard_size}
        inputs = {"monolingual": mono, "teacher": teacher}
        if dc.train_sources:  # only then: the key of a run without it stays as it was
            key["train_sources"], inputs["train"] = True, self.corpora.train[src]
        return self.runner.run(name, {**key, "batch_size": self.cfg.batch_size, "seed": self.cfg.train.seed},
                               inputs, work)

    def distill_mix(self, pair: str, synthetic: str, tag: str) -> dict:
        """``{pair}.distill_mix`` (untagged) or ``{pair}.distill_mix_tagged``: the system's translations
        beside the real pairs; a stage of its own, so a new tag or ratio does not translate again."""
        from synth.mix import META as MIX_META, MixConfig, mix

        dc = self.cfg.distillation
        src, tgt = _split_pair(pair)
        name = f"{pair}.distill_mix" + ("_tagged" if tag else "")

        def work(stage_dir: Path) -> dict:
            mixed = mix(MixConfig(src_lang=src, tgt_lang=tgt, synthetic=[synthetic], output=str(stage_dir / "mix"), tag=tag,
                                  real_ratio=dc.real_ratio, real=self.data_config(src, tgt) if dc.real_ratio else None),
                        log=lambda m: self.log(f"[{name}] {m}"))
            meta = json.loads((Path(mixed) / MIX_META).read_text())
            return {"mix": str(mixed), "synthetic_pairs": meta.get("synthetic_pairs"), "real_copies": meta.get("real_copies_total")}

        return self.runner.run(name, {"tag": tag, "real_ratio": dc.real_ratio}, {"synthetic": synthetic}, work)

    def preference_data(self, pair: str, teacher: dict, mono: str, ranked: str = "") -> dict:
        """Preference pairs from the system's ranked n-best of monolingual source lines; ``ranked``: the
        pairs the same teacher saved while it translated those lines for distillation (not ranked again)."""
        from core_seq2seq.data import read_text_lines
        from inference_compute.preference import preference_pairs_in_shards

        dc = self.cfg.distillation
        name = f"{pair}.preference_data"

        def work(stage_dir: Path) -> dict:
            sources = read_text_lines(mono)[:dc.preference_sources]
            translator = self.teacher_translator(pair, teacher)
            pairs, dropped = preference_pairs_in_shards(translator.rank, sources, stage_dir / "shards", dc.shard_size,
                                                        log=lambda m: self.log(f"[{name}] {m}"),
                                                        ranked=[ranked] if ranked else [])
            atomic_write_text(stage_dir / "pairs.jsonl", "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs))
            return {"pairs": str(stage_dir / "pairs.jsonl"), "n_pairs": len(pairs), "sources": len(sources), **dropped}

        key = {"sources": dc.preference_sources, "batch_size": self.cfg.batch_size}
        if dc.shard_size < dc.preference_sources:  # one shard is the single pass of runs made before shards
            key["shard_size"] = dc.shard_size
        return self.runner.run(name, key, {"monolingual": mono, "teacher": teacher}, work)

    def distill_model(self, pair: str, student: str, mix: str, role: str = "dst") -> dict:
        """``model.<role>.<pair>``: the student fine-tuned on ``mix`` (real + distilled pairs); ``dst``
        for untagged distilled sources, ``dstt`` for tagged ones."""
        dc = self.cfg.distillation
        src, tgt = _split_pair(pair)
        rc = RoleConfig(train={**dc.train, "init_from": student, "max_steps": dc.steps})
        return self.train_model(role, src, tgt, self.data_config(src, tgt, [mix]), rc, {"mix": mix, "student": student})

    def posttrain_model(self, pair: str, method: str, student: str, data: str, data_tgt: str = "") -> dict:
        """``model.<method>.<pair>``: core_seq2seq.posttrain from the student; the same keys as a trained
        model's outputs, so its cost is charged like one."""
        from core_seq2seq.posttrain import PosttrainConfig, posttrain

        name = f"model.{method}.{pair}"
        if name in self.models:
            return self.models[name]
        val = self.sets[pair]["val"]  # post-training keeps its best model on val, as training keeps best/
        pc = from_dict(PosttrainConfig, {**self.cfg.distillation.posttrain, "method": method, "model": student,
                                         "data": data, "data_tgt": data_tgt, "max_steps": self.cfg.distillation.steps,
                                         "val_src": val.src_path, "val_tgt": val.ref_path,
                                         "seed": self.cfg.train.seed, "max_pairs": self.cfg.data.max_train_pairs
                                         if data_tgt else 0}, "distillation.posttrain")

        def work(stage_dir: Path) -> dict:
            model = posttrain(replace(pc, output_dir=str(stage_dir / "run")), log=lambda m: self.log(f"[{name}] {m}"))
            info = json.loads((model / "decade_meta.json").read_text())["posttrain"]
            # best_step: the update val kept (0: the student itself, unchanged)
            return {"model": str(model), "run": str(stage_dir / "run"), "train_seconds": info["train_seconds"],
                    "steps": info["steps"], "train_seconds_total": info["train_seconds"], "examples": info["examples"],
                    "best_step": (info.get("validation") or {}).get("best_step")}

        key = {k: v for k, v in key_dict(pc).items() if k not in ("output_dir", "num_threads", "log_every_steps",
                                                            "checkpoint_every_steps")}
        self.models[name] = self.runner.run(name, key, {"student": student, "data": data, "data_tgt": data_tgt}, work)
        self.models[name]["stage"] = name
        return self.models[name]

    def distillation(self) -> None:
        """Each method trains the kept system's model best alone on val on what the whole system knows, within
        the same step budget; each is decoded with one beam search (``distillation.beam_size``); val picks one."""
        dc = self.cfg.distillation
        plans = {}
        for pair in self.pairs:
            base = self.best(pair)
            src = _split_pair(pair)[0]
            teacher = self.teacher(base)
            mono = self.monolingual(src)["path"]
            methods = [m for m in dc.methods if m not in ("dpo", "cpo", "orpo") or teacher["kind"] != "search"]
            if len(methods) < len(dc.methods):
                self.log(f"[{pair}] +distillation: no reranker or MBR kept, so no preference pairs: "
                         f"{', '.join(sorted(set(dc.methods) - set(methods)))} skipped")
            if methods:
                plans[pair] = (base, teacher, mono, methods)
        # The teacher ranks the monolingual text once: distillation's translations first, and the
        # preference pairs of the lines both use come from that ranking (the slow part: a 64-best
        # and its scorers), so preference data follows distillation data.
        distills = {"distill", "distill_tagged"}
        # The student: the kept system's model best alone on val, decoded with the rung's beam (of an
        # ensemble's members, the model trained on real pairs alone is usually the weakest); its
        # decode is the rung's start. The members are decoded beside the teacher's translation.
        starts = {pair: self.start_decodes(pair, base) for pair, (base, *_) in plans.items()}
        settings = {pair: next(iter(starts[pair].values()))[2] for pair in plans}
        self.parallel([("distill_data", (p, t, m)) for p, (_, t, m, ms) in plans.items() if distills & set(ms)]
                      + [("decode", args) for pair in plans for args in starts[pair].values()])
        start_val = {pair: {m: val_bleu(self.decode(*args), self.sets[pair]) for m, args in starts[pair].items()}
                     for pair in plans}
        students = {pair: max(start_val[pair], key=start_val[pair].get) for pair in plans}  # ties: the first
        distilled = {p: self.distill_data(p, t, m) for p, (_, t, m, ms) in plans.items() if distills & set(ms)}
        preference = {p: (p, t, m, distilled.get(p, {}).get("pairs", "")) for p, (_, t, m, ms) in plans.items()
                      if {"dpo", "cpo", "orpo"} & set(ms)}
        self.parallel([("preference_data", args) for args in preference.values()])
        jobs, data = [], {}
        for pair, (base, teacher, mono, methods) in plans.items():
            src, tgt = _split_pair(pair)
            student = students[pair]
            for method in methods:
                if method in distills:  # the same translations, untagged or tagged
                    tag = dc.tag if method == "distill_tagged" else ""
                    mix = self.distill_mix(pair, distilled[pair]["synthetic"], tag)["mix"]
                    data[(pair, method)] = ("distill_model", (pair, student, mix, "dstt" if tag else "dst"))
                elif method in ("dpo", "cpo", "orpo"):
                    pairs = self.preference_data(*preference[pair])["pairs"]
                    data[(pair, method)] = ("posttrain_model", (pair, method, student, pairs))
                else:
                    data[(pair, method)] = ("posttrain_model", (pair, method, student, self.corpora.train[src],
                                                                self.corpora.train[tgt]))
            jobs += [data[(pair, m)] for m in methods]
        self.parallel(jobs)
        # Every model is decoded with the student's beam search, side by side.
        decodes: dict[tuple[str, str], tuple] = {}
        models = {(pair, m): getattr(self, data[(pair, m)][0])(*data[(pair, m)][1])
                  for pair, (*_, methods) in plans.items() for m in methods}
        for pair, (base, teacher, mono, methods) in plans.items():
            for m in methods:
                decodes[(pair, m)] = (f"{pair}.distillation_{m}", [models[(pair, m)]["model"]], settings[pair],
                                      self.sets[pair])
        self.parallel([("decode", args) for args in decodes.values()])
        on_top = []
        for pair, (base, teacher, mono, methods) in plans.items():
            sets = self.sets[pair]
            tried = {m: (models[(pair, m)], self.decode(*decodes[(pair, m)])) for m in methods}
            start = self.decode(*starts[pair][students[pair]])
            # each method's decodes beside its training (the start trains nothing)
            self.side_by_side[pair] = {"start": (start, None), **{m: (v[1], v[0]) for m, v in tried.items()}}
            choice = max(tried, key=lambda m: val_bleu(tried[m][1], sets))
            model, out = tried[choice]
            self.add(System("+distillation", "distillation", pair, [model["model"]], settings[pair], out,
                            _union(base.trained, [model["stage"]]), built_on=base.name,
                            stages=[s for s in (f"{pair}.distill_data", f"{pair}.distill_mix", f"{pair}.distill_mix_tagged",
                                                f"{pair}.preference_data") if s in self.runner.timings]
                            + [tried[m][0]["stage"] for m in tried] + [f"{pair}.distillation_{m}" for m in tried]
                            + [args[0] for args in starts[pair].values()],
                            provenance={"method": choice, "teacher": teacher["system"], "teacher_kind": teacher["kind"],
                                        "student": students[pair], "decode": f"beam {settings[pair].beam_size}",
                                        "val_bleu_start": round(val_bleu(start, sets), 2),
                                        "val_bleu_by_student": {m: round(v, 2) for m, v in start_val[pair].items()},
                                        "val_bleu_by_method": {m: round(val_bleu(v[1], sets), 2) for m, v in tried.items()},
                                        "train_cost_by_method": {m: {"steps": v[0]["steps"], "best_step": v[0].get("best_step"),
                                                                     "seconds": round(v[0]["train_seconds_total"], 1)}
                                                                 for m, v in tried.items()},
                                        # the system's decoding that made the data (stage seconds)
                                        "data_seconds": {s: round(self.runner.timings[s], 1) for s in (
                                            f"{pair}.distill_data", f"{pair}.preference_data") if s in self.runner.timings}}))
            reranked = next((s for s in self.systems[pair] if s.stage == "rerank"), None)
            if reranked is not None:  # the same reranker (weights tuned again on val) over the new model's n-best
                p = reranked.provenance
                on_top.append((pair, model, reranked, (pair, [model["model"]], p["channel"], p["r2l"], p["lm"],
                                                       f"{pair}.distillation_rerank")))
        self.parallel([("rerank_outputs", args) for *_, args in on_top])
        for pair, model, reranked, args in on_top:
            self.rerank_on_top(pair, model, reranked, self.rerank_outputs(*args))

    def start_decodes(self, pair: str, base: System) -> dict[str, tuple]:
        """model -> the decode (stage name, models, settings, sets) of each of ``base``'s models alone, with
        the beam the distilled models use (distillation.beam_size, else the +beam rung's): val picks the
        student among them. The first keeps the name of a one-model system's start."""
        beam = next((s for s in self.systems[pair] if s.stage == "beam"), None)
        settings = self.beam(self.cfg.distillation.beam_size or (beam.decode.beam_size if beam else self.cfg.beam.widths[0]))
        return {m: (f"{pair}.distillation_start" + (str(i) if i else ""), [m], settings, self.sets[pair])
                for i, m in enumerate(base.models)}

    def rerank_on_top(self, pair: str, model: dict, reranked: System, rm: dict) -> None:
        rc, p = self.cfg.rerank, reranked.provenance
        sets = self.sets[pair]
        kinds = {"rerank": rm["rerank"], **({"mbr": rm["mbr"]} if rm["mbr"] else {})}
        kind = max(kinds, key=lambda k: val_bleu(kinds[k], sets))
        decode = DecodeSettings(method="beam", beam_size=rc.nbest, nbest=rc.nbest, batch_size=self.cfg.batch_size)
        self.add(System("+distillation+rerank", "distillation_rerank", pair, [model["model"]], decode, kinds[kind],
                        _union(reranked.trained, [model["stage"]]), built_on=self.best(pair).name,
                        stages=[f"{pair}.distillation_rerank"],
                        provenance={"selector": kind, "nbest": rc.nbest, "weights": rm["weights"], "channel": p["channel"],
                                    "r2l": p["r2l"], "lm": p["lm"], "val_bleu_by_selector": {
                                        k: round(val_bleu(v, sets), 2) for k, v in kinds.items()},
                                    **({"score_margin": rm["score_margin"]} if "score_margin" in rm else {})}))

    def escalating_agent(self, pair: str, home: Path, models: list[str], draft: dict, reverse: list[str], rerank: dict,
                         margin: float | None, budget_set: str = "val") -> tuple[Any, Any, tuple]:
        """The escalating agent of ``pair`` (its config, the agent, its loaded scorers): a beam draft of
        ``models``, the reranker's rungs (rerank<N>) above it; its lexicon and reranker weights in ``home``.
        Budgets are shares of the full reranker's FLOPs per sentence on ``budget_set`` (with a margin the
        top rung is cheaper than that reranker, so its measured figure is given)."""
        from agents.config import AgentConfig, DraftConfig, ModelsConfig
        from agents.escalate import EscalateConfig, load_models
        from agents.lexicon import LexiconConfig
        from agents.run import build_agent
        from inference_compute.features import length_ratio

        ac = self.cfg.agent
        src, tgt = _split_pair(pair)
        sets = self.sets[pair]
        nbest, width = int(rerank["nbest"]), int(draft["beam_size"])
        sizes = sorted({n for n in (nbest // 4 ** k for k in range(max(ac.max_steps, 1))) if n > width} | {nbest})
        budget = replace(EscalateConfig().budget, corpus=ac.budget, sentence=ac.sentence_budget)
        if margin is not None:
            budget.reference_flops_per_sentence = rerank["compute"][budget_set]["flops"] / len(sets[budget_set].src)
        escalate = EscalateConfig(rungs=[f"rerank{n}" for n in sizes], r2l=rerank.get("r2l") or "",
                                  lm=rerank.get("lm") or "", reranker=str(home / "reranker.json"),
                                  curve=list(ac.budgets), budget=budget, score_margin=margin,
                                  length_ratio=length_ratio(sets["val"].src, sets["val"].ref))
        if not (home / "reranker.json").exists():
            atomic_write_text(home / "reranker.json", json.dumps({"weights": rerank["weights"]}) + "\n")
        agent_cfg = AgentConfig(
            models=ModelsConfig(forward=list(models), reverse=list(reverse), src_lang=src, tgt_lang=tgt,
                                device=distributed.device()),
            lexicon=LexiconConfig(path=str(home / "lexicon.json"), src_path=self.corpora.train[src],
                                  tgt_path=self.corpora.train[tgt], max_pairs=self.cfg.data.max_train_pairs),
            draft=DraftConfig(decode=DecodeSettings(**draft)), escalate=escalate, name="agent")
        agent_cfg.critic.signals = [s for s in agent_cfg.critic.signals if s != "round_trip"]  # a decode per look: not cheap
        agent_cfg.policy.seed = ac.seed
        agent = build_agent(agent_cfg, log=self.log)
        return agent_cfg, agent, load_models(agent)

    def agent_outputs(self, pair: str, models: list[str], draft: dict, reverse: list[str], rerank: dict,
                      margin: float | None = None) -> dict:
        """The escalating agent: a beam draft of ``models``, the reranker's rungs where the critic says
        it pays, within a FLOP budget chosen on val (``agents curve``); set -> {hyp_path, compute}."""
        from agents.config import apply_escalation_pick
        from agents.escalate import escalate_corpus
        from agents.curve import run_curve

        ac = self.cfg.agent
        sets = self.sets[pair]

        def work(stage_dir: Path) -> dict:
            agent_cfg, agent, extra = self.escalating_agent(pair, stage_dir, models, draft, reverse, rerank, margin)
            if ac.tune_on_val:
                run_curve(agent, sets["val"].src, sets["val"].ref, stage_dir / "curve", pair, extra,
                          sets["val"].src_path, None)
                agent_cfg.escalate.tuned = str(stage_dir / "curve" / "curve.json")
                apply_escalation_pick(agent_cfg)
            out = {}
            for set_name, data in sets.items():
                reference = (rerank["compute"].get(set_name) or {}).get("flops")
                finals, _, report = escalate_corpus(agent, data.src, str(stage_dir / f"trace.{set_name}.jsonl"),
                                                    reference, extra, log=self.log)
                path = stage_dir / f"hyps.{set_name}.txt"
                atomic_write_lines(path, finals)
                out[set_name] = {"hyp_path": str(path), "trace": str(stage_dir / f"trace.{set_name}.jsonl"), "compute": {
                    "decode_seconds": report["spent_seconds"], "forward_calls": int(report["spent_forward_calls"]),
                    "decoder_row_steps": None, "flops": report["spent_flops"], "budget": report}}
            return out

        # keyed by the margin used (agent.score_margin: val resolved), so val's "none" is null's stage
        return self.runner.run(f"{pair}.agent", key_dict(replace(ac, score_margin=margin)),
                               {"models": models, "reverse": reverse, "draft": draft, "rerank": rerank}, work)

    def agent_curve(self, pair: str, models: list[str], draft: dict, reverse: list[str], rerank: dict,
                    margin: float | None, agent_stage: str) -> dict:
        """The agent's val curve (every policy, threshold and budget the +agent stage tuned) replayed on the
        first test set, beside the fixed decoders of its exhaustive trace: what the curve looks like on test,
        reported, never chosen from. Its own stage, so the rung's cost stays the rung's."""
        from agents.curve import curve_hyps, exhaustive, live_bound, plot, replay_curve
        from agents.escalate import RulePolicy, load_policy

        ac = self.cfg.agent
        test = next(d for name, d in self.sets[pair].items() if name not in ("val", "blind"))
        home = self.run_dir / agent_stage

        def work(stage_dir: Path) -> dict:
            _, agent, extra = self.escalating_agent(pair, home, models, draft, reverse, rerank, margin, test.name)
            tuned = json.loads((home / "curve" / "curve.json").read_text(encoding="utf-8"))
            policies = {"rules": RulePolicy(), **({"learned": load_policy("learned", tuned["model"])}
                                                  if tuned.get("model") else {})}
            records = replay_curve(agent, tuned["points"], policies, test.src, test.ref, stage_dir, pair, extra,
                                   test.name, test.ref_path, self.log)
            write_records(stage_dir / "records.jsonl", records)
            plot(records, stage_dir / f"curve_{pair}_{test.name}.png")
            out = {"records": str(stage_dir / "records.jsonl"), "set": test.name}
            blind = self.sets[pair].get("blind")
            if blind is not None:  # every system the run publishes translates the blind set, the curve's too
                _, agent, extra = self.escalating_agent(pair, home, models, draft, reverse, rerank, margin, "blind")
                trace = exhaustive(agent, blind.src, str(stage_dir / "trace.blind.jsonl"), extra, self.log)
                for system, hyps in curve_hyps(trace, tuned["points"], policies, agent.cfg.escalate,
                                               live_bound(agent, extra)).items():
                    atomic_write_lines(stage_dir / "blind" / f"{system}.txt", hyps)
                out["blind"] = str(stage_dir / "blind")
            return out

        return self.runner.run(f"{pair}.agent_curve", key_dict(replace(ac, score_margin=margin)),
                               {"models": models, "reverse": reverse, "draft": draft, "rerank": rerank,
                                "tuned": str(home / "curve" / "curve.json"), "set": test.src_path}, work)

    def agent_reranker(self, pair: str, base: System) -> System | None:
        """What the agent escalates to: the reranker over the kept system's model (after distillation,
        the one on top of the post-trained model, kept or not), else the last reranker built."""
        rerankers = [s for s in self.systems[pair] if s.stage in ("rerank", "distillation_rerank")]
        return ([s for s in rerankers if s.models == base.models] or rerankers or [None])[-1]

    def agent_margin(self, pair: str, rerank: System) -> float | None:
        """The scoring margin of the agent's rungs: agent.score_margin, or with ``val`` the pick of the
        margin table the reranker's stage measured on val (none within reach: every candidate scored)."""
        ac = self.cfg.agent
        if ac.score_margin != "val":
            return ac.score_margin
        table = rerank.provenance.get("score_margin")
        if table is None:
            self.log(f"[{pair}] +agent: {rerank.name}'s stage was made without a margin table: every candidate is "
                     f"scored (rerun it with --force for val's margin)")
            return None
        if table["pick"] is None:
            self.log(f"[{pair}] +agent: no scoring margin comes within {table['within']} val BLEU of {rerank.name}: "
                     f"every candidate is scored")
        else:
            self.log(f"[{pair}] +agent: score_margin {table['pick']:g} (chosen on val over {rerank.name}'s candidates)")
        return table["pick"]

    def agent(self) -> None:
        """The escalating agent: each direction's best model drafts with its beam; the reranker's
        rungs run where the critic says they pay, within the budget val picks."""
        plans = {}
        for pair in self.pairs:
            base = self.best(pair)
            rerank = self.agent_reranker(pair, base)
            if rerank is None:
                self.log(f"[{pair}] +agent: skipped (it escalates to the reranker, and the rerank rung is off)")
                continue
            beam = next((s for s in self.systems[pair] if s.stage == "beam"), None)
            width = beam.decode.beam_size if beam is not None else 5
            draft = key_dict(DecodeSettings(method="beam", beam_size=width, nbest=width, batch_size=self.cfg.batch_size))
            p = rerank.provenance
            # the noisy channel the reranker was tuned with (its weights are for that model or ensemble;
            # its training is in rerank.trained), else the other direction's best system
            reverse, _, reverse_trained = ((p["channel"], None, []) if p.get("channel") else self.reverse_system(pair))
            info = {"nbest": p["nbest"], "weights": p["weights"], "r2l": p.get("r2l"), "lm": p.get("lm"),
                    "compute": {k: {"flops": v["compute"].get("flops")} for k, v in rerank.outputs.items()}}
            margin = self.agent_margin(pair, rerank)
            plans[pair] = (base, rerank, reverse_trained, (pair, rerank.models, draft, list(reverse), info, margin))
        self.parallel([("agent_outputs", plan[-1]) for plan in plans.values()])
        curves = {pair: (*plan[-1], f"{pair}.agent") for pair, plan in plans.items()
                  if self.cfg.agent.tune_on_val and any(n not in ("val", "blind") for n in self.sets[pair])}
        self.parallel([("agent_curve", args) for args in curves.values()])
        for pair, args in curves.items():
            self.agent_curves[pair] = (self.run_dir / f"{pair}.agent" / "curve", self.agent_curve(*args))
        for pair, (base, rerank, reverse_trained, args) in plans.items():
            out = self.agent_outputs(*args)
            self.add(System("+agent", "agent", pair, rerank.models, DecodeSettings(**args[2]), out,
                            _union(rerank.trained, reverse_trained), built_on=base.name, stages=[f"{pair}.agent"],
                            provenance={"draft": f"beam {args[2]['beam_size']}", "reverse": args[3],
                                        "reference": rerank.name}))

    def curve(self) -> None:
        """The learning curve of the plain recipe: what each kept rung is worth in real pairs (pipeline/curve.py)."""
        from .curve import learning_curve

        learning_curve(self)

    def curve_model(self, pair: str, k: int) -> dict:
        from .curve import curve_model

        return curve_model(self, pair, k)


def _job(state: tuple, method: str, args: tuple) -> tuple[dict, dict, list[str]]:
    """One parallel job in a worker process: rebuild the ladder from the run's description, call one
    stage-making method, hand back what finished."""
    import torch

    cfg, run_dir, corpora, force = state
    torch.set_num_threads(cfg.train.num_threads or 1)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    runner = StageRunner(run_dir, force, log)
    ladder = Ladder(cfg, run_dir, corpora, runner, log)
    getattr(ladder, method)(*args)
    # The process serves the run's next jobs: hand back what this one held (models, a GPU's cache).
    del ladder
    gc.collect()
    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()
    try:  # glibc keeps freed memory for the process unless asked to give it back
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    return runner.done, runner.timings, [k for k in runner.timings if k not in runner.cached]


def _union(*lists: Sequence[str]) -> list[str]:
    out: list[str] = []
    for items in lists:
        out += [x for x in items if x not in out]
    return out


def _set_key(sets: dict[str, EvalSet]) -> dict[str, Any]:
    return {name: [s.src_path, len(s.src)] for name, s in sets.items()}


# ---- the whole run ------------------------------------------------------------------------------

RUNGS: list[tuple[str, Callable[[Ladder], None]]] = [
    # (config section that switches the rung on, the step over every direction). A new rung is one
    # method and one line here.
    ("", Ladder.baseline_and_beam),
    ("backtranslation", Ladder.backtranslation),
    ("ensemble", Ladder.ensemble),
    ("rerank", Ladder.rerank_and_mbr),
    ("distillation", Ladder.distillation),
    ("agent", Ladder.agent),
    ("curve", Ladder.curve),  # last: it needs every rung's scores and must not delay the ladder
]


def resolve_corpus(cfg: PipelineConfig, run_dir: Path, log: Log) -> Corpora:
    """The run's corpora (Multi30K when found, else the toy task when allowed, said out loud)."""
    langs = tuple(sorted({lang for p in cfg.data.pairs for lang in _split_pair(p)}))
    d = cfg.data
    try:
        corpora = resolve_corpora(d.corpus, langs, cfg.test_sets, root=d.root, download=cfg.download, files=d.files,
                                  toy_dir=run_dir / "toy_data", toy_train_pairs=d.toy_train_pairs)
    except (DataError, OSError) as e:
        missing = isinstance(e, DownloadError) or "not found" in str(e).lower()  # not found, or offline
        if d.corpus != "multi30k" or not cfg.toy_fallback or not missing:
            raise
        log(f"Multi30K not available ({e}); running on the toy task shipped in the package instead.")
        return resolve_corpora("toy", langs, ["test_2016_flickr"], toy_dir=run_dir / "toy_data",
                               toy_train_pairs=d.toy_train_pairs)
    log(f"corpus: {corpora.kind} (training pairs from {corpora.train[langs[0]]})")
    return corpora


def run_ladder(cfg: PipelineConfig, force: set[str] | None = None, log: Log = print, config_path: str = "",
               out: str | None = None, plan: bool = False) -> str:
    """Run (or resume) every rung of every direction; write records, leaderboards, blind outputs and
    the summary; return the leaderboard Markdown. With ``plan``, run nothing: return what each stage
    would do now, up to the first ones that would run."""
    import sacrebleu
    import torch
    import transformers

    check_force(cfg, set(force or ()))
    processes = distributed.world()[1]
    if processes > 1 and cfg.workers > 1:  # spawned stage workers are outside the process group
        log(f"workers: {cfg.workers} -> 1 under {processes} processes: they share every decoding and training step")
        cfg = replace(cfg, workers=1)
    run_dir = resolve_run_dir(cfg, out, config_path)
    if plan:
        return plan_ladder(cfg, run_dir, set(force or ()), log)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    corpora = resolve_corpus(cfg, run_dir, log)
    started = time.time()
    atomic_write_text(run_dir / "run.json", json.dumps({
        "config": asdict(cfg), "config_path": config_path, "run_dir": str(run_dir), "seed": cfg.train.seed,
        "corpora": asdict(corpora),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "sacrebleu": sacrebleu.__version__, "python": platform.python_version()},
        "machine": machine_facts(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, indent=1, default=str))
    runner = StageRunner(run_dir, set(force or ()), log)
    done = len(list(run_dir.glob("*/stage.json")))
    log(f"run directory {run_dir}: {done} finished stages found; directions {', '.join(cfg.data.pairs)}; rungs "
        + " -> ".join(["baseline"] + [s for s in ("beam", "backtranslation", "ensemble", "rerank", "mbr", "distillation", "agent")
                                      if getattr(cfg, s).enabled]))
    ladder = Ladder(cfg, run_dir, corpora, runner, log)
    # Rung by rung across directions: each direction's next rung can use the other's best system so far.
    try:
        ladder.tokenizer()
        for section, step in RUNGS:
            if section and not getattr(cfg, section).enabled:
                continue
            step(ladder)
    finally:
        ladder.close()
        set_run_precision("auto")  # the run pinned it (Ladder); the process is the hardware's again
    markdown = []
    for pair in ladder.pairs:
        markdown.append(write_leaderboard(cfg, run_dir, ladder, pair, config_path))
        write_blind(run_dir, ladder, pair)
    summary = write_summary(cfg, run_dir, ladder, runner, time.time() - started)
    atomic_write_text(run_dir / "summary.md", "\n".join(markdown) + "\n" + summary)
    return "\n".join(markdown)


def plan_ladder(cfg: PipelineConfig, run_dir: Path, force: set[str], log: Log) -> str:
    """What ``decade run`` would do in ``run_dir`` now, stage by stage, without running or writing a stage."""
    corpora = resolve_corpus(cfg, run_dir, log)
    runner = StageRunner(run_dir, force, log=lambda m: None, plan=[])
    ladder = Ladder(cfg, run_dir, corpora, runner, log=lambda m: None)
    try:
        ladder.tokenizer()
        for section, step in RUNGS:
            if not section or getattr(cfg, section).enabled:
                step(ladder)
    except PlanStop:
        pass
    finally:
        ladder.close()
        set_run_precision("auto")
    width = max((len(name) for name, _ in runner.plan), default=0)
    lines = [f"run directory {run_dir}: what a run would do now (later stages wait for these)"]
    lines += [f"  {name:<{width}}  {what}" for name, what in runner.plan]
    return "\n".join(lines)


@functools.lru_cache(maxsize=1)
def machine_facts() -> dict[str, Any]:
    """CPU model, the flags that decide speed, the precision auto picks, and the fp32 matrix-multiply
    ceiling measured now (2 s, before any stage runs), for the run record and the summary."""
    from core_seq2seq.precision import cpu_facts, matmul_gflops, resolve_precision

    facts = {"platform": platform.platform(), "cpus": os.cpu_count(), **cpu_facts(),
             "precision_auto": resolve_precision("auto", "cpu")}
    facts["load_average_before_ceiling"] = round(os.getloadavg()[0], 2)  # other work understates the ceiling
    facts["fp32_matmul_ceiling_gflops"] = round(matmul_gflops(2048, os.cpu_count() or 1, 2.0)["gflops_best"], 1)
    return facts


def _system_cost(ladder: Ladder, system: System) -> dict[str, Any]:
    models = [ladder.models[s] for s in system.trained if s in ladder.models]
    return {"train_seconds": round(sum(m["train_seconds_total"] for m in models), 1),
            "train_steps": sum(m["steps"] for m in models), "models": [m["stage"] for m in models]}


def write_leaderboard(cfg: PipelineConfig, run_dir: Path, ladder: Ladder, pair: str, config_path: str) -> str:
    """Result records of every rung on every test set (p-values against the system each built on),
    then this direction's leaderboard under ``<run>/<pair>/``."""
    from evals.leaderboard import render_leaderboard
    from evals.records import config_hash

    digest = config_hash(asdict(cfg))
    systems = ladder.systems[pair]
    records = []
    for set_name, data in ladder.sets[pair].items():
        if set_name in ("val", "blind"):
            continue  # val chose the settings: it is not reported; blind has no references
        hyps_by_system, rows = {}, []
        for s in systems:
            out = s.outputs[set_name]
            hyps = read_lines(out["hyp_path"])
            hyps_by_system[s.name] = hyps
            cost = _system_cost(ladder, s)
            compute = {"train_seconds": cost["train_seconds"], "train_steps": cost["train_steps"],
                       "device": distributed.device(), "processes": distributed.world()[1],
                       "precision": _precision(s.models), **out["compute"]}
            rows.append(make_record(s.name, s.stage, pair, set_name, hyps, data.ref, data.tok_ref,
                                    hyp_path=out["hyp_path"], compute=compute, config_digest=digest,
                                    config_path=config_path, decode=asdict(s.decode),
                                    provenance={**s.provenance, "models": s.models, "trained": cost["models"]},
                                    ref_path=data.ref_path, tok_ref_path=data.tok_ref_path, src_path=data.src_path,
                                    n_samples=cfg.bootstrap_samples, seed=cfg.significance_seed,
                                    extra={"kept": s.kept, "built_on": s.built_on, "val_bleu": round(s.val_bleu, 2)}))
        compare_to = {s.name: s.built_on for s in systems if s.built_on}
        records += attach_significance(rows, [s.name for s in systems], hyps_by_system, data.ref,
                                       n_samples=cfg.bootstrap_samples, seed=cfg.significance_seed,
                                       compare_to=compare_to)
    out_dir = run_dir / pair
    out_dir.mkdir(parents=True, exist_ok=True)
    # The agent curve's blind outputs (the trace's fixed decoders and the agent's points) are written
    # afresh below, so what an earlier curve left is removed first.
    for old in [*(run_dir / "blind" / pair).glob("agent-*.txt"), *(run_dir / "blind" / pair).glob("rerank[0-9]*.txt"),
                run_dir / "blind" / pair / "draft.txt"]:
        old.unlink(missing_ok=True)
    # Beside the leaderboard, what this run measured (what an earlier config left here is removed):
    # the distillation methods side by side, and the agent's curve on val and test.
    for name, made, write in (("distillation", pair in ladder.side_by_side,
                               lambda d: write_side_by_side(cfg, ladder, pair, d, digest, config_path)),
                              ("agent_curve", pair in ladder.agent_curves, lambda d: write_agent_curve(ladder, pair, d))):
        if (out_dir / name).exists():
            shutil.rmtree(out_dir / name)
        if made:
            write(out_dir / name)
    if pair not in ladder.side_by_side:
        for old in (run_dir / "blind" / pair).glob("distillation-*.txt"):
            old.unlink()
    curve_md = ""
    if cfg.curve.enabled:  # each kept rung's worth in real pairs, on its records (pipeline/curve.py)
        from .curve import write_curve

        records = write_curve(ladder, pair, records, config_path=config_path, digest=digest)
        curve_md = "\n" + (out_dir / "curve/curve.md").read_text()
    write_records(out_dir / "results.jsonl", records)
    return render_leaderboard(records, str(out_dir / "leaderboard"), wall_clock=False) + curve_md


def write_side_by_side(cfg: PipelineConfig, ladder: Ladder, pair: str, out_dir: Path, digest: str,
                       config_path: str) -> None:
    """The +distillation rung's methods beside the model they started from, all decoded with the same beam:
    a record per method and test set (p-value and interval against the start), under ``out_dir``."""
    from evals.leaderboard import render_leaderboard

    outputs = {label: out for label, (out, _) in ladder.side_by_side[pair].items()}
    trained = {label: train for label, (_, train) in ladder.side_by_side[pair].items()}
    names = [f"distillation-{label}" for label in outputs]
    records = []
    for set_name, data in ladder.sets[pair].items():
        if set_name in ("val", "blind"):
            continue
        rows, hyps_by_system = [], {}
        for name, (label, out) in zip(names, outputs.items()):
            hyps_by_system[name] = read_lines(out[set_name]["hyp_path"])
            train = trained[label]
            # the method's own training (the data it learned from is made once per direction, by the
            # distill_data and preference_data stages, and shared)
            # train_seconds_total: every call's training, a resumed run's too (as the rung's provenance counts it)
            extra = {"val_bleu": round(val_bleu(out, ladder.sets[pair]), 2),
                     **({"train": {"stage": train.get("stage"), "steps": train.get("steps"),
                                   "best_step": train.get("best_step"), "seconds": train.get("train_seconds_total")}}
                        if train else {})}
            rows.append(make_record(name, "distillation", pair, set_name, hyps_by_system[name], data.ref, data.tok_ref,
                                    hyp_path=out[set_name]["hyp_path"],
                                    compute={**out[set_name]["compute"],
                                             "train_seconds": train.get("train_seconds_total") if train else None},
                                    config_digest=digest, config_path=config_path, ref_path=data.ref_path,
                                    tok_ref_path=data.tok_ref_path, src_path=data.src_path,
                                    n_samples=cfg.bootstrap_samples, seed=cfg.significance_seed, extra=extra))
        records += attach_significance(rows, names, hyps_by_system, data.ref, n_samples=cfg.bootstrap_samples,
                                       seed=cfg.significance_seed, compare_to={n: names[0] for n in names[1:]})
    write_records(out_dir / "results.jsonl", records)
    render_leaderboard(records, str(out_dir / "leaderboard"), wall_clock=False)
    for name, out in zip(names, outputs.values()):
        if "blind" in out:
            atomic_write_lines(ladder.run_dir / "blind" / pair / f"{name}.txt", read_lines(out["blind"]["hyp_path"]))


def write_agent_curve(ladder: Ladder, pair: str, out_dir: Path) -> None:
    """The +agent rung's curve in one place: records of every val point and their test replay (their
    hypotheses stay in the stages), the val curve's summary (curve.json), the policy, the plots."""
    from evals.records import read_records

    val_dir, test = ladder.agent_curves[pair]
    test_dir = Path(test["records"]).parent
    write_records(out_dir / "results.jsonl", read_records(val_dir / "records.jsonl") + read_records(test["records"]))
    for path in sorted(Path(test["blind"]).glob("*.txt")) if test.get("blind") else []:
        atomic_write_bytes(ladder.run_dir / "blind" / pair / path.name, path.read_bytes())
    for path in [val_dir / "curve.json", val_dir / "policy.json", *val_dir.glob("*.png"), *test_dir.glob("*.png")]:
        if path.exists():
            atomic_write_bytes(out_dir / path.name, path.read_bytes())


def _precision(models: list[str]) -> str | None:
    """The precision the system's (first) model was trained in, from its decade_meta.json."""
    meta = Path(models[0]) / "decade_meta.json"
    return json.loads(meta.read_text()).get("precision", "fp32") if meta.exists() else None


def write_blind(run_dir: Path, ladder: Ladder, pair: str) -> None:
    """Each rung's blind translations as ``<run>/blind/<pair>/<system>.txt`` (one line per source line)."""
    for s in ladder.systems[pair]:
        if "blind" in s.outputs:
            atomic_write_lines(run_dir / "blind" / pair / f"{s.name}.txt", read_lines(s.outputs["blind"]["hyp_path"]))


def _stage_calls(run_dir: Path, stage: str) -> int:
    """How many calls worked on a finished stage (markers written before calls were counted: 1)."""
    marker = run_dir / stage / "stage.json"
    return int(json.loads(marker.read_text()).get("calls", 1)) if marker.exists() else 1


def write_summary(cfg: PipelineConfig, run_dir: Path, ladder: Ladder, runner: StageRunner, seconds: float) -> str:
    """Cost per rung (training steps and seconds, decoding FLOPs and seconds, share of the run), time per
    stage, which rungs val kept, and the machine."""
    facts = machine_facts()
    total = sum(runner.timings.values()) or 1.0
    lines = ["## Cost per rung", "",
             f"Machine: {facts.get('cpu')}, {facts.get('cpus')} CPUs, flags {' '.join(facts.get('flags') or []) or 'n/a'}; "
             f"fp32 matmul ceiling {facts.get('fp32_matmul_ceiling_gflops')} GFLOP/s (2048x2048, measured at the start "
             f"of this invocation, at load average {facts.get('load_average_before_ceiling')}: other work on the machine "
             f"lowers it, and stretches every time below); precision {resolve_precision(cfg.train.precision)} (auto here: {facts.get('precision_auto')}); {cfg.workers} worker(s) x "
             f"{cfg.train.num_threads or 'default'} thread(s).", "",
             "| pair | system | kept | val BLEU | built on | stages (s) | share of run | train steps (all models behind it) "
             "| decode GFLOPs (test sets) | decode s (test sets) |",
             "| --- | --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    for pair in ladder.pairs:
        for s in ladder.systems[pair]:
            own = sum(runner.timings.get(st, 0.0) for st in s.stages)
            tests = [v for k, v in s.outputs.items() if k not in ("val", "blind")]
            flops = sum((v["compute"].get("flops") or 0.0) for v in tests)
            dsec = sum((v["compute"].get("decode_seconds") or 0.0) for v in tests)
            cost = _system_cost(ladder, s)
            lines.append(f"| {pair} | {s.name} | {'yes' if s.kept else 'no'} | {s.val_bleu:.2f} | {s.built_on or '–'} "
                         f"| {own:.0f} | {own / total:.1%} | {cost['train_steps']:,} | {flops / 1e9:,.0f} | {dsec:.0f} |")
    lines += ["", "## Time per stage", "",
              "Seconds over every call that worked on a stage (one killed and resumed: more than one call).", "",
              "| stage | seconds | this run | calls |", "| --- | ---: | --- | ---: |"]
    lines += [f"| {k} | {v:.0f} | {'cached' if k in runner.cached else 'ran'} | {_stage_calls(run_dir, k)} |"
              for k, v in runner.timings.items()]
    lines += ["", f"Stage time in all: {total:.0f} s ({total / 3600:.2f} h); this invocation: {seconds:.0f} s."]
    return "\n".join(lines) + "\n"
