"""The learning curve: what each kept rung of the ladder is worth in real parallel pairs.

The baseline recipe, unchanged (same model and training sections, early stopping on val), is trained
on nested random fractions of the real training pairs: one seeded permutation of the pairs the
baseline read (after its cleaning and ``data.max_train_pairs``), each fraction a prefix of it, so a
superset of the smaller ones. The full-data point is the baseline model ``model.fwd.<pair>`` itself,
never retrained. Curve models are decoded exactly like the baseline rung (greedy), so the curve
measures the plain recipe, and a rung's worth is the real pairs that plain recipe would need to reach
the rung's score (evals/exchange.py). The curve's form is chosen once per direction on val's points
and then fitted on each test set. Stages: ``data.curve<k>.<pair>``, ``model.curve<k>.<pair>`` and
``<pair>.curve<k>`` (its decodes), k = 1.. over ``curve.fractions`` in increasing order.

Outputs, per direction under ``<run>/<pair>/curve/``: ``results.jsonl`` (a result record per curve
point and test set, the full-data point included, with ``extra.real_pairs``), ``exchange.json`` (the
fits and every kept rung's worth, BLEU and chrF++), ``exchange_<pair>_<test set>.png`` and
``curve.md``. The rung records get ``extra.exchange``, which the leaderboard shows as a column.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core_seq2seq.config import ConfigError
from core_seq2seq.data import clean_pairs, read_text_lines
from core_seq2seq.translator import DecodeSettings
from evals.errors import EvalsInputError
from evals.exchange import FORMULAS, exchange_rates, worth_cell
from evals.records import ResultRecord, make_record, write_records
from evals.significance import sentence_stats
from evals.textio import atomic_write_bytes, atomic_write_lines, atomic_write_text, read_lines

if TYPE_CHECKING:  # ladder.py imports this module lazily; no import cycle at run time
    from .ladder import Ladder

METRICS = ("bleu", "chrf")


def fractions(ladder: "Ladder") -> list[float]:
    return sorted(ladder.cfg.curve.fractions)


def real_pairs(ladder: "Ladder", src: str, tgt: str) -> tuple[list[str], list[str]]:
    """The real pairs the baseline trains on: cleaned as the trainer cleans them, then capped."""
    c, d = ladder.corpora, ladder.cfg.data
    s, t, _ = clean_pairs(read_text_lines(c.train[src]), read_text_lines(c.train[tgt]), c.train[src], d.max_chars)
    cap = d.max_train_pairs or None
    return s[:cap], t[:cap]


def subset_sizes(ladder: "Ladder", n_real: int) -> list[int]:
    """Pairs in each fraction of ``n_real``; a fraction too small for its own size is a config error."""
    sizes = [round(f * n_real) for f in fractions(ladder)]
    if sizes[0] < 1 or len(set(sizes)) != len(sizes):
        raise ConfigError(f"curve.fractions: {fractions(ladder)} of {n_real:,} real pairs give {sizes} pairs: "
                          "every fraction needs at least one pair and a size of its own")
    return sizes


def curve_data(ladder: "Ladder", pair: str, k: int) -> dict:
    """Stage ``data.curve<k>.<pair>``: the k-th smallest fraction of the real pairs as two text files."""
    from .ladder import _split_pair

    src, tgt = _split_pair(pair)
    cc, fraction = ladder.cfg.curve, fractions(ladder)[k - 1]
    c = ladder.corpora

    def work(stage_dir: Path) -> dict:
        s, t = real_pairs(ladder, src, tgt)
        sizes = subset_sizes(ladder, len(s))
        # One permutation for every fraction and direction: prefixes nest. Kept in corpus order.
        keep = np.sort(np.random.default_rng(cc.seed).permutation(len(s))[:sizes[k - 1]])
        atomic_write_lines(stage_dir / f"train.{src}.txt", [s[i] for i in keep])
        atomic_write_lines(stage_dir / f"train.{tgt}.txt", [t[i] for i in keep])
        return {"src": str(stage_dir / f"train.{src}.txt"), "tgt": str(stage_dir / f"train.{tgt}.txt"),
                "pairs": int(len(keep)), "of": len(s), "fraction": fraction}

    key = {"fraction": fraction, "fractions": fractions(ladder), "seed": cc.seed,
           "max_train_pairs": ladder.cfg.data.max_train_pairs, "max_chars": ladder.cfg.data.max_chars}
    return ladder.runner.run(f"data.curve{k}.{pair}", key, {"train": [c.train[src], c.train[tgt]]}, work)


def curve_model(ladder: "Ladder", pair: str, k: int) -> dict:
    """Stage ``model.curve<k>.<pair>``: the baseline recipe on the k-th fraction (model and train sections unchanged)."""
    from .ladder import _split_pair

    src, tgt = _split_pair(pair)
    d = curve_data(ladder, pair, k)
    return ladder.train_model(f"curve{k}", src, tgt, ladder.data_config(src, tgt, train=(d["src"], d["tgt"])),
                              None, {"subset": d["src"]})


def _greedy(ladder: "Ladder") -> DecodeSettings:
    return DecodeSettings(method="greedy", batch_size=ladder.cfg.batch_size)  # the baseline rung's search


def _scored_sets(ladder: "Ladder", pair: str) -> dict:
    return {name: s for name, s in ladder.sets[pair].items() if name != "blind"}  # val chooses the form; tests report


def _pairs_trained(model: dict) -> int:
    return int(json.loads((Path(model["model"]) / "decade_meta.json").read_text())["train_pairs"])


def curve_points(ladder: "Ladder", pair: str) -> list[dict]:
    """Every point of ``pair``'s curve, smallest first: {system, fraction, pairs, model stage, outputs}.
    Runs (or finds) the curve's stages; the last point is the baseline rung (model.fwd.<pair>, greedy)."""
    points = []
    for k, fraction in enumerate(fractions(ladder), start=1):
        model = curve_model(ladder, pair, k)
        out = ladder.decode(f"{pair}.curve{k}", [model["model"]], _greedy(ladder), _scored_sets(ladder, pair))
        points.append({"system": f"curve{k}", "fraction": fraction, "pairs": _pairs_trained(model),
                       "stage": model["stage"], "outputs": out, "models": [model["model"]]})
    base = ladder.systems[pair][0]  # the baseline rung: the full data, the same recipe and search
    fwd = ladder.forward_model(pair)
    points.append({"system": "curve-full", "fraction": 1.0, "pairs": _pairs_trained(fwd), "stage": fwd["stage"],
                   "outputs": base.outputs, "models": base.models})
    return points


def learning_curve(ladder: "Ladder") -> None:
    """The rung: every direction's curve models side by side, then their decodes."""
    for pair in ladder.pairs:  # before any training: a fraction too small is a config error now, not later
        subset_sizes(ladder, len(real_pairs(ladder, *pair.split("-"))[0]))
    # Largest fractions first: the longest trainings start first, so neither worker idles at the end.
    ladder.parallel([("curve_model", (pair, k)) for k in range(len(fractions(ladder)), 0, -1) for pair in ladder.pairs])
    for pair in ladder.pairs:
        for p in curve_points(ladder, pair):
            ladder.log(f"[{pair}] curve: {p['system']} ({p['fraction']:g} of the real pairs, {p['pairs']:,} pairs)")


# --- reporting (called when the direction's records are written) -------------------------

def _stats(outputs: dict, set_name: str, refs: list[str], metric: str, tgt: str) -> np.ndarray:
    return sentence_stats(read_lines(outputs[set_name]["hyp_path"]), refs, metric, tgt)


def write_curve(ladder: "Ladder", pair: str, records: list[ResultRecord], *, config_path: str,
                digest: str) -> list[ResultRecord]:
    """Fit ``pair``'s curves, write ``<run>/<pair>/curve/``, and return ``records`` with each kept rung's
    worth in ``extra.exchange``. A curve that cannot be fitted (say, it does not rise) is reported in
    curve.md and exchange.json, and the records come back unchanged."""
    from evals.plots import plot_exchange

    cfg = ladder.cfg
    tgt = pair.split("-")[1]
    out_dir = ladder.run_dir / pair / "curve"
    points = curve_points(ladder, pair)
    pairs = [p["pairs"] for p in points]
    kept = [s for s in ladder.systems[pair] if s.kept]
    sets = _scored_sets(ladder, pair)
    kw = {"used_pairs": pairs[-1], "n_samples": cfg.bootstrap_samples, "seed": cfg.significance_seed}
    report: dict[str, Any] = {"pair": pair, "points": [{k: p[k] for k in ("system", "fraction", "pairs", "stage")}
                                                       for p in points], "decode": dataclasses.asdict(_greedy(ladder)),
                              "seed": cfg.curve.seed, "sets": {}}
    images: dict[str, bytes] = {}
    try:
        # The form is chosen on val's points; the test sets only report.
        val = exchange_rates([_stats(p["outputs"], "val", sets["val"].ref, "bleu", tgt) for p in points], pairs, {},
                             "bleu", form=cfg.curve.form, **kw)
        report["form"] = {"chosen": val["fit"]["form"], "on": "val", "why": val["fit"]["reason"],
                          "val_points": val["points"], "val_lack_of_fit": val["fit"]["lack_of_fit"],
                          "val_held_out": val["held_out"]}
    except EvalsInputError as e:  # e.g. the curve does not rise on val: said in curve.md, the run still ends
        ladder.log(f"[{pair}] curve: no exchange rate: val: {e}")
        report["error"] = f"val: {e}"
    for set_name, data in sets.items() if "error" not in report else ():
        if set_name == "val":
            continue
        report["sets"][set_name] = by_metric = {}
        for metric in METRICS:
            try:
                curve_stats = [_stats(p["outputs"], set_name, data.ref, metric, tgt) for p in points]
                steps = {s.name: _stats(s.outputs, set_name, data.ref, metric, tgt) for s in kept}
                by_metric[metric] = exchange_rates(curve_stats, pairs, steps, metric, form=report["form"]["chosen"], **kw)
            except EvalsInputError as e:
                ladder.log(f"[{pair}] curve: no exchange rate on {set_name} ({metric}): {e}")
                by_metric[metric] = {"error": str(e)}
        if "error" not in by_metric["bleu"]:
            images[f"exchange_{pair}_{set_name}.png"] = plot_exchange(by_metric["bleu"], pair, set_name)
    curve_records = [make_record(p["system"], "curve", pair, set_name, read_lines(p["outputs"][set_name]["hyp_path"]),
                                 data.ref, data.tok_ref, hyp_path=p["outputs"][set_name]["hyp_path"],
                                 compute={"device": "cpu", **p["outputs"][set_name]["compute"]}, config_digest=digest,
                                 config_path=config_path, decode=report["decode"],
                                 provenance={"models": p["models"], "trained": [p["stage"]]},
                                 ref_path=data.ref_path, tok_ref_path=data.tok_ref_path, src_path=data.src_path,
                                 n_samples=cfg.bootstrap_samples, seed=cfg.significance_seed,
                                 extra={"real_pairs": p["pairs"], "fraction": p["fraction"]})
                     for set_name, data in sets.items() if set_name != "val" for p in points]
    write_records(out_dir / "results.jsonl", curve_records)
    atomic_write_text(out_dir / "exchange.json", json.dumps(report, indent=1, allow_nan=False) + "\n")
    for name, data in images.items():
        atomic_write_bytes(out_dir / name, data)
    atomic_write_text(out_dir / "curve.md", curve_markdown(report, list(images)))
    out = []
    for rec in records:
        result = report["sets"].get(rec.test_set, {})
        worth = {m: {**r["steps"][rec.system], "form": r["fit"]["form"], "used_pairs": r["used_pairs"],
                     "largest_point": pairs[-1]} for m, r in result.items() if rec.system in r.get("steps", {})}
        out.append(replace(rec, extra={**rec.extra, "exchange": worth}) if worth else rec)
    return out


def _params(fit: dict) -> str:
    return ", ".join(f"{k} = {v:.4g}" for k, v in fit["params"].items())


def curve_markdown(report: dict, images: list[str]) -> str:
    """The summary's learning-curve section for one direction: the form and why, each test set's fit,
    residuals, the held-out check, and every kept rung's worth (BLEU and chrF++)."""
    pair = report["pair"]
    lines = [f"## Learning curve: {pair}", "",
             "The baseline recipe (greedy decoding, as the baseline rung) trained on nested random fractions of the "
             "real pairs (seed " + str(report["seed"]) + "): " + ", ".join(
                 f"{p['fraction']:g} = {p['pairs']:,} pairs" for p in report["points"]) + " (the last is the baseline model).", ""]
    if "error" in report:
        return "\n".join(lines + [f"No exchange rate: {report['error']}", ""])
    form = report["form"]
    lines += [f"Form: **{form['chosen']}** ({FORMULAS[form['chosen']]}), chosen on val: {form['why']}.", ""]
    for set_name, by_metric in report["sets"].items():
        lines += [f"### {pair} · {set_name}", "",
                  "| metric | fit | residuals (measured - fit), smallest point first | held-out largest point: "
                  "predicted - measured [95% CI] | held-out fit's worth of that point |",
                  "| --- | --- | --- | ---: | ---: |"]
        for metric, r in by_metric.items():
            if "error" in r:
                lines.append(f"| {'BLEU' if metric == 'bleu' else 'chrF++'} | no fit: {r['error']} | | | |")
                continue
            held = r["held_out"]
            held_cell = "n/a (" + held["why"] + ")" if held.get("error") is None else (
                f"{held['error']:+.2f} [{held['error_ci'][0]:+.2f}, {held['error_ci'][1]:+.2f}] ({held['form']})")
            worth = "n/a" if held.get("error") is None else _x(held["worth_of_held_out"])
            lines.append(f"| {'BLEU' if metric == 'bleu' else 'chrF++'} | {_params(r['fit'])} | "
                         + ", ".join(f"{x:+.2f}" for x in r["fit"]["residuals"]) + f" | {held_cell} | {worth} |")
        lines += ["", "| rung | BLEU | worth in real pairs (BLEU) [95% CI] | chrF++ | worth (chrF++) [95% CI] |",
                  "| --- | ---: | --- | ---: | --- |"]
        names = next((r["steps"] for r in by_metric.values() if "steps" in r), {})
        for name in names:
            cells = []
            for metric in METRICS:
                step = by_metric[metric].get("steps", {}).get(name)
                cells += [f"{step['score']:.2f}", worth_cell(step)] if step else ["n/a", "n/a (no fit)"]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines += ["", f"![exchange_{pair}_{set_name}.png](exchange_{pair}_{set_name}.png)" if
                  f"exchange_{pair}_{set_name}.png" in images else "", ""]
    lines.append("Worth: the real pairs the plain recipe would need to reach the rung's score, read off the fitted "
                 "curve, as a multiple of the real pairs the rung used; intervals: 95% paired bootstrap over test "
                 "sentences (each replicate rescores every point and rung, refits, inverts). Beyond the largest point "
                 "the curve is extrapolated; the held-out check shows how well a fit predicts a point it has not seen.")
    return "\n".join(lines) + "\n"


def _x(v: Any) -> str:
    v = math.inf if v == "inf" else math.nan if v is None else float(v)
    return f"{v:.2f}x" if math.isfinite(v) else "n/a"
