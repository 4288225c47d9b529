"""The quality-for-compute sweep: one command evaluates a grid of candidate pools (beam widths, sample
counts) x selection methods (the generator's best, noisy-channel reranking, MBR, reranked MBR) on val
and test, writes evals result records with their compute, and plots BLEU against compute.

Research hygiene: everything that is chosen (reranker weights, the MBR weighting, the reranked-MBR
temperature, the best overall setting) is chosen on the tuning split (val) and frozen before any
other split is decoded; other splits are only reported. Every grid point's n-best lists, features,
selections and records are cached under ``out_dir``, so an interrupted sweep resumes where it stopped.

Systems are named ``<prefix><pool>-<selector>``: pool ``beam8`` / ``sample32``; selector ``top``
(beam: its best hypothesis; samples: the most probable per token), ``rerank``, ``mbr``, ``rerank_mbr``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core_seq2seq.cache import cached, write_json
from core_seq2seq.config import config_hash, key_dict
from evals.textio import atomic_write_bytes, atomic_write_lines, atomic_write_text, read_lines

from core_seq2seq.translator import DecodeSettings

from .candidates import CandidateSpec, default_name
from .candidates import pool as pool_candidates  # (a Pool below is a grid point)
from .compute import add_compute, record_compute
from .features import Scorers, length_ratio
from .generate import generate_nbest_file
from .mbr import MbrConfig, expected_from_matrix, model_weights, reference_weights, utility_matrix
from .rerank import argmax, linear_scores, load_weights, save_weights, select
from .tune import CorpusObjective, TuneConfig, tune_weights

SELECTORS = ("top", "rerank", "mbr", "rerank_mbr")


def stage(pool_kind: str, selector: str) -> str:
    """The evals ladder stage of a system."""
    if selector == "top":
        return pool_kind  # beam | sample | union
    return "rerank" if selector == "rerank" else "mbr"


@dataclass
class ModelPaths:
    """Model directories. Every field is a YAML key of ``sweep.models``."""

    forward: str | list[str] = ""  # forward (source->target) model dir; a list decodes a checkpoint ensemble
    reverse: str | list[str] | None = None  # reverse (target->source) model dir: the noisy channel (null: none)
    lm: str | None = None  # target-side LM run dir (use its last/; see inference_compute.lm) (null: none)
    lm_placeholder: str = "."  # the LM's stand-in for an empty source, as in its training data
    r2l: str | list[str] | None = None  # right-to-left model (trained on word-reversed targets) (null: none)
    alt: str | list[str] | None = None  # another source->target model: a second opinion as a feature (null: none)
    device: str = "cpu"  # torch device for all models


@dataclass
class SplitSpec:
    """One evaluation set. Every field is a YAML key of an item of ``sweep.splits``."""

    name: str = "val"  # test_set name in the result records (val, test_2016_flickr, ...)
    src: str = ""  # source sentences, one per line (.gz allowed)
    ref: str = ""  # references aligned with src
    tok_ref: str | None = None  # tokenised lower-cased references (Multi30K task1/tok) for tok-lc BLEU (null: none)
    limit: int = 0  # use only the first N lines (0: all); for smoke runs


@dataclass
class SweepConfig:
    """The whole sweep. Every field is a YAML key of the ``sweep`` section."""

    MOVED = {"sampling": "its keys under sweep.decode", **{k: f"sweep.decode.{k}" for k in (
        "length_penalty", "batch_size", "max_len_a", "max_len_b")}}

    pair: str = "en-de"  # language pair of the result records, source-target
    system_prefix: str = ""  # prefix of every system name (e.g. "m30k-")
    models: ModelPaths = field(default_factory=ModelPaths)
    splits: list[SplitSpec] = field(default_factory=list)  # evaluation sets; the tuning split among them
    tune_split: str = "val"  # the split on which weights and settings are chosen (others only report)
    beams: list[int] = field(default_factory=lambda: [1, 2, 4, 5, 8, 16, 32, 64])  # beam widths (n-best = width)
    samples: list[int] = field(default_factory=lambda: [4, 8, 16, 32, 64])  # sample-pool sizes
    unions: list[list[str]] = field(default_factory=list)  # grid pools merged into one, by name, e.g. [[beam8, sample32_eps0.02]]
    # the search every pool shares (core_seq2seq DecodeSettings); the grid sets method, beam_size = nbest
    # (beams) and num_samples (samples); epsilon sampling (Hewitt et al. 2022) by default
    decode: DecodeSettings = field(default_factory=lambda: DecodeSettings(epsilon=0.02))
    dedupe: bool = True  # merge equal candidate texts within a pool
    rerank: list[bool] = field(default_factory=lambda: [False, True])  # selection with / without the reranker
    mbr: list[bool] = field(default_factory=lambda: [False, True])  # selection with / without MBR
    mbr_utility: str = "chrf"  # MBR utility: chrf | bleu
    mbr_weightings: list[str] = field(default_factory=lambda: ["uniform", "count", "model"])  # MBR weightings tried on val (the best is frozen)
    mbr_temperature: float = 1.0  # weighting=model: softmax temperature over log-probabilities
    rerank_mbr_temperatures: list[float] = field(default_factory=lambda: [0.1, 0.3, 1.0])  # reranked MBR: softmax(score / T), T chosen on val
    tune: TuneConfig = field(default_factory=TuneConfig)
    baseline_beam: int = 5  # the reference system: beam of this width, its best hypothesis
    shard_size: int = 256  # sentences per cached generation shard (resume granularity)
    out_dir: str = "runs/inference_sweep"  # caches: n-best lists, features, selections, weights, records
    hyp_dir: str | None = None  # hypothesis files (default: <out_dir>/hyps)
    results: str | None = None  # result records JSONL (default: <out_dir>/results.jsonl)
    plot_dir: str | None = None  # BLEU-vs-compute PNGs and inference_<pair>_summary.{md,json} (default: <out_dir>)
    bootstrap_samples: int = 1000  # bootstrap resamples for CIs and paired tests
    significance_seed: int = 12345  # seed of the bootstrap
    device_name: str = "cpu"  # recorded in compute.device

    def __post_init__(self) -> None:
        if self.baseline_beam not in self.beams:
            self.beams = sorted(set(self.beams) | {self.baseline_beam})
        if any(b < 1 or b > 256 for b in self.beams) or any(n < 1 for n in self.samples):
            raise ValueError("beams must be in 1..256 and samples >= 1")
        grid = {p.name for p in grid_pools(self)}
        for members in self.unions:
            unknown = [m for m in members if m not in grid]
            if len(members) < 2 or unknown:
                raise ValueError(f"unions: {members} must name at least two pools of the grid "
                                 f"(unknown: {unknown}; the grid has {', '.join(sorted(grid))})")


@dataclass
class Split:
    spec: SplitSpec
    src: list[str]
    ref: list[str]
    tok_ref: list[str] | None
    src_path: str
    ref_path: str
    tok_ref_path: str | None


def load_split(spec: SplitSpec, data_dir: Path) -> Split:
    """Read a split; with ``limit`` the used lines are written to ``data_dir`` so records point at them."""
    src, ref = read_lines(spec.src), read_lines(spec.ref)
    tok = read_lines(spec.tok_ref) if spec.tok_ref else None
    for name, lines in (("ref", ref), ("tok_ref", tok)):
        if lines is not None and len(lines) != len(src):
            raise ValueError(f"split {spec.name}: {spec.src} has {len(src)} lines but its {name} "
                             f"{getattr(spec, name)} has {len(lines)}")
    paths = [spec.src, spec.ref, spec.tok_ref]
    if spec.limit and spec.limit < len(src):
        src, ref = src[:spec.limit], ref[:spec.limit]
        tok = tok[:spec.limit] if tok is not None else None
        paths = []
        for suffix, lines in (("src", src), ("ref", ref), ("tok_ref", tok)):
            if lines is None:
                paths.append(None)
                continue
            p = data_dir / f"{spec.name}.first{spec.limit}.{suffix}"
            atomic_write_lines(p, lines)
            paths.append(str(p))
    return Split(spec, src, ref, tok, *paths)


def _load_translator(paths: str | list[str] | None, device: str):
    if not paths:
        return None
    from core_seq2seq.translator import LSTMTranslator

    return LSTMTranslator.load(paths, device=device)


@dataclass
class Pool:
    name: str
    spec: CandidateSpec
    kind: str  # beam | sample | union
    members: list[str] = field(default_factory=list)  # a union: the pools it merges (their caches are reused)


def grid_pools(cfg: SweepConfig) -> list[Pool]:
    """The beam and sample pools of the grid (names as in the records: beam8, sample32_eps0.02, ...)."""
    out = [Pool(f"beam{k}", CandidateSpec([dataclasses.replace(cfg.decode, method="beam", beam_size=k, nbest=k)],
                                          dedupe=cfg.dedupe), "beam") for k in cfg.beams]
    for n in cfg.samples:
        m = dataclasses.replace(cfg.decode, method="sample", num_samples=n)
        out.append(Pool(default_name(m), CandidateSpec([m], dedupe=cfg.dedupe), "sample"))
    return out


def pools(cfg: SweepConfig) -> list[Pool]:
    """The grid's pools, then the unions of grid pools (``cfg.unions``)."""
    out = grid_pools(cfg)
    by_name = {p.name: p for p in out}
    for members in cfg.unions:
        methods = [m for name in members for m in by_name[name].spec.methods]
        out.append(Pool("+".join(members), CandidateSpec(methods, dedupe=cfg.dedupe), "union", list(members)))
    return out


def selectors(cfg: SweepConfig, have_scorers: bool) -> list[str]:
    """Which selection methods the rerank/mbr on/off grid asks for."""
    out = []
    for rerank in cfg.rerank:
        for mbr in cfg.mbr:
            if rerank and not have_scorers:
                continue  # reranking without a reverse model, LM, r2l or alt model would rerank by the forward score only
            out.append({(False, False): "top", (True, False): "rerank", (False, True): "mbr",
                        (True, True): "rerank_mbr"}[(rerank, mbr)])
    return out


class Sweep:
    """One sweep run; ``run()`` returns the summary. Each step reuses its cached result when present."""

    def __init__(self, cfg: SweepConfig, log: Callable[[str], None] = print):
        self.cfg = cfg
        self.log = log
        self.out = Path(cfg.out_dir)
        self.hyp_dir = Path(cfg.hyp_dir) if cfg.hyp_dir else self.out / "hyps"
        self.results_path = Path(cfg.results) if cfg.results else self.out / "results.jsonl"
        self.plot_dir = Path(cfg.plot_dir) if cfg.plot_dir else self.out
        names = [s.name for s in cfg.splits]
        if cfg.tune_split not in names:
            raise ValueError(f"tune_split {cfg.tune_split!r} is not among the splits ({', '.join(names) or 'none'})")
        if len(set(names)) != len(names):
            raise ValueError(f"split names must be distinct, got {names}")
        if not cfg.models.forward:
            raise ValueError("models.forward: a forward model directory is required")
        m = cfg.models
        self.forward = _load_translator(m.forward, m.device)
        # several alt models: the mean of their scores, each with its own tokenizer
        self.scorers = Scorers.load(reverse=m.reverse, r2l=m.r2l, alt=m.alt, lm=m.lm, lm_placeholder=m.lm_placeholder,
                                    device=m.device)
        self.scorers.check(self.forward)
        self.src_lang, self.tgt_lang = cfg.pair.split("-", 1)
        # Candidates depend on the forward model only (another scorer must not invalidate them);
        # features depend on every model that is there.
        self.generator_key = {"forward": m.forward, "device": m.device}
        self.model_key = {k: v for k, v in asdict(m).items() if v is not None}
        # Splits in order: the tuning split first, so every choice is frozen before another split is seen.
        ordered = sorted(cfg.splits, key=lambda s: s.name != cfg.tune_split)
        self.splits = [load_split(s, self.out / "data") for s in ordered]
        tune = self.splits[0]
        self.typical_ratio = length_ratio(tune.src, tune.ref)
        self.scorers.typical_ratio = self.typical_ratio  # len_ratio_dev's typical ratio: the tuning split's
        self.pools = pools(cfg)
        self.selectors = selectors(cfg, self.scorers.any_model)

    # ---- per (split, pool) steps ------------------------------------------------------------

    def candidates(self, split: Split, pool: Pool):
        if pool.members:
            # A union reuses its members' cached lists (the same texts generate_candidates would pool)
            # and costs what they cost together.
            by_name = {p.name: p for p in self.pools}
            parts = [(name, *self.candidates(split, by_name[name])) for name in pool.members]
            merged = [pool_candidates([(name, lists[i]) for name, lists, _ in parts], pool.spec.dedupe)
                      for i in range(len(split.src))]
            return merged, add_compute(*[c for _, _, c in parts])
        path = self.out / "nbest" / split.spec.name / f"{pool.name}.nbest"
        return generate_nbest_file(self.forward, split.src, pool.spec, path, shard_size=self.cfg.shard_size,
                                   meta={"model": self.model_key, "split": split.spec.name, "src_path": split.src_path},
                                   key_extra=self.generator_key, log=self.log)

    def features(self, split: Split, pool: Pool, nbest) -> tuple[list[list[dict[str, float]]], dict]:
        path = self.out / "features" / split.spec.name / f"{pool.name}.json"
        key = config_hash([self.model_key, split.src, [[c.text for c in cs] for cs in nbest], self.typical_ratio])
        done = cached(path, key)
        if done is not None:
            names = done["names"]
            return [[dict(zip(names, row)) for row in rows] for rows in done["values"]], done["compute"]
        from .compute import ComputeMeter

        with ComputeMeter(self.scorers.meters(), n_sentences=len(nbest)) as meter:
            # no forward scorer: the generator's own log-probabilities (no second forward pass to pay for).
            feats = self.scorers.features(split.src, nbest)
        # Stored as a table rounded to 1e-6, and used exactly as stored: a resumed sweep selects the
        # same candidates as an uninterrupted one.
        names = sorted(feats[0][0]) if feats and feats[0] else []
        values = [[[round(f[n], 6) for n in names] for f in fs] for fs in feats]
        write_json(path, {"key": key, "compute": meter.result, "names": names, "values": values}, indent=None)
        return [[dict(zip(names, row)) for row in rows] for rows in values], meter.result

    def weights(self, split: Split, pool: Pool, feats, nbest) -> dict[str, float]:
        path = self.out / "weights" / f"{pool.name}.json"
        if split.spec.name != self.cfg.tune_split:
            if not path.exists():
                raise ValueError(f"{path}: no weights tuned on {self.cfg.tune_split} for {pool.name}")
            return load_weights(path)
        texts = [[c.text for c in cs] for cs in nbest]
        key = config_hash([self.model_key, texts, split.ref, feats, key_dict(self.cfg.tune)])
        if cached(path, key) is not None:
            return load_weights(path)
        result = tune_weights(feats, texts, split.ref, self.cfg.tune)
        save_weights(path, result.weights, key=key, tuned_on=split.spec.name, src_path=split.src_path, ref_path=split.ref_path,
                     pool=pool.name, objective=self.cfg.tune.metric, tuned_score=result.score,
                     forward_only_score=result.start_score, trials=result.trials, tune=key_dict(self.cfg.tune),
                     models=self.model_key, typical_ratio=self.typical_ratio)
        self.log(f"{pool.name}: reranker tuned on {split.spec.name}: {self.cfg.tune.metric} "
                 f"{result.start_score:.2f} -> {result.score:.2f} with {result.weights}")
        return result.weights

    def mbr_choices(self, nbest, feats, weights) -> tuple[dict[str, list[int]], dict[str, Any], float]:
        """MBR and reranked-MBR selections of every option; the utility matrices are computed once per source."""
        cfg = self.cfg
        start = time.perf_counter()
        picks: dict[str, list[int]] = {}
        scores = linear_scores(feats, weights) if weights is not None else None
        for i, cands in enumerate(nbest):
            matrix = utility_matrix([c.text for c in cands], cfg.mbr_utility) if len(cands) > 1 else [[100.0]]
            options: dict[str, list[float] | None] = {}
            if "mbr" in self.selectors:
                for w in cfg.mbr_weightings:
                    options[f"mbr:{w}"] = reference_weights(cands, MbrConfig(cfg.mbr_utility, w, cfg.mbr_temperature))
            if "rerank_mbr" in self.selectors and scores is not None:
                for t in cfg.rerank_mbr_temperatures:
                    options[f"rerank_mbr:{t:g}"] = model_weights(scores[i], t)
            for name, w in options.items():
                picks.setdefault(name, []).append(argmax(expected_from_matrix(matrix, w)))
        seconds = time.perf_counter() - start
        calls = sum(len(cs) ** 2 for cs in nbest)
        return picks, {"utility_calls": calls}, seconds

    # ---- the run ----------------------------------------------------------------------------

    def system_name(self, pool: Pool, selector: str) -> str:
        return f"{self.cfg.system_prefix}{pool.name}-{selector}"

    def run(self) -> dict[str, Any]:
        records = []
        hyps_by: dict[tuple[str, str], list[str]] = {}
        for split in self.splits:
            for pool in self.pools:
                for rec, hyps in self.run_point(split, pool):
                    records.append(rec)
                    hyps_by[(split.spec.name, rec.system)] = hyps
        records = self.attach_significance(records, hyps_by)
        from evals.records import write_records

        write_records(self.results_path, records)
        summary = self.summarise(records)
        self.plot(records)
        stem = self.plot_dir / f"inference_{self.cfg.pair}_summary"
        write_json(stem.with_suffix(".json"), summary)
        atomic_write_text(stem.with_suffix(".md"), render_summary(summary))
        self.log(f"wrote {self.results_path} ({len(records)} records), {stem}.md and the plots")
        return summary

    def run_point(self, split: Split, pool: Pool) -> list[tuple[Any, list[str]]]:
        """All selectors of one (split, pool): cached selections, hypothesis files and records."""
        from evals.records import ResultRecord

        sel_path = self.out / "selections" / split.spec.name / f"{pool.name}.json"
        nbest, gen_compute = self.candidates(split, pool)
        texts = [[c.text for c in cs] for cs in nbest]
        key = config_hash([self.model_key, texts, self.selectors, key_dict(self.cfg.tune), self.cfg.mbr_utility,
                       self.cfg.mbr_weightings, self.cfg.rerank_mbr_temperatures, self.cfg.mbr_temperature])
        selections = cached(sel_path, key)
        if selections is None:
            selections = {**self.select_all(split, pool, nbest, gen_compute), "key": key}
            write_json(sel_path, selections)
        out = []
        for selector, entry in selections["systems"].items():
            system = self.system_name(pool, selector)
            hyps = [texts[i][p] for i, p in enumerate(entry["picks"])]
            rec_path = self.out / "records" / split.spec.name / f"{system}.json"
            hyp_path = self.hyp_dir / f"{self.cfg.pair}.{split.spec.name}.{system}.{self.tgt_lang}"
            rec_key = config_hash([key, selector, hyps, split.ref_path, split.tok_ref_path, self.cfg.bootstrap_samples,
                               self.cfg.significance_seed, str(hyp_path)])
            done = cached(rec_path, rec_key) if hyp_path.exists() else None
            if done is not None:
                out.append((ResultRecord.from_dict(done["record"]), hyps))
                continue
            atomic_write_lines(hyp_path, hyps)
            rec = self.make_record(split, pool, selector, entry, hyps, hyp_path)
            write_json(rec_path, {"key": rec_key, "record": rec.to_dict()})
            out.append((rec, hyps))
        return out

    def select_all(self, split: Split, pool: Pool, nbest, gen_compute: dict) -> dict[str, Any]:
        cfg = self.cfg
        n = len(nbest)
        systems: dict[str, dict[str, Any]] = {}
        if "top" in self.selectors:
            # beam lists are best-first already; a sample pool's "top" is its most probable sample per token.
            picks = [0] * n if pool.kind == "beam" else [argmax([c.logprob / max(c.length, 1) for c in cs]) for cs in nbest]
            systems["top"] = {"picks": picks, "compute": gen_compute, "setting": {}}
        feats = weights = feat_compute = None
        if "rerank" in self.selectors or "rerank_mbr" in self.selectors:
            feats, feat_compute = self.features(split, pool, nbest)
            weights = self.weights(split, pool, feats, nbest)
            if "rerank" in self.selectors:
                systems["rerank"] = {"picks": select(feats, weights), "compute": add_compute(gen_compute, feat_compute),
                                     "setting": {"weights": weights}}
        if "mbr" in self.selectors or "rerank_mbr" in self.selectors:
            picks, extra, seconds = self.mbr_choices(nbest, feats, weights)
            choice_path = self.out / "weights" / f"{pool.name}.mbr.json"
            if split.spec.name == cfg.tune_split:
                objective = CorpusObjective([[c.text for c in cs] for cs in nbest], split.ref, cfg.tune.metric)
                choices = {}
                for selector in ("mbr", "rerank_mbr"):
                    names = [k for k in picks if k.split(":")[0] == selector]
                    if names:
                        val_scores = {k: objective(picks[k]) for k in names}
                        choices[selector] = {"option": max(names, key=lambda k: (val_scores[k], -names.index(k))),
                                             "val_scores": val_scores}
                write_json(choice_path, {"tuned_on": split.spec.name, "objective": cfg.tune.metric, **choices})
            else:
                if not choice_path.exists():
                    raise ValueError(f"{choice_path}: no MBR setting chosen on {cfg.tune_split} for {pool.name}")
                choices = json.loads(choice_path.read_text(encoding="utf-8"))
            mbr_compute = {"decode_seconds": seconds, **extra, "n_sentences": n}
            for selector in ("mbr", "rerank_mbr"):
                if selector in self.selectors and selector in choices:
                    option = choices[selector]["option"]
                    parts = [gen_compute, mbr_compute] + ([feat_compute] if selector == "rerank_mbr" else [])
                    systems[selector] = {"picks": picks[option], "compute": add_compute(*parts),
                                         "setting": {"option": option, "utility": cfg.mbr_utility}}
        return {"systems": systems, "pool": pool.name, "split": split.spec.name,
                "mean_candidates": sum(len(cs) for cs in nbest) / max(n, 1)}

    def make_record(self, split: Split, pool: Pool, selector: str, entry: dict, hyps: list[str], hyp_path: Path):
        from evals.records import make_record

        cfg = self.cfg
        config = {"pool": pool.spec.to_dict(), "selector": selector, "setting": entry["setting"],
                  "models": self.model_key, "tune": key_dict(cfg.tune), "mbr_utility": cfg.mbr_utility}
        compute = record_compute(entry["compute"], device=cfg.device_name)
        return make_record(self.system_name(pool, selector), stage(pool.kind, selector), cfg.pair, split.spec.name, hyps, split.ref, split.tok_ref,
                           hyp_path=str(hyp_path), compute=compute, config=config, ref_path=split.ref_path,
                           tok_ref_path=split.tok_ref_path, src_path=split.src_path,
                           decode=pool.spec.to_dict(), n_samples=cfg.bootstrap_samples, seed=cfg.significance_seed,
                           provenance={"models": self.model_key, "tuned_on": cfg.tune_split,
                                       "cache": str(self.out)},
                           extra={"pool": pool.name, "pool_kind": pool.kind, "selector": selector,
                                  "setting": entry["setting"], "beam": pool.spec.methods[0].beam_size
                                  if pool.kind == "beam" else None,
                                  "samples": pool.spec.methods[0].num_samples if pool.kind == "sample" else None})

    # ---- significance, summary, plots -------------------------------------------------------

    def baseline_name(self) -> str:
        return f"{self.cfg.system_prefix}beam{self.cfg.baseline_beam}-top"

    def attach_significance(self, records, hyps_by) -> list:
        """Every system against the baseline (beam ``baseline_beam``) on each split: evals' paired
        bootstrap p-value and interval of the lift (a sweep has no ladder: each point's "prev" is the baseline)."""
        from evals.records import attach_significance

        base = self.baseline_name()
        out = []
        for split in self.splits:
            group = [r for r in records if r.test_set == split.spec.name]
            if not any(r.system == base for r in group):
                out.extend(group)
                continue
            names = [base] + [r.system for r in group if r.system != base]
            out += attach_significance(group, names, {n: hyps_by[(split.spec.name, n)] for n in names}, split.ref,
                                       n_samples=self.cfg.bootstrap_samples, seed=self.cfg.significance_seed,
                                       compare_to={n: base for n in names[1:]})
        # The baseline first in each split, so evals' leaderboard measures deltas against it.
        return sorted(out, key=lambda r: ([s.spec.name for s in self.splits].index(r.test_set), r.system != base))

    def summarise(self, records) -> dict[str, Any]:
        from evals.significance import paired_delta_ci

        cfg = self.cfg
        by = {(r.test_set, r.system): r for r in records}
        base = self.baseline_name()
        tune = cfg.tune_split
        summary: dict[str, Any] = {"pair": cfg.pair, "baseline": base, "tune_split": tune, "splits": {}}
        val = [r for r in records if r.test_set == tune]
        candidates = [r for r in val if r.extra.get("selector") != "top"] or val
        best = max(candidates, key=lambda r: (r.bleu, -(r.compute.get("flops") or 0)))
        summary["best_on_val"] = best.system
        for split in self.splits:
            name = split.spec.name
            rows = [r for r in records if r.test_set == name]
            beams = sorted((r for r in rows if r.extra.get("pool_kind") == "beam" and r.extra.get("selector") == "top"),
                           key=lambda r: r.extra["beam"])
            entry: dict[str, Any] = {
                "beam_curve": [{"beam": r.extra["beam"], "bleu": r.bleu, "forward_calls": r.compute["forward_calls"],
                                "flops": r.compute.get("flops")} for r in beams],
                "beam_peak": max(beams, key=lambda r: r.bleu).extra["beam"] if beams else None,
                "systems": [{"system": r.system, "bleu": r.bleu, "bleu_ci": r.bleu_ci, "chrf": r.chrf,
                             "tok_bleu": r.tok_bleu, "p_vs_baseline": r.p_vs_baseline,
                             "forward_calls": r.compute["forward_calls"], "flops": r.compute.get("flops"),
                             "seconds_per_sentence": r.compute.get("seconds_per_sentence")} for r in rows],
            }
            b, s = by.get((name, base)), by.get((name, best.system))
            if b is not None and s is not None:
                hyps_b = read_lines(b.hyp_path)
                hyps_s = read_lines(s.hyp_path)
                ratio = {k: (s.compute.get(k) or 0) / b.compute[k] if b.compute.get(k) else None
                         for k in ("flops", "forward_calls", "decode_seconds")}
                entry["best_vs_baseline"] = {
                    "system": s.system, "bleu": s.bleu, "baseline_bleu": b.bleu, "delta": s.bleu - b.bleu,
                    "delta_ci": paired_delta_ci(hyps_b, hyps_s, split.ref, "bleu", cfg.bootstrap_samples,
                                                cfg.significance_seed, self.tgt_lang),
                    "p_value": s.p_vs_baseline, "cost_multiple": ratio}
            summary["splits"][name] = entry
        return summary

    def plot(self, records) -> None:
        from evals.leaderboard import build_rows
        from evals.plots import plot_compute

        for split in self.splits:
            group = [r for r in records if r.test_set == split.spec.name]
            for suffix, rows in (("", group), ("_beams", [r for r in group if r.extra.get("selector") == "top"
                                                          and r.extra.get("pool_kind") == "beam"])):
                if len(rows) < 2:
                    continue
                try:
                    png = plot_compute(build_rows(rows))
                except ValueError as e:
                    # The records are the result; a picture that fails to draw must not lose them. (Seen:
                    # matplotlib refuses a CI that misses its point by 1e-14 at BLEU 100; reported to evals.)
                    self.log(f"warning: plot of {split.spec.name}{suffix} not drawn: {e}")
                    continue
                if png is not None:
                    atomic_write_bytes(self.plot_dir / f"inference_{self.cfg.pair}_{split.spec.name}{suffix}.png", png)


def render_summary(summary: dict[str, Any]) -> str:
    """A short Markdown report of the sweep."""
    lines = [f"# Inference-compute sweep: {summary['pair']}", "",
             f"Settings chosen on `{summary['tune_split']}`; best there: `{summary['best_on_val']}`; "
             f"baseline `{summary['baseline']}`.", ""]
    for name, entry in summary["splits"].items():
        lines += [f"## {name}", "", "| beam | BLEU | decoder calls | FLOPs |", "| ---: | ---: | ---: | ---: |"]
        for p in entry["beam_curve"]:
            flops = f"{p['flops']:.3g}" if p["flops"] else "n/a"
            lines.append(f"| {p['beam']} | {p['bleu']:.2f} | {p['forward_calls']} | {flops} |")
        lines += ["", f"Beam curve peaks at beam {entry['beam_peak']}.", ""]
        bb = entry.get("best_vs_baseline")
        if bb:
            cost = bb["cost_multiple"]
            p = "n/a" if bb["p_value"] is None else f"{bb['p_value']:.4f}"
            lines.append(f"`{bb['system']}`: BLEU {bb['bleu']:.2f} vs baseline {bb['baseline_bleu']:.2f} "
                         f"(delta {bb['delta']:+.2f}, 95% CI [{bb['delta_ci'][0]:+.2f}, {bb['delta_ci'][1]:+.2f}], "
                         f"paired bootstrap p = {p}); cost x{_fmt(cost.get('flops'))} FLOPs, "
                         f"x{_fmt(cost.get('forward_calls'))} decoder calls, x{_fmt(cost.get('decode_seconds'))} time.")
            lines.append("")
    return "\n".join(lines) + "\n"


def _fmt(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.1f}"


def run_sweep(cfg: SweepConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) the sweep described by ``cfg``; returns the summary (also written to disk)."""
    return Sweep(cfg, log).run()


