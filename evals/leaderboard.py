"""The lift leaderboard: one table per (language pair, test set), one row per ladder step.

Rows keep the order in which their records were written (the ladder's order); if a
system appears twice on one test set, the later record wins (a re-run).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import warnings
from collections.abc import Sequence
from typing import Any

from .exchange import worth_cell
from .records import ResultRecord
from .textio import atomic_write_bytes

ALPHA = 0.05
TEST_NAMES = {"bs": "paired bootstrap resampling", "ar": "approximate randomisation"}
METRIC_LABELS = {"bleu": "BLEU", "tok_bleu": "tok-lc BLEU", "chrf": "chrF++", "ter": "TER"}
CSV_COLUMNS = [
    "pair", "test_set", "rank", "system", "stage", "bleu", "bleu_ci_low", "bleu_ci_high", "chrf", "ter",
    "tok_bleu", "delta_metric", "delta_vs_prev", "delta_vs_prev_ci_low", "delta_vs_prev_ci_high", "p_vs_prev", "prev_system",
    "delta_vs_baseline", "delta_vs_baseline_ci_low", "delta_vs_baseline_ci_high", "p_vs_baseline",
    "train_seconds", "decode_seconds", "forward_calls", "flops", "device", "n_lines", "hyp_path",
    "config_hash", "bleu_signature", "kept", "train_steps",
]


def group_records(records: Sequence[ResultRecord]) -> list[tuple[tuple[str, str], list[ResultRecord]]]:
    """Group by (pair, test_set) in order of first appearance; a later record for a system replaces an earlier one."""
    groups: dict[tuple[str, str], dict[str, ResultRecord]] = {}
    for rec in records:
        group = groups.setdefault((rec.pair, rec.test_set), {})
        if rec.system in group:
            warnings.warn(f"{rec.pair} {rec.test_set}: two records for {rec.system!r}; keeping the later one",
                          stacklevel=2)
            del group[rec.system]  # re-insert so the row moves to where the re-run was written
        group[rec.system] = rec
    return [(key, list(by_system.values())) for key, by_system in groups.items()]


def _delta_metric(rows: Sequence[ResultRecord]) -> str:
    # Deltas are reported on the metric the significance tests used (BLEU unless a ladder chose tok-lc BLEU).
    used = [r.significance.get("metric") for r in rows if r.significance]
    used = [m for m in used if m in ("bleu", "tok_bleu", "chrf")]
    return max(set(used), key=used.count) if used else "bleu"


def build_rows(group: Sequence[ResultRecord]) -> list[dict[str, Any]]:
    """The table rows of one group as plain dicts (also the JSON/CSV payload and the plots' input)."""
    metric = _delta_metric(group)
    rows: list[dict[str, Any]] = []
    first = group[0]
    for rank, rec in enumerate(group, start=1):
        sig = rec.significance or {}
        prev = group[rank - 2] if rank > 1 else None
        # A row tested against a named earlier row (the agent against its draft) is shown against that row.
        earlier = {r.system: r for r in group[:rank - 1]}
        if sig.get("prev") in earlier:
            prev = earlier[sig["prev"]]
        same_metric = sig.get("metric", metric) == metric
        row: dict[str, Any] = {
            "rank": rank, "system": rec.system, "stage": rec.stage, "pair": rec.pair, "test_set": rec.test_set,
            "bleu": rec.bleu, "bleu_ci": rec.bleu_ci, "chrf": rec.chrf, "chrf_ci": rec.chrf_ci, "ter": rec.ter,
            "tok_bleu": rec.tok_bleu, "tok_bleu_ci": rec.tok_bleu_ci, "delta_metric": metric,
            "p_vs_prev": rec.p_vs_prev, "p_vs_baseline": rec.p_vs_baseline,
            "tested_against_prev": sig.get("prev"), "tested_against_baseline": sig.get("baseline"),
            "test": sig.get("test"), "n_samples": sig.get("n_samples"), "seed": sig.get("seed", rec.seed),
            "train_seconds": rec.compute.get("train_seconds"), "decode_seconds": rec.compute.get("decode_seconds"),
            "forward_calls": rec.compute.get("forward_calls"), "flops": rec.compute.get("flops"),
            "device": rec.compute.get("device"), "n_lines": rec.n_lines, "hyp_path": rec.hyp_path,
            "config_hash": rec.config_hash, "signature": rec.signature,
            "train_steps": rec.compute.get("train_steps"),
            # A stacked ladder marks the rungs val did not keep (the next rung built on an earlier one).
            "kept": rec.extra.get("kept"),
            # What the rung is worth in real pairs, read off the learning curve (evals/exchange.py), if measured.
            "worth": (rec.extra.get("exchange") or {}).get("bleu"),
        }
        for tag, other in (("prev", prev), ("baseline", first if rank > 1 else None)):
            delta = ci = None
            if other is not None:
                if same_metric and f"delta_vs_{tag}" in sig and sig.get(tag) == other.system:
                    delta, ci = sig[f"delta_vs_{tag}"], sig.get(f"delta_vs_{tag}_ci")
                else:
                    a, b = getattr(rec, metric), getattr(other, metric)
                    delta = None if a is None or b is None else a - b
            row[f"delta_vs_{tag}"] = delta
            row[f"delta_vs_{tag}_ci"] = ci
        # A p-value belongs to this row's comparison only if it was computed against the row it is shown beside.
        row["prev_mismatch"] = bool(prev is not None and sig.get("prev") not in (None, prev.system))
        row["baseline_mismatch"] = bool(rank > 1 and sig.get("baseline") not in (None, first.system))
        row["prev_system"] = prev.system if prev is not None else None
        row["prev_is_row_above"] = rank > 1 and prev is group[rank - 2]
        rows.append(row)
    return rows


# --- formatting --------------------------------------------------------------------------

def _f(x: float | None, digits: int = 2, signed: bool = False) -> str:
    if x is None:
        return "n/a"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def _ci(ci: Sequence[float] | None, signed: bool = False) -> str:
    return "" if not ci else f" [{_f(ci[0], 1, signed)}, {_f(ci[1], 1, signed)}]"


def _mark(p: float | None, mismatch: bool) -> str:
    mark = "" if p is None else ("*" if p < ALPHA else " (n.s.)")
    return mark + (" †" if mismatch else "")


def _num(x: float | int | None) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, int) or float(x).is_integer() and abs(x) >= 100:
        return f"{int(x):,}"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.1f}"


def _flops(x: float | None) -> str:
    return "n/a" if x is None else _num(x / 1e9)


def _delta_cell(row: dict[str, Any], tag: str) -> str:
    delta = row[f"delta_vs_{tag}"]
    if delta is None:
        return "–" if row["rank"] == 1 else "n/a"
    cell = _f(delta, 2, True) + _ci(row[f"delta_vs_{tag}_ci"], True) + _mark(row[f"p_vs_{tag}"], row[f"{tag}_mismatch"])
    if tag == "prev" and not row["prev_is_row_above"]:
        cell += f" (vs {row['prev_system']})"
    return cell


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_table(rows: Sequence[dict[str, Any]], wall_clock: bool = True) -> str:
    """The table of one group. ``wall_clock=False`` shows training steps instead of seconds and no
    decoding seconds, so that the same run on the same machine prints the same table."""
    label = METRIC_LABELS[rows[0]["delta_metric"]]
    show_flops = any(r["flops"] is not None for r in rows)
    show_kept = any(r.get("kept") is not None for r in rows)
    head = ["#", "System", "Stage"] + (["Kept"] if show_kept else []) + [
        "BLEU [95% CI]", "chrF++", "tok-lc BLEU", f"Δ{label} vs prev [95% CI]", f"Δ{label} vs baseline [95% CI]"]
    head += ["Train (s)", "Decode (s)"] if wall_clock else ["Train steps"]
    head.append("Fwd calls")
    if show_flops:
        head.append("Decode GFLOPs")
    show_worth = any(r.get("worth") for r in rows)
    if show_worth:
        head.append("Worth x real pairs [95% CI]")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" if h not in ("System", "Stage", "Kept") else "---"
                                                          for h in head) + "|"]
    for r in rows:
        cells = [str(r["rank"]), _md_escape(r["system"]), _md_escape(r["stage"])]
        if show_kept:
            cells.append("yes" if r.get("kept") else "no" if r.get("kept") is not None else "")
        cells += [_f(r["bleu"]) + _ci(r["bleu_ci"]), _f(r["chrf"]), _f(r["tok_bleu"]), _delta_cell(r, "prev"),
                  _delta_cell(r, "baseline")]
        cells += [_num(r["train_seconds"]), _num(r["decode_seconds"])] if wall_clock else [_num(r.get("train_steps"))]
        cells.append(_num(r["forward_calls"]))
        if show_flops:
            cells.append(_flops(r["flops"]))
        if show_worth:
            cells.append(worth_cell(r["worth"]) if r.get("worth") else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _footnotes(rows: Sequence[dict[str, Any]], group: Sequence[ResultRecord]) -> list[str]:
    notes = []
    for key, label in (("bleu", "BLEU"), ("chrf", "chrF++"), ("tok_bleu", "tok-lc BLEU"), ("ter", "TER")):
        sigs = {rec.signature.get(key) for rec in group if rec.signature.get(key)}
        if len(sigs) == 1:
            notes.append(f"{label}: `{sigs.pop()}`")
        elif len(sigs) > 1:
            notes.append(f"**{label} signatures differ between rows; those scores are not comparable:** "
                         + ", ".join(f"`{s}`" for s in sorted(sigs)))
    tested = [r for r in rows if r["test"]]
    if tested:
        kinds = sorted({(r["test"], r["n_samples"], r["seed"]) for r in tested}, key=str)
        how = "; ".join(f"{TEST_NAMES.get(t, t)}, {n} samples, seed {s}" for t, n, s in kinds)
        notes.append(f"\\* p < {ALPHA} ({how}), against the row above / the first row; n.s.: not significant. "
                     "Δ intervals: paired bootstrap 95% interval of the difference.")
    if any(r["prev_mismatch"] or r["baseline_mismatch"] for r in rows):
        notes.append("† this p-value was computed against a different system than the row it is compared with here.")
    return notes


def render_group_markdown(rows: Sequence[dict[str, Any]], group: Sequence[ResultRecord], wall_clock: bool = True) -> str:
    pair, test_set = rows[0]["pair"], rows[0]["test_set"]
    n = rows[0]["n_lines"]
    title = f"### {pair} · {test_set}" + (f" ({n:,} segments)" if n else "")
    notes = _footnotes(rows, group)
    if any(r.get("kept") is False for r in rows):
        notes.append("Kept: whether val kept the rung; a rung that was not kept is shown, and the next rung "
                     "builds on the last kept one (its Δ vs prev is against that system).")
    worth = next((r["worth"] for r in rows if r.get("worth")), None)
    if worth:
        notes.append(f"Worth: the real pairs the plain recipe (the baseline's training and greedy search) would need "
                     f"to reach the row's BLEU, read off a {worth['form'].replace('loglinear', 'log-linear')} learning "
                     f"curve fitted on real-data fractions "
                     f"up to {worth['largest_point']:,.0f} pairs, as a multiple of the {worth['used_pairs']:,.0f} real "
                     "pairs the row used; 95% paired bootstrap over test sentences; extrapolated: beyond the largest "
                     f"trained point (the curve, its residuals and a held-out check: `{rows[0]['pair']}/curve/curve.md`). "
                     "Kept rungs only.")
    notes_md = "\n".join(f"- {n}" for n in notes)
    return f"{title}\n\n{markdown_table(rows, wall_clock)}\n\n{notes_md}\n"


WORTH_COLUMNS = ["worth_multiple", "worth_ci_low", "worth_ci_high", "worth_pairs", "worth_extrapolation"]


def _csv(all_rows: Sequence[dict[str, Any]]) -> str:
    buf = io.StringIO()
    worth = any(r.get("worth") for r in all_rows)  # the columns appear only where a learning curve was measured
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS + (WORTH_COLUMNS if worth else []), lineterminator="\n")
    writer.writeheader()
    for r in all_rows:
        flat = {k: r.get(k) for k in CSV_COLUMNS}
        for key in ("bleu_ci", "delta_vs_prev_ci", "delta_vs_baseline_ci"):
            ci = r.get(key) or [None, None]
            flat[f"{key}_low"], flat[f"{key}_high"] = ci
        flat["bleu_signature"] = r["signature"].get("bleu")
        if worth and r.get("worth"):
            w = r["worth"]
            flat.update(worth_multiple=w["multiple"], worth_ci_low=w["multiple_ci"][0], worth_ci_high=w["multiple_ci"][1],
                        worth_pairs=w["pairs"], worth_extrapolation=(w.get("extrapolation") or {}).get("text"))
        writer.writerow({k: "" if v is None else v for k, v in flat.items()})
    return buf.getvalue()


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


def render_leaderboard(records: Sequence[ResultRecord], out_dir: str | os.PathLike | None = None,
                       *, plots: bool = True, wall_clock: bool = True) -> str:
    """Return the leaderboard as Markdown; with ``out_dir``, also write leaderboard.md/.csv/.json and PNGs.

    Everything is rendered in memory first and then written file by file atomically, so a
    failure leaves no half-written output.
    """
    if not records:
        raise ValueError("no records to put on a leaderboard")
    groups = group_records(records)
    sections, all_rows, payload, images = [], [], [], {}
    for (pair, test_set), group in groups:
        rows = build_rows(group)
        all_rows.extend(rows)
        section = render_group_markdown(rows, group, wall_clock)
        payload.append({"pair": pair, "test_set": test_set, "n_lines": rows[0]["n_lines"], "rows": rows})
        if plots and out_dir is not None:
            from .plots import plot_compute, plot_waterfall  # matplotlib only when pictures are wanted

            base = f"{slug(pair)}_{slug(test_set)}"
            images[f"waterfall_{base}.png"] = plot_waterfall(rows)
            compute_png = plot_compute(rows)
            if compute_png is not None:
                images[f"compute_{base}.png"] = compute_png
            pictures = [name for name in (f"waterfall_{base}.png", f"compute_{base}.png") if name in images]
            section += "\n" + "\n".join(f"![{name}]({name})" for name in pictures) + "\n"
        sections.append(section)
    markdown = "## Leaderboard\n\n" + "\n".join(sections)
    if out_dir is not None:
        out_dir = os.fspath(out_dir)
        files = {
            "leaderboard.md": markdown.encode("utf-8"),
            "leaderboard.csv": _csv(all_rows).encode("utf-8"),
            "leaderboard.json": (json.dumps({"groups": payload}, indent=2, ensure_ascii=False, allow_nan=False)
                                 + "\n").encode("utf-8"),
            **images,
        }
        for name, data in files.items():
            atomic_write_bytes(os.path.join(out_dir, name), data)
    return markdown
