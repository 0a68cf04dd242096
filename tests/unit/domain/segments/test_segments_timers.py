"""Time passing without events: windows expire, recency and lapse segments enter, on a clock the test
controls (the engine takes ``now`` from its caller; the worker passes the wall clock)."""

from __future__ import annotations

from typing import Any

from streams.domain.segments.changes import Change
from streams.domain.segments.engine import SegmentEngine
from streams.domain.segments.events import SegmentEvent
from streams.domain.segments.model import DAY_MS, SegmentDefinition
from streams.domain.segments.profile import Profile

H = 3_600_000
T0 = 1_717_200_000_000  # 2024-06-01T00:00Z


class Clock:
    """A clock that only moves when the test says so."""

    def __init__(self, start: int = T0) -> None:
        self.now = start

    def advance(self, millis: int) -> int:
        assert millis >= 0
        self.now += millis
        return self.now

    def set(self, at: int) -> int:
        assert at >= self.now
        self.now = at
        return self.now


def engine_of(*definitions: dict[str, Any]) -> SegmentEngine:
    return SegmentEngine([(SegmentDefinition.model_validate(d), 1) for d in definitions])


def event(n: int, ts: int, name: str = "Order Completed", **fields: Any) -> SegmentEvent:
    return SegmentEvent(message_id=f"m{n}", timestamp_ms=ts, name=name, channel="web", **fields)


def flips(changes: list[Change]) -> list[tuple[str, bool, str]]:
    return [(c.segment_id, c.entered, c.trigger) for c in changes]


def test_window_expires_without_new_event() -> None:
    engine = engine_of({"id": "recent-buyer", "when": {"event": "Order Completed", "window": "1h"}})
    clock, profile = Clock(), Profile("p")
    assert flips(engine.apply(profile, event(1, clock.now), clock.now)) == [("recent-buyer", True, "event")]
    bought = clock.now
    assert engine.next_deadline(profile, clock.now) == bought + H
    assert engine.tick(profile, clock.advance(30 * 60_000)) == []
    assert engine.tick(profile, clock.set(bought + H - 1)) == []  # not before
    assert profile.current_members() == ["recent-buyer"]
    changes = engine.tick(profile, clock.set(bought + H))  # exactly at ts + window
    assert flips(changes) == [("recent-buyer", False, "timer")]
    assert (changes[0].seq, changes[0].at) == (2, bought + H)
    assert profile.current_members() == []
    assert engine.next_deadline(profile, clock.now) is None
    assert engine.tick(profile, clock.advance(DAY_MS)) == []


def test_window_counts_each_event_until_its_own_expiry() -> None:
    engine = engine_of(
        {"id": "two-views", "when": {"event": "Product Viewed", "window": "2h", "count": {"gte": 2}}}
    )
    clock, profile = Clock(), Profile("p")
    engine.apply(profile, event(1, clock.now, "Product Viewed"), clock.now)
    first = clock.now
    clock.advance(H)
    assert flips(engine.apply(profile, event(2, clock.now, "Product Viewed"), clock.now)) == [
        ("two-views", True, "event")
    ]
    assert engine.next_deadline(profile, clock.now) == first + 2 * H
    assert flips(engine.tick(profile, clock.set(first + 2 * H))) == [("two-views", False, "timer")]
    # the second view still counts until its own expiry, and is the next deadline
    assert engine.next_deadline(profile, clock.now) == first + 3 * H


def test_late_event_expires_with_its_own_time_and_a_future_one_with_the_clock() -> None:
    engine = engine_of({"id": "recent-buyer", "when": {"event": "Order Completed", "window": "1h"}})
    clock, profile = Clock(), Profile("late")
    engine.apply(profile, event(1, clock.now - 40 * 60_000), clock.now)  # 40 minutes late
    assert engine.next_deadline(profile, clock.now) == clock.now + 20 * 60_000
    engine.apply(profile, event(2, clock.now - 2 * H), clock.now)  # already outside the window
    assert engine.next_deadline(profile, clock.now) == clock.now + 20 * 60_000

    future = Profile("future")
    start = clock.now
    engine.apply(future, event(3, start + 5 * H), start)  # stamped 5 h ahead: counts from now
    assert engine.next_deadline(future, start) == start + H
    assert flips(engine.tick(future, start + H)) == [("recent-buyer", False, "timer")]


def test_no_purchase_in_30_days_enters_at_last_purchase_plus_30_days() -> None:
    engine = engine_of(
        {"id": "no-recent-purchase", "when": {"not": {"event": "Order Completed", "window": "30d"}}},
        {"id": "bought-not-lately", "when": {"event": "Order Completed", "last": {"older_than": "30d"}}},
    )
    clock, profile = Clock(), Profile("p")
    assert engine.apply(profile, event(1, clock.now), clock.now) == []
    bought = clock.now
    assert engine.next_deadline(profile, clock.now) == bought + 30 * DAY_MS
    assert engine.tick(profile, clock.set(bought + 30 * DAY_MS - 1)) == []
    assert flips(engine.tick(profile, clock.set(bought + 30 * DAY_MS))) == [
        ("no-recent-purchase", True, "timer")
    ]
    # "older than" is strict: one millisecond later (see the report on the boundary)
    assert engine.next_deadline(profile, clock.now) == bought + 30 * DAY_MS + 1
    assert flips(engine.tick(profile, clock.advance(1))) == [("bought-not-lately", True, "timer")]
    assert engine.next_deadline(profile, clock.now) is None
    # a new purchase takes the person out of both at once
    assert sorted(flips(engine.apply(profile, event(2, clock.now), clock.now))) == [
        ("bought-not-lately", False, "event"),
        ("no-recent-purchase", False, "event"),
    ]


def test_lapse_ratio_enters_at_the_computed_deadline() -> None:
    engine = engine_of({"id": "lapsed", "when": {"derived": "lapse_ratio", "gt": 1.5}})
    clock, profile = Clock(), Profile("p")
    for n in range(3):  # purchases 10 days apart: the usual interval is 10 days
        engine.apply(profile, event(n, clock.now), clock.now)
        if n < 2:
            clock.advance(10 * DAY_MS)
    last = clock.now
    # ratio 1.5 at last + 15 d; "gt" holds one millisecond later
    assert engine.next_deadline(profile, clock.now) == last + 15 * DAY_MS
    assert engine.tick(profile, clock.set(last + 15 * DAY_MS)) == []
    assert engine.next_deadline(profile, clock.now) == last + 15 * DAY_MS + 1
    assert flips(engine.tick(profile, clock.advance(1))) == [("lapsed", True, "timer")]
    assert engine.next_deadline(profile, clock.now) is None
    assert flips(engine.apply(profile, event(9, clock.now), clock.now)) == [("lapsed", False, "event")]


def test_lapse_ratio_deadline_with_an_uneven_interval() -> None:
    engine = engine_of({"id": "lapsed", "when": {"derived": "lapse_ratio", "gte": 2.25}})
    clock, profile = Clock(), Profile("p")
    engine.apply(profile, event(1, clock.now), clock.now)
    gap = 7 * DAY_MS + 1234567  # not a round number of days
    engine.apply(profile, event(2, clock.advance(gap)), clock.now)
    deadline = engine.next_deadline(profile, clock.now)
    assert deadline is not None
    assert engine.tick(profile, deadline - 1) == []
    assert flips(engine.tick(profile, deadline)) == [("lapsed", True, "timer")]
    assert (deadline - clock.now) / gap >= 2.25 > (deadline - 1 - clock.now) / gap


def test_next_deadline_is_the_earliest_of_all_clock_driven_conditions() -> None:
    engine = engine_of(
        {"id": "viewed-2h", "when": {"event": "Product Viewed", "window": "2h"}},
        {"id": "bought-1d", "when": {"event": "Order Completed", "window": "1d"}},
        {"id": "new", "when": {"derived": "days_since_first_seen", "lt": 3}},
        {"id": "gold", "when": {"trait": "tier", "eq": "gold"}},
    )
    clock, profile = Clock(), Profile("p")
    engine.apply(profile, event(1, clock.now), clock.now)
    start = clock.now
    assert engine.next_deadline(profile, clock.now) == start + DAY_MS
    engine.apply(profile, event(2, clock.advance(H), "Product Viewed"), clock.now)
    assert engine.next_deadline(profile, clock.now) == start + 3 * H
    seen: list[int] = []
    deadline = engine.next_deadline(profile, clock.now)
    while deadline is not None:
        seen.append(deadline)
        engine.tick(profile, clock.set(deadline))
        deadline = engine.next_deadline(profile, clock.now)
    # view expiry, purchase expiry, "new" ends at 3 days (lt: at the threshold; both it and +1 ms)
    assert seen == [start + 3 * H, start + DAY_MS, start + 3 * DAY_MS, start + 3 * DAY_MS + 1]
    assert profile.current_members() == []


def test_no_deadline_without_clock_driven_conditions() -> None:
    engine = engine_of(
        {"id": "three-orders", "when": {"event": "Order Completed", "count": {"gte": 3}}},
        {"id": "gold", "when": {"trait": "tier", "eq": "gold"}},
    )
    clock, profile = Clock(), Profile("p")
    engine.apply(profile, event(1, clock.now, "identify", traits={"tier": "gold"}), clock.now)
    engine.apply(profile, event(2, clock.now), clock.now)
    assert engine.next_deadline(profile, clock.now) is None
    assert engine.tick(profile, clock.advance(365 * DAY_MS)) == []
    assert profile.current_members() == ["gold"]


# -- engine bugs found by the property tests (these fail until the engine is fixed) ----------------


def test_first_event_evaluates_segments_it_does_not_trigger() -> None:
    """A person's first event must place them in every segment that holds: "did not buy" holds
    for a browser whose first event is a page view (membership at t is the rule over the events)."""
    engine = engine_of(
        {"id": "no-recent-purchase", "when": {"not": {"event": "Order Completed", "window": "30d"}}},
        {"id": "not-gold", "when": {"trait": "tier", "ne": "gold"}},
        {"id": "prospect", "when": {"derived": "purchase_count", "eq": 0}},
    )
    clock, profile = Clock(), Profile("browser")
    changes = engine.apply(profile, event(1, clock.now, "page"), clock.now)
    assert sorted(flips(changes)) == [
        ("no-recent-purchase", True, "event"),
        ("not-gold", True, "event"),
        ("prospect", True, "event"),
    ]


def test_duplicate_event_still_lets_time_pass() -> None:
    """A re-delivered message is applied once, but the clock it comes with still expires windows, as
    every other apply does: after apply(now) the membership is the one at now."""
    engine = engine_of({"id": "recent-buyer", "when": {"event": "Order Completed", "window": "1h"}})
    clock, profile = Clock(), Profile("p")
    first = event(1, clock.now)
    engine.apply(profile, first, clock.now)
    changes = engine.apply(profile, first, clock.advance(H))  # the same message again, an hour later
    assert flips(changes) == [("recent-buyer", False, "timer")]
    assert profile.current_members() == []
