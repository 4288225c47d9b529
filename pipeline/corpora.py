"""A run's corpora, described once at the top and handed down to every stage.

``resolve_corpora`` turns the ``data:`` section into a ``Corpora``: for each language the
parallel training side, the validation side, every test set (with the tok-lc reference where
one exists), the monolingual files, and the blind sources (no references). Stages read files
named here and never rediscover a layout: Multi30K, the packaged toy task and a user's own files
(``corpus: files``) all end up as the same object.

``decontamination_files`` lists every line an evaluation may read (val, tests, blind, all
languages): monolingual and synthetic data are cleaned against them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from core_seq2seq.data import DataError, find_multi30k, read_text_lines


@dataclass
class EvalSet:
    """One evaluation set of one direction: sources, references (None for a blind set)."""

    name: str
    src_path: str
    ref_path: str | None
    tok_ref_path: str | None = None
    src: list[str] = field(default_factory=list, repr=False)
    ref: list[str] | None = field(default=None, repr=False)
    tok_ref: list[str] | None = field(default=None, repr=False)

    @property
    def blind(self) -> bool:
        return self.ref_path is None


@dataclass
class Corpora:
    """Files of a run, by language. ``train``/``val``: aligned parallel sides; ``tests``: name ->
    language -> file; ``tok_refs``: name -> language -> tok-lc reference; ``monolingual``: language
    -> files; ``blind``: source language -> file (translated into the pair's other language)."""

    kind: str
    train: dict[str, str]
    val: dict[str, str]
    tests: dict[str, dict[str, str]] = field(default_factory=dict)
    tok_refs: dict[str, dict[str, str]] = field(default_factory=dict)
    monolingual: dict[str, list[str]] = field(default_factory=dict)
    blind: dict[str, str] = field(default_factory=dict)

    def eval_sets(self, src: str, tgt: str, tune_limit: int = 0) -> dict[str, EvalSet]:
        """val (first ``tune_limit`` lines when set: it chooses settings), the tests that have both
        sides, then ``blind`` when there is a blind source in ``src``. Lines are read here, once."""
        out: dict[str, EvalSet] = {}
        named = [("val", self.val)] + list(self.tests.items())
        for name, files in named:
            if src not in files or tgt not in files:
                continue  # e.g. a test set without this language
            s, r = read_text_lines(files[src]), read_text_lines(files[tgt])
            if len(s) != len(r):
                raise DataError(f"{files[src]} has {len(s)} lines but {files[tgt]} has {len(r)}: not aligned")
            if name == "val" and tune_limit:
                s, r = s[:tune_limit], r[:tune_limit]
            tok = self.tok_refs.get(name, {}).get(tgt)
            out[name] = EvalSet(name, files[src], files[tgt], tok, s, r,
                                read_text_lines(tok) if tok and name != "val" else None)
        if src in self.blind:
            out["blind"] = EvalSet("blind", self.blind[src], None, None, read_text_lines(self.blind[src]))
        return out

    def decontamination_files(self) -> list[str]:
        """Every evaluation-side file, all languages (val, tests, blind)."""
        files = list(self.val.values()) + [p for t in self.tests.values() for p in t.values()]
        return files + list(self.blind.values())


def multi30k_corpora(root: Path, langs: tuple[str, ...], test_sets: list[str]) -> Corpora:
    """Multi30K's (or the toy task's) layout: task1/raw splits, task2 captions, blind/ sources."""
    raw = root / "task1/raw"

    def sides(split: str) -> dict[str, str]:
        return {lang: str(raw / f"{split}.{lang}.gz") for lang in langs if (raw / f"{split}.{lang}.gz").exists()}

    missing = [f"{raw}/train.{lang}.gz" for lang in langs if not (raw / f"train.{lang}.gz").exists()]
    if missing:
        raise DataError(f"{missing[0]}: file not found (the language pair is not in this corpus)")
    unknown = [name for name in test_sets if not sides(name)]
    if unknown:
        known = sorted({p.name.split(".")[0] for p in raw.glob("*.gz")} - {"train", "val"})
        raise DataError(f"test_sets: no files for {', '.join(map(repr, unknown))} in {raw} (have: {', '.join(known)})")
    tests = {name: sides(name) for name in test_sets}
    tok_refs = {name: {lang: str(p) for lang in langs if (p := root / f"task1/tok/{name}.lc.norm.tok.{lang}").exists()}
                for name in ["val"] + list(test_sets)}
    mono = {lang: [str(p) for p in sorted((root / "task2/raw").glob(f"train.*.{lang}.gz"))] for lang in langs}
    blind = {}
    for path in sorted((root / "blind").glob("*.gz")):
        lang = path.name[:-3].rsplit(".", 1)[-1]  # test_2018_flickr_a.en.gz -> en
        if lang in langs:
            blind[lang] = str(path)
    return Corpora("multi30k", sides("train"), sides("val"), tests, tok_refs, mono, blind)


@dataclass
class FilesConfig:
    """``corpus: files``: a user's own data. Every path may be plain text or .gz, one sentence a line."""

    train: dict[str, str] = field(default_factory=dict)  # language -> training side (aligned across languages)
    val: dict[str, str] = field(default_factory=dict)  # language -> validation side (chooses every setting)
    tests: dict[str, dict[str, str]] = field(default_factory=dict)  # test-set name -> language -> file
    monolingual: dict[str, list[str]] = field(default_factory=dict)  # language -> monolingual files (back-translation, LM)
    blind: dict[str, str] = field(default_factory=dict)  # source language -> sources without references


def files_corpora(files: FilesConfig, langs: tuple[str, ...]) -> Corpora:
    """A user's own files; every named file must exist, every language of the run must be present."""
    for section, mapping in (("train", files.train), ("val", files.val)):
        for lang in langs:
            if lang not in mapping:
                raise DataError(f"data.files.{section}: no file for language {lang!r} (have: {sorted(mapping) or 'none'})")
    named = [(f"data.files.train.{k}", v) for k, v in files.train.items()]
    named += [(f"data.files.val.{k}", v) for k, v in files.val.items()]
    named += [(f"data.files.tests.{t}.{k}", v) for t, m in files.tests.items() for k, v in m.items()]
    named += [(f"data.files.monolingual.{k}", v) for k, vs in files.monolingual.items() for v in vs]
    named += [(f"data.files.blind.{k}", v) for k, v in files.blind.items()]
    for key, path in named:
        if not Path(path).is_file():
            raise DataError(f"{key}: {path}: file not found")
    return Corpora("files", dict(files.train), dict(files.val), {k: dict(v) for k, v in files.tests.items()}, {},
                   {k: list(v) for k, v in files.monolingual.items()}, dict(files.blind))


def resolve_corpora(corpus: str, langs: tuple[str, ...], test_sets: list[str], *, root: str | None = None,
                    download: bool = False, files: FilesConfig | None = None, toy_dir: Path | None = None,
                    toy_train_pairs: int = 3000) -> Corpora:
    """The ``data:`` section -> ``Corpora`` (``corpus`` is multi30k, toy or files)."""
    if corpus == "multi30k":
        return multi30k_corpora(find_multi30k(root, download), langs, test_sets)
    if corpus == "toy":
        from core_seq2seq.toy import write_toy_task

        if toy_dir is None:
            raise ValueError("the toy corpus needs a directory to be written to")
        unknown = [t for t in test_sets if t != "test_2016_flickr"]
        if unknown:  # checked before the toy task is written
            raise DataError(f"test_sets: no files for {', '.join(map(repr, unknown))} in the toy task (have: test_2016_flickr)")
        marker = toy_dir / "toy_train_pairs.txt"  # written last: a kill midway rewrites the task
        if not marker.exists() or marker.read_text().strip() != str(toy_train_pairs):
            write_toy_task(toy_dir, n_train=toy_train_pairs)
            marker.write_text(f"{toy_train_pairs}\n")
        return dataclasses.replace(multi30k_corpora(toy_dir, langs, test_sets), kind="toy")  # Multi30K's layout
    if corpus == "files":
        return files_corpora(files or FilesConfig(), langs)
    raise DataError(f"data.corpus must be multi30k, toy or files, got {corpus!r}")
