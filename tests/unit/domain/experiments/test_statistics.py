"""The use-case statistics against scipy on fixed data, and by simulation: A/A experiments reject at
about alpha, and intervals cover a known injected effect at about their nominal rate."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from streams.domain.experiments.model import Moments, Proportion, RatioMoments, Role
from streams.domain.experiments.statistics import (
    compare,
    needed_sample,
    needed_sample_means,
    power_reached,
    power_reached_means,
    ratio_variance,
    sample_ratio,
)

P = Role.PRIMARY


def moments(values: np.ndarray) -> Moments:
    return Moments(len(values), float(values.sum()), float((values**2).sum()))


def ratio_moments(x: np.ndarray, y: np.ndarray) -> RatioMoments:
    return RatioMoments(
        len(x), float(x.sum()), float(y.sum()), float((x**2).sum()), float((y**2).sum()), float((x * y).sum())
    )


def test_two_proportions_equal_the_chi_squared_test_of_the_table() -> None:
    control, treatment = Proportion(1000, 120), Proportion(9000, 1260)
    estimate = compare("conversion_rate", P, control, treatment)
    table = [[120, 880], [1260, 7740]]
    assert estimate.p_value == pytest.approx(stats.chi2_contingency(table, correction=False).pvalue, rel=1e-9)
    assert estimate.absolute_lift == pytest.approx(0.14 - 0.12)
    se = math.sqrt(0.12 * 0.88 / 1000 + 0.14 * 0.86 / 9000)
    z = stats.norm.ppf(0.975)
    assert estimate.absolute_ci == pytest.approx((0.02 - z * se, 0.02 + z * se))
    assert estimate.relative_lift == pytest.approx(0.14 / 0.12 - 1)


def test_welch_from_sums_equals_scipy_on_the_raw_values() -> None:
    rng = np.random.default_rng(3)
    a = rng.lognormal(3, 1, 400) * (rng.random(400) < 0.3)
    b = rng.lognormal(3.1, 1.2, 3600) * (rng.random(3600) < 0.33)
    estimate = compare("revenue_per_person", P, moments(a), moments(b), alpha=0.1)
    result = stats.ttest_ind(b, a, equal_var=False)
    assert estimate.p_value == pytest.approx(result.pvalue, rel=1e-6)
    assert estimate.absolute_ci == pytest.approx(tuple(result.confidence_interval(0.9)), rel=1e-6)


def test_the_ratio_variance_is_the_delta_method_over_persons_and_agrees_with_a_bootstrap() -> None:
    rng = np.random.default_rng(5)
    orders = rng.poisson(0.6, 3000).astype(float)
    revenue = np.array([rng.gamma(4, 15, int(k)).sum() for k in orders])
    ratio, variance = ratio_variance(ratio_moments(revenue, orders))
    assert ratio == pytest.approx(revenue.sum() / orders.sum())
    n, r = len(orders), revenue.sum() / orders.sum()
    residual = revenue - r * orders
    assert variance == pytest.approx(residual.var(ddof=1) / (n * orders.mean() ** 2), rel=1e-9)
    boot = [revenue[idx].sum() / orders[idx].sum() for idx in (rng.integers(0, n, n) for _ in range(2000))]
    assert math.sqrt(variance) == pytest.approx(np.std(boot), rel=0.1)


def test_sample_ratio_equals_scipy_chisquare() -> None:
    check = sample_ratio(1130, 8870, 0.1)
    expected = stats.chisquare([1130, 8870], [1000, 9000])
    assert check.chi2 == pytest.approx(expected.statistic) and check.p_value == pytest.approx(expected.pvalue)
    assert check.mismatch
    assert not sample_ratio(1010, 8990, 0.1).mismatch


def test_sample_size_reaches_the_power_and_one_person_less_does_not() -> None:
    assert needed_sample(0.10, 0.10, 0.05, 0.8, 0.5) == (14751, 14751)  # the textbook ~14,750 per arm
    for share in (0.05, 0.1, 0.3):
        nc, nt = needed_sample(0.08, 0.15, 0.05, 0.8, share)
        assert power_reached(0.08, 0.15, 0.05, nc, nt) >= 0.8 - 1e-3
        assert power_reached(0.08, 0.15, 0.05, int(nc * 0.97), int(nt * 0.97)) < 0.8
    nc, nt = needed_sample_means(50.0, 80.0, 0.1, 0.05, 0.9, 0.1)
    assert power_reached_means(50.0, 80.0, 0.1, 0.05, nc, nt) == pytest.approx(0.9, abs=2e-3)


def _binomial_band(p: float, n: int) -> tuple[float, float]:
    sd = math.sqrt(p * (1 - p) / n)
    return p - 4 * sd, p + 4 * sd


@pytest.mark.parametrize("kind", ["proportion", "mean", "ratio"])
def test_a_a_experiments_reject_at_about_alpha_and_intervals_cover_an_injected_effect(kind: str) -> None:
    rng = np.random.default_rng({"proportion": 11, "mean": 12, "ratio": 13}[kind])
    runs, nc, nt, alpha = 1500, 300, 2700, 0.05
    rejected = covered = 0
    for _ in range(runs):
        if kind == "proportion":
            true_lift = 0.03
            c = Proportion(nc, int(rng.binomial(nc, 0.2)))
            t_null = Proportion(nt, int(rng.binomial(nt, 0.2)))
            t_effect = Proportion(nt, int(rng.binomial(nt, 0.23)))
            name = "conversion_rate"
        elif kind == "mean":
            true_lift = 2.0
            a = rng.exponential(20, nc)
            c, t_null, t_effect = (
                moments(a),
                moments(rng.exponential(20, nt)),
                moments(rng.exponential(22, nt)),
            )
            name = "revenue_per_person"
        else:
            true_lift = 5.0

            def arm(n: int, value: float) -> RatioMoments:
                orders = rng.poisson(1.0, n).astype(float)
                revenue = orders * value + rng.normal(0, 10, n) * np.sqrt(orders)
                return ratio_moments(revenue, orders)

            c, t_null, t_effect = arm(nc, 50.0), arm(nt, 50.0), arm(nt, 55.0)
            name = "aov"
        rejected += compare(name, P, c, t_null, alpha).p_value < alpha
        low, high = compare(name, P, c, t_effect, alpha).absolute_ci
        covered += low <= true_lift <= high
    low, high = _binomial_band(alpha, runs)
    assert low <= rejected / runs <= high, rejected / runs
    low, high = _binomial_band(1 - alpha, runs)
    assert low <= covered / runs <= high, covered / runs


arms = st.builds(Proportion, st.integers(0, 500), st.integers(0, 500)).filter(lambda p: p.successes <= p.n)


@given(arms, arms)
def test_swapping_the_arms_negates_the_lift_and_keeps_the_p_value(c: Proportion, t: Proportion) -> None:
    forward, backward = compare("x", P, c, t), compare("x", P, t, c)
    if math.isnan(forward.absolute_lift):
        assert math.isnan(backward.absolute_lift)
        return
    assert backward.absolute_lift == pytest.approx(-forward.absolute_lift)
    assert (
        math.isnan(forward.p_value) and math.isnan(backward.p_value)
    ) or backward.p_value == pytest.approx(forward.p_value)
    assert math.isnan(forward.p_value) or 0.0 <= forward.p_value <= 1.0
    low, high = forward.absolute_ci
    assert math.isnan(low) or low <= forward.absolute_lift <= high


@given(
    st.integers(0, 3),
    st.floats(0, 1e6),
    st.floats(0, 1e12),
    st.integers(0, 3),
    st.floats(0, 1e6),
    st.floats(0, 1e12),
)
def test_degenerate_arms_never_raise(n1: int, s1: float, q1: float, n2: int, s2: float, q2: float) -> None:
    compare("m", P, Moments(n1, s1, q1), Moments(n2, s2, q2))
    compare(
        "r", P, RatioMoments(n1, s1, float(n1), q1, float(n1), s1), RatioMoments(n2, s2, 0.0, q2, 0.0, 0.0)
    )
    sample_ratio(n1, n2, 0.1)
