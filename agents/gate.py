"""A learned acceptance gate: the probability that a revision improves the current hypothesis,
from the critic's reference-free measurements of both (a logistic regression).

Why: the selection score (forward + reverse + refiner log-prob) says which candidate the models
like best, not which revision will help; on Multi30K the refiner's rewrites it keeps are about as
often worse as better by sentence chrF++. The gate is trained on exactly that question, on val
proposals whose outcome is known: every traced step that proposed a candidate is one example
(label: sentence chrF++ against the reference rose). In the loop it works as a veto
(``agents.policy.veto``): a revision the score would keep is rejected when the gate's probability
is below ``selection.gate_threshold``, which ``agents.tune`` tunes on val like every other setting.

    python -m agents gate --trace TRACE.val.jsonl --ref val.de --out gate.json   # fit on a val trace

The file is plain JSON (feature names, standardisation, weights), read with ``json``; nothing in it
is executed.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

from evals.metrics import sentence_chrf
from evals.textio import atomic_write_text

from .errors import AgentInputError

FEATURES = (
    "d_fwd",  # forward log-prob per token: proposal - current
    "d_rev",  # reverse (noisy-channel) log-prob per source token: proposal - current
    "d_ref",  # refiner log-prob per token: proposal - current
    "d_len",  # target tokens: proposal - current
    "d_uncovered",  # source words without a lexicon counterpart: proposal - current
    "cur_margin",  # how much the refiner wanted to rewrite the current hypothesis
    "cur_fwd",  # the current hypothesis's forward log-prob per token (a confident draft is rarely wrong)
    "cur_rev",  # ... and its reverse one
)


def _get(m, key: str):
    """A measurement's field, from a ``critic.Measurement`` or its trace JSON alike."""
    if isinstance(m, dict):
        return m.get("values", {}).get(key) if key in ("uncovered_source", "refiner_margin") else m.get(key)
    return m.values.get(key) if key in ("uncovered_source", "refiner_margin") else getattr(m, key)


def _diff(new, cur, key: str) -> float:
    a, b = _get(new, key), _get(cur, key)
    return 0.0 if a is None or b is None else float(a) - float(b)


def features(new, current) -> list[float]:
    """The gate's inputs for a proposal ``new`` against the ``current`` hypothesis (both measurements)."""
    return [_diff(new, current, "fwd_norm"), _diff(new, current, "rev_norm"), _diff(new, current, "ref_norm"),
            _diff(new, current, "fwd_len"), _diff(new, current, "uncovered_source"),
            float(_get(current, "refiner_margin") or 0.0), float(_get(current, "fwd_norm") or 0.0),
            float(_get(current, "rev_norm") or 0.0)]


@dataclass
class Gate:
    names: list[str]
    mean: list[float]
    std: list[float]
    weights: list[float]
    bias: float
    info: dict  # how it was fitted: trace, examples, cross-validated AUC, l2

    def prob(self, x: Sequence[float]) -> float:
        z = self.bias + sum(w * (v - m) / s for w, v, m, s in zip(self.weights, x, self.mean, self.std))
        return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_text(path, json.dumps(asdict(self), indent=1) + "\n")


@lru_cache(maxsize=8)
def _load(path: str, mtime: float, names: tuple[str, ...] = FEATURES) -> Gate:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        gate = Gate(**data)
    except (json.JSONDecodeError, TypeError) as e:
        raise AgentInputError(f"not a gate file ({type(e).__name__}: {e})", path) from None
    if list(gate.names) != list(names):
        raise AgentInputError(f"features {gate.names} are not this version's {list(names)}", path)
    return gate


def load_gate(path: str, names: Sequence[str] = FEATURES) -> Gate:
    """A fitted logistic regression (the gate's, or another model's with its own feature ``names``)."""
    if not os.path.exists(path):
        raise AgentInputError("no such gate file", path)
    return _load(path, os.path.getmtime(path), tuple(names))


def examples_from_trace(records: Sequence[dict], refs: Sequence[str]) -> tuple[list[list[float]], list[int], list[int]]:
    """Every traced proposal as (features, label, sentence id): label 1 when the candidate's sentence
    chrF++ beats that of the hypothesis current when it was proposed."""
    xs, ys, ids = [], [], []
    for r in records:
        ref = refs[r["id"]]
        current = r["steps"][0]
        cur_text = r["draft"]
        for step in r["steps"][1:]:
            if step.get("candidate") is None or "fwd_norm" not in step:
                continue
            xs.append(features(step, current))
            ys.append(int(sentence_chrf(step["candidate"], ref) > sentence_chrf(cur_text, ref) + 1e-9))
            ids.append(r["id"])
            if step.get("kept"):
                current, cur_text = step, step["candidate"]
    return xs, ys, ids


def fit_gate(xs: Sequence[Sequence[float]], ys: Sequence[int], l2: float = 1.0, info: dict | None = None,
             names: Sequence[str] = FEATURES) -> Gate:
    """L2-regularised logistic regression on standardised features. Written with torch's LBFGS
    rather than taken from scikit-learn, which is not among the project's dependencies (eight
    features and a few thousand examples: it converges in well under a second)."""
    import torch

    if not xs or len(set(ys)) < 2:
        raise ValueError("the gate needs proposals of both outcomes (some improving, some not)")
    x = torch.tensor(xs, dtype=torch.float64)
    y = torch.tensor(ys, dtype=torch.float64)
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    z = (x - mean) / std
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, y) + l2 * (w @ w) / len(ys)
        loss.backward()
        return loss

    opt.step(closure)
    return Gate(list(names), mean.tolist(), std.tolist(), w.detach().tolist(), float(b.detach()), info or {})


def auc(scores: Sequence[float], labels: Sequence[int]) -> float | None:
    """The chance that a random positive scores above a random negative (ties count half)."""
    pairs = sorted(zip(scores, labels))
    pos = sum(labels)
    neg = len(labels) - pos
    if not pos or not neg:
        return None
    rank_sum, i = 0.0, 0
    while i < len(pairs):  # average ranks over ties
        j = i
        while j < len(pairs) and pairs[j][0] == pairs[i][0]:
            j += 1
        rank_sum += sum(lab for _, lab in pairs[i:j]) * (i + j + 1) / 2
        i = j
    return (rank_sum - pos * (pos + 1) / 2) / (pos * neg)


def cross_validated_auc(xs: Sequence[Sequence[float]], ys: Sequence[int], ids: Sequence[int], folds: int = 5,
                        l2: float = 1.0) -> float | None:
    """AUC of gates fitted without the fold they score (folds split by sentence, not by proposal)."""
    scores = [0.0] * len(ys)
    for k in range(folds):
        train = [i for i, s in enumerate(ids) if s % folds != k]
        held = [i for i, s in enumerate(ids) if s % folds == k]
        if not held:
            continue
        gate = fit_gate([xs[i] for i in train], [ys[i] for i in train], l2)
        for i in held:
            scores[i] = gate.prob(xs[i])
    return auc(scores, ys)
