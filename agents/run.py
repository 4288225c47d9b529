"""Assemble an agent from its config and run it over a list of sentences, chunk by chunk, resumable."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from core_seq2seq.translator import LSTMTranslator, Translator, model_languages

from .config import AgentConfig, agent_hash, to_dict
from .critic import Critic
from .errors import AgentInputError
from .lexicon import Lexicon, build_or_load
from .loop import Cost, Meter, run_agent
from .policy import Policy, make_policy
from .refiner import RefinerView
from .tools import Toolbox
from .trace import TraceStore


@dataclass
class Agent:
    cfg: AgentConfig
    forward: Translator
    reverse: Translator | None
    lexicon: Lexicon | None
    critic: Critic
    toolbox: Toolbox
    policy: Policy

    def retune(self) -> None:
        """Re-read thresholds and selection from ``cfg`` (after tuning changed them)."""
        self.critic.thresholds = dict(self.cfg.critic.thresholds)
        self.policy = make_policy(self.cfg.policy, self.critic.thresholds)
        self.toolbox.reverse_weight = self.cfg.selection.reverse_weight
        self.toolbox.refiner_weight = self.cfg.selection.refiner_weight


def _load_model(key: str, paths: str | Sequence[str], src_lang: str, tgt_lang: str, device: str) -> LSTMTranslator:
    """Load ``models.<key>``, first checking that each directory translates ``src_lang``->``tgt_lang``
    (its decade_meta.json): a forward model given as the reverse one, or a model of another pair,
    would run without a complaint and give the critic and the channel signals nonsense."""
    dirs = [paths] if isinstance(paths, str) else list(paths)
    for d in dirs:
        got = model_languages(d) if Path(d).is_dir() else None
        if got is not None and got != (src_lang, tgt_lang):
            swapped = got == (tgt_lang, src_lang)
            hint = {"reverse": " (is it the forward model?)", "forward": " (is it the reverse model?)"}.get(key, "")
            raise AgentInputError(f"models.{key}: {d} translates {got[0]}->{got[1]}; expected {src_lang}->{tgt_lang} "
                                  f"(from models.src_lang and models.tgt_lang){hint if swapped else ''}")
    return LSTMTranslator.load(dirs[0] if len(dirs) == 1 else dirs, src_lang, tgt_lang, device=device)


def build_agent(cfg: AgentConfig, forward: Translator | None = None, reverse: Translator | None = None,
                lexicon: Lexicon | None = None, log: Callable[[str], None] = lambda m: None,
                refiner: Translator | None = None) -> Agent:
    """Load models, refiner and lexicon named by ``cfg`` (or use the ones given: tests pass fixtures)."""
    m = cfg.models
    if forward is None:
        if not m.forward:
            raise AgentInputError("models.forward is not set")
        forward = _load_model("forward", m.forward, m.src_lang, m.tgt_lang, m.device)
    if reverse is None and m.reverse:
        reverse = _load_model("reverse", m.reverse, m.tgt_lang, m.src_lang, m.device)
    if reverse is not None and (reverse.src_lang, reverse.tgt_lang) != (forward.tgt_lang, forward.src_lang):
        raise AgentInputError(f"models.reverse translates {reverse.src_lang}->{reverse.tgt_lang}; "
                              f"expected {forward.tgt_lang}->{forward.src_lang}")
    if lexicon is None and (cfg.lexicon.path or cfg.lexicon.src_path):
        lexicon = build_or_load(cfg.lexicon, forward.src_lang, forward.tgt_lang, log)
    if refiner is None and m.refiner:
        refiner = _load_model("refiner", m.refiner, m.src_lang, m.tgt_lang, m.device)
    view = None
    if refiner is not None:
        view = RefinerView(refiner, cfg.tools.refine)
    critic = Critic(forward, reverse, lexicon, cfg.critic, view)
    toolbox = Toolbox(forward, reverse, lexicon, cfg.tools, cfg.selection.reverse_weight,
                      cfg.policy.seed, view, cfg.selection.refiner_weight)
    return Agent(cfg, forward, reverse, lexicon, critic, toolbox, make_policy(cfg.policy, critic.thresholds))


def check_sources(sources: Sequence[str], path: str = "<input>") -> None:
    for number, s in enumerate(sources, start=1):
        if not s.strip():
            raise AgentInputError("empty line: the agent needs one sentence per line", path, number)


def make_drafts(agent: Agent, sources: Sequence[str], drafts: Sequence[str] | None = None
                ) -> tuple[list[list[tuple[str, float | None, int]]], list[Cost]]:
    """Draft pools (best first) and what each draft cost: decoded with ``draft.decode``, or read
    (``drafts``) with the cost the config says producing them took."""
    n = len(sources)
    if drafts is not None:
        d = agent.cfg.draft
        each = Cost(forward_calls=(d.forward_calls or 0) / max(n, 1), seconds=(d.decode_seconds or 0.0) / max(n, 1))
        return [[(t, None, 0)] for t in drafts], [each] * n
    meter = Meter([agent.forward])
    with meter.measure() as cost:
        cands = agent.forward.translate(list(sources), agent.cfg.draft.decode)
    share = Cost()
    share.add(cost, 1 / max(n, 1))
    return [[(c.text, c.logprob, c.length) for c in cs] for cs in cands], [share] * n


def correct(agent: Agent, sources: Sequence[str], drafts: Sequence[str] | None = None, trace_path: str | None = None,
            log: Callable[[str], None] = lambda m: None) -> tuple[list[str], list[dict]]:
    """Run the agent over ``sources``: returns the final hypotheses and the trace records (by id).

    With ``trace_path`` the trace is saved after each chunk of ``run.chunk_size`` sentences, and a
    rerun with the same config skips the sentences already traced.
    """
    check_sources(sources)
    if drafts is not None and len(drafts) != len(sources):
        raise AgentInputError(f"{len(drafts)} drafts for {len(sources)} sources")
    cfg = agent.cfg
    store = TraceStore(trace_path, agent_hash(cfg), to_dict(cfg)) if trace_path else None
    done = store.done(sources) if store else {}
    size = max(cfg.run.chunk_size, 1)
    for start in range(0, len(sources), size):
        ids = [i for i in range(start, min(start + size, len(sources))) if i not in done]
        if not ids:
            continue
        chunk = [sources[i] for i in ids]
        pools, costs = make_drafts(agent, chunk, [drafts[i] for i in ids] if drafts is not None else None)
        states = run_agent(ids, chunk, pools, agent.critic, agent.toolbox, agent.policy, cfg.selection,
                           cfg.policy.budget, costs)
        records = [s.record() for s in states]
        if store:
            store.append(records)
        for r in records:
            done[r["id"]] = r
        log(f"agent: {len(done)}/{len(sources)} sentences")
    records = [done[i] for i in range(len(sources))]
    return [r["final"] for r in records], records

