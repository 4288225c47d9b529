"""The ladder: baseline -> +beam -> +back-translation -> +reranking -> +MBR -> +agent, then the leaderboard.

Every rung is a cached stage (``stages.StageRunner``) that talks to the others through files in the
run directory: model directories, hypothesis files, n-best lists, JSON outputs. Settings are chosen
on val; test sets are only decoded and scored.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable

from core_seq2seq.config import from_dict, load_yaml
from core_seq2seq.data import DataError, find_multi30k, multi30k_tok_reference, read_multi30k
from core_seq2seq.training import ExperimentConfig, train
from core_seq2seq.translator import DecodeSettings, LSTMTranslator
from evals.records import attach_significance, make_record, write_records
from evals.textio import atomic_write_lines, atomic_write_text
from inference_compute.compute import ComputeMeter

from .config import PipelineConfig
from .stages import StageRunner

Log = Callable[[str], None]


def load_pipeline_config(path: str | Path, overrides: list[str] | None = None) -> PipelineConfig:
    """Read a ladder config; ``overrides`` are ``--set a.b=value`` pairs (values parsed as YAML)."""
    from core_seq2seq.config import ConfigError, apply_overrides

    try:
        return from_dict(PipelineConfig, apply_overrides(load_yaml(path), list(overrides or ())))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


# ---- data --------------------------------------------------------------------------------------

def resolve_corpus(cfg: PipelineConfig, log: Log) -> PipelineConfig:
    """Multi30K when it is found (or downloaded); otherwise the toy task, said out loud."""
    if cfg.data.corpus != "multi30k":
        return cfg
    try:
        root = find_multi30k(cfg.data.root, download=cfg.download)
        return replace(cfg, data=replace(cfg.data, root=str(root)))
    except (DataError, OSError) as e:
        if not cfg.toy_fallback:
            raise
        log(f"Multi30K not available ({e}); running on the toy task shipped in the package instead.")
        return replace(cfg, data=replace(cfg.data, corpus="toy"), test_sets=["test_2016_flickr"])


def data_root(cfg: PipelineConfig, run_dir: Path) -> Path:
    if cfg.data.corpus == "toy":
        from core_seq2seq.toy import write_toy_task

        root = run_dir / "toy_data"
        if not (root / "task1/raw/train.en.gz").exists():
            write_toy_task(root, n_train=cfg.data.toy_train_pairs)
        return root
    return Path(cfg.data.root)


def eval_sets(cfg: PipelineConfig, root: Path) -> dict[str, dict]:
    """val (for tuning) and the test sets present for this pair: sources, references, tok refs."""
    sets = {}
    for name in ["val"] + list(cfg.test_sets):
        try:
            corpus, _ = read_multi30k(name, cfg.data.src_lang, cfg.data.tgt_lang, root=root)
        except DataError:
            continue  # e.g. test_2017_* has no Czech side
        if name == "val" and cfg.tune_set_limit:
            corpus.src, corpus.tgt = corpus.src[:cfg.tune_set_limit], corpus.tgt[:cfg.tune_set_limit]
        tok = multi30k_tok_reference(name, cfg.data.tgt_lang, root)
        tok_refs = None
        if tok is not None and name != "val":
            tok_refs = tok.read_text(encoding="utf-8").splitlines()
        sets[name] = {"src": corpus.src, "ref": corpus.tgt, "tok_ref": tok_refs, "tok_ref_path": str(tok) if tok else None,
                      "ref_path": str(root / f"task1/raw/{name}.{cfg.data.tgt_lang}.gz")}
    return sets


# ---- rungs -------------------------------------------------------------------------------------

def experiment(cfg: PipelineConfig, output_dir: Path, src: str, tgt: str, extra_train: list[str] = ()) -> ExperimentConfig:
    data = replace(cfg.data, src_lang=src, tgt_lang=tgt, extra_train=list(extra_train))
    return ExperimentConfig(output_dir=str(output_dir), data=data, tokenizer=cfg.tokenizer, model=cfg.model,
                            train=replace(cfg.train, progress=False))


def train_stage(runner: StageRunner, name: str, exp: ExperimentConfig, inputs: dict, log: Log) -> dict:
    def work(stage_dir: Path) -> dict:
        exp.output_dir = str(stage_dir / "model")
        start = time.perf_counter()
        train(exp, log=lambda m: log(f"[{name}] {m}"))
        meta = json.loads((stage_dir / "model/best/decade_meta.json").read_text())
        return {"model": str(stage_dir / "model/best"), "train_seconds": time.perf_counter() - start,
                "val_bleu": meta.get("val", {}).get("val_bleu"), "step": meta.get("step")}

    slice_ = {k: v for k, v in asdict(exp).items() if k != "output_dir"}
    return runner.run(name, slice_, inputs, work)


def decode_stage(runner: StageRunner, name: str, model: str, sets: dict, settings: DecodeSettings, inputs: dict) -> dict:
    """Decode every eval set with one setting; hypotheses to files, compute per set."""
    def work(stage_dir: Path) -> dict:
        translator = LSTMTranslator.load(model)
        out = {}
        for set_name, data in sets.items():
            with ComputeMeter({"model": translator}) as meter:
                hyps = [c[0].text for c in translator.translate(data["src"], settings)]
            path = stage_dir / f"hyps.{set_name}.txt"
            atomic_write_lines(path, hyps)
            out[set_name] = {"hyp_path": str(path), "compute": {
                k: meter.result[k] for k in ("decode_seconds", "forward_calls", "decoder_row_steps", "flops")}}
        return out

    return runner.run(name, asdict(settings), {"model": model, **inputs}, work)


def backtranslation_stage(runner: StageRunner, cfg: PipelineConfig, root: Path, reverse_model: str, log: Log) -> dict:
    """Decontaminated target-side monolingual text -> synthetic sources -> tagged mix."""
    from synth.backtranslate import BacktranslateConfig, GenerationConfig, backtranslate
    from synth.mix import MixConfig, mix
    from synth.prepare import PrepareConfig, prepare

    bt = cfg.backtranslation
    src, tgt = cfg.data.src_lang, cfg.data.tgt_lang

    def work(stage_dir: Path) -> dict:
        mono, report = prepare(PrepareConfig(lang=tgt, output=str(stage_dir / f"mono.{tgt}.txt"),
                                             corpus="multi30k", root=str(root), max_lines=bt.max_monolingual),
                               log=lambda m: log(f"[backtranslation] {m}"))
        generation = GenerationConfig(method=bt.method, beam_size=bt.beam_size, shard_size=bt.shard_size,
                                      batch_size=cfg.batch_size, seed=cfg.train.seed)
        synthetic = backtranslate(BacktranslateConfig(input=str(mono), output_dir=str(stage_dir / "bt"),
                                                      model=reverse_model, progress=False, generation=generation),
                                  log=lambda m: log(f"[backtranslation] {m}"))
        mixed = mix(MixConfig(src_lang=src, tgt_lang=tgt, synthetic=[str(synthetic)], output=str(stage_dir / "mix"),
                              tag=bt.tag, real_ratio=bt.real_ratio,
                              real=replace(cfg.data, extra_train=[]) if bt.real_ratio else None),
                    log=lambda m: log(f"[backtranslation] {m}"))
        return {"mix": str(mixed), "monolingual": str(mono), "synthetic": str(synthetic),
                "monolingual_lines": sum(1 for _ in open(mono, encoding="utf-8"))}

    return runner.run("backtranslation", asdict(bt), {"reverse_model": reverse_model}, work)


def rerank_and_mbr_stage(runner: StageRunner, cfg: PipelineConfig, model: str, reverse_model: str, sets: dict,
                         inputs: dict) -> dict:
    """n-best lists (beam + samples), noisy-channel features, weights tuned on val; MBR over the same lists."""
    from inference_compute.candidates import CandidateSpec, MethodSpec, generate_candidates
    from inference_compute.features import compute_features, length_ratio
    from inference_compute.mbr import MbrConfig, mbr_decode
    from inference_compute.rerank import save_weights, select
    from inference_compute.tune import TuneConfig, tune_weights

    rc, mc = cfg.rerank, cfg.mbr

    def work(stage_dir: Path) -> dict:
        forward = LSTMTranslator.load(model)
        reverse = LSTMTranslator.load(reverse_model) if rc.use_reverse else None
        methods = [MethodSpec(method="beam", beam_size=rc.beam_size)]
        if rc.num_samples:
            methods.append(MethodSpec(method="sample", num_samples=rc.num_samples, epsilon=0.02, seed=rc.seed))
        spec = CandidateSpec(methods=methods, batch_size=cfg.batch_size)
        typical = length_ratio(sets["val"]["src"], sets["val"]["ref"])
        nbest, features, compute = {}, {}, {}
        for set_name, data in sets.items():
            with ComputeMeter({"forward": forward, "reverse": reverse}) as meter:
                nbest[set_name] = generate_candidates(forward, data["src"], spec)
                features[set_name] = compute_features(data["src"], nbest[set_name], None, reverse, typical_ratio=typical)
            compute[set_name] = {k: meter.result[k] for k in ("decode_seconds", "forward_calls", "decoder_row_steps", "flops")}
        names = ["fwd_per_token", "tokens", "len_ratio_dev"] + (["rev_per_token"] if reverse else [])
        tuned = tune_weights(features["val"], [[c.text for c in cs] for cs in nbest["val"]], sets["val"]["ref"],
                             TuneConfig(features=names, random_trials=rc.trials, seed=rc.seed))
        save_weights(stage_dir / "weights.json", tuned.weights, val_bleu=tuned.score, features=names)
        out: dict = {"weights": tuned.weights, "val_bleu_tuned": tuned.score, "rerank": {}, "mbr": {}}
        mbr_cfg = MbrConfig(utility=mc.utility, weighting=mc.weighting, temperature=mc.temperature)
        for set_name in sets:
            picks = select(features[set_name], tuned.weights)
            path = stage_dir / f"rerank.{set_name}.txt"
            atomic_write_lines(path, [cs[i].text for cs, i in zip(nbest[set_name], picks)])
            out["rerank"][set_name] = {"hyp_path": str(path), "compute": compute[set_name]}
            if mc.enabled:
                start = time.perf_counter()
                mbr_picks, utility_calls = mbr_decode(nbest[set_name], mbr_cfg)
                path = stage_dir / f"mbr.{set_name}.txt"
                atomic_write_lines(path, [cs[i].text for cs, i in zip(nbest[set_name], mbr_picks)])
                c = dict(compute[set_name])
                c["decode_seconds"] += time.perf_counter() - start
                c["utility_calls"] = utility_calls
                out["mbr"][set_name] = {"hyp_path": str(path), "compute": c}
        return out

    return runner.run("rerank_mbr", {"rerank": asdict(rc), "mbr": asdict(mc), "batch_size": cfg.batch_size},
                      {"model": model, "reverse": reverse_model, **inputs}, work)


def agent_stage(runner: StageRunner, cfg: PipelineConfig, model: str, reverse_model: str, root: Path, sets: dict,
                drafts: dict, inputs: dict, log: Log) -> dict:
    """The self-correcting agent, starting from the best non-agent rung's hypotheses (``drafts``:
    set -> {hyp_path, compute}); thresholds tuned on val, then frozen for the test sets."""
    from agents.config import AgentConfig, DraftConfig, ModelsConfig, TuneConfig as AgentTuneConfig
    from agents.lexicon import LexiconConfig
    from agents.report import cost_summary
    from agents.run import build_agent, correct
    from agents.tune import save_tuned, tune
    from evals.textio import read_lines

    ac = cfg.agent
    src, tgt = cfg.data.src_lang, cfg.data.tgt_lang

    def work(stage_dir: Path) -> dict:
        agent_cfg = AgentConfig(
            models=ModelsConfig(forward=[model], reverse=reverse_model, src_lang=src, tgt_lang=tgt),
            lexicon=LexiconConfig(path=str(stage_dir / "lexicon.json"), src_path=str(root / f"task1/raw/train.{src}.gz"),
                                  tgt_path=str(root / f"task1/raw/train.{tgt}.gz"),
                                  max_pairs=cfg.data.max_train_pairs),
            draft=DraftConfig(decode=DecodeSettings(method="beam", beam_size=cfg.beam_size, batch_size=cfg.batch_size)),
            name="agent")
        agent_cfg.policy.budget = ac.max_steps
        agent_cfg.policy.seed = ac.seed
        agent = build_agent(agent_cfg, log=log)
        if ac.tune_on_val and "val" in sets:
            tuned = tune(agent, sets["val"]["src"], sets["val"]["ref"],
                         AgentTuneConfig(), drafts=read_lines(drafts["val"]["hyp_path"]), log=log)
            save_tuned(str(stage_dir / "tuned.json"), tuned)
        out = {}
        for set_name, data in sets.items():
            if set_name == "val":
                continue
            draft_compute = drafts[set_name]["compute"]
            agent.cfg.draft.forward_calls = draft_compute.get("forward_calls")
            agent.cfg.draft.decode_seconds = draft_compute.get("decode_seconds")
            finals, records = correct(agent, data["src"], read_lines(drafts[set_name]["hyp_path"]),
                                      trace_path=str(stage_dir / f"trace.{set_name}.jsonl"), log=log)
            path = stage_dir / f"hyps.{set_name}.txt"
            atomic_write_lines(path, finals)
            cost = cost_summary(records)
            out[set_name] = {"hyp_path": str(path), "trace": str(stage_dir / f"trace.{set_name}.jsonl"), "compute": {
                "decode_seconds": draft_compute.get("decode_seconds", 0.0) + cost["agent"]["seconds"],
                "forward_calls": int(draft_compute.get("forward_calls", 0) + cost["agent"]["forward_calls"]),
                "flops": (draft_compute.get("flops") or 0.0) + (cost["agent"]["flops"] or 0.0),
                "agent_multiple_forward_calls": cost["multiple_forward_calls"]}}
        return out

    return runner.run("agent", asdict(ac), {"model": model, "reverse": reverse_model, **inputs}, work)


# ---- the whole ladder --------------------------------------------------------------------------

def run_ladder(cfg: PipelineConfig, force: set[str] | None = None, log: Log = print, config_path: str = "") -> str:
    """Run (or resume) every rung, write result records and the leaderboard; return its Markdown."""
    import sacrebleu
    import torch
    import transformers

    cfg = resolve_corpus(cfg, log)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    atomic_write_text(run_dir / "run.json", json.dumps({
        "config": asdict(cfg), "config_path": config_path, "seed": cfg.train.seed,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "sacrebleu": sacrebleu.__version__, "python": platform.python_version()},
        "machine": platform.platform(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, indent=1, default=str))
    runner = StageRunner(run_dir, set(force or ()), log)
    root = data_root(cfg, run_dir)
    src, tgt = cfg.data.src_lang, cfg.data.tgt_lang
    sets = eval_sets(cfg, root)
    data_key = {"root": str(root), "corpus": cfg.data.corpus}

    fwd = train_stage(runner, "train_forward", experiment(cfg, run_dir, src, tgt), data_key, log)
    rev = train_stage(runner, "train_reverse", experiment(cfg, run_dir, tgt, src), data_key, log)
    greedy = decode_stage(runner, "baseline", fwd["model"], sets, DecodeSettings(method="greedy", batch_size=cfg.batch_size), {})
    beam_settings = DecodeSettings(method="beam", beam_size=cfg.beam_size, batch_size=cfg.batch_size)
    beam = decode_stage(runner, "beam", fwd["model"], sets, beam_settings, {})
    # rung name -> (stage tag, per-set outputs, training seconds, provenance)
    ladder: list[tuple[str, str, dict, float, dict]] = [
        ("baseline", "baseline", greedy, fwd["train_seconds"], {"model": fwd["model"], "decode": "greedy"}),
        ("+beam", "beam", beam, fwd["train_seconds"], {"model": fwd["model"], "decode": f"beam {cfg.beam_size}"}),
    ]
    best_model, train_seconds = fwd["model"], fwd["train_seconds"]
    if cfg.backtranslation.enabled:
        bt = backtranslation_stage(runner, cfg, root, rev["model"], log)
        bt_model = train_stage(runner, "train_bt", experiment(cfg, run_dir, src, tgt, [bt["mix"]]),
                               {**data_key, "mix": bt["mix"]}, log)
        bt_beam = decode_stage(runner, "bt_beam", bt_model["model"], sets, beam_settings, {})
        ladder.append(("+back-translation", "bt", bt_beam, bt_model["train_seconds"] + rev["train_seconds"],
                       {"model": bt_model["model"], "synthetic_pairs": bt["monolingual_lines"], "tag": cfg.backtranslation.tag}))
        best_model, train_seconds = bt_model["model"], bt_model["train_seconds"] + rev["train_seconds"]
    # Training seconds of every model a rung uses (the reverse model once, however many roles it has).
    with_reverse = train_seconds + (0.0 if cfg.backtranslation.enabled else rev["train_seconds"])
    if cfg.rerank.enabled:
        rm = rerank_and_mbr_stage(runner, cfg, best_model, rev["model"], sets, {})
        ladder.append(("+reranking", "rerank", rm["rerank"], with_reverse,
                       {"model": best_model, "reverse": rev["model"], "weights": rm["weights"]}))
        if cfg.mbr.enabled:
            ladder.append(("+MBR", "mbr", rm["mbr"], train_seconds, {"model": best_model, "utility": cfg.mbr.utility}))
    if cfg.agent.enabled:
        # Start from the best non-agent rung, chosen on val.
        start = max(ladder, key=lambda row: _val_bleu(row[2], sets))
        agent = agent_stage(runner, cfg, best_model, rev["model"], root, sets, start[2],
                            {"start": start[0], "drafts": {k: v["hyp_path"] for k, v in start[2].items()}}, log)
        ladder.append(("+agent", "agent", agent, with_reverse,
                       {"model": best_model, "reverse": rev["model"], "draft": start[0]}))
    markdown = write_leaderboard(cfg, run_dir, ladder, sets, config_path)
    summary = ["## Time per stage", "", "| stage | seconds | this run |", "| --- | ---: | --- |"]
    summary += [f"| {k} | {v:.0f} | {'cached' if k in runner.cached else 'ran'} |" for k, v in runner.timings.items()]
    atomic_write_text(run_dir / "summary.md", markdown + "\n" + "\n".join(summary) + "\n")
    return markdown


def _val_bleu(outputs: dict, sets: dict) -> float:
    from evals.metrics import score_corpus
    from evals.textio import read_lines

    if "val" not in outputs:
        return float("-inf")
    return score_corpus(read_lines(outputs["val"]["hyp_path"]), sets["val"]["ref"])["bleu"]


def write_leaderboard(cfg: PipelineConfig, run_dir: Path, ladder: list, sets: dict, config_path: str) -> str:
    """Result records for every rung and test set (with paired significance), then the leaderboard."""
    from evals.leaderboard import render_leaderboard
    from evals.textio import read_lines
    from evals.records import config_hash

    pair = f"{cfg.data.src_lang}-{cfg.data.tgt_lang}"
    digest = config_hash(asdict(cfg))
    records = []
    for set_name, data in sets.items():
        if set_name == "val":
            continue  # val chose the settings: it is not reported
        hyps_by_system, rows = {}, []
        for system, stage, outputs, train_seconds, provenance in ladder:
            out = outputs[set_name]
            hyps = read_lines(out["hyp_path"])
            hyps_by_system[system] = hyps
            compute = {"train_seconds": round(train_seconds, 1), "device": "cpu", **out["compute"]}
            rows.append(make_record(system, stage, pair, set_name, hyps, data["ref"], data["tok_ref"],
                                    hyp_path=out["hyp_path"], compute=compute, config_digest=digest,
                                    config_path=config_path, provenance=provenance, ref_path=data["ref_path"],
                                    tok_ref_path=data["tok_ref_path"], n_samples=cfg.bootstrap_samples,
                                    seed=cfg.significance_seed))
        # The agent is tested against the draft it started from, not against the row above it.
        compare_to = {r[0]: r[4]["draft"] for r in ladder if r[1] == "agent"}
        records += attach_significance(rows, [r[0] for r in ladder], hyps_by_system, data["ref"],
                                       n_samples=cfg.bootstrap_samples, seed=cfg.significance_seed,
                                       compare_to=compare_to)
    write_records(run_dir / "results.jsonl", records)
    return render_leaderboard(records, str(run_dir / "leaderboard"))
