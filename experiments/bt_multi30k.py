"""Does back-translation help on Multi30K? The issue-4 experiment, resumable, scored by evals.

For each direction a->b (en->de with the task-2 German captions, de->en with the task-2 English
ones), with the SAME model config and training budget (configs/multi30k_train.yaml with pair: a-b):

    baseline        the model trained on the 29k real pairs only (given: --model-<a>-<b>)
    beam            + back-translations of the b-side captions by the b->a model, beam 5
    sample          + unrestricted sampling back-translations
    noised_beam     + beam back-translations with word dropout/blanking/local shuffle
    beam_tagged     beam, with a <BT> tag on synthetic sources (Caswell et al. 2019)
    beam_filtered   beam, best 80% by dual conditional cross-entropy (Junczys-Dowmunt 2018)
    iter2           a second round: back-translations by the *improved* b->a model (its
                    `--iter2-from` variant, default beam), then the same training

Each variant's test outputs (beam 5) are scored on test_2016_flickr, test_2017_flickr and
test_2017_mscoco (out of domain) and written as evals result records, with paired bootstrap
p-values and lift intervals against the baseline, to <results-dir>/bt_<a>_<b>.jsonl; hypotheses
go to <results-dir>/hyps/. Every step skips work already done (shards, mixes, finished training
runs, decoded test sets), so rerunning the same command resumes.

Commands (from the repository root)::

    python experiments/bt_multi30k.py                                   # the full experiment (many CPU hours)
    python experiments/bt_multi30k.py --pairs en-de --variants beam     # one cell
    python experiments/bt_multi30k.py --toy --work-dir /tmp/bt_toy      # smoke test on the toy task (~2 min)
    bash experiments/bt_budget.sh de-en 3055      # baseline and BT both at 2x and 3x the budget (--train-baseline)

Reverse models come from the command line (defaults runs/multi30k_de_en/best and
runs/multi30k_en_de/best, made by configs/multi30k_train.yaml --set pair=de-en / en-de); the baseline of one
direction is the reverse model of the other.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from core_seq2seq.config import from_dict  # noqa: E402
from core_seq2seq.data import TEST_SETS, find_multi30k, multi30k_tok_reference, read_multi30k  # noqa: E402
from core_seq2seq.translator import DecodeSettings, LSTMTranslator  # noqa: E402
from evals.records import attach_significance, make_record, write_records  # noqa: E402
from evals.textio import atomic_write_lines, read_lines  # noqa: E402
from synth.backtranslate import GenerationConfig, generation_for  # noqa: E402
from synth.io import read_json, write_json  # noqa: E402
from synth.loop import (LoopFilterConfig, experiment_dict, filter_step, mix_step, train_step,  # noqa: E402
                        translation_step)
from synth.prepare import PrepareConfig, prepare, report_path  # noqa: E402

VARIANTS = ("baseline", "beam", "sample", "noised_beam", "beam_tagged", "beam_filtered", "iter2")
# variant -> (back-translation method, tag, filtered)
FIRST_ROUND = {"beam": ("beam", "", False), "sample": ("sample", "", False), "noised_beam": ("noised_beam", "", False),
               "beam_tagged": ("beam", "<BT>", False), "beam_filtered": ("beam", "", True)}
TAG = "<BT>"


def log(message: str) -> None:
    print(f"[bt_multi30k {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Bench:
    """Paths and settings of one benchmark run."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.work = Path(args.work_dir)
        self.results = Path(args.results_dir or (self.work / "results" if args.toy else ROOT / "experiments/results"))
        self.toy = args.toy
        self.root = self.work / "toy_data" if self.toy else find_multi30k(args.multi30k)
        if self.toy and not (self.root / "task2/raw").is_dir():
            from core_seq2seq.toy import write_toy_task

            write_toy_task(self.root)
        self.overrides: dict = {}
        if args.max_minutes:
            self.overrides.setdefault("train", {})["time_budget_minutes"] = args.max_minutes
        if args.max_steps:
            self.overrides.setdefault("train", {})["max_steps"] = args.max_steps
        self.test_sets = [t for t in args.test_sets if (Path(self.root) / f"task1/raw/{t}.en.gz").exists()]

    def experiment(self, a: str, b: str) -> tuple[Path, dict]:
        path = ROOT / ("configs/synth_toy_train.yaml" if self.toy else "configs/multi30k_train.yaml")
        return path, experiment_dict(path, self.overrides, f"{a}-{b}")

    def given_model(self, a: str, b: str) -> Path:
        path = Path(getattr(self.args, f"model_{a}_{b}"))
        if self.toy and not (path / "config.json").exists():
            # The toy smoke test trains its own real-data models (seconds).
            _, exp = self.experiment(a, b)
            path = train_step(exp, self.work / f"models/{a}_{b}", log=log)
        if not (path / "config.json").exists():
            raise SystemExit(f"error: {path}: no trained {a}->{b} model; train it with "
                             f"configs/multi30k_train.yaml --set pair={a}-{b} or pass --model-{a}-{b}")
        return path

    def mono(self, lang: str) -> Path:
        out = self.work / f"mono.{lang}.txt"
        if not report_path(out).exists():
            prepare(PrepareConfig(lang=lang, output=str(out), corpus="toy" if self.toy else "multi30k",
                                  root=str(self.root), max_lines=self.args.mono_lines,
                                  max_chars=400, max_words=80), log=log)
        return out

    def generation(self, method: str) -> GenerationConfig:
        return generation_for(method, beam_size=5, batch_size=self.args.batch_size, seed=1,
                              shard_size=self.args.shard_size)


def train_seconds(model_dir: Path) -> float | None:
    """Wall-clock training time of a run (its train_log's stop event)."""
    log_path = Path(model_dir).parent / "train_log.jsonl"
    if not log_path.exists():
        return None
    elapsed = None
    for line in log_path.read_text().splitlines():
        entry = json.loads(line)
        if entry.get("event") == "stop":
            elapsed = entry.get("elapsed")
    return elapsed


def train_pairs(model_dir: Path) -> int | None:
    """Training pairs the run read (real + extra), from the metadata saved with the model."""
    meta = Path(model_dir) / "decade_meta.json"
    return read_json(meta).get("train_pairs") if meta.exists() else None


def synthetic_seconds(bt_dir: Path) -> float:
    return sum(read_json(p).get("seconds", 0.0) for p in (bt_dir / "shards").glob("shard-*.json"))


def build_variant(bench: Bench, a: str, b: str, variant: str, models: dict[str, Path]) -> tuple[Path, dict]:
    """Make the synthetic data, mix and train one variant of a->b; returns (best model, provenance)."""
    pair, reverse = f"{a}-{b}", f"{b}-{a}"
    _, exp = bench.experiment(a, b)
    d = bench.work / pair / variant
    if variant == "iter2":
        source = bench.args.iter2_from
        improved_reverse = variant_model(bench, b, a, source, models)
        method, tag, filtered = FIRST_ROUND[source]
        bt_model, bt_dir = improved_reverse, d / "bt"
    else:
        method, tag, filtered = FIRST_ROUND[variant]
        bt_model, bt_dir = models[reverse], bench.work / pair / f"bt.{method}"  # shared by variants of one method
    synthetic = translation_step(bench.mono(b), bt_model, bt_dir, bench.generation(method), "back",
                                 device=bench.args.device, progress=not bench.args.quiet, log=log,
                                 replay_from=bt_dir.with_name("bt.beam"))  # noised beam: no second beam decode
    files = [synthetic]
    if filtered:
        fcfg = from_dict(LoopFilterConfig, {"selection": {"keep_fraction": 0.8, "max_length_ratio": 2.5},
                                            "scoring": {"batch_size": bench.args.batch_size}})
        files = filter_step(files, d / "filtered.jsonl", models[pair], bt_model, fcfg, bench.args.device,
                            not bench.args.quiet, log)
    mixed = mix_step(files, d / "mix", a, b, tag, bench.args.real_ratio, exp.get("data"), log)
    best = train_step(exp, d / "model", [str(mixed)], log)
    mix_meta = read_json(mixed / "synth_mix.json")
    prov = {"real_pairs": train_pairs(best) - mix_meta["rows"], "synthetic_pairs": mix_meta["synthetic_pairs"],
            "monolingual_lines": sum(1 for _ in open(bench.mono(b), encoding="utf-8")),
            "real_ratio": bench.args.real_ratio, "bt_method": method, "tag": tag or None, "filtered": filtered, "round": 2 if variant == "iter2" else 1,
            "bt_model": str(bt_model), "synthetic_path": str(files[0]), "mix_path": str(mixed),
            "bt_seconds": round(synthetic_seconds(bt_dir), 1)}
    return best, prov


def variant_model(bench: Bench, a: str, b: str, variant: str, models: dict[str, Path]) -> Path:
    if variant == "baseline":
        return models[f"{a}-{b}"]
    return build_variant(bench, a, b, variant, models)[0]


def decode(bench: Bench, model: Path, a: str, b: str, system: str, test_set: str) -> tuple[list[str], dict, Path]:
    """Beam-5 test outputs (cached with their compute figures)."""
    hyp_path = bench.results / "hyps" / f"bt_{a}_{b}.{system}.{test_set}.{b}"
    meta_path = bench.work / "decode" / f"{a}-{b}.{system}.{test_set}.json"
    if hyp_path.exists() and meta_path.exists() and read_json(meta_path).get("model") == str(model):
        return read_lines(hyp_path), read_json(meta_path)["compute"], hyp_path
    corpus, _ = read_multi30k(test_set, a, b, bench.root)
    translator = LSTMTranslator.load(model, a, b, device=bench.args.device)
    settings = DecodeSettings(method="beam", beam_size=5, batch_size=bench.args.batch_size)
    hyps = [c[0].text for c in translator.translate(corpus.src, settings)]
    atomic_write_lines(hyp_path, hyps)
    compute = translator.compute()
    compute = {"decode_seconds": compute["decode_seconds"], "forward_calls": compute["forward_calls"],
               "flops": compute["flops"], "device": bench.args.device_label}
    write_json(meta_path, {"model": str(model), "compute": compute, "decode": asdict(settings)})
    return hyps, compute, hyp_path


def choose_checkpoint(bench: Bench, best: Path, a: str, b: str, system: str) -> tuple[Path, dict]:
    """``--average N``: the run's best checkpoint or the mean of its last N checkpoints, whichever
    scores the higher beam-5 BLEU on val (each system chooses for itself; test is never read)."""
    from core_seq2seq.training import average_checkpoints
    from evals.metrics import new_metric

    ckpts = sorted(best.parent.glob("ckpt-*[0-9]"))[-bench.args.average:]
    if len(ckpts) < 2:
        return best, {"checkpoint": "best", "checkpoint_note": f"fewer than 2 checkpoints in {best.parent}"}
    averaged = best.parent / f"averaged_last{bench.args.average}"
    meta = averaged / "decade_meta.json"
    if not meta.exists() or read_json(meta).get("averaged_from") != [str(c) for c in ckpts]:
        average_checkpoints(ckpts, averaged)
    val, _ = read_multi30k("val", a, b, bench.root)
    options = {"best": best, f"average_last{bench.args.average}": averaged}
    bleu = {}
    for name, path in options.items():
        hyps, _, _ = decode(bench, path, a, b, f"{system}.{name}", "val")
        bleu[name] = round(new_metric("bleu").corpus_score(hyps, [val.tgt]).score, 2)
    chosen = max(bleu, key=lambda k: (bleu[k], k == "best"))  # a tie keeps the best checkpoint
    log(f"{a}-{b} {system}: val BLEU {bleu}; chosen: {chosen}")
    return options[chosen], {"checkpoint": chosen, "checkpoint_val_bleu": bleu,
                             "averaged_from": [str(c) for c in ckpts]}


def score_pair(bench: Bench, a: str, b: str, systems: dict[str, tuple[Path, dict]]) -> Path:
    """Records for every finished system of a->b on every test set, with significance vs the baseline."""
    exp_path, exp = bench.experiment(a, b)
    records, hyps_by_test = [], {}
    for test_set in bench.test_sets:
        corpus, _ = read_multi30k(test_set, a, b, bench.root)
        tok_ref = None if bench.toy else multi30k_tok_reference(test_set, b, bench.root)
        tok_refs = read_lines(tok_ref) if tok_ref else None
        hyps_by_test[test_set] = {}
        for system, (model, prov) in systems.items():
            hyps, compute, hyp_path = decode(bench, model, a, b, system, test_set)
            hyps_by_test[test_set][system] = hyps
            compute = {"train_seconds": train_seconds(model), **compute}
            records.append(make_record(
                f"{a}-{b}.{system}", "baseline" if system == "baseline" else "bt", f"{a}-{b}", test_set, hyps,
                corpus.tgt, tok_refs, hyp_path=str(hyp_path), compute=compute,
                config={"experiment": exp, "variant": system, "iter2_from": bench.args.iter2_from},
                config_path=str(exp_path.relative_to(ROOT)), provenance=prov, decode={"method": "beam", "beam": 5},
                ref_path=str(Path(bench.root) / f"task1/raw/{test_set}.{b}.gz"),
                tok_ref_path=str(tok_ref) if tok_ref else None,
                src_path=str(Path(bench.root) / f"task1/raw/{test_set}.{a}.gz"),
                extra={"model": str(model), "variant": system, "benchmark": "bt_multi30k"}))
    out = bench.results / f"bt_{a}_{b}.jsonl"
    if "baseline" in systems and len(systems) > 1:
        ladder = ["baseline"] + [s for s in systems if s != "baseline"]
        for test_set in bench.test_sets:
            corpus, _ = read_multi30k(test_set, a, b, bench.root)
            names = [f"{a}-{b}.{s}" for s in ladder]
            hyps = {f"{a}-{b}.{s}": h for s, h in hyps_by_test[test_set].items()}
            these = [r for r in records if r.test_set == test_set]
            others = [r for r in records if r.test_set != test_set]
            records = others + attach_significance(these, names, hyps, corpus.tgt)
    write_records(out, records)
    return out


def summary(path: Path) -> str:
    from evals.records import read_records

    rows = ["system | test set | BLEU | Δ vs baseline [95% CI] | p"]
    for r in read_records(path):
        sig = r.significance or {}
        ci = sig.get("delta_vs_baseline_ci")
        delta = f"{sig['delta_vs_baseline']:+.2f} [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "-"
        rows.append(f"{r.system} | {r.test_set} | {r.bleu:.2f} | {delta} | "
                    + (f"{r.p_vs_baseline:.4f}" if r.p_vs_baseline is not None else "-"))
    return "\n".join(rows)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", nargs="+", default=["en-de", "de-en"], choices=["en-de", "de-en"])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--model-en-de", default="runs/multi30k_en_de/best",
                   help="en->de model trained on real data: baseline of en-de, back-translator for de-en")
    p.add_argument("--model-de-en", default="runs/multi30k_de_en/best",
                   help="de->en model trained on real data: baseline of de-en, back-translator for en-de")
    p.add_argument("--iter2-from", default="beam", choices=sorted(FIRST_ROUND),
                   help="iter2 back-translates with the other direction's model of this variant")
    p.add_argument("--work-dir", default="runs/bt_multi30k", help="synthetic data, mixes, models (resumable)")
    p.add_argument("--results-dir", default=None, help="records and hyps (default benchmarks/results; toy: <work-dir>/results)")
    p.add_argument("--multi30k", default=None, help="Multi30K folder (default: found as core_seq2seq does)")
    p.add_argument("--test-sets", nargs="+", default=list(TEST_SETS))
    p.add_argument("--mono-lines", type=int, default=0, help="use the first N clean monolingual lines (0: all)")
    p.add_argument("--max-minutes", type=float, default=0.0,
                   help="override each training's time budget in minutes (smoke tests; 0: the config's)")
    p.add_argument("--real-ratio", type=float, default=1.0,
                   help="upsample the real pairs to about this real:synthetic ratio (0: no upsampling)")
    p.add_argument("--max-steps", type=int, default=0,
                   help="override each training's max_steps (smoke tests; equal-step budgets)")
    p.add_argument("--train-baseline", action="store_true",
                   help="train the baseline in <work-dir>/<pair>/baseline/model with the same overrides as the "
                        "variants (a longer budget than the given model's) instead of using --model-<a>-<b>")
    p.add_argument("--also-score", nargs="+", default=[], metavar="NAME=MODEL_DIR",
                   help="score these trained models too, as systems NAME, against the baseline")
    p.add_argument("--average", type=int, default=0, metavar="N",
                   help="per system, use the mean of the run's last N checkpoints instead of its best one "
                        "when that scores higher on val (beam 5); 0: the best checkpoint")
    p.add_argument("--shard-size", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", default="cpu")
    p.add_argument("--device-label", default="cpu", help="recorded as compute.device, e.g. cpu-2core")
    p.add_argument("--toy", action="store_true", help="smoke test on the toy task with tiny models")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bench = Bench(args)
    if bench.toy and args.mono_lines == 0:
        args.mono_lines = 2000
    models = {f"{a}-{b}": bench.given_model(a, b) for a, b in (("en", "de"), ("de", "en"))}
    first = [v for v in args.variants if v != "iter2"]
    ordered = first + (["iter2"] if "iter2" in args.variants else [])  # iter2 needs the other direction's round 1
    for pair in args.pairs:
        a, b = pair.split("-")
        systems: dict[str, tuple[Path, dict]] = {}
        for variant in ordered:
            log(f"{pair}: {variant}")
            if variant == "baseline":
                baseline = models[pair]
                if args.train_baseline:  # the baseline trained here, with the variants' overrides (same budget)
                    baseline = train_step(bench.experiment(a, b)[1], bench.work / pair / "baseline/model", [], log)
                systems[variant] = (baseline, {"real_pairs": train_pairs(baseline), "synthetic_pairs": 0,
                                               "monolingual_lines": 0})
            else:
                systems[variant] = build_variant(bench, a, b, variant, models)
        for item in args.also_score:  # trained elsewhere (e.g. BT then fine-tuning): scored beside the rest
            name, _, model_dir = item.partition("=")
            model = Path(model_dir)
            if not name or not (model / "config.json").exists():
                raise SystemExit(f"error: --also-score {item!r}: expected NAME=MODEL_DIR with a saved model")
            run_cfg = model.parent / "config.yaml"
            systems[name] = (model, {"trained_elsewhere": str(model),
                                     "run_config": str(run_cfg) if run_cfg.exists() else None})
        if args.average:
            for system, (model, prov) in list(systems.items()):
                chosen, how = choose_checkpoint(bench, model, a, b, system)
                systems[system] = (chosen, {**prov, **how})
        out = score_pair(bench, a, b, systems)
        log(f"{pair}: records -> {out}\n{summary(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
