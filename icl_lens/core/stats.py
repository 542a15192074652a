"""Uncertainty for every number that is a finding: intervals, paired tests, verdicts.

Everything here delegates to :mod:`scipy.stats` (no hand-written statistics) and is
deterministic given a seed, bootstrap included:

* :func:`proportion_interval`: a 95% Wilson interval for an accuracy (``binomtest(...)
  .proportion_ci(method="wilson")``); it behaves at 0% and 100%, where the normal
  approximation gives an empty interval.
* :func:`compare_paired`: two conditions measured on the same queries. For 0/1 outcomes
  the exact McNemar test (a two-sided binomial test on the discordant pairs), for other
  metrics a paired sign-flip permutation test; either way a seeded paired bootstrap
  interval on the mean difference.
* :func:`ratio_interval`: a paired bootstrap interval on ``mean(a) / mean(b)`` (how much
  of ICL a vector recovers).
* :func:`mean_and_se`: a mean over prompts with its standard error.
* :func:`mean_interval`: a mean over independent units (contexts, sequences) with a
  seeded bootstrap interval.
* :func:`verdict`: a sentence that states a difference only when its interval excludes
  zero, and says "inconclusive with n = ..." otherwise.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from icl_lens.core.errors import ConfigError
from icl_lens.core.results import register

CONFIDENCE = 0.95
"""Confidence level of every interval icl_lens reports."""

N_RESAMPLES = 2000
"""Bootstrap resamples (and permutations): enough for the second decimal of a 95% bound."""


def _as_array(values: Any, what: str) -> np.ndarray:
    if isinstance(values, Tensor):
        values = values.detach().cpu().double().numpy()
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise ConfigError(f"{what} must be one value per query (1-D), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ConfigError(f"{what} holds NaN or infinite values")
    return arr


def proportion_interval(successes: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of a proportion ``successes / n`` (``(nan, nan)`` when ``n == 0``)."""
    from scipy.stats import binomtest

    k, n = int(successes), int(n)
    if n == 0:
        return float("nan"), float("nan")
    if not 0 <= k <= n:
        raise ConfigError(f"successes must be in [0, n], got {k} of {n}")
    ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def accuracy_interval(correct: Tensor, confidence: float = CONFIDENCE) -> tuple[Tensor, Tensor]:
    """Wilson intervals of the accuracy over the last axis of a boolean ``correct`` tensor.

    Returns ``(ci_low, ci_high)`` shaped like ``correct`` without its last axis.
    """
    if correct.ndim == 0:
        raise ConfigError("accuracy_interval needs a [..., n] tensor of per-query outcomes")
    flat = correct.detach().cpu().reshape(-1, correct.shape[-1])
    n = int(flat.shape[-1])
    bounds = [proportion_interval(int(row.sum()), n, confidence) for row in flat.bool()]
    low = torch.tensor([b[0] for b in bounds], dtype=torch.float32).reshape(correct.shape[:-1])
    high = torch.tensor([b[1] for b in bounds], dtype=torch.float32).reshape(correct.shape[:-1])
    return low, high


def mean_and_se(values: Tensor, dim: int = -1) -> tuple[Tensor, Tensor]:
    """Mean over ``dim`` and its standard error (sample standard deviation / sqrt(n))."""
    x = values.detach().double()
    n = x.shape[dim]
    mean = x.mean(dim)
    se = x.std(dim, unbiased=True) / math.sqrt(n) if n > 1 else torch.full_like(mean, float("nan"))
    return mean.float(), se.float()


def mean_interval(values: Any, *, seed: int = 0, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """Mean of one value per independent unit, with a seeded percentile bootstrap interval.

    The unit is whatever was sampled independently (a context, a sequence), not a token:
    tokens of one context are correlated, so resampling them would give intervals too narrow.
    Returns ``(mean, ci_low, ci_high)``; NaN for no values.
    """
    x = _as_array(values, "values")
    if x.shape[0] == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(x.mean())
    if np.all(x == x[0]):
        return mean, mean, mean
    # The percentile bootstrap of scipy.stats.bootstrap, drawn in one array: a mean needs
    # no per-resample Python call, so tables with hundreds of intervals stay instant.
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.shape[0], size=(N_RESAMPLES, x.shape[0]))].mean(1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return mean, float(low), float(high)


@register
@dataclasses.dataclass(frozen=True)
class PairedComparison:
    """Condition ``a`` against condition ``b`` on the same ``n`` queries.

    Attributes:
        a, b: names of the two conditions.
        mean_a, mean_b: their means (accuracies for 0/1 outcomes).
        difference: ``mean_a - mean_b``; ``ci_low``/``ci_high`` its paired bootstrap interval.
        p_value: two-sided p-value of the test named in ``test``.
        test: ``"mcnemar-exact"`` (0/1 outcomes) or ``"paired-permutation"``.
        a_only, b_only: discordant pairs (McNemar only): right under ``a`` only, under ``b`` only.
        n: paired queries.
    """

    a: str
    b: str
    mean_a: float
    mean_b: float
    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    test: str
    n: int
    a_only: int = -1
    b_only: int = -1
    confidence: float = CONFIDENCE

    @property
    def significant(self) -> bool:
        """The interval on the difference excludes zero."""
        return self.ci_low > 0 or self.ci_high < 0

    def as_row(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "mean_a": self.mean_a,
            "mean_b": self.mean_b,
            "difference": self.difference,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "p_value": self.p_value,
            "test": self.test,
            "n": self.n,
        }


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts (1.0 when there are none)."""
    from scipy.stats import binomtest

    m = int(a_only) + int(b_only)
    if m == 0:
        return 1.0
    return float(binomtest(int(a_only), m, 0.5).pvalue)


def _bootstrap_ci(data: Sequence[np.ndarray], statistic: Any, seed: int, confidence: float) -> tuple[float, float]:
    """Paired percentile bootstrap; a constant statistic gives a zero-width interval."""
    from scipy.stats import bootstrap

    point = float(statistic(*data))
    samples = np.stack(data)
    if np.all(samples == samples[:, :1]):
        return point, point  # every resample is identical: nothing to resample
    res = bootstrap(
        tuple(data),
        statistic,
        paired=True,
        vectorized=False,
        n_resamples=N_RESAMPLES,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (math.isfinite(low) and math.isfinite(high)):
        return point, point
    return low, high


def _is_binary(x: np.ndarray) -> bool:
    return bool(np.all((x == 0) | (x == 1)))


def compare_paired(
    a: Any,
    b: Any,
    *,
    names: tuple[str, str] = ("a", "b"),
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> PairedComparison:
    """Compare two conditions measured on the same queries (``a[i]`` and ``b[i]`` pair up).

    0/1 outcomes (correctness) get the exact McNemar test; other values a paired
    sign-flip permutation test of the mean difference (seeded). The interval on the
    difference is a paired bootstrap (seeded) in both cases.
    """
    x, y = _as_array(a, names[0]), _as_array(b, names[1])
    if x.shape != y.shape:
        raise ConfigError(f"paired comparison needs one value per query in both, got {x.shape[0]} and {y.shape[0]}")
    if x.shape[0] == 0:
        raise ConfigError("paired comparison needs at least one query")
    diff = float(x.mean() - y.mean())
    low, high = _bootstrap_ci([x, y], lambda u, v: np.mean(u) - np.mean(v), seed, confidence)
    if _is_binary(x) and _is_binary(y):
        a_only, b_only = int(((x == 1) & (y == 0)).sum()), int(((x == 0) & (y == 1)).sum())
        p, test = mcnemar_exact(a_only, b_only), "mcnemar-exact"
    else:
        a_only = b_only = -1
        p, test = _permutation_p(x - y, seed), "paired-permutation"
    return PairedComparison(
        a=names[0],
        b=names[1],
        mean_a=float(x.mean()),
        mean_b=float(y.mean()),
        difference=diff,
        ci_low=low,
        ci_high=high,
        p_value=p,
        test=test,
        n=int(x.shape[0]),
        a_only=a_only,
        b_only=b_only,
        confidence=confidence,
    )


def _permutation_p(d: np.ndarray, seed: int) -> float:
    from scipy.stats import permutation_test

    if np.all(d == 0):
        return 1.0
    res = permutation_test(
        (d,),
        np.mean,
        permutation_type="samples",
        n_resamples=N_RESAMPLES,
        alternative="two-sided",
        rng=np.random.default_rng(seed),
    )
    return float(res.pvalue)


def ratio_interval(
    numerator: Any, denominator: Any, *, seed: int = 0, confidence: float = CONFIDENCE
) -> tuple[float, float, float]:
    """``mean(numerator) / mean(denominator)`` over paired queries, with a bootstrap interval.

    Returns ``(ratio, ci_low, ci_high)``; NaN when the denominator's mean is 0. Resamples
    whose denominator is 0 are left out of the interval.
    """
    x, y = _as_array(numerator, "numerator"), _as_array(denominator, "denominator")
    if x.shape != y.shape:
        raise ConfigError(f"ratio needs paired values, got {x.shape[0]} and {y.shape[0]}")
    if y.mean() == 0:
        return float("nan"), float("nan"), float("nan")

    def ratio(u: np.ndarray, v: np.ndarray) -> float:
        m = np.mean(v)
        return float(np.mean(u) / m) if m != 0 else float("nan")

    point = ratio(x, y)
    rng = np.random.default_rng(seed)
    n = x.shape[0]
    idx = rng.integers(0, n, size=(N_RESAMPLES, n))
    den = y[idx].mean(1)
    keep = den != 0
    stats = x[idx].mean(1)[keep] / den[keep]
    if stats.size == 0:
        return point, float("nan"), float("nan")
    alpha = (1 - confidence) / 2
    low, high = np.quantile(stats, [alpha, 1 - alpha])
    return point, float(low), float(high)


# ---------------------------------------------------------------------------------------
# words
# ---------------------------------------------------------------------------------------
def pct(x: float) -> str:
    """``0.2249`` -> ``"22%"``."""
    return "n/a" if not math.isfinite(x) else f"{x:.0%}"


def pct_ci(value: float, low: float, high: float) -> str:
    """``"22% [14%, 32%]"``."""
    return f"{pct(value)} [{pct(low)}, {pct(high)}]"


def format_p(p: float) -> str:
    """``"p < 0.001"`` or ``"p = 0.03"``."""
    if not math.isfinite(p):
        return "p = n/a"
    return "p < 0.001" if p < 0.001 else f"p = {p:.2g}"


def verdict(comparison: PairedComparison, *, rise: str = "raises", fall: str = "lowers", what: str = "") -> str:
    """One sentence that claims a change only when the interval on it excludes zero.

    ``"the function vector raises zero-shot accuracy from 0% to 22% [diff +22%, 95% CI
    +14% to +32%], McNemar p < 0.001"``; otherwise ``"... inconclusive with n = 30"``.
    """
    c = comparison
    test = "McNemar" if c.test == "mcnemar-exact" else "permutation test"
    change = (
        f"from {pct(c.mean_b)} to {pct(c.mean_a)} (difference {c.difference:+.0%}, "
        f"{c.confidence:.0%} CI {c.ci_low:+.0%} to {c.ci_high:+.0%}; {test} {format_p(c.p_value)}; n = {c.n})"
    )
    subject = f"{c.a} vs {c.b}" + (f" ({what})" if what else "")
    if not c.significant:
        return f"{subject}: inconclusive with n = {c.n}: {change}"
    return f"{subject}: {rise if c.difference > 0 else fall} {change}"
