"""Result records: one JSONL line per (system, test set), with a schema checked on write and read.

Every number on the leaderboard comes from one of these records, and every record
points at its hypothesis file (and, where known, its references), so any number can
be re-scored by anyone (``python -m evals verify RESULTS.jsonl``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from .errors import EvalsInputError
from .metrics import score_corpus
from .significance import DEFAULT_SEED, paired_delta_ci, paired_significance
from .textio import atomic_write_text, read_lines

SCHEMA_VERSION = 1
# The ladder's usual steps, in their usual order; other stage names are allowed.
STAGES = ("baseline", "beam", "bt", "rerank", "mbr", "agent")
REQUIRED_KEYS = (
    "system", "stage", "pair", "test_set", "bleu", "chrf", "tok_bleu", "bleu_ci",
    "p_vs_prev", "p_vs_baseline", "signature", "config_hash", "compute", "hyp_path",
)
COMPUTE_REQUIRED = ("train_seconds", "decode_seconds", "forward_calls")
_PAIR_RE = re.compile(r"^[A-Za-z0-9_]+-[A-Za-z0-9_]+$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def _now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


@dataclass(kw_only=True)
class ResultRecord:
    """One system scored on one test set. ``None`` means "not measured / not applicable".

    ``compute`` holds ``train_seconds`` (cumulative training behind this system),
    ``decode_seconds`` and ``forward_calls`` (decoder/scorer forward calls to produce this
    test set's output), optionally ``flops`` (estimated FLOPs of that decoding),
    ``train_flops`` and ``device``; more keys are allowed.
    ``significance`` describes how ``p_vs_prev``/``p_vs_baseline`` were obtained
    (test, metric, samples, seed, the systems compared, deltas with paired CIs).
    """

    system: str
    stage: str
    pair: str
    test_set: str
    bleu: float
    bleu_ci: list[float]
    chrf: float
    chrf_ci: list[float] | None = None
    ter: float | None = None
    tok_bleu: float | None
    tok_bleu_ci: list[float] | None = None
    p_vs_prev: float | None
    p_vs_baseline: float | None
    significance: dict[str, Any] | None = None
    seed: int | None = None
    signature: dict[str, str | None]
    n_lines: int | None = None
    compute: dict[str, Any]
    decode: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    config_path: str | None = None
    config_hash: str | None
    hyp_path: str
    hyp_sha256: str | None = None
    src_path: str | None = None
    ref_path: str | None = None
    tok_ref_path: str | None = None
    created: str = field(default_factory=_now)
    extra: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @property
    def trg_lang(self) -> str:
        return self.pair.split("-", 1)[1]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ResultRecord":
        """Build from a mapping, raising EvalsInputError (without file/line) on a schema problem."""
        problem = validate_dict(data)
        if problem:
            raise EvalsInputError(problem)
        return cls(**{k: _copy(v) for k, v in data.items()})


def _copy(value: Any) -> Any:
    return json.loads(json.dumps(value)) if isinstance(value, (dict, list)) else value


FIELDS = {f.name for f in dataclasses.fields(ResultRecord)}


# --- validation --------------------------------------------------------------------------

def _is_num(v: Any) -> bool:
    # bool is an int subclass: `true` in a JSON record is a bug, not a score.
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_str(v: Any, nullable: bool = False) -> str | None:
    if v is None:
        return None if nullable else "must be a non-empty string, got null"
    if not isinstance(v, str) or not v.strip():
        return f"must be a non-empty string, got {v!r}"
    if "\n" in v:
        return "must not contain a newline"
    return None


def _check_num(v: Any, nullable: bool = False, lo: float | None = None, hi: float | None = None,
               integer: bool = False) -> str | None:
    if v is None:
        return None if nullable else "must be a number, got null"
    if integer and not (isinstance(v, int) and not isinstance(v, bool)):
        return f"must be an integer, got {v!r}"
    if not _is_num(v):
        return f"must be a finite number{' or null' if nullable else ''}, got {v!r}"
    # A little slack: sacrebleu's floating-point sums give e.g. 100.00000000000004 for a perfect match.
    if lo is not None and v < lo - 1e-9:
        return f"must be >= {lo}, got {v!r}"
    if hi is not None and v > hi + 1e-9:
        return f"must be <= {hi}, got {v!r}"
    return None


def _check_ci(v: Any, nullable: bool = False) -> str | None:
    if v is None:
        return None if nullable else "must be [low, high], got null"
    if not isinstance(v, list) or len(v) != 2 or not all(_is_num(x) for x in v):
        return f"must be a list [low, high] of two finite numbers, got {v!r}"
    if v[0] > v[1]:
        return f"low must not exceed high, got {v!r}"
    return None


def _check_dict(v: Any, nullable: bool = False) -> str | None:
    if v is None:
        return None if nullable else "must be an object, got null"
    if not isinstance(v, dict):
        return f"must be an object, got {type(v).__name__}"
    return None


_CHECKS = {
    "system": lambda v: _check_str(v),
    "stage": lambda v: _check_str(v),
    "pair": lambda v: _check_str(v) or (None if _PAIR_RE.match(v) else f"must look like 'en-de', got {v!r}"),
    "test_set": lambda v: _check_str(v),
    "bleu": lambda v: _check_num(v, lo=0, hi=100),
    "chrf": lambda v: _check_num(v, lo=0, hi=100),
    "ter": lambda v: _check_num(v, nullable=True, lo=0),
    "tok_bleu": lambda v: _check_num(v, nullable=True, lo=0, hi=100),
    "bleu_ci": lambda v: _check_ci(v),
    "chrf_ci": lambda v: _check_ci(v, nullable=True),
    "tok_bleu_ci": lambda v: _check_ci(v, nullable=True),
    "p_vs_prev": lambda v: _check_num(v, nullable=True, lo=0, hi=1),
    "p_vs_baseline": lambda v: _check_num(v, nullable=True, lo=0, hi=1),
    "config_hash": lambda v: _check_str(v, nullable=True),
    "config_path": lambda v: _check_str(v, nullable=True),
    "hyp_path": lambda v: _check_str(v),
    "hyp_sha256": lambda v: _check_str(v, nullable=True) or (
        None if v is None or _SHA256_RE.match(v) else f"must be 64 lower-case hex digits (a SHA-256), got {v!r}"),
    "ref_path": lambda v: _check_str(v, nullable=True),
    "tok_ref_path": lambda v: _check_str(v, nullable=True),
    "src_path": lambda v: _check_str(v, nullable=True),
    "n_lines": lambda v: _check_num(v, nullable=True, lo=1, integer=True),
    "seed": lambda v: _check_num(v, nullable=True, integer=True),
    "created": lambda v: _check_str(v),
    "provenance": lambda v: _check_dict(v),
    "decode": lambda v: _check_dict(v),
    "significance": lambda v: _check_dict(v, nullable=True),
    "extra": lambda v: _check_dict(v),
    "schema_version": lambda v: _check_num(v, integer=True, lo=1, hi=SCHEMA_VERSION),
}


def _check_signature(sig: Any, data: Mapping[str, Any]) -> str | None:
    if (p := _check_dict(sig)):
        return f"field 'signature' {p}"
    for key in ("bleu", "chrf", "ter", "tok_bleu"):
        if key not in sig:
            return f"field 'signature' is missing key '{key}'"
        nullable = key in ("ter", "tok_bleu")
        if (p := _check_str(sig[key], nullable=nullable)):
            return f"field 'signature.{key}' {p}"
    if data.get("tok_bleu") is not None and sig.get("tok_bleu") is None:
        return "field 'signature.tok_bleu' must be given when 'tok_bleu' is"
    return None


def _check_compute(comp: Any) -> str | None:
    if (p := _check_dict(comp)):
        return f"field 'compute' {p}"
    missing = [k for k in COMPUTE_REQUIRED if k not in comp]
    if missing:
        return f"field 'compute' is missing key(s): {', '.join(missing)} (use null for 'not measured')"
    checks = {
        "train_seconds": lambda v: _check_num(v, nullable=True, lo=0),
        "decode_seconds": lambda v: _check_num(v, nullable=True, lo=0),
        "forward_calls": lambda v: _check_num(v, nullable=True, lo=0, integer=True),
        "flops": lambda v: _check_num(v, nullable=True, lo=0),
        "train_flops": lambda v: _check_num(v, nullable=True, lo=0),
        "device": lambda v: _check_str(v, nullable=True),
    }
    for key, check in checks.items():
        if key in comp and (p := check(comp[key])):
            return f"field 'compute.{key}' {p}"
    return None


def validate_dict(data: Any) -> str | None:
    """Return the first schema problem of a decoded record, or None if it is valid."""
    if not isinstance(data, dict):
        return f"a record must be a JSON object, got {type(data).__name__}"
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        return f"record is missing required key(s): {', '.join(missing)}"
    unknown = sorted(set(data) - FIELDS)
    if unknown:
        return f"unknown key(s): {', '.join(unknown)} (put additional information under 'extra')"
    for key, check in _CHECKS.items():
        if key in data and (p := check(data[key])):
            return f"field '{key}' {p}"
    return _check_signature(data["signature"], data) or _check_compute(data["compute"])


# --- hashing -----------------------------------------------------------------------------

def config_hash(config: Mapping[str, Any]) -> str:
    """A short stable hash of a (resolved) config mapping: key order does not matter."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def lines_sha256(lines: Iterable[str]) -> str:
    """Hash of a list of lines as they are written to a text file (each followed by "\\n")."""
    h = hashlib.sha256()
    for line in lines:
        h.update(line.encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


# --- building ----------------------------------------------------------------------------

def make_record(
    system: str,
    stage: str,
    pair: str,
    test_set: str,
    hyps: Sequence[str],
    refs: Sequence[str],
    tok_refs: Sequence[str] | None = None,
    *,
    hyp_path: str,
    compute: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    config_path: str | None = None,
    config_digest: str | None = None,
    provenance: Mapping[str, Any] | None = None,
    decode: Mapping[str, Any] | None = None,
    ref_path: str | None = None,
    tok_ref_path: str | None = None,
    src_path: str | None = None,
    n_samples: int = 1000,
    seed: int = DEFAULT_SEED,
    extra: Mapping[str, Any] | None = None,
) -> ResultRecord:
    """Score ``hyps`` (BLEU, chrF++, TER, tok-lc BLEU if ``tok_refs``) with bootstrap CIs into a record.

    The config is identified by ``config`` (hashed with :func:`config_hash`) or a ready
    ``config_digest``. Missing compute keys are recorded as null ("not measured").
    p-values are left None: fill them for a ladder with :func:`attach_significance`.
    """
    if config is not None and config_digest is not None:
        raise ValueError("give config or config_digest, not both")
    trg_lang = pair.split("-", 1)[-1]
    scores = score_corpus(hyps, refs, tok_refs, trg_lang=trg_lang)
    refs = list(refs)

    def ci(metric: str, references: Sequence[str]) -> list[float]:
        res = paired_significance(hyps, {}, references, metric, "bs", n_samples, seed, trg_lang=trg_lang)
        return res["baseline"]["ci"]

    comp = {k: None for k in COMPUTE_REQUIRED}
    comp.update(compute or {})
    record = ResultRecord(
        system=system,
        stage=stage,
        pair=pair,
        test_set=test_set,
        bleu=scores["bleu"],
        chrf=scores["chrf"],
        ter=scores["ter"],
        tok_bleu=scores["tok_bleu"],
        bleu_ci=ci("bleu", refs),
        chrf_ci=ci("chrf", refs),
        tok_bleu_ci=ci("tok_bleu", list(tok_refs)) if tok_refs is not None else None,
        p_vs_prev=None,
        p_vs_baseline=None,
        signature=dict(scores["signature"]),
        config_hash=config_hash(config) if config is not None else config_digest,
        config_path=config_path,
        compute=comp,
        hyp_path=os.fspath(hyp_path),
        hyp_sha256=lines_sha256(hyps),
        n_lines=len(refs),
        ref_path=ref_path,
        tok_ref_path=tok_ref_path,
        src_path=src_path,
        provenance=dict(provenance or {}),
        decode=dict(decode or {}),
        seed=seed,
        extra=dict(extra or {}),
    )
    _raise_if_invalid(record)
    return record


def _raise_if_invalid(record: ResultRecord, path: str | None = None, line: int | None = None) -> None:
    problem = validate_dict(record.to_dict())
    if problem:
        raise EvalsInputError(f"invalid record for system {record.system!r}: {problem}", path, line)


def attach_significance(
    records: Sequence[ResultRecord],
    ladder_order: Sequence[str],
    hyps_by_system: Mapping[str, Sequence[str]],
    refs: Sequence[str],
    *,
    metric: str = "bleu",
    test: str = "bs",
    n_samples: int = 1000,
    seed: int = DEFAULT_SEED,
    compare_to: Mapping[str, str] | None = None,
) -> list[ResultRecord]:
    """Fill ``p_vs_prev``, ``p_vs_baseline`` and ``significance`` for a ladder on one test set.

    ``ladder_order`` names the systems from the baseline up; each is tested (paired, through
    sacrebleu's PairedTest) against the row before it (or, for a system in ``compare_to``, the
    earlier row named there: e.g. the agent against the draft it started from) and against the
    first row, and the
    paired-bootstrap interval of each lift is stored. ``refs`` are the references for
    ``metric`` (the tok-lc references for "tok_bleu"). Returns new records; records of
    systems outside the ladder come back unchanged.
    """
    ladder = list(ladder_order)
    if len(set(ladder)) != len(ladder):
        raise ValueError("ladder_order names a system twice")
    by_name: dict[str, ResultRecord] = {}
    for rec in records:
        if rec.system in ladder:
            if rec.system in by_name:
                raise ValueError(f"two records for system {rec.system!r}")
            by_name[rec.system] = rec
    missing = [s for s in ladder if s not in by_name or s not in hyps_by_system]
    if missing:
        raise ValueError(f"no record or hypotheses for: {', '.join(missing)}")
    groups = {(by_name[s].pair, by_name[s].test_set) for s in ladder}
    if len(groups) != 1:
        raise ValueError(f"a ladder must be on one pair and test set, got {sorted(groups)}")
    trg_lang = by_name[ladder[0]].trg_lang
    kw = dict(metric=metric, test=test, n_samples=n_samples, seed=seed, trg_lang=trg_lang)
    base = ladder[0]
    vs_base = paired_significance(
        hyps_by_system[base], {s: hyps_by_system[s] for s in ladder[1:]}, refs, baseline_name=base, **kw
    )
    updated: dict[str, ResultRecord] = {}
    compare_to = dict(compare_to or {})
    for name, other in compare_to.items():
        if name not in ladder or other not in ladder or ladder.index(other) >= ladder.index(name):
            raise ValueError(f"compare_to: {name!r} must come after {other!r} in the ladder")
    for i, name in enumerate(ladder):
        prev = compare_to.get(name, ladder[i - 1]) if i > 0 else None
        info: dict[str, Any] = {
            "metric": metric, "test": test, "n_samples": n_samples, "seed": seed,
            "baseline": base, "prev": prev, "score": vs_base[name]["score"],
        }
        p_prev = p_base = None
        if i > 0:
            p_base = vs_base[name]["p_value"]
            if prev == base:
                p_prev = p_base
            else:
                p_prev = paired_significance(
                    hyps_by_system[prev], {name: hyps_by_system[name]}, refs, baseline_name=prev, **kw
                )[name]["p_value"]
            for tag, other in (("prev", prev), ("baseline", base)):
                info[f"delta_vs_{tag}"] = vs_base[name]["score"] - vs_base[other]["score"]
                info[f"delta_vs_{tag}_ci"] = info["delta_vs_prev_ci"] if tag == "baseline" and prev == base else \
                    paired_delta_ci(hyps_by_system[other], hyps_by_system[name], refs, metric, n_samples, seed, trg_lang)
        rec = dataclasses.replace(by_name[name], p_vs_prev=p_prev, p_vs_baseline=p_base,
                                  significance=info, seed=seed)
        _raise_if_invalid(rec)
        updated[name] = rec
    return [updated.get(r.system, r) if r.system in ladder else r for r in records]


# --- files -------------------------------------------------------------------------------

def records_to_jsonl(records: Iterable[ResultRecord], path: str | None = None) -> str:
    lines = []
    for number, rec in enumerate(records, start=1):
        if not isinstance(rec, ResultRecord):
            raise TypeError(f"item {number} is a {type(rec).__name__}, not a ResultRecord")
        _raise_if_invalid(rec, path, number)
        lines.append(json.dumps(rec.to_dict(), ensure_ascii=False, allow_nan=False))
    return "".join(line + "\n" for line in lines)


def write_records(path: str | os.PathLike, records: Iterable[ResultRecord]) -> None:
    """Validate every record, then write them all as JSONL atomically (replacing the file)."""
    path = os.fspath(path)
    atomic_write_text(path, records_to_jsonl(records, path))


def append_records(path: str | os.PathLike, records: Iterable[ResultRecord]) -> None:
    """Add records to a results file (created if missing), rewriting it atomically."""
    path = os.fspath(path)
    existing = read_records(path, allow_empty=True) if os.path.exists(path) else []
    write_records(path, [*existing, *records])


def read_records(path: str | os.PathLike, *, allow_empty: bool = False) -> list[ResultRecord]:
    """Read and validate a JSONL results file; errors name the file and 1-based line."""
    path = os.fspath(path)
    records = []
    for number, line in enumerate(read_lines(path, allow_empty=allow_empty), start=1):
        if not line.strip():
            continue  # blank lines carry nothing; tolerate them
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvalsInputError(f"not valid JSON ({exc.msg} at column {exc.colno})", path, number) from None
        problem = validate_dict(data)
        if problem:
            raise EvalsInputError(problem, path, number)
        records.append(ResultRecord(**data))
    if not records and not allow_empty:
        raise EvalsInputError("contains no records", path)
    return records
