"""Contacts and traits are kept per profile as the newest value by event time, updated in place; a merge
copies them, so the merged profile and the survivor never share an entry."""

from __future__ import annotations

from streams.domain.segments.engine import SegmentEngine
from streams.domain.segments.events import SegmentEvent, segment_event
from streams.domain.segments.loader import load_definitions
from streams.domain.segments.merge import combine
from streams.domain.segments.profile import Profile

_DEFINITION = """
id: gold
name: Gold tier
when: {trait: tier, eq: gold}
"""

NOW = 1_800_000_000_000


def _event(message_id: str, ts: int, email: str, tier: str) -> SegmentEvent:
    return segment_event(
        message_id, ts, "page_viewed", "web", None, None, None, {}, {"tier": tier}, (), (f"email:{email}",)
    )


def _engine() -> SegmentEngine:
    return SegmentEngine([(d, 1) for d in load_definitions([("t.yaml", _DEFINITION)])])


def test_the_newest_event_wins_and_an_older_one_does_not() -> None:
    engine, profile = _engine(), Profile("p-1")
    engine.apply(profile, _event("m1", NOW - 3_000, "old@example.com", "silver"), NOW)
    entry = profile.contacts["email"]
    engine.apply(profile, _event("m2", NOW - 1_000, "new@example.com", "gold"), NOW)
    assert profile.contacts["email"] == ["new@example.com", NOW - 1_000]
    assert profile.contacts["email"] is entry  # updated in place, not replaced
    assert profile.traits["tier"] == ["gold", NOW - 1_000]
    engine.apply(profile, _event("m3", NOW - 2_000, "late@example.com", "bronze"), NOW)  # arrives late
    assert profile.contacts["email"] == ["new@example.com", NOW - 1_000]
    assert profile.traits["tier"] == ["gold", NOW - 1_000]
    assert profile.is_member("gold")


def test_a_merge_copies_the_newer_entries() -> None:
    engine = _engine()
    survivor, merged = Profile("p-1"), Profile("p-2")
    engine.apply(survivor, _event("m1", NOW - 3_000, "s@example.com", "silver"), NOW)
    engine.apply(merged, _event("m2", NOW - 1_000, "m@example.com", "gold"), NOW)
    combine(survivor, merged)
    assert survivor.contacts["email"] == ["m@example.com", NOW - 1_000]
    assert survivor.traits["tier"] == ["gold", NOW - 1_000]
    assert survivor.contacts["email"] is not merged.contacts["email"]
    merged.contacts["email"][0] = "changed@example.com"  # the merged profile lives on elsewhere
    assert survivor.contacts["email"][0] == "m@example.com"
