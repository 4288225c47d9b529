"""Adaptive inference compute: start every sentence from a cheap draft and climb a ladder of
costlier decoders only where the critic says it pays, under a FLOP budget per sentence and per corpus.

The ladder (``escalate.rungs``), cheapest first:

* ``rerank<N>``  the forward model's N-best (beam N), reranked by inference_compute's reranker
  (its tuned weights over forward, reverse / noisy channel, R2L and LM features); its choice
  becomes the current hypothesis. ``rerank64`` on every sentence *is* the full reranker.
* ``mbr``        MBR (inference_compute.mbr) over every candidate the sentence has produced so far.
* ``refine``     the learned refiner's rewrite (``agents.refiner``), kept by the acceptance rule.

A sentence climbs one rung at a time, so the hypothesis after k rungs does not depend on the policy:
the policy only decides where each sentence stops. At each rung, every sentence still climbing gets
a *value* from the policy (``EscalationPolicy.value``: how much the next rung is expected to pay,
read from the critic's reference-free signals of its current hypothesis); sentences whose value is
below ``threshold`` stop; the others are escalated in order of value while the budget lasts.

Budget: all FLOPs count (draft, critic, every rung), metered by inference_compute's ``ComputeMeter``
(through ``agents.loop.Meter``). Before a group of sentences is escalated, each is charged an upper
bound of what the rung can cost it (beam rows x the length cap, scoring every candidate, the critic's
look at the result); after it ran, the bound is replaced by what it did cost and the unused part is
offered to the next sentences in line. So the corpus never spends more than ``budget.corpus`` x the
reference's FLOPs, and no sentence more than ``budget.sentence`` x the reference's mean per sentence.

Policies (one interface, ``EscalationPolicy``):

* ``RulePolicy``     flagged signals first, then the lowest selection score (forward + reverse
  log-prob per token): the confidence-gating baseline.
* ``LearnedPolicy``  a logistic regression over the same signals (``FEATURES``), fitted on an
  exhaustive val trace to predict whether climbing on improves the sentence (``agents.curve``).

The loop (``climb``) is shared by the live run (``ModelRungs`` runs the models) and by val tuning
(``agents.curve.TraceRungs`` replays an exhaustive trace), so the budget is enforced the same way.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from core_seq2seq.tokenizer import encode_batch
from core_seq2seq.translator import Candidate, DecodeSettings, Metered
from inference_compute.rerank import check_margin

from .critic import SIGNALS, selection_score
from .errors import AgentInputError
from .loop import Cost, Meter, _step_record
from .policy import keep_proposal

RUNG_RE = re.compile(r"^(rerank(\d+)|mbr|refine)$")


@dataclass
class BudgetConfig:
    """Every field is a YAML key of ``escalate.budget``."""

    corpus: float = 0.33  # all decoding FLOPs of the corpus (draft, critic, rungs) at most this fraction of the reference's
    sentence: float = 2.0  # one sentence at most this multiple of the reference's mean FLOPs per sentence (0: no cap)
    reference_flops_per_sentence: float | None = None  # the reference's (the full reranker's) mean FLOPs per sentence; null: the val figure from ``tuned``


@dataclass
class EscalateConfig:
    """Every field is a YAML key of the ``escalate:`` section (``python -m agents escalate``)."""

    rungs: list[str] = field(default_factory=lambda: ["rerank16", "rerank64"])  # the ladder, cheapest first: rerank<N> | mbr | refine
    reranker: str = ""  # reranker weights JSON (inference_compute tune / the ladder's rerank stage); "" : forward + selection.reverse_weight x reverse per token
    r2l: str = ""  # right-to-left model dir for the reranker's r2l features ("" : none)
    lm: str = ""  # target LM run dir for the reranker's lm features ("" : none)
    lm_placeholder: str = "."  # the LM's stand-in source
    score_margin: float | None = None  # rerank<N>: the other models score only candidates whose free score (forward,
    #   length) is within this of the best's (inference_compute.rerank.within_margin); null: every candidate. The top
    #   rung is then cheaper than the full reranker, so the curve needs budget.reference_flops_per_sentence
    length_ratio: float = 1.0  # target words per source word on val (the reranker's len_ratio_dev; curve measures it)
    policy: str = "rules"  # rules | learned: what values a sentence's next rung
    model: str = ""  # the learned policy's JSON (python -m agents curve writes it)
    threshold: float | None = None  # stop a sentence whose value is below this (null: escalate by value until the budget is spent)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    curve: list[float] = field(default_factory=lambda: [0.2, 0.25, 0.33, 0.5, 0.75, 1.0])  # corpus budgets tuned on val (fractions of the reference)
    pick_within: float = 0.1  # the budget val picks: the smallest whose val BLEU is within this of the best budget's
    max_harm_to_fix: float = 0.5  # a tuned setting may harm at most this many sentences (vs the draft) per sentence it fixes
    l2: float = 1.0  # the learned policy's L2 penalty
    folds: int = 5  # cross-fitting folds (by sentence): val values come from models that did not see the sentence
    tuned: str = ""  # the JSON of python -m agents curve: its pick sets policy, model, threshold, budget.corpus and the reference

    def __post_init__(self) -> None:
        if not self.rungs:
            raise ValueError("escalate.rungs: name at least one rung (rerank<N>, mbr, refine)")
        for r in self.rungs:
            if not RUNG_RE.match(r):
                raise ValueError(f"escalate.rungs: unknown rung {r!r}; use rerank<N> (e.g. rerank16), mbr or refine")
        if self.policy not in ("rules", "learned"):
            raise ValueError(f"escalate.policy must be rules or learned, got {self.policy!r}")
        check_margin(self.score_margin, "escalate.score_margin")
        if self.budget.corpus <= 0 or self.budget.sentence < 0:
            raise ValueError("escalate.budget: corpus must be > 0 and sentence >= 0")


def rung_beam(rung: str) -> int | None:
    m = RUNG_RE.match(rung)
    return int(m.group(2)) if m and m.group(2) else None


# ---- the policies ---------------------------------------------------------------------------------

FEATURES = ("fwd_norm", "rev_norm", "fwd_len", "src_words", "rung", "changed_last", "n_flags",
            *[f"sig_{s}" for s in SIGNALS])


def features(source: str, view: dict, rung: int, changed_last: bool) -> list[float]:
    """The learned policy's inputs: the critic's measurement of the current hypothesis (``view``, a
    trace step: ``values``, ``fwd_norm``, ``rev_norm``, ``fwd_len``, ``flags``) and where it stands."""
    vals = view.get("values") or {}

    def num(v) -> float:
        return 0.0 if v is None else float(v)

    return [num(view.get("fwd_norm")), num(view.get("rev_norm")), num(view.get("fwd_len")),
            float(len(source.split())), float(rung), float(changed_last), float(len(view.get("flags") or [])),
            *[num(vals.get(s)) for s in SIGNALS]]


class EscalationPolicy(Protocol):
    """How much climbing to the next rung is expected to pay for a sentence; higher goes first."""

    name: str

    def value(self, source: str, view: dict, rung: int, changed_last: bool, sentence_id: int) -> float: ...


class RulePolicy:
    """Flagged signals first (each flag adds 10), then the least confident: minus the selection score."""

    name = "rules"

    def value(self, source: str, view: dict, rung: int, changed_last: bool, sentence_id: int) -> float:
        score = view.get("score")
        return 10.0 * len(view.get("flags") or []) - (float(score) if score is not None else 0.0)


class LearnedPolicy:
    """p(climbing on improves the sentence) from a logistic regression (``agents.gate.Gate``) over
    ``FEATURES``. ``per_sentence`` (tuning only): sentence id -> the model fitted without its fold."""

    name = "learned"

    def __init__(self, model, per_sentence: dict | None = None):
        self.model, self.per_sentence = model, per_sentence or {}

    def value(self, source: str, view: dict, rung: int, changed_last: bool, sentence_id: int) -> float:
        model = self.per_sentence.get(sentence_id, self.model)
        return model.prob(features(source, view, rung, changed_last))


def load_policy(name: str, model_path: str = "") -> EscalationPolicy:
    if name == "rules":
        return RulePolicy()
    if not model_path:
        raise AgentInputError("escalate.policy is learned but escalate.model is not set (python -m agents curve writes it)")
    from .gate import load_gate

    return LearnedPolicy(load_gate(model_path, FEATURES))


# ---- the climb ------------------------------------------------------------------------------------

@dataclass
class Climb:
    """One sentence on the ladder."""

    id: int
    source: str
    draft: str
    current: str
    view: dict  # the trace step that measured the current hypothesis
    steps: list[dict]
    draft_cost: Cost = field(default_factory=Cost)
    cost: Cost = field(default_factory=Cost)
    pool: dict[str, tuple[float, int]] = field(default_factory=dict)  # text -> (forward logprob, length)
    seen: set[str] = field(default_factory=set)
    rung: int = 0  # rungs climbed
    changed_last: bool = False
    values: list[float] = field(default_factory=list)
    final_step: int = 0
    done: bool = False
    reason: str = ""

    @property
    def spent(self) -> float:
        return self.draft_cost.flops + self.cost.flops

    def record(self) -> dict:
        """The sentence's trace record (the format of ``agents.trace``, plus ``escalation``)."""
        return {"id": self.id, "source": self.source, "draft": self.draft, "final": self.current, "steps": self.steps,
                "decision": {"reason": self.reason, "final_from_step": self.final_step, "tool_steps": len(self.steps) - 1,
                             "flags": self.view.get("flags") or []},
                "escalation": {"rungs_climbed": self.rung, "values": [round(v, 4) for v in self.values],
                               "flops": float(f"{self.spent:.4g}")},
                "cost": {"draft": self.draft_cost.to_json(), "agent": self.cost.to_json()}}


@dataclass
class StepResult:
    record: dict  # the trace step (its ``cost`` is filled by the loop)
    text: str | None  # the new current hypothesis (None: unchanged)
    cost: Cost  # what this sentence's share of the step cost


class Rungs(Protocol):
    """What the climb needs from whoever runs the rungs: an upper bound of a rung's FLOPs for a
    sentence, and running it for a group of sentences."""

    names: list[str]

    def bound(self, rung: int, s: Climb) -> float: ...

    def run(self, rung: int, group: Sequence[Climb]) -> list[StepResult]: ...


@dataclass
class Budget:
    """FLOPs left to the corpus (or the chunk), and the per-sentence cap; ``violations`` counts
    steps that cost more than their bound (the bound is then wrong: reported, never hidden)."""

    left: float
    per_sentence: float = math.inf
    violations: int = 0


def climb(states: Sequence[Climb], rungs: Rungs, policy: EscalationPolicy, threshold: float | None,
          budget: Budget) -> list[Climb]:
    """Climb ``rungs`` in lockstep; returns the states, each finished with its reason."""
    thr = -math.inf if threshold is None else threshold
    for r, name in enumerate(rungs.names, start=1):
        queue = []
        for s in states:
            if s.done:
                continue
            v = policy.value(s.source, s.view, r, s.changed_last, s.id)
            s.values.append(v)
            if v < thr:
                s.done, s.reason = True, f"policy: value {v:.3g} < threshold {thr:.3g} before {name}"
            else:
                queue.append(s)
        queue.sort(key=lambda s: (-s.values[-1], s.id))
        while queue:
            group, reserved, rest = [], 0.0, []
            for s in queue:
                b = rungs.bound(r, s)
                if s.spent + b > budget.per_sentence:
                    s.done, s.reason = True, f"sentence budget: {name} may cost {b:.3g} FLOPs, {budget.per_sentence - s.spent:.3g} left"
                elif not rest and reserved + b <= budget.left:
                    group.append((s, b))
                    reserved += b
                else:
                    rest.append(s)  # waits for what the group leaves unused
            if not group:
                for s in rest:
                    s.done, s.reason = True, f"corpus budget: {name} may cost {rungs.bound(r, s):.3g} FLOPs, {budget.left:.3g} left"
                break
            results = rungs.run(r, [s for s, _ in group])
            budget.violations += sum(res.cost.flops for res in results) > reserved * (1 + 1e-9)
            for (s, b), res in zip(group, results):
                budget.left -= res.cost.flops
                s.cost.add(res.cost)
                rec = dict(res.record, step=len(s.steps), reason=f"value {s.values[-1]:.3g}" + (
                    "" if threshold is None else f" >= {thr:.3g}"), cost=res.cost.to_json())
                s.steps.append(rec)
                s.rung = r
                s.changed_last = res.text is not None and res.text != s.current
                if res.text is not None:
                    if res.text != s.current:
                        s.final_step = rec["step"]
                    s.current = res.text
                if "values" in rec:
                    s.view = rec
            queue = rest
    for s in states:
        if not s.done:
            s.done, s.reason = True, "top rung reached"
    return states


# ---- running the rungs with the models ----------------------------------------------------------

def _flops(t: Metered | None, decoder_steps: float, encoder_tokens: float) -> float:
    """FLOPs of ``decoder_steps`` row-steps and ``encoder_tokens`` encoded source tokens on ``t``
    (every ensemble member; a MeanScorer: every member), by the translator's own FLOP model."""
    if t is None:
        return 0.0
    if t.members:
        return sum(_flops(m, decoder_steps, encoder_tokens) for m in t.members)
    n = max(len(t.models), 1)  # its counter counts every ensemble member's row-steps
    flops = t.flops({"decoder_row_steps": decoder_steps * n, "encoder_token_steps": encoder_tokens * n})
    return 0.0 if flops is None else float(flops)  # no FLOP model: the meter counts it as 0 too


class ModelRungs:
    """The rungs run with the agent's models (``agents.run.Agent``) and the reranker."""

    def __init__(self, agent, cfg: EscalateConfig, r2l=None, lm=None, weights: dict | None = None,
                 typical_ratio: float = 1.0):
        self.agent, self.cfg, self.names = agent, cfg, list(cfg.rungs)
        from inference_compute.features import Scorers

        self.r2l, self.lm = r2l, lm
        self.scorers = Scorers(reverse=agent.reverse, r2l=r2l, lm=lm, typical_ratio=typical_ratio)
        sel = agent.cfg.selection
        self.weights = weights or {"fwd_per_token": 1.0, **({"rev_per_token": sel.reverse_weight} if agent.reverse else {})}
        given = {"rev": agent.reverse, "r2l": r2l, "lm": lm}  # the agent has no alt model
        missing = [k for k, w in self.weights.items() if w and k.split("_")[0] in ("rev", "r2l", "lm", "alt")
                   and given.get(k.split("_")[0]) is None]
        if missing:
            raise AgentInputError(f"escalate.reranker weighs {', '.join(missing)} but its model is not given "
                                  "(models.reverse, escalate.r2l, escalate.lm; alt: none in the agent)")
        if "refine" in self.names and agent.critic.refiner is None:
            raise AgentInputError("escalate.rungs has refine but models.refiner is not set")
        from inference_compute.lm import TargetLM

        # a TargetLM is metered as its translator (the Meter charges each model it is given once)
        self.meter = Meter([agent.forward, agent.reverse, r2l, lm.translator if isinstance(lm, TargetLM) else lm,
                            agent.critic.refiner])
        self._tokens: dict[str, int] = {}

    def _src_tokens(self, text: str) -> int:
        if text not in self._tokens:
            self._tokens[text] = max(len(encode_batch(self.agent.forward.tokenizer, [text])[0]), 1)
        return self._tokens[text]

    def _max_len(self, tokens: int) -> int:
        d = self.agent.cfg.draft.decode
        return int(tokens * d.max_len_a + d.max_len_b)

    def critic_bound(self, s_tok: int, h_tok: int) -> float:
        """The critic's look at one hypothesis of ``h_tok`` tokens: forward and reverse scoring, the round trip."""
        a, c = self.agent, self.agent.critic
        out = _flops(a.forward, h_tok + 1, s_tok)
        if a.reverse is not None:
            out += _flops(a.reverse, s_tok + 1, h_tok)
            if "round_trip" in c.cfg.signals:
                out += _flops(a.reverse, self._max_len(h_tok), h_tok)
        return out

    def bound(self, rung: int, s: Climb) -> float:
        name = self.names[rung - 1]
        st = self._src_tokens(s.source)
        L = self._max_len(st)  # generated tokens at most (</s> included); a candidate has at most L - 1 (+ </s>)
        if name == "mbr":
            return self.critic_bound(st, L)
        if name == "refine":
            ref = self.agent.critic.refiner
            k = self.agent.cfg.tools.refine.beam_size
            rin = self._src_tokens(f"{s.source} ||| {s.draft}")
            return (_flops(ref.translator, k * L, rin) + _flops(self.agent.forward, k * (L + 1), k * st)
                    + _flops(self.agent.reverse, k * (st + 1), k * L) + _flops(ref.translator, k * (L + 1), k * rin)
                    + self.critic_bound(st, L))
        n = rung_beam(name)
        out = _flops(self.agent.forward, n * L, st)  # beam search: at most n rows for at most L steps
        out += _flops(self.agent.reverse, n * (st + 1), n * L) if self.weights.get("rev_per_token") else 0.0
        out += _flops(self.r2l, n * (L + 1), n * st) if self.r2l is not None else 0.0
        out += _flops(self.lm, n * (L + 1), n * 4) if self.lm is not None else 0.0  # 4: the placeholder source, bounded
        return out + self.critic_bound(st, L)

    def run(self, rung: int, group: Sequence[Climb]) -> list[StepResult]:
        name = self.names[rung - 1]
        bounds = [self.bound(rung, s) for s in group]
        with self.meter.measure() as cost:
            if name == "mbr":
                props = [self._mbr(s) for s in group]
            elif name == "refine":
                props = self._refine(group)
            else:
                props = self._rerank(rung_beam(name), group)
        measured = [(s, p) for s, p in zip(group, props) if p[0] is not None]
        with self.meter.measure() as look:
            ms = self.agent.critic.measure([s.source for s, _ in measured], [p[0] for _, p in measured],
                                           [s.draft for s, _ in measured])
        by_id = {id(s): m for (s, _), m in zip(measured, ms)}
        total = sum(bounds) or 1.0
        out = []
        sel = self.agent.cfg.selection
        for s, (text, args, keep_rule), b in zip(group, props, bounds):
            # The group's cost split in proportion to what each sentence could cost: a share stays
            # within its sentence's bound whenever the group's cost stays within the sum of bounds.
            share = Cost()
            share.add(cost, b / total)
            share.add(look, b / total)
            args["critic_flops"] = float(f"{look.flops * b / total:.4g}")  # the critic's part of the step
            if text is None:
                out.append(StepResult(_step_record(0, name, "", args, None, None, [], None, False,
                                                   "the rung found no candidate", share), None, share))
                continue
            m = by_id[id(s)]
            flags = self.agent.critic.judge(m)
            score = selection_score(m.fwd_norm, m.rev_norm, sel.reverse_weight, m.ref_norm, sel.refiner_weight)
            if keep_rule:
                cur = s.view
                keep, why = keep_proposal(len(flags), score, len(cur.get("flags") or []), cur.get("score") or 0.0, sel)
            else:
                keep, why = True, args.pop("why")
            s.seen.add(text)
            out.append(StepResult(_step_record(0, name, "", args, text, m, flags, score, keep, why, share),
                                  text if keep else None, share))
        return out

    def _rerank(self, n: int, group: Sequence[Climb]) -> list[tuple]:
        from .tools import _dedupe

        d = self.agent.cfg.draft.decode
        settings = DecodeSettings(method="beam", beam_size=n, nbest=n, length_penalty=d.length_penalty,
                                  max_len_a=d.max_len_a, max_len_b=d.max_len_b, batch_size=d.batch_size)
        cands = [_dedupe([c for c in cs if c.text.strip()]) or [Candidate(s.current, 0.0, 1, 0.0, [])]
                 for s, cs in zip(group, self.agent.forward.translate([s.source for s in group], settings))]
        picks = self.scorers.needed(self.weights).select([s.source for s in group], cands, self.weights, self.cfg.score_margin)
        out = []
        for s, cs, i in zip(group, cands, picks):
            for c in cs:
                if c.text not in s.pool or c.logprob > s.pool[c.text][0]:
                    s.pool[c.text] = (c.logprob, c.length)
            out.append((cs[i].text, {"nbest": n, "candidates": len(cs), "reranker_rank": i,
                                     "why": f"the reranker's choice among {len(cs)}"}, False))
        return out

    def _mbr(self, s: Climb) -> tuple:
        from .tools import mbr_pick

        texts = list(s.pool)
        if len(texts) < 2:
            return None, {"pool": len(texts)}, False
        i = mbr_pick(texts, [s.pool[t][0] for t in texts], self.agent.cfg.tools.mbr)
        return texts[i], {"pool": len(texts), "utility": self.agent.cfg.tools.mbr.utility,
                          "why": f"MBR's choice among {len(texts)}"}, False

    def _refine(self, group: Sequence[Climb]) -> list[tuple]:
        props = self.agent.toolbox._refine(group)
        for s, p in zip(group, props):
            for text, lp, n in p.pool:
                if text not in s.pool or lp > s.pool[text][0]:
                    s.pool[text] = (lp, n)
        return [(p.text, p.args, True) for p in props]


# ---- starting a chunk: drafts and the critic's first look ----------------------------------------

def start(agent, ids: Sequence[int], sources: Sequence[str], drafts: Sequence[str] | None = None) -> list[Climb]:
    """Draft (``draft.decode``; its n-best seeds the MBR pool; or ``drafts`` given, costed as
    ``draft.forward_calls``/``decode_seconds`` say) and measure every sentence of a chunk."""
    from .run import make_drafts

    pools, costs = make_drafts(agent, sources, drafts)
    meter = Meter([agent.forward, agent.reverse, agent.critic.refiner])
    drafts = [p[0][0] for p in pools]
    with meter.measure() as cost:
        ms = agent.critic.measure(list(sources), drafts, drafts)
    sel = agent.cfg.selection
    out = []
    for i, src, pool, dc, m in zip(ids, sources, pools, costs, ms):
        flags = agent.critic.judge(m)
        score = selection_score(m.fwd_norm, m.rev_norm, sel.reverse_weight, m.ref_norm, sel.refiner_weight)
        share = Cost()
        share.add(cost, 1 / max(len(ids), 1))
        step = _step_record(0, "draft", "", {}, pool[0][0], m, flags, score, True, "the draft", share)
        s = Climb(int(i), src, pool[0][0], pool[0][0], step, [step], draft_cost=dc, seen={pool[0][0]})
        s.cost.add(share)
        for text, lp, n in pool:
            if text.strip() and lp is not None:
                s.pool[text] = (lp, n)
        out.append(s)
    return out


def load_models(agent) -> tuple:
    """(r2l, lm, reranker weights, length ratio) named by ``escalate``: what ``ModelRungs`` needs beyond the agent."""
    from dataclasses import replace

    from inference_compute.features import Scorers
    from inference_compute.rerank import load_weights

    cfg = agent.cfg.escalate
    scorers = Scorers.load(r2l=cfg.r2l, lm=cfg.lm, lm_placeholder=cfg.lm_placeholder, device=agent.cfg.models.device)
    replace(scorers, reverse=agent.reverse).check(agent.forward)
    try:
        weights = load_weights(cfg.reranker) if cfg.reranker else None
    except ValueError as e:
        raise AgentInputError(f"escalate.reranker: {e}") from None
    return scorers.r2l, scorers.lm, weights, cfg.length_ratio


def reference_per_sentence(cfg: EscalateConfig) -> float:
    """The reference's mean FLOPs per sentence: the config's, else the val figure in ``tuned``."""
    if cfg.budget.reference_flops_per_sentence:
        return float(cfg.budget.reference_flops_per_sentence)
    raise AgentInputError("escalate.budget.reference_flops_per_sentence is not set: give it (the full reranker's "
                          "mean decoding FLOPs per sentence) or set escalate.tuned (python -m agents curve)")


def escalate_corpus(agent, sources: Sequence[str], trace_path: str | None = None, reference_flops: float | None = None,
                    models: tuple = (None, None, None, 1.0), log: Callable[[str], None] = lambda m: None,
                    drafts: Sequence[str] | None = None) -> tuple[list[str], list[dict], dict]:
    """Run the escalating agent over ``sources``, chunk by chunk (resumable through the trace).

    ``reference_flops``: the reference's FLOPs on this corpus (default: ``budget.reference_flops_per_sentence``
    x sentences). ``models``: (r2l, lm, reranker weights, typical length ratio). The corpus budget
    is spread over chunks in proportion to their sentences, and what a chunk leaves is carried on.
    Returns the finals, the trace records and a budget report."""
    from .config import agent_hash, to_dict
    from .run import check_sources
    from .trace import TraceStore

    check_sources(sources)
    cfg = agent.cfg.escalate
    n = len(sources)
    ref_total = reference_flops if reference_flops else reference_per_sentence(cfg) * n
    allowed = cfg.budget.corpus * ref_total
    per_sentence = cfg.budget.sentence * ref_total / max(n, 1) if cfg.budget.sentence else math.inf
    policy = load_policy(cfg.policy, cfg.model)
    rungs = ModelRungs(agent, cfg, *models)
    store = TraceStore(trace_path, agent_hash(agent.cfg), to_dict(agent.cfg)) if trace_path else None
    done = store.done(sources) if store else {}
    spent = sum(_record_flops(r) for r in done.values())
    violations = 0
    size = max(agent.cfg.run.chunk_size, 1)
    for begin in range(0, n, size):
        ids = [i for i in range(begin, min(begin + size, n)) if i not in done]
        if not ids:
            continue
        states = start(agent, ids, [sources[i] for i in ids], [drafts[i] for i in ids] if drafts is not None else None)
        first_look = sum(s.spent for s in states)
        if first_look / len(states) * n > allowed:
            raise AgentInputError(f"escalate.budget.corpus={cfg.budget.corpus} of the reference's {ref_total:.4g} FLOPs "
                                  f"does not cover the drafts and the critic's first look (about "
                                  f"{first_look / len(states) * n:.4g} FLOPs for the corpus)")
        spent += first_look
        left = allowed * min(begin + size, n) / n - spent
        budget = Budget(max(left, 0.0), per_sentence)
        before = sum(s.spent for s in states)
        climb(states, rungs, policy, cfg.threshold, budget)
        spent += sum(s.spent for s in states) - before
        violations += budget.violations
        records = [s.record() for s in states]
        if store:
            store.append(records)
        for r in records:
            done[r["id"]] = r
        log(f"escalate: {len(done)}/{n} sentences, {spent:.4g} FLOPs"
            + (f" = {spent / ref_total:.3f} of the reference's" if math.isfinite(ref_total) else ""))
    records = [done[i] for i in range(n)]
    total = sum(_record_flops(r) for r in records)
    report = {"reference_flops": ref_total, "allowed_flops": allowed, "spent_flops": total,
              "spent_forward_calls": sum(_cost_of(r, "forward_calls") for r in records),
              "spent_seconds": sum(_cost_of(r, "seconds") for r in records),
              "fraction_of_reference": total / ref_total if ref_total else None, "within_budget": total <= allowed * (1 + 1e-9),
              "bound_violations": violations, "policy": cfg.policy, "threshold": cfg.threshold,
              "budget_corpus": cfg.budget.corpus}
    return [r["final"] for r in records], records, report


def _cost_of(r: dict, key: str) -> float:
    return float(r["cost"]["draft"].get(key) or 0.0) + float(r["cost"]["agent"].get(key) or 0.0)


def _record_flops(r: dict) -> float:
    return _cost_of(r, "flops")
