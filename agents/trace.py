"""Traces: one JSONL record per sentence, saved after every chunk (atomically), resumable.

A record::

    {"id": 7, "source": ..., "draft": ..., "final": ...,
     "steps": [{"step": 0, "action": "draft", "candidate": ..., "values": {signal: value},
                "evidence": {signal: [...]}, "flags": [...], "fwd_norm": ..., "rev_norm": ...,
                "score": ..., "kept": true, "why": ..., "cost": {"forward_calls", "flops", "seconds"}},
               {"step": 1, "action": "constrained", "reason": "uncovered_source flagged (1 > 0)",
                "args": {"require": [["Katze"]], "ban": []}, ...}],
     "decision": {"reason": "critic passed", "final_from_step": 1, "tool_steps": 1, "flags": []},
     "cost": {"draft": {...}, "agent": {...}}, "config_hash": ...}

``forward_calls`` are decoder forward calls of the batched operations the sentence took part in,
divided by the number of sentences they served (so they sum to the run's exact total).

The whole file is rewritten atomically after each chunk (a temporary file, then ``os.replace``):
a crash leaves the previous chunk's complete file, and a rerun skips the sentences it holds.
A ``TRACE.config.json`` sidecar holds the config that made the trace.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from core_seq2seq.cache import write_json
from evals.textio import atomic_write_text, read_lines

from .errors import AgentInputError

REQUIRED = ("id", "source", "draft", "final", "steps", "decision", "cost")


def read_trace(path: str | os.PathLike, allow_missing: bool = False) -> list[dict]:
    """Read and check a trace; errors name the file and the 1-based line."""
    path = os.fspath(path)
    if allow_missing and not os.path.exists(path):
        return []
    if not os.path.exists(path):
        raise AgentInputError("no such trace file", path)
    records = []
    for number, line in enumerate(read_lines(path, allow_empty=True), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise AgentInputError(f"not valid JSON ({e.msg} at column {e.colno})", path, number) from None
        if not isinstance(rec, dict):
            raise AgentInputError("a trace record must be a JSON object", path, number)
        missing = [k for k in REQUIRED if k not in rec]
        if missing:
            raise AgentInputError(f"trace record is missing {', '.join(missing)}", path, number)
        if not isinstance(rec["steps"], list) or not rec["steps"]:
            raise AgentInputError("trace record has no steps", path, number)
        rec["_line"] = number
        records.append(rec)
    return records


class TraceStore:
    """The trace of one run: which sentences are done, and appending a chunk's records atomically."""

    def __init__(self, path: str | os.PathLike, config_hash: str, config: dict | None = None):
        self.path, self.config_hash = Path(path), config_hash
        self.records = read_trace(self.path, allow_missing=True)
        for rec in self.records:
            if rec.get("config_hash") != config_hash:
                raise AgentInputError(
                    f"traced under another config ({rec.get('config_hash')} != {config_hash}); "
                    "use a new trace file or the config that made it", self.path, rec["_line"])
        if config is not None:
            write_json(str(self.path) + ".config.json", {"config_hash": config_hash, "config": config}, indent=2)

    def done(self, sources: Sequence[str]) -> dict[int, dict]:
        """Records of sentences already traced; a record whose source differs is an error."""
        out = {}
        for rec in self.records:
            i = rec["id"]
            if not isinstance(i, int) or not 0 <= i < len(sources) or sources[i] != rec["source"]:
                raise AgentInputError(f"sentence id {i!r} was traced for another input; use a new trace file",
                                      self.path, rec["_line"])
            out[i] = rec
        return out

    def append(self, records: Sequence[dict]) -> None:
        for rec in records:
            rec["config_hash"] = self.config_hash
        self.records.extend(dict(r) for r in records)
        text = "".join(json.dumps({k: v for k, v in r.items() if k != "_line"}, ensure_ascii=False) + "\n"
                       for r in sorted(self.records, key=lambda r: r["id"]))
        atomic_write_text(self.path, text)


# ---- rendering ----------------------------------------------------------------------------------

def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _evidence(ev: dict) -> list[str]:
    lines = []
    for signal, items in ev.items():
        shown = []
        for item in items:
            if isinstance(item, dict):
                if "ngram" in item:
                    shown.append(f"'{item['ngram']}' (allowed {item['allowed']}x)")
                elif "word" in item:
                    shown.append(f"{item['word']} -> {'/'.join(item.get('translations', [])) or '?'}")
                elif "token" in item:
                    shown.append(f"{item['token']}@{item['position']}={item['logprob']}")
                else:
                    shown.append(json.dumps(item, ensure_ascii=False))
            else:
                shown.append(str(item))
        lines.append(f"      {signal}: {'; '.join(shown)}")
    return lines


def render(rec: dict) -> str:
    """One sentence's trace as readable text."""
    out = [f"sentence {rec['id']}", f"  source : {rec['source']}", f"  draft  : {rec['draft']}"]
    for st in rec["steps"]:
        head = f"  step {st['step']}: {st['action']}"
        if st.get("reason"):
            head += f"  <- {st['reason']}"
        out.append(head)
        args = {k: v for k, v in (st.get("args") or {}).items()}
        if args:
            out.append("      args: " + ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in args.items()))
        if st.get("candidate") is None:
            out.append(f"      no candidate: {st.get('why', '')}")
        else:
            out.append(f"      candidate: {st['candidate']}")
            if "values" in st:
                out.append("      signals: " + "  ".join(f"{k}={_fmt(v)}" for k, v in st["values"].items()))
                out.append(f"      flags: {', '.join(st['flags']) or 'none'}   score={_fmt(st.get('score'))}")
                out.extend(_evidence(st.get("evidence") or {}))
            verdict = "kept" if st.get("kept") else "rejected"
            out.append(f"      -> {verdict}: {st.get('why', '')}")
        cost = st.get("cost") or {}
        out.append(f"      cost: {_fmt(cost.get('forward_calls'))} forward calls, {_fmt(cost.get('seconds'))} s")
    d, cost = rec["decision"], rec["cost"]
    out.append(f"  final  : {rec['final']}")
    out.append(f"  decision: {d.get('reason')} (final from step {d.get('final_from_step')}, "
               f"{d.get('tool_steps')} tool step(s); remaining flags: {', '.join(d.get('flags') or []) or 'none'})")
    esc = rec.get("escalation")
    if esc:  # the escalating agent: the policy's value before each rung, and what the sentence spent
        out.append(f"  escalation: {esc.get('rungs_climbed')} rung(s) climbed; values "
                   f"{', '.join(_fmt(v) for v in esc.get('values') or []) or '-'}; {_fmt(esc.get('flops'))} FLOPs in all")
    out.append(f"  cost: draft {_fmt(cost['draft'].get('forward_calls'))} + agent "
               f"{_fmt(cost['agent'].get('forward_calls'))} forward calls, agent {_fmt(cost['agent'].get('seconds'))} s")
    return "\n".join(out)


def explain(path: str | os.PathLike, sentence_id: int) -> str:
    for rec in read_trace(path):
        if rec["id"] == sentence_id:
            return render(rec)
    raise AgentInputError(f"no sentence with id {sentence_id} in the trace", path)
