"""Property tests of the experiment statistics: symmetry, intervals around the estimate, never an error."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from streams.domain.experiments.model import Estimate, Moments, Proportion, RatioMoments, Role, Stats
from streams.domain.experiments.statistics import compare, needed_sample, power_reached, sample_ratio


@st.composite
def proportions(draw: st.DrawFn, max_n: int = 10**7) -> Proportion:
    n = draw(st.integers(0, max_n) | st.integers(0, 3))
    return Proportion(n, draw(st.sampled_from([0, n]) | st.integers(0, n)))


values = st.floats(-1e4, 1e4) | st.sampled_from([0.0, 0.1, 9.99, 250.0])


@st.composite
def moments_from_persons(draw: st.DrawFn) -> Moments:
    persons = draw(st.lists(values, max_size=25))
    return Moments(len(persons), sum(persons), sum(v * v for v in persons))


@st.composite
def ratios_from_persons(draw: st.DrawFn) -> RatioMoments:
    persons = draw(st.lists(st.tuples(values, st.integers(0, 4).map(float)), max_size=25))
    return RatioMoments(
        n=len(persons),
        num=sum(x for x, _ in persons),
        den=sum(y for _, y in persons),
        num_sq=sum(x * x for x, _ in persons),
        den_sq=sum(y * y for _, y in persons),
        num_den=sum(x * y for x, y in persons),
    )


anything = st.floats(allow_nan=True, allow_infinity=True)
counts = st.integers(0, 10**9) | st.integers(0, 3)
arbitrary_moments = st.builds(Moments, counts, anything, anything)
arbitrary_ratios = st.builds(RatioMoments, counts, anything, anything, anything, anything, anything)
alphas = st.sampled_from([0.05, 0.01, 0.1]) | st.floats(1e-6, 0.5)

pairs = (
    st.tuples(proportions(), proportions())
    | st.tuples(moments_from_persons(), moments_from_persons())
    | st.tuples(ratios_from_persons(), ratios_from_persons())
)
arbitrary_pairs = (
    pairs | st.tuples(arbitrary_moments, arbitrary_moments) | st.tuples(arbitrary_ratios, arbitrary_ratios)
)


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-12, abs=1e-300)


@settings(max_examples=300)
@given(pairs, alphas)
def test_swapping_the_arms_negates_the_lift_and_keeps_the_p_value(
    pair: tuple[Stats, Stats], alpha: float
) -> None:
    control, treatment = pair
    forward = compare("kpi", Role.PRIMARY, control, treatment, alpha)
    backward = compare("kpi", Role.PRIMARY, treatment, control, alpha)
    assert same(backward.absolute_lift, -forward.absolute_lift)
    assert same(backward.p_value, forward.p_value)
    low, high = forward.absolute_ci
    assert same(backward.absolute_ci[0], -high) and same(backward.absolute_ci[1], -low)


def check_interval(estimate: Estimate) -> None:
    low, high = estimate.absolute_ci
    assert math.isnan(low) == math.isnan(high)
    if not math.isnan(low):
        assert low <= estimate.absolute_lift <= high
    if estimate.relative_lift is not None:
        assert estimate.relative_ci is not None
        low, high = estimate.relative_ci
        if not math.isnan(low):
            assert low <= estimate.relative_lift <= high
    else:
        assert estimate.relative_ci is None


@settings(max_examples=300)
@given(pairs, alphas)
def test_intervals_contain_the_estimate_and_p_values_are_probabilities(
    pair: tuple[Stats, Stats], alpha: float
) -> None:
    estimate = compare("kpi", Role.PRIMARY, *pair, alpha)
    check_interval(estimate)
    assert math.isnan(estimate.p_value) or 0.0 <= estimate.p_value <= 1.0
    if not math.isnan(estimate.p_value):
        # The interval excludes 0 exactly when the test rejects, up to the pooled/unpooled difference
        # of proportions; for means and ratios the test and the interval are one computation.
        low, high = estimate.absolute_ci
        if not isinstance(pair[0], Proportion) and abs(estimate.p_value - alpha) > 1e-9:
            assert estimate.significant == (low > 0 or high < 0)


@settings(max_examples=300)
@given(arbitrary_pairs, alphas)
def test_degenerate_and_odd_arms_never_raise(pair: tuple[Stats, Stats], alpha: float) -> None:
    estimate = compare("kpi", Role.EXPLORATORY, *pair, alpha)
    figures = [
        estimate.control,
        estimate.treatment,
        estimate.absolute_lift,
        estimate.p_value,
        *estimate.absolute_ci,
    ]
    figures += (
        [estimate.relative_lift, *(estimate.relative_ci or ())] if estimate.relative_lift is not None else []
    )
    assert all(type(figure) is float for figure in figures)
    assert math.isnan(estimate.p_value) or 0.0 <= estimate.p_value <= 1.0
    assert estimate.significant in (True, False)


@settings(max_examples=100)
@given(proportions(max_n=10**6).filter(lambda p: p.n > 0), proportions(max_n=10**6).filter(lambda p: p.n > 0))
def test_proportion_p_value_is_the_chi_squared_test(control: Proportion, treatment: Proportion) -> None:
    successes, failures = (
        control.successes + treatment.successes,
        control.n + treatment.n - control.successes - treatment.successes,
    )
    if successes == 0 or failures == 0:
        return  # chi2_contingency refuses a zero margin; compare() gives nan (checked elsewhere)
    table = np.array(
        [
            [control.successes, control.n - control.successes],
            [treatment.successes, treatment.n - treatment.successes],
        ]
    )
    expected = stats.chi2_contingency(table, correction=False).pvalue
    assert compare("cr", Role.PRIMARY, control, treatment).p_value == pytest.approx(
        expected, rel=1e-6, abs=1e-300
    )


@settings(max_examples=200)
@given(
    baseline=st.floats(0.005, 0.9),
    mde=st.floats(0.01, 0.6) | st.floats(-0.6, -0.01),
    alpha=st.floats(0.001, 0.2),
    power=st.floats(0.5, 0.99),
    share=st.floats(0.05, 0.95),
)
def test_needed_sample_is_the_smallest_reaching_the_power(
    baseline: float, mde: float, alpha: float, power: float, share: float
) -> None:
    if not 0 < baseline * (1 + mde) < 1:
        return
    n_control, n_treatment = needed_sample(baseline, mde, alpha, power, share)
    assert power_reached(baseline, mde, alpha, n_control, n_treatment) >= power
    assert power_reached(baseline, mde, alpha, n_control - 1, n_treatment - 1) < power


@given(st.integers(0, 10**8), st.integers(0, 10**8), st.floats(0.01, 0.99))
def test_sample_ratio_never_raises_and_gives_a_probability(
    control: int, treatment: int, share: float
) -> None:
    srm = sample_ratio(control, treatment, share)
    assert math.isnan(srm.p_value) == (control + treatment == 0)
    assert math.isnan(srm.p_value) or 0.0 <= srm.p_value <= 1.0
