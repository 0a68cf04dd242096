"""The segment engine's fast paths equal the plain computations they replace."""

from __future__ import annotations

import dataclasses
import sys
from array import array

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.domain.segments.changes import Change, make_change
from streams.domain.segments.comparisons import ordering
from streams.domain.segments.derived import argmax, bump_count
from streams.domain.segments.engine import SegmentEngine, seen_before
from streams.domain.segments.events import SegmentEvent, local_time
from streams.domain.segments.model import Comparison, SegmentDefinition
from streams.domain.segments.preparation import utc_time
from streams.domain.segments.profile import Profile


@settings(max_examples=2000, deadline=None)
@given(st.integers(-(2**41), 2**42))
def test_utc_time_by_arithmetic_equals_local_time(ts: int) -> None:
    assert utc_time(ts) == local_time(ts, None, "UTC")


def test_utc_time_at_day_and_month_edges() -> None:
    for ts in (0, -1, 86_399_999, 86_400_000, 951_782_400_000, 1_709_164_800_000 - 1, 1_709_164_800_000):
        assert utc_time(ts) == local_time(ts, None, "UTC")


def _leader_changed(counts: dict[str, int], key: str) -> bool:
    """The plain definition: the most frequent key (ties: the smallest) before and after counting."""
    before = argmax(counts)
    counts[key] = counts.get(key, 0) + 1
    return before != argmax(counts)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from("abcde"), max_size=30))
def test_bump_reports_a_new_leader(keys: list[str]) -> None:
    counts: dict[str, int] = {}
    plain: dict[str, int] = {}
    for key in keys:
        assert bump_count(counts, key) == _leader_changed(plain, key)
    assert counts == plain


def test_argmax_takes_the_smallest_of_the_most_frequent() -> None:
    assert argmax({}) is None
    assert argmax({"web": 2, "app": 2, "email": 1}) == "app"
    assert argmax({"web": 3, "app": 2}) == "web"


def test_change_built_through_its_slots_equals_the_dataclass() -> None:
    args = ("p", "s", "product:x", True, 3, 1_700_000_000_000, "event", "entered: event 'x'", "m", 2)
    made = make_change(*args)
    assert type(made) is Change
    assert made == Change(*args)
    assert dataclasses.astuple(made) == args
    assert hash(made) == hash(Change(*args))


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from(["gt", "gte", "lt", "lte", "eq", "ne", "between"]),
    st.sampled_from([0, 1, 2.5, 3]),
    st.one_of(st.integers(-5, 5), st.floats(-5, 5), st.just(float("nan"))),
)
def test_ordering_agrees_with_the_comparison(op_name: str, bound: float, value: float) -> None:
    comparison = Comparison.model_validate({op_name: [bound, bound + 1] if op_name == "between" else bound})
    op, limit = ordering(comparison)
    if op is not None:
        assert op(value, limit) == comparison.test(value)
    else:
        assert op_name in ("eq", "ne", "between")


@settings(max_examples=500, deadline=None)
@given(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=70), st.integers(-(2**63), 2**63 - 1))
def test_seen_equals_membership(values: list[int], digest: int) -> None:
    seen = array("q", values)
    assert seen_before(seen, digest) == (digest in seen)
    if values:
        assert seen_before(seen, values[-1])


def test_seen_ignores_bytes_across_two_entries() -> None:
    seen = array("q", list(range(1, 40)))
    raw = seen.tobytes()
    across = int.from_bytes(raw[4:12], sys.byteorder, signed=True)  # half of one entry, half of the next
    assert across not in seen
    assert not seen_before(seen, across)


def test_an_event_evaluates_only_the_behaviour_rules_whose_filters_it_passed() -> None:
    """A later event re-evaluates a behaviour rule only if the rule's feature counted it: a web page
    view cannot change "viewed on the app" (what it reads did not change, and its expiry is the
    timers'), nor the rule that refers to it."""
    engine = SegmentEngine(
        [
            (SegmentDefinition.model_validate(d), 1)
            for d in (
                {"id": "web-views", "when": {"event": "page", "channel": "web", "window": "1d"}},
                {"id": "app-views", "when": {"event": "page", "channel": "app", "window": "1d"}},
                {"id": "app-fan", "when": {"segment": "app-views"}},
                {"id": "ever-viewed", "when": {"event": "page"}},
            )
        ]
    )
    now = 1_717_200_000_000
    profile = Profile("p")
    page = SegmentEvent(message_id="m1", timestamp_ms=now, name="page", channel="app")
    assert [c.segment_id for c in engine.apply(profile, page, now)] == ["app-views", "app-fan", "ever-viewed"]
    assert not engine.planner._plans  # the first event of a profile evaluates every segment (its own plans)
    web = SegmentEvent(message_id="m2", timestamp_ms=now + 1, name="page", channel="web")
    assert [c.segment_id for c in engine.apply(profile, web, now + 1)] == ["web-views"]
    (plan,) = engine.planner._plans.values()  # the one plan the second event used
    assert sorted(step[0] for step in plan) == ["ever-viewed", "web-views"]
