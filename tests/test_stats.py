"""Statistics over seeds against values computed independently."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats

from cnn_jax.analysis import stats


def test_describe_matches_hand_computed_t_interval():
    values = [90.0, 91.0, 92.5]
    mean = sum(values) / 3
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / 2)
    half = scipy.stats.t.ppf(0.975, df=2) * std / math.sqrt(3)
    d = stats.describe(values)
    assert d.n == 3
    assert d.mean == pytest.approx(91.16666666666667)
    assert d.std == pytest.approx(std) and d.std == pytest.approx(1.2583057392117916)
    assert d.ci == pytest.approx((mean - half, mean + half))
    assert 4.30 < scipy.stats.t.ppf(0.975, df=2) < 4.31  # the textbook value for 2 degrees of freedom


def test_describe_other_confidence_level():
    d = stats.describe([1.0, 2.0, 3.0, 4.0], confidence=0.9)
    half = scipy.stats.t.ppf(0.95, df=3) * np.std([1, 2, 3, 4], ddof=1) / 2
    assert d.ci == pytest.approx((2.5 - half, 2.5 + half))


def test_describe_small_samples_have_no_spread():
    assert stats.describe([]) == stats.Description(0, None, None, None)
    assert stats.describe([0.9]) == stats.Description(1, 0.9, None, None)
    assert stats.describe([2.0, 2.0]) == stats.Description(2, 2.0, 0.0, (2.0, 2.0))


def test_paired_matches_scipy_ttest_rel():
    variant, reference = [91.0, 92.0, 90.5, 91.7], [90.0, 91.5, 90.4, 90.2]
    p = stats.paired(variant, reference)
    diffs = np.subtract(variant, reference)
    assert p.n == 4
    assert p.mean == pytest.approx(diffs.mean())
    assert p.std == pytest.approx(diffs.std(ddof=1))
    assert p.p_value == pytest.approx(scipy.stats.ttest_rel(variant, reference).pvalue)
    assert p.ci == pytest.approx(stats.describe(diffs).ci)
    # The t interval excludes 0 exactly when the two-sided p-value is below 5%.
    assert (p.ci[0] > 0) == (p.p_value < 0.05)


def test_bootstrap_is_deterministic_and_contains_the_mean_difference():
    variant, reference = [0.3, 1.2, 2.0], [0.0, 0.1, 0.2]
    first, second = stats.paired(variant, reference), stats.paired(variant, reference)
    assert first.bootstrap_ci == second.bootstrap_ci
    low, high = first.bootstrap_ci
    assert low <= first.mean <= high
    diffs = np.subtract(variant, reference)
    assert diffs.min() - 1e-12 <= low and high <= diffs.max() + 1e-12  # a mean of resamples stays in range


def test_bootstrap_seed_fixes_the_interval():
    rng = np.random.default_rng(5)
    values = rng.normal(size=12)
    assert stats.bootstrap_interval(values, seed=3) == stats.bootstrap_interval(values, seed=3)
    assert stats.bootstrap_interval(values, seed=3) != stats.bootstrap_interval(values, seed=4)


def test_paired_all_equal_differences_do_not_crash():
    p = stats.paired([91.0, 92.0, 93.0], [90.0, 91.0, 92.0])
    assert p.mean == pytest.approx(1.0)
    assert p.std == pytest.approx(0.0, abs=1e-12)
    assert p.p_value is None
    assert p.ci == pytest.approx((1.0, 1.0))
    assert p.bootstrap_ci == pytest.approx((1.0, 1.0))
    same = stats.paired([0.5, 0.6], [0.5, 0.6])
    assert same.mean == 0.0 and same.p_value is None and same.bootstrap_ci == (0.0, 0.0)


def test_paired_with_too_few_pairs():
    assert stats.paired([], []) == stats.Paired(0, None, None, None, None, None)
    one = stats.paired([0.9], [0.8])
    assert one.n == 1 and one.mean == pytest.approx(0.1)
    assert (one.std, one.ci, one.p_value, one.bootstrap_ci) == (None, None, None, None)


def test_paired_rejects_unaligned_samples():
    with pytest.raises(ValueError, match="differ in length"):
        stats.paired([1.0, 2.0], [1.0])
