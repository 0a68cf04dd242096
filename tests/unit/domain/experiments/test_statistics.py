"""The experiment statistics against scipy, numpy and textbook values on fixed data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.typing import NDArray
from scipy import stats

from streams.domain.experiments.model import (
    MetricKind,
    Moments,
    Proportion,
    RatioMoments,
    Role,
    Stats,
)
from streams.domain.experiments.statistics import (
    compare,
    difference,
    needed_sample,
    plan,
    power_reached,
    sample_ratio,
)

Floats = NDArray[np.float64]


def moments(values: Floats) -> Moments:
    return Moments(n=len(values), total=float(values.sum()), total_sq=float((values * values).sum()))


def ratio_moments(x: Floats, y: Floats) -> RatioMoments:
    return RatioMoments(
        n=len(x),
        num=float(x.sum()),
        den=float(y.sum()),
        num_sq=float((x * x).sum()),
        den_sq=float((y * y).sum()),
        num_den=float((x * y).sum()),
    )


def orders_and_revenue(rng: np.random.Generator, n: int, scale: float) -> tuple[Floats, Floats]:
    """Per person: orders (many 0) and revenue, each person with their own typical basket."""
    orders = rng.poisson(0.6, n).astype(float)
    basket = scale * rng.lognormal(0.0, 0.6, n)
    revenue = rng.gamma(2.0 * orders, basket)  # shape 0 (no orders) gives 0
    return revenue, orders


# --- proportions --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("control", "treatment"),
    [
        ((10_000, 1_000), (10_000, 1_100)),
        ((4_000, 37), (9_000, 61)),
        ((250, 120), (260, 150)),
        ((50, 1), (70, 0)),
    ],
)
def test_proportion_p_value_is_the_chi_squared_test_of_the_2x2_table(
    control: tuple[int, int], treatment: tuple[int, int]
) -> None:
    (nc, sc), (nt, st) = control, treatment
    table = np.array([[sc, nc - sc], [st, nt - st]])
    expected = stats.chi2_contingency(table, correction=False).pvalue
    estimate = compare("cr", Role.PRIMARY, Proportion(nc, sc), Proportion(nt, st))
    assert estimate.p_value == pytest.approx(expected, rel=1e-9)


def test_proportion_interval_is_wald_and_relative_is_log_ratio() -> None:
    estimate = compare("cr", Role.PRIMARY, Proportion(8_000, 640), Proportion(12_000, 1_080), alpha=0.1)
    c, t, z = 640 / 8_000, 1_080 / 12_000, stats.norm.ppf(0.95)
    se = math.sqrt(c * (1 - c) / 8_000 + t * (1 - t) / 12_000)
    assert estimate.kind is MetricKind.PROPORTION
    assert (estimate.control, estimate.treatment) == pytest.approx((c, t))
    assert estimate.absolute_lift == pytest.approx(t - c)
    assert estimate.absolute_ci == pytest.approx((t - c - z * se, t - c + z * se), rel=1e-12)
    log_se = math.sqrt((1 - c) / (c * 8_000) + (1 - t) / (t * 12_000))
    assert estimate.relative_lift == pytest.approx(t / c - 1)
    assert estimate.relative_ci == pytest.approx(
        (t / c * math.exp(-z * log_se) - 1, t / c * math.exp(z * log_se) - 1), rel=1e-12
    )


# --- means (Welch) ------------------------------------------------------------------------------------

WELCH_CASES = [
    (
        np.array([3.1, 0.0, 7.5, 2.2, 9.9, 0.0, 4.4, 1.0]),
        np.array([5.0, 6.5, 0.0, 12.1, 8.8, 3.3, 7.7, 0.0, 9.1, 4.2, 6.0, 10.5, 2.0]),
    ),
    (np.array([100.0, 102.5, 99.0, 101.0]), np.array([80.0, 150.0, 60.0, 200.0, 20.0, 95.0])),
]


@pytest.mark.parametrize(("control", "treatment"), WELCH_CASES)
@pytest.mark.parametrize("alpha", [0.05, 0.01])
def test_welch_from_sums_equals_scipy_ttest_ind(control: Floats, treatment: Floats, alpha: float) -> None:
    expected = stats.ttest_ind(treatment, control, equal_var=False)
    d = difference(moments(control), moments(treatment))
    assert d.statistic == pytest.approx(expected.statistic, rel=1e-9)
    assert d.df == pytest.approx(expected.df, rel=1e-9)
    estimate = compare("rpp", Role.GUARDRAIL, moments(control), moments(treatment), alpha=alpha)
    assert estimate.kind is MetricKind.MEAN
    assert estimate.absolute_lift == pytest.approx(treatment.mean() - control.mean())
    assert estimate.p_value == pytest.approx(expected.pvalue, rel=1e-9)
    low, high = expected.confidence_interval(1 - alpha)
    assert estimate.absolute_ci == pytest.approx((low, high), rel=1e-9)


def test_welch_relative_interval_is_the_delta_method_on_the_ratio_of_means() -> None:
    control, treatment = WELCH_CASES[0]
    estimate = compare("rpp", Role.PRIMARY, moments(control), moments(treatment))
    c, t = control.mean(), treatment.mean()
    vc, vt = control.var(ddof=1) / len(control), treatment.var(ddof=1) / len(treatment)
    se = math.sqrt(vt / c**2 + t**2 * vc / c**4)
    z = stats.norm.ppf(0.975)
    assert estimate.relative_lift == pytest.approx(t / c - 1)
    assert estimate.relative_ci == pytest.approx((t / c - 1 - z * se, t / c - 1 + z * se), rel=1e-9)


def test_variance_from_sums_ignores_rounding_noise_of_identical_values() -> None:
    same = np.full(7, 0.1)  # sum of squares minus square of sum over n is a few ulps, not 0
    estimate = compare("rpp", Role.PRIMARY, moments(same), moments(np.full(9, 0.3)))
    assert estimate.absolute_lift == pytest.approx(0.2)
    assert math.isnan(estimate.p_value)
    assert all(math.isnan(bound) for bound in estimate.absolute_ci)


# --- ratios (delta method) ----------------------------------------------------------------------------


def delta_method_variance(x: Floats, y: Floats) -> float:
    """Var(mean x / mean y) by the textbook delta method on raw per-person arrays."""
    r = x.mean() / y.mean()
    cov = np.cov(x, y, ddof=1)[0, 1]
    return float((x.var(ddof=1) - 2 * r * cov + r * r * y.var(ddof=1)) / (len(x) * y.mean() ** 2))


def test_ratio_variance_equals_the_delta_method_on_raw_arrays() -> None:
    rng = np.random.default_rng(20261204)
    xc, yc = orders_and_revenue(rng, 900, 25.0)
    xt, yt = orders_and_revenue(rng, 1_100, 27.0)
    d = difference(ratio_moments(xc, yc), ratio_moments(xt, yt))
    assert d.control == pytest.approx(xc.sum() / yc.sum(), rel=1e-12)
    assert d.control_var == pytest.approx(delta_method_variance(xc, yc), rel=1e-9)
    assert d.treatment_var == pytest.approx(delta_method_variance(xt, yt), rel=1e-9)
    estimate = compare("aov", Role.GUARDRAIL, ratio_moments(xc, yc), ratio_moments(xt, yt))
    se = math.sqrt(delta_method_variance(xc, yc) + delta_method_variance(xt, yt))
    lift, z = xt.sum() / yt.sum() - xc.sum() / yc.sum(), stats.norm.ppf(0.975)
    assert estimate.kind is MetricKind.RATIO
    assert estimate.absolute_ci == pytest.approx((lift - z * se, lift + z * se), rel=1e-9)
    assert estimate.p_value == pytest.approx(2 * stats.norm.sf(abs(lift) / se), rel=1e-9)


def test_ratio_standard_error_agrees_with_a_bootstrap_over_persons() -> None:
    rng = np.random.default_rng(7)
    xc, yc = orders_and_revenue(rng, 800, 25.0)
    xt, yt = orders_and_revenue(rng, 800, 25.0)
    resamples = 3_000

    def bootstrap(x: Floats, y: Floats) -> Floats:
        rows = rng.integers(0, len(x), (resamples, len(x)))  # whole persons, orders and revenue together
        return np.asarray(x[rows].sum(axis=1) / y[rows].sum(axis=1))

    boot_se = float(np.std(bootstrap(xt, yt) - bootstrap(xc, yc), ddof=1))
    d = difference(ratio_moments(xc, yc), ratio_moments(xt, yt))
    assert d.se == pytest.approx(boot_se, rel=0.08)


def test_ratio_without_orders_is_undefined_not_an_error() -> None:
    empty = RatioMoments(n=40, num=0.0, den=0.0, num_sq=0.0, den_sq=0.0, num_den=0.0)
    some = RatioMoments(n=50, num=500.0, den=10.0, num_sq=30_000.0, den_sq=12.0, num_den=600.0)
    estimate = compare("aov", Role.GUARDRAIL, empty, some)
    assert math.isnan(estimate.control) and estimate.treatment == 50.0
    assert math.isnan(estimate.p_value) and estimate.relative_lift is None
    estimate = compare("aov", Role.GUARDRAIL, some, empty)
    assert math.isnan(estimate.treatment) and math.isnan(estimate.p_value)
    assert estimate.relative_lift is not None and math.isnan(estimate.relative_lift)


# --- degenerate arms ----------------------------------------------------------------------------------

DEGENERATE = [
    (Proportion(0, 0), Proportion(100, 10)),
    (Proportion(100, 10), Proportion(0, 0)),
    (Proportion(0, 0), Proportion(0, 0)),
    (Proportion(500, 0), Proportion(400, 0)),
    (Proportion(500, 500), Proportion(400, 400)),
    (Moments(0, 0.0, 0.0), Moments(5, 10.0, 30.0)),
    (Moments(1, 3.0, 9.0), Moments(5, 10.0, 30.0)),
    (Moments(4, 8.0, 16.0), Moments(5, 10.0, 20.0)),
    (Moments(4, 0.0, 0.0), Moments(5, 0.0, 0.0)),
    (Moments(3, 6.0, 11.999999999), Moments(3, 6.0, 12.0)),  # negative sum of squares from rounding
    (RatioMoments(0, 0.0, 0.0, 0.0, 0.0, 0.0), RatioMoments(3, 30.0, 3.0, 300.0, 3.0, 30.0)),
    (RatioMoments(1, 10.0, 1.0, 100.0, 1.0, 10.0), RatioMoments(3, 30.0, 3.0, 300.0, 3.0, 30.0)),
    (RatioMoments(2, 20.0, 2.0, 200.0, 2.0, 20.0), RatioMoments(3, 30.0, 3.0, 300.0, 3.0, 30.0)),
]


@pytest.mark.parametrize(("control", "treatment"), DEGENERATE)
def test_degenerate_arms_give_nan_not_an_error(
    control: Proportion | Moments | RatioMoments, treatment: Proportion | Moments | RatioMoments
) -> None:
    estimate = compare("kpi", Role.EXPLORATORY, control, treatment)
    assert math.isnan(estimate.p_value)
    assert not estimate.significant
    assert all(math.isnan(bound) for bound in estimate.absolute_ci)
    assert estimate.relative_ci is None or all(math.isnan(bound) for bound in estimate.relative_ci)
    figures = [
        estimate.control,
        estimate.treatment,
        estimate.absolute_lift,
        estimate.p_value,
        *estimate.absolute_ci,
    ]
    if estimate.relative_lift is not None:
        figures.append(estimate.relative_lift)
    if estimate.relative_ci is not None:
        figures.extend(estimate.relative_ci)
    assert all(type(figure) is float for figure in figures)


def test_one_person_per_arm_still_has_a_pooled_test_but_no_wald_interval() -> None:
    # 1 of 1 against 0 of 1: the pooled SE is positive, each arm's own variance is 0.
    estimate = compare("cr", Role.PRIMARY, Proportion(1, 1), Proportion(1, 0))
    expected = stats.chi2_contingency(np.array([[1, 0], [0, 1]]), correction=False).pvalue
    assert estimate.p_value == pytest.approx(expected)
    assert all(math.isnan(bound) for bound in estimate.absolute_ci)
    assert estimate.relative_lift == -1.0


def test_figures_are_plain_floats() -> None:
    cases: list[tuple[Stats, Stats]] = [
        (Proportion(1_000, 100), Proportion(1_000, 130)),
        (moments(WELCH_CASES[0][0]), moments(WELCH_CASES[0][1])),
        (RatioMoments(3, 30.0, 3.0, 350.0, 3.0, 30.0), RatioMoments(3, 36.0, 3.0, 500.0, 5.0, 40.0)),
    ]
    for control, treatment in cases:
        estimate = compare("kpi", Role.PRIMARY, control, treatment)
        assert estimate.relative_lift is not None and estimate.relative_ci is not None
        figures = [estimate.control, estimate.treatment, estimate.absolute_lift, estimate.p_value]
        figures += [*estimate.absolute_ci, estimate.relative_lift, *estimate.relative_ci]
        assert all(type(figure) is float and math.isfinite(figure) for figure in figures)
    assert type(power_reached(0.1, 0.1, 0.05, 1_000, 1_000)) is float
    srm = sample_ratio(100, 120, 0.5)
    assert type(srm.chi2) is float and type(srm.p_value) is float


def test_impossible_inputs_raise() -> None:
    with pytest.raises(ValueError):
        compare("cr", Role.PRIMARY, Proportion(10, 11), Proportion(10, 1))
    with pytest.raises(ValueError):
        compare("cr", Role.PRIMARY, Proportion(-1, 0), Proportion(10, 1))
    with pytest.raises(ValueError):
        compare("cr", Role.PRIMARY, Proportion(10, 1), Proportion(10, 1), alpha=1.5)
    with pytest.raises(TypeError):
        compare("cr", Role.PRIMARY, Proportion(10, 1), Moments(10, 1.0, 1.0))
    with pytest.raises(ValueError):
        needed_sample(0.6, 1.0, 0.05, 0.8, 0.5)  # 120 %
    with pytest.raises(ValueError):
        sample_ratio(10, 10, 1.0)


def test_control_rate_zero_has_no_relative_lift() -> None:
    estimate = compare("cr", Role.PRIMARY, Proportion(1_000, 0), Proportion(1_000, 5))
    assert estimate.relative_lift is None and estimate.relative_ci is None
    assert 0 < estimate.p_value < 0.05
    assert estimate.absolute_lift == 0.005


# --- sample ratio -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("control", "treatment", "share"),
    [(5_000, 5_200, 0.5), (1_010, 8_990, 0.1), (30_500, 69_500, 0.3), (3, 0, 0.2)],
)
def test_sample_ratio_equals_scipy_chisquare(control: int, treatment: int, share: float) -> None:
    total = control + treatment
    expected = stats.chisquare([control, treatment], f_exp=[total * share, total * (1 - share)])
    srm = sample_ratio(control, treatment, share)
    assert srm.chi2 == pytest.approx(expected.statistic, rel=1e-12)
    assert srm.p_value == pytest.approx(expected.pvalue, rel=1e-9)


def test_sample_ratio_flags_a_mismatch_only_below_the_threshold() -> None:
    assert not sample_ratio(5_000, 5_100, 0.5).mismatch
    assert sample_ratio(5_000, 5_400, 0.5).mismatch
    empty = sample_ratio(0, 0, 0.5)
    assert math.isnan(empty.p_value) and not empty.mismatch


# --- planning -----------------------------------------------------------------------------------------


def test_needed_sample_matches_the_textbook_value() -> None:
    # 10 % baseline, +10 % relative (11 %), alpha 0.05 two-sided, power 0.8, 50/50: Fleiss without
    # continuity correction, (1.95996 sqrt(2 * .105 * .895) + 0.84162 sqrt(.09 + .0979))^2 / .01^2 = 14,750.6.
    assert needed_sample(0.10, 0.10, 0.05, 0.8, 0.5) == (14_751, 14_751)


@pytest.mark.parametrize(
    ("baseline", "mde", "alpha", "power", "share"),
    [
        (0.10, 0.10, 0.05, 0.8, 0.5),
        (0.03, 0.05, 0.05, 0.9, 0.5),
        (0.25, -0.08, 0.01, 0.8, 0.2),
        (0.50, 0.02, 0.05, 0.95, 0.9),
        (0.01, 0.30, 0.10, 0.8, 0.33),
    ],
)
def test_needed_sample_is_the_smallest_that_reaches_the_power(
    baseline: float, mde: float, alpha: float, power: float, share: float
) -> None:
    n_control, n_treatment = needed_sample(baseline, mde, alpha, power, share)
    assert n_control / (n_control + n_treatment) == pytest.approx(share, abs=1e-3)
    assert power_reached(baseline, mde, alpha, n_control, n_treatment) >= power
    assert power_reached(baseline, mde, alpha, n_control - 1, n_treatment - 1) < power


def test_power_reached_agrees_with_a_simulation_of_the_test() -> None:
    rng = np.random.default_rng(11)
    runs, n_control, n_treatment = 4_000, 3_000, 5_000
    control = rng.binomial(n_control, 0.2, runs)
    treatment = rng.binomial(n_treatment, 0.22, runs)
    rejected = sum(
        compare(
            "cr", Role.PRIMARY, Proportion(n_control, int(c)), Proportion(n_treatment, int(t))
        ).significant
        for c, t in zip(control, treatment, strict=True)
    )
    predicted = power_reached(0.2, 0.1, 0.05, n_control, n_treatment)
    assert abs(rejected / runs - predicted) < 3.5 * math.sqrt(predicted * (1 - predicted) / runs)


def test_plan_assembles_the_power_value() -> None:
    power = plan(0.1, 0.1, 0.05, 0.8, 0.5, 7_000, 7_000)
    assert (power.needed_control, power.needed_treatment) == (14_751, 14_751)
    assert power.reached == pytest.approx(power_reached(0.1, 0.1, 0.05, 7_000, 7_000))
    assert 0.4 < power.reached < 0.5
    assert plan(0.1, 0.1, 0.05, 0.8, 0.5, 0, 10).reached == 0.0
