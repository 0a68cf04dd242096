"""A deliberately naive reference model of segment membership, for the property tests.

It shares no code with ``streams.domain.segments.engine``: it keeps a person's full list of
``(applied_at, event)`` pairs and recomputes every rule from scratch at the asked time ``t``, straight
from docs/segments.md. It reuses only the definition models (and their ``Comparison.test``), the
small helpers of ``events.py`` (device class, local time, season, event revenue) and the catalog.

Semantics, as the spec states them:

- an event counts from ``applied_at`` on, with the effective timestamp ``min(timestamp, applied_at)``
  (late events keep their own time, future-dated ones are clamped); a message id counts once (its
  first application);
- a window ``W`` holds events with ``t - W < ts <= t``; ``first``/``last`` look at all of history;
  ``within D`` means ``t - moment <= D`` and ``older_than D`` means ``t - moment > D`` (the engine's
  boundary: the spec does not fix it, see the report on ``last`` versus ``window``);
- a product filter compares ids exactly, categories and brands case-insensitively;
- traits and the context are those of the newest event by effective time, ties going to the event
  applied later (in the list's order);
- a person without any event counted at ``t`` is a member of nothing.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from streams.domain.catalog import Catalog
from streams.domain.revenue import signed_revenue
from streams.domain.segments.events import (
    LineItem,
    SegmentEvent,
    device_class,
    event_revenue,
    local_time,
    season,
)
from streams.domain.segments.model import (
    DAY_MS,
    WEEKDAYS,
    AllOf,
    AnyOf,
    ContextCondition,
    ContextFilter,
    DerivedCondition,
    EventCondition,
    NotOf,
    SegmentDefinition,
    SegmentRef,
    TraitCondition,
)

SEP = "\x1f"
PURCHASES = ("Order Completed",)
RETURNS = ("Order Refunded", "Product Returned")
History = Sequence[tuple[int, SegmentEvent]]


@dataclass(frozen=True)
class Line:
    product_id: str
    category: str | None
    brand: str | None
    quantity: float
    price: float | None


@dataclass(frozen=True)
class Counted:
    """One event as counted at ``t``: its effective time and its place in the application order."""

    ts: int
    order: int
    event: SegmentEvent


def _text(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        return value if value.strip() else None
    if isinstance(value, int):
        return str(value)
    return None


def _lower(value: str | None) -> str | None:
    return value.lower() if value is not None else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return None if math.isnan(value) else float(value)


class ReferenceSegments:
    def __init__(
        self,
        definitions: Iterable[SegmentDefinition],
        catalog: Catalog | None = None,
        *,
        timezone: str = "UTC",
        hemisphere: str = "north",
    ) -> None:
        self.definitions = {d.id: d for d in definitions}
        self.catalog = catalog or Catalog()
        self.timezone = timezone
        self.hemisphere = hemisphere

    # -- what counts at t ------------------------------------------------------------------------

    @staticmethod
    def counted(history: History, t: int) -> list[Counted]:
        seen: set[str] = set()
        found = []
        for order, (applied_at, event) in enumerate(history):
            if event.message_id in seen:
                continue
            seen.add(event.message_id)
            if applied_at <= t:
                found.append(Counted(min(event.timestamp_ms, applied_at), order, event))
        return found

    def lines(self, event: SegmentEvent) -> list[Line]:
        """The event's lines through the catalog (a Product Viewed without lines: its one product)."""
        raw = list(event.lines)
        if not raw:
            props = event.properties
            pid = _text(props.get("product_id")) or _text(props.get("productId"))
            app = event.channel == "app"
            sku = _text(props.get("sku")) or (None if app else pid)
            ean = _text(props.get("ean"))
            app_id = pid if app else None
            if sku or ean or app_id:
                qty = _number(props.get("quantity"))
                raw = [LineItem(sku, ean, app_id, 1.0 if qty is None else qty, _number(props.get("price")))]
        found = []
        for item in raw:
            product = self.catalog.lookup(sku=item.sku, ean=item.ean, app_product_id=item.app_product_id)
            if product is not None:
                price = item.unit_price if item.unit_price is not None else product.price
                found.append(Line(product.product_id, product.category, product.brand, item.quantity, price))
            elif item.sku:
                found.append(Line(f"sku:{item.sku}", None, None, item.quantity, item.unit_price))
            elif item.ean:
                found.append(Line(f"ean:{item.ean}", None, None, item.quantity, item.unit_price))
            elif item.app_product_id:
                found.append(Line(f"app:{item.app_product_id}", None, None, item.quantity, item.unit_price))
        return found

    def local(self, counted: Counted) -> tuple[int, int, int]:
        return local_time(counted.ts, counted.event.timezone, self.timezone)

    def context_passes(self, filters: ContextFilter, counted: Counted) -> bool:
        event = counted.event
        if filters.channel is not None and event.channel not in filters.channel:
            return False
        device = device_class(event.device_type, event.user_agent, event.channel)
        if filters.device_type is not None and device not in filters.device_type:
            return False
        hour, weekday, month = self.local(counted)
        if filters.local_hour is not None and not filters.local_hour.test(hour):
            return False
        if filters.weekday is not None and WEEKDAYS[weekday] not in filters.weekday:
            return False
        if filters.month is not None and month not in filters.month:
            return False
        return filters.season is None or season(month, self.hemisphere) in filters.season

    # -- membership ------------------------------------------------------------------------------

    def members(self, history: History, t: int) -> set[str]:
        """Every membership key (``segment`` or ``segment\\x1fsubject``) of the person at ``t``."""
        events = self.counted(history, t)
        if not events:
            return set()
        found: set[str] = set()
        memo: dict[str, bool] = {}
        for segment_id, definition in self.definitions.items():
            if definition.kind == "suppression":
                found |= {f"{segment_id}{SEP}{s}" for s in self.suppressed(definition, events)}
            elif self.segment(segment_id, events, t, memo):
                found.add(segment_id)
        return found

    def segment(self, segment_id: str, events: list[Counted], t: int, memo: dict[str, bool]) -> bool:
        if segment_id not in memo:
            when = self.definitions[segment_id].when
            memo[segment_id] = self.holds(when, events, t, memo)
        return memo[segment_id]

    def suppressed(self, definition: SegmentDefinition, events: list[Counted]) -> set[str]:
        net: dict[str, float] = {}
        bought: dict[str, float] = {}
        for counted in events:
            name = counted.event.name
            if name not in PURCHASES and name not in RETURNS:
                continue
            sign = 1.0 if name in PURCHASES else -1.0
            for line in self.lines(counted.event):
                key = line.product_id if definition.per == "product" else line.category
                if key is None:
                    continue
                net[key] = net.get(key, 0.0) + sign * line.quantity
                if sign > 0:
                    bought[key] = bought.get(key, 0.0) + line.quantity
        held = net if definition.returns_exit else bought
        return {f"{definition.per}:{key}" for key, qty in held.items() if qty > 0}

    def holds(self, condition: Any, events: list[Counted], t: int, memo: dict[str, bool]) -> bool:
        if isinstance(condition, AllOf):
            return all(self.holds(c, events, t, memo) for c in condition.all)
        if isinstance(condition, AnyOf):
            return any(self.holds(c, events, t, memo) for c in condition.any)
        if isinstance(condition, NotOf):
            return not self.holds(condition.not_, events, t, memo)
        if isinstance(condition, SegmentRef):
            return self.segment(condition.segment, events, t, memo)
        if isinstance(condition, TraitCondition):
            return condition.test(self.trait(events, condition.trait))
        if isinstance(condition, DerivedCondition):
            return condition.test(self.derived(events, condition.derived, t))
        if isinstance(condition, ContextCondition):
            newest = max(events, key=lambda c: (c.ts, c.order))
            return self.context_passes(condition.context, newest)
        if isinstance(condition, EventCondition):
            return self.behaviour(condition, events, t)
        raise TypeError(condition)

    @staticmethod
    def trait(events: list[Counted], path: str) -> Any:
        head, _, rest = path.partition(".")
        carrying = [c for c in events if head in c.event.traits]
        if not carrying:
            return None
        value = max(carrying, key=lambda c: (c.ts, c.order)).event.traits[head]
        for part in rest.split(".") if rest else ():
            value = value.get(part) if isinstance(value, Mapping) else None
        return value

    def value(self, condition: EventCondition, counted: Counted) -> tuple[bool, float | None]:
        """Whether the event matches the condition's filters, and its value for the measure."""
        event = counted.event
        if event.name not in condition.event:
            return False, None
        for path, comparison in condition.where.items():
            value: Any = event.properties
            for part in path.removeprefix("properties.").split("."):
                value = value.get(part) if isinstance(value, Mapping) else None
            if not comparison.test(value):
                return False, None
        own = ContextFilter.model_validate(
            condition.model_dump(include=set(ContextFilter.model_fields), exclude_none=True)
        )
        if not self.context_passes(own, counted):
            return False, None
        lines = self.lines(event)
        wanted = condition.product
        if wanted is not None:
            lines = [
                line
                for line in lines
                if (wanted.id is None or line.product_id in wanted.id)
                and (wanted.category is None or _lower(line.category) in {c.lower() for c in wanted.category})
                and (wanted.brand is None or _lower(line.brand) in {b.lower() for b in wanted.brand})
            ]
            if not lines:
                return False, None
        measure = condition.measure
        if measure not in ("sum", "min", "max"):
            return True, 1.0
        of = getattr(condition, measure).of
        if of == "revenue":
            if wanted is None:
                return True, event_revenue(event)
            return True, sum(line.quantity * line.price for line in lines if line.price is not None)
        if of == "quantity":
            return True, sum(line.quantity for line in lines)
        raw: Any = event.properties
        for part in of.removeprefix("properties.").split("."):
            raw = raw.get(part) if isinstance(raw, Mapping) else None
        return True, _number(raw)

    def behaviour(self, condition: EventCondition, events: list[Counted], t: int) -> bool:
        matching: list[tuple[int, float]] = []
        for counted in events:
            matches, value = self.value(condition, counted)
            if matches and value is not None:
                matching.append((counted.ts, value))
        measure = condition.measure
        if measure in ("first", "last"):
            if not matching:
                return False
            times = [ts for ts, _ in matching]
            moment = min(times) if measure == "first" else max(times)
            occurrence = getattr(condition, measure)
            if occurrence.within is not None:
                return bool(t - moment <= occurrence.within)
            return bool(t - moment > occurrence.older_than)
        if condition.window is not None:
            matching = [(ts, v) for ts, v in matching if t - condition.window < ts <= t]
        values = [v for _, v in matching]
        if measure == "count":
            return len(values) >= 1 if condition.count is None else condition.count.test(len(values))
        if measure == "sum":
            assert condition.sum is not None
            return condition.sum.test(sum(values))
        comparison = getattr(condition, measure)
        if not values:
            return bool(comparison.test(None))
        return bool(comparison.test(min(values) if measure == "min" else max(values)))

    # -- derived traits --------------------------------------------------------------------------

    def derived(self, events: list[Counted], name: str, t: int) -> Any:
        purchases = sorted(c.ts for c in events if c.event.name in PURCHASES)
        if name == "days_since_last_purchase":
            return (t - purchases[-1]) / DAY_MS if purchases else None
        if name == "days_since_first_seen":
            return (t - min(c.ts for c in events)) / DAY_MS
        if name == "purchase_count":
            return len(purchases)
        if name == "lifetime_revenue":
            # Net: purchases minus returns (streams/domain/revenue.py).
            return sum(signed_revenue(c.event.name, event_revenue(c.event)) for c in events)
        if name == "purchase_interval_days":
            return self.interval(purchases)
        if name == "lapse_ratio":
            interval = self.interval(purchases)
            if not interval:
                return None
            return ((t - purchases[-1]) / DAY_MS) / interval
        counts: dict[Any, int] = {}
        for counted in events:
            if name == "preferred_channel":
                keys: list[Any] = [counted.event.channel]
            elif name == "preferred_hour":
                keys = [self.local(counted)[0]]
            elif name == "preferred_category":
                keys = [line.category for line in self.lines(counted.event) if line.category]
            elif name == "preferred_brand":
                keys = [line.brand for line in self.lines(counted.event) if line.brand]
            else:
                raise ValueError(name)
            for key in keys:
                counts[key] = counts.get(key, 0) + 1
        if not counts:
            return None
        best = max(counts.values())
        return min(key for key, count in counts.items() if count == best)

    @staticmethod
    def interval(purchases: list[int]) -> float | None:
        """The median gap between the newest 25 purchases, in days."""
        newest = purchases[-25:]
        if len(newest) < 2:
            return None
        gaps = sorted(b - a for a, b in itertools.pairwise(newest))
        half = len(gaps) // 2
        median = gaps[half] if len(gaps) % 2 else (gaps[half - 1] + gaps[half]) / 2
        return median / DAY_MS
