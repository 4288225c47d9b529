"""Files synth reads and writes: JSONL records, sidecars, atomic writes of files and directories.

Every reader raises ``SynthError`` (a ``DataError``, so ``ValueError``) naming the file and the
1-based line; every writer goes through a temporary file (or directory) and ``os.replace`` so
that a kill leaves the old artifact or the complete new one, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from core_seq2seq.cache import write_json  # noqa: F401  (re-exported for synth)
from core_seq2seq.training import replace_dir  # noqa: F401  (re-exported for synth)
from core_seq2seq.data import DataError, iter_jsonl
from evals.textio import atomic_write_text


class SynthError(DataError):
    """Bad input or an inconsistent artifact; the message names the file (and line)."""


def read_jsonl(path: str | os.PathLike, required: Iterable[str] = ()) -> list[dict]:
    """Records of a JSONL file (``.gz`` allowed); each must be an object holding ``required`` keys."""
    try:
        numbered = list(iter_jsonl(path))
    except DataError as e:
        raise SynthError(str(e)) from None
    for number, obj in numbered:
        missing = [k for k in required if k not in obj]
        if missing:
            raise SynthError(f"{path}:{number}: missing key(s) {', '.join(missing)}")
    return [obj for _, obj in numbered]


def jsonl_text(records: Iterable[dict]) -> str:
    # ensure_ascii=False keeps German text readable in the files; json escapes any newline in a value.
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> str:
    """Write records atomically; returns the SHA-256 of the bytes written (for sidecars)."""
    text = jsonl_text(records)
    atomic_write_text(path, text)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SynthError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SynthError(f"{path}: not valid JSON ({e})") from None


def write_yaml(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, yaml.safe_dump(obj, sort_keys=False, allow_unicode=True))


def write_lines(path: str | os.PathLike, lines: Iterable[str]) -> str:
    """One line per item, atomically; returns the SHA-256 of the file."""
    text = "".join(line + "\n" for line in lines)
    atomic_write_text(path, text)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fresh_tmp_dir(final: Path) -> Path:
    tmp = final.with_name(final.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    return tmp
