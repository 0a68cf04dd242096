"""Evaluation plans: which segments to evaluate, in dependency order, when an event arrives, when
the clock passes a deadline, or when definitions change.

A plan holds the segments an event's triggers reach and every segment that refers to them (the
closure over references), ordered so that a segment comes after those it refers to.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from streams.domain.segments.compiler import (
    ANY_EVENT,
    PURCHASE,
    SPECIAL_TRIGGERS,
    TRAITS,
    Compiled,
    Evaluation,
    PlanStep,
    holds,
)
from streams.domain.segments.events import PURCHASE_EVENTS, RETURN_EVENTS
from streams.domain.segments.model import SegmentDefinition
from streams.domain.segments.profile import Profile

# (event name, has traits, deadline passed, the triggers it fired)
PlanKey = tuple[str, bool, bool, tuple[str, ...]]
_CACHED_PLANS = 10_000  # per kind: feature combinations are bounded, but keep them so


class Planner:
    """The plans of one set of compiled definitions, cached by what an event did."""

    def __init__(
        self,
        order: list[str],
        definitions: Mapping[str, SegmentDefinition],
        versions: Mapping[str, int],
        compiled: Mapping[str, Compiled],
    ) -> None:
        """``order``: every segment id, each after the segments it refers to."""
        self.compiled = compiled
        self.position = {segment_id: index for index, segment_id in enumerate(order)}
        # dependents: a segment's change can change the segments that refer to it
        self.dependents: dict[str, set[str]] = {segment_id: set() for segment_id in order}
        for segment_id, one in compiled.items():
            for ref in one.refs:
                self.dependents[ref].add(segment_id)
        self.by_trigger: dict[str, set[str]] = {}
        for segment_id, one in compiled.items():
            for trigger in one.triggers:
                self.by_trigger.setdefault(trigger, set()).add(segment_id)
        self.timed: set[str] = self.closure(
            {
                sid
                for sid, one in compiled.items()
                if one.deadlines or any(feature.window is not None for feature in one.features)
            }
        )
        self._steps: dict[str, PlanStep] = {}
        for sid in order:
            definition = definitions[sid]
            suppression = definition.kind == "suppression"
            self._steps[sid] = (
                sid,
                None if suppression else compiled[sid].test,
                versions[sid],
                definition if suppression else None,
            )
        self._plans: dict[PlanKey, tuple[PlanStep, ...]] = {}
        # (the plan key, the features the event matched) -> a new person's first plan
        self._first_plans: dict[
            tuple[str, bool, bool, tuple[str, ...], tuple[str, ...]], tuple[PlanStep, ...]
        ] = {}
        self.timed_plan = self.plan(self.timed)
        self.all_plan = self.plan(order)
        # What every segment holds for a profile without any state (the same at any time).
        empty = Evaluation(Profile(""), 0)
        for segment_id, test, _, _ in self.all_plan:
            if test is not None:
                empty.member[segment_id] = test(empty)
        self._empty = empty.member

    def plan(self, segment_ids: Iterable[str]) -> tuple[PlanStep, ...]:
        steps = self._steps
        return tuple(steps[sid] for sid in sorted(segment_ids, key=self.position.__getitem__))

    def closure(self, segment_ids: set[str]) -> set[str]:
        """``segment_ids`` and every segment that refers to one of them, directly or not."""
        found = set(segment_ids)
        stack = list(segment_ids)
        while stack:
            for dependent in self.dependents[stack.pop()]:
                if dependent not in found:
                    found.add(dependent)
                    stack.append(dependent)
        return found

    def for_event(self, key: PlanKey) -> tuple[PlanStep, ...]:
        plan = self._plans.get(key)
        if plan is None:
            plan = self._event_plan(key)
            if len(self._plans) < _CACHED_PLANS:
                self._plans[key] = plan
        return plan

    def for_first_event(self, key: PlanKey, matched: list[str]) -> tuple[PlanStep, ...]:
        """The plan of an empty profile's first event (``matched``: the features it counted in)."""
        first_key = (*key, tuple(matched))
        plan = self._first_plans.get(first_key)
        if plan is None:
            plan = self._first_plan(key, set(matched))
            if len(self._first_plans) < _CACHED_PLANS:
                self._first_plans[first_key] = plan
        return plan

    def _first_plan(self, key: PlanKey, matched: set[str]) -> tuple[PlanStep, ...]:
        """The segments to evaluate for the first event of an empty profile (``matched``: the ids of
        the features the event was added to).

        Every segment is evaluated, in effect: those the event may change are, the others read
        nothing the event changed, so they hold what they hold for the empty profile. Those are the
        segments outside the event's plan, and in it those that read only behaviour features the
        event did not match (still empty) and segments of that kind. Of those, the ones that hold are
        entered (a constant test); the others stay out without a step (their refs read the stored
        membership, which is out too)."""
        affected = {step[0] for step in self._event_plan(key)}
        unchanged: set[str] = set()
        plan: list[PlanStep] = []
        for step in self.all_plan:
            segment_id, test, version, _ = step
            compiled = self.compiled[segment_id]
            if segment_id in affected and not (
                test is not None
                and not (compiled.triggers & SPECIAL_TRIGGERS)
                and not any(feature.id in matched for feature in compiled.features)
                and compiled.refs <= unchanged
            ):
                plan.append(step)
                continue
            unchanged.add(segment_id)
            if test is not None and self._empty[segment_id]:
                plan.append((segment_id, holds, version, None))
        return tuple(plan)

    def _event_plan(self, key: PlanKey) -> tuple[PlanStep, ...]:
        """The segments an event may change: (name, has traits, deadline passed, the triggers it fired:
        derived traits and features)."""
        name, traits, passed, tokens = key
        affected = set(self.by_trigger.get(ANY_EVENT, ()))
        if traits:
            affected |= self.by_trigger.get(TRAITS, set())
        if name in PURCHASE_EVENTS or name in RETURN_EVENTS:
            affected |= self.by_trigger.get(PURCHASE, set())
        for token in tokens:
            affected |= self.by_trigger.get(token, set())
        if passed:
            affected |= self.timed
        return self.plan(self.closure(affected))
