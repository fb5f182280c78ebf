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
    assert (p.mdd, p.seeds_needed, same.mdd, same.seeds_needed) == (None, None, None, None)


def test_paired_with_too_few_pairs():
    assert stats.paired([], []) == stats.Paired(0, None, None, None, None, None, None, None)
    one = stats.paired([0.9], [0.8])
    assert one.n == 1 and one.mean == pytest.approx(0.1)
    assert (one.std, one.ci, one.p_value, one.bootstrap_ci, one.mdd, one.seeds_needed) == (None,) * 6


def test_paired_rejects_unaligned_samples():
    with pytest.raises(ValueError, match="differ in length"):
        stats.paired([1.0, 2.0], [1.0])


def holm_by_hand(p_values):
    """Holm's step-down: sorted p times (m - rank), running maximum, at most 1."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, (m - rank) * p_values[i])
        adjusted[i] = min(1.0, running)
    return adjusted


def test_holm_matches_the_textbook_example():
    # The four p-values of the worked example in Holm-Bonferroni texts (e.g. Wikipedia's).
    p_values = [0.01, 0.04, 0.03, 0.005]
    assert holm_by_hand(p_values) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm(p_values) == pytest.approx(holm_by_hand(p_values))
    assert stats.holm([0.6, 0.7, 0.02]) == pytest.approx([1.0, 1.0, 0.06])  # clipped at 1
    assert stats.holm([0.6, 0.7, 0.02]) == pytest.approx(holm_by_hand([0.6, 0.7, 0.02]))


def test_holm_leaves_untested_comparisons_out_of_the_family():
    adjusted = stats.holm([0.01, None, 0.04, 0.03, None, 0.005])
    assert adjusted[1] is None and adjusted[4] is None
    assert [adjusted[i] for i in (0, 2, 3, 5)] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([]) == [] and stats.holm([None]) == [None]
    assert stats.holm([0.2]) == pytest.approx([0.2])


def t_test_power(effect, n, alpha=0.05):
    """Power of the two-sided one-sample t-test at standardized mean `effect`, from the noncentral t."""
    df, nc = n - 1, effect * math.sqrt(n)
    critical = scipy.stats.t.ppf(1 - alpha / 2, df)
    # P(T < -critical) under nc is P(T > critical) under -nc; scipy's nct.cdf can be nan that far in the tail.
    return scipy.stats.nct.sf(critical, df, nc) + scipy.stats.nct.sf(critical, df, -nc)


@pytest.mark.parametrize("n", [2, 3, 5, 10, 30])
def test_minimum_detectable_difference_has_80_percent_power(n):
    std = 1.7
    mdd = stats.minimum_detectable_difference(n, std)
    assert t_test_power(mdd / std, n) == pytest.approx(0.8, abs=1e-6)
    assert stats.minimum_detectable_difference(n, 2 * std) == pytest.approx(2 * mdd)  # in the units of std


@pytest.mark.parametrize(("mean", "std"), [(1.0, 1.0), (0.3, 1.0), (-0.5, 2.0), (2.5, 1.0), (4.0, 1.0), (20.0, 1.0)])
def test_seeds_needed_is_the_fewest_with_80_percent_power(mean, std):
    n = stats.seeds_needed(mean, std)
    effect = abs(mean) / std
    assert n >= 2 and t_test_power(effect, n) >= 0.8
    if n > 2:
        assert t_test_power(effect, n - 1) < 0.8


def test_seeds_needed_known_values_and_undefined_cases():
    assert stats.seeds_needed(1.0, 1.0) == 10  # d = 1 needs 9.94 pairs; seeds come whole
    assert stats.seeds_needed(20.0, 1.0) == 2
    assert stats.seeds_needed(0.0, 1.0) is None
    assert stats.seeds_needed(1e-12, 1.0) is None  # float noise, not a difference


def test_paired_reports_power_of_its_own_pairs():
    variant, reference = [91.0, 92.0, 90.5, 91.7], [90.0, 91.5, 90.4, 90.2]
    p = stats.paired(variant, reference)
    assert p.mdd == pytest.approx(stats.minimum_detectable_difference(4, p.std))
    assert t_test_power(p.mdd / p.std, 4) == pytest.approx(0.8, abs=1e-6)
    assert p.seeds_needed == stats.seeds_needed(p.mean, p.std)
    zero = stats.paired([1.0, 2.0, 3.0], [2.0, 1.0, 3.0])  # differences -1, 1, 0: spread but no mean difference
    assert zero.mean == 0.0 and zero.mdd is not None and zero.seeds_needed is None
