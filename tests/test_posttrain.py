"""Learning from one's own outputs on the toy task: DPO and MRT steps move their objectives, distillation
from a stronger system lifts a weak model, preference pairs never have identical sides, bad input fails
clearly."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import yaml

from core_seq2seq.data import DataError
from core_seq2seq.posttrain import (PosttrainConfig, differ_beyond_punctuation, mrt_loss, posttrain,
                                    read_preference_pairs)
from core_seq2seq.toy import toy_corpus
from core_seq2seq.translator import Candidate, DecodeSettings, LSTMTranslator
from inference_compute.features import Scorers
from inference_compute.preference import RerankedTranslator, preference_pairs, preference_pairs_in_shards



def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _cand(text: str) -> Candidate:
    return Candidate(text, -1.0, 3, -0.3)


# ---- preference pairs ------------------------------------------------------------------------------

@pytest.mark.parametrize("texts, scores, expected", [
    # the reranker prefers rank 2: the beam's best (rank 0) is rejected
    (["Ein Hund.", "Der Hund.", "Der Hund läuft."], [0.1, 0.2, 0.9], ("Der Hund läuft.", "Ein Hund.", "beam_best")),
    # the pick is the beam's best: the next candidate in the reranker's order is rejected
    (["Der Hund läuft.", "Ein Hund.", "Der Hund."], [0.9, 0.1, 0.5], ("Der Hund läuft.", "Der Hund.", "next_ranked")),
    # the beam's best differs from the pick only in punctuation: skip it, take the next that really differs
    (["Der Hund läuft", "Der Hund läuft.", "Ein Hund."], [0.5, 0.9, 0.1], ("Der Hund läuft.", "Ein Hund.", "next_ranked")),
    # every alternative is the pick up to punctuation or spacing: no pair
    (["Der Hund läuft.", "Der Hund läuft !", "Der  Hund läuft"], [0.9, 0.1, 0.5], None),
    # one candidate: no pair
    (["Der Hund läuft."], [0.3], None),
])
def test_preference_pairs_chosen_rejected_and_drops(texts, scores, expected):
    pairs, dropped = preference_pairs(["src"], [[_cand(t) for t in texts]], [scores])
    if expected is None:
        assert pairs == [] and dropped["no_alternative"] == 1
        return
    (pair,) = pairs
    assert (pair["chosen"], pair["rejected"], pair["rejected_is"]) == expected
    assert differ_beyond_punctuation(pair["chosen"], pair["rejected"])


def test_preference_pairs_from_a_reranked_nbest_never_have_identical_sides(toy_en_de, toy_de_en):
    """Real n-best lists of the toy model (with many near-duplicates), ranked by a noisy-channel reranker."""
    sources, _ = toy_corpus(40, seed=21)
    reranker = RerankedTranslator(toy_en_de, nbest=6, weights={"fwd_per_token": 1.0, "rev_per_token": 1.0},
                                  scorers=Scorers(reverse=toy_de_en))
    nbest, scores = reranker.rank(sources)
    pairs, dropped = preference_pairs(sources, nbest, scores)
    assert pairs and len(pairs) + sum(dropped.values()) == len(sources)
    for p in pairs:
        assert p["chosen"] != p["rejected"] and differ_beyond_punctuation(p["chosen"], p["rejected"])
        assert scores[p["id"]][p["chosen_rank"]] >= scores[p["id"]][p["rejected_rank"]]
    # translate() puts the reranker's pick first
    first = reranker.translate(sources[:5])
    assert [c[0].text for c in first] == [nbest[i][max(range(6), key=lambda r: (scores[i][r], -r))].text for i in range(5)]


def test_preference_pairs_in_shards_resume_after_a_kill_and_match_one_pass(tmp_path):
    """Ranked 3 lines at a time, killed while ranking the third shard: the rerun ranks only the
    shards not written and gives exactly the pairs (ids included) of one unsharded pass."""
    sources = [f"source {i}" for i in range(8)]

    def rank(chunk: list[str]):
        texts = [[f"{s} a", f"{s} b", f"{s} c"] for s in chunk]  # beam order
        scores = [[0.1, 0.9 if int(s.split()[1]) % 2 else 0.0, 0.5] for s in chunk]  # odd: pick b; even: pick c
        return [[_cand(t) for t in ts] for ts in texts], scores

    calls: list[list[str]] = []

    def killed_at_third(chunk: list[str]):
        calls.append(chunk)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return rank(chunk)

    with pytest.raises(KeyboardInterrupt):
        preference_pairs_in_shards(killed_at_third, sources, tmp_path / "shards", 3, log=lambda m: None)
    calls.clear()
    pairs, dropped = preference_pairs_in_shards(killed_at_third, sources, tmp_path / "shards", 3, log=lambda m: None)
    assert calls == [sources[6:]]  # only the shard in flight was ranked again
    assert (pairs, dropped) == preference_pairs(sources, *rank(sources))
    assert [p["id"] for p in pairs] == list(range(8))
    with pytest.raises(DataError, match="made from other source lines"):
        preference_pairs_in_shards(rank, [s + "!" for s in sources], tmp_path / "shards", 3, log=lambda m: None)



@pytest.mark.parametrize("texts, scores, expected, dropped_as", [
    # an empty pick (the beam ended at once) gives no pair
    (["Der Hund.", ""], [0.1, 0.9], None, "empty_pick"),
    # an empty beam-best is never the rejected side: the next non-empty candidate below the pick is
    (["", "Der Hund läuft.", "Ein Hund."], [0.1, 0.9, 0.5], ("Der Hund läuft.", "Ein Hund.", "next_ranked"), None),
    # nothing but empty text below the pick: no pair
    (["Der Hund läuft.", "", " "], [0.9, 0.5, 0.1], None, "no_alternative"),
])
def test_preference_pairs_never_have_an_empty_side(texts, scores, expected, dropped_as):
    pairs, dropped = preference_pairs(["src"], [[_cand(t) for t in texts]], [scores])
    if expected is None:
        assert pairs == [] and dropped[dropped_as] == 1
        return
    (pair,) = pairs
    assert (pair["chosen"], pair["rejected"], pair["rejected_is"]) == expected


def test_pairs_kept_while_translating_are_the_pairs_a_ranking_gives(toy_en_de, toy_de_en, tmp_path):
    """A reranker that translates (for distillation) keeps the preference pairs of what it ranked; the
    preference data of the same lines then ranks nothing and is what ranking them gives."""
    sources, _ = toy_corpus(12, seed=5)
    reranker = RerankedTranslator(toy_en_de, nbest=4, weights={"fwd_per_token": 1.0, "rev_per_token": 1.0},
                                  scorers=Scorers(reverse=toy_de_en), keep_pairs=tmp_path / "kept")
    for first in range(0, 12, 5):  # what backtranslate does: one call per shard
        reranker.translate(sources[first:first + 5])

    def must_not_rank(chunk):
        raise AssertionError(f"ranked again: {chunk}")

    logged: list[str] = []
    reused = preference_pairs_in_shards(must_not_rank, sources[:10], tmp_path / "reused", 5, log=logged.append,
                                        ranked=[tmp_path / "kept"])
    fresh = preference_pairs_in_shards(reranker.rank, sources[:10], tmp_path / "fresh", 5, log=lambda m: None)
    assert reused == fresh and reused[0]
    assert all("taken from the ranking made for distillation" in m for m in logged) and len(logged) == 2
    with pytest.raises(AssertionError, match="ranked again"):  # a chunk the translator never saw is ranked
        preference_pairs_in_shards(must_not_rank, sources[:4], tmp_path / "other", 5, log=lambda m: None,
                                   ranked=[tmp_path / "kept"])

# ---- DPO ---------------------------------------------------------------------------------------------

def _margins(translator: LSTMTranslator, pairs: list[dict]) -> torch.Tensor:
    src = [p["src"] for p in pairs]
    good = torch.tensor([lp for lp, _ in translator.score(src, [p["chosen"] for p in pairs])])
    bad = torch.tensor([lp for lp, _ in translator.score(src, [p["rejected"] for p in pairs])])
    return good - bad


def test_dpo_steps_widen_the_preference_margin(toy_en_de, toy_models_dir, tmp_path):
    sources, targets = toy_corpus(16, seed=31)
    # rejected: a plausible but wrong translation (another sentence's target of the same length class)
    pairs = [{"src": s, "chosen": t, "rejected": targets[(i + 1) % len(targets)]} for i, (s, t) in
             enumerate(zip(sources, targets))]
    data = _write_jsonl(tmp_path / "pairs.jsonl", pairs)
    out = posttrain(PosttrainConfig(method="dpo", model=str(toy_models_dir / "en_de/best"), data=str(data),
                                    output_dir=str(tmp_path / "dpo"), max_steps=4, batch_size=8, lr=2e-3, beta=0.1,
                                    log_every_steps=1), log=lambda m: None)
    after = LSTMTranslator.load(out)
    before_margin, after_margin = _margins(toy_en_de, pairs), _margins(after, pairs)
    assert float(after_margin.mean()) > float(before_margin.mean()) + 0.5
    meta = json.loads((out / "decade_meta.json").read_text())["posttrain"]
    assert meta["method"] == "dpo" and meta["steps"] == 4 and meta["train_seconds"] > 0
    log = [json.loads(x) for x in (tmp_path / "dpo/posttrain_log.jsonl").read_text().splitlines()]
    assert [h["step"] for h in log if "loss" in h] == [1, 2, 3, 4]
    # rerunning the same config reuses the finished model
    again = posttrain(PosttrainConfig(method="dpo", model=str(toy_models_dir / "en_de/best"), data=str(data),
                                      output_dir=str(tmp_path / "dpo"), max_steps=4, batch_size=8, lr=2e-3, beta=0.1,
                                      log_every_steps=1), log=lambda m: None)
    assert again == out and json.loads((out / "decade_meta.json").read_text())["posttrain"] == meta


@pytest.mark.parametrize("method", ["cpo", "orpo"])
def test_reference_free_preference_methods_widen_the_margin(method, toy_en_de, toy_models_dir, tmp_path):
    sources, targets = toy_corpus(16, seed=33)
    pairs = [{"src": s, "chosen": t, "rejected": targets[(i + 1) % len(targets)]} for i, (s, t) in
             enumerate(zip(sources, targets))]
    out = posttrain(PosttrainConfig(method=method, model=str(toy_models_dir / "en_de/best"),
                                    data=str(_write_jsonl(tmp_path / "pairs.jsonl", pairs)),
                                    output_dir=str(tmp_path / method), max_steps=4, batch_size=8, lr=2e-3),
                    log=lambda m: None)
    assert float(_margins(LSTMTranslator.load(out), pairs).mean()) > float(_margins(toy_en_de, pairs).mean())


# ---- RL with a metric reward: minimum risk training --------------------------------------------------

def test_mrt_loss_is_the_expected_cost_under_q():
    logp = torch.tensor([0.0, -1.0, -2.0, -0.5])
    costs = torch.tensor([0.2, 0.8, 0.0, 1.0])
    groups = torch.tensor([0, 0, 0, 1])
    q0 = torch.softmax(torch.tensor([0.0, -1.0, -2.0]), 0)
    expected = ((q0 * costs[:3]).sum() + 1.0) / 2  # the second source has one sample: q = 1
    assert float(mrt_loss(logp, costs, groups, 2, 1.0)) == pytest.approx(float(expected))


def test_mrt_step_lowers_the_risk_of_the_samples(toy_models_dir):
    """One gradient step on the risk of a fixed set of samples makes cheap samples likelier: the
    same samples' risk falls."""
    from core_seq2seq import search
    from core_seq2seq.training import _pad
    from core_seq2seq.translator import target_tensors
    from evals.metrics import sentence_scores

    translator = LSTMTranslator.load(toy_models_dir / "en_de/best")
    model = copy.deepcopy(translator.models[0])
    tok = translator.tokenizer
    sources, refs = toy_corpus(8, seed=41)
    src, lengths = _pad([e.ids for e in tok.backend_tokenizer.encode_batch(sources, add_special_tokens=False)],
                        tok.pad_token_id)
    model.eval()
    with torch.no_grad():
        samples = search.sample(search.Ensemble([model]), src, lengths, translator.tag_id, tok.eos_token_id,
                                lengths * 2 + 5, 6, 1.5, generator=torch.Generator().manual_seed(0))
    rows = [h.tokens for hs in samples for h in hs]
    groups = torch.tensor([i for i, hs in enumerate(samples) for _ in hs])
    hyps = tok.batch_decode(rows, skip_special_tokens=True)
    costs = 1 - torch.tensor(sentence_scores(hyps, [refs[int(g)] for g in groups], "chrf")) / 100
    assert float(costs.std()) > 0  # the samples differ in quality, so the risk has a direction
    tgt_in, tgt_out = target_tensors(rows, translator.tag_id, tok.eos_token_id, tok.pad_token_id)

    def risk() -> torch.Tensor:
        logp = model.token_logprobs(src.index_select(0, groups), lengths.index_select(0, groups), tgt_in, tgt_out).sum(1)
        return mrt_loss(logp, costs, groups, len(sources), 0.1)

    before = risk()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    before.backward()
    optimizer.step()
    with torch.no_grad():
        after = risk()
    assert float(after) < float(before) - 1e-4


def test_mrt_run_records_cost_and_reward(toy_models_dir, tmp_path):
    sources, targets = toy_corpus(24, seed=51)
    data = tmp_path / "pairs.tsv"
    data.write_text("".join(f"{s}\t{t}\n" for s, t in zip(sources, targets)), encoding="utf-8")
    out = posttrain(PosttrainConfig(method="mrt", model=str(toy_models_dir / "en_de/best"), data=str(data),
                                    output_dir=str(tmp_path / "mrt"), max_steps=3, batch_size=8, num_samples=4,
                                    log_every_steps=1), log=lambda m: None)
    log = [json.loads(x) for x in (tmp_path / "mrt/posttrain_log.jsonl").read_text().splitlines()]
    assert [h["step"] for h in log] == [1, 2, 3]
    assert all(0 <= h["reward"] <= 100 and h["samples"] >= 8 and h["nll"] > 0 for h in log)
    meta = json.loads((out / "decade_meta.json").read_text())
    assert meta["posttrain"]["method"] == "mrt" and meta["posttrain"]["steps"] == 3
    assert (meta["src_lang"], meta["tgt_lang"]) == ("en", "de")
    LSTMTranslator.load(out).translate(["The dog sees a cat."], DecodeSettings(beam_size=2))


# ---- a killed run resumes ----------------------------------------------------------------------------

class _Killed(Exception):
    pass


def _kill_on_call(fn, call: int):
    """``fn``, except that its ``call``-th call raises, as a kill at that point would stop the run."""
    calls = {"n": 0}

    def wrapped(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call:
            raise _Killed
        return fn(*args, **kwargs)

    return wrapped


@pytest.mark.parametrize("method, kill_at", [("mrt", "step 4"), ("dpo", "step 4"), ("dpo", "writing the model")])
def test_a_killed_posttrain_resumes_to_the_model_of_an_unbroken_run(method, kill_at, toy_en_de, toy_models_dir, tmp_path,
                                                                    monkeypatch):
    """Killed during step 4 (checkpoints every 2 steps), the rerun continues from step 2 and ends with
    the same weights and log as a run that was never interrupted; killed after the last step, while
    the model is written, it resumes from step 4 and does only step 5 (no checkpoint of the last step)."""
    import trl

    import core_seq2seq.posttrain as pt

    sources, targets = toy_corpus(24, seed=61)
    if method == "mrt":
        data = tmp_path / "pairs.tsv"
        data.write_text("".join(f"{s}\t{t}\n" for s, t in zip(sources, targets)), encoding="utf-8")
    else:
        data = _write_jsonl(tmp_path / "pairs.jsonl", [{"src": s, "chosen": t, "rejected": targets[(i + 1) % 24]}
                                                       for i, (s, t) in enumerate(zip(sources, targets))])

    val_src, val_tgt = toy_corpus(30, seed=63)
    (tmp_path / "val.en").write_text("".join(x + "\n" for x in val_src), encoding="utf-8")
    (tmp_path / "val.de").write_text("".join(x + "\n" for x in val_tgt), encoding="utf-8")

    def cfg(out: str) -> PosttrainConfig:  # validated every 3 steps: the best model is kept across the kill too
        return PosttrainConfig(method=method, model=str(toy_models_dir / "en_de/best"), data=str(data),
                               output_dir=str(tmp_path / out), max_steps=5, batch_size=4, num_samples=3, lr=1e-3,
                               log_every_steps=1, checkpoint_every_steps=2, val_src=str(tmp_path / "val.en"),
                               val_tgt=str(tmp_path / "val.de"), eval_every_steps=3)

    unbroken = posttrain(cfg("unbroken"), log=lambda m: None)
    with monkeypatch.context() as m:
        if kill_at == "writing the model":
            import core_seq2seq.training

            m.setattr(core_seq2seq.training, "save_model_dir", _kill_on_call(core_seq2seq.training.save_model_dir, 1))
        elif method == "mrt":
            m.setattr(pt, "mrt_step", _kill_on_call(pt.mrt_step, 4))
        else:
            m.setattr(trl.DPOTrainer, "training_step", _kill_on_call(trl.DPOTrainer.training_step, 4))
        with pytest.raises(_Killed):
            posttrain(cfg("killed"), log=lambda m: None)
    assert not (tmp_path / "killed/model").exists() and (tmp_path / "killed/checkpoints").is_dir()
    lines: list[str] = []
    resumed = posttrain(cfg("killed"), log=lines.append)
    resumed_from = 4 if kill_at == "writing the model" else 2
    assert any(f"resuming from step {resumed_from}" in line for line in lines), lines
    if resumed_from == 2:  # progress is printed at each checkpoint
        assert any("step 4/5" in line and "checkpoint saved" in line for line in lines), lines
    assert not (tmp_path / "killed/checkpoints").exists()  # removed once the model is written
    a, b = LSTMTranslator.load(unbroken).models[0].state_dict(), LSTMTranslator.load(resumed).models[0].state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    def losses(out: str) -> list:
        return [(h["step"], h["loss"]) for h in map(json.loads, (tmp_path / out / "posttrain_log.jsonl").read_text()
                                                    .splitlines()) if "loss" in h]
    assert losses("killed") == losses("unbroken") and len(losses("unbroken")) == 5
    meta = {out: json.loads((tmp_path / out / "model/decade_meta.json").read_text())["posttrain"]["validation"]
            for out in ("killed", "unbroken")}
    assert meta["killed"] == meta["unbroken"] and sorted(meta["unbroken"]["val_bleu_by_step"]) == ["0", "3", "5"]


def test_posttrain_keeps_the_best_model_on_val(toy_en_de, toy_models_dir, tmp_path):
    """A rate that wrecks the model: every validation after the start is worse, so the start model is
    what post-training keeps (as training keeps best/); without val_src the last update's model is kept."""
    sources, targets = toy_corpus(16, seed=64)
    data = _write_jsonl(tmp_path / "pairs.jsonl", [{"src": s, "chosen": t, "rejected": targets[(i + 1) % 16]}
                                                   for i, (s, t) in enumerate(zip(sources, targets))])
    val_src, val_tgt = toy_corpus(30, seed=65)
    (tmp_path / "val.en").write_text("".join(x + "\n" for x in val_src), encoding="utf-8")
    (tmp_path / "val.de").write_text("".join(x + "\n" for x in val_tgt), encoding="utf-8")
    base = dict(method="dpo", model=str(toy_models_dir / "en_de/best"), data=str(data), max_steps=4, batch_size=8,
                lr=0.05, eval_every_steps=2)
    kept = posttrain(PosttrainConfig(**base, output_dir=str(tmp_path / "val"), val_src=str(tmp_path / "val.en"),
                                     val_tgt=str(tmp_path / "val.de")), log=lambda m: None)
    last = posttrain(PosttrainConfig(**base, output_dir=str(tmp_path / "last")), log=lambda m: None)
    selection = json.loads((kept / "decade_meta.json").read_text())["posttrain"]["validation"]
    by_step = selection["val_bleu_by_step"]
    assert sorted(by_step) == ["0", "2", "4"] and selection["best_step"] == int(max(by_step, key=lambda k: (by_step[k], -int(k))))
    assert selection["best_step"] == 0 and by_step["0"] > by_step["4"] + 5
    start = toy_en_de.models[0].state_dict()
    assert all(torch.equal(v, start[k]) for k, v in LSTMTranslator.load(kept).models[0].state_dict().items())
    assert not all(torch.equal(v, start[k]) for k, v in LSTMTranslator.load(last).models[0].state_dict().items())


# ---- self-distillation ----------------------------------------------------------------------------

def test_distillation_from_a_stronger_system_lifts_a_weak_model(toy_en_de, toy_task, tmp_path):
    """A weak student (60 steps) fine-tuned on the strong model's beam translations of monolingual
    source text gains more val BLEU than the same fine-tuning on its own translations."""
    from core_seq2seq.data import read_multi30k
    from core_seq2seq.testing import toy_experiment
    from core_seq2seq.training import experiment_from_dict, train
    from evals.metrics import score_corpus
    from synth.backtranslate import BacktranslateConfig, backtranslate, generation_for

    student_cfg = toy_experiment(tmp_path / "weak", steps=150, train_pairs=2000)
    train(experiment_from_dict(student_cfg), log=lambda m: None)
    weak = LSTMTranslator.load(tmp_path / "weak/best")
    val, _ = read_multi30k("val", "en", "de", str(toy_task))
    val_src, val_ref = val.src[:100], val.tgt[:100]
    greedy = DecodeSettings(method="greedy")

    def bleu(t: LSTMTranslator) -> float:
        return score_corpus([c[0].text for c in t.translate(val_src, greedy)], val_ref, trg_lang="de")["bleu"]

    mono = tmp_path / "mono.en"
    mono.write_text("\n".join(toy_corpus(3000, seed=0)[0][2500:3000]) + "\n", encoding="utf-8")  # toy task's mono.en span

    def distil(teacher: LSTMTranslator, name: str) -> float:
        gen = generation_for("beam", beam_size=3, shard_size=250)
        synthetic = backtranslate(BacktranslateConfig(input=str(mono), output_dir=str(tmp_path / f"{name}_data"),
                                                      mode="forward", progress=False, generation=gen),
                                  translator=teacher, model_name=name, log=lambda m: None)
        pairs = tmp_path / f"{name}.tsv"
        pairs.write_text("".join(f"{r['src']}\t{r['tgt']}\n" for r in map(json.loads, synthetic.read_text().splitlines())))
        cfg = toy_experiment(tmp_path / name, steps=100, train_pairs=2000)
        cfg["data"].update(corpus="files", train_src=str(pairs), train_tgt=None, val_src=str(tmp_path / "val.tsv"))
        cfg["train"].update(init_from=str(tmp_path / "weak/best"), lr=0.003, warmup_steps=1)
        train(experiment_from_dict(cfg), log=lambda m: None)
        return bleu(LSTMTranslator.load(tmp_path / f"{name}/last"))

    (tmp_path / "val.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in zip(val_src, val_ref)), encoding="utf-8")
    start = bleu(weak)
    from_strong, from_self = distil(toy_en_de, "from_strong"), distil(weak, "from_self")
    assert from_strong > start + 10, (start, from_strong, from_self)
    assert from_strong > from_self + 5, (start, from_strong, from_self)


# ---- bad input -------------------------------------------------------------------------------------

def test_identical_or_punctuation_only_pairs_are_refused(tmp_path):
    path = _write_jsonl(tmp_path / "p.jsonl", [{"src": "a", "chosen": "Der Hund.", "rejected": "Ein Hund."},
                                               {"src": "b", "chosen": "Der Hund.", "rejected": "Der Hund !"}])
    with pytest.raises(ValueError, match=r"p\.jsonl:2: chosen and rejected are the same up to punctuation"):
        read_preference_pairs(path)


@pytest.mark.parametrize("line, message", [
    ('{"src": "a", "chosen": "x y"}', r"pairs\.jsonl:2: 'rejected' must be a non-empty string"),
    ("not json", r"pairs\.jsonl:2: not valid JSON"),
    ('["a", "b", "c"]', r"pairs\.jsonl:2: expected a JSON object"),
])
def test_posttrain_cli_bad_pairs_name_file_and_line(toy_models_dir, tmp_path, capsys, line, message):
    import re

    from core_seq2seq.__main__ import main

    data = tmp_path / "pairs.jsonl"
    data.write_text('{"src": "The dog.", "chosen": "Der Hund.", "rejected": "Ein Vogel."}\n' + line + "\n")
    cfg = tmp_path / "post.yaml"
    cfg.write_text(f"method: dpo\nmodel: {toy_models_dir / 'en_de/best'}\ndata: {data}\noutput_dir: {tmp_path / 'out'}\n")
    assert main(["posttrain", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert not (tmp_path / "out/model").exists()


def test_posttrain_cli_bad_config_names_the_key(tmp_path, capsys):
    from core_seq2seq.__main__ import main

    cfg = tmp_path / "post.yaml"
    cfg.write_text("method: ppo\nmodel: m\ndata: d\noutput_dir: o\n")
    assert main(["posttrain", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "post.yaml" in err and "method" in err and "ppo" in err


def test_posttrain_refuses_an_output_of_another_config(toy_models_dir, tmp_path):
    sources, targets = toy_corpus(8, seed=61)
    data = tmp_path / "pairs.tsv"
    data.write_text("".join(f"{s}\t{t}\n" for s, t in zip(sources, targets)), encoding="utf-8")
    cfg = PosttrainConfig(method="mrt", model=str(toy_models_dir / "en_de/best"), data=str(data),
                          output_dir=str(tmp_path / "o"), max_steps=1, batch_size=4, num_samples=2)
    posttrain(cfg, log=lambda m: None)
    cfg.max_steps = 2
    with pytest.raises(ValueError, match="another config"):
        posttrain(cfg, log=lambda m: None)


def test_pairs_command_writes_pairs_and_distillation_data(toy_en_de, toy_models_dir, tmp_path, capsys):
    from inference_compute.cli import main as ic_main
    from inference_compute.candidates import beam_spec, generate_candidates
    from inference_compute.nbest import write_nbest
    from inference_compute.rerank import save_weights

    sources, _ = toy_corpus(20, seed=71)
    (tmp_path / "src.en").write_text("\n".join(sources) + "\n", encoding="utf-8")

    write_nbest(tmp_path / "n.nbest", generate_candidates(toy_en_de, sources, beam_spec(5)),
                {"model": str(toy_models_dir / "en_de/best")})
    save_weights(tmp_path / "w.json", {"fwd_per_token": 1.0, "rev_per_token": 0.5}, typical_ratio=1.0)
    cfg = {"pairs": {"nbest": str(tmp_path / "n.nbest"), "src": str(tmp_path / "src.en"), "weights": str(tmp_path / "w.json"),
                     "models": {"reverse": str(toy_models_dir / "de_en/best")}, "out": str(tmp_path / "pairs.jsonl"),
                     "distill_out": str(tmp_path / "distill.tsv")}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert ic_main(["pairs", "--config", str(tmp_path / "c.yaml")]) == 0, capsys.readouterr().err
    pairs = read_preference_pairs(tmp_path / "pairs.jsonl")  # the posttrain reader accepts every line
    assert pairs and all(differ_beyond_punctuation(p["chosen"], p["rejected"]) for p in pairs)
    distilled = (tmp_path / "distill.tsv").read_text(encoding="utf-8").splitlines()
    assert [line.split("\t")[0] for line in distilled] == sources
    assert (tmp_path / "pairs.jsonl.config.yaml").exists()
    # a weights file naming a feature no model gives is a clear error, and nothing is written
    save_weights(tmp_path / "w.json", {"lm_per_token": 1.0}, typical_ratio=1.0)
    (tmp_path / "pairs.jsonl").unlink()
    capsys.readouterr()
    assert ic_main(["pairs", "--config", str(tmp_path / "c.yaml")]) == 2
    assert "lm_per_token" in capsys.readouterr().err
    assert not (tmp_path / "pairs.jsonl").exists()


def test_posttrain_refuses_bf16_on_a_cpu_without_it_and_auto_falls_back_to_fp32(toy_en_de, toy_models_dir, tmp_path,
                                                                                  monkeypatch):
    from core_seq2seq import precision

    monkeypatch.setattr(precision, "bf16_support", lambda device="cpu": (False, "mocked: no bf16"))
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("a dog runs .\tein Hund rennt .\n" * 4)
    cfg = dict(method="mrt", model=str(toy_models_dir / "en_de/best"), data=str(pairs), max_steps=1, batch_size=2,
               num_samples=2)
    with pytest.raises(ValueError, match="bf16 asked for, but mocked: no bf16"):
        posttrain(PosttrainConfig(**cfg, output_dir=str(tmp_path / "bf16"), precision="bf16"), log=lambda m: None)
    assert not (tmp_path / "bf16").exists()  # refused before anything was written
    said: list[str] = []
    out = posttrain(PosttrainConfig(**cfg, output_dir=str(tmp_path / "auto")), log=said.append)
    assert json.loads((out / "decade_meta.json").read_text())["posttrain"]["precision"] == "fp32"
    assert any("precision fp32 (mocked: no bf16)" in m for m in said)


@pytest.mark.parametrize("method", ["dpo", "mrt"])
@pytest.mark.parametrize("bf16", [False, True])
def test_posttrain_runs_the_model_in_the_precision_it_resolved(method, bf16, toy_en_de, toy_models_dir, tmp_path,
                                                               monkeypatch):
    """The model's forward passes run under bf16 autocast exactly when the precision resolved to bf16
    (a hook on the encoder sees it), and the weights stay fp32 either way."""
    from core_seq2seq import precision
    from core_seq2seq.modeling_lstm import LSTMTranslatorModel

    if bf16 and not precision.bf16_support("cpu")[0]:
        pytest.skip("this CPU has no native bf16")
    if not bf16:
        monkeypatch.setattr(precision, "bf16_support", lambda device="cpu": (False, "mocked: no bf16"))
    seen: list[bool] = []
    encode = LSTMTranslatorModel.encode

    def spy(self, *args, **kwargs):
        if torch.is_grad_enabled():  # the training passes, not validation's greedy decoding
            seen.append(torch.is_autocast_enabled("cpu"))
        return encode(self, *args, **kwargs)

    monkeypatch.setattr(LSTMTranslatorModel, "encode", spy)
    sources, targets = toy_corpus(16, seed=35)
    if method == "dpo":
        data = _write_jsonl(tmp_path / "pairs.jsonl", [{"src": s, "chosen": t, "rejected": targets[(i + 1) % 16]}
                                                       for i, (s, t) in enumerate(zip(sources, targets))])
    else:
        data = tmp_path / "pairs.tsv"
        data.write_text("".join(f"{s}\t{t}\n" for s, t in zip(sources, targets)))
    out = posttrain(PosttrainConfig(method=method, model=str(toy_models_dir / "en_de/best"), data=str(data),
                                    output_dir=str(tmp_path / "run"), max_steps=2, batch_size=4, num_samples=2),
                    log=lambda m: None)
    assert seen and set(seen) == {bf16}
    assert json.loads((out / "decade_meta.json").read_text())["posttrain"]["precision"] == ("bf16" if bf16 else "fp32")
    from safetensors.torch import load_file
    assert {v.dtype for v in load_file(out / "model.safetensors").values()} == {torch.float32}


def test_precision_enters_the_hash_only_when_set():
    """Runs made before the key existed (precision auto) keep their hash, so they are not redone."""
    from core_seq2seq.config import key_dict

    assert "precision" not in key_dict(PosttrainConfig(method="mrt"))
    assert key_dict(PosttrainConfig(method="mrt", precision="fp32"))["precision"] == "fp32"
