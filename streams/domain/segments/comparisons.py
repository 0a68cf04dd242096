"""Comparisons compiled to plain predicates where the general ``Comparison.test`` is not needed."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from streams.domain.segments.events import season
from streams.domain.segments.model import ORDERINGS, WEEKDAYS, Comparison, ContextFilter


def ordering(comparison: Comparison | None) -> tuple[Callable[[Any, Any], bool] | None, Any]:
    """(op, bound) with ``comparison.test(x) == op(x, bound)`` for every int or float ``x``, if there
    is one: a single gt / gte / lt / lte (no comparison: a count of at least one)."""
    if comparison is None:
        return operator.ge, 1
    if comparison.exists is False or any(
        getattr(comparison, name) is not None for name in ("eq", "ne", "in_", "not_in", "between", "contains")
    ):
        return None, None
    given = [(name, getattr(comparison, name)) for name in ORDERINGS if getattr(comparison, name) is not None]
    if len(given) != 1:
        return None, None
    name, bound = given[0]
    return ORDERINGS[name], bound


def numeric(comparison: Comparison) -> Callable[[Any], bool]:
    """A predicate equal to ``comparison.test`` on ints (the local hour)."""
    op, bound = ordering(comparison)
    if op is not None:
        return lambda value: op(value, bound)
    between = comparison.between
    if between is not None and not (comparison.model_fields_set & _OTHER_TESTS):
        low, high = between
        return lambda value: low <= value <= high
    return comparison.compile()


_OTHER_TESTS = {"eq", "ne", "gt", "gte", "lt", "lte", "in_", "not_in", "contains", "exists"}

TimeTest = Callable[[int, int, int, str], bool]  # (local hour, weekday, month, hemisphere)


def time_test(filters: ContextFilter) -> TimeTest | None:
    """The local-time part of ``filters`` as one predicate (None: it has no local-time filter)."""
    if not filters.needs_local_time():
        return None
    hour_check = numeric(filters.local_hour) if filters.local_hour is not None else None
    weekdays = frozenset(filters.weekday) if filters.weekday is not None else None
    months = frozenset(filters.month) if filters.month is not None else None
    seasons = frozenset(filters.season) if filters.season is not None else None

    def test(hour: int, weekday: int, month: int, hemisphere: str) -> bool:
        if hour_check is not None and not hour_check(hour):
            return False
        if weekdays is not None and WEEKDAYS[weekday] not in weekdays:
            return False
        if months is not None and month not in months:
            return False
        return seasons is None or season(month, hemisphere) in seasons

    return test
