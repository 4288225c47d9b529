"""Sharded, resumable work over the lines of one input: a kill loses at most the shard in progress.

A run directory holds::

    manifest.json            what the shards are made from (input hash, line count, config hash)
    shards/shard-00003.jsonl the records of lines [3*S+1, 4*S] (1-based ids), written atomically
    shards/shard-00003.json  its provenance sidecar, written after the shard: a shard counts as
                             finished only when the sidecar exists and names the shard's SHA-256

A rerun skips finished shards and redoes a shard whose sidecar is missing (killed between the two
writes). A rerun with a different input or config refuses to mix its shards with the old ones.
Each shard's seed comes from the base seed and the shard index only, so the output does not
depend on where (or whether) a run was interrupted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core_seq2seq.cache import cached, write_json

from .io import SynthError, file_sha256, read_json, read_jsonl, write_jsonl

ShardWork = Callable[[int, list[int], int], list[dict]]  # (shard index, 1-based ids, seed) -> records


def shard_seed(base_seed: int, shard: int) -> int:
    """A seed for one shard from the base seed and its index (numpy's SeedSequence mixes them)."""
    return int(np.random.SeedSequence([base_seed, shard]).generate_state(1)[0] & 0x7FFFFFFF)


@dataclass(frozen=True)
class ShardPlan:
    n_items: int
    shard_size: int

    def __post_init__(self) -> None:
        if self.shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {self.shard_size}")

    @property
    def n_shards(self) -> int:
        return (self.n_items + self.shard_size - 1) // self.shard_size

    def ids(self, shard: int) -> list[int]:
        """1-based item ids (input line numbers) of one shard."""
        return list(range(shard * self.shard_size + 1, min((shard + 1) * self.shard_size, self.n_items) + 1))


def shard_file(run_dir: Path, shard: int) -> Path:
    return run_dir / "shards" / f"shard-{shard:05d}.jsonl"


def sidecar_file(run_dir: Path, shard: int) -> Path:
    return shard_file(run_dir, shard).with_suffix(".json")


def shard_done(run_dir: Path, shard: int) -> bool:
    """A shard is done when its sidecar (the marker, written after it) names its SHA-256."""
    data = shard_file(run_dir, shard)
    return data.exists() and cached(sidecar_file(run_dir, shard), file_sha256(data), field="sha256") is not None


def check_manifest(run_dir: Path, manifest: dict) -> None:
    """Write the manifest on the first run; on later runs require the same one."""
    path = run_dir / "manifest.json"
    if path.exists():
        old = read_json(path)
        changed = sorted(k for k in set(old) | set(manifest) if old.get(k) != manifest.get(k))
        if changed:
            raise SynthError(f"{path}: this directory holds shards made from a different input or config "
                             f"(differs in: {', '.join(changed)}); use a new output directory or delete it")
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(path, manifest)


def run_shards(run_dir: str | Path, plan: ShardPlan, base_seed: int, manifest: dict, work: ShardWork,
               provenance: dict | None = None, progress: bool = True, desc: str = "shards",
               on_shard_done: Callable[[int], None] | None = None,
               log: Callable[[str], None] | None = None) -> list[int]:
    """Run ``work`` on every unfinished shard in order; returns the indices of shards run now.
    ``log`` gets a line per shard finished (a long run off a terminal draws no bar)."""
    from tqdm import tqdm

    run_dir = Path(run_dir)
    check_manifest(run_dir, manifest)
    (run_dir / "shards").mkdir(parents=True, exist_ok=True)
    todo = [s for s in range(plan.n_shards) if not shard_done(run_dir, s)]
    done_items = plan.n_items - sum(len(plan.ids(s)) for s in todo)
    bar = tqdm(total=plan.n_items, initial=done_items, disable=not progress, desc=desc, unit="line",
               dynamic_ncols=True)
    for shard in todo:
        ids, seed = plan.ids(shard), shard_seed(base_seed, shard)
        start = time.perf_counter()
        records = work(shard, ids, seed)
        sha = write_jsonl(shard_file(run_dir, shard), records)
        write_json(sidecar_file(run_dir, shard), {
            "shard": shard, "first_id": ids[0], "last_id": ids[-1], "records": len(records), "seed": seed,
            "base_seed": base_seed, "seconds": round(time.perf_counter() - start, 3), "sha256": sha,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(provenance or {})})
        bar.update(len(ids))
        if log is not None:
            log(f"shard {shard + 1}/{plan.n_shards}: {len(ids)} lines in {time.perf_counter() - start:.0f}s")
        if on_shard_done is not None:
            on_shard_done(shard)
    bar.close()
    return todo


def merge_shards(run_dir: str | Path, plan: ShardPlan, per_item: int = 1, required: Sequence[str] = ("id",),
                 id_key: str = "id", k_key: str | None = "k") -> list[dict]:
    """All records in id order, after checking that every id appears exactly ``per_item`` times
    (as ``k`` = 0..per_item-1) in its own shard: no gap, no duplicate, nothing misplaced."""
    run_dir = Path(run_dir)
    out: list[dict] = []
    for shard in range(plan.n_shards):
        path = shard_file(run_dir, shard)
        if not shard_done(run_dir, shard):
            raise SynthError(f"{path}: shard {shard} is missing or unfinished; rerun to complete it")
        records = read_jsonl(path, (id_key, *required))
        expected = {(i, k) for i in plan.ids(shard) for k in range(per_item)}
        seen: set[tuple[int, int]] = set()
        for number, r in enumerate(records, start=1):
            key = (r[id_key], r.get(k_key, 0) if k_key else 0)
            if key in seen:
                raise SynthError(f"{path}:{number}: duplicate record id={key[0]} k={key[1]}")
            if key not in expected:
                raise SynthError(f"{path}:{number}: id={key[0]} k={key[1]} does not belong in shard {shard}")
            seen.add(key)
        missing = sorted(expected - seen)
        if missing:
            raise SynthError(f"{path}: {len(missing)} record(s) missing, first id={missing[0][0]} k={missing[0][1]}")
        out.extend(sorted(records, key=lambda r: (r[id_key], r.get(k_key, 0) if k_key else 0)))
    return out
