"""inference_compute on the toy task: candidates, exact compute, noisy channel, MBR, n-best files, tuning, sweep, CLI."""

from __future__ import annotations

import json
import math
import random
from dataclasses import replace

import pytest

from core_seq2seq.toy import NOUNS, toy_corpus
from core_seq2seq.translator import Candidate, DecodeSettings
from inference_compute.candidates import (CandidateSpec, PooledCandidate, beam_spec, generate_candidates,
                                          pool, sample_spec)
from inference_compute.compute import ComputeMeter
from inference_compute.features import compute_features
from inference_compute.mbr import expected_utility, mbr_select
from inference_compute.nbest import NbestError, read_nbest, sidecars, write_nbest
from inference_compute.rerank import select
from inference_compute.tune import CorpusObjective, TuneConfig, coordinate_ascent, tune_weights

SOURCES, REFS = toy_corpus(12, seed=7)  # sentences the toy models never trained on (other seed)


# ---- candidates ----------------------------------------------------------------------------------

def test_union_is_deduplicated_keeps_best_logprob_and_provenance(toy_en_de):
    spec = CandidateSpec(methods=[DecodeSettings(method="beam", beam_size=4, nbest=0),
                                  DecodeSettings(method="sample", num_samples=8, seed=3)])
    raw = {name: toy_en_de.translate(SOURCES, m) for name, m in zip(spec.method_names, spec.methods)}
    before = toy_en_de.counter.encoder_calls
    pooled = generate_candidates(toy_en_de, SOURCES, spec)
    # One batched call per method over all 12 sources: no per-sentence loop around the model.
    assert toy_en_de.counter.encoder_calls - before == len(spec.methods)
    for i, cands in enumerate(pooled):
        texts = [c.text for c in cands]
        assert len(texts) == len(set(texts))
        assert sum(c.count for c in cands) == 4 + 8
        for c in cands:
            produced = [(name, x.logprob) for name, xs in raw.items() for x in xs[i] if x.text == c.text]
            assert sorted(c.methods) == sorted({name for name, _ in produced})
            assert c.logprob == pytest.approx(max(lp for _, lp in produced))
            assert c.count == len(produced)
        per_token = [c.logprob / c.length for c in cands]
        assert per_token == sorted(per_token, reverse=True)


def test_single_beam_keeps_the_decoder_order(toy_en_de):
    pooled = generate_candidates(toy_en_de, SOURCES[:4], beam_spec(5))
    direct = toy_en_de.translate(SOURCES[:4], DecodeSettings(method="beam", beam_size=5, nbest=5))
    for p, d in zip(pooled, direct):
        assert [c.text for c in p] == list(dict.fromkeys(c.text for c in d))


# ---- exact compute accounting --------------------------------------------------------------------

def _expected_counts(kind: str, width: int, nbest: list[list[Candidate]]) -> tuple[int, int]:
    """Decoder calls and row-steps of one batch, worked out from the outputs alone."""
    if kind == "beam":
        # A sentence leaves the batch at the step its K-th hypothesis finishes: the longest of its K.
        steps = [max(c.length for c in cands) for cands in nbest]
        return max(steps), width * sum(steps)
    lengths = [c.length for cands in nbest for c in cands]  # greedy / samples: each row leaves when it ends
    return max(lengths), sum(lengths)


@pytest.mark.parametrize("kind,width,spec", [
    ("greedy", 1, CandidateSpec(methods=[DecodeSettings(method="greedy")], dedupe=False)),
    ("beam", 3, beam_spec(3, dedupe=False)),
    ("beam", 6, beam_spec(6, dedupe=False)),
    ("sample", 5, sample_spec(5, seed=11, dedupe=False)),
])
def test_forward_calls_are_exact(toy_en_de, kind, width, spec):
    with ComputeMeter({"forward": toy_en_de}, n_sentences=5) as meter:
        nbest = generate_candidates(toy_en_de, SOURCES[:5], spec)
    calls, row_steps = _expected_counts(kind, width, nbest)
    assert meter.result["forward_calls"] == calls
    assert meter.result["decoder_row_steps"] == row_steps
    assert meter.result["per_model"]["forward"]["encoder_calls"] == 1
    src_tokens = sum(len(e.ids) for e in toy_en_de.tokenizer.backend_tokenizer.encode_batch(
        SOURCES[:5], add_special_tokens=False))
    assert meter.result["per_model"]["forward"]["encoder_token_steps"] == src_tokens
    encoder_flops = src_tokens * toy_en_de.models[0].encoder_flops_per_source_token()
    assert meter.result["flops"] == pytest.approx(row_steps * toy_en_de.flops_per_token() + encoder_flops)
    assert meter.result["seconds_per_sentence"] == pytest.approx(meter.result["decode_seconds"] / 5)


def test_scoring_calls_are_exact(toy_de_en):
    targets = SOURCES[:7]
    with ComputeMeter({"reverse": toy_de_en}) as meter:
        toy_de_en.score(REFS[:7], targets, batch_size=3)
    ids = toy_de_en.tokenizer.backend_tokenizer.encode_batch(targets, add_special_tokens=False)
    assert meter.result["forward_calls"] == math.ceil(7 / 3)  # one teacher-forced call per batch
    assert meter.result["decoder_row_steps"] == sum(len(e.ids) + 1 for e in ids)
    src_ids = toy_de_en.tokenizer.backend_tokenizer.encode_batch(REFS[:7], add_special_tokens=False)
    assert meter.result["per_model"]["reverse"]["encoder_calls"] == math.ceil(7 / 3)
    assert meter.result["per_model"]["reverse"]["encoder_token_steps"] == sum(len(e.ids) for e in src_ids)


# ---- features and the noisy channel --------------------------------------------------------------

GERMAN_NOUNS = sorted(n for n, _ in NOUNS.values())


def _wrong(translation: str, k: int) -> str:
    """A fluent but unfaithful translation: the k-th noun replaced by another noun."""
    words = translation.rstrip(".").split()
    nouns = [i for i, w in enumerate(words) if w in GERMAN_NOUNS]
    i = nouns[k % len(nouns)]
    others = [n for n in GERMAN_NOUNS if n != words[i]]
    words[i] = others[(7 * k + len(translation)) % len(others)]
    return " ".join(words) + "."


def test_reverse_model_fixes_planted_wrong_orderings(toy_de_en):
    # Each n-best list: two unfaithful translations on top, the correct one at the bottom with a forward
    # log-probability 3 nats worse. Forward-only selection takes the wrong one; the noisy channel
    # (forward + reverse) must put the correct one back on top.
    nbest = []
    for ref in REFS:
        wrong = [_wrong(ref, 0), _wrong(ref, 1)]
        cands = [Candidate(w, -1.0 - 0.5 * j, len(w.split()) + 1, 0.0) for j, w in enumerate(wrong)]
        nbest.append(cands + [Candidate(ref, -4.0, len(ref.split()) + 1, 0.0)])
    feats = compute_features(SOURCES, nbest, None, reverse=toy_de_en)
    assert select(feats, {"fwd": 1.0}) == [0] * len(REFS)
    assert select(feats, {"fwd": 1.0, "rev": 1.0}) == [2] * len(REFS)
    assert all(f["rev"] < 0 and f["fwd_per_token"] == f["fwd"] / f["tokens"] for fs in feats for f in fs)


def test_forward_rescoring_matches_search_logprobs(toy_en_de):
    nbest = generate_candidates(toy_en_de, SOURCES[:4], beam_spec(4))
    feats = compute_features(SOURCES[:4], nbest, toy_en_de)
    for cands, fs in zip(nbest, feats):
        for c, f in zip(cands, fs):
            assert f["fwd"] == pytest.approx(c.logprob, abs=1e-3)
            assert f["tokens"] == c.length


def test_alt_feature_is_the_second_models_log_probability(toy_en_de):
    nbest = generate_candidates(toy_en_de, SOURCES[:3], beam_spec(3))
    feats = compute_features(SOURCES[:3], nbest, None, alt=toy_en_de)
    for cands, fs in zip(nbest, feats):
        for c, f in zip(cands, fs):
            assert f["alt"] == pytest.approx(c.logprob, abs=1e-3)  # here the second opinion is the same model
            assert f["alt_per_token"] == pytest.approx(f["alt"] / c.length)


def test_alt_of_several_models_is_their_mean_and_charges_each(toy_en_de, toy_de_en):
    """Models with their own tokenizers combine as a MeanScorer: the mean of their scores, each
    member's compute counted."""
    from inference_compute.features import MeanScorer

    nbest = generate_candidates(toy_en_de, SOURCES[:3], beam_spec(3))
    srcs = [s for s, cs in zip(SOURCES[:3], nbest) for _ in cs]
    texts = [c.text for cs in nbest for c in cs]
    a, b = toy_en_de.score(srcs, texts), toy_de_en.score(srcs, texts)
    assert [x[0] for x in a] != pytest.approx([x[0] for x in b])  # two different opinions
    mean = MeanScorer([toy_en_de, toy_de_en])
    with ComputeMeter({"alt": mean}) as meter:
        feats = compute_features(SOURCES[:3], nbest, None, alt=mean)
    flat = [f for fs in feats for f in fs]
    for f, x, y in zip(flat, a, b):
        assert f["alt"] == pytest.approx((x[0] + y[0]) / 2, abs=1e-4)
    assert set(meter.result["per_model"]) == {"alt[0]", "alt[1]"}
    assert all(d["decoder_calls"] > 0 for d in meter.result["per_model"].values())


def test_rerank_names_a_missing_feature():
    with pytest.raises(ValueError, match="no feature 'rev'"):
        select([[{"fwd": -1.0}]], {"fwd": 1.0, "rev": 0.5})


MARGIN_FEATS = [[{"fwd_per_token": -0.5, "tokens": 5.0, "rev_per_token": -3.0},   # a clear leader
                  {"fwd_per_token": -1.5, "tokens": 5.0, "rev_per_token": -0.1}],
                 [{"fwd_per_token": -0.5, "tokens": 5.0, "rev_per_token": -3.0},   # a close call
                  {"fwd_per_token": -0.6, "tokens": 5.0, "rev_per_token": -0.1},
                  {"fwd_per_token": -0.9, "tokens": 6.0, "rev_per_token": -0.1}]]
MARGIN_WEIGHTS = {"fwd_per_token": 1.0, "tokens": -0.1, "rev_per_token": 1.0}


@pytest.mark.parametrize("margin, kept", [
    (0.0, [[0], [0]]),              # the free score alone: its best only
    (0.15, [[0], [0, 1]]),          # the close call keeps its runner-up (free scores -1.0, -1.1)
    (0.5, [[0], [0, 1, 2]]),        # ... and the third (-1.5); the clear leader still stands alone
    (1.0, [[0, 1], [0, 1, 2]]),
    (math.inf, [[0, 1], [0, 1, 2]]),
])
def test_within_margin_keeps_the_candidates_close_to_the_free_leader(margin, kept):
    from inference_compute.rerank import within_margin

    assert within_margin(MARGIN_FEATS, MARGIN_WEIGHTS, margin) == kept


@pytest.mark.parametrize("margin", [-0.1, -math.inf, math.nan])
def test_a_margin_must_be_a_number_at_least_zero(margin):
    from inference_compute.features import Scorers
    from inference_compute.rerank import within_margin

    with pytest.raises(ValueError, match="margin must be >= 0"):
        within_margin(MARGIN_FEATS, MARGIN_WEIGHTS, margin)
    with pytest.raises(ValueError, match="margin must be >= 0"):
        Scorers().select(["a"], [[Candidate("x", -1.0, 2, -0.5, [])]], {"fwd_per_token": 1.0}, margin)


class StubScorer:
    """A reverse model whose log-probability of each text is fixed: picks are known by hand."""

    counter, models, members, src_lang, tgt_lang = None, (), (), "de", "en"

    def __init__(self, logprobs: dict[str, float]):
        self.logprobs, self.scored = logprobs, []

    def score(self, sources, targets):
        self.scored += list(sources)  # the channel scores p(source | candidate): its "sources" are candidates
        return [(self.logprobs[s], 4) for s in sources]


@pytest.mark.parametrize("margin, picks, scored", [
    # free scores (fwd_per_token): source 0: -0.1, -0.5, -0.15 (c wins once the channel weighs in);
    # source 1: a tie of -0.2 and -0.2 (both kept, the channel prefers e); source 2: a leader by 1.9
    # that the channel would overturn: pruned below that margin, the reranker keeps f
    (0.0, [0, 1, 0], ["d", "e"]),
    (0.06, [2, 1, 0], ["a", "c", "d", "e"]),
    (0.5, [2, 1, 0], ["a", "b", "c", "d", "e"]),
    (2.0, [2, 1, 1], ["a", "b", "c", "d", "e", "f", "g"]),
    (math.inf, [2, 1, 1], None),  # the full reranker
])
def test_a_margin_maps_picks_back_to_the_full_n_best(margin, picks, scored):
    from inference_compute.features import Scorers

    def cand(text, per_token):
        return Candidate(text, per_token * 4, 4, per_token, [])

    nbest = [[cand("a", -0.1), cand("b", -0.5), cand("c", -0.15)], [cand("d", -0.2), cand("e", -0.2)],
             [cand("f", -0.1), cand("g", -2.0)]]
    stub = StubScorer({"a": -4.0, "b": -0.1, "c": -0.4, "d": -2.0, "e": -0.8, "f": -9.0, "g": -0.1})
    scorers = Scorers(reverse=stub, typical_ratio=1.0)
    weights = {"fwd_per_token": 1.0, "rev_per_token": 1.0}
    assert scorers.select(["s0", "s1", "s2"], nbest, weights, margin) == picks
    if scored is not None:
        assert sorted(stub.scored) == scored


def test_tune_margin_scores_each_margin_as_the_margin_reranker_picks(toy_en_de, toy_de_en):
    """tune_margin reads every candidate's features once: each margin's val score is the score of
    the picks Scorers.select makes with that margin, the scored share grows with the margin, and
    the pick is the cheapest margin within `within` of the full reranker."""
    from inference_compute.features import Scorers
    from inference_compute.tune import CorpusObjective, tune_margin

    nbest = generate_candidates(toy_en_de, SOURCES, beam_spec(6))
    weights = {"fwd_per_token": 1.0, "rev_per_token": 0.8, "len_ratio_dev": -0.5}
    scorers = Scorers(reverse=toy_de_en, typical_ratio=1.0)
    texts = [[c.text for c in cs] for cs in nbest]
    table = tune_margin(scorers.features(SOURCES, nbest), texts, REFS, weights, margins=(0.0, 0.05, 0.3, 1e9))
    objective = CorpusObjective(texts, REFS)
    assert table["full"] == pytest.approx(objective(scorers.select(SOURCES, nbest, weights)))
    for row in table["margins"]:
        assert row["score"] == pytest.approx(objective(scorers.select(SOURCES, nbest, weights, row["margin"])))
    shares = [row["scored_share"] for row in table["margins"]]
    assert shares == sorted(shares) and shares[-1] == pytest.approx(1.0)
    close = [r for r in table["margins"] if r["score"] >= table["full"] - 0.1 and r["scored_share"] < 1]
    assert table["pick"] == (min(close, key=lambda r: r["scored_share"])["margin"] if close else None)


def test_a_margin_refuses_weights_no_model_scores_and_empty_lists():
    from inference_compute.features import Scorers

    one = [[Candidate("x", -1.0, 2, -0.5, [])]]
    with pytest.raises(ValueError, match="weigh lm_per_token but no model scores it"):
        Scorers().select(["a"], one, {"fwd_per_token": 1.0, "lm_per_token": 0.5}, 0.1)
    with pytest.raises(ValueError, match="source 0 has no candidates"):
        Scorers().select(["a"], [[]], {"fwd_per_token": 1.0}, 0.1)


def test_a_margin_scores_only_the_kept_candidates_and_picks_among_them(toy_en_de, toy_de_en):
    """Scorers.select with a margin: the channel scores exactly the candidates within_margin keeps
    (a source left with one is not scored), each pick is the full reranker's pick among them, and an
    infinite margin is the full reranker."""
    from inference_compute.features import Scorers
    from inference_compute.rerank import within_margin

    nbest = generate_candidates(toy_en_de, SOURCES, beam_spec(6))
    weights = {"fwd_per_token": 1.0, "rev_per_token": 0.8, "len_ratio_dev": -0.5}
    scorers = Scorers(reverse=toy_de_en, typical_ratio=1.0)
    full_feats = scorers.features(SOURCES, nbest)
    assert scorers.select(SOURCES, nbest, weights, math.inf) == select(full_feats, weights)
    free = compute_features(SOURCES, nbest, None, typical_ratio=1.0)
    for margin in (0.0, 0.05, 0.3):
        kept = within_margin(free, weights, margin)
        scored = []
        real = toy_de_en.score

        def counting(srcs, tgts):
            scored.extend(srcs)
            return real(srcs, tgts)

        toy_de_en.score = counting
        try:
            picks = scorers.select(SOURCES, nbest, weights, margin)
        finally:
            del toy_de_en.score
        assert len(scored) == sum(len(k) for k in kept if len(k) > 1)
        for k, p, feats in zip(kept, picks, full_feats):
            assert p in k
            assert p == max(k, key=lambda j: (sum(w * feats[j][f] for f, w in weights.items()), -j))
    assert len(scored) < sum(len(cs) for cs in nbest)  # the widest margin tried still saves scoring here


# ---- MBR -----------------------------------------------------------------------------------------

CONSENSUS = ["Ein Hund sieht die Katze.", "Ein Hund sieht eine Katze.", "Der Hund sieht die Katze.",
             "Zwei Vögel fliegen heute sehr weit über das Meer."]


@pytest.mark.parametrize("utility", ["chrf", "bleu"])
def test_mbr_picks_the_consensus_candidate(utility):
    assert mbr_select(CONSENSUS, utility) == 0
    order = [3, 2, 0, 1]
    assert mbr_select([CONSENSUS[i] for i in order], utility) == order.index(0)
    # All the model's mass on the outlier: it is its own only pseudo-reference.
    assert mbr_select(CONSENSUS, utility, weights=[0.0, 0.0, 0.0, 1.0]) == 3


@pytest.mark.parametrize("utility", ["chrf", "bleu"])
def test_expected_utility_equals_pairwise_sacrebleu(utility):
    from evals.metrics import sentence_bleu, sentence_chrf

    fn = {"chrf": sentence_chrf, "bleu": sentence_bleu}[utility]
    weights = [0.1, 0.2, 0.3, 0.4]
    got = expected_utility(CONSENSUS, utility, weights)
    want = [sum(w * fn(h, r) for w, r in zip(weights, CONSENSUS)) for h in CONSENSUS]
    assert got == pytest.approx(want, abs=1e-9)


def test_mbr_rejects_bad_weights():
    with pytest.raises(ValueError, match="weights"):
        expected_utility(CONSENSUS[:2], "chrf", [1.0])
    with pytest.raises(ValueError, match="non-negative"):
        expected_utility(CONSENSUS[:2], "chrf", [-1.0, 2.0])


# ---- n-best files --------------------------------------------------------------------------------

def _toy_nbest() -> list[list[Candidate]]:
    spec = CandidateSpec(methods=[DecodeSettings(method="beam", beam_size=2, nbest=0),
                                  DecodeSettings(method="sample", num_samples=2)])
    a = [Candidate("a b", -1.5, 3, -0.5), Candidate("a c", -2.0, 3, -0.7)]
    b = [Candidate("a b", -1.2, 3, -1.2), Candidate("ä x \u2028 y", -3.0, 5, -3.0)]
    assert spec.name == "beam2+sample2"
    first = pool([("beam2", a), ("sample2", b)])
    assert isinstance(first[0], PooledCandidate)
    return [first, [Candidate("z", -0.1, 2, -0.05)]]


def test_nbest_round_trip(tmp_path):
    nbest = _toy_nbest()
    path = tmp_path / "x.nbest"
    write_nbest(path, nbest, {"model": "toy"})
    back = read_nbest(path)
    assert [[(c.text, c.logprob, c.length, c.score) for c in cs] for cs in back] == \
           [[(c.text, c.logprob, c.length, c.score) for c in cs] for cs in nbest]
    assert back[0][0].methods == ["beam2", "sample2"] and back[0][0].count == 2 and back[0][0].method == "sample2"
    meta = json.loads(sidecars(path)[1].read_text())
    assert meta["counts"] == [3, 1] and meta["fixed_n"] is None and meta["model"] == "toy"


def _lines(path):
    return path.read_text(encoding="utf-8").split("\n")[:-1]


def _edit(path, fn):
    path.write_text("".join(line + "\n" for line in fn(_lines(path))), encoding="utf-8")


@pytest.mark.parametrize("target,edit,where,message", [
    ("text", lambda ls: ls + ["extra"], "x.nbest:", "lines but its sidecar"),
    ("jsonl", lambda ls: ls[:2] + ["{not json"] + ls[3:], "x.nbest.jsonl:3", "not valid JSON"),
    ("jsonl", lambda ls: ls[:2] + [ls[2].replace('"a c"', '"a d"')] + ls[3:], "x.nbest.jsonl:3", "text differs"),
    ("jsonl", lambda ls: ls[:3] + [json.dumps({k: v for k, v in json.loads(ls[3]).items() if k != "logprob"})],
     "x.nbest.jsonl:4", "missing key"),
    ("jsonl", lambda ls: [ls[1], ls[0]] + ls[2:], "x.nbest.jsonl:1", "expected sent_id 0 rank 0"),
    ("meta", lambda ls: [line.replace("3,", "2,") for line in ls], "x.nbest.meta.json", "do not match"),
])
def test_nbest_bad_input_names_file_and_line(tmp_path, target, edit, where, message):
    path = tmp_path / "x.nbest"
    write_nbest(path, _toy_nbest())
    jsonl, meta = sidecars(path)
    _edit({"text": path, "jsonl": jsonl, "meta": meta}[target], edit)
    with pytest.raises(NbestError, match=message) as info:
        read_nbest(path)
    assert where in str(info.value)


def test_text_only_nbest_needs_a_dividing_n(tmp_path):
    path = tmp_path / "other_tool.txt"
    path.write_text("a\nb\nc\nd\ne\n", encoding="utf-8")
    with pytest.raises(NbestError, match="n_per_source"):
        read_nbest(path)
    with pytest.raises(NbestError, match="not a multiple of n_per_source=2"):
        read_nbest(path, n_per_source=2)
    assert [[c.text for c in cs] for cs in read_nbest(path, n_per_source=5)] == [["a", "b", "c", "d", "e"]]


def test_generation_resumes_by_shard_and_refuses_a_different_job(tmp_path, toy_en_de):
    from inference_compute.generate import generate_nbest_file

    path = tmp_path / "val.nbest"
    first, compute = generate_nbest_file(toy_en_de, SOURCES[:10], beam_spec(3), path, shard_size=4)
    assert compute["n_sentences"] == 10 and compute["forward_calls"] > 0
    # Interrupted before the end: the merged file and the last shard's meta are missing.
    path.unlink()
    sidecars(path.with_name("val.nbest.shards") / "shard-00002.nbest")[1].unlink()
    before = toy_en_de.counter.encoder_calls
    again, compute2 = generate_nbest_file(toy_en_de, SOURCES[:10], beam_spec(3), path, shard_size=4)
    assert toy_en_de.counter.encoder_calls - before == 1  # only the unfinished shard was decoded again
    assert [[c.text for c in cs] for cs in again] == [[c.text for c in cs] for cs in first]
    assert compute2["forward_calls"] == compute["forward_calls"]  # the record's compute is the whole job's
    with pytest.raises(ValueError, match="cached from a different job"):
        generate_nbest_file(toy_en_de, SOURCES[:10], beam_spec(4), path, shard_size=4)


# ---- tuning --------------------------------------------------------------------------------------

def _tuning_problem(n: int = 60, k: int = 4, seed: int = 0):
    """Synthetic n-best lists where 'good' points at the reference and 'fwd_per_token' is noise."""
    rng = random.Random(seed)
    words = "der die das Hund Katze sieht mag Ball Haus rot groß".split()
    refs, texts, feats = [], [], []
    for _ in range(n):
        ref = " ".join(rng.choice(words) for _ in range(6)) + "."
        cands = [ref] + [" ".join(rng.choice(words) for _ in range(6)) + "." for _ in range(k - 1)]
        rng.shuffle(cands)
        refs.append(ref)
        texts.append(cands)
        feats.append([{"fwd_per_token": rng.gauss(0, 1), "good": float(c == ref) + rng.gauss(0, 0.3),
                       "tokens": float(len(c.split()))} for c in cands])
    return feats, texts, refs


@pytest.mark.parametrize("rounds, point, value, trials", [(10, 3, 0, 8), (1, 1, -4, 2), (0, 0, -9, 0)])
def test_coordinate_ascent_moves_from_the_best_point_and_stops_after_a_round_without_gain(rounds, point, value, trials):
    # Maximise -(x - 3)^2 by steps of +-1 from 0; a move that returns None is skipped, not counted.
    moves = [[lambda x: ("+1", x + 1), lambda x: None, lambda x: ("-1", x - 1)]]
    gains = []
    got = coordinate_ascent(0, -9, moves, lambda x: -(x - 3) ** 2, rounds,
                            on_trial=lambda label, v, gain: gains.append(label) if gain else None)
    assert got == (point, value, trials)
    assert gains == ["+1"] * point


def test_corpus_objective_equals_evals_corpus_bleu():
    from evals.metrics import score_corpus

    _, texts, refs = _tuning_problem()
    objective = CorpusObjective(texts, refs)
    for seed in range(3):
        picks = [random.Random(seed).randrange(len(t)) for t in texts]
        assert objective(picks) == pytest.approx(score_corpus([t[p] for t, p in zip(texts, picks)], refs)["bleu"])


def test_tuning_is_deterministic_under_a_seed_and_improves_on_val():
    feats, texts, refs = _tuning_problem()
    cfg = TuneConfig(features=["fwd_per_token", "good", "tokens"], random_trials=30, coordinate_rounds=2, seed=5)
    a, b = tune_weights(feats, texts, refs, cfg), tune_weights(feats, texts, refs, cfg)
    assert a.weights == b.weights and a.score == b.score
    assert a.score > a.start_score + 10  # the informative feature gets the weight
    assert a.weights["good"] > 0
    assert a.score == pytest.approx(CorpusObjective(texts, refs)(select(feats, a.weights)))


# ---- the sweep, end to end on the toy task -------------------------------------------------------

def test_sweep_writes_records_plots_and_resumes(tmp_path, toy_models_dir, toy_en_de, toy_de_en, toy_task):
    from core_seq2seq.config import from_dict
    from evals.records import read_records
    from inference_compute.sweep import SweepConfig, run_sweep

    raw = toy_task / "task1/raw"
    cfg = from_dict(SweepConfig, {
        "pair": "en-de", "system_prefix": "toy-",
        "models": {"forward": str(toy_models_dir / "en_de/best"), "reverse": str(toy_models_dir / "de_en/best")},
        "splits": [{"name": "test_2016_flickr", "src": str(raw / "test_2016_flickr.en.gz"),
                    "ref": str(raw / "test_2016_flickr.de.gz"), "limit": 10},
                   {"name": "val", "src": str(raw / "val.en.gz"), "ref": str(raw / "val.de.gz"), "limit": 10}],
        "beams": [1, 4], "samples": [4], "baseline_beam": 2, "shard_size": 6, "bootstrap_samples": 50,
        "tune": {"random_trials": 10, "coordinate_rounds": 1}, "out_dir": str(tmp_path / "sweep"),
    })
    logs: list[str] = []
    summary = run_sweep(cfg, logs.append)
    records = read_records(tmp_path / "sweep/results.jsonl")
    assert {r.test_set for r in records} == {"val", "test_2016_flickr"}
    assert len(records) == 2 * 4 * 4  # 2 splits x (beam1, beam2, beam4, sample4) x (top, rerank, mbr, rerank_mbr)
    assert records[0].test_set == "val" and records[0].system == "toy-beam2-top"  # tuning split first, baseline first
    by = {(r.test_set, r.system): r for r in records}
    b1, b4 = by[("val", "toy-beam1-top")], by[("val", "toy-beam4-top")]
    # Batched decoding: a wider beam makes each call bigger (row-steps, FLOPs), not necessarily more calls.
    assert 0 < b1.compute["forward_calls"] <= b4.compute["forward_calls"]
    assert b1.compute["decoder_row_steps"] < b4.compute["decoder_row_steps"] and b1.compute["flops"] < b4.compute["flops"]
    rerank = by[("test_2016_flickr", "toy-beam4-rerank")]
    assert rerank.compute["per_model"]["reverse"]["decoder_calls"] > 0
    assert rerank.compute["forward_calls"] > by[("test_2016_flickr", "toy-beam4-top")].compute["forward_calls"]
    assert by[("val", "toy-beam4-mbr")].compute["utility_calls"] > 0
    assert all(r.p_vs_baseline is not None for r in records if r.system != "toy-beam2-top")
    assert summary["best_on_val"].split("-")[-1] in ("rerank", "mbr", "rerank_mbr")
    assert summary["splits"]["val"]["beam_peak"] in (1, 2, 4)
    assert (tmp_path / "sweep/inference_en-de_test_2016_flickr.png").stat().st_size > 1000
    assert (tmp_path / "sweep/weights/beam4.json").exists()
    generated = [m for m in logs if "done (" in m]
    assert len(generated) == 2 * 4 * 2  # splits x pools x shards of 6 sentences
    # Frozen on val before test: the weights file says so.
    assert json.loads((tmp_path / "sweep/weights/beam4.json").read_text())["tuned_on"] == "val"
    again: list[str] = []
    assert run_sweep(cfg, again.append) == summary
    assert not [m for m in again if "done (" in m or "tuned" in m]  # everything came from the caches
    # Another scorer changes features and choices, never the candidates; a union of two pools reuses
    # their lists. No decoding is redone.
    with_alt = replace(cfg, models=replace(cfg.models, alt=str(toy_models_dir / "en_de/best")),
                       unions=[["beam4", "sample4_eps0.02"]])
    third: list[str] = []
    run_sweep(with_alt, third.append)
    assert not [m for m in third if "done (" in m]
    weights = json.loads((tmp_path / "sweep/weights/beam4.json").read_text())
    assert "alt_per_token" in json.dumps(weights)
    records = {(r.test_set, r.system): r for r in read_records(tmp_path / "sweep/results.jsonl")}
    union = records[("test_2016_flickr", "toy-beam4+sample4_eps0.02-rerank")]
    assert union.stage == "rerank" and records[("val", "toy-beam4+sample4_eps0.02-top")].stage == "union"
    members = [records[("test_2016_flickr", f"toy-{m}-top")].compute["decoder_row_steps"] for m in ("beam4", "sample4_eps0.02")]
    assert records[("test_2016_flickr", "toy-beam4+sample4_eps0.02-top")].compute["decoder_row_steps"] == sum(members)
    sel = json.loads((tmp_path / "sweep/selections/test_2016_flickr/beam4+sample4_eps0.02.json").read_text())
    beam4 = json.loads((tmp_path / "sweep/selections/test_2016_flickr/beam4.json").read_text())
    assert sel["mean_candidates"] >= beam4["mean_candidates"]


def test_sweep_union_must_name_grid_pools():
    from core_seq2seq.config import from_dict
    from inference_compute.sweep import SweepConfig

    with pytest.raises(ValueError, match=r"unions: \['beam4', 'sample4'\].*unknown: \['sample4'\].*sample4_eps0.02"):
        from_dict(SweepConfig, {"beams": [4], "samples": [4], "unions": [["beam4", "sample4"]]})


@pytest.mark.parametrize("cls, section, data, message", [
    ("sweep", "sweep", {"sampling": {"epsilon": 0.1}}, "sweep.sampling: this key moved; write it as its keys under sweep.decode"),
    ("sweep", "sweep", {"batch_size": 8}, "sweep.batch_size: this key moved; write it as sweep.decode.batch_size"),
    ("pool", "candidates", {"max_len_a": 2.0}, "candidates.max_len_a: this key moved; write it as max_len_a in each item"),
    ("pool", "candidates", {"methods": [{"beam_size": 4, "nbest": 5}]}, "nbest must be between 0 (all) and beam_size=4"),
    ("pool", "candidates", {"methods": [{"beam_size": 4}, {"beam_size": 4}]}, "names must be distinct"),
    ("pool", "candidates", {"methods": [{"beam_size": 4}], "names": ["a", "b"]}, "2 names for 1 methods"),
])
def test_decode_settings_errors_name_the_key(cls, section, data, message):
    import re

    from core_seq2seq.config import ConfigError, from_dict
    from inference_compute.sweep import SweepConfig

    with pytest.raises(ConfigError, match=re.escape(message)):
        from_dict({"sweep": SweepConfig, "pool": CandidateSpec}[cls], data, section)


def test_partial_decode_sections_keep_their_defaults():
    from core_seq2seq.config import from_dict
    from inference_compute.sweep import SweepConfig, pools

    pool = from_dict(CandidateSpec, {"methods": [{"beam_size": 4}, {"method": "sample", "num_samples": 3}]})
    assert [m.n_candidates() for m in pool.methods] == [4, 3] and pool.name == "beam4+sample3"  # a pool keeps whole beams
    assert from_dict(CandidateSpec, {"methods": [{"beam_size": 4}], "names": ["wide"]}).name == "wide"
    sweep = from_dict(SweepConfig, {"decode": {"batch_size": 8}, "beams": [2], "samples": [4]})
    assert (sweep.decode.batch_size, sweep.decode.epsilon) == (8, 0.02)  # the sweep's default epsilon survives
    assert [p.name for p in pools(sweep)] == ["beam2", "beam5", "sample4_eps0.02"]


# ---- the command line ----------------------------------------------------------------------------

def test_cli_nbest_tune_rerank_mbr(tmp_path, toy_models_dir, toy_en_de, toy_de_en, capsys):
    from inference_compute.cli import main

    src, ref = tmp_path / "src.en", tmp_path / "ref.de"
    src.write_text("".join(s + "\n" for s in SOURCES), encoding="utf-8")
    ref.write_text("".join(r + "\n" for r in REFS), encoding="utf-8")
    fwd, rev = toy_models_dir / "en_de/best", toy_models_dir / "de_en/best"
    nb, weights = tmp_path / "val.nbest", tmp_path / "weights.json"
    config = tmp_path / "c.yaml"
    config.write_text(f"""
nbest: {{model: {fwd}, src: {src}, out: {nb}, candidates: {{methods: [{{method: beam, beam_size: 4}}]}}}}
tune: {{nbest: {nb}, src: {src}, ref: {ref}, out: {weights}, models: {{reverse: {rev}}},
        search: {{random_trials: 5, coordinate_rounds: 1}}}}
rerank: {{nbest: {nb}, src: {src}, weights: {weights}, out: {tmp_path / 'rerank.de'}, models: {{reverse: {rev}}}}}
mbr: {{nbest: {nb}, out: {tmp_path / 'mbr.de'}, utility: chrf}}
""", encoding="utf-8")
    for command in ("nbest", "tune", "rerank", "mbr"):
        assert main([command, "--config", str(config)]) == 0, capsys.readouterr().err
    assert len(read_nbest(nb)) == len(SOURCES)
    assert json.loads(weights.read_text())["tuned_on"] == str(ref)
    for out in ("rerank.de", "mbr.de"):
        assert len((tmp_path / out).read_text(encoding="utf-8").splitlines()) == len(SOURCES)
        assert (tmp_path / f"{out}.config.yaml").exists()
    full = (tmp_path / "rerank.de").read_text(encoding="utf-8")
    # A margin that keeps every candidate: the full reranker's picks; margin 0: the free score's best.
    assert main(["rerank", "--config", str(config), "--set", "score_margin=1.0e+9"]) == 0, capsys.readouterr().err
    assert "scoring compute" in capsys.readouterr().err
    assert (tmp_path / "rerank.de").read_text(encoding="utf-8") == full
    assert main(["rerank", "--config", str(config), "--set", "score_margin=0.0"]) == 0, capsys.readouterr().err
    from inference_compute.rerank import load_weights, within_margin

    lists = read_nbest(nb)
    ratio = json.loads(weights.read_text())["typical_ratio"]
    kept = within_margin(compute_features(SOURCES, lists, None, typical_ratio=ratio), load_weights(weights), 0.0)
    for line, cs, k in zip((tmp_path / "rerank.de").read_text(encoding="utf-8").splitlines(), lists, kept):
        assert line in [cs[i].text for i in k]  # one of the free score's best (the channel breaks a tie)
    for bad, message in (("score_margin=-1", "score_margin must be >= 0"),
                         ("score_margin=.nan", "score_margin must be >= 0"),
                         (f"features_out={tmp_path / 'f.jsonl'}", "cannot go with a score_margin"),
                         (f"models.forward={fwd}", "cannot go with models.forward")):
        extra = [] if bad.startswith("score_margin") else ["--set", "score_margin=0.1"]
        assert main(["rerank", "--config", str(config), "--set", bad, *extra]) == 2
        assert message in capsys.readouterr().err
    assert main(["mbr", "--config", str(config), "--set", "utilty=bleu"]) == 2
    assert "mbr.utilty: unknown key; did you mean 'utility'?" in capsys.readouterr().err
    (tmp_path / "val.nbest.jsonl").write_text("{}\n", encoding="utf-8")
    assert main(["mbr", "--config", str(config)]) == 2
    assert "val.nbest" in capsys.readouterr().err


# ---- the target LM helper ------------------------------------------------------------------------

def test_lm_corpus_drops_eval_lines_and_uses_a_placeholder_source(tmp_path, toy_en_de):
    from core_seq2seq.training import experiment_from_dict, load_corpora
    from inference_compute.lm import TargetLM, build_lm_corpus

    mono = ["Ein Hund.", "", "Die Katze.", "Ein Hund.", "Das Haus."]
    cfg = build_lm_corpus(tmp_path, mono, ["Der Ball."], exclude=["Die Katze."], lang="de")
    train, val, _ = load_corpora(experiment_from_dict(cfg).data)  # what core_seq2seq's training would read
    assert train.tgt == ["Ein Hund.", "Das Haus."] and set(train.src) == {"."} and val.tgt == ["Der Ball."]
    stats = json.loads((tmp_path / "corpus_stats.json").read_text())
    assert stats == {"placeholder": ".", "read": 5, "empty": 1, "whitespace_normalised": 0, "eval_overlap": 1, "duplicate": 1, "kept": 2}
    lm = TargetLM(toy_en_de)
    assert lm.score(["Ein Hund."]) == toy_en_de.score(["."], ["Ein Hund."])


def test_a_toy_target_lm_prefers_fluent_german(tmp_path, toy_task):
    # The whole LM path: corpus with the placeholder source -> core_seq2seq training -> TargetLM from last/.
    from core_seq2seq.data import read_text_lines
    from core_seq2seq.training import experiment_from_dict, train
    from inference_compute.lm import TargetLM, build_lm_corpus

    raw = toy_task / "task1/raw"
    cfg = build_lm_corpus(tmp_path, read_text_lines(toy_task / "task2/raw/train.1.de.gz"),
                          read_text_lines(raw / "val.de.gz")[:50], exclude=read_text_lines(raw / "val.de.gz"), lang="de",
                          model={"embed_size": 32, "encoder_hidden_size": 16, "decoder_hidden_size": 64, "dropout": 0.0},
                          tokenizer={"vocab_size": 200},
                          train={"max_steps": 150, "eval_every_steps": 150, "eval_max_sentences": 5, "batch_tokens": 1500,
                                 "lr": 0.01, "warmup_steps": 10, "progress": False})
    train(experiment_from_dict(cfg), log=lambda m: None)
    lm = TargetLM.load(tmp_path / "run/last")
    fluent = read_text_lines(raw / "test_2016_flickr.de.gz")[:20]
    rng = random.Random(0)
    scrambled = [" ".join(rng.sample(s.rstrip(".").split(), len(s.split()))) + "." for s in fluent]
    good, bad = lm.score(fluent), lm.score(scrambled)
    assert sum(g[0] > b[0] for g, b in zip(good, bad)) >= 18  # an untrained LM gets about half


def test_benchmark_scripts_run_on_the_toy_models(tmp_path, toy_models_dir, toy_en_de, toy_task):
    import importlib.util
    from pathlib import Path

    def script(name):
        spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    out = tmp_path / "throughput.json"
    assert script("decode_throughput").main(["--model", str(toy_models_dir / "en_de/best"), "--src",
                                             str(toy_task / "task1/raw/test_2016_flickr.en.gz"), "--limit", "6",
                                             "--out", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert [r["setting"] for r in payload["results"]] == ["beam5", "beam64", "sample64"]
    assert payload["results"][1]["candidates"] == 6 * 64 and payload["machine"]["cpu_count"]
    assert all(r["sentences_per_second"] > 0 for r in payload["results"])


@pytest.mark.parametrize("lines, exclude, kept, stats", [
    (["ein Hund .", "ein Hund .", "", "  "], [], ["ein Hund ."], {"duplicate": 1, "empty": 2}),
    (["ein\tHund  läuft .", "ein Hund läuft ."], [], ["ein Hund läuft ."], {"whitespace_normalised": 1, "duplicate": 1}),
    (["eine Katze .", "ein Hund ."], ["eine  Katze ."], ["ein Hund ."], {"eval_overlap": 1}),
])
def test_lm_pairs_normalise_filter_and_count(lines, exclude, kept, stats):
    from inference_compute.lm import lm_pairs

    pairs, counts = lm_pairs(lines, exclude, placeholder=".")
    assert pairs == [(".", t) for t in kept]
    assert counts["read"] == len(lines) and counts["kept"] == len(kept)
    assert {k: counts[k] for k in stats} == stats


# ---- the right-to-left model helper --------------------------------------------------------------

def test_r2l_corpus_reverses_target_words_and_trains_through_core(tmp_path):
    from core_seq2seq.training import experiment_from_dict, load_corpora
    from inference_compute.r2l import build_r2l_corpus

    cfg = build_r2l_corpus(tmp_path, (["a dog runs .", "", "a cat"], ["ein Hund läuft .", "x", "eine  Katze"]),
                           (["a ball"], ["ein Ball"]), "en", "de", train={"max_steps": 1})
    train, val, _ = load_corpora(experiment_from_dict(cfg).data)  # what core_seq2seq's training would read
    assert train.src == ["a dog runs .", "a cat"] and train.tgt == [". läuft Hund ein", "Katze eine"]
    assert val.tgt == ["Ball ein"] and cfg["train"] == {"max_steps": 1}
    assert json.loads((tmp_path / "corpus_stats.json").read_text())["train"] == {"read": 3, "empty": 1, "kept": 2}


def test_r2l_command_names_misaligned_files(tmp_path, capsys):
    from inference_compute.cli import main

    (tmp_path / "s.txt").write_text("a\nb\n")
    (tmp_path / "t.txt").write_text("x\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"r2l:\n  train_src: {tmp_path}/s.txt\n  train_tgt: {tmp_path}/t.txt\n  val_src: {tmp_path}/s.txt\n"
                   f"  val_tgt: {tmp_path}/s.txt\n  out_dir: {tmp_path}/out\n")
    assert main(["r2l", "--config", str(cfg)]) != 0
    err = capsys.readouterr().err
    assert "s.txt has 2 lines but" in err and "t.txt has 1" in err


@pytest.mark.parametrize("path", ["configs/inference_multi30k.yaml", "configs/inference_multi30k_de_en.yaml",
                                  "configs/inference_toy.yaml"])
def test_shipped_inference_configs_load(path):
    """Every section of a shipped config loads into its command's config (no misspelt key)."""
    from pathlib import Path

    import yaml

    from inference_compute.cli import COMMANDS, load_section

    full = Path(__file__).parents[1] / path
    sections = yaml.safe_load(full.read_text())
    assert sections and set(sections) <= set(COMMANDS)
    for name in sections:
        assert load_section(COMMANDS[name][0], str(full), name) is not None


def test_load_scorer_gives_one_translator_or_a_mean_of_several(toy_models_dir):
    from core_seq2seq.translator import LSTMTranslator
    from inference_compute.features import MeanScorer, load_scorer

    one, two = str(toy_models_dir / "en_de/best"), str(toy_models_dir / "de_en/best")
    assert load_scorer(None) is None
    assert isinstance(load_scorer(one), LSTMTranslator) and isinstance(load_scorer([one]), LSTMTranslator)
    mean = load_scorer([one, two])
    assert isinstance(mean, MeanScorer) and len(mean.members) == 2


def test_scorers_of_the_wrong_direction_are_named(toy_en_de, toy_de_en):
    """A channel, right-to-left, second or LM model that does not fit the forward model's direction is
    an error naming it (a swapped channel model once cost 18 BLEU on val without a word)."""
    from inference_compute.features import check_directions
    from inference_compute.lm import TargetLM

    check_directions(toy_en_de, reverse=toy_de_en, r2l=toy_en_de, alt=toy_en_de, lm=TargetLM(toy_en_de))
    for kwargs, message in [({"reverse": toy_en_de}, r"reverse \(noisy channel\) model translates en->de"),
                            ({"r2l": toy_de_en}, r"r2l model translates de->en"),
                            ({"alt": toy_de_en}, r"alt model translates de->en"),
                            ({"lm": TargetLM(toy_de_en)}, r"the LM writes en")]:
        with pytest.raises(ValueError, match=message):
            check_directions(toy_en_de, **kwargs)


@pytest.mark.parametrize("roles, names", [
    ({}, ["fwd_per_token", "tokens", "len_ratio_dev"]),
    ({"lm": True, "reverse": True}, ["fwd_per_token", "tokens", "len_ratio_dev", "rev_per_token", "lm_per_token"]),
    ({"alt": True, "r2l": True, "lm": True, "reverse": True},
     ["fwd_per_token", "tokens", "len_ratio_dev", "rev_per_token", "r2l_per_token", "lm_per_token", "alt_per_token"]),
])
def test_scorers_name_their_features_in_the_tuners_order(toy_en_de, toy_de_en, roles, names):
    """The feature names a reranker tunes come from the scorers present, in one fixed order (the
    tuner's random draws follow it, so the order is part of what makes a tuned reranker)."""
    from inference_compute.features import Scorers
    from inference_compute.lm import TargetLM

    models = {"reverse": toy_de_en, "r2l": toy_en_de, "lm": TargetLM(toy_en_de), "alt": toy_en_de}
    scorers = Scorers(**{role: models[role] for role in roles})
    assert scorers.feature_names() == names and scorers.any_model == bool(roles)
    scorers.check(toy_en_de)
    meters = {k: v for k, v in scorers.meters().items() if v is not None}
    assert set(meters) == set(roles)


def test_scorers_score_as_compute_features_and_drop_unweighted_models(toy_en_de, toy_de_en):
    from inference_compute.candidates import beam_spec, generate_candidates
    from inference_compute.features import Scorers, compute_features
    from inference_compute.lm import TargetLM

    nbest = generate_candidates(toy_en_de, SOURCES[:3], beam_spec(3))
    lm = TargetLM(toy_en_de)
    scorers = Scorers(reverse=toy_de_en, lm=lm, typical_ratio=1.2)
    assert scorers.features(SOURCES[:3], nbest) == compute_features(SOURCES[:3], nbest, None, toy_de_en, lm,
                                                                    typical_ratio=1.2)
    only_rev = scorers.needed({"fwd_per_token": 1.0, "rev_per_token": 0.5, "lm_per_token": 0.0})
    assert only_rev.reverse is toy_de_en and only_rev.lm is None and only_rev.typical_ratio == 1.2
    assert scorers.lm is lm  # needed() copies; the original keeps its models
    with pytest.raises(ValueError, match="reverse"):
        Scorers(reverse=toy_en_de).check(toy_en_de)
