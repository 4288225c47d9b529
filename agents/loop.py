"""The agent loop: draft -> critique -> (tool -> critique -> keep or reject)* -> accept, batched.

All sentences advance in lockstep, one step at a time: at each step the policy picks an action per
sentence, sentences that chose the same tool are served by one batched call, and all proposals of
the step are critiqued in one batched call. A sentence stops when the critic passes, when the
policy accepts (no untried tool applies), or when its step budget is spent; its trace record lists
every step.

Cost: every batched operation is metered (decoder forward calls of the forward and reverse
models, FLOPs, wall seconds) and its cost is split equally over the sentences it served, so the
per-sentence costs in the trace sum to the run's totals.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from core_seq2seq.translator import Metered

from .critic import Critic, Measurement, selection_score
from .policy import Policy, SelectionConfig, keep_proposal, veto
from .tools import TOOLS, Toolbox


@dataclass
class Cost:
    forward_calls: float = 0.0
    flops: float = 0.0
    seconds: float = 0.0

    def add(self, other: "Cost", scale: float = 1.0) -> None:
        self.forward_calls += other.forward_calls * scale
        self.flops += other.flops * scale
        self.seconds += other.seconds * scale

    def to_json(self) -> dict:
        return {"forward_calls": round(self.forward_calls, 3), "flops": float(f"{self.flops:.4g}"),
                "seconds": round(self.seconds, 4)}


class Meter:
    """What a batched operation spent on the given translators: inference_compute's ``ComputeMeter``
    (the project's one FLOP meter), read as a ``Cost``."""

    def __init__(self, translators: Sequence[Metered | None]):
        unique = {id(t): t for t in translators if t is not None and t.counter is not None}
        self.translators = {f"model{i}": t for i, t in enumerate(unique.values())}

    @contextmanager
    def measure(self):
        """``with meter.measure() as cost:`` fills ``cost`` with what the block spent."""
        from inference_compute.compute import ComputeMeter

        cost = Cost()
        meter = ComputeMeter(self.translators)
        meter.__enter__()
        try:
            yield cost
        finally:
            meter.__exit__(None, None, None)
            r = meter.result
            cost.forward_calls, cost.flops, cost.seconds = r["forward_calls"], r["flops"] or 0.0, r["decode_seconds"]


@dataclass
class SentenceState:
    id: int
    source: str
    draft: str
    current: str = ""
    measurement: Measurement | None = None
    flags: list[str] = field(default_factory=list)
    score: float = 0.0
    pool: dict[str, tuple[float, int]] = field(default_factory=dict)  # text -> (forward logprob, length)
    seen: set[str] = field(default_factory=set)  # texts held or proposed: tools offer only new ones
    tried: set[str] = field(default_factory=set)  # action keys already run
    steps: list[dict] = field(default_factory=list)
    draft_cost: Cost = field(default_factory=Cost)
    cost: Cost = field(default_factory=Cost)
    final_step: int = 0
    done: bool = False
    reason: str = ""

    @property
    def values(self) -> dict:
        return self.measurement.values if self.measurement else {}

    @property
    def evidence(self) -> dict:
        return self.measurement.evidence if self.measurement else {}

    def add_pool(self, items: Sequence[tuple[str, float, int]]) -> None:
        for text, lp, n in items:
            if lp is None:
                continue
            if text.strip() and (text not in self.pool or lp > self.pool[text][0]):
                self.pool[text] = (lp, n)

    def finish(self, reason: str) -> None:
        self.done, self.reason = True, reason

    def record(self) -> dict:
        """This sentence's trace record (see ``agents.trace``)."""
        return {"id": self.id, "source": self.source, "draft": self.draft, "final": self.current,
                "steps": self.steps,
                "decision": {"reason": self.reason, "final_from_step": self.final_step,
                             "tool_steps": len(self.steps) - 1, "flags": self.flags},
                "cost": {"draft": self.draft_cost.to_json(), "agent": self.cost.to_json()}}


def _step_record(step: int, action: str, reason: str, args: dict, candidate: str | None, m: Measurement | None,
                 flags: list[str], score: float | None, kept: bool, why: str, cost: Cost) -> dict:
    rec = {"step": step, "action": action, "reason": reason, "args": args, "candidate": candidate}
    if m is not None:
        rec.update(m.to_json())
        rec["flags"] = flags
        rec["score"] = round(score, 4) if score is not None else None
    rec.update({"kept": kept, "why": why, "cost": cost.to_json()})
    return rec


def run_agent(ids: Sequence[int], sources: Sequence[str], drafts: Sequence[Sequence[tuple[str, float, int]]],
              critic: Critic, toolbox: Toolbox, policy: Policy, selection: SelectionConfig, budget: int,
              draft_costs: Sequence[Cost] | None = None) -> list[SentenceState]:
    """Run the agent on a batch. ``drafts[i]`` is the draft pool of sentence i, best first
    (``(text, forward logprob, length)``; the first entry is the draft)."""
    meter = Meter([critic.forward, critic.reverse, toolbox.forward, toolbox.reverse, critic.refiner])
    states = []
    for k, (i, src, pool) in enumerate(zip(ids, sources, drafts)):
        s = SentenceState(int(i), src, pool[0][0])
        s.add_pool(pool)
        if draft_costs is not None:
            s.draft_cost = draft_costs[k]
        states.append(s)

    with meter.measure() as cost:
        ms = critic.measure([s.source for s in states], [s.draft for s in states], [s.draft for s in states])
    for s, m in zip(states, ms):
        s.current, s.measurement, s.flags = s.draft, m, critic.judge(m)
        s.add_pool([(s.draft, m.fwd_norm * m.fwd_len, m.fwd_len)])  # drafts read from a file come unscored
        s.score = selection_score(m.fwd_norm, m.rev_norm, selection.reverse_weight, m.ref_norm,
                                  selection.refiner_weight)
        s.seen.add(s.draft)
        s.cost.add(cost, 1 / len(states))
        s.steps.append(_step_record(0, "draft", "", {}, s.draft, m, s.flags, s.score, True, "the draft",
                                    _share(cost, len(states))))

    for step in range(1, budget + 1):
        groups: dict[str, list[tuple[SentenceState, str]]] = {}
        for s in states:
            if s.done:
                continue
            action = policy.decide(s, lambda a, s=s: toolbox.applicable(a, s))
            if action.name == "accept":
                s.finish(action.reason)
                continue
            s.tried.add(toolbox.action_key(action.name, s))
            groups.setdefault(action.name, []).append((s, action.reason))
        if not groups:
            break
        proposals = []
        for tool in TOOLS:  # fixed order: deterministic
            group = groups.get(tool, [])
            if not group:
                continue
            with meter.measure() as cost:
                props = toolbox.run(tool, [s for s, _ in group], step)
            for (s, reason), p in zip(group, props):
                s.add_pool(p.pool)
                s.cost.add(cost, 1 / len(group))
                proposals.append((s, tool, reason, p, _share(cost, len(group))))
        to_measure = [(s, p) for s, _, _, p, _ in proposals if p.text is not None]
        with meter.measure() as cost:
            ms = critic.measure([s.source for s, _ in to_measure], [p.text for _, p in to_measure],
                                [s.draft for s, _ in to_measure])
        measured = {id(p): m for (_, p), m in zip(to_measure, ms)}
        for s, tool, reason, p, tool_cost in proposals:
            step_cost = Cost()
            step_cost.add(tool_cost)
            if p.text is None:
                s.steps.append(_step_record(step, tool, reason, p.args, None, None, [], None, False,
                                            "the tool found no new candidate", step_cost))
                continue
            share = _share(cost, len(to_measure))
            s.cost.add(share)
            step_cost.add(share)
            m = measured[id(p)]
            flags = critic.judge(m)
            score = selection_score(m.fwd_norm, m.rev_norm, selection.reverse_weight, m.ref_norm,
                                    selection.refiner_weight)
            keep, why = keep_proposal(len(flags), score, len(s.flags), s.score, selection)
            vetoed = veto(m, s.measurement, selection) if keep else None
            if vetoed:
                keep, why = False, f"{why} ({vetoed})"
            s.seen.add(p.text)
            s.steps.append(_step_record(step, tool, reason, p.args, p.text, m, flags, score, keep, why, step_cost))
            if keep:
                s.current, s.measurement, s.flags, s.score, s.final_step = p.text, m, flags, score, step
    for s in states:
        if not s.done:
            s.finish("critic passed" if not s.flags else ("budget spent" if budget else "no budget"))
    return states


def _share(cost: Cost, n: int) -> Cost:
    out = Cost()
    out.add(cost, 1 / max(n, 1))
    return out
