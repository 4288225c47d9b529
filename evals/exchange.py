"""What a ladder step is worth in real parallel data: the learning curve and its exchange rate.

The plain recipe trained on nested fractions of the real pairs gives points (pairs, score). A curve
fitted to them against log(pairs) and inverted at a step's score gives the real pairs the plain
recipe would need to reach that score (its "equivalent pairs") and their multiple of the real pairs
the step actually used. Forms, with n the number of real pairs:

    loglinear:  score = a + b ln n                (b > 0)
    saturating: score = c - k n^(-alpha)          (k, alpha > 0: rises towards the ceiling c)

``form="auto"`` keeps the log-linear form unless the points reject it: its residuals, scaled by each
point's own test-set bootstrap variance, are compared with chi-square on (points - 2) degrees of
freedom, and only at p < 0.01 is the saturating form fitted instead (if a rising one exists). The
per-point variance ignores the positive correlation between points scored on the same sentences,
which makes the test reject less often: curvature has to be plain before the ceiling is believed.

Intervals come from one paired bootstrap over test sentences (``significance.bootstrap_scores``):
each replicate resamples the sentence indices once, rescores every curve point and every step from
their per-sentence statistics, refits the curve (same form) and inverts it again. Equivalent pairs
beyond the largest trained point are extrapolations and are marked with how far they reach; the
held-out check (fit without the largest point, predict it) measures how far such a fit can be trusted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .errors import EvalsInputError
from .significance import DEFAULT_SEED, bootstrap_scores, score_from_stats

FORMS = ("auto", "loglinear", "saturating")
FORMULAS = {"loglinear": "score = a + b ln(pairs)", "saturating": "score = c - k pairs^(-alpha)"}
ALPHA = 0.01  # lack-of-fit level at which "auto" gives up the log-linear form (strict: a ceiling must be plain)
# Exponents tried for the saturating form (variable projection: for each, c and k by least squares).
_EXPONENTS = np.geomspace(1e-3, 3.0, 400)


def check_curve(pairs: Sequence[float], scores: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Points as arrays; a clear error for fewer than two, for non-increasing or non-positive pairs."""
    n, y = np.asarray(pairs, dtype=float), np.asarray(scores, dtype=float)
    if n.ndim != 1 or len(n) != y.shape[-1]:
        raise EvalsInputError(f"a learning curve needs one score per point (got {len(n)} pair counts, {y.shape[-1]} scores)")
    if len(n) < 2:
        raise EvalsInputError(f"a learning curve needs at least 2 points (pairs, score), got {len(n)}")
    if not np.all(np.isfinite(n)) or np.any(n <= 0):
        raise EvalsInputError(f"learning-curve pair counts must be positive numbers, got {n.tolist()}")
    if np.any(np.diff(n) <= 0):
        raise EvalsInputError(f"learning-curve pair counts must be strictly increasing, got {n.astype(int).tolist()}")
    if not np.all(np.isfinite(y)):
        raise EvalsInputError("learning-curve scores must be finite numbers")
    return n, y


# --- the two forms, vectorised over bootstrap replicates (y: (replicates, points)) -------

def _fit_loglinear(n: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    x = np.log(n)
    xc = x - x.mean()
    b = (y - y.mean(-1, keepdims=True)) @ xc / (xc @ xc)
    return {"a": y.mean(-1) - b * x.mean(), "b": b}


def _fit_saturating(n: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    # For a fixed exponent the form is linear in (c, k): regress y on x = n^-alpha; keep the best exponent.
    x = n[None, :] ** -_EXPONENTS[:, None]  # (exponents, points)
    xc = x - x.mean(-1, keepdims=True)
    yc = y - y.mean(-1, keepdims=True)  # (replicates, points)
    slope = (yc @ xc.T) / (xc * xc).sum(-1)  # (replicates, exponents): -k
    sse = (yc * yc).sum(-1, keepdims=True) - slope ** 2 * (xc * xc).sum(-1)
    sse = np.where(slope < 0, sse, np.inf)  # only rising curves (k > 0)
    best = sse.argmin(-1)
    rows = np.arange(len(y))
    k = -slope[rows, best]
    c = y.mean(-1) + k * x.mean(-1)[best]
    ok = np.isfinite(sse[rows, best])
    return {"c": np.where(ok, c, np.nan), "k": np.where(ok, k, np.nan), "alpha": np.where(ok, _EXPONENTS[best], np.nan)}


def _fit(form: str, n: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    return _fit_loglinear(n, y) if form == "loglinear" else _fit_saturating(n, y)


def _predict(form: str, p: Mapping[str, Any], n: Any) -> np.ndarray:
    n = np.asarray(n, dtype=float)
    # Parameters of shape (replicates,) against n of shape (points,) give (replicates, points).
    p = {k: np.asarray(v, dtype=float)[..., None] if np.ndim(v) else float(v) for k, v in p.items()}
    if form == "loglinear":
        return p["a"] + p["b"] * np.log(n)
    return p["c"] - p["k"] * n ** -p["alpha"]


def _invert(form: str, p: Mapping[str, Any], score: Any) -> np.ndarray:
    """Pairs at which the curve reaches ``score``: inf at or above a saturating ceiling, nan where the curve does not rise."""
    score = np.asarray(score, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if form == "loglinear":
            a, b = np.asarray(p["a"], dtype=float), np.asarray(p["b"], dtype=float)
            return np.where(b > 0, np.exp((score - a) / np.where(b > 0, b, 1.0)), np.nan)
        c, k, alpha = (np.asarray(p[key], dtype=float) for key in ("c", "k", "alpha"))
        gap = (c - score) / k
        out = np.where(gap > 0, np.where(gap > 0, gap, 1.0) ** (-1.0 / alpha), np.inf)
        return np.where(np.isfinite(c) & (k > 0) & (alpha > 0), out, np.nan)


# --- choosing the form -------------------------------------------------------------------

def chi2_sf(x: float, df: int) -> float:
    """P(X >= x) for a chi-square variable with ``df`` degrees of freedom (closed forms; no scipy)."""
    if df < 1:
        raise ValueError("df must be >= 1")
    if x <= 0:
        return 1.0
    h = x / 2
    if df % 2 == 0:
        return min(1.0, math.exp(-h) * sum(h ** i / math.factorial(i) for i in range(df // 2)))
    tail = sum(h ** (i - 0.5) / math.gamma(i + 0.5) for i in range(1, (df - 1) // 2 + 1))
    return min(1.0, math.erfc(math.sqrt(h)) + math.exp(-h) * tail)


def choose_form(pairs: Sequence[float], scores: Sequence[float], variances: Sequence[float] | None = None,
                form: str = "auto") -> tuple[str, str, dict[str, Any]]:
    """(form, why, lack-of-fit statistics of the log-linear form) for the points; see the module notes."""
    if form not in FORMS:
        raise ValueError(f"unknown curve form {form!r}; expected one of {', '.join(FORMS)}")
    n, y = check_curve(pairs, scores)
    resid = y - _predict("loglinear", {k: float(v[0]) for k, v in _fit_loglinear(n, y[None]).items()}, n)
    df = len(n) - 2
    stats: dict[str, Any] = {"loglinear_residuals": resid.tolist(), "df": df, "chi2": None, "p_value": None}
    if form != "auto":
        return form, f"{form} (asked for)", stats
    if df == 0:
        return "loglinear", "log-linear: two points fix a line and leave nothing to test curvature with", stats
    if variances is None or np.any(np.asarray(variances, dtype=float) <= 0):
        return "loglinear", "log-linear: no test-set variance of the points to test its fit against", stats
    chi2 = float(np.sum(resid ** 2 / np.asarray(variances, dtype=float)))
    p = chi2_sf(chi2, df)
    stats.update(chi2=chi2, p_value=p)
    how = f"chi-square {chi2:.2f} on {df} df against the points' test-set variance, p = {p:.3g}"
    if p >= ALPHA:
        return "loglinear", f"log-linear: its residuals are within the points' test-set noise ({how})", stats
    sat = {k: float(v[0]) for k, v in _fit_saturating(n, y[None]).items()}
    if not np.isfinite(sat["c"]):
        return "loglinear", f"log-linear kept: rejected ({how}), but no rising saturating curve fits the points", stats
    if sat["alpha"] <= _EXPONENTS[0] or np.sum((y - _predict("saturating", sat, n)) ** 2) >= np.sum(resid ** 2):
        # The best "saturating" curve is the straight line itself (exponent at its lower end): the points bend
        # the other way (faster than log-linear), which a ceiling cannot describe.
        return "loglinear", (f"log-linear kept: rejected ({how}), but the points bend upwards, "
                             "not towards a ceiling, so a saturating form fits no better"), stats
    return "saturating", f"saturating: the points reject a straight line in log(pairs) ({how})", stats


# --- the fit and the exchange rate -------------------------------------------------------

@dataclass
class CurveFit:
    """A fitted learning curve: ``form`` with ``params`` (see FORMULAS), its points and residuals."""

    form: str
    params: dict[str, float]
    pairs: list[float]
    scores: list[float]
    fitted: list[float] = field(default_factory=list)
    residuals: list[float] = field(default_factory=list)  # measured - fitted
    reason: str = ""

    def predict(self, pairs: Any) -> np.ndarray:
        return _predict(self.form, self.params, pairs)

    def invert(self, score: float) -> float:
        """Real pairs at which the curve reaches ``score`` (inf: above a saturating ceiling; nan: the curve does not rise)."""
        return float(_invert(self.form, self.params, score))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "formula": FORMULAS[self.form]}


def fit_curve(pairs: Sequence[float], scores: Sequence[float], form: str = "auto",
              variances: Sequence[float] | None = None) -> CurveFit:
    """Fit the learning curve; ``form="auto"`` chooses as ``choose_form`` says."""
    chosen, reason, _ = choose_form(pairs, scores, variances, form)
    n, y = check_curve(pairs, scores)
    if chosen == "saturating" and len(n) < 3:
        raise EvalsInputError(f"a saturating curve has 3 parameters and needs at least 3 points, got {len(n)}")
    params = {k: float(v[0]) for k, v in _fit(chosen, n, y[None]).items()}
    if not all(np.isfinite(list(params.values()))) or params.get("b", 1.0) <= 0:
        points = ", ".join(f"({p:,.0f} pairs, {v:.2f})" for p, v in zip(n, y))
        raise EvalsInputError(f"no rising {chosen} curve fits the points {points}: the score does not grow with the data")
    fitted = _predict(chosen, params, n)
    return CurveFit(chosen, params, n.tolist(), y.tolist(), fitted.tolist(), (y - fitted).tolist(), reason)


def _interval(values: np.ndarray) -> list[float]:
    """95% percentile interval (sacrebleu's index convention); an undefined replicate counts as unbounded."""
    v = np.sort(np.where(np.isnan(values), np.inf, values))
    lower = len(v) // 40
    return [float(v[lower]), float(v[len(v) - lower - 1])]


def _reach(value: float, lo: float, hi: float) -> dict[str, Any] | None:
    """How far an equivalent amount lies outside the trained range (None: inside it)."""
    if value > hi:
        return {"direction": "above", "factor": value / hi, "text": f"x{value / hi:.1f} beyond the largest point"}
    if value < lo:
        return {"direction": "below", "factor": lo / value, "text": f"x{lo / value:.1f} below the smallest point"}
    return None


def exchange_rates(curve_stats: Sequence[np.ndarray], pairs: Sequence[float], steps: Mapping[str, np.ndarray],
                   metric: str = "bleu", *, used_pairs: float | None = None, form: str = "auto",
                   n_samples: int = 1000, seed: int = DEFAULT_SEED) -> dict[str, Any]:
    """The learning curve of ``metric`` and what each step is worth in real pairs, with bootstrap intervals.

    ``curve_stats[i]``: per-sentence statistics (``significance.sentence_stats``) of the plain recipe
    trained on ``pairs[i]`` real pairs; ``steps``: name -> statistics of a ladder step, on the same
    test sentences. ``used_pairs``: the real pairs the steps used (default: the largest point).
    Returns a JSON-ready dict: the fit (form, why, parameters, residuals), each point with its
    interval, each step's score, equivalent pairs and multiple of ``used_pairs`` with 95% intervals
    and its extrapolation (None inside the trained range), and the held-out check.
    """
    if len(curve_stats) != len(pairs):
        raise EvalsInputError(f"{len(curve_stats)} curve systems but {len(pairs)} pair counts")
    names = list(steps)
    observed = [score_from_stats(s.sum(0), metric) for s in [*curve_stats, *steps.values()]]
    n, y = check_curve(pairs, observed[:len(pairs)])
    used = float(used_pairs if used_pairs is not None else n[-1])
    if used <= 0:
        raise EvalsInputError(f"used_pairs must be positive, got {used_pairs}")
    boot = bootstrap_scores([*curve_stats, *steps.values()], metric, n_samples, seed)  # (n_samples, points + steps)
    curve_boot, step_boot = boot[:, :len(n)], boot[:, len(n):]
    fit = fit_curve(n, y, form, curve_boot.var(0, ddof=1))
    _, _, lack = choose_form(n, y, curve_boot.var(0, ddof=1))
    params = _fit(fit.form, n, curve_boot)
    out: dict[str, Any] = {
        "metric": metric, "n_samples": n_samples, "seed": seed, "used_pairs": used,
        "fit": {**fit.to_dict(), "lack_of_fit": lack},
        "points": [{"pairs": float(p), "score": float(s), "fitted": f, "residual": r, "ci": _interval(curve_boot[:, i])}
                   for i, (p, s, f, r) in enumerate(zip(n, y, fit.fitted, fit.residuals))],
        "steps": {},
    }
    for j, name in enumerate(names):
        score = observed[len(n) + j]
        eq = fit.invert(score)
        eq_boot = _invert(fit.form, params, step_boot[:, j])
        ci = _interval(eq_boot)
        out["steps"][name] = {
            "score": score, "pairs": eq, "pairs_ci": ci, "multiple": eq / used, "multiple_ci": [c / used for c in ci],
            "extrapolation": _reach(eq, n[0], n[-1]) if math.isfinite(eq) else
            {"direction": "above", "factor": math.inf, "text": "above the curve's ceiling"},
        }
    out["held_out"] = held_out_check(n, y, curve_boot, fit.form)
    return _json_ready(out)


def held_out_check(pairs: Sequence[float], scores: Sequence[float], boot: np.ndarray | None = None,
                   form: str = "loglinear") -> dict[str, Any]:
    """Fit without the largest point, predict it: the error in score (predicted - measured), its
    bootstrap interval (``boot``: (replicates, points) resampled scores), and what the held-out fit
    says the measured point is worth as a multiple of its own pairs (1.0 would be exact)."""
    n, y = check_curve(pairs, scores)
    if len(n) < 3:
        return {"error": None, "why": f"needs at least 3 points (2 to fit, 1 to hold out), got {len(n)}"}
    # A saturating fit on its minimum of 3 points has no residual left to check: fall back to log-linear.
    used_form = form if form == "loglinear" or len(n) - 1 >= 4 else "loglinear"
    p = {k: float(v[0]) for k, v in _fit(used_form, n[:-1], y[None, :-1]).items()}
    predicted = float(_predict(used_form, p, n[-1]))
    out: dict[str, Any] = {"form": used_form, "fitted_on": n[:-1].tolist(), "pairs": float(n[-1]), "measured": float(y[-1]),
                           "predicted": predicted, "error": predicted - float(y[-1]),
                           "worth_of_held_out": float(_invert(used_form, p, y[-1])) / float(n[-1])}
    if boot is not None:
        bp = _fit(used_form, n[:-1], boot[:, :-1])
        out["error_ci"] = _interval(_predict(used_form, bp, n[-1:])[:, 0] - boot[:, -1])
    return out


def _json_ready(obj: Any) -> Any:
    """Plain floats; inf as the string "inf" and nan as None (JSON has neither)."""
    if isinstance(obj, dict):
        return {k: _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return None if math.isnan(v) else "inf" if v == math.inf else v
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _num(x: Any) -> float:
    return math.inf if x == "inf" else math.nan if x is None else float(x)


def worth_cell(step: Mapping[str, Any]) -> str:
    """A step's worth for a table: "2.10x [1.60x, 2.90x] = 62,000 pairs (extrapolated: x2.1 beyond the largest point)"."""
    m, (lo, hi) = _num(step["multiple"]), (_num(v) for v in step["multiple_ci"])

    def x(v: float) -> str:
        return "unbounded" if not math.isfinite(v) else f"{v:.2f}x"

    if not math.isfinite(m):
        text = "above the curve's ceiling" if m == math.inf else "n/a (the curve does not rise)"
    else:
        text = f"{x(m)} [{x(lo)}, {x(hi)}] = {_num(step['pairs']):,.0f} pairs"
    reach = step.get("extrapolation")
    if reach and math.isfinite(m):
        text += f" (extrapolated: {reach['text']})"
    return text
