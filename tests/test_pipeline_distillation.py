"""The +distillation rung on the toy ladder: self-distillation, DPO and MRT from the reranked system,
val picks one, costs recorded, a rerun reuses every stage (the run is shared with the curve's test:
tests/conftest.py)."""

from __future__ import annotations

import json

import pytest

from pipeline.cli import main as decade_main


@pytest.mark.slow
def test_distillation_rung_tries_each_method_and_val_picks_one(toy_distill_curve_run, capsys):
    path, run, _, first_err = toy_distill_curve_run  # en-de, rerank without r2l/lm, distill/dpo/mrt at 12 steps, the curve on
    records = [json.loads(x) for x in (run / "en-de/results.jsonl").read_text().splitlines()]
    (rec,) = [r for r in records if r["system"] == "+distillation"]
    prov = rec["provenance"]
    assert set(prov["val_bleu_by_method"]) == {"distill", "distill_tagged", "dpo", "mrt"}
    assert prov["method"] == max(prov["val_bleu_by_method"], key=prov["val_bleu_by_method"].get)
    assert prov["teacher"] == "+rerank" or prov["teacher_kind"] == "search"
    # the student is the kept system's model best alone on val (the forward model of an ensemble or not)
    by_student = prov["val_bleu_by_student"]
    assert prov["student"] == max(by_student, key=by_student.get) and prov["val_bleu_start"] == by_student[prov["student"]]
    built_on = [r for r in records if r["system"] == rec["extra"]["built_on"]][0]
    assert set(by_student) == set(built_on["provenance"]["models"])
    assert prov["decode"] == "beam 5"  # distillation.beam_size, not the +beam rung's width (2 or 4 here)
    assert all(c["steps"] == 12 and c["seconds"] > 0 and 0 <= c["best_step"] <= 12  # the update val kept
               for c in prov["train_cost_by_method"].values())
    assert rec["extra"]["built_on"] in {r["system"] for r in records} and rec["compute"]["decode_seconds"] > 0
    assert rec["compute"]["train_steps"] > 12  # the student's training and the chosen method's 12 steps
    (top,) = [r for r in records if r["system"] == "+distillation+rerank"]
    assert top["provenance"]["selector"] == "rerank" and top["extra"]["built_on"] in {"+rerank", "+distillation"}
    # Side by side at the same beam: the start and every method, each tested against the start, with blind outputs;
    # published beside the leaderboard and re-scorable there.
    side = [json.loads(x) for x in (run / "en-de/distillation/results.jsonl").read_text().splitlines()]
    names = ["distillation-start"] + [f"distillation-{m}" for m in ("distill", "distill_tagged", "dpo", "mrt")]
    assert [r["system"] for r in side] == names and {r["test_set"] for r in side} == {"test_2016_flickr"}
    assert all(r["significance"]["prev"] == "distillation-start" and r["p_vs_prev"] is not None for r in side[1:])
    assert all(r["chrf"] is not None and r["ter"] is not None for r in side)
    # each method's own training cost beside its decoding cost; the start trains nothing
    assert all(r["extra"]["train"]["steps"] == 12 and r["compute"]["train_seconds"] > 0 for r in side[1:])
    assert "train" not in side[0]["extra"] and side[0]["compute"]["train_seconds"] is None
    chosen = next(r for r in side if r["system"] == f"distillation-{prov['method']}")
    assert chosen["bleu"] == rec["bleu"] and chosen["extra"]["val_bleu"] == rec["extra"]["val_bleu"]
    assert side[0]["extra"]["val_bleu"] == prov["val_bleu_start"]
    assert all((run / f"blind/en-de/{n}.txt").exists() for n in names)
    from evals.cli import main as evals_main

    published = run.parent / "published"
    assert decade_main(["publish", str(run), "--to", str(published), "--blind-to", str(published / "blind")]) == 0
    assert evals_main(["verify", str(published / "en-de/distillation/results.jsonl")]) == 0
    assert (published / "en-de/distillation/leaderboard/leaderboard.md").exists()
    assert (published / "blind/en-de/distillation-dpo.txt").exists()
    distilled = json.loads((run / "en-de.distill_data/stage.json").read_text())["outputs"]
    assert distilled["synthetic_pairs"] == 200 + 1500  # monolingual lines, then the toy task's training sources
    # the same translations twice: untagged for distill, tagged for distill_tagged (val chose between them)
    from datasets import load_from_disk

    untagged, tagged = (load_from_disk(json.loads((run / f"en-de.{k}/stage.json").read_text())["outputs"]["mix"])["en"]
                        for k in ("distill_mix", "distill_mix_tagged"))
    assert sum(s.startswith("<DST> ") for s in tagged) == 1700 and not any(s.startswith("<DST>") for s in untagged)
    assert sorted(s.removeprefix("<DST> ") for s in tagged) == sorted(untagged)
    pairs = [json.loads(x) for x in (run / "en-de.preference_data/pairs.jsonl").read_text().splitlines()]
    assert pairs and all(p["chosen"] != p["rejected"] for p in pairs)
    # the 100 preference sources are distillation's first shard: their ranking is not made twice
    assert "[en-de.preference_data] preference pairs: shard 1/1 taken from the ranking made for distillation" in first_err
    # every stage the rung made is one --force can name
    from pipeline.ladder import check_force, load_pipeline_config

    check_force(load_pipeline_config(path), {p.parent.name for p in run.glob("*/stage.json")})
    capsys.readouterr()
    assert decade_main(["run", str(path), "--out", str(run)]) == 0  # a rerun: every stage cached
    err = capsys.readouterr().err
    assert "[model.mrt.en-de] cached" in err and "[en-de.distill_data] cached" in err and "running" not in err
