"""Segment conditions compiled to closures over one evaluation pass, with what triggers them.

A compiled condition is a test (``Evaluation -> bool``), the triggers that can change its value (an
event counted by one of its features, traits, purchases, any event, a derived trait that moved), the
deadlines at which it may change with the clock alone, its features and the segments it refers to.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from streams.domain.segments.comparisons import ordering, time_test
from streams.domain.segments.derived import Deadline, derived_deadlines, deriver
from streams.domain.segments.features import Feature
from streams.domain.segments.model import (
    TIME_DERIVED,
    AllOf,
    AnyOf,
    ContextCondition,
    DerivedCondition,
    EventCondition,
    NotOf,
    SegmentDefinition,
    SegmentRef,
    TraitCondition,
    walk,
)
from streams.domain.segments.profile import Profile

ANY_EVENT = "@any"
TRAITS = "@traits"
PURCHASE = "@purchase"
# Derived traits that change with any event are re-evaluated only when their value changed.
DERIVED_TRIGGERS = {
    "preferred_channel": "@pref:channel",
    "preferred_hour": "@pref:hour",
    "preferred_category": "@pref:category",
    "preferred_brand": "@pref:brand",
    "days_since_first_seen": "@first_seen",
}
# Triggers other than features: conditions on traits, every event, purchases, derived traits.
SPECIAL_TRIGGERS = frozenset({ANY_EVENT, TRAITS, PURCHASE, *DERIVED_TRIGGERS.values()})


class Evaluation:
    """One evaluation pass over a profile at ``now``: caches derived values, holds new memberships."""

    __slots__ = ("cache", "member", "members", "now", "profile", "totals", "windowed", "wvalues")

    def __init__(self, profile: Profile, now: int) -> None:
        self.profile = profile
        self.now = now
        self.member: dict[str, bool] = {}
        self.cache: dict[str, Any] = {}  # derived trait -> its value at ``now``
        # the profile's maps, one attribute lookup away for the compiled tests
        self.members = profile.members
        self.windowed = profile.windowed
        self.wvalues = profile.wvalues
        self.totals = profile.totals


Test = Callable[[Evaluation], bool]


@dataclass
class Compiled:
    test: Test
    triggers: set[str]
    deadlines: list[Deadline]
    features: list[Feature]
    refs: set[str]


# One segment of an evaluation plan: id, compiled test (None: a suppression audience), version, and
# for suppression audiences their definition.
PlanStep = tuple[str, Test | None, int, SegmentDefinition | None]


def trait_test(path: str, comparison: Callable[[Any], bool]) -> Test:
    head, _, rest = path.partition(".")
    parts = tuple(rest.split(".")) if rest else ()

    def test(ev: Evaluation) -> bool:
        entry = ev.profile.traits.get(head)
        if entry is None:
            return comparison(None)
        value = entry[0]
        for part in parts:
            if not isinstance(value, Mapping):
                return comparison(None)
            value = value.get(part)
        return comparison(value)

    return test


def all_of(tests: list[Test]) -> Test:
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        a, b = tests
        return lambda ev: a(ev) and b(ev)
    if len(tests) == 3:
        a, b, c = tests
        return lambda ev: a(ev) and b(ev) and c(ev)
    return lambda ev: all(t(ev) for t in tests)


def any_of(tests: list[Test]) -> Test:
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        a, b = tests
        return lambda ev: a(ev) or b(ev)
    if len(tests) == 3:
        a, b, c = tests
        return lambda ev: a(ev) or b(ev) or c(ev)
    return lambda ev: any(t(ev) for t in tests)


def occurrence_deadlines(feature: Feature, which: int, span: int) -> Deadline:
    fid = feature.id

    def deadline(profile: Profile, now: int) -> int | None:
        total = profile.totals.get(fid)
        if total is None:
            return None
        at = int(total[which]) + span + 1
        return at if at > now else None

    return deadline


def holds(ev: Evaluation) -> bool:
    return True


def needs_local_time(definition: SegmentDefinition) -> bool:
    """Whether ``definition`` reads the local time of events (context or preferred-hour conditions)."""
    found = False

    def visit(condition: Any) -> None:
        nonlocal found
        if isinstance(condition, ContextCondition) and condition.context.needs_local_time():
            found = True
        if isinstance(condition, DerivedCondition) and condition.derived == "preferred_hour":
            found = True

    if definition.when is not None:
        walk(definition.when, visit)
    return found


class ConditionCompiler:
    """Compiles conditions; equal behaviour features are shared across them (``features``, by id)."""

    def __init__(self, hemisphere: str) -> None:
        self.hemisphere = hemisphere
        self.features: dict[str, Feature] = {}

    def _feature(self, condition: EventCondition) -> Feature:
        feature = Feature(condition)
        return self.features.setdefault(feature.id, feature)

    def compile(self, condition: Any) -> Compiled:
        if isinstance(condition, AllOf | AnyOf):
            parts = [
                self.compile(child)
                for child in (condition.all if isinstance(condition, AllOf) else condition.any)
            ]
            tests = [p.test for p in parts]
            return Compiled(
                all_of(tests) if isinstance(condition, AllOf) else any_of(tests),
                set().union(*(p.triggers for p in parts)),
                [d for p in parts for d in p.deadlines],
                [f for p in parts for f in p.features],
                set().union(*(p.refs for p in parts)),
            )
        if isinstance(condition, NotOf):
            inner = self.compile(condition.not_)
            inner_test = inner.test
            return Compiled(
                lambda ev: not inner_test(ev), inner.triggers, inner.deadlines, inner.features, inner.refs
            )
        if isinstance(condition, TraitCondition):
            return Compiled(trait_test(condition.trait, condition.compile()), {TRAITS}, [], [], set())
        if isinstance(condition, DerivedCondition):
            name, check = condition.derived, condition.compile()
            triggers = {DERIVED_TRIGGERS.get(name, PURCHASE)}
            deadlines = [derived_deadlines(name, condition.thresholds())] if name in TIME_DERIVED else []
            derive = deriver(name)

            def derived_test(ev: Evaluation) -> bool:
                cache = ev.cache
                if name in cache:
                    return check(cache[name])
                value = cache[name] = derive(ev.profile, ev.now)
                return check(value)

            return Compiled(derived_test, triggers, deadlines, [], set())
        if isinstance(condition, ContextCondition):
            filters = condition.context
            channels = frozenset(filters.channel) if filters.channel is not None else None
            devices = frozenset(filters.device_type) if filters.device_type is not None else None
            timed = time_test(filters)
            hemisphere = self.hemisphere

            def context_test(ev: Evaluation) -> bool:
                last = ev.profile.last_context
                if last is None:
                    return False
                channel, device, hour, weekday, month = last
                if channels is not None and channel not in channels:
                    return False
                if devices is not None and device not in devices:
                    return False
                if timed is None:
                    return True
                if hour is None:
                    return False  # the newest event came before any definition needed local time
                return timed(hour, weekday, month, hemisphere)

            return Compiled(context_test, {ANY_EVENT}, [], [], set())
        if isinstance(condition, SegmentRef):
            ref = condition.segment

            def ref_test(ev: Evaluation) -> bool:
                member = ev.member.get(ref)
                if member is not None:
                    return member
                return ev.members.get(ref, 0) % 2 == 1

            return Compiled(ref_test, set(), [], [], {ref})
        if isinstance(condition, EventCondition):
            return self._compile_event(condition)
        raise TypeError(f"unknown condition {type(condition).__name__}")

    def _compile_event(self, condition: EventCondition) -> Compiled:
        feature = self._feature(condition)
        measure = condition.measure
        deadlines: list[Deadline] = []
        test: Test
        fid, window, valued = feature.id, feature.window, feature.valued
        if measure in ("first", "last"):
            occurrence = condition.first if measure == "first" else condition.last
            assert occurrence is not None
            which = 4 if measure == "first" else 5
            within = occurrence.within is not None
            span = occurrence.within if occurrence.within is not None else (occurrence.older_than or 0)
            # the language allows first/last only without a window (EventCondition's validation)
            assert window is None, "a first/last condition has no window"

            def test(ev: Evaluation) -> bool:
                total = ev.totals.get(fid)
                if total is None:
                    return False
                age: int = ev.now - total[which]
                return age <= span if within else age > span

            deadlines.append(occurrence_deadlines(feature, which, span))
            return Compiled(test, {feature.trigger}, deadlines, [feature], set())
        comparison = getattr(condition, measure) if measure != "count" else condition.count
        check: Callable[[Any], bool] = (
            comparison.compile() if comparison is not None else (lambda value: value >= 1)
        )
        # check(x) is op(x, bound) for the numbers a measure takes, when op is not None
        op, bound = ordering(comparison)
        # With no matching event counted: count 0, sum 0.0, min and max undefined.
        empty = check(None) if measure in ("min", "max") else check(0 if measure == "count" else 0.0)
        if window is None:
            index = {"count": 0, "sum": 1, "min": 2, "max": 3}[measure]
            undefined = measure in ("min", "max")  # with a count of 0

            def test(ev: Evaluation) -> bool:
                total = ev.totals.get(fid)
                if total is None or (undefined and not total[0]):
                    return empty
                return op(total[index], bound) if op is not None else check(total[index])
        else:
            # The windowed stats, pruning expired events as Feature.stats does (time only moves forward).
            of_values: Callable[[Any], Any] = sum if measure == "sum" else min if measure == "min" else max
            counts = measure == "count"
            unvalued = 1.0 if measure in ("min", "max") else None
            bisect_right = bisect.bisect_right

            def test(ev: Evaluation) -> bool:
                times = ev.windowed.get(fid)
                if not times:
                    return empty
                cutoff = ev.now - window
                if times[0] <= cutoff:  # some expired, for good: time only moves forward
                    start = bisect_right(times, cutoff)
                    del times[:start]
                    if valued:
                        del ev.wvalues[fid][:start]
                    if not times:
                        return empty
                if counts:
                    value: Any = len(times)
                elif valued:
                    value = of_values(ev.wvalues[fid])
                else:
                    value = float(len(times)) if unvalued is None else unvalued
                return op(value, bound) if op is not None else check(value)

        return Compiled(test, {feature.trigger}, deadlines, [feature], set())
