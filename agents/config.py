"""The agent's YAML config (``configs/agent_*.yaml`` documents every key)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from core_seq2seq.config import ConfigError, config_hash, from_dict, read_config
from core_seq2seq.translator import DecodeSettings
from inference_compute.tune import AGENT_GRID, TuneConfig

from .critic import CriticConfig
from .escalate import EscalateConfig
from .lexicon import LexiconConfig
from .policy import PolicyConfig, SelectionConfig
from .tools import ToolsConfig


@dataclass
class ModelsConfig:
    forward: list[str] = field(default_factory=list)  # model dir(s) src->tgt (several: an ensemble)
    reverse: str | list[str] = ""  # model dir(s) tgt->src (several: an ensemble): round trip and noisy channel ("" : those signals off)
    refiner: str = ""  # model dir "src ||| draft"->tgt (agents.refiner): refiner_margin and refine ("" : off)
    src_lang: str = "en"
    tgt_lang: str = "de"
    device: str = "cpu"


@dataclass
class DraftConfig:
    decode: DecodeSettings = field(default_factory=DecodeSettings)  # how the draft is decoded
    hyps: str = ""  # or: read drafts from this file (one per source line), e.g. the best non-agent system
    forward_calls: int | None = None  # with hyps: what producing them cost (from that system's record)
    decode_seconds: float | None = None
    system: str = "draft"  # the draft's system name in result records
    stage: str = "beam"  # its ladder stage (beam, rerank, mbr, ...)


@dataclass
class RunConfig:
    chunk_size: int = 200  # sentences per chunk: the trace is saved after each, a rerun skips finished ones


# The agent's tune section is inference_compute's TuneConfig; its keys before it was.
RENAMED_TUNE_KEYS = {"objective": "metric", "passes": "coordinate_rounds", **{k: f"grid.{k}" for k in AGENT_GRID}}
AGENT_TUNE_ROUNDS = 2  # coordinate-ascent passes when tune.coordinate_rounds is not set (each pass reruns the loop per trial)


@dataclass
class AgentConfig:
    models: ModelsConfig = field(default_factory=ModelsConfig)
    lexicon: LexiconConfig = field(default_factory=LexiconConfig)
    draft: DraftConfig = field(default_factory=DraftConfig)
    critic: CriticConfig = field(default_factory=CriticConfig)
    tools: ToolsConfig = field(default_factory=ToolsConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    run: RunConfig = field(default_factory=RunConfig)
    tune: TuneConfig = field(default_factory=lambda: TuneConfig(coordinate_rounds=AGENT_TUNE_ROUNDS))  # thresholds and margins chosen on val
    escalate: EscalateConfig = field(default_factory=EscalateConfig)  # the escalating agent (python -m agents escalate / curve)
    tuned: str = ""  # thresholds + selection written by `python -m agents tune` (override the ones above)
    name: str = "agent"  # system name in result records


def load_agent_config(path: str | Path, overrides: dict | None = None, sets: Sequence[str] = ()) -> AgentConfig:
    """Load an agent config (``--set`` strings ``sets`` applied, e.g. ``pair=de-en``, then the
    ``overrides`` dict merged in); ``tuned`` (if set and present) overrides thresholds and selection."""
    data = read_config(path, sets)
    if overrides:
        data = _merge(data, overrides)
    if isinstance(data.get("models", {}).get("forward"), str):
        data["models"]["forward"] = [data["models"]["forward"]]
    if isinstance(data.get("tune") or {}, dict):
        tune = data["tune"] = dict(data.get("tune") or {})
        for old, new in RENAMED_TUNE_KEYS.items():
            if old in tune:
                raise ConfigError(f"{path}: tune.{old}: renamed tune.{new}")
        tune.setdefault("coordinate_rounds", AGENT_TUNE_ROUNDS)
    try:
        cfg = from_dict(AgentConfig, data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    return apply_escalation_pick(apply_tuned(cfg))


def apply_escalation_pick(cfg: AgentConfig) -> AgentConfig:
    """``escalate.tuned`` (if set and present): the setting val picked sets the policy, its model,
    threshold, corpus budget and the reference's FLOPs per sentence (measured on val)."""
    e = cfg.escalate
    if not e.tuned or not Path(e.tuned).exists():
        return cfg
    try:
        tuned = json.loads(Path(e.tuned).read_text(encoding="utf-8"))
        pick = tuned["pick"]
        e.policy, e.threshold, e.budget.corpus = pick["policy"], pick["threshold"], float(pick["budget"])
        e.model = tuned.get("model") or e.model
        e.length_ratio = float(tuned.get("length_ratio", e.length_ratio))
        if not e.budget.reference_flops_per_sentence:
            e.budget.reference_flops_per_sentence = float(tuned["reference_flops_per_sentence"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as ex:
        raise ConfigError(f"{e.tuned}: not an escalation curve file ({type(ex).__name__}: {ex})") from None
    return cfg


def apply_tuned(cfg: AgentConfig) -> AgentConfig:
    if not cfg.tuned or not Path(cfg.tuned).exists():
        return cfg
    try:
        tuned = json.loads(Path(cfg.tuned).read_text(encoding="utf-8"))
        thresholds = from_dict(CriticConfig, {"thresholds": tuned["thresholds"]}, "tuned").thresholds
        selection = from_dict(SelectionConfig, tuned["selection"], "tuned.selection")
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ConfigError(f"{cfg.tuned}: not a tuned-thresholds file ({type(e).__name__}: {e})") from None
    except ConfigError as e:
        raise ConfigError(f"{cfg.tuned}: {e}") from None
    cfg.critic.thresholds = {**cfg.critic.thresholds, **thresholds}
    cfg.selection = selection
    return cfg


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out.get(k) or {}, v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def to_dict(cfg: AgentConfig) -> dict:
    return dataclasses.asdict(cfg)


def agent_hash(cfg: AgentConfig) -> str:
    """What makes an agent's output what it is (model and lexicon paths, thresholds, tools, policy)."""
    data = to_dict(cfg)
    for key in ("run", "tune", "tuned"):  # how the run is chunked or was tuned does not change outputs
        data.pop(key)
    for key in ("curve", "pick_within", "max_harm_to_fix", "l2", "folds", "tuned"):  # how the curve is tuned: likewise
        data["escalate"].pop(key)
    # Unset, the hash of agents made before the setting existed (KEYED_WHEN_SET works on dataclasses;
    # this hash is of the plain dict above).
    if data["escalate"]["score_margin"] is None:
        data["escalate"].pop("score_margin")
    return config_hash(data)
