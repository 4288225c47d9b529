"""Two systems on one test set: scores, paired significance, and the sentences where they differ most."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .errors import EvalsInputError
from .metrics import score_corpus, sentence_chrf
from .significance import DEFAULT_SEED, TESTS, paired_delta_ci, paired_significance


def compare_systems(
    hyps_a: Sequence[str],
    hyps_b: Sequence[str],
    refs: Sequence[str],
    srcs: Sequence[str] | None = None,
    *,
    names: tuple[str, str] = ("A", "B"),
    tok_refs: Sequence[str] | None = None,
    trg_lang: str = "de",
    test: str = "bs",
    n_samples: int = 1000,
    seed: int = DEFAULT_SEED,
    top_k: int = 5,
) -> dict[str, Any]:
    """Compare system B against system A (the baseline of the paired tests).

    Returns a dict with corpus ``scores`` per system, ``significance`` (per metric: p-value,
    B-A delta and its paired-bootstrap CI), sentence-level win counts by chrF++, and
    ``examples``: the ``top_k`` lines where B beats A most and where A beats B most, each
    ``{"line", "src", "ref", "hyp": {name: text}, "chrf": {name: score}, "delta"}``.
    """
    name_a, name_b = names
    if name_a == name_b:
        raise ValueError("the two systems need different names")
    hyps_a, hyps_b, refs = list(hyps_a), list(hyps_b), list(refs)
    for label, lines in ((name_a, hyps_a), (name_b, hyps_b), ("source", srcs), ("tok-lc reference", tok_refs)):
        if lines is not None and len(lines) != len(refs):
            raise EvalsInputError(f"{label} has {len(lines)} lines but the reference has {len(refs)}")
    scores = {name: score_corpus(h, refs, tok_refs, trg_lang) for name, h in ((name_a, hyps_a), (name_b, hyps_b))}
    significance = {}
    metrics = [("bleu", refs), ("chrf", refs)] + ([("tok_bleu", list(tok_refs))] if tok_refs is not None else [])
    for metric, references in metrics:
        res = paired_significance(hyps_a, {name_b: hyps_b}, references, metric, test, n_samples, seed,
                                  baseline_name=name_a, trg_lang=trg_lang)
        significance[metric] = {
            "p_value": res[name_b]["p_value"],
            "delta": res[name_b]["score"] - res[name_a]["score"],
            "delta_ci": paired_delta_ci(hyps_a, hyps_b, references, metric, n_samples, seed, trg_lang),
            "ci": {name_a: res[name_a]["ci"], name_b: res[name_b]["ci"]},
        }
    per_line = []
    for i, (a, b, ref) in enumerate(zip(hyps_a, hyps_b, refs)):
        if a == b:
            continue
        ca, cb = sentence_chrf(a, ref), sentence_chrf(b, ref)
        per_line.append({"line": i + 1, "src": srcs[i] if srcs is not None else None, "ref": ref,
                         "hyp": {name_a: a, name_b: b}, "chrf": {name_a: ca, name_b: cb}, "delta": cb - ca})
    b_better = sorted((x for x in per_line if x["delta"] > 0), key=lambda x: (-x["delta"], x["line"]))
    a_better = sorted((x for x in per_line if x["delta"] < 0), key=lambda x: (x["delta"], x["line"]))
    return {
        "names": [name_a, name_b],
        "n_lines": len(refs),
        "n_differing": len(per_line),
        "test": test, "n_samples": n_samples, "seed": seed,
        "scores": scores,
        "significance": significance,
        "sentence_wins": {name_a: len(a_better), name_b: len(b_better),
                          "ties": len(per_line) - len(a_better) - len(b_better)},
        "examples": {f"{name_b}_better": b_better[:top_k], f"{name_a}_better": a_better[:top_k]},
    }


def _cell(text: str | None) -> str:
    return "" if text is None else text.replace("|", "\\|")


def render_compare_markdown(report: dict[str, Any]) -> str:
    """A readable Markdown report of :func:`compare_systems`' result."""
    a, b = report["names"]
    sc, sig = report["scores"], report["significance"]
    lines = [f"## {b} vs {a} ({report['n_lines']:,} segments, {report['n_differing']:,} differ)", "",
             f"| Metric | {_cell(a)} | {_cell(b)} | Δ ({_cell(b)} − {_cell(a)}) [95% CI] | p |",
             "|---|---:|---:|---:|---:|"]
    for metric, label in (("bleu", "BLEU"), ("chrf", "chrF++"), ("tok_bleu", "tok-lc BLEU"), ("ter", "TER ↓")):
        if sc[a][metric] is None:
            continue
        if metric in sig:
            s = sig[metric]
            lo, hi = s["delta_ci"]
            p = s["p_value"]
            delta = f"{s['delta']:+.2f} [{lo:+.1f}, {hi:+.1f}]"
            ptxt = "<0.001" if p < 0.001 else f"{p:.3f}"
            ptxt += "*" if p < 0.05 else ""
        else:
            delta, ptxt = f"{sc[b][metric] - sc[a][metric]:+.2f}", ""
        lines.append(f"| {label} | {sc[a][metric]:.2f} | {sc[b][metric]:.2f} | {delta} | {ptxt} |")
    wins = report["sentence_wins"]
    lines += ["", f"p: {TESTS.get(report['test'], report['test'])}, {report['n_samples']} samples, "
              f"seed {report['seed']}; * p < 0.05. BLEU signature: `{sc[a]['signature']['bleu']}`.", "",
              f"Sentence chrF++: {b} better on {wins[b]}, {a} better on {wins[a]}, tied on {wins['ties']} "
              "of the lines that differ.", ""]
    for key, title in ((f"{b}_better", f"Where {b} beats {a} most"), (f"{a}_better", f"Where {a} beats {b} most")):
        examples = report["examples"][key]
        lines.append(f"### {title}")
        lines.append("")
        if not examples:
            lines += ["(none)", ""]
        for ex in examples:
            lines.append(f"**line {ex['line']}** (chrF++ {a} {ex['chrf'][a]:.1f}, {b} {ex['chrf'][b]:.1f}, "
                         f"Δ {ex['delta']:+.1f})")
            lines.append("")
            if ex["src"] is not None:
                lines.append(f"- SRC: {ex['src']}")
            lines += [f"- REF: {ex['ref']}", f"- {a}: {ex['hyp'][a]}", f"- {b}: {ex['hyp'][b]}", ""]
    return "\n".join(lines)
