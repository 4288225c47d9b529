"""Prepare monolingual text for back-translation: normalise, clean, decontaminate, de-duplicate.

A line is dropped, for the first of these reasons that applies (each counted in the report):

1. ``empty``: nothing left after normalisation;
2. ``too_long``: more than ``max_chars`` characters or ``max_words`` words;
3. ``eval_overlap``: it occurs in a validation or test set, in any language present (Multi30K
   task-1 val/test splits, task-2 val captions and the blind test, plus ``exclude_eval_files``);
4. ``train_overlap``: it occurs on the target side of the parallel training data (the task-2
   English captions contain every task-1 English training caption: not new data);
5. ``duplicate``: an earlier kept line is identical after normalisation.

Normalisation is Unicode NFC plus whitespace collapsed to single spaces. Decontamination compares
more loosely (case-folded, all whitespace removed) so that "A dog ." and "a dog." count as the same
sentence: a missed test sentence is worse than a few lost monolingual lines.
"""

from __future__ import annotations

import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path

from core_seq2seq.config import config_hash
from core_seq2seq.data import SPLITS, find_multi30k, read_text_lines

from .io import SynthError, write_json, write_lines

REASONS = ("empty", "too_long", "eval_overlap", "train_overlap", "duplicate")
EXAMPLES_PER_REASON = 5


@dataclass
class PrepareConfig:
    lang: str = "de"  # language of the monolingual text (the back-translation target language)
    output: str = "runs/synth/mono.de.txt"  # prepared text, one sentence a line; the report goes to <output>.report.json
    corpus: str = "multi30k"  # multi30k | toy | files: where the default inputs and eval/train sets come from
    root: str | None = None  # Multi30K folder (default: found as core_seq2seq does); corpus=toy: where the toy task is written (default <output dir>/toy_data)
    inputs: list[str] = field(default_factory=list)  # monolingual files (.gz ok); empty: <root>/task2/raw/train.*.<lang>.gz
    exclude_eval_files: list[str] = field(default_factory=list)  # more val/test files whose lines must not be used
    exclude_train_files: list[str] = field(default_factory=list)  # more parallel-training target files to exclude
    exclude_multi30k_eval: bool = True  # exclude every val/test line of <root> (task1 val+tests, task2 val; all languages)
    exclude_multi30k_train: bool = True  # exclude <root>/task1/raw/train.<lang>.gz (the parallel target side)
    max_chars: int = 1000  # drop longer lines (characters, after normalisation)
    max_words: int = 100  # drop lines with more whitespace-separated words (0: no limit)
    max_lines: int = 0  # keep only the first N clean lines (0: all)


def normalise(line: str) -> str:
    """Unicode NFC with whitespace collapsed to single spaces and stripped."""
    return " ".join(unicodedata.normalize("NFC", line).split())


def overlap_key(line: str) -> str:
    """The key decontamination compares: normalised, case-folded, all whitespace removed."""
    return "".join(normalise(line).casefold().split())


def resolve_root(cfg: PrepareConfig) -> Path | None:
    """The Multi30K-layout folder the config points at (the toy task is written on demand)."""
    if cfg.corpus == "files":
        return Path(cfg.root) if cfg.root else None
    if cfg.corpus == "toy":
        from core_seq2seq.toy import write_toy_task

        root = Path(cfg.root) if cfg.root else Path(cfg.output).parent / "toy_data"
        if not (root / "task2/raw").is_dir():
            write_toy_task(root)
        return root
    if cfg.corpus == "multi30k":
        return find_multi30k(cfg.root)
    raise SynthError(f"prepare.corpus must be multi30k, toy or files, got {cfg.corpus!r}")


def default_inputs(root: Path, lang: str) -> list[Path]:
    """Task-2 monolingual training captions of ``lang`` (``train.1..5.<lang>.gz``)."""
    found = sorted((root / "task2/raw").glob(f"train.*.{lang}.gz"))
    if not found:
        raise SynthError(f"{root}/task2/raw: no train.*.{lang}.gz monolingual files")
    return found


def eval_files(root: Path) -> list[Path]:
    """Every val/test file of a Multi30K-layout folder, all languages: task-1 splits, task-2 val and
    the blind test's sources (``blind/*.gz``)."""
    raw = root / "task1/raw"
    files = [p for split in SPLITS if split != "train" for p in sorted(raw.glob(f"{split}.*.gz"))]
    files += sorted((root / "task2/raw").glob("val.*.gz"))
    files += sorted((root / "blind").glob("*.gz"))
    return files


def load_keys(paths: list[Path]) -> dict[str, set[str]]:
    """Overlap keys of each file, by file name."""
    return {str(p): {overlap_key(line) for line in read_text_lines(p) if line.strip()} for p in paths}


@dataclass
class PrepareReport:
    lang: str
    inputs: list[str]
    read: int = 0
    kept: int = 0
    removed: dict[str, int] = field(default_factory=lambda: {r: 0 for r in REASONS})
    eval_overlap_by_file: dict[str, int] = field(default_factory=dict)  # a line may match several files
    train_overlap_by_file: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)  # "file:line: text" of a few removed lines
    truncated_at_max_lines: int = 0

    def note(self, reason: str, where: str, text: str) -> None:
        self.removed[reason] += 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < EXAMPLES_PER_REASON:
            shown.append(f"{where}: {text[:120]}")


def clean_lines(named_lines: list[tuple[str, list[str]]], eval_keys: dict[str, set[str]],
                train_keys: dict[str, set[str]], lang: str, max_chars: int = 1000, max_words: int = 100,
                max_lines: int = 0) -> tuple[list[str], PrepareReport]:
    """The pure core of ``prepare``: (file name, raw lines) in order -> kept lines and the report."""
    report = PrepareReport(lang=lang, inputs=[name for name, _ in named_lines])
    all_eval = set().union(*eval_keys.values()) if eval_keys else set()
    all_train = set().union(*train_keys.values()) if train_keys else set()
    kept: list[str] = []
    seen: set[str] = set()
    for name, lines in named_lines:
        for number, raw in enumerate(lines, start=1):
            report.read += 1
            text = normalise(raw)
            where = f"{name}:{number}"
            key = overlap_key(text)
            if not text:
                report.note("empty", where, raw)
            elif len(text) > max_chars or (max_words and len(text.split()) > max_words):
                report.note("too_long", where, text)
            elif key in all_eval:
                report.note("eval_overlap", where, text)
                for f, keys in eval_keys.items():
                    if key in keys:
                        report.eval_overlap_by_file[f] = report.eval_overlap_by_file.get(f, 0) + 1
            elif key in all_train:
                report.note("train_overlap", where, text)
                for f, keys in train_keys.items():
                    if key in keys:
                        report.train_overlap_by_file[f] = report.train_overlap_by_file.get(f, 0) + 1
            elif text in seen:
                report.note("duplicate", where, text)
            else:
                seen.add(text)
                kept.append(text)
    if max_lines and len(kept) > max_lines:
        report.truncated_at_max_lines = len(kept) - max_lines
        kept = kept[:max_lines]
    report.kept = len(kept)
    return kept, report


def prepare(cfg: PrepareConfig, log=print) -> tuple[Path, PrepareReport]:
    """Read, clean and decontaminate the configured monolingual files; write text and report."""
    root = resolve_root(cfg)
    inputs = [Path(p) for p in cfg.inputs] or (default_inputs(root, cfg.lang) if root else [])
    if not inputs:
        raise SynthError("prepare: no inputs given (set prepare.inputs or prepare.root)")
    eval_paths = [Path(p) for p in cfg.exclude_eval_files]
    train_paths = [Path(p) for p in cfg.exclude_train_files]
    if root is not None and cfg.exclude_multi30k_eval:
        eval_paths += eval_files(root)
    if root is not None and cfg.exclude_multi30k_train:
        train_file = root / f"task1/raw/train.{cfg.lang}.gz"
        if not train_file.exists():
            raise SynthError(f"{train_file}: file not found (needed to exclude the parallel training targets)")
        train_paths.append(train_file)
    named = [(str(p), read_text_lines(p)) for p in inputs]
    kept, report = clean_lines(named, load_keys(eval_paths), load_keys(train_paths), cfg.lang, cfg.max_chars,
                               cfg.max_words, cfg.max_lines)
    out = Path(cfg.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    sha = write_lines(out, kept)
    write_json(report_path(out), {"report": asdict(report), "eval_files": [str(p) for p in eval_paths],
                                  "train_files": [str(p) for p in train_paths], "output_sha256": sha,
                                  "config": asdict(cfg), "config_hash": config_hash(cfg)})
    log(f"prepare: read {report.read} lines, kept {report.kept}; removed "
        + ", ".join(f"{r} {n}" for r, n in report.removed.items()) + f" -> {out}")
    return out, report


def report_path(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.name + ".report.json")
