"""Statistics over seeds: mean, sample std, Student-t intervals, paired t-tests and a seeded bootstrap.

Undefined numbers (the std of one value, a p-value of differences that are all equal) are None,
so they print as "—" and stay valid JSON.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.stats

CONFIDENCE = 0.95
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
    if d.size < 2 or _constant(d):
        p_value = None
    else:
        p_value = float(scipy.stats.ttest_rel(a, b).pvalue)
    return Paired(
        summary.n, summary.mean, summary.std, summary.ci, p_value, bootstrap_interval(d, confidence, n_resamples, seed)
    )


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
