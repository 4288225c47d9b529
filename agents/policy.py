"""The policy: which tool to run next for a sentence, and whether a revision replaces the current
hypothesis. The loop that drives it over a batch of sentences is ``agents.loop``.

``Policy`` is the interface (a learned policy can implement it later); ``RuleBasedPolicy`` is the
default: address the flagged signals in a fixed priority order, each with an ordered list of tools,
never repeating a tool that has already been tried (constrained re-decoding may run again with
different constraints); accept when the critic passes, when no untried tool applies, or when the
step budget is spent (the loop enforces the budget).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from .critic import SIGNALS
from .tools import TOOLS

DEFAULT_PRIORITY = ["repeated_ngrams", "copied_source", "uncovered_source", "length_ratio", "low_confidence",
                    "noisy_channel", "round_trip", "refiner_margin"]
DEFAULT_ACTIONS: dict[str, list[str]] = {
    # Word-level errors with evidence: fix them where they are, then fall back to a wider search.
    "repeated_ngrams": ["constrained", "wider_beam", "sample_rerank"],
    "copied_source": ["constrained", "wider_beam"],
    "uncovered_source": ["constrained", "wider_beam", "sample_rerank"],
    # Whole-sentence doubts without a location: search more, then take the consensus.
    "length_ratio": ["wider_beam", "sample_rerank", "mbr"],
    "low_confidence": ["wider_beam", "sample_rerank", "mbr"],
    "noisy_channel": ["sample_rerank", "wider_beam", "mbr"],
    "round_trip": ["sample_rerank", "wider_beam", "mbr"],
    # The learned refiner would write something else: take its rewrite, or the consensus.
    "refiner_margin": ["refine", "mbr"],
}


@dataclass
class PolicyConfig:
    """Every field is a YAML key of the ``policy:`` section."""

    name: str = "rules"  # rules: the rule-based policy (the only one so far)
    budget: int = 3  # tool calls per sentence at most; then the best hypothesis so far is accepted
    seed: int = 1234  # seeds the sampling tool (per step: seed + 1000 * step)
    priority: list[str] = field(default_factory=lambda: list(DEFAULT_PRIORITY))  # flagged signals, most urgent first
    actions: dict[str, list[str]] = field(default_factory=lambda: {k: list(v) for k, v in DEFAULT_ACTIONS.items()})

    def __post_init__(self) -> None:
        if self.name != "rules":
            raise ValueError(f"policy.name must be 'rules', got {self.name!r}")
        if self.budget < 0:
            raise ValueError(f"policy.budget must be >= 0, got {self.budget}")
        for s in [*self.priority, *self.actions]:
            if s not in SIGNALS:
                raise ValueError(f"unknown signal {s!r} in policy; known: {', '.join(SIGNALS)}")
        for s, acts in self.actions.items():
            for a in acts:
                if a not in TOOLS:
                    raise ValueError(f"policy.actions.{s}: unknown tool {a!r}; known: {', '.join(TOOLS)}")


@dataclass
class SelectionConfig:
    """When a proposal replaces the current hypothesis. Every field is a YAML key of ``selection:``."""

    reverse_weight: float = 1.0  # selection score = forward + reverse_weight * reverse log-prob per token
    min_score_gain: float = 0.0  # as many flags: keep the proposal only if its score is higher by more than this
    max_score_drop: float = 1.0  # fewer flags: keep it unless its score is lower by more than this
    refiner_weight: float = 0.0  # selection score += refiner_weight * refiner log-prob per token (with a refiner)
    # Vetoes: checks the weighted score cannot overrule (a strong refiner term can outvote the reverse
    # model on a rewrite that drops source words; the refiner error analysis found many such harms).
    max_reverse_drop: float = 1e9  # reject a proposal whose reverse log-prob per source token is lower than the current hypothesis's by more than this (1e9: no veto)
    max_uncovered_rise: float = 1e9  # reject a proposal with more source words lacking a lexicon counterpart than the current hypothesis, by more than this (needs uncovered_source in critic.signals; 1e9: no veto)
    gate: str = ""  # a learned acceptance gate (agents/gate.py, fitted on a val trace): "" : none
    gate_threshold: float = 0.5  # with a gate: reject a proposal whose probability of improving the current hypothesis is below this


@dataclass(frozen=True)
class Action:
    name: str  # a tool from ``agents.tools.TOOLS``, or "accept"
    reason: str  # why, for the trace


@runtime_checkable
class Policy(Protocol):
    """Chooses the next action for one sentence from what the critic said about its current hypothesis.

    ``state`` is an ``agents.loop.SentenceState`` (read ``flags``, ``values``, ``evidence``,
    ``tried``, ``pool``, ``steps``); ``applicable(action)`` says whether a tool can do something new.
    """

    name: str

    def decide(self, state, applicable: Callable[[str], bool]) -> Action: ...


class RuleBasedPolicy:
    name = "rules"

    def __init__(self, cfg: PolicyConfig, thresholds: dict[str, float | None]):
        self.cfg, self.thresholds = cfg, thresholds

    def decide(self, state, applicable: Callable[[str], bool]) -> Action:
        if not state.flags:
            return Action("accept", "critic passed")
        ordered = [s for s in self.cfg.priority if s in state.flags] + [s for s in state.flags
                                                                         if s not in self.cfg.priority]
        for signal in ordered:
            for tool in self.cfg.actions.get(signal, []):
                if applicable(tool):
                    value, thr = state.values.get(signal), self.thresholds.get(signal)
                    side = ">" if SIGNALS[signal].bad_when == "high" else "<"
                    return Action(tool, f"{signal} flagged ({_fmt(value)} {side} {_fmt(thr)})")
        return Action("accept", "no untried tool for the flagged signals")


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3g}"


def keep_proposal(new_flags: int, new_score: float, cur_flags: int, cur_score: float,
                  cfg: SelectionConfig) -> tuple[bool, str]:
    """The acceptance rule: fewer flags wins unless the score drops too far; equal flags needs a
    higher score; more flags loses. Returns (keep, why)."""
    change = f"flags {cur_flags}->{new_flags}, score {cur_score:.3f}->{new_score:.3f}"
    if new_flags < cur_flags:
        keep = new_score >= cur_score - cfg.max_score_drop
        return keep, change + ("" if keep else f" (drop > {cfg.max_score_drop})")
    if new_flags == cur_flags:
        keep = new_score > cur_score + cfg.min_score_gain
        return keep, change + ("" if keep else " (no score gain)")
    return False, change + " (more flags)"


def veto(new, current, cfg: SelectionConfig) -> str | None:
    """Why a proposal is rejected whatever its score, or None. ``new`` and ``current`` are the critic's
    ``Measurement``s of the proposal and of the current hypothesis."""
    if new.rev_norm is not None and current.rev_norm is not None \
            and new.rev_norm < current.rev_norm - cfg.max_reverse_drop:
        return f"veto: reverse score {current.rev_norm:.3f}->{new.rev_norm:.3f} drops by more than {cfg.max_reverse_drop}"
    new_unc, cur_unc = new.values.get("uncovered_source"), current.values.get("uncovered_source")
    if new_unc is not None and cur_unc is not None and new_unc > cur_unc + cfg.max_uncovered_rise:
        return f"veto: uncovered source words {cur_unc:g}->{new_unc:g} rise by more than {cfg.max_uncovered_rise:g}"
    if cfg.gate:
        from .gate import features, load_gate

        p = load_gate(cfg.gate).prob(features(new, current))
        if p < cfg.gate_threshold:
            return f"veto: gate p(improves) {p:.2f} < {cfg.gate_threshold}"
    return None


def make_policy(cfg: PolicyConfig, thresholds: dict[str, float | None]) -> Policy:
    return RuleBasedPolicy(cfg, thresholds)
