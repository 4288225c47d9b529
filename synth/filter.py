"""Filter synthetic pairs: score each pair, then select (two separate steps, so a new selection
never re-runs the models).

Scores (per pair):

* ``length_ratio``: characters of the longer side / characters of the shorter side;
* ``round_trip_chrf``: the synthetic side translated back by the model of the other direction,
  chrF++ (``evals.metrics.sentence_chrf``) against the original side (back-translation: the forward
  model translates the synthetic source, compared with the real target);
* ``dual_xent``: dual conditional cross-entropy (Junczys-Dowmunt 2018):
  ``|H_fwd - H_rev| + 0.5 * (H_fwd + H_rev)`` with ``H_fwd = -log p_fwd(tgt | src) / |tgt|`` and
  ``H_rev = -log p_rev(src | tgt) / |src|`` (per-token, ``</s>`` included, from ``Translator.score``).
  Low when both models find the pair likely *and* agree on how likely.

Selection: hard thresholds first (``max_length_ratio``, ``min_round_trip_chrf``, ``max_dual_xent``),
then the best pairs by ``rank_by`` up to ``keep_fraction`` of *all* input pairs. Every dropped pair
is counted under the first reason that removed it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from core_seq2seq.config import config_hash
from core_seq2seq.translator import DecodeSettings, Translator
from evals.metrics import sentence_chrf

from .io import SynthError, file_sha256, read_jsonl, write_json, write_jsonl, write_yaml
from .shards import ShardPlan, check_manifest, merge_shards, run_shards

RANK_KEYS = {"dual_xent": +1, "round_trip_chrf": -1}  # +1: lower is better, -1: higher is better
REASONS = ("length_ratio", "round_trip_chrf", "dual_xent", "rank")


@dataclass
class ScoringConfig:
    round_trip: bool = True  # compute round_trip_chrf (needs the model that translates the synthetic side back)
    dual_xent: bool = True  # compute dual conditional cross-entropy (needs both models)
    round_trip_method: str = "greedy"  # greedy | beam: how the synthetic side is translated back
    beam_size: int = 5  # round_trip_method=beam: beam width
    batch_size: int = 64  # sentences per batch (translation and scoring)
    shard_size: int = 2000  # pairs per shard of scores: a kill loses at most this much work
    use_clean_source: bool = True  # score the source before noise (src_clean) when the pair has one

    def __post_init__(self) -> None:
        if self.round_trip_method not in ("greedy", "beam"):
            raise ValueError(f"round_trip_method must be greedy or beam, got {self.round_trip_method!r}")


@dataclass
class SelectionConfig:
    max_length_ratio: float = 2.0  # drop pairs whose longer side has more than this many times the shorter's characters (0: off)
    min_round_trip_chrf: float = 0.0  # drop pairs with a lower round-trip chrF++ (0: off)
    max_dual_xent: float = 0.0  # drop pairs with a higher dual cross-entropy (0: off)
    rank_by: str = "dual_xent"  # dual_xent | round_trip_chrf | none: what "best" means for keep_fraction
    keep_fraction: float = 1.0  # keep at most this fraction of all input pairs, the best by rank_by

    def __post_init__(self) -> None:
        if self.rank_by not in (*RANK_KEYS, "none"):
            raise ValueError(f"rank_by must be dual_xent, round_trip_chrf or none, got {self.rank_by!r}")
        if not 0.0 < self.keep_fraction <= 1.0:
            raise ValueError(f"keep_fraction must be in (0, 1], got {self.keep_fraction}")
        if self.rank_by == "none" and self.keep_fraction < 1.0:
            raise ValueError("keep_fraction < 1 needs rank_by (dual_xent or round_trip_chrf)")


@dataclass
class FilterConfig:
    input: str = "runs/synth/bt.de-en/synthetic.jsonl"  # synthetic pairs (synth backtranslate's output)
    output: str = "runs/synth/bt.de-en/filtered.jsonl"  # kept pairs; <output>.report.json says what was dropped and why
    scores_dir: str | None = None  # where the per-pair scores are kept (default: <output>.scores/); reused by a new selection
    forward_model: str | list[str] | None = None  # model src_lang -> tgt_lang of the pairs (round trip of back-translations, dual_xent)
    reverse_model: str | list[str] | None = None  # model tgt_lang -> src_lang (dual_xent, round trip of forward translations)
    device: str = "cpu"  # torch device of the models
    num_threads: int = 0  # torch CPU threads (0: torch's default)
    progress: bool = True  # tqdm progress bar over pairs
    scoring: ScoringConfig = field(default_factory=ScoringConfig)  # which scores, how
    selection: SelectionConfig = field(default_factory=SelectionConfig)  # which pairs to keep


# ---- scoring -----------------------------------------------------------------------------------

def length_ratio(src: str, tgt: str) -> float:
    a, b = len(src.strip()), len(tgt.strip())
    return max(a, b) / max(1, min(a, b))


def dual_xent(fwd: tuple[float, int], rev: tuple[float, int]) -> tuple[float, float, float]:
    """(H_fwd, H_rev, score) from ``Translator.score`` outputs (total logprob, tokens) of each direction."""
    h_fwd, h_rev = -fwd[0] / max(1, fwd[1]), -rev[0] / max(1, rev[1])
    return h_fwd, h_rev, abs(h_fwd - h_rev) + 0.5 * (h_fwd + h_rev)


def round_trip_chrf(synthetic: Sequence[str], originals: Sequence[str], translator: Translator,
                    settings: DecodeSettings) -> list[float]:
    """Translate the synthetic side back and score it against the original with chrF++."""
    back = [c[0].text if c else "" for c in translator.translate(list(synthetic), settings)]
    return [sentence_chrf(h, r) for h, r in zip(back, originals)]


def score_pairs(records: Sequence[dict], scoring: ScoringConfig, forward: Translator | None,
                reverse: Translator | None) -> list[dict]:
    """Scores of each record (same order): ``length_ratio`` always; the others when configured."""
    src = [r.get("src_clean", r["src"]) if scoring.use_clean_source else r["src"] for r in records]
    tgt = [r["tgt"] for r in records]
    rows = [{"id": r["id"], "k": r.get("k", 0), "length_ratio": length_ratio(s, t)}
            for r, s, t in zip(records, src, tgt)]
    if scoring.round_trip:
        settings = DecodeSettings(method=scoring.round_trip_method, beam_size=scoring.beam_size,
                                  batch_size=scoring.batch_size)
        # Which side is synthetic decides the direction of the round trip.
        back = [i for i, r in enumerate(records) if r.get("mode", "back") == "back"]
        fwd_mode = [i for i, r in enumerate(records) if r.get("mode", "back") != "back"]
        for idx, model, name, syn, orig in ((back, forward, "forward_model", src, tgt),
                                            (fwd_mode, reverse, "reverse_model", tgt, src)):
            if not idx:
                continue
            if model is None:
                raise SynthError(f"filter: round_trip needs {name}")
            for i, chrf in zip(idx, round_trip_chrf([syn[i] for i in idx], [orig[i] for i in idx], model, settings)):
                rows[i]["round_trip_chrf"] = chrf
    if scoring.dual_xent:
        if forward is None or reverse is None:
            raise SynthError("filter: dual_xent needs forward_model and reverse_model")
        for row, f, b in zip(rows, forward.score(src, tgt), reverse.score(tgt, src)):
            row["h_fwd"], row["h_rev"], row["dual_xent"] = dual_xent(f, b)
    return rows


# ---- selection ---------------------------------------------------------------------------------

def select(scores: Sequence[dict], sel: SelectionConfig) -> list[str | None]:
    """The reason each pair is dropped (None: kept). Pure: depends on the scores and ``sel`` only."""
    reasons: list[str | None] = [None] * len(scores)
    rules = (("length_ratio", sel.max_length_ratio, +1), ("round_trip_chrf", sel.min_round_trip_chrf, -1),
             ("dual_xent", sel.max_dual_xent, +1))
    for name, bound, sign in rules:
        if not bound:
            continue
        for i, s in enumerate(scores):
            if reasons[i] is None:
                if name not in s:
                    raise SynthError(f"filter: selection uses {name} but it was not scored (enable it in scoring)")
                if sign * (s[name] - bound) > 0:
                    reasons[i] = name
    if sel.rank_by != "none":
        budget = int(math.floor(sel.keep_fraction * len(scores) + 1e-9))
        alive = [i for i, r in enumerate(reasons) if r is None]
        if alive and sel.rank_by not in scores[alive[0]]:
            raise SynthError(f"filter: rank_by {sel.rank_by} was not scored (enable it in scoring)")
        sign = RANK_KEYS[sel.rank_by]
        # Stable sort: ties keep input order, so a selection is reproducible.
        for i in sorted(alive, key=lambda i: sign * scores[i][sel.rank_by])[budget:]:
            reasons[i] = "rank"
    return reasons


def summarize(scores: Sequence[dict], reasons: Sequence[str | None]) -> dict:
    """Counts by reason and score quantiles (all pairs and kept pairs)."""
    summary: dict = {"input": len(scores), "kept": sum(r is None for r in reasons),
                     "dropped": {k: sum(r == k for r in reasons) for k in REASONS}, "quantiles": {}}
    for key in ("length_ratio", "round_trip_chrf", "dual_xent"):
        values = np.array([s[key] for s in scores if key in s])
        kept = np.array([s[key] for s, r in zip(scores, reasons) if key in s and r is None])
        if values.size:
            q = (0.05, 0.25, 0.5, 0.75, 0.95)
            summary["quantiles"][key] = {"all": dict(zip(map(str, q), np.quantile(values, q).round(4).tolist())),
                                         "kept": dict(zip(map(str, q), np.quantile(kept, q).round(4).tolist()))
                                         if kept.size else None}
    return summary


# ---- the command -------------------------------------------------------------------------------

def _load(model: str | list[str] | None, device: str) -> Translator | None:
    if model is None:
        return None
    from core_seq2seq.translator import LSTMTranslator

    return LSTMTranslator.load(model if isinstance(model, str) else list(model), device=device)


def filter_pairs(cfg: FilterConfig, forward: Translator | None = None, reverse: Translator | None = None,
                 log: Callable[[str], None] = print) -> tuple[Path, dict]:
    """Score (sharded, resumable) and select; writes the kept pairs and the report."""
    if cfg.num_threads:
        import torch

        torch.set_num_threads(cfg.num_threads)
    records = read_jsonl(cfg.input, required=("id", "src", "tgt"))
    if not records:
        raise SynthError(f"{cfg.input}: no pairs to filter")
    forward = forward or _load(cfg.forward_model, cfg.device)
    reverse = reverse or _load(cfg.reverse_model, cfg.device)
    out = Path(cfg.output)
    scores_dir = Path(cfg.scores_dir) if cfg.scores_dir else out.with_name(out.name + ".scores")
    manifest = {"input": str(cfg.input), "input_sha256": file_sha256(cfg.input), "lines": len(records),
                "config_hash": config_hash({"scoring": asdict(cfg.scoring), "forward": cfg.forward_model,
                                            "reverse": cfg.reverse_model})}
    check_manifest(scores_dir, manifest)
    plan = ShardPlan(len(records), cfg.scoring.shard_size)

    def work(shard: int, rows: list[int], seed: int) -> list[dict]:
        scored = score_pairs([records[i - 1] for i in rows], cfg.scoring, forward, reverse)
        return [{"row": i, **s} for i, s in zip(rows, scored)]

    run_shards(scores_dir, plan, 0, manifest, work, {"forward_model": cfg.forward_model,
                                                     "reverse_model": cfg.reverse_model}, cfg.progress, "score pairs")
    scores = merge_shards(scores_dir, plan, id_key="row", k_key=None)
    reasons = select(scores, cfg.selection)
    kept = [{**r, "filter": {k: v for k, v in s.items() if k not in ("row", "id", "k")}}
            for r, s, why in zip(records, scores, reasons) if why is None]
    sha = write_jsonl(out, kept)
    report = {**summarize(scores, reasons), "output_sha256": sha, "selection": asdict(cfg.selection),
              "scores_dir": str(scores_dir), "config": asdict(cfg), "config_hash": config_hash(cfg)}
    write_json(out.with_name(out.name + ".report.json"), report)
    write_yaml(out.with_name(out.name + ".config.yaml"), asdict(cfg))
    log(f"filter: kept {report['kept']} of {report['input']} pairs; dropped "
        + ", ".join(f"{k} {v}" for k, v in report["dropped"].items()) + f" -> {out}")
    return out, report
