"""``decade publish RUN_DIR``: copy a finished ladder's results into the repository, re-scorable.

For each direction of the run: the result records with their test hypotheses copied beside them
(``<to>/<pair>/results.jsonl``, ``<to>/<pair>/hyps/``), paths rewritten relative to the repository
root so that ``python -m evals verify`` re-scores them anywhere; the leaderboard and its plots; the
run's summary (cost per rung, time per stage) and config; when the run made them, the learning curve
(``<to>/<pair>/curve/``), the distillation methods beside their start (``<to>/<pair>/distillation/``) and
the agent's BLEU-vs-compute curve (``<to>/<pair>/agent_curve/``: val, and the first test set beside the
fixed decoders). Every rung's blind translations (and each distillation method's and agent-curve system's) go to
``<blind>/<pair>/<system>.txt``.
Nothing is written until everything has been read and checked.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from evals.leaderboard import render_leaderboard
from evals.records import read_records, write_records
from evals.textio import atomic_write_bytes, atomic_write_lines, atomic_write_text, read_lines


# Record sets a run may write beside a direction's leaderboard: the learning curve, the distillation
# methods side by side, the agent's curve.
EXTRAS = ("curve", "distillation", "agent_curve")


def _relative(path: str | None, root: Path) -> str | None:
    """``path`` relative to ``root`` (the repository) when it is a file, else unchanged."""
    if path is None or not os.path.isabs(path):
        return path
    return os.path.relpath(path, root)


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "+-_." else "_" for ch in text)


def _moved(results: Path, hyps_dir: Path, root: Path) -> tuple[list, dict[Path, list[str]]]:
    """Records of ``results`` with their hypotheses planned under ``hyps_dir`` and other paths made relative to ``root``."""
    records = read_records(results)
    hyps = {}
    for rec in records:
        target = hyps_dir / f"{_slug(rec.system)}.{rec.test_set}.txt"
        if target in hyps:
            raise ValueError(f"{results}: two records would publish their hypotheses as {target.name} "
                             f"({rec.system}, {rec.test_set})")
        hyps[target] = read_lines(rec.hyp_path)
        rec.hyp_path = str(target)
        rec.ref_path, rec.tok_ref_path, rec.src_path = (_relative(p, root) for p in
                                                        (rec.ref_path, rec.tok_ref_path, rec.src_path))
        rec.config_path = _relative(rec.config_path, root)
    return records, hyps


def publish(run_dir: str | Path, to: str | Path = "benchmarks/results/ladder",
            blind_to: str | Path = "benchmarks/results/blind", root: str | Path = ".") -> list[str]:
    """Copy the run's records, hypotheses, leaderboards, summary and blind outputs; return the pairs."""
    run, to, blind_to, root = Path(run_dir), Path(to), Path(blind_to), Path(root).resolve()
    pairs = sorted(p.parent.name for p in run.glob("*/results.jsonl"))
    if not pairs:
        raise FileNotFoundError(f"{run}: no <pair>/results.jsonl: is this a finished ladder run directory?")
    if not (run / "summary.md").exists():
        raise FileNotFoundError(f"{run}/summary.md: not found: the run has not finished")
    planned: dict[str, tuple] = {}
    for pair in pairs:
        records, hyps = _moved(run / pair / "results.jsonl", to / pair / "hyps", root)
        blind = {blind_to / pair / p.name: read_lines(p) for p in sorted((run / "blind" / pair).glob("*.txt"))}
        # Record sets beside the leaderboard, when the run made them (each replaces what an earlier publish left).
        extras, files = {}, {}
        for name in EXTRAS:
            folder = run / pair / name
            if not (folder / "results.jsonl").exists():
                continue
            extras[name], extra_hyps = _moved(folder / "results.jsonl", to / pair / name / "hyps", root)
            hyps.update(extra_hyps)
            files.update({to / pair / name / p.name: p.read_bytes() for p in sorted(folder.glob("*"))
                          if p.suffix in (".json", ".md", ".png")})
        planned[pair] = (records, hyps, blind, extras, files)
    for pair, (records, hyps, blind, extras, files) in planned.items():
        for old in [to / pair / "hyps"] + [to / pair / name for name in EXTRAS]:
            if old.exists():
                shutil.rmtree(old)  # a republished run replaces its hypotheses and record sets
        for path, lines in {**hyps, **blind}.items():
            atomic_write_lines(path, lines)
        for name, recs in extras.items():
            write_records(to / pair / name / "results.jsonl", recs)
            if name == "distillation":  # rendered from the moved records: its paths are the repository's
                render_leaderboard(recs, str(to / pair / name / "leaderboard"), wall_clock=False)
        for path, data in files.items():
            atomic_write_bytes(path, data)
        write_records(to / pair / "results.jsonl", records)
        render_leaderboard(records, str(to / pair / "leaderboard"), wall_clock=False)
    atomic_write_text(to / "summary.md", (run / "summary.md").read_text(encoding="utf-8"))
    run_json = json.loads((run / "run.json").read_text(encoding="utf-8"))
    atomic_write_text(to / "run.json", json.dumps(run_json, indent=1) + "\n")
    return pairs
