"""Cached, resumable stages: each stage's outputs are keyed by a hash of its config slice and inputs.

A finished stage leaves ``<run>/<name>/stage.json`` with its key, outputs and timing (a marker of
``core_seq2seq.cache``). A rerun with the same key skips it; a different key (changed config or changed inputs) reruns it; ``force`` reruns it.
A stage whose inputs name files of another stage that finished after it (say, one rerun with
``--force``) is stale and reruns too, as in ``make``. A stage that starts running first removes its
``stage.json`` and writes its key to ``stage.key``, so a stage killed midway never has a marker and
reruns, resuming whatever its own step supports (training resumes from ``last/``, back-translation
and n-best generation skip finished shards), but only when ``stage.key`` says the work there is its
own: a directory left by another key is cleared first.

A stage's time is the sum over every call that worked on it: a running stage keeps
``stage.elapsed`` (seconds so far over all its calls, and how many calls) up to date every
``HEARTBEAT_SECONDS``, so a stage killed in one session and finished in the next reports the hours
of both (a kill loses at most a heartbeat). The marker keeps the total, the last call's seconds and
the number of calls.

A runner made with ``plan=[]`` runs nothing and writes nothing: it says what each stage would do
(cached, resume its own unfinished work, start, or start over after clearing another key's work) and
stops the walk at the first stage that would run (``PlanStop``), since later stages need its outputs.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from core_seq2seq.cache import cached, write_json
from core_seq2seq.config import config_hash
from evals.textio import atomic_write_text

HEARTBEAT_SECONDS = 30.0  # how often a running stage saves its elapsed time (what a kill can lose)
ELAPSED = "stage.elapsed"


@dataclass
class StageClock:
    """Seconds a stage's work took: ``earlier`` (calls killed before this one) plus ``this`` call."""

    earlier: float = 0.0
    calls: int = 1
    this: float = 0.0

    @property
    def total(self) -> float:
        return self.earlier + self.this


@contextmanager
def stage_clock(stage_dir: Path, every: float = HEARTBEAT_SECONDS) -> Iterator[StageClock]:
    """Time one call of a stage's work, adding the time earlier (killed) calls left in ``stage.elapsed``;
    a daemon thread saves the running total every ``every`` seconds, and the call's end saves it once
    more (a finished stage's marker then takes it over)."""
    path = stage_dir / ELAPSED
    before = json.loads(path.read_text()) if path.exists() else {"seconds": 0.0, "calls": 0}
    clock = StageClock(earlier=float(before["seconds"]), calls=int(before["calls"]) + 1)
    start, stop = time.perf_counter(), threading.Event()

    def save() -> None:
        write_json(path, {"seconds": clock.earlier + time.perf_counter() - start, "calls": clock.calls})

    def beat() -> None:
        while not stop.wait(every):
            save()

    thread = threading.Thread(target=beat, name=f"clock:{stage_dir.name}", daemon=True)
    thread.start()
    try:
        yield clock
    finally:  # also on KeyboardInterrupt and errors: what this call worked is not lost
        stop.set()
        thread.join()
        clock.this = time.perf_counter() - start
        save()


def _finished_ns(record: dict[str, Any]) -> int:
    """When a stage finished, in ns (markers written before ``finished_ns`` existed: their second)."""
    if "finished_ns" in record:
        return int(record["finished_ns"])
    try:
        return int(datetime.strptime(record["finished"], "%Y-%m-%dT%H:%M:%S%z").timestamp() * 1e9)
    except (KeyError, ValueError):
        return 0


class PlanStop(Exception):
    """Raised by a planning runner at the first stage that would run."""


@dataclass
class StageRunner:
    run_dir: Path
    force: set[str] = field(default_factory=set)
    log: Callable[[str], None] = print
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds it took, over all its calls
    cached: set[str] = field(default_factory=set)  # stages this run found finished
    done: dict[str, tuple[str, dict]] = field(default_factory=dict)  # stage -> (key, outputs) finished in this process
    started: float = field(default_factory=time.perf_counter)
    plan: list[tuple[str, str]] | None = None  # a list: plan only ((stage, what it would do) lands here)

    def run(self, name: str, config_slice: Any, inputs: dict[str, Any], work: Callable[[Path], dict]) -> dict:
        """Run ``work(stage_dir) -> outputs`` unless a finished run with the same key exists."""
        stage_dir = self.run_dir / name
        marker = stage_dir / "stage.json"
        key = config_hash({"config": config_slice, "inputs": inputs})
        if name in self.done and self.done[name][0] == key:  # asked for again by a later rung of this run
            return self.done[name][1]
        done = None if name in self.force else cached(marker, key)
        if done is not None:
            newer = self.rebuilt_since(inputs, _finished_ns(done))
            if not newer:
                if self.plan is not None:
                    self.plan.append((name, "cached"))
                self.log(f"[{name}] cached ({done['seconds']:.0f}s when run)")
                self.timings[name] = float(done["seconds"])
                self.cached.add(name)
                self.done[name] = (key, done["outputs"])
                return done["outputs"]
            self.log(f"[{name}] {', '.join(newer)} finished after it: rerunning")
        elif marker.exists() and name not in self.force:
            self.log(f"[{name}] config or inputs changed: rerunning")
        key_file = stage_dir / "stage.key"
        if self.plan is not None:
            self.plan.append((name, _would(marker, key_file, key, name in self.force)))
            raise PlanStop(name)
        # Forced, or finished before a stage it reads was rebuilt: its files (shards, saved n-best
        # lists, checkpoints) were made from what it reads then, so it starts over, reusing nothing.
        again = name in self.force or done is not None
        if stage_dir.exists() and (again or not key_file.exists() or key_file.read_text().strip() != key):
            # Whatever is here was made by another config or other inputs (or by an unknown one): a
            # stage resumes only its own work, never someone else's half-trained model.
            if any(stage_dir.iterdir()) and not again:
                self.log(f"[{name}] its directory holds work of another config: starting it over")
            shutil.rmtree(stage_dir)
        stage_dir.mkdir(parents=True, exist_ok=True)
        # No marker while the work runs: a kill now must not leave the old marker over new, half-written files.
        marker.unlink(missing_ok=True)
        atomic_write_text(key_file, key + "\n")
        self.log(f"[{name}] running ({len(self.done)} stages done in this run, "
                 f"{(time.perf_counter() - self.started) / 60:.0f} min since it started)")
        with stage_clock(stage_dir) as clock:
            outputs = work(stage_dir)
        self.timings[name] = clock.total
        record = {"stage": name, "key": key, "config": config_slice, "inputs": inputs, "outputs": outputs,
                  "seconds": clock.total, "seconds_last_call": clock.this, "calls": clock.calls,
                  "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "finished_ns": time.time_ns()}
        write_json(marker, record)
        (stage_dir / ELAPSED).unlink(missing_ok=True)  # the marker has it now
        self.done[name] = (key, outputs)
        self.log(f"[{name}] done in {clock.this:.0f}s"
                 + (f" ({clock.total:.0f}s over {clock.calls} calls)" if clock.calls > 1 else ""))
        return outputs

    def rebuilt_since(self, inputs: dict[str, Any], finished_ns: int) -> list[str]:
        """Stages of this run whose outputs ``inputs`` name (as paths inside their directories) and
        that finished after ``finished_ns``."""
        texts = json.dumps(inputs, default=str)
        out = []
        for marker in sorted(self.run_dir.glob("*/stage.json")):
            stage = marker.parent.name
            if f"{self.run_dir / stage}/" not in texts:
                continue
            if _finished_ns(json.loads(marker.read_text())) > finished_ns:
                out.append(stage)
        return out


def _would(marker: Path, key_file: Path, key: str, forced: bool) -> str:
    """What running a stage that is not cached would do with its directory."""
    own = key_file.exists() and key_file.read_text().strip() == key
    if forced:
        return "reruns (--force), from scratch"
    if own and not marker.exists():
        return "resumes its own unfinished work"
    if marker.exists() and own:
        return "reruns from scratch: a stage it reads finished after it"
    if marker.parent.exists() and any(marker.parent.iterdir()):
        return "STARTS OVER: its directory holds work of another config or inputs, which is cleared"
    return "starts"
