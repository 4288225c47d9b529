"""kill -9 at random points of a toy two-direction ladder: every resumed run must print the leaderboard
of an uninterrupted one, to the digit.

    python benchmarks/kill_resume.py --kills 4 --seed 1 --out benchmarks/results/kill_resume_toy.json

One reference run, then ``--kills`` runs, each killed (SIGKILL to the whole process group: the run
and its workers) at a moment drawn uniformly from the reference run's duration, then rerun to the
end. A run that finished before its kill counts as not killed. Each kill records the stage that was
running (the newest stage directory without ``stage.json``), and whether the leaderboard printed by
the resumed run equals the reference's. The config is ``configs/toy.yaml`` (two workers, so kills
land in worker processes too). Exit status 1 if any leaderboard differs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# MKL's reproducible mode: the same floats in every process (see tests/test_core_training.py).
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_CBWR": "COMPATIBLE", "PYTHONPATH": str(ROOT)}
CONFIG = ROOT / "configs/toy.yaml"  # the toy two-direction ladder, with two workers


def start(config: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipeline", "run", str(config), "--out", str(out)], env=ENV,
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True)  # its own process group: the kill reaches the workers


def running_stage(run: Path) -> str | None:
    """The most recently started stage that has not finished."""
    open_stages = [d for d in run.iterdir() if d.is_dir() and (d / "stage.key").exists() and not (d / "stage.json").exists()]
    return max(open_stages, key=lambda d: (d / "stage.key").stat().st_mtime_ns).name if open_stages else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=5)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--work-dir", type=Path, default=None, help="default: a temporary directory")
    p.add_argument("--out", default="")
    args = p.parse_args(argv)
    rng = random.Random(args.seed)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="decade_kill_resume_"))
    work.mkdir(parents=True, exist_ok=True)
    config = CONFIG
    t0 = time.perf_counter()
    ref = start(config, work / "reference")
    reference, _ = ref.communicate()
    duration = time.perf_counter() - t0
    if ref.returncode != 0:
        print(f"reference run failed (exit {ref.returncode})", file=sys.stderr)
        return 2
    kills = []
    for i in range(args.kills):
        run = work / f"killed_{i}"
        at = rng.uniform(1.0, duration)
        proc = start(config, run)
        try:
            proc.wait(timeout=at)
            killed, stage = False, None
        except subprocess.TimeoutExpired:
            stage = running_stage(run) if run.exists() else None
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            killed = True
        resumed = start(config, run)
        printed, _ = resumed.communicate()
        kills.append({"at_s": round(at, 1), "killed": killed, "stage_running": stage,
                      "resumed_exit": resumed.returncode, "same_leaderboard": printed == reference})
        print(json.dumps(kills[-1]), flush=True)
    result = {"reference_seconds": round(duration, 1), "kills": kills, "seed": args.seed,
              "all_same": all(k["same_leaderboard"] for k in kills),
              "command": "python benchmarks/kill_resume.py " + " ".join(argv or sys.argv[1:]),
              "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0 if result["all_same"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
