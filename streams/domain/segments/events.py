"""The event as the segment engine sees it, and its local-time context."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# Purchases and returns drive the ledgers, derived purchase traits and suppression audiences; they are
# the events with revenue (streams/domain/revenue.py).
from streams.domain.revenue import PURCHASE_EVENTS as PURCHASE_EVENTS
from streams.domain.revenue import RETURN_EVENTS as RETURN_EVENTS
from streams.domain.revenue import event_value

_MOBILE = frozenset({"ios", "android", "mobile", "phone", "iphone", "smartphone"})
_TABLET = frozenset({"tablet", "ipad"})
_DESKTOP = frozenset({"desktop", "pc", "mac", "macos", "windows", "linux", "laptop"})
_SEASONS_NORTH = ("winter",) * 2 + ("spring",) * 3 + ("summer",) * 3 + ("autumn",) * 3 + ("winter",)
_SOUTH = {"winter": "summer", "summer": "winter", "spring": "autumn", "autumn": "spring"}


@dataclass(frozen=True, slots=True)
class LineItem:
    sku: str | None = None
    ean: str | None = None
    app_product_id: str | None = None
    quantity: float = 1.0
    unit_price: float | None = None


@dataclass(frozen=True, slots=True)
class SegmentEvent:
    """One event of a person: what conditions look at (built from an ``events.resolved`` record)."""

    message_id: str
    timestamp_ms: int
    name: str  # a track call's event name; otherwise the call type (page, screen, identify ...)
    channel: str
    device_type: str | None = None  # the raw context.device.type
    user_agent: str | None = None
    timezone: str | None = None
    properties: Mapping[str, Any] = field(default_factory=dict)
    traits: Mapping[str, Any] = field(default_factory=dict)
    lines: tuple[LineItem, ...] = ()
    identifiers: tuple[str, ...] = ()  # normalised identifier keys, kind:value
    # context.consent.categoryPreferences as sent (category -> granted); traits.consent is in traits
    consent: Mapping[str, bool] = field(default_factory=dict)


def slot_setters(cls: type, count: int) -> tuple[Callable[[type], Any], list[Callable[[Any, Any], None]]]:
    """(``cls.__new__``, each field's setter in order), for constructors that skip the
    frozen dataclass's generated ``__init__``: it sets each field with ``object.__setattr__``, much
    slower, and mypyc leaves it uncompiled. Built once per class, checked against its fields.
    """
    names = [f.name for f in fields(cls)]
    slots = getattr(cls, "__slots__", None)  # a compiled (native) class has none
    assert len(names) == count and (slots is None or list(slots) == names), f"{cls.__name__} changed"
    assert not hasattr(cls, "__post_init__")
    new: Callable[[type], Any] = getattr(cls, "__new__")  # noqa: B009 (object.__new__ if not compiled)
    return new, [getattr(cls, name).__set__ for name in names]


def _line_item_maker() -> Callable[[str | None, str | None, str | None, float, float | None], LineItem]:
    new, (s0, s1, s2, s3, s4) = slot_setters(LineItem, 5)

    def line_item(
        sku: str | None,
        ean: str | None,
        app_product_id: str | None,
        quantity: float,
        unit_price: float | None,
    ) -> LineItem:
        made: LineItem = new(LineItem)
        s0(made, sku)
        s1(made, ean)
        s2(made, app_product_id)
        s3(made, quantity)
        s4(made, unit_price)
        return made

    return line_item


_NO_CONSENT: Mapping[str, bool] = {}  # shared by every event that states no consent; never mutated


def _segment_event_maker() -> Callable[..., SegmentEvent]:
    new, (s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11) = slot_setters(SegmentEvent, 12)

    def segment_event(
        message_id: str,
        timestamp_ms: int,
        name: str,
        channel: str,
        device_type: str | None,
        user_agent: str | None,
        timezone: str | None,
        properties: Mapping[str, Any],
        traits: Mapping[str, Any],
        lines: tuple[LineItem, ...],
        identifiers: tuple[str, ...],
        consent: Mapping[str, bool] = _NO_CONSENT,
    ) -> SegmentEvent:
        made: SegmentEvent = new(SegmentEvent)
        s0(made, message_id)
        s1(made, timestamp_ms)
        s2(made, name)
        s3(made, channel)
        s4(made, device_type)
        s5(made, user_agent)
        s6(made, timezone)
        s7(made, properties)
        s8(made, traits)
        s9(made, lines)
        s10(made, identifiers)
        s11(made, consent)
        return made

    return segment_event


# All fields, positionally, in declaration order: the decoders build one per line and per event.
line_item = _line_item_maker()
segment_event = _segment_event_maker()


def device_class(device_type: str | None, user_agent: str | None, channel: str) -> str | None:
    """mobile, tablet, desktop or other, from the device type (else the web user agent); None if unknown."""
    if device_type:
        kind = device_type.strip().lower()
        if kind in _MOBILE:
            return "mobile"
        if kind in _TABLET:
            return "tablet"
        if kind in _DESKTOP:
            return "desktop"
        return "other"
    if user_agent:
        agent = user_agent.lower()
        if "ipad" in agent or "tablet" in agent:
            return "tablet"
        if "mobi" in agent or "android" in agent or "iphone" in agent:
            return "mobile"
        return "desktop"
    return None


@lru_cache(maxsize=512)
def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def local_time(timestamp_ms: int, timezone: str | None, default_zone: str) -> tuple[int, int, int]:
    """(hour, weekday with Monday 0, month) of ``timestamp_ms`` in the event's zone, else the default."""
    zone = (_zone(timezone) if timezone else None) or _zone(default_zone)
    moment = datetime.fromtimestamp(timestamp_ms / 1000, tz=zone or UTC)
    return moment.hour, moment.weekday(), moment.month


def season(month: int, hemisphere: str) -> str:
    name = _SEASONS_NORTH[month - 1]
    return _SOUTH[name] if hemisphere == "south" else name


def event_revenue(event: SegmentEvent) -> float:
    """The event's value (streams/domain/revenue.py): properties.revenue, else properties.total, else
    the sum of its lines' quantity times unit price."""
    return event_value(event.properties, [(line.quantity, line.unit_price) for line in event.lines])
