"""agents on the toy task: lexicon, critic signals, constrained decoding, the repair loop, traces,
explain, determinism, resume, tuning, reports, CLI errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from agents import critic as C
from agents.__main__ import main
from agents.config import AgentConfig, agent_hash, load_agent_config
from agents.critic import Critic, CriticConfig, judge
from agents.errors import AgentInputError
from agents.lexicon import Lexicon, LexiconConfig, build_or_load, train_lexicon, words
from agents.loop import run_agent
from agents.report import agent_records, change_rates, cost_summary
from agents.run import build_agent, correct
from agents.tools import ConstrainedConfig, Constraints, constrained_decode, constraints_from_evidence
from agents.trace import read_trace, render
from agents.tune import candidate_thresholds, tune
from core_seq2seq.config import ConfigError, from_dict
from core_seq2seq.data import read_parallel_files
from core_seq2seq.toy import NOUNS, toy_corpus
from core_seq2seq.translator import DecodeSettings
from evals.records import read_records, write_records
from inference_compute.tune import AGENT_GRID

SOURCES, REFS = toy_corpus(40, seed=7)  # sentences the toy models never trained on


@pytest.fixture(scope="module")
def lexicon(toy_task) -> Lexicon:
    raw = Path(toy_task) / "task1/raw"
    corpus, _ = read_parallel_files(raw / "train.en.gz", raw / "train.de.gz", "en", "de")
    return train_lexicon(corpus.src, corpus.tgt, "en", "de")


def agent_cfg(**sections) -> AgentConfig:
    return from_dict(AgentConfig, sections)


@pytest.fixture(scope="module")
def clean(toy_en_de):
    """(source, reference) pairs the forward model's beam-5 output gets exactly right."""
    hyps = toy_en_de.translate(SOURCES, DecodeSettings(beam_size=5))
    return [(s, r) for s, r, h in zip(SOURCES, REFS, hyps) if h[0].text == r]


# ---- planting errors -----------------------------------------------------------------------------

def plant_repeat(src: str, ref: str) -> str:
    ws = ref[:-1].split()
    return " ".join(ws + ws[-2:]) + "."


def plant_drop(src: str, ref: str) -> str:
    ws = ref[:-1].split()
    return " ".join(ws[:-1]) + "."


def plant_copy(src: str, ref: str) -> str | None:
    for en in words(src):
        if en in NOUNS and NOUNS[en][0] in ref:
            return ref.replace(NOUNS[en][0], en, 1)
    return None


PLANTS = {"repeat": (plant_repeat, "repeated_ngrams"), "drop": (plant_drop, "uncovered_source"),
          "copy": (plant_copy, "copied_source")}


def planted(clean_pairs, kind: str, n: int = 4) -> list[tuple[str, str, str]]:
    fn = PLANTS[kind][0]
    out = [(s, r, fn(s, r)) for s, r in clean_pairs]
    return [x for x in out if x[2] is not None and x[2] != x[1]][:n]


# ---- lexicon -------------------------------------------------------------------------------------

def test_lexicon_learns_the_toy_dictionary_and_round_trips(lexicon, tmp_path):
    for en, de in [("dog", "hund"), ("cat", "katze"), ("sees", "sieht"), ("today", "heute"), ("girl", "mädchen")]:
        assert lexicon.best(en).word == de, en
        assert lexicon.best(en).strength > 0.8
    assert {t.word for t in lexicon.translations("the")} == {"der", "die", "das"}
    assert lexicon.surface_form("hund") == "Hund" and lexicon.surface_form("der") == "der"
    path = tmp_path / "lex.json"
    lexicon.save(path)
    again = Lexicon.load(path)
    assert again.entries == lexicon.entries and again.surface == lexicon.surface
    assert json.loads(path.read_text())["config"]["iterations"] == 5  # saved with the config that built it


def test_build_or_load_refuses_a_lexicon_of_another_pair(lexicon, tmp_path):
    path = tmp_path / "lex.json"
    lexicon.save(path)
    with pytest.raises(ConfigError, match="en->de"):
        build_or_load(LexiconConfig(path=str(path)), "de", "en")


# ---- critic: pure signals -------------------------------------------------------------------------

@pytest.mark.parametrize("src, hyp, signal, value, evidence", [
    ("The dog sees the cat.", "Der Hund sieht die Katze die Katze.", "repeated_ngrams", 1, "die Katze"),
    ("The dog sees the cat.", "Der Hund Hund sieht die Katze.", "repeated_ngrams", 1, "Hund Hund"),
    ("The big dog sees the cat.", "Der Hund sieht die Katze.", "uncovered_source", 1, "big"),
    ("The dog sees the cat.", "Der Hund sieht die.", "uncovered_source", 1, "cat"),
    ("The dog sees the cat.", "Der Hund sieht die cat.", "copied_source", 1, "cat"),
    ("The dog sees the cat.", "Der Hund sieht die Katze.", "repeated_ngrams", 0, None),
    ("The dog sees the cat.", "Der Hund sieht die Katze.", "uncovered_source", 0, None),
    ("The dog sees the cat.", "Der Hund sieht die Katze.", "copied_source", 0, None),
])
def test_word_signals(lexicon, src, hyp, signal, value, evidence):
    fn = {"repeated_ngrams": lambda: C.repeated_ngrams(src, hyp),
          "uncovered_source": lambda: C.uncovered_source(src, hyp, lexicon),
          "copied_source": lambda: C.copied_source(src, hyp, lexicon)}[signal]
    found = fn()
    assert found.value == value
    if evidence:
        assert evidence in json.dumps(found.evidence, ensure_ascii=False)


def test_a_repeat_the_source_also_has_is_not_flagged():
    src = "A man in a red shirt and a man in a blue shirt."
    hyp = "Ein Mann in einem roten Hemd und ein Mann in einem blauen Hemd."
    assert C.repeated_ngrams(src, hyp).value == 0


@pytest.mark.parametrize("kind", sorted(PLANTS))
def test_critic_flags_planted_errors_and_passes_correct_translations(toy_en_de, toy_de_en, lexicon, clean, kind):
    critic = Critic(toy_en_de, toy_de_en, lexicon, CriticConfig())
    pairs = planted(clean, kind)
    assert len(pairs) >= 3
    good = critic.measure([s for s, _ in clean], [r for _, r in clean])
    bad = critic.measure([s for s, _, _ in pairs], [p for _, _, p in pairs])
    assert all(critic.judge(m) == [] for m in good), [critic.judge(m) for m in good]
    assert all(PLANTS[kind][1] in critic.judge(m) for m in bad)
    if kind != "repeat":  # the reverse model explains a dropped or copied word worse than the right one
        by_src = {s: m for (s, _), m in zip(clean, good)}
        for (s, _, _), m in zip(pairs, bad):
            assert m.rev_norm < by_src[s].rev_norm


def test_judge_directions():
    m = C.Measurement({"round_trip": 40.0, "repeated_ngrams": 2.0, "low_confidence": None}, {}, -0.5, 1, -0.3)
    assert judge(m, {"round_trip": 50.0, "repeated_ngrams": 0.0, "low_confidence": -3.0}) == ["round_trip", "repeated_ngrams"]
    assert judge(m, {"round_trip": 30.0, "repeated_ngrams": None}) == []


def _m(rev: float | None, uncovered: float | None = None) -> C.Measurement:
    return C.Measurement({} if uncovered is None else {"uncovered_source": uncovered}, {}, -0.5, 5, rev)


@pytest.mark.parametrize("new, current, selection, vetoed_by", [
    (_m(-1.3), _m(-1.0), {"max_reverse_drop": 0.25}, "reverse score"),  # adequacy lost beyond the margin
    (_m(-1.2), _m(-1.0), {"max_reverse_drop": 0.25}, None),  # within the margin
    (_m(-0.5), _m(-1.0), {"max_reverse_drop": 0.0}, None),  # the reverse model prefers the proposal
    (_m(-9.0), _m(-1.0), {}, None),  # the defaults veto nothing
    (_m(None), _m(-1.0), {"max_reverse_drop": 0.0}, None),  # no reverse model: no veto
    (_m(-1.0, 2.0), _m(-1.0, 1.0), {"max_uncovered_rise": 0.0}, "uncovered source words"),  # a source word lost
    (_m(-1.0, 1.0), _m(-1.0, 1.0), {"max_uncovered_rise": 0.0}, None),
    (_m(-1.0, 3.0), _m(-1.0, 1.0), {"max_uncovered_rise": 2.0}, None),
    (_m(-1.0), _m(-1.0), {"max_uncovered_rise": 0.0}, None),  # coverage not measured: no veto
])
def test_veto_rejects_what_the_score_would_keep(new, current, selection, vetoed_by):
    from agents.policy import SelectionConfig, veto

    why = veto(new, current, SelectionConfig(**selection))
    assert (why is None) if vetoed_by is None else (vetoed_by in why)


# ---- constrained decoding --------------------------------------------------------------------------

@pytest.mark.parametrize("require, ban, present, absent", [
    ([["rote"]], [], ["rote"], []),  # a word the model would not write: the bonus makes it
    ([], [("Katze", 0)], [], ["Katze"]),  # a banned word never appears
    ([], [("die Katze", 1)], ["Katze"], []),  # a second occurrence is banned, the first is not
])
def test_constrained_decoding_requires_and_bans(toy_en_de, require, ban, present, absent):
    tok = toy_en_de.tokenizer
    ids = lambda t: tok.backend_tokenizer.encode(t, add_special_tokens=False).ids  # noqa: E731
    c = Constraints(require_words=require, require=[[ids(w) for w in alts] for alts in require],
                    ban_text=[b for b, _ in ban], ban=[(ids(b), n) for b, n in ban])
    out = constrained_decode(toy_en_de, ["The dog sees the cat."], [c], ConstrainedConfig(bonus=8.0))[0]
    text = out[0].text
    assert all(p.lower() in words(text) for p in present), text
    assert all(a not in text for a in absent), text
    # The reported log-prob is the model's own, not the bonus-inflated search total.
    assert out[0].logprob == pytest.approx(toy_en_de.score(["The dog sees the cat."], [text])[0][0], abs=1e-4)


def test_batched_constrained_decoding_equals_one_sentence_at_a_time(toy_en_de):
    # Sentences of different lengths finish at different steps: rows are dropped from the batch, and
    # each remaining row must still get its own sentence's constraints.
    tok = toy_en_de.tokenizer
    evidence = [{"uncovered_source": [{"word": "red", "translations": ["rote"]}]},
                {"copied_source": [{"word": "cat", "translations": ["Katze"]}]},
                {"repeated_ngrams": [{"ngram": "der Hund", "allowed": 0}]},
                {"uncovered_source": [{"word": "today", "translations": ["heute"]}]}]
    sources = ["The dog sees the cat.", "The cat sees a small old bird today.", "The dog likes the ball.", "A boy sees a car."]
    cs = [constraints_from_evidence(e, tok) for e in evidence]
    cfg = ConstrainedConfig(bonus=8.0)
    together = constrained_decode(toy_en_de, sources, cs, cfg)
    alone = [constrained_decode(toy_en_de, [s], [c], cfg)[0] for s, c in zip(sources, cs)]
    assert [[x.text for x in cands] for cands in together] == [[x.text for x in cands] for cands in alone]
    assert [[round(x.logprob, 4) for x in cands] for cands in together] == [[round(x.logprob, 4) for x in cands] for cands in alone]
    assert "rote" in together[0][0].text and "cat" not in together[1][0].text and "heute" in together[3][0].text


def test_constraints_from_evidence(toy_en_de):
    c = constraints_from_evidence({"copied_source": [{"word": "cat", "translations": ["Katze"]}],
                                   "repeated_ngrams": [{"ngram": "die Katze", "allowed": 1}]}, toy_en_de.tokenizer)
    assert c.require_words == [["Katze"]]
    assert set(c.ban_text) == {"die Katze", "cat", "Cat"}


# ---- the loop ---------------------------------------------------------------------------------------

BUDGET = 3


def test_the_loop_repairs_planted_errors_within_the_budget_and_traces_every_step(
        toy_en_de, toy_de_en, lexicon, clean, tmp_path, monkeypatch):
    cases = [x for kind in sorted(PLANTS) for x in planted(clean, kind, 3)]
    untouched = clean[-4:]
    sources = [s for s, _, _ in cases] + [s for s, _ in untouched]
    drafts = [p for _, _, p in cases] + [r for _, r in untouched]
    refs = [r for _, r, _ in cases] + [r for _, r in untouched]
    agent = build_agent(agent_cfg(policy={"budget": BUDGET}, run={"chunk_size": 5}), toy_en_de, toy_de_en, lexicon)
    calls: list[int] = []  # every proposal the toolbox makes must show up as a trace step
    run = agent.toolbox.run
    monkeypatch.setattr(agent.toolbox, "run", lambda a, states, step: calls.extend(s.id for s in states) or run(a, states, step))
    trace = tmp_path / "trace.jsonl"
    finals, records = correct(agent, sources, drafts, str(trace))
    assert finals == refs
    on_disk = read_trace(trace)
    assert [r["id"] for r in on_disk] == list(range(len(sources)))
    for r in on_disk:
        assert r["steps"][0]["action"] == "draft" and r["steps"][0]["candidate"] == r["draft"]
        assert 1 <= r["decision"]["tool_steps"] <= BUDGET if r["id"] < len(cases) else r["decision"]["tool_steps"] == 0
        assert len(r["steps"]) == 1 + calls.count(r["id"])
        assert r["decision"]["reason"] == "critic passed"
        for st in r["steps"]:
            assert {"action", "candidate", "cost", "kept"} <= set(st)
        kept = [st for st in r["steps"] if st["kept"]]
        assert kept[-1]["candidate"] == r["final"]
    text = render(on_disk[0])
    assert "step 1: constrained" in text and on_disk[0]["final"] in text


def test_deterministic_under_a_seed(toy_en_de, toy_de_en, lexicon, clean):
    # Route every flag through sampling so that the seed matters.
    actions = {s: ["sample_rerank", "wider_beam"] for s in C.SIGNALS}
    pairs = planted(clean, "drop", 4)
    sources, drafts = [s for s, _, _ in pairs], [p for _, _, p in pairs]

    def run(seed):
        agent = build_agent(agent_cfg(policy={"seed": seed, "actions": actions}), toy_en_de, toy_de_en, lexicon)
        _, recs = correct(agent, sources, drafts)
        return [json.dumps([{k: v for k, v in st.items() if k != "cost"} for st in r["steps"]]) for r in recs]

    assert run(5) == run(5)
    assert any("sample_rerank" in r for r in run(5))


def test_resume_skips_traced_sentences_and_refuses_another_config(toy_en_de, toy_de_en, lexicon, clean, tmp_path):
    pairs = planted(clean, "drop", 4)
    sources, drafts = [s for s, _, _ in pairs], [p for _, _, p in pairs]
    cfg = agent_cfg(run={"chunk_size": 2})
    trace = tmp_path / "t.jsonl"
    full, _ = correct(build_agent(cfg, toy_en_de, toy_de_en, lexicon), sources, drafts, str(trace))
    lines = trace.read_text().splitlines()
    trace.write_text("\n".join(lines[:2]) + "\n")  # as if the run died after its first chunk
    agent = build_agent(cfg, toy_en_de, toy_de_en, lexicon)
    seen = []
    measure = agent.critic.measure
    agent.critic.measure = lambda s, h, *drafts: seen.extend(s) or measure(s, h, *drafts)
    again, _ = correct(agent, sources, drafts, str(trace))
    assert again == full
    assert not set(seen) & set(sources[:2])  # the first chunk was not redone
    other = build_agent(agent_cfg(run={"chunk_size": 2}, policy={"budget": 1}), toy_en_de, toy_de_en, lexicon)
    with pytest.raises(AgentInputError, match="t.jsonl:1: traced under another config"):
        correct(other, sources, drafts, str(trace))


def test_mbr_tool_picks_from_the_pool(toy_en_de, toy_de_en, lexicon, clean):
    pytest.importorskip("inference_compute.mbr")
    actions = {s: ["mbr"] for s in C.SIGNALS}
    agent = build_agent(agent_cfg(policy={"actions": actions}, draft={"decode": {"nbest": 5}}), toy_en_de, toy_de_en,
                        lexicon)
    assert "mbr" in agent.toolbox.available
    s, r, bad = planted(clean, "repeat", 1)[0]
    pool = [[(bad, -9.0, 12)] + [(c.text, c.logprob, c.length) for c in
                                 toy_en_de.translate([s], DecodeSettings(beam_size=5, nbest=5))[0]]]
    states = run_agent([0], [s], pool, agent.critic, agent.toolbox, agent.policy, agent.cfg.selection, 2)
    assert states[0].steps[1]["action"] == "mbr" and states[0].current == r


# ---- tuning -----------------------------------------------------------------------------------------

def test_candidate_thresholds_follow_the_bad_side():
    vals = [float(v) for v in range(101)]
    assert candidate_thresholds(vals, "round_trip", [0.1])[1] == 10.0  # low is bad: flag the lowest 10%
    assert candidate_thresholds(vals, "repeated_ngrams", [0.1])[1] == 90.0  # high is bad
    assert candidate_thresholds([None], "round_trip", [0.1]) == [None]


def test_tuning_on_val_with_planted_drafts_gains_and_respects_the_harm_limit(
        toy_en_de, toy_de_en, lexicon, clean, tmp_path):
    pairs = [x for kind in sorted(PLANTS) for x in planted(clean, kind, 3)]
    sources = [s for s, _, _ in pairs] + [s for s, _ in clean[:9]]
    drafts = [p for _, _, p in pairs] + [r for _, r in clean[:9]]
    refs = [r for _, r, _ in pairs] + [r for _, r in clean[:9]]
    cfg = agent_cfg(critic={"thresholds": {k: None for k in C.SIGNALS}},  # start from an agent that does nothing
                    tune={"quantiles": [0.1, 0.35], "coordinate_rounds": 1,
                          "grid": {"max_score_drop": [1.0], "min_score_gain": [0.0]}})
    agent = build_agent(cfg, toy_en_de, toy_de_en, lexicon)
    result = tune(agent, sources, refs, cfg.tune, drafts)
    assert result["val"]["tuned"] > result["val"]["draft"]
    assert result["val"]["harmed"] <= 0.5 * result["val"]["fixed"]
    assert any(v is not None for v in result["thresholds"].values())
    path = tmp_path / "tuned.json"
    path.write_text(json.dumps(result))
    yaml_path = tmp_path / "agent.yaml"
    yaml_path.write_text(yaml.safe_dump({"tuned": str(path)}))
    loaded = load_agent_config(yaml_path)
    assert loaded.critic.thresholds == {**loaded.critic.thresholds, **result["thresholds"]}


def test_tuning_from_a_harmful_start_falls_back_to_switching_signals_on_one_by_one(
        toy_en_de, toy_de_en, lexicon, clean, tmp_path):
    # Every draft flagged (length_ratio 0) and any revision accepted. Some references agree with a
    # draft the model disagrees with (a word dropped from both), so rewriting those drafts harms them:
    # the start breaks the harm criterion. Tuning must not stay stuck there.
    pairs = [x for kind in sorted(PLANTS) for x in planted(clean[:9], kind, 3)]
    disputed = planted(clean[9:], "drop", 4)
    assert pairs and disputed
    sources = [s for s, _, _ in pairs] + [s for s, _, _ in disputed]
    drafts = [p for _, _, p in pairs] + [p for _, _, p in disputed]
    refs = [r for _, r, _ in pairs] + [p for _, _, p in disputed]
    cfg = agent_cfg(critic={"thresholds": {**{k: None for k in C.SIGNALS}, "length_ratio": 0.0}},
                    selection={"max_score_drop": 1e9, "min_score_gain": 0.0},
                    tune={"quantiles": [0.1, 0.35], "coordinate_rounds": 2, "max_harm_to_fix": 0.0,
                          "grid": {"max_score_drop": [1e9, 0.0], "min_score_gain": [0.0, 0.1]}})
    agent = build_agent(cfg, toy_en_de, toy_de_en, lexicon)
    result = tune(agent, sources, refs, cfg.tune, drafts)
    start, = [h for h in result["history"] if h["what"] == "start"]
    assert start["harmed"] > 0  # the configured start is inadmissible under max_harm_to_fix 0
    assert any(h["what"] == "all signals off" for h in result["history"])
    assert result["val"]["admissible"] and result["val"]["harmed"] == 0
    assert result["val"]["tuned"] > result["val"]["draft"]


def test_the_agent_tune_section_is_the_shared_tuner_config_and_old_keys_name_their_new_ones(tmp_path):
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump({"tune": {"passes": 2}}))
    with pytest.raises(ConfigError, match=r"agent.yaml: tune.passes: renamed tune.coordinate_rounds"):
        load_agent_config(path)
    path.write_text(yaml.safe_dump({"tune": {"grid": {"min_score_gain": [0.0]}}}))
    tc = load_agent_config(path).tune
    assert tc.coordinate_rounds == 2  # the agent's default passes (each trial reruns the loop)
    assert tc.grid["min_score_gain"] == [0.0] and tc.grid["max_score_drop"] == AGENT_GRID["max_score_drop"]


# ---- report -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("drafts, finals, refs, fixed, harmed, unchanged", [
    (["a b c"], ["a b c"], ["a b c"], 0, 0, 1),
    (["a b x"], ["a b c"], ["a b c"], 1, 0, 0),
    (["a b c"], ["a b x"], ["a b c"], 0, 1, 0),
    (["Der Hund", "die Katze", "x"], ["Der Hund", "die Katz", "y"], ["Der Hund", "die Katze", "z"], 0, 1, 2),
])
def test_change_rates(drafts, finals, refs, fixed, harmed, unchanged):
    r = change_rates(drafts, finals, refs)
    assert (r["fixed"], r["harmed"], r["unchanged"]) == (fixed, harmed, unchanged)
    assert r["fix_rate"] == fixed / len(refs)


def test_report_writes_a_valid_agent_record(toy_en_de, toy_de_en, lexicon, clean, tmp_path):
    pairs = planted(clean, "drop", 4) + planted(clean, "copy", 4)
    sources, drafts, refs = [s for s, _, _ in pairs], [p for _, _, p in pairs], [r for _, r, _ in pairs]
    agent = build_agent(agent_cfg(draft={"forward_calls": 80, "decode_seconds": 0.5}), toy_en_de, toy_de_en, lexicon)
    finals, recs = correct(agent, sources, drafts)
    cost = cost_summary(recs)
    assert cost["draft"]["forward_calls"] == pytest.approx(80)
    assert cost["multiple_forward_calls"] > 1
    hyp = tmp_path / "final.de"
    hyp.write_text("\n".join(finals) + "\n")
    out = agent_records(recs, refs, pair="en-de", test_set="toy", system="agent", draft_system="draft",
                        final_hyp_path=str(hyp), draft_hyp_path=str(hyp), draft_stage="beam", n_samples=200)
    write_records(tmp_path / "r.jsonl", out)
    draft_rec, agent_rec = read_records(tmp_path / "r.jsonl")
    assert agent_rec.stage == "agent" and draft_rec.stage == "beam"
    assert agent_rec.bleu > draft_rec.bleu and agent_rec.p_vs_prev < 0.05
    assert agent_rec.extra["changes"]["fixed"] == len(pairs)
    assert agent_rec.compute["forward_calls"] == round(cost["total"]["forward_calls"])


# ---- CLI ----------------------------------------------------------------------------------------------

@pytest.fixture()
def cli_config(tmp_path, toy_models_dir, toy_en_de, toy_de_en, toy_task):
    raw = Path(toy_task) / "task1/raw"
    data = yaml.safe_load(Path("configs/agent_toy.yaml").read_text())
    data["models"].update(forward=str(toy_models_dir / "en_de/best"), reverse=str(toy_models_dir / "de_en/best"))
    data["lexicon"].update(path=str(tmp_path / "lex.json"), src_path=str(raw / "train.en.gz"),
                           tgt_path=str(raw / "train.de.gz"))
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_cli_correct_and_explain(cli_config, tmp_path, capsys, clean):
    (s, r, bad), = planted(clean, "copy", 1)
    src, dr, trace = tmp_path / "src.en", tmp_path / "draft.de", tmp_path / "trace.jsonl"
    src.write_text(s + "\n")
    dr.write_text(bad + "\n")
    assert main(["correct", "--config", str(cli_config), "--input", str(src), "--drafts", str(dr),
                 "--trace", str(trace)]) == 0
    assert capsys.readouterr().out == r + "\n"
    assert main(["explain", str(trace), "--id", "0"]) == 0
    out = capsys.readouterr().out
    assert "sentence 0" in out and "copied_source" in out and f"final  : {r}" in out


def test_example_configs_load_and_document_every_key():
    paths = sorted(Path("configs").glob("agent_*.yaml"))
    assert len(paths) >= 3
    for path in paths:
        assert agent_hash(load_agent_config(path))
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            body = line.split("#", 1)[0].strip()
            if body and not body.endswith(":"):  # a key with a value (section headers need no comment)
                assert "#" in line, f"{path}:{number}: key without a comment: {line}"


@pytest.mark.parametrize("setup, args, message", [
    (lambda d: (d / "in.en").write_bytes(b"The dog sees the cat.\n\xff\n"), ["--input", "{d}/in.en"], "in.en:2: invalid UTF-8"),
    (lambda d: (d / "in.en").write_text("The dog sees the cat.\n\nA cat.\n"), ["--input", "{d}/in.en"], "in.en:2: empty line"),
    (lambda d: ((d / "in.en").write_text("A.\nB.\n"), (d / "dr.de").write_text("A.\n")),
     ["--input", "{d}/in.en", "--drafts", "{d}/dr.de"], "in.en:2: line counts differ"),
])
def test_cli_bad_input_names_file_and_line(cli_config, tmp_path, capsys, setup, args, message):
    setup(tmp_path)
    code = main(["correct", "--config", str(cli_config)] + [a.format(d=tmp_path) for a in args])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and message in err, err


def test_cli_bad_trace_and_config_name_file_and_line(tmp_path, capsys):
    trace = tmp_path / "trace.jsonl"
    trace.write_text('{"id": 0, "source": "a", "draft": "b", "final": "b", "steps": [{}], "decision": {}, "cost": {}}\n{oops\n')
    assert main(["explain", str(trace), "--id", "0"]) == 2
    assert "trace.jsonl:2: not valid JSON" in capsys.readouterr().err
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("critic:\n  treshold: {}\n")
    assert main(["correct", "--config", str(cfg), "--input", str(trace)]) == 2
    assert "bad.yaml: critic.treshold: unknown key; did you mean 'thresholds'" in capsys.readouterr().err


# ---- the learned refiner ------------------------------------------------------------------------

class SourceOnlyRefiner:
    """A stand-in refiner: reads ``source ||| draft`` but translates the source alone with the toy
    model, so its rewrite of any draft is the forward model's beam output (right on ``clean``).
    Its work is counted on the toy model's counter; it has no FLOP model and no token log-probs."""

    members = ()

    def __init__(self, translator):
        self.translator, self.counter = translator, translator.counter
        self.src_lang, self.tgt_lang, self.tokenizer = translator.src_lang, translator.tgt_lang, translator.tokenizer
        self.models = translator.models

    def flops(self, counts):
        return None

    def token_logprobs(self, texts, targets, batch_size=64):
        return None

    def _src(self, texts):
        from agents.refiner import SEPARATOR

        assert all(SEPARATOR in t for t in texts)  # the agent hands it the refiner's input format
        return [t.split(SEPARATOR)[0] for t in texts]

    def translate(self, texts, settings):
        return self.translator.translate(self._src(texts), settings)

    def score(self, texts, targets):
        return self.translator.score(self._src(texts), targets)


def test_refiner_margin_flags_planted_errors_and_refine_repairs_them(toy_en_de, toy_de_en, lexicon, clean, tmp_path):
    cases = [x for kind in sorted(PLANTS) for x in planted(clean, kind, 2)]
    untouched = clean[-3:]
    sources = [s for s, _, _ in cases] + [s for s, _ in untouched]
    drafts = [p for _, _, p in cases] + [r for _, r in untouched]
    refs = [r for _, r, _ in cases] + [r for _, r in untouched]
    cfg = agent_cfg(critic={"signals": ["refiner_margin"], "thresholds": {"refiner_margin": 0.01}},
                    policy={"budget": 2}, selection={"refiner_weight": 1.0})
    agent = build_agent(cfg, toy_en_de, toy_de_en, lexicon, refiner=SourceOnlyRefiner(toy_en_de))
    finals, records = correct(agent, sources, drafts, str(tmp_path / "trace.jsonl"))
    assert finals == refs
    for r in records:
        first = r["steps"][0]
        if r["id"] < len(cases):  # flagged, rewritten by the refiner in one step, then passed
            assert first["flags"] == ["refiner_margin"] and first["values"]["refiner_margin"] > 0.01
            assert r["steps"][1]["action"] == "refine" and r["steps"][1]["kept"] and r["decision"]["tool_steps"] == 1
            assert r["steps"][1]["values"]["refiner_margin"] == pytest.approx(0.0, abs=1e-4)
        else:  # the draft is the refiner's own choice: nothing to do
            assert first["flags"] == [] and r["decision"]["tool_steps"] == 0
        assert "ref_norm" in first


def test_a_vetoed_revision_is_traced_and_not_kept(toy_en_de, toy_de_en, lexicon, clean, tmp_path):
    cases = planted(clean, "drop", 2)
    cfg = agent_cfg(critic={"signals": ["refiner_margin"], "thresholds": {"refiner_margin": 0.01}},
                    policy={"budget": 1}, selection={"refiner_weight": 1.0, "max_reverse_drop": -1.0e9})
    agent = build_agent(cfg, toy_en_de, toy_de_en, lexicon, refiner=SourceOnlyRefiner(toy_en_de))
    finals, records = correct(agent, [s for s, _, _ in cases], [p for _, _, p in cases], str(tmp_path / "t.jsonl"))
    assert finals == [p for _, _, p in cases]  # the repairs were vetoed (a margin no proposal can meet)
    for r in records:
        assert r["steps"][1]["action"] == "refine" and not r["steps"][1]["kept"]
        assert "veto: reverse score" in r["steps"][1]["why"]


def test_refiner_margin_needs_a_refiner(toy_en_de, toy_de_en, lexicon):
    with pytest.raises(ValueError, match="models.refiner"):
        build_agent(agent_cfg(critic={"signals": ["refiner_margin"]}), toy_en_de, toy_de_en, lexicon)


def test_refiner_corpus_files(tmp_path, capsys):
    from agents.refiner import SEPARATOR, refiner_source

    (tmp_path / "s.en").write_text("A dog.\nA cat.\n")
    (tmp_path / "r.de").write_text("Ein Hund.\nEine Katze.\n")
    (tmp_path / "d1.de").write_text("Ein Hund Hund.\nEine Katze.\n")
    (tmp_path / "d2.de").write_text("Hund.\nKatze.\n")
    out = [str(tmp_path / "o.src"), str(tmp_path / "o.tgt")]
    args = ["refiner-data", "--src", str(tmp_path / "s.en"), "--ref", str(tmp_path / "r.de"), "--drafts",
            str(tmp_path / "d1.de"), str(tmp_path / "d2.de"), "--out-src", out[0], "--out-tgt", out[1]]
    assert main(args) == 0
    src, tgt = Path(out[0]).read_text().splitlines(), Path(out[1]).read_text().splitlines()
    assert src == [refiner_source("A dog.", "Ein Hund Hund."), refiner_source("A cat.", "Eine Katze."),
                   refiner_source("A dog.", "Hund."), refiner_source("A cat.", "Katze.")]
    assert tgt == ["Ein Hund.", "Eine Katze."] * 2 and SEPARATOR in src[0]
    (tmp_path / "d2.de").write_text("Hund.\n")
    assert main(args) == 2 and "d2.de" in capsys.readouterr().err
    (tmp_path / "d2.de").write_text("Hund.\nKatze ||| Katze.\n")
    assert main(args) == 2 and "d2.de:2: contains the refiner separator" in capsys.readouterr().err


def test_tuning_switches_the_refiner_on_and_tries_its_weight(toy_en_de, toy_de_en, lexicon, clean):
    pairs = [x for kind in sorted(PLANTS) for x in planted(clean, kind, 2)]
    sources = [s for s, _, _ in pairs] + [s for s, _ in clean[:6]]
    drafts = [p for _, _, p in pairs] + [r for _, r in clean[:6]]
    refs = [r for _, r, _ in pairs] + [r for _, r in clean[:6]]
    cfg = agent_cfg(critic={"signals": ["refiner_margin"], "thresholds": {"refiner_margin": None}},
                    policy={"budget": 1},
                    tune={"quantiles": [0.35, 0.5], "coordinate_rounds": 1,
                          "grid": {"max_score_drop": [1.0], "min_score_gain": [0.0], "refiner_weight": [0.0, 1.0]}})
    agent = build_agent(cfg, toy_en_de, toy_de_en, lexicon, refiner=SourceOnlyRefiner(toy_en_de))
    result = tune(agent, sources, refs, cfg.tune, drafts)
    assert result["thresholds"]["refiner_margin"] is not None  # switched on: it repairs the planted drafts
    assert result["val"]["tuned"] > result["val"]["draft"] and result["val"]["harmed"] == 0
    assert any(h["what"].startswith("refiner_weight=") for h in result["history"])


def test_refiner_view_decodes_each_source_and_draft_once(toy_en_de, clean):
    from agents.refiner import RefinerView

    fake = SourceOnlyRefiner(toy_en_de)
    decoded: list[str] = []
    translate = fake.translate
    fake.translate = lambda texts, settings: decoded.extend(texts) or translate(texts, settings)
    view = RefinerView(fake, DecodeSettings(beam_size=3, nbest=3))
    sources, drafts = [s for s, _ in clean[:3]], [r for _, r in clean[:3]]
    first = view.best_norm(sources, drafts)
    again = view.best_norm(sources + sources[:1], drafts + drafts[:1])
    assert len(view.nbest(sources, drafts)) == 3 and len(decoded) == 3  # one decode per (source, draft)
    assert again == first + first[:1]
    assert first == pytest.approx(view.score(sources, drafts, [cs[0].text for cs in view.nbest(sources, drafts)]))


# ---- the learned acceptance gate ---------------------------------------------------------------

@pytest.mark.parametrize("scores, labels, expected", [
    ([0.9, 0.8, 0.2, 0.1], [1, 1, 0, 0], 1.0),
    ([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0], 0.0),
    ([0.5, 0.5, 0.5, 0.5], [1, 0, 1, 0], 0.5),  # ties count half
    ([0.9, 0.3, 0.5, 0.1], [1, 0, 1, 0], 1.0),
    ([0.9, 0.8], [1, 1], None),  # one class: undefined
])
def test_gate_auc(scores, labels, expected):
    from agents.gate import auc

    assert auc(scores, labels) == expected


def _step(step: int, candidate: str, rev: float, kept: bool) -> dict:
    return {"step": step, "action": "refine", "candidate": candidate, "values": {"refiner_margin": 0.1},
            "fwd_norm": -0.5, "fwd_len": len(candidate.split()) + 1, "rev_norm": rev, "kept": kept}


def test_gate_examples_follow_the_current_hypothesis_and_fit_a_separable_signal(tmp_path, capsys):
    from agents.gate import FEATURES, cross_validated_auc, examples_from_trace, fit_gate, load_gate

    refs = ["ein Hund rennt im Park", "eine Katze schläft"]
    records = [
        {"id": 0, "draft": "ein Katze rennt", "steps": [_step(0, "ein Katze rennt", -1.0, True),
                                                        _step(1, "ein Hund rennt", -0.8, True),  # improves the draft
                                                        _step(2, "ein Hund", -1.4, False)]},  # worse than step 1's
        {"id": 1, "draft": "eine Katze schläft", "steps": [_step(0, "eine Katze schläft", -1.0, True),
                                                           {"step": 1, "action": "mbr", "candidate": None},
                                                           _step(2, "Katze", -1.6, False)]},
    ]
    xs, ys, ids = examples_from_trace(records, refs)
    assert ys == [1, 0, 0] and ids == [0, 0, 1]
    assert xs[1][FEATURES.index("d_rev")] == pytest.approx(-0.6)  # against step 1, the hypothesis then current
    # a separable toy: proposals improve exactly when the reverse score rises
    toy_x = [[0, d, 0, 0, 0, 0, 0, 0] for d in (-0.5, -0.3, -0.2, 0.2, 0.3, 0.6) * 5]
    toy_y = [int(x[1] > 0) for x in toy_x]
    gate = fit_gate(toy_x, toy_y, l2=0.1)
    assert gate.prob([0, 0.4, 0, 0, 0, 0, 0, 0]) > 0.9 > 0.1 > gate.prob([0, -0.4, 0, 0, 0, 0, 0, 0])
    assert cross_validated_auc(toy_x, toy_y, list(range(len(toy_y))), folds=3, l2=0.1) == 1.0
    gate.save(tmp_path / "gate.json")
    assert load_gate(str(tmp_path / "gate.json")).weights == gate.weights
    (tmp_path / "bad.json").write_text('{"names": ["x"]}')
    with pytest.raises(AgentInputError, match="bad.json: not a gate file"):
        load_gate(str(tmp_path / "bad.json"))


def test_cli_gate_fits_on_val_and_refuses_a_test_trace(tmp_path, capsys):
    refs = tmp_path / "val.de"
    refs.write_text("ein Hund rennt\neine Katze schläft\n")
    lines = []
    for i, (draft, good, bad) in enumerate([("ein Katze rennt", "ein Hund rennt", "Katze"),
                                            ("eine Hund schläft", "eine Katze schläft", "Hund")]):
        lines.append(json.dumps({"id": i, "source": "-", "draft": draft, "final": good, "steps": [
            _step(0, draft, -1.0, True), _step(1, bad, -1.5, False), _step(2, good, -0.7, True)],
            "decision": {}, "cost": {}}))
    for name in ("trace.val.jsonl", "trace.test_2016_flickr.jsonl"):
        (tmp_path / name).write_text("\n".join(lines) + "\n")
    out = tmp_path / "gate.json"
    assert main(["gate", "--trace", str(tmp_path / "trace.val.jsonl"), "--ref", str(refs), "--out", str(out),
                 "--folds", "2"]) == 0
    info = json.loads(out.read_text())["info"]
    assert info["proposals"] == 4 and info["improving"] == 2
    assert main(["gate", "--trace", str(tmp_path / "trace.test_2016_flickr.jsonl"), "--ref", str(refs),
                 "--out", str(out)]) == 2
    assert "never a test one" in capsys.readouterr().err


@pytest.mark.parametrize("bias, kept", [(-30.0, False), (30.0, True)])
def test_the_gate_vetoes_revisions_in_the_loop(toy_en_de, toy_de_en, lexicon, clean, tmp_path, bias, kept):
    from agents.gate import FEATURES, Gate

    n = len(FEATURES)
    Gate(list(FEATURES), [0.0] * n, [1.0] * n, [0.0] * n, bias, {}).save(tmp_path / "gate.json")
    cases = planted(clean, "drop", 2)
    cfg = agent_cfg(critic={"signals": ["refiner_margin"], "thresholds": {"refiner_margin": 0.01}},
                    policy={"budget": 1}, selection={"refiner_weight": 1.0, "gate": str(tmp_path / "gate.json")})
    agent = build_agent(cfg, toy_en_de, toy_de_en, lexicon, refiner=SourceOnlyRefiner(toy_en_de))
    finals, records = correct(agent, [s for s, _, _ in cases], [p for _, _, p in cases], str(tmp_path / "t.jsonl"))
    assert finals == ([r for _, r, _ in cases] if kept else [p for _, _, p in cases])
    for r in records:
        assert r["steps"][1]["kept"] == kept and (kept or "veto: gate" in r["steps"][1]["why"])


@pytest.mark.parametrize("tools, check", [
    ({"sample_rerank": {"num_samples": 4}}, lambda t: (t.sample_rerank.method, t.sample_rerank.top_p) == ("sample", 0.95)),
    ({"wider_beam": {"beam_size": 12}}, lambda t: (t.wider_beam.beam_size, t.wider_beam.nbest) == (12, 8)),
    ({"constrained": {"decode": {"batch_size": 2}}}, lambda t: (t.constrained.decode.beam_size, t.constrained.decode.batch_size) == (5, 2)),
    # A narrower beam alone: the refiner and the constrained search keep their whole beam (nbest 0: all).
    ({"refine": {"beam_size": 3}}, lambda t: (t.refine.beam_size, t.refine.n_candidates()) == (3, 3)),
    ({"constrained": {"decode": {"beam_size": 3}}}, lambda t: t.constrained.decode.n_candidates() == 3),
])
def test_tool_decode_sections_given_in_part_keep_the_tool_defaults(tools, check):
    assert check(from_dict(AgentConfig, {"tools": tools}).tools)


@pytest.mark.parametrize("tools, message", [
    ({"batch_size": 8}, "tools.batch_size: this key moved; write it as batch_size in each tool's decode keys"),
    ({"constrained": {"beam_size": 3}}, "tools.constrained.beam_size: this key moved; write it as tools.constrained.decode.beam_size"),
    ({"sample_rerank": {"method": "beam"}}, "sample_rerank.method must be sample, got 'beam'"),
    ({"wider_beam": {"nbest": 20}}, "tools.wider_beam: nbest must be between 0 (all) and beam_size=16, got 20"),
])
def test_tool_decode_errors_name_the_key(tools, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        from_dict(AgentConfig, {"tools": tools})
