"""The fast path of an import: the lines of one CSV event straight to its ``events.<channel>`` record.

Validating each event with the pydantic model and writing it with fastavro costs most of an import's
time. A POS or consent export is plain: short text cells, ISO 8601 times, decimal numbers. For such an
event :class:`CsvEventWriter` checks what the model would check and assembles the Avro bytes itself.
Anything it does not recognise as plain (a long cell, another time format, a number it would have to
interpret, a missing identifier, a bad consent flag, a time out of range, an unusual column) returns
None, and the importer takes the model's path for that event, which gives the same record or the
reason the row is bad. ``tests/unit/sources/test_import_records.py`` proves both paths write the same
bytes.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from streams.domain.event_time import EARLIEST, MAX_AHEAD
from streams.domain.events import MAX_CONSENT_CATEGORIES, ChannelName
from streams.sources.import_rows import IDENTIFIER_COLUMNS
from streams.wire.codecs import EVENT_CODEC, MAGIC
from streams.wire.identity import avro_long

# Within every length limit of the model (ids 256, any text 8192): longer cells take the model's path.
_MAX_CELL = 256
_MAX_LINES = 1000
_MAX_CURRENCY = 3
# The event types whose only extra rule is a track's event name (alias and group need more).
_TYPES = {name: avro_long(index) for index, name in enumerate(("track", "identify", "page", "screen"))}
_CHANNELS = {name: avro_long(index) for index, name in enumerate(("web", "app", "email", "store"))}
# RFC 3339 as exports write it; other forms pydantic accepts (a space, unix seconds) take its path.
# ASCII digits only: Python's float() reads other scripts' digits, pydantic does not.
_ISO_TIME = re.compile(
    r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?(?:Z|[+-](?:[01]\d|2[0-3]):[0-5]\d)?", re.ASCII
)
_DECIMAL = re.compile(r"-?\d{1,15}(?:\.\d{1,15})?", re.ASCII)
_FLAGS = {"true": True, "false": False}
_EVENT_COLUMNS = frozenset(
    (
        *("type", "event", "messageId", "timestamp", "userId", "anonymousId", "campaign"),
        *("storeId", "terminalId", "transactionId", *IDENTIFIER_COLUMNS),
    )
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NULL = b"\x00"
_SOME = b"\x02"
_NULL2 = _NULL * 2
_EMPTY = b"\x00"
_DOUBLE = struct.Struct("<d").pack
_ONE = _DOUBLE(1.0)
_HEADER = MAGIC + EVENT_CODEC.current.fingerprint
# Partition key order of Event.partition_key() for what a CSV can hold (no device ids).
_KEY_IDENTIFIERS = ("crmId", "loyaltyCard", "email", "espSubscriberId", "phone")


_SMALL = [avro_long(n) for n in range(4096)]


def _text(value: str) -> bytes:
    data = value.encode()
    size = len(data)
    return (_SMALL[size] if size < 4096 else avro_long(size)) + data


def _optional(value: str | None) -> bytes:
    return _NULL if not value else _SOME + _text(value)


class _Encoded(dict[str, bytes]):
    """Cells that repeat (event names, stores, EANs, quantities) encoded once; cleared when it grows."""

    def __init__(self, encode: Callable[[str], bytes], limit: int = 100_000) -> None:
        super().__init__()
        self._encode = encode
        self._limit = limit

    def __missing__(self, value: str) -> bytes:
        if len(self) >= self._limit:
            self.clear()
        encoded = self[value] = self._encode(value)
        return encoded


def _decimal_bytes(text: str) -> bytes:
    """A decimal cell as an Avro double, or b"" when it is not plainly a number."""
    return _DOUBLE(float(text)) if _DECIMAL.fullmatch(text) else b""


def _millis(moment: datetime) -> int:
    # fastavro's timestamp-millis arithmetic for an aware datetime (microseconds truncated).
    delta = moment - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1000 + int(delta.microseconds / 1000)


def parse_time(text: str) -> datetime | None:
    """An ISO 8601 time in UTC as the model reads it (naive = UTC), or None when not plainly one."""
    if _ISO_TIME.fullmatch(text) is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    zone = moment.tzinfo
    if zone is UTC:
        return moment
    if zone is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        return None  # past year 9999 in UTC


class CsvEventWriter:
    """Writes plain CSV events of one import (one header, channel, source and receipt time)."""

    def __init__(
        self, header: Sequence[str], channel: ChannelName, source: str, received_at: datetime
    ) -> None:
        self.received_at = received_at
        self._latest = received_at + MAX_AHEAD
        self._received = avro_long(_millis(received_at))
        # context up to campaign (channel, source, ip, userAgent, locale, timezone, device, page) and after
        # it (library, consent): the same for every event of the import.
        self._context_head = _CHANNELS[channel] + _SOME + _text(source) + _NULL * 6
        self._context_tail = _NULL * 2
        prefixed = [name for name in header if "." in name]
        self._properties = [(n, n.split(".", 1)[1]) for n in prefixed if n.startswith("properties.")]
        self._traits = [(n, n.split(".", 1)[1]) for n in prefixed if n.startswith("traits.")]
        self._consent = [(n, n.split(".", 1)[1]) for n in prefixed if n.startswith("consent.")]
        trait_names = {name for _, name in self._traits}
        property_names = {name for _, name in self._properties}
        self.header = tuple(header)
        # The columns an event is built from (the rest are ignored, as the model's path ignores them).
        self._used = [name for name in header if name in _EVENT_COLUMNS or "." in name]
        self._optional = _Encoded(_optional)
        self._number = _Encoded(_decimal_bytes)
        # Columns whose meaning goes beyond copying text: the model reads email and phone in traits as
        # identifiers, a consent trait as consent, and products in properties as lines.
        self.plain_header = (
            not trait_names & {"email", "phone", "consent"}
            and "products" not in property_names
            and all(len(name) <= _MAX_CELL for name in header)
            and len(source) <= _MAX_CELL
        )

    def record(self, group: list[dict[str, str]], message_id: str | None) -> tuple[bytes, bytes] | None:
        """(partition key, Avro record) of a plain event, else None (the model's path decides).

        ``message_id``: the derived id, used when the lines carry none.
        """
        if not self.plain_header:
            return None
        first = group[0]
        cells: dict[str, str] = {}
        for column in self._used:
            value = first[column]
            if value:
                value = value.strip()
                if len(value) > _MAX_CELL:
                    return None
                cells[column] = value
        get = cells.get
        kind = get("type") or "track"
        type_index = _TYPES.get(kind)
        if type_index is None:
            return None
        event = get("event") or ("Order Completed" if kind == "track" else None)
        message = get("messageId") or message_id
        user_id = get("userId")
        anonymous_id = get("anonymousId")
        if not message:
            return None
        key = user_id
        if not key:
            for name in _KEY_IDENTIFIERS:
                if get(name):
                    key = get(name)
                    break
            else:
                key = anonymous_id
        if not key:
            return None  # no identifier: the model's path gives the reason
        stamped = get("timestamp")
        if stamped:
            moment = parse_time(stamped)
            # streams.domain.event_time.out_of_range: the model's path gives the reason.
            if moment is None or not EARLIEST <= moment <= self._latest:
                return None
            timestamp = avro_long(_millis(moment))
            original = _SOME + timestamp
        else:
            timestamp, original = self._received, _NULL
        traits = self._texts(cells, self._traits) if self._traits else None
        if self._consent:
            consent: dict[str, Any] = {}
            for column, purpose in self._consent:
                text = cells.get(column)
                if text:
                    flag = _FLAGS.get(text.lower())
                    if flag is None:
                        return None
                    consent[purpose] = flag
            if consent:
                if len(consent) > MAX_CONSENT_CATEGORIES:
                    return None
                traits = traits or {}
                traits["consent"] = consent
        properties = self._texts(cells, self._properties) if self._properties else None
        lines = self._lines(group)
        if lines is None:
            return None
        store_id = get("storeId")
        campaign = get("campaign")
        repeated = self._optional
        body = b"".join(
            (
                _HEADER,
                _text(message),
                type_index,
                repeated[event] if event else _NULL,
                _NULL,  # name
                _optional(anonymous_id),
                _optional(user_id),
                _NULL2,  # previousId, groupId
                _NULL if traits is None else _SOME + _text(orjson.dumps(traits).decode()),
                _NULL if properties is None else _SOME + _text(orjson.dumps(properties).decode()),
                self._context_head,
                _NULL if not campaign else _SOME + _optional(campaign) + _NULL * 4,
                self._context_tail,
                _optional(get("email")),
                _optional(get("phone")),
                _optional(get("espSubscriberId")),
                _optional(get("loyaltyCard")),
                _optional(get("crmId")),
                _NULL
                if not store_id
                else _SOME
                + repeated[store_id][1:]
                + repeated[get("terminalId") or ""]
                + _optional(get("transactionId")),
                lines,
                timestamp,
                _NULL,  # sentAt
                self._received,
                original,
            )
        )
        return key.encode(), body

    @staticmethod
    def _texts(cells: dict[str, str], columns: list[tuple[str, str]]) -> dict[str, Any] | None:
        values = {name: cells[column] for column, name in columns if cells.get(column)}
        return values or None

    def _lines(self, group: list[dict[str, str]]) -> bytes | None:
        """The ``lines`` array of the event, or None when a line is not plain."""
        items = []
        optional = self._optional
        number = self._number
        for record in group:
            sku = (record.get("sku") or "").strip()
            ean = (record.get("ean") or "").strip()
            app = (record.get("appProductId") or "").strip()
            if not (ean or sku or app):
                continue
            quantity = (record.get("quantity") or "").strip()
            price = (record.get("unitPrice") or "").strip()
            currency = (record.get("currency") or "").strip()
            if (
                len(sku) > _MAX_CELL
                or len(ean) > _MAX_CELL
                or len(app) > _MAX_CELL
                or len(currency) > _MAX_CURRENCY
            ):
                return None
            quantity_bytes = number[quantity] if quantity else _ONE
            price_bytes = _SOME + number[price] if price else _NULL
            if not quantity_bytes or (len(price_bytes) == 1 and price):
                return None
            items.append(
                optional[sku]
                + optional[ean]
                + optional[app]
                + quantity_bytes
                + price_bytes
                + optional[currency]
            )
        if not items:
            return _EMPTY
        if len(items) > _MAX_LINES:
            return None
        return _SMALL[len(items)] + b"".join(items) + _EMPTY
