"""Readers and configs: every bad input gives a clear error naming the file (and line)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from core_seq2seq.__main__ import main as cli_main
from core_seq2seq.config import ConfigError, from_dict, load_config
from core_seq2seq.data import (DataError, find_multi30k, read_multi30k, read_parallel_files, read_text_lines,
                               read_tsv_or_jsonl)
from core_seq2seq.training import ExperimentConfig

ROOT = Path(__file__).resolve().parents[1]


def _write(path, lines, raw: bytes | None = None):
    if raw is not None:
        path.write_bytes(raw)
    elif str(path).endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
    else:
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_aligned_files_gz_and_plain(tmp_path):
    src = _write(tmp_path / "a.en.gz", ["one", "two"])
    tgt = _write(tmp_path / "a.de", ["eins", "zwei"])
    corpus, report = read_parallel_files(src, tgt, "en", "de")
    assert corpus.src == ["one", "two"] and corpus.tgt == ["eins", "zwei"] and report.kept == 2


@pytest.mark.parametrize("src_lines,tgt_lines,raw,pattern", [
    (["a", "b", "c"], ["x", "y"], None, r"a\.en has 3 lines but .*b\.de has 2"),
    (["a", "b"], None, b"ok\n\xff\xfe bad\n", r"b\.de:2: invalid UTF-8"),
])
def test_bad_parallel_input_names_file_and_line(tmp_path, src_lines, tgt_lines, raw, pattern):
    src = _write(tmp_path / "a.en", src_lines)
    tgt = _write(tmp_path / "b.de", tgt_lines, raw)
    with pytest.raises(DataError, match=pattern):
        read_parallel_files(src, tgt, "en", "de")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match=r"nope\.en: file not found"):
        read_text_lines(tmp_path / "nope.en")


def test_empty_and_overlong_lines_are_dropped_and_reported(tmp_path):
    src = _write(tmp_path / "a.en", ["fine", "", "x" * 50, "also fine"])
    tgt = _write(tmp_path / "a.de", ["gut", "leer", "lang", "  "])
    corpus, report = read_parallel_files(src, tgt, "en", "de", max_chars=20)
    assert corpus.src == ["fine"]
    assert report.read == 4 and report.kept == 1
    assert report.dropped_empty == [2, 4] and report.dropped_too_long == [3]
    assert "dropped 2 empty" in report.summary() and "1 over-long" in report.summary()


@pytest.mark.parametrize("name,content,pattern", [
    ("c.tsv", "a\tb\nonly-one-field\n", r"c\.tsv:2: expected 2 tab-separated fields"),
    ("c.jsonl", '{"en": "a", "de": "b"}\n{"en": "a"}\n', r"c\.jsonl:2: expected a JSON object"),
    ("c.jsonl", '{"en": "a", "de": "b"}\nnot json\n', r"c\.jsonl:2: expected a JSON object"),
])
def test_tsv_jsonl_errors(tmp_path, name, content, pattern):
    (tmp_path / name).write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=pattern):
        read_tsv_or_jsonl(tmp_path / name, "en", "de")


def test_tsv_and_jsonl_read(tmp_path):
    (tmp_path / "c.tsv").write_text("a\tb\nc\td\n", encoding="utf-8")
    (tmp_path / "c.jsonl").write_text(json.dumps({"en": "a", "de": "b"}) + "\n", encoding="utf-8")
    assert read_tsv_or_jsonl(tmp_path / "c.tsv", "en", "de")[0].tgt == ["b", "d"]
    assert read_tsv_or_jsonl(tmp_path / "c.jsonl", "en", "de")[0].src == ["a"]


def test_hf_dataset_reader():
    from datasets import Dataset

    from core_seq2seq.data import from_hf_dataset

    ds = Dataset.from_dict({"en": ["a", "b", ""], "de": ["x", "y", "z"]})
    corpus, report = from_hf_dataset(ds, "de", "en")
    assert corpus.src == ["x", "y"] and report.dropped_empty == [3]


def test_multi30k_layout_reader_on_toy_task(toy_task):
    corpus, _ = read_multi30k("val", "de", "en", root=toy_task)
    assert len(corpus) == 200 and corpus.src_lang == "de"
    with pytest.raises(DataError, match="unknown Multi30K split"):
        read_multi30k("dev", "en", "de", root=toy_task)
    with pytest.raises(DataError, match="not a Multi30K folder"):
        find_multi30k(toy_task / "task2")


def test_multi30k_checksums_cover_every_file():
    from pathlib import Path

    sums = json.loads((Path(__file__).parents[1] / "core_seq2seq/multi30k_checksums.json").read_text())
    for split in ("train", "val", "test_2016_flickr", "test_2017_flickr", "test_2017_mscoco"):
        for lang in ("en", "de", "fr"):
            assert f"task1/raw/{split}.{lang}.gz" in sums
    assert all(len(v) == 64 for v in sums.values())


@pytest.mark.parametrize("yaml_text,pattern", [
    ("train:\n  lr_warmup: 3\n", r"train\.lr_warmup: unknown key"),
    ("modle:\n  embed_size: 3\n", r"modle: unknown key; did you mean 'model'"),
    ("train:\n  lr: fast\n", r"train\.lr: expected float"),
    ("train: [1, 2\n", r"invalid YAML"),
])
def test_bad_configs_name_the_key(tmp_path, yaml_text, pattern):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=pattern):
        load_config(ExperimentConfig, path)


def test_config_defaults_and_nesting():
    cfg = from_dict(ExperimentConfig, {"train": {"lr": 1}, "decode": {"beam_size": 12}})
    assert cfg.train.lr == 1.0 and cfg.decode.beam_size == 12 and cfg.model.attention


def test_cli_reports_bad_config_without_traceback(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  bogus: 1\n")
    assert cli_main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "bad.yaml" in err and "train.bogus" in err and "Traceback" not in err


@pytest.mark.parametrize("n_train", [300, 1500])
def test_toy_task_evaluation_sets_do_not_depend_on_the_training_size(tmp_path, n_train):
    """A different number of toy training pairs changes only the training set: val, test and blind
    sentences stay the same and never become training pairs."""
    import gzip as _gzip

    from core_seq2seq.toy import write_toy_task

    def lines(root, rel):
        return _gzip.open(root / rel, "rt", encoding="utf-8").read().splitlines()

    small, other = write_toy_task(tmp_path / "a", n_train=100), write_toy_task(tmp_path / "b", n_train=n_train)
    evals = ["task1/raw/val.en.gz", "task1/raw/test_2016_flickr.en.gz", "blind/test_2018_flickr_a.en.gz"]
    for rel in evals:
        assert lines(small, rel) == lines(other, rel)
    train = set(lines(other, "task1/raw/train.en.gz"))
    assert len(train) == n_train and not train & {x for rel in evals for x in lines(other, rel)}


def test_a_partial_download_cache_is_not_taken_for_complete(tmp_path):
    """A cache left by an interrupted download (one file, a .part) lists what is missing."""
    from core_seq2seq.data import _checksums, missing_from_cache

    every = sorted(_checksums())
    assert missing_from_cache(tmp_path) == every
    (tmp_path / "task1/raw").mkdir(parents=True)
    (tmp_path / "task1/raw/train.en.gz").write_bytes(b"x")
    (tmp_path / "task1/raw/train.de.gz.part").write_bytes(b"x")
    missing = missing_from_cache(tmp_path)
    assert "task1/raw/train.en.gz" not in missing and "task1/raw/train.de.gz" in missing
    assert len(missing) == len(every) - 1


@pytest.mark.parametrize("added, same_key", [
    (0, True),     # a setting added later, at its default: older runs' keys (and cached stages) hold
    (3, False),    # set to anything else: part of the key
])
def test_a_setting_added_later_keeps_old_keys_until_it_is_set(added, same_key):
    import dataclasses

    from core_seq2seq.config import KEYED_WHEN_SET, config_hash, key_dict

    @dataclasses.dataclass
    class Old:
        lr: float = 0.1
        sizes: list = dataclasses.field(default_factory=lambda: [1, 2])

    @dataclasses.dataclass
    class New(Old):
        extra: int = dataclasses.field(default=0, metadata=KEYED_WHEN_SET)

    @dataclasses.dataclass
    class Outer:
        inner: Old

    assert key_dict(Outer(New(extra=added))) == ({"inner": {"lr": 0.1, "sizes": [1, 2]}} if same_key else
                                                {"inner": {"lr": 0.1, "sizes": [1, 2], "extra": added}})
    assert (config_hash(Outer(New(extra=added))) == config_hash(Outer(Old()))) is same_key
    assert config_hash(Old()) == config_hash(dataclasses.asdict(Old()))  # dataclass or dict: one hash


def test_an_offline_download_is_a_clear_error_and_leaves_nothing(tmp_path, monkeypatch):
    import urllib.error

    from core_seq2seq.data import DownloadError, download_multi30k

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    with pytest.raises(DownloadError, match=r"multi30k/dataset.*could not download Multi30K \(Name or service"):
        download_multi30k(tmp_path)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # no .part, no half file


# ---- one config file for both directions ------------------------------------------------------

@pytest.mark.parametrize("text, overrides, section, expect", [
    ("pair: en-de\noutput_dir: runs/m_{src}_{tgt}\ndata: {src_lang: '{src}', tgt_lang: '{tgt}'}\n", [], None,
     {"output_dir": "runs/m_en_de", "data": {"src_lang": "en", "tgt_lang": "de"}}),
    ("pair: en-de\noutput_dir: runs/m_{src}_{tgt}\ndata: {src_lang: '{src}', tgt_lang: '{tgt}'}\n", ["pair=de-en"], None,
     {"output_dir": "runs/m_de_en", "data": {"src_lang": "de", "tgt_lang": "en"}}),
    # In a file of sections, pair= applies at the top level and the other overrides inside the section.
    ("pair: en-de\nnbest: {out: 'n.{pair}.jsonl', files: ['a.{src}', 'b.{tgt}'], beam: 5}\n",
     ["pair=de-en", "beam=8"], "nbest", {"out": "n.de-en.jsonl", "files": ["a.de", "b.en"], "beam": 8}),
    ("lr: 0.1\n", ["lr=0.2"], None, {"lr": 0.2}),  # no pair, no placeholder: unchanged
    # Without a top-level pair:, pair= is the section's own key (the sweep's record label).
    ("sweep: {pair: en-de, out: x}\n", ["pair=de-en"], "sweep", {"pair": "de-en", "out": "x"}),
])
def test_one_config_gives_both_directions(tmp_path, text, overrides, section, expect):
    from core_seq2seq.config import read_config

    path = tmp_path / "c.yaml"
    path.write_text(text)
    assert read_config(path, overrides, section) == expect


@pytest.mark.parametrize("text, message", [
    ("output_dir: runs/{src}\n", r"c.yaml: output_dir: 'runs/\{src\}' uses \{src\}/\{tgt\}/\{pair\} but the file has no top-level 'pair:'"),
    ("pair: ende\n", "c.yaml: pair: expected SOURCE-TARGET language codes such as en-de, got 'ende'"),
    ("pair: 3\n", "c.yaml: pair: expected SOURCE-TARGET"),
    ("pair: en-de\nx: 1\n", None),
])
def test_a_bad_pair_is_named(tmp_path, text, message):
    from core_seq2seq.config import ConfigError, read_config

    path = tmp_path / "c.yaml"
    path.write_text(text)
    if message is None:
        assert read_config(path) == {"x": 1}
        return
    with pytest.raises(ConfigError, match=message):
        read_config(path)


@pytest.mark.parametrize("name", ["multi30k_train", "synth_toy_train", "refiner_multi30k", "agent_multi30k",
                                  "agent_multi30k_refiner"])
def test_shipped_two_direction_configs_load_both_ways(name):
    from core_seq2seq.config import read_config

    path = ROOT / f"configs/{name}.yaml"
    for pair in ("en-de", "de-en"):
        src, tgt = pair.split("-")
        if name.startswith("agent"):
            from agents.config import load_agent_config

            cfg = load_agent_config(path, sets=[f"pair={pair}"])
            assert (cfg.models.src_lang, cfg.models.tgt_lang) == (src, tgt)
            assert cfg.models.forward == [f"runs/multi30k_{src}_{tgt}/best"] and f"train.{tgt}.gz" in cfg.lexicon.tgt_path
        else:
            cfg = from_dict(ExperimentConfig, read_config(path, [f"pair={pair}"]))
            assert (cfg.data.src_lang, cfg.data.tgt_lang) == (src, tgt) and src in cfg.output_dir
