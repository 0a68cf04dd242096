"""The segment definition language: YAML documents validated into these pydantic models.

A condition is a mapping with exactly one of these keys (docs/segments.md has the full reference):

- ``all`` / ``any``: a list of conditions; ``not``: one condition;
- ``trait``: a person trait (newest value by event time) compared with ``eq``, ``in``, ``gte`` ...;
- ``event``: behaviour; events with this name (and ``where`` property filters, a ``product`` filter,
  and filters on the event's own context), measured over an optional ``window`` by ``count``, ``sum``,
  ``min``, ``max`` (compared) or ``first`` / ``last`` occurrence (``within`` / ``older_than``);
- ``context``: the context of the person's newest event (channel, device type, local hour, weekday,
  month, season);
- ``segment``: membership of another segment;
- ``derived``: a derived person trait (days since last purchase, usual repeat interval, lapse ratio,
  preferred channel / hour / category / brand, purchase count, lifetime revenue).

A definition of ``kind: suppression`` is a per-product (or per-category) audience of people who bought
it, with ``returns_exit`` deciding whether a full return takes them out again.
"""

from __future__ import annotations

import hashlib
import json
import operator
import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PlainSerializer,
    Tag,
    field_validator,
    model_validator,
)

DAY_MS = 86_400_000
_UNITS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": DAY_MS, "w": 7 * DAY_MS}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|[smhdw])\s*$")
_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,99}$")

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
SEASONS = ("winter", "spring", "summer", "autumn")
CHANNELS = ("web", "app", "email", "store")
DEVICE_TYPES = ("mobile", "tablet", "desktop", "other")
DERIVED_TRAITS = (
    "days_since_last_purchase",
    "days_since_first_seen",
    "purchase_count",
    "lifetime_revenue",
    "purchase_interval_days",
    "lapse_ratio",
    "preferred_channel",
    "preferred_hour",
    "preferred_category",
    "preferred_brand",
)
# Derived traits that change with the clock alone (the engine sets timers for their thresholds).
TIME_DERIVED = ("days_since_last_purchase", "days_since_first_seen", "lapse_ratio")

Scalar = str | int | float | bool


def parse_duration(value: Any) -> int:
    """``30d``, ``12h``, ``15m``, ``45s``, ``2w`` (or a number of seconds) -> milliseconds."""
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r} (use 30d, 12h, 15m, 45s or 2w)")
    if isinstance(value, int | float):
        millis = int(value * 1000)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"invalid duration {value!r} (use 30d, 12h, 15m, 45s or 2w)")
        millis = int(float(match.group(1)) * _UNITS[match.group(2)])
    if millis <= 0:
        raise ValueError(f"duration {value!r} must be positive")
    return millis


# Canonical JSON writes durations as "<n>ms", so a definition read back from the topic is the same.
Duration = Annotated[int, Field(gt=0), PlainSerializer(lambda v: f"{v}ms", return_type=str, when_used="json")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Comparison(_Strict):
    """Comparisons; every one given must hold. ``exists: false`` matches a missing value."""

    eq: Scalar | None = None
    ne: Scalar | None = None
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None
    in_: list[Scalar] | None = Field(default=None, alias="in")
    not_in: list[Scalar] | None = None
    between: tuple[float, float] | None = None
    contains: str | None = None
    exists: bool | None = None

    @model_validator(mode="after")
    def _some_test(self) -> Comparison:
        if not self.model_fields_set & _TESTS:
            raise ValueError("needs a comparison: one of " + ", ".join(sorted(_TEST_NAMES)))
        if self.between is not None and self.between[0] > self.between[1]:
            raise ValueError(f"between: lower bound {self.between[0]} is above upper bound {self.between[1]}")
        return self

    def test(self, value: Any) -> bool:
        """Whether ``value`` (None when missing) passes every comparison given.

        A missing value passes ``exists: false``, and passes when only negative tests (``ne``,
        ``not_in``) are given: a person with no tier is "not gold".
        """
        if value is None:
            if self.exists is not None:
                return not self.exists
            return not (self.model_fields_set & _TESTS) - {"ne", "not_in"}
        if self.exists is False:
            return False
        if self.eq is not None and not _equal(value, self.eq):
            return False
        if self.ne is not None and _equal(value, self.ne):
            return False
        if self.in_ is not None and not any(_equal(value, item) for item in self.in_):
            return False
        if self.not_in is not None and any(_equal(value, item) for item in self.not_in):
            return False
        if self.contains is not None and (
            not isinstance(value, str) or self.contains.lower() not in value.lower()
        ):
            return False
        if (
            self.gt is None
            and self.gte is None
            and self.lt is None
            and self.lte is None
            and self.between is None
        ):
            return True
        number = _number(value)
        if number is None:
            return False
        if self.gt is not None and not number > self.gt:
            return False
        if self.gte is not None and not number >= self.gte:
            return False
        if self.lt is not None and not number < self.lt:
            return False
        if self.lte is not None and not number <= self.lte:
            return False
        return self.between is None or self.between[0] <= number <= self.between[1]

    def compile(self) -> Callable[[Any], bool]:
        """A predicate equal to :meth:`test`, faster for the common single comparisons."""
        test = self.test
        given = self.model_fields_set & _TESTS
        if len(given) != 1:
            return test
        (name,) = given
        if name in ORDERINGS:
            op, bound = ORDERINGS[name], getattr(self, name)

            def ordered(value: Any) -> bool:
                if value.__class__ is int or value.__class__ is float:
                    return bool(op(value, bound))
                return test(value)

            return ordered
        if name in ("eq", "in_"):
            items = [self.eq] if name == "eq" else list(self.in_ or [])
            if all(isinstance(item, str) for item in items):
                lowered = frozenset(str(item).lower() for item in items)

                def member(value: Any) -> bool:
                    if value.__class__ is str:
                        return value.lower() in lowered
                    return test(value)

                return member
        return test

    def thresholds(self) -> list[float]:
        """The numbers a continuously growing value can cross (for timers)."""
        found = [x for x in (self.gt, self.gte, self.lt, self.lte) if x is not None]
        if self.between is not None:
            found.extend(self.between)
        for item in (self.eq, self.ne):
            if isinstance(item, int | float) and not isinstance(item, bool):
                found.append(float(item))
        return found


ORDERINGS: dict[str, Callable[[Any, Any], Any]] = {
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}
_TESTS = {"eq", "ne", "gt", "gte", "lt", "lte", "in_", "not_in", "between", "contains", "exists"}
_TEST_NAMES = {name.rstrip("_") for name in _TESTS}


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _equal(value: Any, expected: Scalar) -> bool:
    if isinstance(expected, bool) or isinstance(value, bool):
        return value is expected or (isinstance(value, str) and value.lower() == str(expected).lower())
    if isinstance(expected, int | float):
        number = _number(value)
        return number is not None and number == float(expected)
    return isinstance(value, str | int | float) and str(value).lower() == expected.lower()


def _listify(value: Any) -> Any:
    if value is None or isinstance(value, list):
        return value
    return [value]


class ProductFilter(_Strict):
    """Lines whose catalog product matches every list given (any value of each list)."""

    id: list[str] | None = None
    category: list[str] | None = None
    brand: list[str] | None = None

    _lists = field_validator("id", "category", "brand", mode="before")(_listify)

    @model_validator(mode="after")
    def _something(self) -> ProductFilter:
        if self.id is None and self.category is None and self.brand is None:
            raise ValueError("product: give id, category or brand")
        return self


class ContextFilter(_Strict):
    """Filters on an event's context; local time uses the event's timezone (else the configured one)."""

    channel: list[Literal["web", "app", "email", "store"]] | None = None
    device_type: list[Literal["mobile", "tablet", "desktop", "other"]] | None = None
    local_hour: Comparison | None = None
    weekday: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] | None = None
    month: list[Annotated[int, Field(ge=1, le=12)]] | None = None
    season: list[Literal["winter", "spring", "summer", "autumn"]] | None = None

    _lists = field_validator("channel", "device_type", "weekday", "month", "season", mode="before")(_listify)

    def is_empty(self) -> bool:
        return not self.model_fields_set

    def needs_local_time(self) -> bool:
        return any(x is not None for x in (self.local_hour, self.weekday, self.month, self.season))


class Measure(Comparison):
    """``sum``/``min``/``max``: ``of`` names the value: revenue, quantity or a property path."""

    of: str = "revenue"


class Occurrence(_Strict):
    """``first``/``last`` occurrence: within the last D, or longer ago than D."""

    within: Duration | None = None
    older_than: Duration | None = None

    _durations = field_validator("within", "older_than", mode="before")(
        lambda v: None if v is None else parse_duration(v)
    )

    @model_validator(mode="after")
    def _one(self) -> Occurrence:
        if (self.within is None) == (self.older_than is None):
            raise ValueError("give exactly one of within or older_than")
        return self


class EventCondition(ContextFilter):
    """Behaviour: events named ``event`` that pass the filters, measured over ``window``."""

    event: list[str] = Field(min_length=1)
    where: dict[str, Comparison] = Field(default_factory=dict)
    product: ProductFilter | None = None
    window: Duration | None = None
    count: Comparison | None = None
    sum: Measure | None = None
    min: Measure | None = None
    max: Measure | None = None
    first: Occurrence | None = None
    last: Occurrence | None = None

    _event = field_validator("event", mode="before")(_listify)
    _window = field_validator("window", mode="before")(lambda v: None if v is None else parse_duration(v))

    @field_validator("event")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not isinstance(name, str) or not name.strip():
                raise ValueError("event names must be non-empty text")
        return value

    @model_validator(mode="after")
    def _one_measure(self) -> EventCondition:
        given = [m for m in ("count", "sum", "min", "max", "first", "last") if getattr(self, m) is not None]
        if len(given) > 1:
            raise ValueError(f"give one measure, not {', '.join(given)}")
        if given and given[0] in ("first", "last") and self.window is not None:
            raise ValueError(f"{given[0]} looks at all of history; drop window (or use count with window)")
        return self

    @property
    def measure(self) -> str:
        for name in ("sum", "min", "max", "first", "last"):
            if getattr(self, name) is not None:
                return name
        return "count"

    def feature_spec(self) -> dict[str, Any]:
        """What must be remembered per person for this condition (equal specs share one feature)."""
        measure = self.measure
        value_of = None
        if measure in ("sum", "min", "max"):
            m = getattr(self, measure)
            value_of = m.of
        return {
            "event": sorted(self.event),
            "where": {
                k: v.model_dump(by_alias=True, exclude_none=True) for k, v in sorted(self.where.items())
            },
            "product": self.product.model_dump(exclude_none=True) if self.product else None,
            "context": ContextFilter.model_dump(
                self, exclude_none=True, include=set(ContextFilter.model_fields)
            ),
            "of": value_of,
            "window": self.window,
        }


class AllOf(_Strict):
    all: list[Condition] = Field(min_length=1)


class AnyOf(_Strict):
    any: list[Condition] = Field(min_length=1)


class NotOf(_Strict):
    not_: Condition = Field(alias="not")


class TraitCondition(Comparison):
    trait: str = Field(min_length=1)


class DerivedCondition(Comparison):
    derived: Literal[
        "days_since_last_purchase",
        "days_since_first_seen",
        "purchase_count",
        "lifetime_revenue",
        "purchase_interval_days",
        "lapse_ratio",
        "preferred_channel",
        "preferred_hour",
        "preferred_category",
        "preferred_brand",
    ]


class ContextCondition(_Strict):
    context: ContextFilter

    @field_validator("context")
    @classmethod
    def _not_empty(cls, value: ContextFilter) -> ContextFilter:
        if value.is_empty():
            raise ValueError("context: give channel, device_type, local_hour, weekday, month or season")
        return value


class SegmentRef(_Strict):
    segment: str


CONDITION_KEYS = ("all", "any", "not", "trait", "event", "context", "segment", "derived")


def _condition_tag(value: Any) -> str | None:
    if isinstance(value, BaseModel):
        for key, cls in _TAGGED.items():
            if isinstance(value, cls):
                return key
        return None
    if not isinstance(value, dict):
        return None
    found = [key for key in CONDITION_KEYS if key in value]
    return found[0] if len(found) == 1 else None


Condition = Annotated[
    Annotated[AllOf, Tag("all")]
    | Annotated[AnyOf, Tag("any")]
    | Annotated[NotOf, Tag("not")]
    | Annotated[TraitCondition, Tag("trait")]
    | Annotated[EventCondition, Tag("event")]
    | Annotated[ContextCondition, Tag("context")]
    | Annotated[SegmentRef, Tag("segment")]
    | Annotated[DerivedCondition, Tag("derived")],
    Discriminator(
        _condition_tag,
        custom_error_type="condition",
        custom_error_message="a condition needs exactly one of: " + ", ".join(CONDITION_KEYS),
    ),
]

_TAGGED: dict[str, type[BaseModel]] = {
    "all": AllOf,
    "any": AnyOf,
    "not": NotOf,
    "trait": TraitCondition,
    "event": EventCondition,
    "context": ContextCondition,
    "segment": SegmentRef,
    "derived": DerivedCondition,
}


class SegmentDefinition(_Strict):
    """One segment (``kind: segment``, with ``when``) or per-product audience (``kind: suppression``)."""

    id: str
    name: str | None = None
    description: str | None = None
    kind: Literal["segment", "suppression"] = "segment"
    when: Condition | None = None
    # suppression audiences
    per: Literal["product", "category"] = "product"
    returns_exit: bool = True
    # for people and reports: whether members get a personalised experience (KPI: personalised share)
    personalised: bool = True

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not _ID.match(value):
            raise ValueError(
                f"id {value!r}: use lower-case letters, digits, '-', '_' or '.', "
                "starting with a letter or digit"
            )
        return value

    @model_validator(mode="after")
    def _kind_fields(self) -> SegmentDefinition:
        if self.kind == "segment" and self.when is None:
            raise ValueError("when: a segment needs a condition")
        if self.kind == "suppression" and self.when is not None:
            raise ValueError("when: a suppression audience is defined by per and returns_exit, not when")
        return self

    def canonical_json(self) -> str:
        """Stable JSON of the definition (the hash and the definitions topic use it)."""
        data = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    def content_hash(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    def references(self) -> set[str]:
        """Ids of the segments this one's condition refers to."""
        found: set[str] = set()
        if self.when is not None:
            walk(self.when, lambda c: found.add(c.segment) if isinstance(c, SegmentRef) else None)
        return found


def walk(condition: BaseModel, visit: Callable[[BaseModel], None]) -> None:
    """Call ``visit`` on ``condition`` and every condition nested in it."""
    visit(condition)
    if isinstance(condition, AllOf):
        for child in condition.all:
            walk(child, visit)
    elif isinstance(condition, AnyOf):
        for child in condition.any:
            walk(child, visit)
    elif isinstance(condition, NotOf):
        walk(condition.not_, visit)


AllOf.model_rebuild()
AnyOf.model_rebuild()
NotOf.model_rebuild()
SegmentDefinition.model_rebuild()
