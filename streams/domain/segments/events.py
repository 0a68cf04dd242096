"""The event as the segment engine sees it, and its local-time context."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# Purchases and returns drive the ledgers, derived purchase traits and suppression audiences.
PURCHASE_EVENTS = frozenset({"Order Completed"})
RETURN_EVENTS = frozenset({"Order Refunded", "Product Returned"})

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
    """properties.revenue (or total), else the sum of line quantity times unit price."""
    for key in ("revenue", "total"):
        value = event.properties.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return sum(line.quantity * line.unit_price for line in event.lines if line.unit_price is not None)
