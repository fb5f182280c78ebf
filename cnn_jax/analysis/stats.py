"""Statistics over seeds: mean, sample std, Student-t intervals, paired t-tests, a seeded bootstrap, Holm's
correction and the power of the paired t-test (minimum detectable difference, seeds needed).

Undefined numbers (the std of one value, a p-value of differences that are all equal) are None,
so they print as "—" and stay valid JSON.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower

CONFIDENCE = 0.95
ALPHA = 0.05  # two-sided significance level of the power calculations
POWER = 0.8
NEGLIGIBLE_EFFECT = 1e-6  # |mean| / std below this counts as no difference (over 10^12 seeds; float noise)
BOOTSTRAP_RESAMPLES = 9999
BOOTSTRAP_SEED = 0

Interval = tuple[float, float]


@dataclass(frozen=True)
class Description:
    n: int
    mean: float | None
    std: float | None  # sample std (ddof=1)
    ci: Interval | None  # Student-t interval of the mean


@dataclass(frozen=True)
class Paired:
    n: int  # pairs
    mean: float | None  # mean of variant - reference
    std: float | None
    ci: Interval | None  # Student-t interval of the mean difference
    p_value: float | None  # two-sided paired t-test
    bootstrap_ci: Interval | None  # percentile bootstrap of the mean difference
    mdd: float | None  # minimum detectable difference with these pairs and this std (ALPHA, POWER)
    seeds_needed: int | None  # pairs needed to detect a true difference equal to `mean` (ALPHA, POWER)


def describe(values: Sequence[float], confidence: float = CONFIDENCE) -> Description:
    """Mean, sample std and the Student-t confidence interval of the mean."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return Description(0, None, None, None)
    mean = float(x.mean())
    if x.size == 1:
        return Description(1, mean, None, None)
    std = float(x.std(ddof=1))
    half = float(scipy.stats.t.ppf((1 + confidence) / 2, x.size - 1)) * std / math.sqrt(x.size)
    return Description(int(x.size), mean, std, (mean - half, mean + half))


def paired(
    variant: Sequence[float],
    reference: Sequence[float],
    confidence: float = CONFIDENCE,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> Paired:
    """Compare two aligned samples (same seed at the same position) through their differences."""
    a, b = np.asarray(variant, dtype=float), np.asarray(reference, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in length: {a.size} vs {b.size}")
    d = a - b
    summary = describe(d, confidence)
    p_value = mdd = needed = None
    if d.size >= 2 and not _constant(d):
        p_value = float(scipy.stats.ttest_rel(a, b).pvalue)
        mdd = minimum_detectable_difference(summary.n, summary.std)
        needed = seeds_needed(summary.mean, summary.std)
    boot = bootstrap_interval(d, confidence, n_resamples, seed)
    return Paired(summary.n, summary.mean, summary.std, summary.ci, p_value, boot, mdd, needed)


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm-adjusted p-values of one family of tests; None (no test) stays None and is not in the family."""
    tested = [i for i, p in enumerate(p_values) if p is not None]
    adjusted = list(p_values)
    if tested:
        for i, p in zip(tested, multipletests([p_values[i] for i in tested], method="holm")[1]):
            adjusted[i] = float(p)
    return adjusted


def minimum_detectable_difference(n: int, std: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """The true mean difference a two-sided paired t-test over n pairs detects with `power`, in std's units."""
    return _detectable_effect(n, alpha, power) * std


def seeds_needed(mean: float, std: float, alpha: float = ALPHA, power: float = POWER) -> int | None:
    """Fewest pairs for which a two-sided paired t-test detects a true difference `mean` with `power`."""
    effect = abs(mean) / std
    if effect < NEGLIGIBLE_EFFECT:
        return None
    # statsmodels' solver for nobs stops at 2 and fails for large effects (scipy's nct.cdf is nan far in the
    # lower tail), so 2 and 3 pairs are compared with the effect each detects.
    for n in (2, 3):
        if effect >= _detectable_effect(n, alpha, power):
            return n
    return math.ceil(TTestPower().solve_power(effect_size=effect, alpha=alpha, power=power))


def _detectable_effect(n: int, alpha: float, power: float) -> float:
    """Standardized mean difference (mean / std of the differences) detected with `power` by n pairs."""
    return float(TTestPower().solve_power(nobs=n, alpha=alpha, power=power))


def bootstrap_interval(
    values: Sequence[float],
    confidence: float = CONFIDENCE,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> Interval | None:
    """Percentile bootstrap interval of the mean with a fixed seed (None below two values)."""
    x = np.asarray(values, dtype=float)
    if x.size < 2:
        return None
    if _constant(x):
        return (float(x.mean()), float(x.mean()))
    result = scipy.stats.bootstrap(
        (x,),
        np.mean,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return (float(result.confidence_interval.low), float(result.confidence_interval.high))


def _constant(x: np.ndarray) -> bool:
    """All values equal up to float rounding, where a t statistic or a bootstrap has no spread to use."""
    return float(np.ptp(x)) <= 1e-9 * max(1.0, float(np.abs(x).max()))
