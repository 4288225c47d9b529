"""Resumable n-best generation to files: sources in shards, each shard an n-best file with its
compute in the meta sidecar; a rerun skips finished shards, and the merged file sums their compute.

A cached file is only reused for the same job: its meta records a key (hash of the model paths, the
candidate spec and the sources); a different key is an error rather than a silent mix of two runs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from core_seq2seq.cache import cached
from core_seq2seq.config import config_hash
from core_seq2seq.translator import Translator

from .candidates import CandidateSpec, PooledCandidate, generate_candidates
from .compute import ComputeMeter, add_compute
from .nbest import is_complete, read_meta, read_nbest, sidecars, write_nbest


def check_key(path: str | os.PathLike, key: str) -> None:
    """A complete n-best file serves only its own job: the key in its meta sidecar (the marker)."""
    if cached(sidecars(path)[1], key) is None:
        raise ValueError(f"{os.fspath(path)}: cached from a different job (key {read_meta(path).get('key')}, now {key}); "
                         "use a fresh output directory or delete the stale files")


def generate_nbest_file(translator: Translator, sources: Sequence[str], spec: CandidateSpec, path: str | os.PathLike,
                        *, shard_size: int = 256, meta: Mapping[str, Any] | None = None,
                        key_extra: Any = None, log: Callable[[str], None] = lambda m: None,
                        ) -> tuple[list[list[PooledCandidate]], dict[str, Any]]:
    """Generate (or reload) the n-best file ``path`` for ``sources``; returns the lists and their compute."""
    path = Path(path)
    key = config_hash([spec.to_dict(), list(sources), key_extra])
    if is_complete(path):
        check_key(path, key)
        return read_nbest(path), read_meta(path)["compute"]
    shard_dir = path.with_name(path.name + ".shards")
    lists: list[list[PooledCandidate]] = []
    computes = []
    for start in range(0, len(sources), shard_size):
        shard = shard_dir / f"shard-{start // shard_size:05d}.nbest"
        chunk = list(sources[start:start + shard_size])
        shard_key = config_hash([key, start])
        if is_complete(shard):
            check_key(shard, shard_key)
            lists.extend(read_nbest(shard))
            computes.append(read_meta(shard)["compute"])
            continue
        with ComputeMeter({"forward": translator}, n_sentences=len(chunk)) as meter:
            cands = generate_candidates(translator, chunk, spec)
        write_nbest(shard, cands, {"key": shard_key, "compute": meter.result, "first_sentence": start})
        log(f"{path.name}: sentences {start}-{start + len(chunk) - 1} done "
            f"({meter.result['decode_seconds']:.1f}s, {meter.result['forward_calls']} decoder calls)")
        lists.extend(cands)
        computes.append(meter.result)
    compute = add_compute(*computes, {"n_sentences": len(sources)})
    write_nbest(path, lists, {"key": key, "spec": spec.to_dict(), "compute": compute, **(meta or {})})
    return lists, compute
