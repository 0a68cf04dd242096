"""Property tests: a new definition's feature backfilled from history, then live events, equals the
reference over every event from the start.

The model of one person: the old definitions apply events ``[0, live)``; then the new definition goes
live (a new engine, the features it adds await their backfill) and events ``[live, end)`` are applied
live. The backfill reads the history of the events applied before it read, ``[0, read)`` with
``read >= live`` (events in ``[live, read)`` were counted live too), and its parts reach the owner
after event ``arrive - 1`` (``arrive >= read``), some of them twice. From the backfill on, membership
equals the reference of all definitions over all events, after every step.
"""

from __future__ import annotations

from typing import Any

from hypothesis import assume, given, note
from hypothesis import strategies as st

from streams.domain.segments.backfill import history_entries, split_parts
from streams.domain.segments.changes import Change
from streams.domain.segments.engine import SegmentEngine
from streams.domain.segments.events import SegmentEvent
from streams.domain.segments.model import SegmentDefinition
from streams.domain.segments.profile import Profile
from tests.unit.domain.segments.segments_reference import ReferenceSegments
from tests.unit.domain.segments.test_segments_properties import (
    BASE,
    CATALOG,
    PROPERTY_TESTS,
    H,
    check_changes,
    definition_sets,
    event_bodies,
    event_leaf,
    start_of,
    validated,
)

NEW = "backfilled-segment"


@st.composite
def past_events(draw: st.DrawFn, start: int) -> list[tuple[int, SegmentEvent]]:
    """(applied at, event) of one person: never future-dated (history keeps the event time as sent,
    and the live stream clamps a future one to its arrival), sometimes sent twice."""
    now = start
    steps: list[tuple[int, SegmentEvent]] = []
    for n in range(draw(st.integers(1, 25))):
        now += draw(st.sampled_from([0, 1, 2, 6, 12, 24, 30, 48])) * H
        if steps and draw(st.integers(0, 6)) == 0:
            steps.append((now, draw(st.sampled_from(steps))[1]))
            continue
        offset = draw(st.sampled_from([0, 0, 0, -1, -2, -6, -24, -30, -72])) * H
        event = SegmentEvent(message_id=f"a-m{n}", timestamp_ms=now + offset, **draw(event_bodies()))
        steps.append((now, event))
    return steps


def _engine(definitions: list[SegmentDefinition]) -> SegmentEngine:
    return SegmentEngine([(d, 1) for d in definitions], CATALOG)


def _members(profile: Profile) -> set[str]:
    return set(profile.current_members())


@PROPERTY_TESTS
@given(st.data())
def test_backfill_then_live_equals_reference_of_all_events(data: st.DataObject) -> None:
    old_definitions = validated(data.draw(definition_sets(), label="old definitions"))
    condition: dict[str, Any] = data.draw(event_leaf(), label="new condition")
    new_definition = SegmentDefinition.model_validate({"id": NEW, "when": condition})
    definitions = [*old_definitions, new_definition]
    old, new = _engine(old_definitions), _engine(definitions)
    added = new.new_features(old)
    assume(added)
    new.await_backfill(added)

    steps = data.draw(past_events(start_of(data.draw)), label="events")
    count = len(steps)
    live = data.draw(st.integers(0, count), label="live from")
    read = data.draw(st.integers(live, count), label="backfill read up to")
    arrive = data.draw(st.integers(read, count), label="backfill arrives after")
    per_part = data.draw(st.integers(1, 6), label="entries per part")
    reference = ReferenceSegments(definitions, CATALOG)

    profile = Profile("a")
    changes: list[Change] = []
    history: list[tuple[int, SegmentEvent]] = []
    now = steps[0][0]
    for index, (at, event) in enumerate(steps):
        if index == live:  # the new definition goes live
            changes += new.reevaluate(profile, at, "definition", "definitions changed", {NEW})
        if index == arrive:
            changes += _backfill(data, new, profile, steps[:read], added, per_part, now)
        engine = new if index >= live else old
        now = at
        changes += engine.apply(profile, event, now)
        history.append((at, event))
        if index >= arrive:
            note(f"after event {index}: {event}")
            assert _members(profile) == reference.members(history, now)
    if live == count:
        changes += new.reevaluate(profile, now, "definition", "definitions changed", {NEW})
    if arrive == count:
        changes += _backfill(data, new, profile, steps[:read], added, per_part, now)
    assert _members(profile) == reference.members(history, now)
    later = now + 400 * 24 * H
    changes += new.tick(profile, later) if profile.due and profile.due <= later else []
    assert _members(profile) == reference.members(history, later)
    check_changes(changes, profile)


def _backfill(
    data: st.DataObject,
    engine: SegmentEngine,
    profile: Profile,
    read: list[tuple[int, SegmentEvent]],
    added: frozenset[str],
    per_part: int,
    now: int,
) -> list[Change]:
    """The run's parts for the person, delivered at ``now`` (a part sometimes twice, and the state
    sometimes written and read back in between)."""
    features = tuple(sorted(added))
    entries = history_entries([engine.features[f] for f in features], [e for _, e in read], CATALOG)
    changes: list[Change] = []
    for part in split_parts("run-1", profile.person_id, features, entries, per_part):
        found, _ = engine.backfill(profile, part, now)
        assert all(change.trigger == "backfill" for change in found)
        changes += found
        if data.draw(st.integers(0, 3), label="deliver again") == 0:
            again, count = engine.backfill(profile, part, now)
            assert again == [] and count == 0
        if data.draw(st.integers(0, 3), label="restore state") == 0:
            restored = Profile.from_json(profile.to_json())
            assert restored == profile
    assert all(profile.backfilled[f][1] == -1 for f in features)
    assert not any(f in profile.backfill_live for f in features)
    return changes


def test_a_part_of_another_run_fills_nothing() -> None:
    definition = SegmentDefinition.model_validate(
        {"id": NEW, "when": {"event": "Product Viewed", "window": "30d", "count": {"gte": 2}}}
    )
    engine = _engine([definition])
    engine.await_backfill(engine.new_features(_engine([])))
    (fid,) = engine.backfilling
    start = BASE
    events = [SegmentEvent(f"m{n}", start + n * H, "Product Viewed", "web") for n in range(3)]
    entries = history_entries([engine.features[fid]], events, CATALOG)
    profile = Profile("a")
    (part,) = split_parts("run-1", "a", (fid,), entries, 100)
    changes, count = engine.backfill(profile, part, start + 4 * H)
    assert count == 3 and [(c.segment_id, c.entered, c.trigger) for c in changes] == [(NEW, True, "backfill")]
    (other,) = split_parts("run-2", "a", (fid,), entries, 100)
    assert engine.backfill(profile, other, start + 4 * H) == ([], 0)
    assert list(profile.windowed[fid]) == [e.timestamp_ms for e in events]


def test_live_events_awaiting_backfill_are_not_counted_twice() -> None:
    definition = SegmentDefinition.model_validate(
        {"id": NEW, "when": {"event": "Product Viewed", "window": "30d", "count": {"gte": 3}}}
    )
    engine = _engine([definition])
    engine.await_backfill(engine.new_features(_engine([])))
    (fid,) = engine.backfilling
    start = BASE
    events = [SegmentEvent(f"m{n}", start + n * H, "Product Viewed", "web") for n in range(2)]
    profile = Profile("a")
    assert engine.apply(profile, events[1], start + 2 * H) == []  # live, and also in the history read
    (part,) = split_parts("run-1", "a", (fid,), history_entries([engine.features[fid]], events, CATALOG), 10)
    assert engine.backfill(profile, part, start + 3 * H) == ([], 1)
    assert len(profile.windowed[fid]) == 2
    assert engine.apply(profile, SegmentEvent("m2", start + 3 * H, "Product Viewed", "web"), start + 3 * H)
