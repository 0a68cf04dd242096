"""Identity topic records -> ClickHouse column batches for the tables of migration 0003.

Pure conversion: no Kafka, no ClickHouse client. The identity sink decodes each record and hands it
here; :class:`IdentityBatch` keeps one growing columnar batch per table, ready for
``client.execute("INSERT INTO <table> (...) VALUES", columns, columnar=True)``.

- ``identity.assignments`` -> ``identities`` (one row per assignment version);
- ``identity.changes`` -> ``identity_merges`` (+ ``person_aliases``: one row per id in
  ``mergedPersonIds``, each now mapping to the survivor) or ``identity_rejections``;
- ``events.resolved`` -> ``event_persons``, with each event's revenue as ``streams/domain/revenue.py``
  defines it (the segment engine's definition: + a purchase's value, - a return's, 0 otherwise).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import orjson

from streams.domain.revenue import STATED_KEYS, event_value, moves_revenue, signed_revenue
from streams.wire.codecs import RESOLVED_CODEC

ASSIGNMENT_COLUMNS: tuple[str, ...] = (
    "identifier", "kind", "value", "person_id", "version", "first_seen", "at", "at_ms",
    "kafka_partition", "kafka_offset",
)  # fmt: skip
MERGE_COLUMNS: tuple[str, ...] = (
    "change_id", "person_id", "merged_person_id", "merged_person_ids", "identifiers", "reason",
    "message_id", "channel", "at", "at_ms", "kafka_partition", "kafka_offset",
)  # fmt: skip
REJECTION_COLUMNS: tuple[str, ...] = (
    "change_id", "person_id", "identifier", "identifiers", "conflicting_person_id", "reason",
    "message_id", "channel", "at", "at_ms", "kafka_partition", "kafka_offset",
)  # fmt: skip
ALIAS_COLUMNS: tuple[str, ...] = ("person_id", "canonical_person_id", "change_id", "version")
EVENT_PERSON_COLUMNS: tuple[str, ...] = (
    "message_id", "channel", "type", "event", "name", "source", "person_id", "identifiers",
    "anonymous_id", "user_id", "page_path", "store_id", "revenue", "currency",
    "timestamp", "timestamp_ms", "received_at", "resolved_at", "resolved_at_ms",
    "kafka_partition", "kafka_offset",
)  # fmt: skip

# ClickHouse DateTime is UInt32 seconds; clamp so an absurd client clock cannot fail a whole batch.
_MAX_DATETIME = 2**32 - 1


def datetime_seconds(millis: int) -> int:
    return min(max(millis // 1000, 0), _MAX_DATETIME)


# Properties are JSON text; only a purchase or return whose text names a stated value is parsed.
_STATED_NEEDLES = tuple(f'"{key}"' for key in STATED_KEYS)


def _stated_properties(text: str | None) -> dict[str, Any]:
    """The event's properties when they may state its value (``{}`` otherwise, or when unreadable)."""
    if not text or not any(needle in text for needle in _STATED_NEEDLES):
        return {}
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def epoch_millis(value: Any) -> int:
    """A decoded ``timestamp-millis``: fastavro gives an aware datetime, the compiled reader a long."""
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    return int(value)


class Columns:
    """A growing columnar batch for one table."""

    __slots__ = ("columns", "names", "rows")

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        self.columns: list[list[Any]] = [[] for _ in self.names]
        self.rows = 0

    def __len__(self) -> int:
        return self.rows

    def append(self, values: Sequence[Any]) -> None:
        for column, value in zip(self.columns, values, strict=True):
            column.append(value)
        self.rows += 1


def _index(fields: Sequence[dict[str, Any]], name: str) -> int:
    for number, field in enumerate(fields):
        if field["name"] == name:
            return number
    raise KeyError(name)


def _record(field_type: Any) -> dict[str, Any]:
    """The record schema inside a field type: a record, ``["null", record]`` or an array of records."""
    if isinstance(field_type, list):
        field_type = next(branch for branch in field_type if isinstance(branch, dict))
    if field_type.get("type") == "array":
        return _record(field_type["items"])
    assert field_type["type"] == "record", field_type
    record: dict[str, Any] = field_type
    return record


class _ResolvedLayout:
    """Tuple indices of the fields the sink copies, taken from the current resolved_event schema."""

    def __init__(self, schema: dict[str, Any]) -> None:
        top = schema["fields"]
        self.person_id = _index(top, "personId")
        self.identifiers = _index(top, "identifiers")
        self.resolved_at = _index(top, "resolvedAt")
        self.event = _index(top, "event")
        event = _record(top[self.event]["type"])["fields"]
        for name in ("messageId", "type", "event", "name", "anonymousId", "userId", "properties", "context",
                     "store", "lines", "timestamp", "receivedAt"):  # fmt: skip
            setattr(self, f"e_{name}", _index(event, name))
        context = _record(event[_index(event, "context")]["type"])["fields"]
        self.c_channel = _index(context, "channel")
        self.c_source = _index(context, "source")
        self.c_page = _index(context, "page")
        self.page_path = _index(_record(context[self.c_page]["type"])["fields"], "path")
        self.store_id = _index(_record(event[_index(event, "store")]["type"])["fields"], "storeId")
        line = _record(event[_index(event, "lines")]["type"])["fields"]
        self.l_quantity = _index(line, "quantity")
        self.l_price = _index(line, "unitPrice")
        self.l_currency = _index(line, "currency")

    e_messageId: int
    e_type: int
    e_event: int
    e_name: int
    e_anonymousId: int
    e_userId: int
    e_properties: int
    e_context: int
    e_store: int
    e_lines: int
    e_timestamp: int
    e_receivedAt: int


class IdentityBatch:
    """One batch of rows for every identity table, in the order the records were read."""

    def __init__(self) -> None:
        self.identities = Columns(ASSIGNMENT_COLUMNS)
        self.merges = Columns(MERGE_COLUMNS)
        self.rejections = Columns(REJECTION_COLUMNS)
        self.aliases = Columns(ALIAS_COLUMNS)
        self.event_persons = Columns(EVENT_PERSON_COLUMNS)
        self._layout = _ResolvedLayout(RESOLVED_CODEC.current.parsed)

    def __len__(self) -> int:
        return len(self.identities) + len(self.merges) + len(self.rejections) + len(self.event_persons)

    def tables(self) -> Iterator[tuple[str, Columns]]:
        """The non-empty tables, each with its columns. Aliases go after merges, events last."""
        for table, columns in (
            ("identities", self.identities),
            ("identity_merges", self.merges),
            ("person_aliases", self.aliases),
            ("identity_rejections", self.rejections),
            ("event_persons", self.event_persons),
        ):
            if len(columns):
                yield table, columns

    def add_assignment(self, record: dict[str, Any], partition: int, offset: int) -> None:
        """One decoded ``IdentityAssignment``."""
        identifier: str = record["identifier"]
        kind, _, value = identifier.partition(":")
        at_ms = epoch_millis(record["at"])
        self.identities.append(
            (
                identifier,
                record["kind"] or kind,
                value,
                record["personId"],
                max(int(record["version"]), 0),
                datetime_seconds(epoch_millis(record["firstSeen"])),
                datetime_seconds(at_ms),
                max(at_ms, 0),
                partition,
                offset,
            )
        )

    def add_change(self, record: dict[str, Any], partition: int, offset: int) -> None:
        """One decoded ``IdentityChange``: a merge (and its aliases) or a rejection."""
        at_ms = epoch_millis(record["at"])
        change_id: str = record["changeId"]
        survivor: str = record["personId"]
        identifiers: list[str] = list(record.get("identifiers") or [])
        common = (record.get("reason") or "", record["messageId"], record.get("channel") or "")
        tail = (datetime_seconds(at_ms), max(at_ms, 0), partition, offset)
        kind = record["kind"]
        if kind == "erased":
            return  # the erasure deletes the person's rows itself (streams/privacy/erasure.py)
        if kind == "merged":
            merged: str = record.get("mergedPersonId") or ""
            # Records written before mergedPersonIds existed name only the merged person itself.
            merged_ids = list(record.get("mergedPersonIds") or ([merged] if merged else []))
            self.merges.append((change_id, survivor, merged, merged_ids, identifiers, *common, *tail))
            for old in dict.fromkeys(merged_ids):
                if old and old != survivor:
                    self.aliases.append((old, survivor, change_id, max(at_ms, 0)))
            return
        refused = identifiers[0] if identifiers else ""
        conflicting = record.get("conflictingPersonId") or ""
        self.rejections.append((change_id, survivor, refused, identifiers, conflicting, *common, *tail))

    def add_resolved(self, row: tuple[Any, ...], partition: int, offset: int) -> None:
        """One resolved event as :class:`ResolvedDecoder` returns it."""
        lay = self._layout
        event = row[lay.event]
        context = event[lay.e_context]
        page = context[lay.c_page]
        store = event[lay.e_store]
        name: str = event[lay.e_event] or ""
        lines = event[lay.e_lines]
        currency = ""
        for line in lines:
            currency = line[lay.l_currency] or ""
            if currency:
                break
        revenue = 0.0
        if moves_revenue(name):
            properties = _stated_properties(event[lay.e_properties])
            quantity, price = lay.l_quantity, lay.l_price
            value = event_value(properties, [(line[quantity], line[price]) for line in lines])
            revenue = signed_revenue(name, value)
            if not currency and isinstance(properties.get("currency"), str):
                currency = properties["currency"]
        timestamp_ms = int(event[lay.e_timestamp])
        resolved_ms = int(row[lay.resolved_at])
        self.event_persons.append(
            (
                event[lay.e_messageId],
                context[lay.c_channel],
                event[lay.e_type],
                name,
                event[lay.e_name] or "",
                context[lay.c_source] or "",
                row[lay.person_id],
                list(row[lay.identifiers]),
                event[lay.e_anonymousId] or "",
                event[lay.e_userId] or "",
                (page[lay.page_path] or "") if page is not None else "",
                store[lay.store_id] if store is not None else "",
                revenue,
                currency,
                datetime_seconds(timestamp_ms),
                max(timestamp_ms, 0),
                datetime_seconds(int(event[lay.e_receivedAt])),
                datetime_seconds(resolved_ms),
                max(resolved_ms, 0),
                partition,
                offset,
            )
        )
