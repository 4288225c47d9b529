"""Leaderboard pictures (PNG bytes): a waterfall of lifts and score against inference compute.

Figures are built on matplotlib's object API with the Agg canvas, never through pyplot,
so importing this module changes no global backend for the rest of the program.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

ALPHA = 0.05
LABELS = {"bleu": "BLEU", "tok_bleu": "tok-lc BLEU", "chrf": "chrF++"}
AXIS_LABELS = {
    "bleu": "BLEU (sacreBLEU 13a, cased; points)",
    "tok_bleu": "tokenised lower-cased BLEU (points)",
    "chrf": "chrF++ (points)",
}
COLORS = {"base": "#4c72b0", "gain": "#55a868", "loss": "#c44e52", "ns": "#b8b8b8"}
COMPUTE_AXES = {
    "flops": "estimated decoding FLOPs for the test set (log scale)",
    "forward_calls": "decoder forward calls for the test set (log scale)",
    "decode_seconds": "decoding time for the test set, seconds (log scale)",
}


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    # Fixed metadata keeps the bytes reproducible, so re-rendering does not churn committed docs.
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def _label(row: dict[str, Any]) -> str:
    return ("\n".join(textwrap.wrap(row["system"], 16)) + f"\n({row['stage']})"
            + ("\nnot kept" if row.get("kept") is False else ""))


def _score(row: dict[str, Any], metric: str) -> tuple[float | None, Sequence[float] | None]:
    return row.get(metric), row.get(f"{metric}_ci")


def plot_waterfall(rows: Sequence[dict[str, Any]]) -> bytes:
    """Floating bars from each row's score to the next: the lift of every ladder step, with 95% CIs."""
    metric = rows[0].get("delta_metric", "bleu")
    pts = [(r, *_score(r, metric)) for r in rows]
    pts = [(r, s, ci) for r, s, ci in pts if s is not None]
    fig = Figure(figsize=(max(6.5, 1.35 * len(pts) + 2), 5.2))
    ax = fig.add_subplot()
    first_ci = pts[0][2]
    lows = [s for _, s, _ in pts] + ([first_ci[0]] if first_ci else [])
    highs = [s for _, s, _ in pts] + ([first_ci[1]] if first_ci else [])
    # Each step starts from the system it built on (in a stacked ladder: the last kept one, not
    # necessarily the bar to its left).
    score_of = {r["system"]: s for r, s, _ in pts}
    starts = [None] + [score_of.get(r.get("prev_system"), s_prev) for (r, _, _), (_, s_prev, _) in zip(pts[1:], pts[:-1])]
    for (row, _, _), prev_score in zip(pts[1:], starts[1:]):
        if row.get("delta_vs_prev_ci"):
            lows.append(prev_score + row["delta_vs_prev_ci"][0])
            highs.append(prev_score + row["delta_vs_prev_ci"][1])
    span = max(max(highs) - min(lows), 1.0)
    bottom = max(0.0, min(lows) - 0.3 * span)
    top = max(highs) + 0.22 * span
    prev = None
    for i, (row, score, ci) in enumerate(pts):
        prev = starts[i]
        if prev is None:
            start, color, hatch = bottom, COLORS["base"], None
        else:
            start = prev
            p = row.get("p_vs_prev")
            significant = p is not None and p < ALPHA
            color = COLORS["gain" if score >= prev else "loss"] if significant else COLORS["ns"]
            hatch = None if significant else "//"
        ax.bar(i, score - start, bottom=start, width=0.6, color=color, hatch=hatch, edgecolor="#333333",
               linewidth=0.6, zorder=2, alpha=0.35 if row.get("kept") is False else 1.0)
        # A step's bar is its lift, so its error bar is the paired CI of that lift (placed on the previous
        # score); the per-system score CIs are much wider because they ignore the pairing.
        bar_ci = ci if prev is None else (
            [prev + row["delta_vs_prev_ci"][0], prev + row["delta_vs_prev_ci"][1]]
            if row.get("delta_vs_prev_ci") else None)
        if bar_ci:
            lo, hi = min(bar_ci[0], score), max(bar_ci[1], score)
            ax.errorbar(i, score, yerr=[[score - lo], [hi - score]], fmt="none", ecolor="black",
                        capsize=4, linewidth=1.1, zorder=3)
            top_of_bar = hi
        else:
            top_of_bar = score
        if prev is not None:
            left = next((j for j, (r, _, _) in enumerate(pts) if r["system"] == row.get("prev_system")), i - 1)
            ax.plot([left + 0.3, i - 0.3], [prev, prev], color="#555555", linestyle=":", linewidth=1, zorder=1)
            p = row.get("p_vs_prev")
            mark = "*" if p is not None and p < ALPHA else ""
            text = f"{score - prev:+.1f}{mark}"
        else:
            text = f"{score:.1f}"
        ax.annotate(text, (i, top_of_bar), xytext=(0, 4), textcoords="offset points",
                    ha="center", va="bottom", fontsize=9)
    ax.set_xticks(range(len(pts)), [_label(r) for r, _, _ in pts], fontsize=8.5)
    ax.set_ylim(bottom, top)
    ax.set_ylabel(AXIS_LABELS.get(metric, metric))
    ax.set_xlabel("ladder step (system, stage); each bar is the change from the step before")
    pair, test_set = rows[0]["pair"], rows[0]["test_set"]
    ax.set_title(f"Cumulative {LABELS.get(metric, metric)} lift per step: {pair}, {test_set}\n"
                 f"error bars: 95% paired-bootstrap CI of each step's lift (baseline: of its score); "
                 f"* p < {ALPHA} vs the previous step", fontsize=10)
    ax.grid(axis="y", alpha=0.3, zorder=0)
    ax.legend(handles=[
        Patch(facecolor=COLORS["base"], edgecolor="#333333", label="baseline score"),
        Patch(facecolor=COLORS["gain"], edgecolor="#333333", label=f"significant gain (p < {ALPHA})"),
        Patch(facecolor=COLORS["loss"], edgecolor="#333333", label=f"significant loss (p < {ALPHA})"),
        Patch(facecolor=COLORS["ns"], edgecolor="#333333", hatch="//", label="change not significant / untested"),
    ], loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8.5, framealpha=0.9)  # outside: never over a bar
    return _png(fig)


def compute_axis(rows: Sequence[dict[str, Any]]) -> str | None:
    """The inference-compute measure every row has: FLOPs, else forward calls, else decoding seconds."""
    for key in ("flops", "forward_calls", "decode_seconds"):
        if all((r.get(key) or 0) > 0 for r in rows):
            return key
    for key in ("flops", "forward_calls", "decode_seconds"):
        if sum((r.get(key) or 0) > 0 for r in rows) >= 2:
            return key
    return None


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of points no other point beats (at most the compute, strictly more score), cheapest first."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def plot_compute(rows: Sequence[dict[str, Any]]) -> bytes | None:
    """Score against inference compute on a log x-axis, Pareto frontier marked; None without compute figures."""
    metric = rows[0].get("delta_metric", "bleu")
    key = compute_axis(rows)
    if key is None:
        return None
    used = [r for r in rows if (r.get(key) or 0) > 0 and r.get(metric) is not None]
    left_out = len(rows) - len(used)
    xs = [float(r[key]) for r in used]
    ys = [float(r[metric]) for r in used]
    fig = Figure(figsize=(7.5, 5.2))
    ax = fig.add_subplot()
    ax.set_xscale("log")
    stages = list(dict.fromkeys(r["stage"] for r in used))
    palette = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c"]
    for n, stage in enumerate(stages):
        idx = [i for i, r in enumerate(used) if r["stage"] == stage]
        ci = [used[i].get(f"{metric}_ci") for i in idx]
        # max(0, .): a bootstrap CI can miss its own point by float noise (e.g. at BLEU 100).
        yerr = [[max(0.0, ys[i] - c[0]) if c else 0 for i, c in zip(idx, ci)],
                [max(0.0, c[1] - ys[i]) if c else 0 for i, c in zip(idx, ci)]]
        ax.errorbar([xs[i] for i in idx], [ys[i] for i in idx], yerr=yerr, fmt="o", markersize=7, capsize=3,
                    color=palette[n % len(palette)], label=f"stage: {stage}", zorder=3)
    front = pareto_front(list(zip(xs, ys)))
    fx, fy = [xs[i] for i in front], [ys[i] for i in front]
    ax.step(fx + [max(xs) * 1.6], fy + [fy[-1]], where="post", color="black", linestyle="--", linewidth=1.2,
            label="Pareto frontier", zorder=2)
    ax.scatter(fx, fy, s=170, facecolors="none", edgecolors="black", linewidths=1.4, zorder=4,
               label="Pareto-optimal system")
    for x, y, r in zip(xs, ys, used):
        # Names go right of the point, nudged up/down alternately so neighbours at similar compute don't collide.
        dy = 5 if used.index(r) % 2 == 0 else -13
        ax.annotate(r["system"], (x, y), xytext=(9, dy), textcoords="offset points", fontsize=8,
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.75}, zorder=5)
    ax.set_xlim(min(xs) / 1.8, max(xs) * 1.8)
    ax.set_xlabel("inference compute: " + COMPUTE_AXES[key])
    ax.set_ylabel(AXIS_LABELS.get(metric, metric))
    pair, test_set = rows[0]["pair"], rows[0]["test_set"]
    note = f"; {left_out} system(s) without this figure not shown" if left_out else ""
    ax.set_title(f"{LABELS.get(metric, metric)} against inference compute: {pair}, {test_set}\n"
                 f"(error bars: 95% bootstrap CI; circled: Pareto-optimal{note})", fontsize=10.5)
    ax.grid(alpha=0.3, which="both", zorder=0)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8.5, framealpha=0.9)  # outside: never over a point
    return _png(fig)


def plot_exchange(result: dict[str, Any], pair: str, test_set: str) -> bytes:
    """Score against real training pairs (log x axis): the learning curve's measured points with their
    95% intervals, the fitted curve (dashed where it extrapolates), and each ladder step drawn at its
    score and its equivalent pairs (horizontal bar: the 95% interval of those pairs).
    ``result`` is one ``evals.exchange.exchange_rates`` result."""
    import math

    from .exchange import FORMULAS, _predict

    metric = result["metric"]
    fit, points, steps = result["fit"], result["points"], result["steps"]

    def num(v: Any) -> float:
        return math.inf if v == "inf" else math.nan if v is None else float(v)

    xs = [p["pairs"] for p in points]
    ys = [p["score"] for p in points]
    finite = [num(s["pairs"]) for s in steps.values() if math.isfinite(num(s["pairs"]))]
    lo, hi = min(xs + finite) / 1.6, max(xs + finite) * 1.6
    fig = Figure(figsize=(8.0, 5.2))
    ax = fig.add_subplot()
    ax.set_xscale("log")
    inside = np.geomspace(xs[0], xs[-1], 100)
    ax.plot(inside, _predict(fit["form"], fit["params"], inside), color="#4c72b0", linewidth=1.6, zorder=2,
            label=f"fit: {FORMULAS[fit['form']]}")
    for a, b in ((lo, xs[0]), (xs[-1], hi)):
        if b > a:
            grid = np.geomspace(a, b, 50)
            ax.plot(grid, _predict(fit["form"], fit["params"], grid), color="#4c72b0", linewidth=1.4, linestyle="--",
                    zorder=2, label="fit, extrapolated" if a == xs[-1] else None)
    ax.errorbar(xs, ys, yerr=[[max(0.0, y - p["ci"][0]) for y, p in zip(ys, points)],
                              [max(0.0, p["ci"][1] - y) for y, p in zip(ys, points)]],
                fmt="o", color="#4c72b0", markersize=7, capsize=3, zorder=3,
                label="plain recipe on a share of the real pairs (95% CI)")
    ax.axvline(xs[-1], color="#888888", linestyle=":", linewidth=1, zorder=1,
               label=f"all real pairs used ({xs[-1]:,.0f})")
    palette = ["#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c", "#ccb974"]
    for n, (name, step) in enumerate(steps.items()):
        x, y = num(step["pairs"]), step["score"]
        c_lo, c_hi = (num(v) for v in step["pairs_ci"])
        color = palette[n % len(palette)]
        if not math.isfinite(x):  # above a saturating ceiling: drawn at the right edge
            ax.scatter([hi], [y], marker=">", s=70, color=color, zorder=4, label=f"{name}: above the curve's ceiling")
            continue
        c_lo = c_lo if math.isfinite(c_lo) else lo
        c_hi = c_hi if math.isfinite(c_hi) else hi
        mult = num(step["multiple"])
        ax.errorbar([x], [y], xerr=[[max(0.0, x - c_lo)], [max(0.0, c_hi - x)]], fmt="D", markersize=7, capsize=3,
                    color=color, zorder=4, label=f"{name}: worth {mult:.2f}x the real pairs"
                    + (" (extrapolated)" if step.get("extrapolation") else ""))
        ax.annotate(name, (x, y), xytext=(6, 6), textcoords="offset points", fontsize=8, zorder=5)
    ax.set_xlim(lo, hi)
    ax.set_ylim(bottom=max(0.0, ax.get_ylim()[0]))  # a score below 0 is the fit's, never a measurement
    from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda v, _: f"{v:,.0f}")  # 1,500 rather than 1.5x10^3
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(plain)
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel("real parallel training pairs (log scale)")
    ax.set_ylabel(AXIS_LABELS.get(metric, metric))
    ax.set_title(f"What each step is worth in real pairs: {pair}, {test_set}\n"
                 f"({'log-linear' if fit['form'] == 'loglinear' else 'saturating'} fit on {len(xs)} points; bars: 95% paired-bootstrap intervals over test sentences)",
                 fontsize=10.5)
    ax.grid(alpha=0.3, which="both", zorder=0)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, framealpha=0.9)  # outside: never over a point
    return _png(fig)
