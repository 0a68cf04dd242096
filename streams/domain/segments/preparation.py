"""An event as conditions read it: its lines with their products looked up, its local time.

Each line's product comes from the catalog by SKU, EAN or app product id; a line whose product is
unknown keeps its channel id (``sku:…``, ``ean:…``, ``app:…``) and has no category or brand. Segment
e-commerce events without lines (Product Viewed) count as one line of their ``product_id``/``sku``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol

from streams.domain.segments.events import SegmentEvent, device_class, local_time
from streams.domain.segments.model import DAY_MS


class ProductLookup(Protocol):
    def lookup(
        self, *, sku: str | None = None, ean: str | None = None, app_product_id: str | None = None
    ) -> Any: ...


class NoCatalog:
    """No products known: lines keep their channel ids (``sku:…``, ``ean:…``, ``app:…``)."""

    def lookup(
        self, *, sku: str | None = None, ean: str | None = None, app_product_id: str | None = None
    ) -> None:
        return None


class Line(NamedTuple):
    """One line of an event as conditions see it (a tuple: built for every line of every event)."""

    product_id: str
    category: str | None
    brand: str | None
    quantity: float
    price: float | None
    category_key: str = ""  # lower-cased, for case-insensitive filters
    brand_key: str = ""


_new_line = tuple.__new__  # a Line from a full tuple, without the Python-level __new__ of defaults


class Prepared:
    """An event with its products looked up and its local time computed once."""

    __slots__ = ("device", "event", "hemisphere", "lines", "local", "ts", "zone")

    def __init__(
        self,
        event: SegmentEvent,
        ts: int,
        lookup: Callable[..., Any] | None,
        zone: str,
        hemisphere: str,
    ):
        """``lookup``: the catalog's (None: no catalog, every product unknown)."""
        self.event = event
        self.ts = ts
        self.zone = zone
        self.hemisphere = hemisphere
        self.local: tuple[int, int, int] | None = None
        self.device = device_class(event.device_type, event.user_agent, event.channel)
        items = (
            [
                (line.sku, line.ean, line.app_product_id, line.quantity, line.unit_price)
                for line in event.lines
            ]
            if event.lines
            else _single_item(event)
        )
        if not items:
            self.lines: tuple[Line, ...] = ()
            return
        lines = []
        for sku, ean, app_product_id, quantity, unit_price in items:
            product = lookup(sku=sku, ean=ean, app_product_id=app_product_id) if lookup is not None else None
            if product is not None:
                price = unit_price if unit_price is not None else product.price
                category, brand = product.category, product.brand
                lines.append(
                    Line(
                        product.product_id,
                        category,
                        brand,
                        quantity,
                        price,
                        category.lower() if category else "",
                        brand.lower() if brand else "",
                    )
                )
            else:
                fallback = (
                    f"sku:{sku}"
                    if sku
                    else f"ean:{ean}"
                    if ean
                    else f"app:{app_product_id}"
                    if app_product_id
                    else None
                )
                if fallback is not None:
                    lines.append(_new_line(Line, (fallback, None, None, quantity, unit_price, "", "")))
        self.lines = tuple(lines)

    def local_time(self) -> tuple[int, int, int]:
        if self.local is None:
            if self.zone == "UTC" and not self.event.timezone:
                self.local = utc_time(self.ts)
            else:
                self.local = local_time(self.ts, self.event.timezone, self.zone)
        return self.local


_HOUR_MS = 3_600_000
_UTC_MONTHS: dict[int, int] = {}  # day since the epoch -> its month (UTC); a bounded cache


def utc_time(ts: int) -> tuple[int, int, int]:
    """``local_time(ts, None, "UTC")`` by arithmetic: (hour, weekday with Monday 0, month)."""
    day, rest = divmod(ts, DAY_MS)
    month = _UTC_MONTHS.get(day)
    if month is None:
        if len(_UTC_MONTHS) > 4096:
            _UTC_MONTHS.clear()
        month = _UTC_MONTHS[day] = datetime.fromtimestamp(day * 86_400, UTC).month
    return rest // _HOUR_MS, (day + 3) % 7, month  # 1970-01-01 was a Thursday


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


NUMBER = (int, float)  # for isinstance: a constant, where ``int | float`` builds a union per call
_Item = tuple[str | None, str | None, str | None, float, float | None]  # sku, ean, app id, quantity, price


def _single_item(event: SegmentEvent) -> list[_Item]:
    """The product of a Segment e-commerce event without lines (Product Viewed: product_id, sku)."""
    props = event.properties
    if not props:
        return []
    get = props.get
    raw = get("product_id")
    product_id = None if raw is None else _text(raw)
    if product_id is None:
        raw = get("productId")
        product_id = None if raw is None else _text(raw)
    app = event.channel == "app"
    raw = get("sku")
    sku = (raw if raw.__class__ is str and raw.strip() else _text(raw)) or (None if app else product_id)
    raw = get("ean")
    ean = None if raw is None else _text(raw)
    app_id = product_id if app else None
    if not (sku or ean or app_id):
        return []
    quantity = get("quantity", 1)
    price = get("price")
    return [
        (
            sku,
            ean,
            app_id,
            float(quantity) if isinstance(quantity, NUMBER) and not isinstance(quantity, bool) else 1.0,
            float(price) if isinstance(price, NUMBER) and not isinstance(price, bool) else None,
        )
    ]


def property_path(path: str) -> tuple[str, ...]:
    """The keys of a property path (``properties.`` is optional)."""
    if path.startswith("properties."):
        path = path[len("properties.") :]
    return tuple(path.split("."))


def value_at(properties: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    value: Any = properties
    for part in keys:
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def property_value(properties: Mapping[str, Any], path: str) -> Any:
    return value_at(properties, property_path(path))
