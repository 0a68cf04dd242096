"""Retention of inactive persons (streams/domain/segments/inactivity.py), against a reference model.

A driver plays the segment stage's part: it applies events, and fires the profile's timer at its due
(removing the person when the policy says it is inactive, as ``SegmentStep._retire`` does). The
reference model knows only each life's newest event time and whether it carried a contact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.domain.segments.changes import Change
from streams.domain.segments.engine import SegmentEngine
from streams.domain.segments.events import SegmentEvent
from streams.domain.segments.inactivity import DAY_MS, InactivityPolicy, counters_of
from streams.domain.segments.model import SegmentDefinition
from streams.domain.segments.profile import Profile

T0 = 1_717_200_000_000
DEFINITIONS = [
    {"id": "visitor", "when": {"event": "Page Viewed"}},  # all time: only retention exits it
    {"id": "recent", "when": {"event": "Page Viewed", "window": "3d"}},
    {"id": "buyer", "when": {"event": "Order Completed"}},
]


def engine_for(policy: InactivityPolicy | None) -> SegmentEngine:
    definitions = [(SegmentDefinition.model_validate(d), 1) for d in DEFINITIONS]
    return SegmentEngine(definitions, inactivity=policy)


@dataclass
class Reference:
    """A life of the person: its newest event time and whether any event named a contact."""

    policy: InactivityPolicy
    last: int | None = None
    known: bool = False

    def deadline(self) -> int | None:
        if self.last is None or (self.policy.applies_to == "anonymous" and self.known):
            return None
        grain = max(1000, self.policy.after_ms // 100)
        return -(-(self.last + self.policy.after_ms) // grain) * grain

    def inactive(self, now: int) -> bool:
        deadline = self.deadline()
        return deadline is not None and now >= deadline


@dataclass
class Driver:
    engine: SegmentEngine
    policy: InactivityPolicy
    now: int = T0
    profile: Profile = field(default_factory=lambda: Profile("p"))
    changes: list[Change] = field(default_factory=list)
    removals: list[int] = field(default_factory=list)

    def apply(self, event: SegmentEvent) -> None:
        self.changes += self.engine.apply(self.profile, event, self.now)

    def advance(self, until: int) -> None:
        """Fire the timer at each due up to ``until`` (the stage's ``_fire_timers``)."""
        while self.profile.due and self.profile.due <= until:
            self.now = max(self.now, self.profile.due)
            if self.policy.inactive(self.profile, self.now):
                self.changes += self.engine.retire(self.profile, self.now)
                self.removals.append(self.now)
                self.profile = counters_of(self.profile) or Profile("p")
            else:
                self.changes += self.engine.tick(self.profile, self.now)
        self.now = max(self.now, until)


steps = st.lists(
    st.tuples(
        st.integers(0, 12 * DAY_MS),  # time passing before the step
        st.sampled_from(["Page Viewed", "Order Completed", None]),  # None: time only
        st.integers(0, 12 * DAY_MS),  # how late the event arrives (its timestamp is older)
        st.booleans(),  # it names the person's email
    ),
    max_size=25,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=steps,
    days=st.sampled_from([0.5, 2.0, 5.0]),
    applies_to=st.sampled_from(["anonymous", "all"]),
)
def test_inactive_person_is_removed_on_time_and_returns_fresh(
    steps: list[tuple[int, str | None, int, bool]], days: float, applies_to: str
) -> None:
    policy = InactivityPolicy.from_days(days, "all" if applies_to == "all" else "anonymous")
    driver = Driver(engine_for(policy), policy)
    plain = engine_for(None)  # the same definitions without the policy
    reference = Reference(policy)
    arrival = T0  # when the life's newest event was applied
    for index, (wait, name, late, known) in enumerate(steps):
        removed_before = len(driver.removals)
        deadline = reference.deadline()
        driver.advance(driver.now + wait)
        if deadline is not None:
            # At its deadline; at the next tick when its newest event arrived already too old.
            expected = deadline if deadline > arrival else arrival + 1
            if expected <= driver.now:
                assert driver.removals[removed_before:] == [expected]
                assert not driver.profile.current_members()
                reference = Reference(policy)
            else:
                assert len(driver.removals) == removed_before
        else:
            assert len(driver.removals) == removed_before  # a known person (anonymous policy) stays
        # Never inactive without being removed (the due holds the retention deadline), but for the
        # moment between an event that arrived already too old and the next tick.
        if policy.inactive(driver.profile, driver.now):
            assert driver.profile.due == driver.now + 1
        if name is None:
            continue
        ts = driver.now - late
        identifiers = ("email:jane@example.com",) if known else ()
        event = SegmentEvent(
            message_id=f"m{index}", timestamp_ms=ts, name=name, channel="web", identifiers=identifiers
        )
        driver.apply(event)
        reference.last = ts if reference.last is None else max(reference.last, ts)
        reference.known = reference.known or known
        arrival = driver.now
        assert policy.deadline(driver.profile) == reference.deadline()
        # The due is the earlier of the segments' own next deadline and the retention deadline (the
        # next tick when that has passed already).
        wanted = [plain.next_deadline(driver.profile, driver.now)]
        if reference.deadline() is not None:
            wanted.append(max(reference.deadline() or 0, driver.now + 1))
        assert driver.profile.due == min((d for d in wanted if d is not None), default=0)
    # Across lives, each membership's changes alternate entered/exited and count 1, 2, 3, ...
    seqs: dict[str, list[tuple[int, bool]]] = {}
    for change in driver.changes:
        seqs.setdefault(change.segment_id, []).append((change.seq, change.entered))
    for segment_id, flips in seqs.items():
        assert [seq for seq, _ in flips] == list(range(1, len(flips) + 1)), segment_id
        assert all(entered == (seq % 2 == 1) for seq, entered in flips), segment_id
    # Retention changes are exits, made only at removals.
    retention = [c for c in driver.changes if c.trigger == "retention"]
    assert all(not c.entered and c.at in driver.removals for c in retention)


def test_period_zero_never_removes() -> None:
    policy = InactivityPolicy.from_days(0)
    profile = Profile("p", last_ts=T0)
    assert not policy.enabled
    assert policy.deadline(profile) is None
    assert not policy.inactive(profile, T0 + 10_000 * DAY_MS)
    assert engine_for(policy).inactivity is None


def test_negative_period_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="0 \\(never\\) or more days"):
        InactivityPolicy.from_days(-1)


def test_known_person_is_kept_under_anonymous_policy() -> None:
    policy = InactivityPolicy.from_days(1)
    profile = Profile("p", last_ts=T0)
    assert policy.deadline(profile) == T0 + DAY_MS
    profile.contacts["email"] = ["jane@example.com", T0]
    assert policy.deadline(profile) is None
    assert InactivityPolicy.from_days(1, "all").deadline(profile) == T0 + DAY_MS


def test_counters_of_keeps_only_transition_counts() -> None:
    engine = engine_for(InactivityPolicy.from_days(1))
    profile = Profile("p", offsets={"r": 41})
    event = SegmentEvent(message_id="m1", timestamp_ms=T0, name="Page Viewed", channel="web")
    engine.apply(profile, event, T0)
    assert sorted(profile.current_members()) == ["recent", "visitor"]
    assert counters_of(Profile("q")) is None
    exits = engine.retire(profile, T0 + DAY_MS)
    assert [(c.segment_id, c.seq, c.trigger) for c in exits] == [
        ("recent", 2, "retention"),
        ("visitor", 2, "retention"),
    ]
    left = counters_of(profile)
    assert left is not None
    assert left.members == {"recent": 2, "visitor": 2} and left.last_ts is None and not left.windowed
    assert left.offsets == {"r": 41} and not left.seen and not left.versions
    # Back: a new life whose entries continue the counts.
    back = SegmentEvent(message_id="m2", timestamp_ms=T0 + 30 * DAY_MS, name="Page Viewed", channel="web")
    again = engine.apply(left, back, T0 + 30 * DAY_MS)
    assert sorted((c.segment_id, c.seq, c.entered) for c in again) == [
        ("recent", 3, True),
        ("visitor", 3, True),
    ]
