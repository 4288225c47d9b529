"""synth on the toy task: back-translation helps, decontamination, resumable shards, errors, filtering,
mixing, the loop and the CLI. One core, well under 90 s once the shared toy models are cached."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pytest

from core_seq2seq.data import DataError, read_multi30k
from synth.backtranslate import BacktranslateConfig, ReplayTranslator, backtranslate, generation_for
from synth.io import SynthError, read_jsonl
from synth.shards import ShardPlan, merge_shards, shard_file, shard_seed, sidecar_file

REPO = Path(__file__).resolve().parents[1]


def _gz(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))
    return path


def _write(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _tsv(path: Path, src: list[str], tgt: list[str]) -> Path:
    return _write(path, [f"{s}\t{t}" for s, t in zip(src, tgt)])


# ---- (1) synthetic pairs from the reverse model help a forward model with few real pairs ----------

def test_backtranslation_improves_a_low_resource_model(tmp_path, toy_task, toy_de_en):
    from core_seq2seq.testing import toy_experiment
    from core_seq2seq.training import experiment_from_dict, train
    from core_seq2seq.translator import DecodeSettings, LSTMTranslator
    from evals.metrics import score_corpus
    from synth.mix import MixConfig, mix
    from synth.prepare import PrepareConfig, prepare

    train_pairs, _ = read_multi30k("train", "en", "de", toy_task)
    val, _ = read_multi30k("val", "en", "de", toy_task)
    test, _ = read_multi30k("test_2016_flickr", "en", "de", toy_task)
    real = _tsv(tmp_path / "real.tsv", train_pairs.src[:150], train_pairs.tgt[:150])
    val_tsv = _tsv(tmp_path / "val.tsv", val.src[:100], val.tgt[:100])
    mono, report = prepare(PrepareConfig(lang="de", output=str(tmp_path / "mono.de.txt"), corpus="files",
                                         root=str(toy_task), max_lines=2000), log=lambda m: None)
    assert report.kept == 2000
    synthetic = backtranslate(BacktranslateConfig(input=str(mono), output_dir=str(tmp_path / "bt"), progress=False,
                                                  generation=generation_for("greedy")),
                              translator=toy_de_en, model_name="toy_de_en", log=lambda m: None)
    mixed = mix(MixConfig(src_lang="en", tgt_lang="de", synthetic=[str(synthetic)], output=str(tmp_path / "mix")),
                log=lambda m: None)
    bleu = {}
    for name, extra in (("real_only", []), ("real_plus_bt", [str(mixed)])):
        exp = toy_experiment(tmp_path / name, steps=300)  # same model, same steps: only the data differ
        exp["data"] = {"corpus": "files", "src_lang": "en", "tgt_lang": "de", "train_src": str(real),
                       "val_src": str(val_tsv), "extra_train": extra}
        train(experiment_from_dict(exp), log=lambda m: None)
        model = LSTMTranslator.load(tmp_path / name / "best", "en", "de")
        hyps = [c[0].text for c in model.translate(test.src, DecodeSettings(method="greedy"))]
        bleu[name] = score_corpus(hyps, test.tgt, trg_lang="de")["bleu"]
    # Measured (2026-12-02, 2-core EPYC): 56.6 BLEU with 150 real pairs, 79.1 with 2000 back-translated pairs
    # added; at 200 steps 39.9 and 52.9, too close to the bar, so the test trains 300.
    assert bleu["real_plus_bt"] > bleu["real_only"] + 15, bleu


# ---- (2) decontamination ---------------------------------------------------------------------------

def _mini_multi30k(root: Path) -> dict[str, list[str]]:
    files = {
        "task1/raw/train.en.gz": ["A dog runs.", "Two men talk."],
        "task1/raw/train.de.gz": ["Ein Hund rennt.", "Zwei Männer reden."],
        "task1/raw/val.en.gz": ["A cat sleeps."],
        "task1/raw/val.de.gz": ["Eine Katze schläft."],
        "task1/raw/test_2016_flickr.en.gz": ["A bird sings."],
        "task1/raw/test_2016_flickr.de.gz": ["Ein Vogel singt."],
        "task1/raw/test_2017_mscoco.de.gz": ["Ein Bus fährt."],
        "task2/raw/val.1.de.gz": ["Ein Boot schwimmt."],
    }
    for rel, lines in files.items():
        _gz(root / rel, lines)
    return files


@pytest.mark.parametrize("line, reason", [
    ("Eine Katze schläft.", "eval_overlap"),            # task-1 val, target side
    ("eine  KATZE schläft .", "eval_overlap"),          # case and whitespace differ
    ("A bird sings.", "eval_overlap"),                  # a test line from the other language side
    ("Ein Bus fährt.", "eval_overlap"),                 # test_2017_mscoco
    ("Ein Boot schwimmt.", "eval_overlap"),             # task-2 val captions
    ("Ein Hund rennt.", "train_overlap"),               # the task-1 training target side
    ("   ", "empty"),
    ("Wort " * 30, "too_long"),
])
def test_decontamination_removes_planted_lines(tmp_path, line, reason):
    from synth.prepare import PrepareConfig, prepare

    root = tmp_path / "m30k"
    _mini_multi30k(root)
    clean = ["Ein Mann liest.", "Eine Frau singt.", "Ein Kind spielt."]
    mono = _gz(root / "task2/raw/train.1.de.gz", [clean[0], line, clean[1], clean[0], clean[2]])
    out, report = prepare(PrepareConfig(lang="de", output=str(tmp_path / "mono.de.txt"), corpus="files",
                                        root=str(root), max_words=20), log=lambda m: None)
    assert out.read_text(encoding="utf-8").splitlines() == clean
    expected = {r: 0 for r in report.removed}
    expected[reason] += 1
    expected["duplicate"] += 1  # clean[0] appears twice
    assert report.removed == expected
    assert (report.read, report.kept) == (5, 3)
    saved = json.loads((tmp_path / "mono.de.txt.report.json").read_text())
    assert saved["report"]["removed"] == expected
    assert saved["report"]["examples"][reason][0].startswith(f"{mono}:2:")


def test_decontamination_of_the_task2_english_side(tmp_path):
    """Task-2 English contains the task-1 English training captions: they are not new data."""
    from synth.prepare import PrepareConfig, prepare

    root = tmp_path / "m30k"
    _mini_multi30k(root)
    _gz(root / "task2/raw/train.1.en.gz", ["A dog runs.", "A horse jumps.", "A cat sleeps."])
    _gz(root / "task2/raw/train.2.en.gz", ["Two men talk.", "A horse jumps.", "Kids play."])
    out, report = prepare(PrepareConfig(lang="en", output=str(tmp_path / "mono.en.txt"), corpus="files",
                                        root=str(root)), log=lambda m: None)
    assert out.read_text().splitlines() == ["A horse jumps.", "Kids play."]
    assert report.removed == {"empty": 0, "too_long": 0, "eval_overlap": 1, "train_overlap": 2, "duplicate": 1}
    assert report.train_overlap_by_file == {str(root / "task1/raw/train.en.gz"): 2}


# ---- (3) a killed back-translation run resumes without duplicates or gaps ---------------------------

class Killed(Exception):
    pass


def _bt_config(tmp_path: Path, name: str, mono: Path, method: str = "sample", num_per_target: int = 1) -> BacktranslateConfig:
    return BacktranslateConfig(input=str(mono), output_dir=str(tmp_path / name), progress=False,
                               generation=generation_for(method, num_per_target, shard_size=100, seed=7))


def test_killed_backtranslation_resumes_without_duplicates_or_gaps(tmp_path, toy_de_en):
    from core_seq2seq.toy import toy_corpus

    _, de = toy_corpus(430, seed=11)
    mono = _write(tmp_path / "mono.de", de)
    quiet = lambda m: None  # noqa: E731

    def kill_after(k):
        def hook(shard):
            if shard == k:
                raise Killed
        return hook

    cfg = _bt_config(tmp_path, "killed", mono, num_per_target=2)
    with pytest.raises(Killed):
        backtranslate(cfg, translator=toy_de_en, model_name="toy", log=quiet, on_shard_done=kill_after(2))
    assert sorted(p.name for p in (tmp_path / "killed/shards").glob("*.jsonl")) == [
        f"shard-{i:05d}.jsonl" for i in range(3)]
    # A kill in the middle of the next shard: its file half-written, its sidecar never written.
    shard_file(tmp_path / "killed", 3).write_text('{"id": 301, "k": 0, "src": "x", "tgt"')
    calls, logged = [], []
    backtranslate(cfg, translator=toy_de_en, model_name="toy", log=logged.append, on_shard_done=calls.append)
    assert calls == [3, 4]  # finished shards are skipped, the torn one is redone
    assert [m.split(":")[0] for m in logged if m.startswith("shard ")] == ["shard 4/5", "shard 5/5"]  # a line each
    records = read_jsonl(tmp_path / "killed/synthetic.jsonl")
    assert [(r["id"], r["k"]) for r in records] == [(i, k) for i in range(1, 431) for k in range(2)]
    assert all(r["tgt"] == de[r["id"] - 1] for r in records)
    assert {r["seed"] for r in records if r["id"] <= 100} == {shard_seed(7, 0)}
    # The same run without the kill writes the same pairs: shard seeds do not depend on the kill.
    clean = backtranslate(_bt_config(tmp_path, "clean", mono, num_per_target=2), translator=toy_de_en,
                          model_name="toy", log=quiet)
    assert read_jsonl(clean) == records
    # A different config may not resume into the same directory.
    with pytest.raises(SynthError, match="different input or config"):
        backtranslate(_bt_config(tmp_path, "killed", mono, method="greedy"), translator=toy_de_en,
                      model_name="toy", log=quiet)


def test_noised_beam_replays_a_finished_beam_run(tmp_path, toy_models_dir, toy_de_en):
    """Noised beam from a finished beam run (no second decode) equals a fresh noised-beam decode."""
    from core_seq2seq.toy import toy_corpus
    from synth.loop import translation_step

    _, de = toy_corpus(150, seed=13)
    mono = _write(tmp_path / "mono.de", de)
    model = toy_models_dir / "de_en/best"
    quiet = lambda m: None  # noqa: E731
    gen = lambda method, beam=3: generation_for(method, beam_size=beam, shard_size=100, seed=7)  # noqa: E731
    translation_step(mono, model, tmp_path / "bt.beam", gen("beam"), progress=False, log=quiet)
    said: list[str] = []
    replayed = translation_step(mono, model, tmp_path / "bt.noised_beam", gen("noised_beam"), progress=False,
                                log=said.append, replay_from=tmp_path / "bt.beam")
    assert any("replaying" in m for m in said)
    fresh = translation_step(mono, model, tmp_path / "fresh", gen("noised_beam"), progress=False, log=quiet)
    assert read_jsonl(replayed) == read_jsonl(fresh)
    # Other beam settings, or another model, are decoded afresh, never replayed.
    said.clear()
    translation_step(mono, model, tmp_path / "other", gen("noised_beam", beam=2), progress=False,
                     log=said.append, replay_from=tmp_path / "bt.beam")
    assert not any("replaying" in m for m in said)
    with pytest.raises(SynthError, match="no translation of input line"):
        ReplayTranslator(tmp_path / "bt.beam/synthetic.jsonl").translate(["a line it never saw"])


def test_merge_detects_duplicates_and_gaps(tmp_path):
    from synth.io import file_sha256, write_json, write_jsonl

    plan = ShardPlan(4, 2)
    run = tmp_path / "run"
    (run / "shards").mkdir(parents=True)
    for shard, ids in ((0, [1, 2]), (1, [3, 3])):
        write_jsonl(shard_file(run, shard), [{"id": i} for i in ids])
        write_json(sidecar_file(run, shard), {"sha256": file_sha256(shard_file(run, shard))})
    with pytest.raises(SynthError, match=r"shard-00001.jsonl:2: duplicate record id=3"):
        merge_shards(run, plan)
    write_jsonl(shard_file(run, 1), [{"id": 3}])
    write_json(sidecar_file(run, 1), {"sha256": file_sha256(shard_file(run, 1))})
    with pytest.raises(SynthError, match=r"1 record\(s\) missing, first id=4"):
        merge_shards(run, plan)


# ---- (4) bad input names the file and the line ----------------------------------------------------

def _bad_utf8(tmp_path: Path) -> Path:
    path = tmp_path / "bad.de"
    path.write_bytes(b"Ein Hund.\nEine Katze.\nKaputt \xff hier\n")
    return path


def test_bad_input_errors_name_file_and_line(tmp_path, toy_de_en):
    from synth.filter import FilterConfig, filter_pairs
    from synth.prepare import PrepareConfig, prepare

    bad = _bad_utf8(tmp_path)
    missing = tmp_path / "nope.de.gz"
    gap = _write(tmp_path / "gap.de", ["Ein Hund.", "", "Eine Katze."])
    broken = _write(tmp_path / "pairs.jsonl", ['{"id": 1, "src": "a", "tgt": "b"}', '{"id": 2, "src": '])
    cases = [
        (lambda: prepare(PrepareConfig(inputs=[str(missing)], corpus="files", output=str(tmp_path / "o"))),
         DataError, f"{missing}: file not found"),
        (lambda: prepare(PrepareConfig(inputs=[str(bad)], corpus="files", output=str(tmp_path / "o"))),
         DataError, f"{bad}:3: invalid UTF-8"),
        (lambda: backtranslate(_bt_config(tmp_path, "b1", bad), translator=toy_de_en),
         DataError, f"{bad}:3: invalid UTF-8"),
        (lambda: backtranslate(_bt_config(tmp_path, "b2", gap), translator=toy_de_en),
         SynthError, f"{gap}:2: empty line"),
        (lambda: filter_pairs(FilterConfig(input=str(broken), output=str(tmp_path / "f.jsonl"))),
         SynthError, f"{broken}:2: not valid JSON"),
    ]
    for call, error, message in cases:
        with pytest.raises(error) as info:
            call()
        assert message in str(info.value)


@pytest.mark.parametrize("command, yaml_text, message", [
    ("prepare", "prepare:\n  lang: de\n  max_char: 3\n", "prepare.max_char: unknown key; did you mean 'max_chars'?"),
    ("backtranslate", "backtranslate:\n  generation: {decode: {method: nucleus}}\n", "method must be greedy, beam or sample"),
    ("backtranslate", "backtranslate:\n  generation: {method: topk}\n",
     "backtranslate.generation.method: this key moved; write it as generation.decode.method"),
    ("prepare", "mix:\n  src_lang: en\n", "no 'prepare:' section"),
])
def test_cli_reports_config_errors(tmp_path, capsys, command, yaml_text, message):
    from synth.__main__ import main

    config = _write(tmp_path / "c.yaml", [yaml_text])
    assert main([command, "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and str(config) in err


def test_cli_bad_monolingual_file_exits_2(tmp_path, capsys):
    from synth.__main__ import main

    bad = _bad_utf8(tmp_path)
    config = _write(tmp_path / "c.yaml", [f"prepare:\n  corpus: files\n  inputs: [{bad}]\n  output: {tmp_path / 'o.txt'}"])
    assert main(["prepare", "--config", str(config)]) == 2
    assert f"error: {bad}:3: invalid UTF-8" in capsys.readouterr().err


@pytest.mark.parametrize("path", sorted(str(p) for p in REPO.glob("configs/synth_*.yaml")
                                         if not p.name.endswith("_train.yaml")))  # training configs: test_core_data.py
def test_example_configs_load(path):
    """Every example config builds its dataclasses (unknown keys and bad values would fail here)."""
    import yaml

    from synth.__main__ import _commands, load_section

    data = yaml.safe_load(Path(path).read_text())
    for name, (cls, _run) in _commands().items():
        assert name in data, f"{path} has no {name}: section"
        load_section(cls, path, name)


# ---- (5) filtering ----------------------------------------------------------------------------------

@pytest.mark.parametrize("scores, sel, expected", [
    # rank by dual_xent (lower is better), keep 50% of 4 = 2
    ([{"length_ratio": 1.0, "dual_xent": d} for d in (3.0, 1.0, 2.0, 0.5)],
     {"rank_by": "dual_xent", "keep_fraction": 0.5}, ["rank", None, "rank", None]),
    # round-trip chrF: higher is better; a threshold drops first, the budget counts all pairs
    ([{"length_ratio": 1.0, "round_trip_chrf": c} for c in (90.0, 10.0, 50.0, 70.0)],
     {"rank_by": "round_trip_chrf", "keep_fraction": 0.5, "min_round_trip_chrf": 20.0},
     [None, "round_trip_chrf", "rank", None]),
    # the length ratio rule comes first; rank_by none keeps the rest
    ([{"length_ratio": r} for r in (1.0, 3.5, 1.9)], {"rank_by": "none"}, [None, "length_ratio", None]),
])
def test_select_table(scores, sel, expected):
    from synth.filter import SelectionConfig, select

    assert select(scores, SelectionConfig(**sel)) == expected


def test_dual_xent_formula():
    from synth.filter import dual_xent

    # H_fwd = 10/5 = 2, H_rev = 4/4 = 1: |2 - 1| + 0.5 * 3 = 2.5
    assert dual_xent((-10.0, 5), (-4.0, 4)) == (2.0, 1.0, 2.5)


def test_filter_keeps_the_right_fraction_and_drops_planted_garbage(tmp_path, toy_en_de, toy_de_en, toy_task):
    from synth.filter import FilterConfig, ScoringConfig, SelectionConfig, filter_pairs

    val, _ = read_multi30k("val", "en", "de", toy_task)
    records = [{"id": i + 1, "k": 0, "src": s, "tgt": t, "method": "beam"}
               for i, (s, t) in enumerate(zip(val.src[:98], val.tgt[:98]))]
    # Planted: a misaligned pair of normal length (only the models can tell) and a length outlier.
    records.append({"id": 99, "k": 0, "src": "The old man hears a girl again.", "tgt": val.tgt[0], "method": "beam"})
    records.append({"id": 100, "k": 0, "src": "A dog.", "tgt": " ".join(val.tgt[1:4]), "method": "beam"})
    pairs = tmp_path / "synthetic.jsonl"
    _write(pairs, [json.dumps(r) for r in records])
    cfg = FilterConfig(input=str(pairs), output=str(tmp_path / "filtered.jsonl"), progress=False,
                       scoring=ScoringConfig(shard_size=40),
                       selection=SelectionConfig(max_length_ratio=2.0, rank_by="dual_xent", keep_fraction=0.9))
    out, report = filter_pairs(cfg, forward=toy_en_de, reverse=toy_de_en, log=lambda m: None)
    kept = read_jsonl(out)
    assert len(kept) == report["kept"] == 90
    assert report["dropped"] == {"length_ratio": 1, "round_trip_chrf": 0, "dual_xent": 0, "rank": 9}
    assert 99 not in {r["id"] for r in kept} and 100 not in {r["id"] for r in kept}
    assert {"round_trip_chrf", "dual_xent", "h_fwd", "h_rev"} <= set(kept[0]["filter"])
    saved = json.loads((tmp_path / "filtered.jsonl.report.json").read_text())
    assert saved["dropped"] == report["dropped"]
    # A new selection reuses the saved scores: no model is needed (or loaded) for it.
    cfg.selection = SelectionConfig(max_length_ratio=0.0, rank_by="round_trip_chrf", keep_fraction=0.5)
    _, again = filter_pairs(cfg, log=lambda m: None)
    assert again["kept"] == 50 and again["dropped"]["rank"] == 50


# ---- noise, mixing, tags -----------------------------------------------------------------------------

def test_noise_bounds_and_determinism():
    from synth.noise import NoiseConfig, add_noise, local_shuffle

    words = [f"w{i}" for i in range(12)]
    rng = random.Random(0)
    for _ in range(200):
        shuffled = local_shuffle(words, 3, rng)
        assert sorted(shuffled) == sorted(words)
        assert all(abs(shuffled.index(w) - i) <= 3 for i, w in enumerate(words))
    text = " ".join(words)
    cfg = NoiseConfig()
    assert add_noise(text, cfg, random.Random(5)) == add_noise(text, cfg, random.Random(5))
    noised = [add_noise(text, cfg, random.Random(s)).split() for s in range(300)]
    blanks = sum(w == "<blank>" for n in noised for w in n) / (300 * 12)
    kept = sum(len(n) for n in noised) / (300 * 12)
    assert 0.06 < blanks < 0.12 and 0.86 < kept < 0.94  # ~0.9 * 0.1 blanked, ~0.9 kept
    assert add_noise("one", NoiseConfig(word_dropout=0.99), random.Random(1)) in ("one", "<blank>")


def test_mix_tags_upsamples_and_trains_through_extra_train(tmp_path):
    from core_seq2seq.tokenizer import train_tokenizer
    from core_seq2seq.training import DataConfig, load_corpora
    from synth.mix import MixConfig, mix

    synthetic = [{"id": i, "k": 0, "src": f"The dog sees {i} cats.", "tgt": f"Der Hund sieht {i} Katzen.",
                  "method": "sample"} for i in range(1, 301)]
    synthetic.append({"id": 301, "k": 0, "src": "", "tgt": "Ein Hund.", "method": "sample"})  # sampled just </s>
    path = _write(tmp_path / "syn.jsonl", [json.dumps(r) for r in synthetic])
    real = DataConfig(corpus="toy", src_lang="en", tgt_lang="de", toy_train_pairs=100)
    out = mix(MixConfig(src_lang="en", tgt_lang="de", synthetic=[str(path)], output=str(tmp_path / "mix"),
                        tag="<BT>", real_ratio=1.0, real=real, use="extra_train"), log=lambda m: None)
    meta = json.loads((out / "synth_mix.json").read_text())
    assert meta["real_copies_total"] == 3 and meta["real_copies_in_mix"] == 2  # 3 x 100 real : 300 synthetic
    assert meta["by_provenance"] == {"real": 200, "synthetic:sample": 300}
    assert meta["synthetic_dropped_empty"] == 1
    # core_seq2seq training reads it through data.extra_train: 100 real (its own) + 200 + 300.
    train, _, _ = load_corpora(DataConfig(corpus="toy", src_lang="en", tgt_lang="de", toy_train_pairs=100,
                                          extra_train=[str(out)]), tmp_path)
    assert len(train) == 600
    assert train.src[-1] == "<BT> The dog sees 300 cats." and not train.src[0].startswith("<BT>")
    # The tag survives the subword tokenizer that training learns on this corpus: one piece.
    tok = train_tokenizer(train.src + train.tgt, vocab_size=200)
    assert tok.tokenize(train.src[-1])[0] == "▁<BT>"
    # ... and round-trips through a tokenizer that never saw it (as a fixed sequence of pieces).
    plain = train_tokenizer(train.src[:100] + train.tgt[:100], vocab_size=200)
    assert plain.tokenize("<BT> The dog")[:1] != ["▁<BT>"]


def test_forward_translation_for_self_training(toy_en_de):
    from synth.backtranslate import generate_pairs
    from synth.mix import mix_columns

    src = ["The dog sees a cat.", "A red car follows the man today."]
    records = generate_pairs(src, [1, 2], toy_en_de, generation_for("greedy"), seed=3, mode="forward")
    assert [r["src"] for r in records] == src  # the real text stays the source
    assert all(r["tgt"] and r["mode"] == "forward" for r in records)
    assert mix_columns([], [], records, "en", "de", "", 0)["provenance"] == ["synthetic:ft_greedy"] * 2


# ---- the loop ----------------------------------------------------------------------------------------

def test_loop_runs_a_round_and_resumes(tmp_path, toy_models_dir, toy_en_de, toy_de_en, toy_task, monkeypatch):
    import yaml

    import synth.loop as loop_mod
    from core_seq2seq.testing import toy_experiment
    from synth.loop import LoopConfig, run_loop

    en_mono, de_mono = [], []
    for lang, lines in (("en", en_mono), ("de", de_mono)):
        with gzip.open(toy_task / f"task2/raw/train.1.{lang}.gz", "rt", encoding="utf-8") as f:
            lines.extend(f.read().splitlines()[:150])
    # One training config for both directions: the loop sets its pair: to each.
    exp = toy_experiment("unused", "en", "de", steps=30, train_pairs=300)
    exp["train"]["eval_max_sentences"] = 50
    exp.update(pair="en-de", data={**exp["data"], "src_lang": "{src}", "tgt_lang": "{tgt}"})
    _write(tmp_path / "exp.yaml", [yaml.safe_dump(exp)])
    cfg = LoopConfig(output_dir=str(tmp_path / "loop"), experiment=str(tmp_path / "exp.yaml"),
                     forward_model=str(toy_models_dir / "en_de/best"), reverse_model=str(toy_models_dir / "de_en/best"),
                     mono_src=str(_write(tmp_path / "mono.en", en_mono)),
                     mono_tgt=str(_write(tmp_path / "mono.de", de_mono)), max_rounds=1, tag="<BT>",
                     generation=generation_for("greedy", shard_size=100), progress=False)
    summary = run_loop(cfg, log=lambda m: None)
    r1 = tmp_path / "loop/round-1"
    for name in ("en-de", "de-en"):
        assert (r1 / name / "bt/synthetic.jsonl").exists() and (r1 / name / "model/best/config.json").exists()
        trained = yaml.safe_load((r1 / name / "model/config.yaml").read_text())["data"]
        assert f"{trained['src_lang']}-{trained['tgt_lang']}" == name  # the one config, set to this direction
        assert len(read_jsonl(r1 / name / "bt/synthetic.jsonl")) == 150
    assert [h["round"] for h in summary["rounds"]] == [0, 1]
    assert summary["stop"] in ("max_rounds", "no_improvement")
    # Resuming: the finished round is not redone (nothing may train or translate again).
    monkeypatch.setattr(loop_mod, "run_round", lambda *a, **k: pytest.fail("round 1 was redone"))
    assert run_loop(cfg, log=lambda m: None)["rounds"] == summary["rounds"]


def test_loop_decides_on_val_bleu():
    from synth.loop import decide

    hist = [{"val_bleu": {"en-de": 30.0, "de-en": 32.0}}, {"val_bleu": {"en-de": 30.1, "de-en": 31.0}}]
    assert decide(hist, 0.0) and not decide(hist, 0.5)


def test_benchmark_script_defaults():
    """experiments/bt_multi30k.py is run by hand (hours); here only its command line is checked."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bt_multi30k", REPO / "experiments/bt_multi30k.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = bench.parse_args([])
    assert (args.model_en_de, args.model_de_en) == ("runs/multi30k_en_de/best", "runs/multi30k_de_en/best")
    assert args.variants == list(bench.VARIANTS) and args.pairs == ["en-de", "de-en"]
    assert set(bench.FIRST_ROUND) | {"baseline", "iter2"} == set(bench.VARIANTS)


def test_benchmark_trains_its_baseline_at_the_variants_budget(tmp_path):
    """--train-baseline: the baseline is trained in the work dir with the same step budget as the
    BT variant, and both are scored with significance against it (toy task, tiny budget)."""
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("bt_multi30k", REPO / "experiments/bt_multi30k.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    work = tmp_path / "bt"
    assert bench.main(["--toy", "--work-dir", str(work), "--pairs", "en-de", "--variants", "baseline", "beam_tagged",
                       "--train-baseline", "--max-steps", "20", "--mono-lines", "200", "--quiet"]) == 0
    steps = {}
    for variant in ("baseline", "beam_tagged"):
        stops = [json.loads(line) for line in (work / f"en-de/{variant}/model/train_log.jsonl").read_text().splitlines()
                 if '"event": "stop"' in line]
        steps[variant] = stops[-1]["step"]
    assert steps == {"baseline": 20, "beam_tagged": 20}
    records = [json.loads(line) for line in (work / "results/bt_en_de.jsonl").read_text().splitlines()]
    systems = {r["system"]: r for r in records}
    assert set(systems) == {"en-de.baseline", "en-de.beam_tagged"}
    assert systems["en-de.baseline"]["extra"]["model"].startswith(str(work / "en-de/baseline/model"))
    assert systems["en-de.beam_tagged"]["p_vs_baseline"] is not None
    # Resumed to 40 steps with --average 2: each system picks, on val, its best checkpoint or the
    # mean of its last two (steps 20 and 40), and its records say which and why.
    for variant in ("baseline", "beam_tagged"):
        (work / f"en-de/{variant}/model/synth_trained.json").unlink()
    assert bench.main(["--toy", "--work-dir", str(work), "--pairs", "en-de", "--variants", "baseline", "beam_tagged",
                       "--train-baseline", "--max-steps", "40", "--mono-lines", "200", "--quiet", "--average", "2",
                       "--also-score", f"other={work / 'en-de/beam_tagged/model/ckpt-0000020'}"]) == 0
    records = [json.loads(line) for line in (work / "results/bt_en_de.jsonl").read_text().splitlines()]
    assert {r["system"] for r in records} == {"en-de.baseline", "en-de.beam_tagged", "en-de.other"}
    other = next(r for r in records if r["system"] == "en-de.other")
    assert other["provenance"]["trained_elsewhere"].endswith("ckpt-0000020") and other["p_vs_baseline"] is not None
    for r in records:
        if r["system"] == "en-de.other":
            continue
        prov = r["provenance"]
        assert [Path(c).name for c in prov["averaged_from"]] == ["ckpt-0000020", "ckpt-0000040"]
        assert set(prov["checkpoint_val_bleu"]) == {"best", "average_last2"}
        assert prov["checkpoint_val_bleu"][prov["checkpoint"]] == max(prov["checkpoint_val_bleu"].values())
        assert r["extra"]["model"].endswith("averaged_last2") == (prov["checkpoint"] == "average_last2")


def test_mix_refuses_synthetic_pairs_of_the_other_direction(tmp_path):
    """Back-translating with the forward model makes target-target pairs; synthetic.json says which
    pair a back-translation made, and mix refuses one that is not its own."""
    import json as _json

    from synth.io import SynthError as _SynthError
    from synth.mix import MixConfig as _MixConfig, mix as _mix

    bt = tmp_path / "bt"
    bt.mkdir()
    (bt / "synthetic.jsonl").write_text(_json.dumps({"id": 1, "k": 0, "src": "Ein Hund .", "tgt": "Der Hund ."}) + "\n")
    (bt / "synthetic.json").write_text(_json.dumps({"src_lang": "de", "tgt_lang": "de"}))
    with pytest.raises(_SynthError, match=r"holds de-de pairs .* but the mix is en-de"):
        _mix(_MixConfig(src_lang="en", tgt_lang="de", synthetic=[str(bt / "synthetic.jsonl")], output=str(tmp_path / "mix")),
             log=lambda m: None)
    assert not (tmp_path / "mix").exists()
