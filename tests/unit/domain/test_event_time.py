"""Event time: the client's clock corrected for skew as Segment does, and the range omniseg accepts.

The reference model is the physical story: an event happens at true time ``t`` and is sent ``wait``
later, on a client clock off by ``offset``; it arrives ``latency`` after it was sent. The client stamps
``timestamp = t + offset`` and ``sentAt = t + wait + offset``; the collector stamps
``receivedAt = t + wait + latency``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from streams.domain.event_time import (
    EARLIEST,
    MAX_AHEAD,
    SKEW_TOLERANCE,
    corrected_timestamp,
    out_of_range,
)

RECEIVED = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)

_true_times = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC)
)
_offsets = st.timedeltas(min_value=-timedelta(days=20_000), max_value=timedelta(days=20_000))
_waits = st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=30))
_latencies = st.timedeltas(min_value=timedelta(0), max_value=timedelta(seconds=5))


@given(_true_times, _offsets, _waits, _latencies)
def test_correction_recovers_the_true_time_up_to_the_network_latency(
    t: datetime, offset: timedelta, wait: timedelta, latency: timedelta
) -> None:
    timestamp, sent_at, received_at = t + offset, t + wait + offset, t + wait + latency
    corrected = corrected_timestamp(timestamp, sent_at, received_at)
    if abs(latency - offset) > SKEW_TOLERANCE:
        assert corrected == t + latency
    else:  # a clock within the tolerance is taken as right
        assert corrected == timestamp
        assert abs(corrected - t) <= SKEW_TOLERANCE + latency


def test_a_browser_two_hours_slow_lands_at_the_true_time() -> None:
    happened = RECEIVED - timedelta(minutes=5)
    slow = timedelta(hours=2)
    corrected = corrected_timestamp(happened - slow, RECEIVED - slow, RECEIVED)
    assert corrected == happened


def test_without_sent_at_or_within_a_second_nothing_moves() -> None:
    stamped = RECEIVED - timedelta(days=400)
    assert corrected_timestamp(stamped, None, RECEIVED) == stamped
    assert corrected_timestamp(stamped, RECEIVED - timedelta(milliseconds=900), RECEIVED) == stamped


def test_a_phone_reset_to_1970_is_brought_back_to_now() -> None:
    booted = datetime(1970, 1, 1, 0, 5, tzinfo=UTC)
    corrected = corrected_timestamp(booted, booted + timedelta(seconds=30), RECEIVED)
    assert corrected == RECEIVED - timedelta(seconds=30)
    assert out_of_range(corrected, RECEIVED) is None


def test_an_absurd_sent_at_cannot_overflow_the_correction() -> None:
    far = datetime(9999, 12, 31, tzinfo=UTC)
    corrected = corrected_timestamp(datetime(1, 1, 2, tzinfo=UTC), far, RECEIVED)
    assert out_of_range(corrected, RECEIVED) is not None


def test_the_bound_is_a_day_after_receipt_and_1970() -> None:
    assert out_of_range(RECEIVED + MAX_AHEAD, RECEIVED) is None
    assert out_of_range(EARLIEST, RECEIVED) is None
    assert out_of_range(datetime(1997, 1, 1, tzinfo=UTC), RECEIVED) is None
    ahead = out_of_range(RECEIVED + MAX_AHEAD + timedelta(seconds=1), RECEIVED)
    assert ahead is not None and "more than 24 hours after the call was received" in ahead
    for year in (2200, 9999):
        reason = out_of_range(datetime(year, 1, 1, tzinfo=UTC), RECEIVED)
        assert reason is not None and reason.startswith(f"{year}-01-01T00:00:00.000Z")
    early = out_of_range(EARLIEST - timedelta(milliseconds=1), RECEIVED)
    assert early is not None and "before 1970" in early
