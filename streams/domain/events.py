"""The event envelope (Segment Spec plus the identifiers each channel really has).

These pydantic models mirror ``schemas/event.avsc`` field for field (``tests/unit/domain/test_contract.py``).
``Event.from_segment`` turns a Segment-spec JSON call into an Event, ``Event.to_avro`` gives the record
that goes on the wire.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from streams.domain.event_time import corrected_timestamp, out_of_range

EventType = Literal["track", "identify", "page", "screen", "alias", "group"]
ChannelName = Literal["web", "app", "email", "store"]
EVENT_TYPES: tuple[str, ...] = ("track", "identify", "page", "screen", "alias", "group")

_MAX_ID = 256
# A float holds every integer up to 2**53 exactly; a larger one may already differ from what was sent.
_EXACT_FLOAT_LIMIT = 2**53
UUID_PATTERN = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
# orjson turns an integer outside [-2**63, 2**64) into a float: a negative one of 19 digits may
# already be outside, so every run of 19 digits or more takes the exact path.
_LONG_DIGITS = re.compile(rb"\d{19}")


def loads_json(data: bytes) -> Any:
    """Parse JSON keeping every integer exact (orjson rounds those beyond 64 bits to floats).

    Raises ``ValueError`` (``orjson.JSONDecodeError`` is one) for text that is not JSON.
    """
    value = orjson.loads(data)
    if _LONG_DIGITS.search(data) is None:
        return value
    # Rare: a run of 19+ digits (a big number, or digits inside a string). The standard library
    # parses integers exactly; orjson already proved the text is strict JSON.
    return json.loads(data)


def _id_or_none(value: Any) -> Any:
    # Segment accepts numeric ids; keep them as their decimal text, exactly. Other types fail validation.
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if abs(value) >= _EXACT_FLOAT_LIMIT:
            raise ValueError(
                f"the number {value!r} is too large to keep exactly as an id; send the id as a string"
            )
        return str(int(value)) if value.is_integer() else str(value)
    if isinstance(value, str) and not value.strip():
        return None
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, str_max_length=8192)


class Device(_Model):
    id: str | None = None
    advertisingId: str | None = None
    adTrackingEnabled: bool | None = None
    type: str | None = None
    manufacturer: str | None = None
    model: str | None = None


class Page(_Model):
    path: str | None = None
    referrer: str | None = None
    search: str | None = None
    title: str | None = None
    url: str | None = None


class Campaign(_Model):
    name: str | None = None
    source: str | None = None
    medium: str | None = None
    term: str | None = None
    content: str | None = None


class Library(_Model):
    name: str | None = None
    version: str | None = None


# A consent manager sends a handful of categories; the bound keeps a hostile payload small.
MAX_CONSENT_CATEGORIES = 64


class Consent(_Model):
    """``context.consent`` of the Segment Consent Management spec: category -> granted, strictly boolean
    (``"false"`` is refused, not read as true)."""

    categoryPreferences: dict[str, StrictBool] = Field(
        default_factory=dict, max_length=MAX_CONSENT_CATEGORIES
    )


class Context(_Model):
    channel: ChannelName
    source: str | None = None
    ip: str | None = None
    userAgent: str | None = None
    locale: str | None = None
    timezone: str | None = None
    device: Device | None = None
    page: Page | None = None
    campaign: Campaign | None = None
    library: Library | None = None
    consent: Consent | None = None


class Identifiers(_Model):
    email: str | None = Field(default=None, max_length=_MAX_ID)
    phone: str | None = Field(default=None, max_length=_MAX_ID)
    espSubscriberId: str | None = Field(default=None, max_length=_MAX_ID)
    loyaltyCard: str | None = Field(default=None, max_length=_MAX_ID)
    crmId: str | None = Field(default=None, max_length=_MAX_ID)

    _ids = field_validator("*", mode="before")(_id_or_none)


class Store(_Model):
    storeId: str = Field(min_length=1, max_length=_MAX_ID)
    terminalId: str | None = None
    transactionId: str | None = None

    _ids = field_validator("*", mode="before")(_id_or_none)


class Line(_Model):
    sku: str | None = None
    ean: str | None = None
    appProductId: str | None = None
    quantity: float = 1.0
    unitPrice: float | None = None
    currency: str | None = Field(default=None, max_length=3)

    _ids = field_validator("sku", "ean", "appProductId", mode="before")(_id_or_none)


class Event(_Model):
    """One validated event, ready to be written as Avro."""

    messageId: str = Field(min_length=1, max_length=_MAX_ID)
    type: EventType
    event: str | None = Field(default=None, max_length=_MAX_ID)
    name: str | None = Field(default=None, max_length=_MAX_ID)
    anonymousId: str | None = Field(default=None, max_length=_MAX_ID)
    userId: str | None = Field(default=None, max_length=_MAX_ID)
    previousId: str | None = Field(default=None, max_length=_MAX_ID)
    groupId: str | None = Field(default=None, max_length=_MAX_ID)
    traits: dict[str, Any] | None = None
    properties: dict[str, Any] | None = None
    context: Context
    identifiers: Identifiers = Identifiers()
    store: Store | None = None
    lines: list[Line] = Field(default_factory=list, max_length=1000)
    timestamp: datetime
    sentAt: datetime | None = None
    receivedAt: datetime
    originalTimestamp: datetime | None = None

    _ids = field_validator("messageId", "anonymousId", "userId", "previousId", "groupId", mode="before")(
        _id_or_none
    )

    @field_validator("timestamp", "sentAt", "receivedAt", "originalTimestamp")
    @classmethod
    def _aware_utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        try:
            return value.astimezone(UTC)
        except OverflowError:  # e.g. 0001-01-01T00:00+01:00: before year 1 in UTC
            raise ValueError("a time out of range in UTC (beyond the year 9999 or before year 1)") from None

    @model_validator(mode="after")
    def _segment_rules(self) -> Event:
        if self.type == "track" and not self.event:
            raise ValueError("event: a track call needs an event name")
        if self.type == "alias" and not (self.previousId and self.userId):
            raise ValueError("previousId: an alias call needs previousId and userId")
        if self.type == "group" and not self.groupId:
            raise ValueError("groupId: a group call needs groupId")
        consent = (self.traits or {}).get("consent")
        if consent is not None:
            if not isinstance(consent, dict) or len(consent) > MAX_CONSENT_CATEGORIES:
                raise ValueError(
                    f"traits.consent: expected an object of at most {MAX_CONSENT_CATEGORIES} "
                    "purposes, each true or false"
                )
            for purpose, granted in consent.items():
                if not isinstance(granted, bool):
                    raise ValueError(
                        f"traits.consent.{purpose}: expected true or false, got {type(granted).__name__}"
                    )
        if not self.has_identifier():
            raise ValueError(
                "userId: no identifier; send userId or anonymousId (or an email, phone, "
                "loyaltyCard, espSubscriberId, crmId or context.device id)"
            )
        return self

    def has_identifier(self) -> bool:
        ids = self.identifiers
        device = self.context.device
        return any(
            (
                self.userId,
                self.anonymousId,
                ids.email,
                ids.phone,
                ids.espSubscriberId,
                ids.loyaltyCard,
                ids.crmId,
                device is not None and (device.id or device.advertisingId),
            )
        )

    def partition_key(self) -> bytes:
        """The source identifier the raw topics are keyed by (most specific first)."""
        ids = self.identifiers
        device = self.context.device
        for value in (
            self.userId,
            ids.crmId,
            ids.loyaltyCard,
            ids.email,
            ids.espSubscriberId,
            ids.phone,
            device.id if device else None,
            device.advertisingId if device else None,
            self.anonymousId,
        ):
            if value:
                return value.encode()
        return self.messageId.encode()

    def to_avro(self) -> dict[str, Any]:
        """The record for ``schemas/event.avsc`` (traits and properties become JSON text)."""
        record = self.model_dump()
        record["traits"] = _json_text(self.traits)
        record["properties"] = _json_text(self.properties)
        return record

    @classmethod
    def from_avro(cls, record: dict[str, Any]) -> Event:
        data = dict(record)
        for key in ("traits", "properties"):
            if data.get(key) is not None:
                # stdlib json keeps integers beyond 64 bits exact (orjson turns them into floats).
                data[key] = json.loads(data[key])
        return cls.model_validate(data)

    @classmethod
    def from_segment(
        cls,
        payload: dict[str, Any],
        *,
        channel: ChannelName,
        source: str | None,
        received_at: datetime,
        call_type: str | None = None,
        correct_clock: bool = False,
    ) -> Event:
        """Build an Event from one Segment-spec call (as sent to ``/v1/<type>`` or inside a batch).

        Standard Segment fields map one to one. Channel identifiers come from the omniseg
        ``identifiers`` object and from ``traits``/``context.traits`` (email, phone; the two must
        agree); product lines from ``lines``, else from ``properties.products`` (Segment e-commerce
        spec). ``originalTimestamp`` keeps the client's ``timestamp`` as sent; with ``correct_clock``
        (live calls, not imports) ``timestamp`` is corrected for the client's clock
        (:mod:`streams.domain.event_time`). Refused: an event time outside the range ClickHouse and
        segments can use, and an advertising id that is not a UUID.
        Raises ``pydantic.ValidationError`` naming the wrong field.
        """
        data = dict(payload)
        if call_type is not None:
            data["type"] = call_type
        raw_context = data.get("context")
        context = dict(raw_context) if isinstance(raw_context, dict) else {}
        if raw_context is None or isinstance(raw_context, dict):
            # The write key decides channel and source; a client cannot claim another.
            context["channel"] = channel
            context["source"] = source
            data["context"] = context
        data["receivedAt"] = received_at
        stamped = data.get("timestamp")
        if stamped is None:
            stamped = data.get("originalTimestamp")
        if data.get("originalTimestamp") is None:
            data["originalTimestamp"] = stamped
        data["timestamp"] = received_at if stamped is None else stamped
        from_traits = _identifiers_from_traits(data, context)
        identifiers = data.get("identifiers")
        if identifiers is None:
            data["identifiers"] = {key: value for key, (value, _) in from_traits.items()}
        elif isinstance(identifiers, dict) and from_traits:
            data["identifiers"] = _merge_identifiers(identifiers, from_traits)
        if "lines" not in data:
            lines = _lines_from_products(data.get("properties"), channel)
            if lines:
                data["lines"] = lines
        return cls.model_validate(data)._checked_at_intake(correct_clock)

    def _checked_at_intake(self, correct_clock: bool) -> Event:
        timestamp = self.timestamp
        if correct_clock:
            timestamp = corrected_timestamp(timestamp, self.sentAt, self.receivedAt)
        problem = out_of_range(timestamp, self.receivedAt)
        if problem is not None:
            if timestamp != self.timestamp:
                problem += " (after correcting the client's clock by sentAt)"
            raise _field_error(("timestamp",), problem, self.originalTimestamp)
        device = self.context.device
        ad_id = device.advertisingId.strip() if device is not None and device.advertisingId else ""
        if ad_id and not UUID_PATTERN.fullmatch(ad_id):
            raise _field_error(
                ("context", "device", "advertisingId"),
                "not a UUID; an advertising id (IDFA, GAID) looks like 6d92078a-8246-4ba4-ae5b-76104861e7dc "
                "(leave it out when the device has none)",
                ad_id,
            )
        return self if timestamp == self.timestamp else self.model_copy(update={"timestamp": timestamp})


def _field_error(loc: tuple[str, ...], message: str, value: Any) -> ValidationError:
    """A ValidationError for one field, as pydantic would raise it, so callers report it the same way."""
    detail = InitErrorDetails(type=PydanticCustomError("intake", message), loc=loc, input=value)
    return ValidationError.from_exception_data("Event", [detail])


def _merge_identifiers(given: dict[str, Any], from_traits: dict[str, tuple[str, str]]) -> dict[str, Any]:
    # The identifiers object and the traits both name the person; take every identifier either
    # gives, and refuse two different ones rather than pick one silently.
    merged = dict(given)
    for key, (value, where) in from_traits.items():
        current = merged.get(key)
        if current is None or (isinstance(current, str) and not current.strip()):
            merged[key] = value
        elif isinstance(current, str) and not _same_identifier(key, current, value):
            raise _field_error(
                (*where.split("."), key),
                f"differs from identifiers.{key} in the same call; send one {key} (or the same in both)",
                value,
            )
    return merged


def _same_identifier(kind: str, first: str, second: str) -> bool:
    if kind == "phone":
        # The same number written with or without country code, spaces or dashes.
        digits_first, digits_second = re.sub(r"\D", "", first), re.sub(r"\D", "", second)
        return digits_first[-9:] == digits_second[-9:]
    return first.strip().casefold() == second.strip().casefold()


def _json_text(value: dict[str, Any] | None) -> str | None:
    if value is None:
        return None
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        # orjson refuses integers beyond 64 bits; the standard library keeps them exact.
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _identifiers_from_traits(data: dict[str, Any], context: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """email and phone from ``traits`` (first) or ``context.traits``, each with where it was found."""
    found: dict[str, tuple[str, str]] = {}
    for where, traits in (("traits", data.get("traits")), ("context.traits", context.get("traits"))):
        if isinstance(traits, dict):
            for key in ("email", "phone"):
                value = traits.get(key)
                if key not in found and isinstance(value, str) and value.strip():
                    found[key] = (value, where)
    return found


def _lines_from_products(properties: Any, channel: ChannelName) -> list[dict[str, Any]]:
    if not isinstance(properties, dict):
        return []
    products = properties.get("products")
    if not isinstance(products, list):
        return []
    lines: list[dict[str, Any]] = []
    for product in products:
        if not isinstance(product, dict):
            continue
        product_id = product.get("product_id") or product.get("productId")
        lines.append(
            {
                "sku": product.get("sku") or (product_id if channel == "web" else None),
                "ean": product.get("ean"),
                "appProductId": product_id if channel == "app" else None,
                "quantity": product.get("quantity", 1),
                "unitPrice": product.get("price"),
                "currency": properties.get("currency"),
            }
        )
    return lines
