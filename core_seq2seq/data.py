"""Parallel corpora: readers for Multi30K, aligned text files, TSV/JSONL and ``datasets`` Datasets.

Every reader returns a ``ParallelCorpus`` and a ``CleaningReport``: empty and over-long pairs are
dropped, counted and reported, never silently. Misaligned files and invalid UTF-8 raise
``DataError`` naming the file and the line.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import json
import os
import shutil
import urllib.error
import urllib.request
from http.client import HTTPException
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

MULTI30K_ENV = "DECADE_MULTI30K"
MULTI30K_URL = "https://raw.githubusercontent.com/multi30k/dataset/master/data"
TEST_SETS = ("test_2016_flickr", "test_2017_flickr", "test_2017_mscoco")
SPLITS = ("train", "val") + TEST_SETS


class DataError(ValueError):
    """Bad input data; the message names the file and (where it applies) the line."""


class DownloadError(DataError):
    """A download that could not reach its server (offline, DNS, refused, timed out)."""


@dataclass
class CleaningReport:
    """What was dropped while reading, and why."""

    source: str
    read: int = 0
    kept: int = 0
    dropped_empty: list[int] = field(default_factory=list)  # 1-based line numbers
    dropped_too_long: list[int] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{self.source}: read {self.read} pairs, kept {self.kept}, dropped {len(self.dropped_empty)} empty"
                f" (lines {self.dropped_empty[:5]}{'...' if len(self.dropped_empty) > 5 else ''}),"
                f" {len(self.dropped_too_long)} over-long"
                f" (lines {self.dropped_too_long[:5]}{'...' if len(self.dropped_too_long) > 5 else ''})")


@dataclass
class ParallelCorpus:
    src: list[str]
    tgt: list[str]
    src_lang: str
    tgt_lang: str
    name: str = ""

    def __len__(self) -> int:
        return len(self.src)


def read_text_lines(path: str | os.PathLike) -> list[str]:
    """Lines of a UTF-8 text file (optionally .gz), without their newline. Errors name file and line.

    A UTF-8 byte order mark at the start of the file is stripped (what sacrebleu and editors do):
    left in, it would glue itself to the first sentence and change its translation and its score.
    A missing file, a directory, an unreadable file, a truncated or fake ``.gz``, invalid UTF-8 and
    a NUL byte (a binary file, never a sentence) raise ``DataError`` naming the file (and line).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a text file")
    gz = path.suffix == ".gz"
    lines = []
    try:
        with (gzip.open if gz else open)(path, "rb") as f:
            for number, raw in enumerate(f, start=1):
                if number == 1 and raw.startswith(codecs.BOM_UTF8):
                    raw = raw[len(codecs.BOM_UTF8):]
                raw = raw.rstrip(b"\r\n")
                nul = raw.find(b"\0")
                if nul >= 0:
                    raise DataError(f"{path}:{number}: NUL byte at byte {nul + 1} of the line (a binary file?)")
                try:
                    lines.append(raw.decode("utf-8"))
                except UnicodeDecodeError as e:
                    raise DataError(f"{path}:{number}: invalid UTF-8 at byte {e.start}: "
                                    f"{raw[max(0, e.start - 10):e.start + 10]!r}") from None
    except PermissionError:
        raise DataError(f"{path}: permission denied: cannot read the file") from None
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        what = "not a valid, complete gzip file: " if gz else ""
        raise DataError(f"{path}: cannot read file ({what}{e})") from None
    return lines


def clean_pairs(src: list[str], tgt: list[str], name: str, max_chars: int = 1000) -> tuple[list[str], list[str], CleaningReport]:
    """Drop pairs where either side is empty (after stripping) or longer than ``max_chars``; report them."""
    report = CleaningReport(source=name, read=len(src))
    keep_src, keep_tgt = [], []
    for number, (s, t) in enumerate(zip(src, tgt), start=1):
        s, t = s.strip(), t.strip()
        if not s or not t:
            report.dropped_empty.append(number)
        elif len(s) > max_chars or len(t) > max_chars:
            report.dropped_too_long.append(number)
        else:
            keep_src.append(s)
            keep_tgt.append(t)
    report.kept = len(keep_src)
    return keep_src, keep_tgt, report


def read_parallel_files(src_path: str | os.PathLike, tgt_path: str | os.PathLike, src_lang: str, tgt_lang: str,
                        max_chars: int = 1000) -> tuple[ParallelCorpus, CleaningReport]:
    """Two aligned plain-text files (line N translates line N), optionally gzipped."""
    src, tgt = read_text_lines(src_path), read_text_lines(tgt_path)
    if len(src) != len(tgt):
        raise DataError(f"{src_path} has {len(src)} lines but {tgt_path} has {len(tgt)}: parallel files must align "
                        f"(first line without a partner: {min(len(src), len(tgt)) + 1})")
    src, tgt, report = clean_pairs(src, tgt, f"{src_path} | {tgt_path}", max_chars)
    return ParallelCorpus(src, tgt, src_lang, tgt_lang, name=Path(src_path).name), report


def read_tsv_or_jsonl(path: str | os.PathLike, src_lang: str, tgt_lang: str,
                      max_chars: int = 1000) -> tuple[ParallelCorpus, CleaningReport]:
    """``src<TAB>tgt`` lines (.tsv) or ``{"<src_lang>": ..., "<tgt_lang>": ...}`` lines (.jsonl)."""
    src, tgt = [], []
    for number, line in enumerate(read_text_lines(path), start=1):
        if str(path).endswith((".jsonl", ".jsonl.gz")):
            try:
                obj = json.loads(line) if line.strip() else {src_lang: "", tgt_lang: ""}
                s, t = obj[src_lang], obj[tgt_lang]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise DataError(f"{path}:{number}: expected a JSON object with keys {src_lang!r} and {tgt_lang!r} ({e})") from None
        else:
            fields = line.split("\t")
            if len(fields) != 2:
                if not line.strip():
                    fields = ["", ""]
                else:
                    raise DataError(f"{path}:{number}: expected 2 tab-separated fields, found {len(fields)}")
            s, t = fields
        src.append(s)
        tgt.append(t)
    src, tgt, report = clean_pairs(src, tgt, str(path), max_chars)
    return ParallelCorpus(src, tgt, src_lang, tgt_lang, name=Path(path).name), report


def from_hf_dataset(dataset, src_lang: str, tgt_lang: str, name: str = "dataset",
                    max_chars: int = 1000) -> tuple[ParallelCorpus, CleaningReport]:
    """A ``datasets.Dataset`` with one column per language (e.g. ``bentrevett/multi30k``) or a
    ``translation`` column of dicts."""
    columns = dataset.column_names
    if src_lang in columns and tgt_lang in columns:
        src, tgt = list(dataset[src_lang]), list(dataset[tgt_lang])
    elif "translation" in columns:
        pairs = dataset["translation"]
        src, tgt = [p[src_lang] for p in pairs], [p[tgt_lang] for p in pairs]
    else:
        raise DataError(f"{name}: dataset has columns {columns}; expected {src_lang!r} and {tgt_lang!r} or 'translation'")
    src, tgt, report = clean_pairs(src, tgt, name, max_chars)
    return ParallelCorpus(src, tgt, src_lang, tgt_lang, name=name), report


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` for every non-blank line of a JSONL file (``.gz`` allowed); a line that is
    not a JSON object is a ``DataError`` naming the file and line."""
    for number, line in enumerate(read_text_lines(path), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{number}: not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{number}: expected a JSON object, got {type(obj).__name__}")
        yield number, obj


# ---- Multi30K ----------------------------------------------------------------------------------

def find_multi30k(root: str | os.PathLike | None = None, download: bool = False) -> Path:
    """The Multi30K folder: ``root``, else $DECADE_MULTI30K, else ``../shared/data/multi30k``, else
    the download cache (fetched there when ``download`` is true)."""
    if root:  # a path the user named is used or rejected, never silently replaced
        if (Path(root) / "task1/raw").is_dir():
            return Path(root)
        raise DataError(f"{root}: not a Multi30K folder (no task1/raw inside)")
    candidates = [os.environ.get(MULTI30K_ENV), Path.cwd().parent / "shared/data/multi30k",
                  Path(__file__).resolve().parents[2] / "shared/data/multi30k"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "task1/raw").is_dir():
            return Path(candidate)
    cache = multi30k_cache_dir()
    missing = missing_from_cache(cache)
    if not missing:
        return cache
    if download:  # fetches what is missing and re-checks every file against its checksum
        return download_multi30k(cache)
    if len(missing) < len(_checksums()):  # an interrupted download: never used as if it were complete
        raise DataError(f"{cache}: the Multi30K download cache is incomplete ({len(missing)} files missing, e.g. "
                        f"{missing[0]}); download again (download=True / --download) to complete it")
    raise DataError("Multi30K not found: pass its path, set $DECADE_MULTI30K, place it at ../shared/data/multi30k, "
                    "or download it (download=True / --download)")


def _checksums() -> dict[str, str]:
    return json.loads((Path(__file__).with_name("multi30k_checksums.json")).read_text())


def missing_from_cache(cache: Path) -> list[str]:
    """Files of the checksum list absent from the download cache (a ``.part`` left by a killed
    download does not count as present)."""
    return [rel for rel in sorted(_checksums()) if not (cache / rel).exists()]


def multi30k_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "decade/multi30k"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def download_multi30k(cache: Path, files: list[str] | None = None) -> Path:
    """Fetch the raw Multi30K files from github.com/multi30k/dataset into ``cache``, checking each
    against the SHA-256 recorded in ``multi30k_checksums.json`` (written atomically, file by file)."""
    checksums = _checksums()
    for rel in files or sorted(checksums):
        target = cache / rel
        if target.exists() and _sha256(target) == checksums[rel]:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(target.suffix + ".part")
        url = f"{MULTI30K_URL}/{rel}"
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as f:  # noqa: S310 (fixed https URL)
                shutil.copyfileobj(response, f)
        except (urllib.error.URLError, HTTPException, TimeoutError, ConnectionError) as e:
            tmp.unlink(missing_ok=True)
            raise DownloadError(f"{url}: could not download Multi30K ({getattr(e, 'reason', None) or e}); "
                                "offline? (or place it at ../shared/data/multi30k or $DECADE_MULTI30K)") from None
        if _sha256(tmp) != checksums[rel]:
            tmp.unlink()
            raise DataError(f"{MULTI30K_URL}/{rel}: checksum mismatch; the download is corrupt or the file changed")
        os.replace(tmp, target)
    return cache


def read_multi30k(split: str, src_lang: str, tgt_lang: str, root: str | os.PathLike | None = None,
                  download: bool = False, max_chars: int = 1000) -> tuple[ParallelCorpus, CleaningReport]:
    """One task-1 split (``train``, ``val`` or a test set) for any language pair among en/de/fr/cs."""
    if split not in SPLITS:
        raise DataError(f"unknown Multi30K split {split!r}; choose from {SPLITS}")
    base = find_multi30k(root, download) / "task1/raw"
    corpus, report = read_parallel_files(base / f"{split}.{src_lang}.gz", base / f"{split}.{tgt_lang}.gz",
                                         src_lang, tgt_lang, max_chars)
    corpus.name = split
    return corpus, report


def multi30k_tok_reference(split: str, lang: str, root: str | os.PathLike | None = None) -> Path | None:
    """The lower-cased, normalised, Moses-tokenised reference of a val/test split, when it exists."""
    path = find_multi30k(root) / f"task1/tok/{split}.lc.norm.tok.{lang}"
    return path if path.exists() else None


def read_monolingual(paths: list[str | os.PathLike]) -> list[str]:
    """Lines of one or more monolingual files (empty lines kept for the caller to count)."""
    lines: list[str] = []
    for p in paths:
        lines.extend(read_text_lines(p))
    return lines
