"""The one rule of resumable work: an artifact is done when its marker, a JSON file written
atomically after the artifact, records the key of the config and inputs that made it.

Writers write the artifact first and the marker last (``write_json``: a temporary file, then
``os.replace``), so a kill never leaves a marker over half-written files; readers ask ``cached``,
which answers the marker only when its key matches, so work made by another config is never taken
for this one's. Users: the ladder's stages (``stage.json``; a mismatch reruns the stage), synth's
shards (a sidecar keyed by its shard's SHA-256), inference_compute's sweep (features, weights,
selections, records), n-best files (the meta sidecar; a mismatch is an error there), preference-pair
shards (``inference_compute.preference``: pairs and key in one file) and post-training's trl
checkpoints (a marker written into each once trl has finished it). Training checkpoints resume by
their own rule (``core_seq2seq.training``; post-training's mrt state likewise).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from evals.textio import atomic_write_text

from .data import DataError


def lines_digest(lines: list[str] | tuple[str, ...]) -> str:
    """SHA-256 of text lines (joined by newlines): the key of work made from those lines."""
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 1) -> None:
    """Write ``obj`` as JSON atomically (readers see the old file or the whole new one)."""
    atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False, default=str) + "\n")


def cached(path: str | os.PathLike, key: str, field: str = "key") -> dict | None:
    """The marker at ``path`` when it exists and its ``field`` is ``key``; None: not done (for this key)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not a readable cache marker ({e}); delete it to redo its work") from None
    return marker if isinstance(marker, dict) and marker.get(field) == key else None
