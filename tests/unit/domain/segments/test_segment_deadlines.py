"""The moment a derived trait reaches a threshold is exact to the millisecond (timers fire on time)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.domain.segments.derived import derived_value, reaching
from streams.domain.segments.model import DAY_MS
from streams.domain.segments.profile import Profile


def _lapse_profile(last: int, gap: int) -> Profile:
    profile = Profile("p")
    profile.purchases = [last - 2 * gap, last - gap, last]
    return profile


def test_a_lapse_ratio_of_one_half_fires_at_the_exact_millisecond() -> None:
    # Found by the property tests: ceil(0.5 * gap) came out 1 ms late for this gap.
    last, gap = 10 * DAY_MS, 4_050_500
    profile = _lapse_profile(last, gap)
    interval = gap / DAY_MS
    at = last + reaching(0.5, interval)
    assert derived_value(profile, "lapse_ratio", at) >= 0.5
    assert derived_value(profile, "lapse_ratio", at - 1) < 0.5
    assert at == last + 2_025_250


@given(
    threshold=st.floats(0.001, 50, allow_nan=False),
    gap=st.integers(1, 400 * DAY_MS),
)
def test_lapse_deadline_is_the_first_millisecond_at_the_threshold(threshold: float, gap: int) -> None:
    last = 1_000 * DAY_MS
    profile = _lapse_profile(last, gap)
    at = last + reaching(threshold, gap / DAY_MS)
    assert derived_value(profile, "lapse_ratio", at) >= threshold
    assert derived_value(profile, "lapse_ratio", at - 1) < threshold


@given(threshold=st.floats(0.0001, 3650, allow_nan=False))
def test_days_deadline_is_the_first_millisecond_at_the_threshold(threshold: float) -> None:
    profile = Profile("p")
    profile.first_seen = 5 * DAY_MS
    at = profile.first_seen + reaching(threshold)
    assert derived_value(profile, "days_since_first_seen", at) >= threshold
    assert derived_value(profile, "days_since_first_seen", at - 1) < threshold
