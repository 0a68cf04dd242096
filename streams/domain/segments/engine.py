"""The incremental segment evaluator: apply an event, let time pass, fold a merged person, redefine.

Semantics (invariant 5): membership at time ``now`` is the rule over the person's events with
timestamps up to ``now``. An event timestamped after the moment it is applied counts from that
moment (its timestamp is clamped), so nothing is ever "in the future" and time only moves forward.
Every method returns the membership changes it caused; each is a flip of the stored membership, so
per person and segment the changes alternate entered / exited and none repeats (invariant 6).

Only segments an event can affect are evaluated: those whose conditions name the event, read traits
it carries, read purchases it is, or read every event (context and preferred-* conditions), plus the
segments that refer to them, plus the clock-driven ones when the person's next deadline has passed.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import math
import operator
import sys
from array import array
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol

from streams.domain.segments.events import (
    PURCHASE_EVENTS,
    RETURN_EVENTS,
    LineItem,
    SegmentEvent,
    device_class,
    event_revenue,
    local_time,
    season,
    slot_setters,
)
from streams.domain.segments.loader import evaluation_order
from streams.domain.segments.model import (
    DAY_MS,
    ORDERINGS,
    TIME_DERIVED,
    WEEKDAYS,
    AllOf,
    AnyOf,
    Comparison,
    ContextCondition,
    ContextFilter,
    DerivedCondition,
    EventCondition,
    NotOf,
    SegmentDefinition,
    SegmentRef,
    TraitCondition,
)
from streams.domain.segments.profile import (
    KEPT_MESSAGE_IDS,
    KEPT_PURCHASES,
    MAX_TRAITS,
    Profile,
    message_hash,
    shared_context,
)

SUBJECT_SEP = "\x1f"
ANY_EVENT = "@any"
TRAITS = "@traits"
PURCHASE = "@purchase"
# Derived traits that change with any event are re-evaluated only when their value changed.
_DERIVED_TRIGGERS = {
    "preferred_channel": "@pref:channel",
    "preferred_hour": "@pref:hour",
    "preferred_category": "@pref:category",
    "preferred_brand": "@pref:brand",
    "days_since_first_seen": "@first_seen",
}
# A behaviour condition is triggered by an event its feature counted (the prefix and the feature's
# id), not by every event of its name: one that did not pass its filters cannot change what it reads
# (and time passing is the timers' and the "deadline passed" plans').
FEATURE_TRIGGER = "@f:"
# Triggers other than features: conditions on traits, every event, purchases, derived traits.
_SPECIAL_TRIGGERS = frozenset({ANY_EVENT, TRAITS, PURCHASE, *_DERIVED_TRIGGERS.values()})
_CONTACT_KINDS = {
    "email": "email",
    "phone": "phone",
    "esp_subscriber_id": "espSubscriberId",
    "customer_id": "userId",
    "crm_id": "crmId",
    "loyalty_card": "loyaltyCard",
}


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


@dataclass(frozen=True, slots=True)
class Change:
    person_id: str
    segment_id: str
    subject: str | None
    entered: bool
    seq: int
    at: int
    trigger: str  # event | timer | merge | definition
    reason: str
    message_id: str | None
    version: int


class _Line(NamedTuple):
    """One line of an event as conditions see it (a tuple: built for every line of every event)."""

    product_id: str
    category: str | None
    brand: str | None
    quantity: float
    price: float | None
    category_key: str = ""  # lower-cased, for case-insensitive filters
    brand_key: str = ""


def _change_maker() -> Callable[..., Change]:
    """``Change(...)`` without the generated ``__init__``: its ten fields set through their descriptors
    (``slot_setters``: the frozen dataclass's __init__ is about 3x slower, compiled or not)."""
    new, (s0, s1, s2, s3, s4, s5, s6, s7, s8, s9) = slot_setters(Change, 10)

    def change(
        person_id: str,
        segment_id: str,
        subject: str | None,
        entered: bool,
        seq: int,
        at: int,
        trigger: str,
        reason: str,
        message_id: str | None,
        version: int,
    ) -> Change:
        made: Change = new(Change)
        s0(made, person_id)
        s1(made, segment_id)
        s2(made, subject)
        s3(made, entered)
        s4(made, seq)
        s5(made, at)
        s6(made, trigger)
        s7(made, reason)
        s8(made, message_id)
        s9(made, version)
        return made

    return change


_change = _change_maker()


_new_line = tuple.__new__  # a _Line from a full tuple, without the Python-level __new__ of defaults


class _Prepared:
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
            self.lines: tuple[_Line, ...] = ()
            return
        lines = []
        for sku, ean, app_product_id, quantity, unit_price in items:
            product = lookup(sku=sku, ean=ean, app_product_id=app_product_id) if lookup is not None else None
            if product is not None:
                price = unit_price if unit_price is not None else product.price
                category, brand = product.category, product.brand
                lines.append(
                    _Line(
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
                    lines.append(_new_line(_Line, (fallback, None, None, quantity, unit_price, "", "")))
        self.lines = tuple(lines)

    def local_time(self) -> tuple[int, int, int]:
        if self.local is None:
            if self.zone == "UTC" and not self.event.timezone:
                self.local = _utc_time(self.ts)
            else:
                self.local = local_time(self.ts, self.event.timezone, self.zone)
        return self.local


_HOUR_MS = 3_600_000
_UTC_MONTHS: dict[int, int] = {}  # day since the epoch -> its month (UTC); a bounded cache


def _utc_time(ts: int) -> tuple[int, int, int]:
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


_NUMBER = (int, float)  # for isinstance: a constant, where ``int | float`` builds a union per call
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
            float(quantity) if isinstance(quantity, _NUMBER) and not isinstance(quantity, bool) else 1.0,
            float(price) if isinstance(price, _NUMBER) and not isinstance(price, bool) else None,
        )
    ]


def _single_product(event: SegmentEvent) -> tuple[LineItem, ...]:
    """The product of a Segment e-commerce event without lines, as a line item."""
    return tuple(
        LineItem(sku=sku, ean=ean, app_product_id=app_id, quantity=quantity, unit_price=price)
        for sku, ean, app_id, quantity, price in _single_item(event)
    )


def _path(path: str) -> tuple[str, ...]:
    """The keys of a property path (``properties.`` is optional)."""
    if path.startswith("properties."):
        path = path[len("properties.") :]
    return tuple(path.split("."))


def _lookup(properties: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    value: Any = properties
    for part in keys:
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _property(properties: Mapping[str, Any], path: str) -> Any:
    return _lookup(properties, _path(path))


_TimeTest = Callable[[int, int, int, str], bool]  # (local hour, weekday, month, hemisphere)


def _time_test(filters: ContextFilter) -> _TimeTest | None:
    """The local-time part of ``filters`` as one predicate (None: it has no local-time filter)."""
    if not filters.needs_local_time():
        return None
    hour_check = _numeric(filters.local_hour) if filters.local_hour is not None else None
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


def _context_test(
    filters: ContextFilter,
    channel: str,
    device: str | None,
    local: Callable[[], tuple[int, int, int]],
    hemisphere: str,
) -> bool:
    if filters.channel is not None and channel not in filters.channel:
        return False
    if filters.device_type is not None and device not in filters.device_type:
        return False
    if (
        filters.local_hour is None
        and filters.weekday is None
        and filters.month is None
        and filters.season is None
    ):
        return True
    hour, weekday, month = local()
    if filters.local_hour is not None and not filters.local_hour.test(hour):
        return False
    if filters.weekday is not None and WEEKDAYS[weekday] not in filters.weekday:
        return False
    if filters.month is not None and month not in filters.month:
        return False
    return filters.season is None or season(month, hemisphere) in filters.season


Stats = tuple[int, float, float | None, float | None, int | None, int | None]
_NO_STATS: Stats = (0, 0.0, None, None, None, None)


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

    def matching_lines(self, prepared: _Prepared) -> list[_Line] | None:
        """The event's lines this feature looks at (None: the event does not match)."""
        if self.product is None:
            return list(prepared.lines)
        ids, categories, brands = self._ids, self._categories, self._brands
        # Product ids compare exactly; category and brand names case-insensitively (docs/segments.md).
        found = [
            line
            for line in prepared.lines
            if (ids is None or line.product_id in ids)
            and (categories is None or line.category_key in categories)
            and (brands is None or line.brand_key in brands)
        ]
        return found or None

    def value(self, prepared: _Prepared, lines: Iterable[_Line]) -> float | None:
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
        raw = _property(prepared.event.properties, of)
        if isinstance(raw, bool) or not isinstance(raw, _NUMBER) or math.isnan(raw):
            return None
        return float(raw)

    def _compile_match(self) -> Callable[[_Prepared], float | None]:
        """``match(prepared)``: the event's value when it passes every filter, else None.

        Filters run in this order: channel, ``where``, the rest of the context, products."""
        channels = self.channels
        where = tuple((_path(path), check) for path, check in self.where_checks)
        context = self.context if self.has_other_context else None
        devices = frozenset(context.device_type) if context and context.device_type is not None else None
        timed = _time_test(context) if context is not None else None
        product = self.product
        ids, categories, brands = self._ids, self._categories, self._brands
        value = self.value
        counts = self.value_of is None

        def match(prepared: _Prepared) -> float | None:
            event = prepared.event
            if channels is not None and event.channel not in channels:
                return None
            if where:
                properties = event.properties
                for keys, check in where:
                    if not check(_lookup(properties, keys)):
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

    def stats(self, profile: Profile, now: int) -> Stats:
        """count, sum, min, max, first, last of the matching events counted at ``now``."""
        if self.window is None:
            total = profile.totals.get(self.id)
            if total is None:
                return _NO_STATS
            return total[0], total[1], total[2], total[3], total[4], total[5]
        times = profile.windowed.get(self.id)
        if not times:
            return _NO_STATS
        start = bisect.bisect_right(times, now - self.window)
        if start:  # expired for good: time only moves forward
            del times[:start]
            if self.valued:
                del profile.wvalues[self.id][:start]
        count = len(times)
        if not count:
            return _NO_STATS
        if self.valued:
            values = profile.wvalues[self.id]
            return count, sum(values), min(values), max(values), times[0], times[-1]
        return count, float(count), 1.0, 1.0, times[0], times[-1]

    def deadline(self, profile: Profile, now: int) -> int | None:
        """When the oldest event still in the window leaves it."""
        if self.window is None:
            return None
        times = profile.windowed.get(self.id)
        if not times:
            return None
        start = bisect.bisect_right(times, now - self.window)  # expired ones are not yet pruned
        return times[start] + self.window if start < len(times) else None


class Evaluation:
    """One evaluation pass over a profile at ``now``: caches derived values, holds new memberships."""

    __slots__ = ("cache", "member", "members", "now", "profile", "totals", "windowed", "wvalues")

    def __init__(self, engine: SegmentEngine, profile: Profile, now: int) -> None:
        self.profile = profile
        self.now = now
        self.member: dict[str, bool] = {}
        self.cache: dict[str, Any] = {}  # derived trait -> its value at ``now``
        # the profile's maps, one attribute lookup away for the compiled tests
        self.members = profile.members
        self.windowed = profile.windowed
        self.wvalues = profile.wvalues
        self.totals = profile.totals

    def derived(self, name: str) -> Any:
        cache = self.cache
        if name in cache:
            return cache[name]
        value = cache[name] = derived_value(self.profile, name, self.now)
        return value


def _argmax(counts: Mapping[str, int]) -> str | None:
    """The most frequent key (ties: the smallest); None when there is none."""
    found: str | None = None
    best = 0
    for key, value in counts.items():
        if found is None or value > best or (value == best and key < found):
            found, best = key, value
    return found


def _keep_newest(entries: dict[str, list[Any]], key: str, value: Any, ts: int, limit: int) -> None:
    """Keep ``value`` as ``key``'s newest by event time (``[value, ts]``, updated in place); a new key
    only while fewer than ``limit`` are kept."""
    entry = entries.get(key)
    if entry is None:
        if len(entries) < limit:
            entries[key] = [value, ts]
    elif ts >= entry[1]:
        entry[0] = value
        entry[1] = ts


def _bump(counts: dict[str, int], key: str) -> bool:
    """Count one more ``key``; whether the most frequent key (ties: the smallest) changed."""
    if not counts:
        counts[key] = 1
        return True
    mine = counts.get(key, 0) + 1
    best = max(counts.values())  # before counting: ``key`` had at most ``best``
    counts[key] = mine
    if mine < best:  # the leader still counts more than ``key``: it stays the leader
        return False
    # mine == best + 1: ``key`` led before (tied or alone) and leads now; it changed if a smaller key
    # led before. mine == best: ``key`` ties with the leaders; it changed unless a smaller key leads.
    for name, value in counts.items():
        if value == best and name < key:
            return mine > best
    return mine == best


def purchase_interval_days(purchases: list[int]) -> float | None:
    """The median gap between consecutive kept purchases, in days (None below two purchases)."""
    if len(purchases) < 2:
        return None
    gaps = sorted(b - a for a, b in itertools.pairwise(purchases))
    middle = len(gaps) // 2
    median = gaps[middle] if len(gaps) % 2 else (gaps[middle - 1] + gaps[middle]) / 2
    return median / DAY_MS


def derived_value(profile: Profile, name: str, now: int) -> Any:
    """The derived trait ``name`` of ``profile`` at ``now`` (None when it is not defined yet)."""
    if name == "days_since_last_purchase":
        return (now - profile.purchases[-1]) / DAY_MS if profile.purchases else None
    if name == "days_since_first_seen":
        return (now - profile.first_seen) / DAY_MS if profile.first_seen is not None else None
    if name == "purchase_count":
        return profile.purchase_count
    if name == "lifetime_revenue":
        return profile.revenue
    if name == "purchase_interval_days":
        return purchase_interval_days(profile.purchases)
    if name == "lapse_ratio":
        interval = purchase_interval_days(profile.purchases)
        if not interval or not profile.purchases:
            return None
        return ((now - profile.purchases[-1]) / DAY_MS) / interval
    if name == "preferred_channel":
        return _argmax(profile.channel_counts)
    if name == "preferred_hour":
        hour = _argmax(profile.hour_counts)  # keys are zero-padded, so ties go to the earliest hour
        return int(hour) if hour is not None else None
    if name == "preferred_category":
        return _argmax(profile.category_counts)
    if name == "preferred_brand":
        return _argmax(profile.brand_counts)
    raise ValueError(f"unknown derived trait {name!r}")


def _deriver(name: str) -> Callable[[Profile, int], Any]:
    """``derived_value`` for one name."""
    if name == "preferred_channel":
        return lambda profile, now: _argmax(profile.channel_counts)
    if name == "preferred_category":
        return lambda profile, now: _argmax(profile.category_counts)
    if name == "preferred_brand":
        return lambda profile, now: _argmax(profile.brand_counts)
    if name == "purchase_count":
        return lambda profile, now: profile.purchase_count
    if name == "lifetime_revenue":
        return lambda profile, now: profile.revenue
    return lambda profile, now: derived_value(profile, name, now)


Test = Callable[[Evaluation], bool]
# The earliest moment after ``now`` at which a condition may change with the clock alone (None: never).
Deadline = Callable[[Profile, int], int | None]


@dataclass
class _Compiled:
    test: Test
    triggers: set[str]
    deadlines: list[Deadline]
    features: list[Feature]
    refs: set[str]


# One segment of an evaluation plan: id, compiled test (None: a suppression audience), version, and
# for suppression audiences their definition.
_Step = tuple[str, Test | None, int, SegmentDefinition | None]


def _trait_test(path: str, comparison: Callable[[Any], bool]) -> Test:
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


def _all(tests: list[Test]) -> Test:
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        a, b = tests
        return lambda ev: a(ev) and b(ev)
    if len(tests) == 3:
        a, b, c = tests
        return lambda ev: a(ev) and b(ev) and c(ev)
    return lambda ev: all(t(ev) for t in tests)


def _any(tests: list[Test]) -> Test:
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        a, b = tests
        return lambda ev: a(ev) or b(ev)
    if len(tests) == 3:
        a, b, c = tests
        return lambda ev: a(ev) or b(ev) or c(ev)
    return lambda ev: any(t(ev) for t in tests)


def _occurrence_deadlines(feature: Feature, which: int, span: int) -> Deadline:
    fid = feature.id

    def deadline(profile: Profile, now: int) -> int | None:
        total = profile.totals.get(fid)
        if total is None:
            return None
        at = int(total[which]) + span + 1
        return at if at > now else None

    return deadline


def _reaching(threshold: float, interval: float | None = None) -> int:
    """The first whole ms ``o`` after the start at which the derived value reaches ``threshold``,
    computed the way :func:`derived_value` does: ``o / DAY_MS`` days, or ``(o / DAY_MS) / interval``
    for a lapse ratio.

    ``ceil(threshold * DAY_MS * interval)`` alone can be 1 ms off: the product rounds differently from
    the divisions of the evaluation (seen: a lapse ratio of 0.5 over a 4,050,500 ms gap fired late).
    """

    def value(o: int) -> float:
        return o / DAY_MS if interval is None else (o / DAY_MS) / interval

    o = max(0, math.ceil(threshold * DAY_MS * (1.0 if interval is None else interval)))
    while o > 0 and value(o - 1) >= threshold:
        o -= 1
    while value(o) < threshold:
        o += 1
    return o


def _derived_deadlines(name: str, thresholds: list[float]) -> Deadline:
    # in days: the moments after the start at which the value reaches each threshold
    days = [_reaching(threshold) for threshold in thresholds]

    def earliest(start: int, offsets: list[int], now: int) -> int | None:
        best: int | None = None
        for offset in offsets:
            at = start + offset
            if at <= now:
                at += 1  # the moment after the threshold (a strict comparison turns then)
                if at <= now:
                    continue
            if best is None or at < best:
                best = at
        return best

    if name == "days_since_first_seen":

        def first_seen(profile: Profile, now: int) -> int | None:
            start = profile.first_seen
            return None if start is None else earliest(start, days, now)

        return first_seen
    if name == "days_since_last_purchase":

        def last_purchase(profile: Profile, now: int) -> int | None:
            purchases = profile.purchases
            return earliest(purchases[-1], days, now) if purchases else None

        return last_purchase

    def lapse(profile: Profile, now: int) -> int | None:  # lapse_ratio
        purchases = profile.purchases
        if not purchases:
            return None
        interval = purchase_interval_days(purchases)
        if not interval:
            return None
        return earliest(purchases[-1], [_reaching(threshold, interval) for threshold in thresholds], now)

    return lapse


def _ordering(comparison: Comparison | None) -> tuple[Callable[[Any, Any], bool] | None, Any]:
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


def _numeric(comparison: Comparison) -> Callable[[Any], bool]:
    """A predicate equal to ``comparison.test`` on ints (the local hour)."""
    op, bound = _ordering(comparison)
    if op is not None:
        return lambda value: op(value, bound)
    between = comparison.between
    if between is not None and not (comparison.model_fields_set & _OTHER_TESTS):
        low, high = between
        return lambda value: low <= value <= high
    return comparison.compile()


_OTHER_TESTS = {"eq", "ne", "gt", "gte", "lt", "lte", "in_", "not_in", "contains", "exists"}


def _seen(seen: array[int], digest: int) -> bool:
    """``digest in seen``; for longer arrays a byte search (``in`` boxes every element)."""
    if len(seen) < 16:
        return digest in seen
    size = seen.itemsize
    raw, needle = seen.tobytes(), digest.to_bytes(size, sys.byteorder, signed=True)
    at = raw.find(needle)
    while at != -1:
        if at % size == 0:  # a whole element, not the bytes across two
            return True
        at = raw.find(needle, at + 1)
    return False


def _holds(ev: Evaluation) -> bool:
    return True


def _is_empty(profile: Profile) -> bool:
    """Whether ``profile`` holds no state that conditions read (a new person)."""
    return (
        profile.first_seen is None
        and profile.last_ts is None
        and profile.last_context is None
        and not profile.members
        and not profile.windowed
        and not profile.wvalues
        and not profile.totals
        and not profile.traits
        and not profile.purchases
        and not profile.purchase_count
        and not profile.revenue
        and not profile.ledger
        and not profile.category_ledger
        and not profile.channel_counts
        and not profile.hour_counts
        and not profile.category_counts
        and not profile.brand_counts
    )


class SegmentEngine:
    """Compiled definitions with their versions; evaluates profiles incrementally."""

    def __init__(
        self,
        definitions: Iterable[tuple[SegmentDefinition, int]],
        catalog: ProductLookup | None = None,
        *,
        timezone: str = "UTC",
        hemisphere: str = "north",
    ) -> None:
        self.catalog: ProductLookup = catalog or NoCatalog()
        self._lookup = None if type(self.catalog) is NoCatalog else self.catalog.lookup
        self.timezone = timezone
        self.hemisphere = hemisphere
        self.definitions: dict[str, SegmentDefinition] = {}
        self.versions: dict[str, int] = {}
        for definition, version in definitions:
            self.definitions[definition.id] = definition
            self.versions[definition.id] = version
        self.order = [
            sys.intern(segment_id) for segment_id in evaluation_order(list(self.definitions.values()))
        ]
        self.position = {segment_id: index for index, segment_id in enumerate(self.order)}
        self.features: dict[str, Feature] = {}
        self.compiled: dict[str, _Compiled] = {}
        for segment_id in self.order:
            definition = self.definitions[segment_id]
            if definition.kind == "suppression":
                self.compiled[segment_id] = _Compiled(lambda ev: False, {PURCHASE}, [], [], set())
            else:
                assert definition.when is not None
                self.compiled[segment_id] = self._compile(definition.when)
        self.features_by_name: dict[str, list[Feature]] = {}
        # (event name, channel, has lines) -> the features such an event may match, in the order above
        self._matching: dict[
            tuple[str, str, int], tuple[tuple[Feature, Callable[[_Prepared], float | None] | None], ...]
        ] = {}
        for feature in self.features.values():
            for name in feature.names:
                self.features_by_name.setdefault(name, []).append(feature)
        # dependents: a segment's change can change the segments that refer to it
        self.dependents: dict[str, set[str]] = {segment_id: set() for segment_id in self.order}
        for segment_id, compiled in self.compiled.items():
            for ref in compiled.refs:
                self.dependents[ref].add(segment_id)
        self.by_trigger: dict[str, set[str]] = {}
        for segment_id, compiled in self.compiled.items():
            for trigger in compiled.triggers:
                self.by_trigger.setdefault(trigger, set()).add(segment_id)
        self.timed: set[str] = self._closure(
            {sid for sid, compiled in self.compiled.items() if compiled.deadlines or self._windowed(compiled)}
        )
        self._deadlines = [d for compiled in self.compiled.values() for d in compiled.deadlines]
        # feature id -> window, for every windowed feature (the deadlines of windows)
        self._windows = {fid: f.window for fid, f in self.features.items() if f.window is not None}
        self.needs_local_time = any(f.context.needs_local_time() for f in self.features.values()) or any(
            self._walk_needs_local(d) for d in self.definitions.values()
        )
        self._steps: dict[str, _Step] = {}
        for sid in self.order:
            definition = self.definitions[sid]
            suppression = definition.kind == "suppression"
            self._steps[sid] = (
                sid,
                None if suppression else self.compiled[sid].test,
                self.versions[sid],
                definition if suppression else None,
            )
        # (event name, has traits, deadline passed, the triggers it fired) -> segments to evaluate, in order
        self._plans: dict[tuple[str, bool, bool, tuple[str, ...]], tuple[_Step, ...]] = {}
        self._reasons: dict[str, str] = {}  # event name -> the reason of its changes
        # (the plan key, the features the event matched) -> a new person's first plan
        self._first_plans: dict[
            tuple[str, bool, bool, tuple[str, ...], tuple[str, ...]], tuple[_Step, ...]
        ] = {}
        self._timed_plan = self._plan(self.timed)
        self._all_plan = self._plan(self.order)
        # What every segment holds for a profile without any state (the same at any time).
        empty = Evaluation(self, Profile(""), 0)
        for segment_id, test, _, _ in self._all_plan:
            if test is not None:
                empty.member[segment_id] = test(empty)
        self._empty = empty.member
        self.counts_hours = "@pref:hour" in self.by_trigger
        self._watched = tuple(
            name
            for name, token in _DERIVED_TRIGGERS.items()
            if token in self.by_trigger and name != "days_since_first_seen"
        )
        self._watch_channel = "preferred_channel" in self._watched
        self._watch_category = "preferred_category" in self._watched
        self._watch_brand = "preferred_brand" in self._watched

    # -- compiling ---------------------------------------------------------------------------------

    @staticmethod
    def _windowed(compiled: _Compiled) -> bool:
        return any(feature.window is not None for feature in compiled.features)

    def _walk_needs_local(self, definition: SegmentDefinition) -> bool:
        from streams.domain.segments.model import walk

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

    def _feature(self, condition: EventCondition) -> Feature:
        feature = Feature(condition)
        return self.features.setdefault(feature.id, feature)

    def _compile(self, condition: Any) -> _Compiled:
        if isinstance(condition, AllOf | AnyOf):
            parts = [
                self._compile(child)
                for child in (condition.all if isinstance(condition, AllOf) else condition.any)
            ]
            tests = [p.test for p in parts]
            return _Compiled(
                _all(tests) if isinstance(condition, AllOf) else _any(tests),
                set().union(*(p.triggers for p in parts)),
                [d for p in parts for d in p.deadlines],
                [f for p in parts for f in p.features],
                set().union(*(p.refs for p in parts)),
            )
        if isinstance(condition, NotOf):
            inner = self._compile(condition.not_)
            inner_test = inner.test
            return _Compiled(
                lambda ev: not inner_test(ev), inner.triggers, inner.deadlines, inner.features, inner.refs
            )
        if isinstance(condition, TraitCondition):
            return _Compiled(_trait_test(condition.trait, condition.compile()), {TRAITS}, [], [], set())
        if isinstance(condition, DerivedCondition):
            name, check = condition.derived, condition.compile()
            triggers = {_DERIVED_TRIGGERS.get(name, PURCHASE)}
            deadlines = [_derived_deadlines(name, condition.thresholds())] if name in TIME_DERIVED else []
            derive = _deriver(name)

            def derived_test(ev: Evaluation) -> bool:
                cache = ev.cache
                if name in cache:
                    return check(cache[name])
                value = cache[name] = derive(ev.profile, ev.now)
                return check(value)

            return _Compiled(derived_test, triggers, deadlines, [], set())
        if isinstance(condition, ContextCondition):
            filters = condition.context
            channels = frozenset(filters.channel) if filters.channel is not None else None
            devices = frozenset(filters.device_type) if filters.device_type is not None else None
            timed = _time_test(filters)
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

            return _Compiled(context_test, {ANY_EVENT}, [], [], set())
        if isinstance(condition, SegmentRef):
            ref = condition.segment

            def ref_test(ev: Evaluation) -> bool:
                member = ev.member.get(ref)
                if member is not None:
                    return member
                return ev.members.get(ref, 0) % 2 == 1

            return _Compiled(ref_test, set(), [], [], {ref})
        if isinstance(condition, EventCondition):
            return self._compile_event(condition)
        raise TypeError(f"unknown condition {type(condition).__name__}")

    def _compile_event(self, condition: EventCondition) -> _Compiled:
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
            if window is None:

                def test(ev: Evaluation) -> bool:
                    total = ev.totals.get(fid)
                    if total is None:
                        return False
                    age: int = ev.now - total[which]
                    return age <= span if within else age > span
            else:  # not allowed by the language; kept general

                def test(ev: Evaluation) -> bool:
                    moment = feature.stats(ev.profile, ev.now)[which]
                    if moment is None:
                        return False
                    return ev.now - moment <= span if within else ev.now - moment > span

            deadlines.append(_occurrence_deadlines(feature, which, span))
            return _Compiled(test, {feature.trigger}, deadlines, [feature], set())
        comparison = getattr(condition, measure) if measure != "count" else condition.count
        check: Callable[[Any], bool] = (
            comparison.compile() if comparison is not None else (lambda value: value >= 1)
        )
        # check(x) is op(x, bound) for the numbers a measure takes, when op is not None
        op, bound = _ordering(comparison)
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

        return _Compiled(test, {feature.trigger}, deadlines, [feature], set())

    def _plan(self, segment_ids: Iterable[str]) -> tuple[_Step, ...]:
        steps = self._steps
        return tuple(steps[sid] for sid in self._ordered(segment_ids))

    def _ordered(self, segment_ids: Iterable[str]) -> tuple[str, ...]:
        return tuple(sorted(segment_ids, key=self.position.__getitem__))

    def _closure(self, segment_ids: set[str]) -> set[str]:
        found = set(segment_ids)
        stack = list(segment_ids)
        while stack:
            for dependent in self.dependents[stack.pop()]:
                if dependent not in found:
                    found.add(dependent)
                    stack.append(dependent)
        return found

    # -- state updates -----------------------------------------------------------------------------

    def apply(self, profile: Profile, event: SegmentEvent, now: int) -> list[Change]:
        """Apply one event at ``now``; returns the changes (none for a duplicate message id)."""
        digest = message_hash(event.message_id)
        seen = profile.seen
        if _seen(seen, digest):
            return self.tick(profile, now)  # applied once; but the clock it came with still counts
        seen.append(digest)
        if len(seen) > KEPT_MESSAGE_IDS:
            del seen[: len(seen) - KEPT_MESSAGE_IDS]
        ts = event.timestamp_ms
        if now < ts:
            ts = now
        prepared = _Prepared(event, ts, self._lookup, self.timezone, self.hemisphere)
        first = profile.last_ts is None
        fresh = first and _is_empty(profile)
        matched: list[str] | None = [] if fresh else None
        tokens = self._update(profile, prepared, now, matched)
        due = profile.due
        key = (event.name, bool(event.traits), bool(due and due <= now) and not first, tokens)
        if fresh:
            # Never evaluated: every segment that holds without matching events ("did not buy",
            # "not gold") must be entered now, not only those this event triggers.
            assert matched is not None
            first_key = (*key, tuple(matched))
            plan = self._first_plans.get(first_key)
            if plan is None:
                plan = self._first_plan(key, set(matched))
                if len(self._first_plans) < 10_000:  # feature combinations: bounded, but keep it so
                    self._first_plans[first_key] = plan
        elif first:
            plan = self._all_plan
        else:
            plan = self._plans.get(key)
            if plan is None:
                plan = self._event_plan(key)
                if len(self._plans) < 10_000:  # feature combinations: bounded, but keep it so
                    self._plans[key] = plan
        reason = self._reasons.get(event.name)
        if reason is None:
            reason = f"event {event.name!r}"
            if len(self._reasons) < 10_000:
                self._reasons[event.name] = reason
        changes = self._evaluate(profile, now, plan, "event", reason, event.message_id)
        profile.due = self.next_deadline(profile, now) or 0
        return changes

    def _first_plan(
        self, key: tuple[str, bool, bool, tuple[str, ...]], matched: set[str]
    ) -> tuple[_Step, ...]:
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
        plan: list[_Step] = []
        for step in self._all_plan:
            segment_id, test, version, _ = step
            compiled = self.compiled[segment_id]
            if segment_id in affected and not (
                test is not None
                and not (compiled.triggers & _SPECIAL_TRIGGERS)
                and not any(feature.id in matched for feature in compiled.features)
                and compiled.refs <= unchanged
            ):
                plan.append(step)
                continue
            unchanged.add(segment_id)
            if test is not None and self._empty[segment_id]:
                plan.append((segment_id, _holds, version, None))
        return tuple(plan)

    def _event_plan(self, key: tuple[str, bool, bool, tuple[str, ...]]) -> tuple[_Step, ...]:
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
        return self._plan(self._closure(affected))

    def _update(
        self, profile: Profile, prepared: _Prepared, now: int, matched: list[str] | None = None
    ) -> tuple[str, ...]:
        """Add the event to the profile; returns the triggers it fired: the derived traits whose value
        changed and the features that counted it (and adds the ids of those features to ``matched``,
        if given)."""
        event, ts = prepared.event, prepared.ts
        tokens: list[str] = []
        if profile.first_seen is None or ts < profile.first_seen:
            profile.first_seen = ts
            tokens.append("@first_seen")
        last_ts = profile.last_ts
        channel = event.channel
        if last_ts is None or ts >= last_ts:
            profile.last_ts = ts
            if self.needs_local_time:
                hour, weekday, month = prepared.local_time()
                profile.last_context = shared_context((channel, prepared.device, hour, weekday, month))
            else:
                profile.last_context = shared_context((channel, prepared.device, None, None, None))
        if _bump(profile.channel_counts, channel) and self._watch_channel:
            tokens.append("@pref:channel")
        if self.counts_hours and _bump(profile.hour_counts, f"{prepared.local_time()[0]:02d}"):
            tokens.append("@pref:hour")
        if event.traits:
            traits = profile.traits
            for key, value in event.traits.items():
                _keep_newest(traits, key, value, ts, MAX_TRAITS)
        if event.identifiers:
            contacts = profile.contacts
            for identifier in event.identifiers:
                kind, _, value = identifier.partition(":")
                contact = _CONTACT_KINDS.get(kind)
                if contact is not None:
                    _keep_newest(contacts, contact, value, ts, len(_CONTACT_KINDS))
        lines = prepared.lines
        for line in lines:
            if (
                line.category
                and _bump(profile.category_counts, line.category)
                and self._watch_category
                and "@pref:category" not in tokens  # once, however many lines moved it
            ):
                tokens.append("@pref:category")
            if (
                line.brand
                and _bump(profile.brand_counts, line.brand)
                and self._watch_brand
                and "@pref:brand" not in tokens
            ):
                tokens.append("@pref:brand")
        name = event.name
        # profile.revenue is net revenue (streams/domain/revenue.py): + a purchase's value, - a return's.
        if name in PURCHASE_EVENTS:
            profile.purchase_count += 1
            profile.revenue += event_revenue(event)
            bisect.insort(profile.purchases, ts)
            if len(profile.purchases) > KEPT_PURCHASES:
                del profile.purchases[: len(profile.purchases) - KEPT_PURCHASES]
            if lines:
                self._book(profile, prepared, 1.0)
        elif name in RETURN_EVENTS:
            profile.revenue -= event_revenue(event)
            if lines:
                self._book(profile, prepared, -1.0)
        if name in self.features_by_name:
            # 0: no lines; 1: only lines without category and brand (unknown products); 2: others
            shape = 1 if lines else 0
            for line in lines:
                if line.category_key or line.brand_key:
                    shape = 2
                    break
            index = (name, channel, shape)
            features = self._matching.get(index)
            if features is None:
                features = self._matching[index] = self._candidates(*index)
            for feature, match in features:
                value = 1.0 if match is None else match(prepared)
                if value is not None:
                    feature.add(profile, ts, value, now)
                    tokens.append(feature.trigger)
                    if matched is not None:
                        matched.append(feature.id)
        # No duplicates, and in an order fixed by what matched (derived triggers first, then features
        # in the order of the event's candidates): equal keys for equal events, without sorting.
        return tuple(tokens)

    def _candidates(
        self, name: str, channel: str, lines: int
    ) -> tuple[tuple[Feature, Callable[[_Prepared], float | None] | None], ...]:
        """The features an event named ``name`` on ``channel`` with ``lines`` (0: none, 1: only of
        products without category and brand, 2: others) may match, with their match (None: every
        such event matches, counting 1)."""
        return tuple(
            (feature, None if feature.counts_all else feature.match)
            for feature in self.features_by_name.get(name, ())
            if (feature.channels is None or channel in feature.channels)
            and (feature.product is None or lines == 2 or (lines == 1 and feature.takes_blank_lines))
        )

    @staticmethod
    def _book(profile: Profile, prepared: _Prepared, sign: float) -> None:
        for line in prepared.lines:
            for ledger, key in ((profile.ledger, line.product_id), (profile.category_ledger, line.category)):
                if key is None:
                    continue
                entry = ledger.get(key)
                if entry is None:
                    entry = ledger[key] = [0.0, 0.0]
                entry[0] += sign * line.quantity
                if sign > 0:
                    entry[1] += line.quantity

    def tick(self, profile: Profile, now: int) -> list[Change]:
        """Let time pass to ``now``: windows expire, recency and derived conditions move."""
        if not profile.due or profile.due > now:
            return []
        changes = self._evaluate(profile, now, self._timed_plan, "timer", "time passed", None)
        profile.due = self.next_deadline(profile, now) or 0
        return changes

    def next_deadline(self, profile: Profile, now: int) -> int | None:
        """The earliest time after ``now`` at which a clock-driven condition may change."""
        best: int | None = None
        windows = self._windows
        windowed = profile.windowed
        stale: list[str] | None = None
        for feature_id, times in windowed.items():
            window = windows.get(feature_id)
            if window is None:
                if stale is None:
                    stale = []
                stale.append(feature_id)
                continue
            if not times:
                continue
            # When the oldest event still in the window leaves it (expired ones are not yet pruned).
            cutoff = now - window
            start = 0 if times[0] > cutoff else bisect.bisect_right(times, cutoff)
            if start < len(times):
                at = times[start] + window
                if at > now and (best is None or at < best):
                    best = at
        if stale is not None:
            for feature_id in stale:
                del windowed[feature_id]  # no definition uses it any more
                profile.wvalues.pop(feature_id, None)
        for deadline in self._deadlines:
            when = deadline(profile, now)
            if when is not None and (best is None or when < best):
                best = when
        return best

    def reevaluate(
        self, profile: Profile, now: int, trigger: str, reason: str, segment_ids: Iterable[str] | None = None
    ) -> list[Change]:
        """Evaluate ``segment_ids`` (default: all) and exit memberships of undefined segments."""
        wanted = set(self.order) if segment_ids is None else self._closure(set(segment_ids) & set(self.order))
        changes = self._evaluate(profile, now, self._plan(wanted), trigger, reason, None)
        for key in list(profile.members):
            segment_id, _, subject = key.partition(SUBJECT_SEP)
            if segment_id not in self.definitions and profile.is_member(key):
                changes.append(
                    self._flip(
                        profile,
                        key,
                        segment_id,
                        subject or None,
                        False,
                        now,
                        trigger,
                        reason,
                        None,
                        profile.versions.get(key, 0),
                    )
                )
        profile.due = self.next_deadline(profile, now) or 0
        return changes

    def release(self, merged: Profile, now: int, survivor: str) -> list[Change]:
        """The merged person exits everything it is a member of (its state moves to ``survivor``)."""
        gone: list[Change] = []
        for key in sorted(merged.current_members()):
            segment_id, _, subject = key.partition(SUBJECT_SEP)
            gone.append(
                self._flip(
                    merged,
                    key,
                    segment_id,
                    subject or None,
                    False,
                    now,
                    "merge",
                    f"merged into person {survivor}",
                    None,
                    merged.versions.get(key, 0),
                )
            )
        merged.due = 0
        return gone

    def absorb(self, survivor: Profile, merged: Profile, now: int) -> tuple[list[Change], list[Change]]:
        """Fold ``merged`` into ``survivor``: the merged person exits everything, the survivor is
        re-evaluated over both persons' state. Returns (merged person's changes, survivor's changes)."""
        gone = self.release(merged, now, survivor.person_id)
        combine(survivor, merged)
        changes = self.reevaluate(survivor, now, "merge", f"merged with person {merged.person_id}")
        return gone, changes

    # -- evaluation --------------------------------------------------------------------------------

    def _evaluate(
        self,
        profile: Profile,
        now: int,
        plan: tuple[_Step, ...],
        trigger: str,
        reason: str,
        message_id: str | None,
    ) -> list[Change]:
        if not plan:
            return []
        ev = Evaluation(self, profile, now)
        changes: list[Change] = []
        members, versions = profile.members, profile.versions
        evaluated = ev.member
        person_id = profile.person_id
        entered = exited = ""  # the changes' reasons, made at the first change
        for segment_id, test, version, definition in plan:
            if test is None:
                assert definition is not None
                changes.extend(
                    self._suppression(profile, definition, version, now, trigger, reason, message_id)
                )
                continue
            member = test(ev)
            evaluated[segment_id] = member
            seq = members.get(segment_id, 0)
            if member == (seq % 2 == 1):
                continue
            # a flip of the stored membership: entered on an odd transition count (segment ids are
            # interned when the engine is built, as _flip interns keys)
            seq += 1
            members[segment_id] = seq
            versions[segment_id] = version
            if not entered:
                entered, exited = f"entered: {reason}", f"exited: {reason}"
            changes.append(
                _change(
                    person_id,
                    segment_id,
                    None,
                    member,
                    seq,
                    now,
                    trigger,
                    (entered if member else exited),
                    message_id,
                    version,
                )
            )
        # memberships of segments not evaluated in this pass are read by refs: fill them lazily
        return changes

    def _suppression(
        self,
        profile: Profile,
        definition: SegmentDefinition,
        version: int,
        now: int,
        trigger: str,
        reason: str,
        message_id: str | None,
    ) -> list[Change]:
        ledger = profile.ledger if definition.per == "product" else profile.category_ledger
        prefix = f"{definition.id}{SUBJECT_SEP}{definition.per}:"
        if definition.returns_exit:
            wanted = {key for key, (net, _) in ledger.items() if net > 0}
        else:
            wanted = {key for key, (_, bought) in ledger.items() if bought > 0}
        start = len(prefix)
        current = {
            key[start:] for key, seq in profile.members.items() if seq % 2 == 1 and key.startswith(prefix)
        }
        if wanted == current:
            return []
        changes = []
        for key in sorted(wanted - current):
            changes.append(
                self._flip(
                    profile,
                    prefix + key,
                    definition.id,
                    f"{definition.per}:{key}",
                    True,
                    now,
                    trigger,
                    reason,
                    message_id,
                    version,
                )
            )
        for key in sorted(current - wanted):
            changes.append(
                self._flip(
                    profile,
                    prefix + key,
                    definition.id,
                    f"{definition.per}:{key}",
                    False,
                    now,
                    trigger,
                    reason,
                    message_id,
                    version,
                )
            )
        return changes

    @staticmethod
    def _flip(
        profile: Profile,
        key: str,
        segment_id: str,
        subject: str | None,
        entered: bool,
        now: int,
        trigger: str,
        reason: str,
        message_id: str | None,
        version: int,
    ) -> Change:
        seq = profile.members.get(key, 0) + 1
        assert (seq % 2 == 1) == entered, "a membership flip must alternate"
        key = sys.intern(key)
        profile.members[key] = seq
        profile.versions[key] = version
        verb = "entered" if entered else "exited"
        return _change(
            profile.person_id,
            segment_id,
            subject,
            entered,
            seq,
            now,
            trigger,
            f"{verb}: {reason}",
            message_id,
            version,
        )


def combine(survivor: Profile, merged: Profile) -> None:
    """Add ``merged``'s state to ``survivor`` (memberships excepted)."""
    for key, times in merged.windowed.items():
        values = merged.wvalues.get(key)
        mine = survivor.windowed.get(key)
        mine_values = survivor.wvalues.get(key)
        pairs = sorted(
            [
                *zip(mine or (), mine_values or [0.0] * len(mine or ()), strict=True),
                *zip(times, values or [0.0] * len(times), strict=True),
            ],
            key=lambda p: p[0],
        )
        survivor.windowed[key] = array("q", [int(p[0]) for p in pairs])
        if values is not None or mine_values is not None:
            survivor.wvalues[key] = array("d", [p[1] for p in pairs])
    for key, total in merged.totals.items():
        have = survivor.totals.get(key)
        if have is None:
            survivor.totals[key] = list(total)
        else:
            survivor.totals[key] = [
                have[0] + total[0],
                have[1] + total[1],
                min(have[2], total[2]),
                max(have[3], total[3]),
                min(have[4], total[4]),
                max(have[5], total[5]),
            ]
    for mine_map, other_map in ((survivor.traits, merged.traits), (survivor.contacts, merged.contacts)):
        for key, entry in other_map.items():
            current = mine_map.get(key)
            if current is None or entry[1] > current[1]:
                mine_map[key] = [entry[0], entry[1]]  # a copy: entries are updated in place
    for ledger, other in (
        (survivor.ledger, merged.ledger),
        (survivor.category_ledger, merged.category_ledger),
    ):
        for key, (net, bought) in other.items():
            booked = ledger.setdefault(key, [0.0, 0.0])
            booked[0] += net
            booked[1] += bought
    for counts, other_counts in (
        (survivor.channel_counts, merged.channel_counts),
        (survivor.hour_counts, merged.hour_counts),
        (survivor.category_counts, merged.category_counts),
        (survivor.brand_counts, merged.brand_counts),
    ):
        for key, value in other_counts.items():
            counts[key] = counts.get(key, 0) + value
    survivor.purchases = sorted(survivor.purchases + merged.purchases)[-KEPT_PURCHASES:]
    survivor.purchase_count += merged.purchase_count
    survivor.revenue += merged.revenue
    if merged.first_seen is not None and (
        survivor.first_seen is None or merged.first_seen < survivor.first_seen
    ):
        survivor.first_seen = merged.first_seen
    if merged.last_ts is not None and (survivor.last_ts is None or merged.last_ts > survivor.last_ts):
        survivor.last_ts = merged.last_ts
        survivor.last_context = merged.last_context
    survivor.seen = array("q", [*survivor.seen, *merged.seen][-KEPT_MESSAGE_IDS:])
