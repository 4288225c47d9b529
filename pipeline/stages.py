"""Cached, resumable stages: each stage's outputs are keyed by a hash of its config slice and inputs.

A finished stage leaves ``<run>/<name>/stage.json`` with its key, outputs and timing. A rerun with the
same key skips it; a different key (changed config or changed inputs) reruns it; ``force`` reruns it.
A stage killed midway has no ``stage.json`` and reruns, resuming whatever its own step supports
(training resumes from ``last/``, back-translation and n-best generation skip finished shards).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def stable_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class StageRunner:
    run_dir: Path
    force: set[str] = field(default_factory=set)
    log: Callable[[str], None] = print
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds it took when it ran
    cached: set[str] = field(default_factory=set)  # stages this run found finished

    def run(self, name: str, config_slice: Any, inputs: dict[str, Any], work: Callable[[Path], dict]) -> dict:
        """Run ``work(stage_dir) -> outputs`` unless a finished run with the same key exists."""
        stage_dir = self.run_dir / name
        marker = stage_dir / "stage.json"
        key = stable_hash({"config": config_slice, "inputs": inputs})
        if marker.exists() and name not in self.force:
            done = json.loads(marker.read_text())
            if done.get("key") == key:
                self.log(f"[{name}] cached ({done['seconds']:.0f}s when run)")
                self.timings[name] = float(done["seconds"])
                self.cached.add(name)
                return done["outputs"]
            self.log(f"[{name}] config or inputs changed: rerunning")
        stage_dir.mkdir(parents=True, exist_ok=True)
        self.log(f"[{name}] running")
        start = time.perf_counter()
        outputs = work(stage_dir)
        seconds = time.perf_counter() - start
        self.timings[name] = seconds
        record = {"stage": name, "key": key, "config": config_slice, "inputs": inputs, "outputs": outputs,
                  "seconds": seconds, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        tmp = marker.with_name("stage.json.tmp")
        tmp.write_text(json.dumps(record, indent=1, default=str))
        os.replace(tmp, marker)
        self.log(f"[{name}] done in {seconds:.0f}s")
        return outputs
