"""The escalating agent on the toy task: it escalates planted hard sentences and not easy ones, never
exceeds its budget, traces every step; the learned policy trains on a val trace and runs through the
same interface; the val curve replays the live loop; the CLI (curve, escalate, explain)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from agents.__main__ import main
from agents.curve import (fit_policy, live_bound, path_of, pick, reference_flops, replay, tune_curve)
from agents.curve import exhaustive as run_exhaustive
from agents.errors import AgentInputError
from agents.escalate import LearnedPolicy, ModelRungs, RulePolicy, escalate_corpus, load_policy
from agents.run import build_agent
from agents.trace import read_trace, render
from test_agents import PLANTS, SourceOnlyRefiner, agent_cfg, clean, lexicon, planted  # noqa: F401  (clean, lexicon: fixtures)

RUNGS = ["rerank4", "rerank8"]


def make_agent(toy_en_de, toy_de_en, lexicon, **escalate):
    cfg = agent_cfg(escalate={"rungs": RUNGS, **escalate}, run={"chunk_size": 6})
    return build_agent(cfg, toy_en_de, toy_de_en, lexicon)


@pytest.fixture(scope="module")
def hard_easy(clean):
    """Planted errors (hard: the critic flags them) and correct drafts (easy), with references."""
    hard = [x for kind in sorted(PLANTS) for x in planted(clean, kind, 2)]
    easy = [(s, r, r) for s, r in clean[-5:]]
    cases = hard + easy
    return [s for s, _, _ in cases], [d for _, _, d in cases], [r for _, r, _ in cases], len(hard)


@pytest.fixture(scope="module")
def exhaustive(toy_en_de, toy_de_en, lexicon, hard_easy):
    sources, drafts, refs, _ = hard_easy
    return run_exhaustive(make_agent(toy_en_de, toy_de_en, lexicon), sources, None, drafts=drafts)


def test_rules_escalate_hard_sentences_and_not_easy_ones(toy_en_de, toy_de_en, lexicon, hard_easy, exhaustive):
    sources, drafts, refs, n_hard = hard_easy
    ref = reference_flops(exhaustive, RUNGS)
    # rules: a flag adds 10 to the value; the budget is ample, so only the policy decides
    agent = make_agent(toy_en_de, toy_de_en, lexicon, threshold=5.0, budget={"corpus": 10.0})
    finals, records, report = escalate_corpus(agent, sources, None, ref, drafts=drafts)
    climbed = [r["escalation"]["rungs_climbed"] for r in records]
    assert all(c >= 1 for c in climbed[:n_hard]), [r["decision"]["reason"] for r in records]
    assert all(c == 0 for c in climbed[n_hard:]), climbed
    assert finals[n_hard:] == drafts[n_hard:]
    assert sum(f == r for f, r in zip(finals[:n_hard], refs[:n_hard])) >= n_hard - 1  # the reranker repairs them
    assert report["within_budget"] and report["bound_violations"] == 0


@pytest.mark.parametrize("fraction, sentence", [(0.05, 1.0), (0.2, 1.0), (0.5, 0.5), (1.0, 2.0), (3.0, 0.0)])
def test_the_budget_is_never_exceeded(toy_en_de, toy_de_en, lexicon, hard_easy, exhaustive, fraction, sentence):
    sources, drafts, _, _ = hard_easy
    ref = reference_flops(exhaustive, RUNGS)
    first_look = sum(r["steps"][0]["cost"]["flops"] for r in exhaustive)
    agent = make_agent(toy_en_de, toy_de_en, lexicon, budget={"corpus": fraction + first_look / ref, "sentence": sentence})
    _, records, report = escalate_corpus(agent, sources, None, ref, drafts=drafts)
    spent = sum(r["cost"]["draft"]["flops"] + r["cost"]["agent"]["flops"] for r in records)
    assert spent <= report["allowed_flops"] * (1 + 1e-9) and report["within_budget"]
    assert report["bound_violations"] == 0
    cap = sentence * ref / len(sources) if sentence else math.inf
    assert all(r["escalation"]["flops"] <= cap * (1 + 1e-3) for r in records)
    # The live run and the val replay enforce the budget alike (here the replay's bound is the recorded cost).
    states, budget = replay(exhaustive, RUNGS, RulePolicy(), None, (fraction + first_look / ref) * ref, cap)
    assert sum(s.spent for s in states) <= (fraction + first_look / ref) * ref * (1 + 1e-9)
    if fraction >= 3.0:  # enough for everything, no cap: every sentence climbs every rung
        assert all(r["escalation"]["rungs_climbed"] == len(RUNGS) for r in records)


@pytest.mark.parametrize("sentence", [0.6, 1.0, 1.5])
def test_a_replay_with_the_live_bound_blocks_what_the_live_run_blocks(toy_en_de, toy_de_en, lexicon, hard_easy,
                                                                       exhaustive, sentence):
    """The per-sentence cap is enforced on the rung's worst-case bound, which exceeds what the rung
    then costs; a val replay that tunes the agent must block the same sentences the live run will."""
    sources, drafts, _, _ = hard_easy
    ref = reference_flops(exhaustive, RUNGS)
    agent = make_agent(toy_en_de, toy_de_en, lexicon, budget={"corpus": 100.0, "sentence": sentence})
    _, records, _ = escalate_corpus(agent, sources, None, ref, drafts=drafts)
    live = {r["id"]: r["escalation"]["rungs_climbed"] for r in records}
    cap = sentence * ref / len(sources)
    states, _ = replay(exhaustive, RUNGS, RulePolicy(), None, 100.0 * ref, cap, live_bound(agent, (None, None, None, 1.0)))
    assert {s.id: s.rung for s in states} == live
    assert min(live.values()) < len(RUNGS)  # the cap binds somewhere: the check has something to compare


def test_a_margin_spends_less_on_the_rerank_rungs(toy_en_de, toy_de_en, lexicon, hard_easy, exhaustive):
    """escalate.margin: the reranker's models score only candidates close to the forward model's
    best (inference_compute.rerank.within_margin); a margin that keeps every candidate climbs to the
    same finals as none, a tight one spends less and stays within its budget."""
    sources, drafts, _, _ = hard_easy
    ref = reference_flops(exhaustive, RUNGS)
    runs = {}
    for margin in (None, 1.0e9, 0.0):
        agent = make_agent(toy_en_de, toy_de_en, lexicon, score_margin=margin, budget={"corpus": 10.0})
        finals, records, report = escalate_corpus(agent, sources, None, ref, drafts=drafts)
        assert report["within_budget"] and report["bound_violations"] == 0
        runs[margin] = (finals, report["spent_flops"])
    assert runs[1.0e9][0] == runs[None][0]
    assert runs[0.0][1] < runs[None][1]
    with pytest.raises(ValueError, match="escalate.score_margin must be >= 0"):
        make_agent(toy_en_de, toy_de_en, lexicon, score_margin=-0.5)
    # The curve's budgets are shares of the full reranker: with a margin its figure must be given.
    from agents.curve import budget_reference

    agent = make_agent(toy_en_de, toy_de_en, lexicon, score_margin=0.0)
    with pytest.raises(AgentInputError, match="reference_flops_per_sentence"):
        budget_reference(exhaustive, agent.cfg.escalate)
    agent.cfg.escalate.budget.reference_flops_per_sentence = 2.0
    assert budget_reference(exhaustive, agent.cfg.escalate) == 2.0 * len(exhaustive)


@pytest.mark.parametrize("feature", ["lm_per_token", "r2l_per_token", "alt_per_token"])
def test_reranker_weights_without_their_model_are_refused(toy_en_de, toy_de_en, lexicon, feature):
    agent = make_agent(toy_en_de, toy_de_en, lexicon)
    with pytest.raises(AgentInputError, match=f"escalate.reranker weighs {feature} but its model is not given"):
        ModelRungs(agent, agent.cfg.escalate, weights={"fwd_per_token": 1.0, feature: 0.5})
    ModelRungs(agent, agent.cfg.escalate, weights={"fwd_per_token": 1.0, feature: 0.0})  # unweighted: no model needed


def test_a_budget_below_the_first_look_is_refused(toy_en_de, toy_de_en, lexicon, hard_easy, exhaustive):
    sources, drafts, _, _ = hard_easy
    agent = make_agent(toy_en_de, toy_de_en, lexicon, budget={"corpus": 1e-6})
    with pytest.raises(AgentInputError, match="does not cover the drafts"):
        escalate_corpus(agent, sources, None, reference_flops(exhaustive, RUNGS), drafts=drafts)


def test_escalation_analysis_counts_a_live_trace_and_says_how_predictable_a_fix_is(toy_en_de, toy_de_en, lexicon,
                                                                                    hard_easy, exhaustive, tmp_path,
                                                                                    capsys, monkeypatch):
    """benchmarks/escalation_analysis.py: a live run that escalated the hard sentences only is counted
    as such (escalated, and among them fixed / harmed / same); the predictability block scores the
    draft's features."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("escalation_analysis", Path(__file__).resolve().parents[1]
                                                  / "benchmarks/escalation_analysis.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    sources, drafts, refs, n_hard = hard_easy
    trace = tmp_path / "trace.val.jsonl"
    trace.write_text("".join(json.dumps(r) + "\n" for r in exhaustive))
    live = tmp_path / "trace.live.jsonl"  # the rules with a threshold that escalates the flagged (hard) drafts only
    agent = make_agent(toy_en_de, toy_de_en, lexicon, threshold=5.0, budget={"corpus": 10.0})
    _, records, _ = escalate_corpus(agent, sources, str(live), reference_flops(exhaustive, RUNGS), drafts=drafts)
    (tmp_path / "ref.txt").write_text("".join(r + "\n" for r in refs))
    (tmp_path / "curve.json").write_text(json.dumps({"rungs": RUNGS, "score_margin": None, "model": "", "points": [],
                                                     "pick": {}}))
    monkeypatch.setattr(sys, "argv", ["escalation_analysis", str(tmp_path), "--trace", "trace.val.jsonl",
                                      "--ref", str(tmp_path / "ref.txt"), "--live", str(live)])
    mod.main()
    out = json.loads(capsys.readouterr().out)
    assert out["every_sentence_escalated"]["total"]["escalated"] == len(exhaustive)
    counted = out["live"]["total"]
    assert counted["sentences"] == len(sources)
    assert counted["escalated"] == sum(r["escalation"]["rungs_climbed"] > 0 for r in records) == n_hard
    assert sum(counted.get(k, 0) for k in ("fixed", "harmed", "same")) == counted["escalated"]
    assert counted.get("fixed", 0) >= n_hard - 1  # the reranker repairs the planted errors
    pred = out["predictable_from_the_draft"]
    assert pred["changes"]["n"] == len(exhaustive)
    assert pred["changes"]["positive"] == sum(r["final"] != r["draft"] for r in exhaustive)
    assert pred["fix_vs_harm"]["n"] <= pred["changes"]["positive"]
    for block in pred.values():
        assert block["cv_auc"] is None or 0.0 <= block["cv_auc"] <= 1.0


def test_every_step_is_in_the_trace(toy_en_de, toy_de_en, lexicon, hard_easy, exhaustive, tmp_path, monkeypatch):
    sources, drafts, _, _ = hard_easy
    agent = make_agent(toy_en_de, toy_de_en, lexicon, budget={"corpus": 0.6, "sentence": 0})
    calls: list[tuple[int, int]] = []
    run = ModelRungs.run
    monkeypatch.setattr(ModelRungs, "run", lambda self, rung, group: calls.extend((s.id, rung) for s in group)
                        or run(self, rung, group))
    trace = tmp_path / "trace.jsonl"
    finals, records, _ = escalate_corpus(agent, sources, str(trace), reference_flops(exhaustive, RUNGS), drafts=drafts)
    on_disk = read_trace(trace)
    assert [r["final"] for r in on_disk] == finals
    assert 0 < len(calls) < len(sources) * len(RUNGS)  # the budget stopped some, not all
    for r in on_disk:
        mine = [k for i, k in calls if i == r["id"]]
        assert [st["action"] for st in r["steps"]] == ["draft"] + [RUNGS[k - 1] for k in mine]
        assert r["escalation"]["rungs_climbed"] == len(mine) and r["decision"]["reason"]
        assert len(r["escalation"]["values"]) >= len(mine)
        for st in r["steps"]:
            assert {"action", "candidate", "cost", "kept"} <= set(st)
        assert path_of(r)[-1] == r["final"]
    text = render(on_disk[0])
    assert "step 0: draft" in text and on_disk[0]["final"] in text and "rung(s) climbed; values" in text


def test_mbr_and_refine_rungs_climb_within_budget(toy_en_de, toy_de_en, lexicon, hard_easy, exhaustive):
    sources, drafts, refs, n_hard = hard_easy
    rungs = ["rerank4", "mbr", "refine"]
    cfg = agent_cfg(escalate={"rungs": rungs, "budget": {"corpus": 20.0, "sentence": 0}}, selection={"refiner_weight": 1.0})
    agent = build_agent(cfg, toy_en_de, toy_de_en, lexicon, refiner=SourceOnlyRefiner(toy_en_de))
    finals, records, report = escalate_corpus(agent, sources, None, reference_flops(exhaustive, RUNGS), drafts=drafts)
    for r in records:
        assert [st["action"] for st in r["steps"]] == ["draft", *rungs] and r["decision"]["reason"] == "top rung reached"
        assert r["steps"][2]["args"]["pool"] >= 2  # MBR chose among the draft and the reranker's 4-best
    assert report["within_budget"] and report["bound_violations"] == 0
    assert sum(f == r for f, r in zip(finals, refs)) >= len(refs) - 1


def test_learned_policy_trains_on_val_and_runs_through_the_same_interface(
        toy_en_de, toy_de_en, lexicon, hard_easy, exhaustive, tmp_path):
    sources, drafts, refs, n_hard = hard_easy
    model, cross_fitted, info = fit_policy(exhaustive, refs, l2=1.0, folds=3)
    assert model is not None and info["examples"] == len(sources) * len(RUNGS) and 0 < info["positive"] < info["examples"]
    model.save(tmp_path / "policy.json")
    policy = load_policy("learned", str(tmp_path / "policy.json"))
    assert isinstance(policy, LearnedPolicy)
    first = [policy.value(r["source"], r["steps"][0], 1, False, r["id"]) for r in exhaustive]
    assert min(first[:n_hard]) > max(first[n_hard:])  # it learned where climbing pays
    agent = make_agent(toy_en_de, toy_de_en, lexicon, policy="learned", model=str(tmp_path / "policy.json"), threshold=0.5,
                       budget={"corpus": 10.0})
    _, records, report = escalate_corpus(agent, sources, None, reference_flops(exhaustive, RUNGS), drafts=drafts)
    assert all(0.0 <= v <= 1.0 for r in records for v in r["escalation"]["values"])
    climbed = [r["escalation"]["rungs_climbed"] for r in records]
    assert all(c >= 1 for c in climbed[:n_hard]) and all(c == 0 for c in climbed[n_hard:]), climbed
    assert report["policy"] == "learned" and report["within_budget"]
    with pytest.raises(AgentInputError, match="escalate.model is not set"):
        load_policy("learned", "")


def test_val_curve_replays_the_live_loop_and_picks_the_cheapest_near_best(
        toy_en_de, toy_de_en, lexicon, hard_easy, exhaustive):
    sources, drafts, refs, n_hard = hard_easy
    ref = reference_flops(exhaustive, RUNGS)
    states, _ = replay(exhaustive, RUNGS, RulePolicy(), None, math.inf)
    assert [s.current for s in states] == [r["final"] for r in exhaustive]
    agent = make_agent(toy_en_de, toy_de_en, lexicon, curve=[0.3, 1.0, 3.0])
    _, cross_fitted, _ = fit_policy(exhaustive, refs, 1.0, 3)
    points = tune_curve(exhaustive, refs, agent.cfg.escalate, "de", {"rules": RulePolicy(), "learned": cross_fitted})
    assert {(p["policy"], p["budget"]) for p in points} == {(n, b) for n in ("rules", "learned") for b in (0.3, 1.0, 3.0)}
    for p in points:
        assert p["flops"] <= p["budget"] * ref * (1 + 1e-9) and p["harmed"] <= 0.5 * p["fixed"]
    best = max(p["bleu"] for p in points)
    chosen = pick(points, 0.1)
    assert chosen["bleu"] >= best - 0.1
    assert all(p["flops"] >= chosen["flops"] for p in points if p["bleu"] >= best - 0.1)
    assert best > points[0]["draft_bleu"]


def test_cli_curve_then_escalate_with_the_pick(tmp_path, toy_models_dir, toy_en_de, toy_de_en, toy_task, hard_easy,
                                               capsys):
    sources, drafts, refs, _ = hard_easy
    raw = Path(toy_task) / "task1/raw"
    data = yaml.safe_load(Path("configs/agent_toy.yaml").read_text())
    data["models"].update(forward=str(toy_models_dir / "en_de/best"), reverse=str(toy_models_dir / "de_en/best"))
    data["lexicon"].update(path=str(tmp_path / "lex.json"), src_path=str(raw / "train.en.gz"),
                           tgt_path=str(raw / "train.de.gz"))
    data["escalate"].update(rungs=RUNGS, curve=[0.5, 1.0])
    data["draft"]["decode"].update(beam_size=2, nbest=2)
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(yaml.safe_dump(data))
    (tmp_path / "val.en").write_text("\n".join(sources) + "\n")
    (tmp_path / "val.de").write_text("\n".join(refs) + "\n")
    out = tmp_path / "curve"
    assert main(["curve", "--config", str(cfg), "--src", str(tmp_path / "val.en"), "--ref", str(tmp_path / "val.de"),
                 "--out", str(out), "--test-src", str(tmp_path / "val.en"), "--test-ref", str(tmp_path / "val.de"),
                 "--test-set", "heldout"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["pick"]["budget"] in (0.5, 1.0) and (out / "curve_en-de_val.png").exists()
    assert (out / "curve_en-de_heldout.png").exists() and (out / "records.jsonl").exists()
    data["escalate"]["tuned"] = str(out / "curve.json")
    cfg.write_text(yaml.safe_dump(data))
    trace, report = tmp_path / "t.jsonl", tmp_path / "report.json"
    assert main(["escalate", "--config", str(cfg), "--input", str(tmp_path / "val.en"), "--output",
                 str(tmp_path / "out.de"), "--trace", str(trace), "--report", str(report)]) == 0
    rep = json.loads(report.read_text())
    assert rep["within_budget"] and rep["budget_corpus"] == summary["pick"]["budget"]
    assert main(["explain", str(trace), "--id", "0"]) == 0
    assert "step 0: draft" in capsys.readouterr().out
    assert main(["report", "--trace", str(trace), "--ref", str(tmp_path / "val.de"), "--pair", "en-de",
                 "--test-set", "val"]) == 0  # the fix/harm report reads escalation traces too
    summary = json.loads(capsys.readouterr().out)
    assert set(summary["behaviour"]["tool_calls"]) <= set(RUNGS) and summary["changes"]["n"] == len(sources)
    assert summary["cost"]["total"]["flops"] == pytest.approx(rep["spent_flops"], rel=1e-3)
    assert main(["curve", "--config", str(cfg), "--src", str(tmp_path / "test.en"), "--ref", "x", "--out", "y"]) == 2
    assert "never on a test set" in capsys.readouterr().err
