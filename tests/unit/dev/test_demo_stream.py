"""The demo's live part: today's calls re-timed to the moment they are sent, nothing else changed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from streams.dev.demo import retime
from streams.domain.simulation import generate

NOW = datetime(2026, 11, 20, 15, 30, tzinfo=UTC)


def test_live_calls_keep_order_and_ids_and_fall_within_the_live_seconds() -> None:
    today = NOW.replace(hour=0, minute=0)
    calls = [
        (channel, call)
        for channel, call in generate(seed=3, customers=40, days=2, start=today - timedelta(days=1))
        if datetime.fromisoformat(call["timestamp"]) >= today
    ]
    timed = retime(calls, NOW, 20.0)
    assert [call["messageId"] for _, _, call in timed] == [call["messageId"] for _, call in calls]
    stamps = [datetime.fromisoformat(call["timestamp"]) for _, _, call in timed]
    assert stamps == sorted(stamps)
    assert stamps[0] == NOW and stamps[-1] <= NOW + timedelta(seconds=20)
    for (offset, _, _), stamp in zip(timed, stamps, strict=True):
        assert abs(offset - (stamp - NOW).total_seconds()) < 0.001  # timestamps carry milliseconds
    for (_, _, new), (_, old) in zip(timed, calls, strict=True):
        assert {**new, "timestamp": old["timestamp"]} == old


def test_no_live_calls_is_nothing_to_send() -> None:
    assert retime([], NOW, 20.0) == []
