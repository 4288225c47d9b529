"""n-best files: plain text, N consecutive lines per source, plus two sidecars.

``PATH``             one candidate per line, the candidates of source 0 first (best first), then source 1, ...
``PATH.jsonl``       one JSON object per line of PATH: ``{"sent_id", "rank", "text", "logprob", "length",
                     "score", "method", "methods", "count"}`` (sent_id and rank 0-based)
``PATH.meta.json``   ``{"format", "version", "n_sources", "counts", "fixed_n", ...}`` plus whatever made
                     the file (model, spec, seed, compute): its provenance

With a fixed number of candidates per source (no de-duplication) the text file is what other tools
read (e.g. ``mbrs-decode --num_candidates N``). The meta sidecar is written last, so a file whose
meta exists is complete: resumable jobs test that with :func:`is_complete`. Readers check every
count and every line against the sidecars; errors name the file and the 1-based line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from core_seq2seq.cache import write_json
from core_seq2seq.translator import Candidate
from evals.textio import atomic_write_text, read_lines

from .candidates import PooledCandidate

FORMAT, VERSION = "decade-nbest", 1
KEYS = ("sent_id", "rank", "text", "logprob", "length", "score")


class NbestError(ValueError):
    """A malformed n-best file; the message names the file and (where it applies) the 1-based line."""

    def __init__(self, message: str, path: str | os.PathLike | None = None, line: int | None = None):
        where = "" if path is None else (f"{os.fspath(path)}:{line}: " if line else f"{os.fspath(path)}: ")
        super().__init__(where + message)


def sidecars(path: str | os.PathLike) -> tuple[Path, Path]:
    """The JSONL score sidecar and the meta sidecar of n-best file ``path``."""
    path = Path(path)
    return path.with_name(path.name + ".jsonl"), path.with_name(path.name + ".meta.json")


def is_complete(path: str | os.PathLike) -> bool:
    """True when the file and both sidecars exist (the meta sidecar is written last)."""
    jsonl, meta = sidecars(path)
    return Path(path).exists() and jsonl.exists() and meta.exists()


def _entry(sent_id: int, rank: int, c: Candidate) -> dict[str, Any]:
    method = getattr(c, "method", "")
    return {"sent_id": sent_id, "rank": rank, "text": c.text, "logprob": c.logprob, "length": c.length,
            "score": c.score, "method": method, "methods": list(getattr(c, "methods", None) or ([method] if method else [])),
            "count": getattr(c, "count", 1)}


def write_nbest(path: str | os.PathLike, nbest: Sequence[Sequence[Candidate]], meta: Mapping[str, Any] | None = None) -> None:
    """Write an n-best file and its sidecars atomically (each file replaced whole; the meta last)."""
    lines, entries = [], []
    for sent_id, cands in enumerate(nbest):
        if not cands:
            raise ValueError(f"{os.fspath(path)}: source {sent_id} has no candidates")
        for rank, c in enumerate(cands):
            if "\n" in c.text or "\r" in c.text:
                raise ValueError(f"{os.fspath(path)}: candidate {rank} of source {sent_id} contains a line break")
            lines.append(c.text)
            entries.append(json.dumps(_entry(sent_id, rank, c), ensure_ascii=False, allow_nan=False))
    counts = [len(c) for c in nbest]
    jsonl, meta_path = sidecars(path)
    header = {"format": FORMAT, "version": VERSION, "n_sources": len(counts), "n_lines": len(lines),
              "fixed_n": counts[0] if counts and len(set(counts)) == 1 else None, "counts": counts}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(jsonl, "".join(e + "\n" for e in entries))
    atomic_write_text(path, "".join(t + "\n" for t in lines))
    write_json(meta_path, {**header, **(meta or {})})  # the marker: written last


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The meta sidecar of n-best file ``path``."""
    _, meta_path = sidecars(path)
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NbestError("no meta sidecar (was the file written completely?)", meta_path) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise NbestError(f"not valid JSON ({e})", meta_path) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise NbestError(f"not a {FORMAT} meta file (format={meta.get('format') if isinstance(meta, dict) else None!r})",
                         meta_path)
    return meta


def _check_entry(e: Any, path: Path, number: int) -> dict[str, Any]:
    if not isinstance(e, dict):
        raise NbestError(f"expected a JSON object, got {type(e).__name__}", path, number)
    missing = [k for k in KEYS if k not in e]
    if missing:
        raise NbestError(f"missing key(s): {', '.join(missing)}", path, number)
    for k in ("sent_id", "rank", "length"):
        if not isinstance(e[k], int) or isinstance(e[k], bool) or e[k] < 0:
            raise NbestError(f"'{k}' must be a non-negative integer, got {e[k]!r}", path, number)
    for k in ("logprob", "score"):
        if not isinstance(e[k], (int, float)) or isinstance(e[k], bool):
            raise NbestError(f"'{k}' must be a number, got {e[k]!r}", path, number)
    if not isinstance(e["text"], str):
        raise NbestError(f"'text' must be a string, got {e['text']!r}", path, number)
    return e


def _split(items: list, counts: Sequence[int]) -> list[list]:
    out, i = [], 0
    for n in counts:
        out.append(items[i:i + n])
        i += n
    return out


def read_nbest(path: str | os.PathLike, n_per_source: int | None = None) -> list[list[PooledCandidate]]:
    """Read an n-best file back, checked against its sidecars.

    With the sidecars (decade's own files) every line's text, sent_id and rank is checked. A text-only
    file from another tool needs ``n_per_source``; its candidates carry no scores (NaN).
    """
    path = Path(path)
    texts = read_lines(path, allow_empty=True)
    jsonl, meta_path = sidecars(path)
    if not jsonl.exists():
        if not n_per_source:
            raise NbestError(f"no score sidecar {jsonl.name}; pass n_per_source to read a text-only n-best file", path)
        if len(texts) % n_per_source:
            raise NbestError(f"{len(texts)} lines is not a multiple of n_per_source={n_per_source}; "
                             f"the last source is incomplete from line {len(texts) - len(texts) % n_per_source + 1}", path)
        nan = float("nan")
        return _split([PooledCandidate(t, nan, 0, nan) for t in texts], [n_per_source] * (len(texts) // n_per_source))
    entries = []
    for number, line in enumerate(read_lines(jsonl, allow_empty=True), start=1):
        try:
            entries.append(_check_entry(json.loads(line), jsonl, number))
        except json.JSONDecodeError as e:
            raise NbestError(f"not valid JSON ({e.msg} at column {e.colno})", jsonl, number) from None
    if len(entries) != len(texts):
        raise NbestError(f"{len(texts)} lines but its sidecar {jsonl.name} has {len(entries)}; first line without a "
                         f"partner: {min(len(texts), len(entries)) + 1}", path)
    if meta_path.exists():
        meta = read_meta(path)
        counts = meta.get("counts")
        if not isinstance(counts, list) or sum(counts) != len(texts) or len(counts) != meta.get("n_sources"):
            raise NbestError(f"counts in the meta sidecar (sum {sum(counts) if isinstance(counts, list) else '?'}, "
                             f"n_sources {meta.get('n_sources')}) do not match the {len(texts)} lines of {path.name}",
                             meta_path)
    else:
        counts = []
        for e in entries:
            if e["sent_id"] == len(counts):
                counts.append(0)
            if counts:
                counts[-1] += 1
    if n_per_source and any(n != n_per_source for n in counts):
        bad = next(i for i, n in enumerate(counts) if n != n_per_source)
        raise NbestError(f"source {bad} has {counts[bad]} candidates, expected n_per_source={n_per_source}", path,
                         sum(counts[:bad]) + 1)
    out: list[PooledCandidate] = []
    number = 0
    for sent_id, n in enumerate(counts):
        for rank in range(n):
            e, text = entries[number], texts[number]
            number += 1
            if (e["sent_id"], e["rank"]) != (sent_id, rank):
                raise NbestError(f"expected sent_id {sent_id} rank {rank}, found sent_id {e['sent_id']} rank {e['rank']}",
                                 jsonl, number)
            if e["text"] != text:
                raise NbestError(f"text differs from line {number} of {path.name}: {e['text']!r} vs {text!r}", jsonl, number)
            method = str(e.get("method", ""))
            out.append(PooledCandidate(text, float(e["logprob"]), int(e["length"]), float(e["score"]), [],
                                       method=method, methods=list(e.get("methods") or ([method] if method else [])),
                                       count=int(e.get("count", 1))))
    return _split(out, counts)
