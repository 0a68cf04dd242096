"""Windowed and lifetime features: what one behaviour condition needs remembered of a person's events."""

from __future__ import annotations

import bisect
import hashlib
import math
import sys
from array import array
from collections.abc import Callable, Iterable

from streams.domain.segments.comparisons import time_test
from streams.domain.segments.events import event_revenue
from streams.domain.segments.model import ContextFilter, EventCondition
from streams.domain.segments.preparation import (
    NUMBER,
    Line,
    Prepared,
    property_path,
    property_value,
    value_at,
)
from streams.domain.segments.profile import Profile

# A behaviour condition is triggered by an event its feature counted (the prefix and the feature's
# id), not by every event of its name: one that did not pass its filters cannot change what it reads
# (and time passing is the timers' and the "deadline passed" plans').
FEATURE_TRIGGER = "@f:"


class Feature:
    """What one behaviour condition needs remembered; equal specs share one feature (by id)."""

    def __init__(self, condition: EventCondition) -> None:
        spec = condition.feature_spec()
        self.id = sys.intern("f" + hashlib.sha1(repr(sorted(spec.items())).encode()).hexdigest()[:12])
        # what an event this feature counted triggers: the segments whose conditions read it
        self.trigger = sys.intern(FEATURE_TRIGGER + self.id)
        self.names = frozenset(condition.event)
        self.where = dict(condition.where)
        self.product = condition.product
        self.context = ContextFilter.model_validate(
            condition.model_dump(include=set(ContextFilter.model_fields), exclude_none=True)
        )
        self.has_context = not self.context.is_empty()
        self.channels = frozenset(self.context.channel) if self.context.channel is not None else None
        self.has_other_context = self.has_context and bool(self.context.model_fields_set - {"channel"})
        wanted = condition.product
        self._ids = frozenset(wanted.id) if wanted and wanted.id is not None else None
        self._categories = (
            frozenset(c.lower() for c in wanted.category) if wanted and wanted.category is not None else None
        )
        self._brands = (
            frozenset(b.lower() for b in wanted.brand) if wanted and wanted.brand is not None else None
        )
        self.where_checks = tuple((path, comparison.compile()) for path, comparison in self.where.items())
        self.value_of: str | None = spec["of"]
        self.window: int | None = condition.window
        self.valued = self.value_of is not None
        self.match = self._compile_match()
        # a product filter that a line without category and brand (category and brand keys "") can pass
        self.takes_blank_lines = (self._categories is None or "" in self._categories) and (
            self._brands is None or "" in self._brands
        )
        # every event with one of the names (on one of the channels) counts 1
        self.counts_all = (
            not self.where_checks and not self.has_other_context and self.product is None and not self.valued
        )

    def value(self, prepared: Prepared, lines: Iterable[Line]) -> float | None:
        """The event's contribution (1 for counts; None: it has no value to sum)."""
        of = self.value_of
        if of is None:
            return 1.0
        if of == "revenue":
            if self.product is None:
                return event_revenue(prepared.event)
            return sum(line.quantity * line.price for line in lines if line.price is not None)
        if of == "quantity":
            return sum(line.quantity for line in lines)
        raw = property_value(prepared.event.properties, of)
        if isinstance(raw, bool) or not isinstance(raw, NUMBER) or math.isnan(raw):
            return None
        return float(raw)

    def _compile_match(self) -> Callable[[Prepared], float | None]:
        """``match(prepared)``: the event's value when it passes every filter, else None.

        Filters run in this order: channel, ``where``, the rest of the context, products."""
        channels = self.channels
        where = tuple((property_path(path), check) for path, check in self.where_checks)
        context = self.context if self.has_other_context else None
        devices = frozenset(context.device_type) if context and context.device_type is not None else None
        timed = time_test(context) if context is not None else None
        product = self.product
        ids, categories, brands = self._ids, self._categories, self._brands
        value = self.value
        counts = self.value_of is None

        def match(prepared: Prepared) -> float | None:
            event = prepared.event
            if channels is not None and event.channel not in channels:
                return None
            if where:
                properties = event.properties
                for keys, check in where:
                    if not check(value_at(properties, keys)):
                        return None
            if devices is not None and prepared.device not in devices:
                return None
            if timed is not None:
                hour, weekday, month = prepared.local_time()
                if not timed(hour, weekday, month, prepared.hemisphere):
                    return None
            if product is None:
                return 1.0 if counts else value(prepared, prepared.lines)
            if not prepared.lines:
                return None
            # Product ids compare exactly; category and brand names case-insensitively (docs/segments.md).
            if counts:
                for line in prepared.lines:
                    if (
                        (ids is None or line.product_id in ids)
                        and (categories is None or line.category_key in categories)
                        and (brands is None or line.brand_key in brands)
                    ):
                        return 1.0
                return None
            found = [
                line
                for line in prepared.lines
                if (ids is None or line.product_id in ids)
                and (categories is None or line.category_key in categories)
                and (brands is None or line.brand_key in brands)
            ]
            return value(prepared, found) if found else None

        return match

    def add(self, profile: Profile, ts: int, value: float, now: int) -> None:
        window = self.window
        if window is not None:
            if ts <= now - window:
                return  # already outside the window, and time only moves forward
            fid = self.id
            windowed = profile.windowed
            times = windowed.get(fid)
            if times is None:
                times = windowed[fid] = array("q")
            if not times or ts >= times[-1]:
                at = len(times)
                times.append(ts)
            else:
                at = bisect.bisect_right(times, ts)
                times.insert(at, ts)
            if self.valued:
                values = profile.wvalues.get(fid)
                if values is None:
                    values = profile.wvalues[fid] = array("d")
                values.insert(at, value)
            return
        total = profile.totals.get(self.id)
        if total is None:
            profile.totals[self.id] = [1, value, value, value, ts, ts]
            return
        total[0] += 1
        total[1] += value
        total[2] = min(total[2], value)
        total[3] = max(total[3], value)
        total[4] = min(total[4], ts)
        total[5] = max(total[5], ts)
