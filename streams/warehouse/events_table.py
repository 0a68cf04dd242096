"""Raw Kafka record bytes -> ClickHouse column batches for ``events`` and ``invalid_events``.

Pure conversion: no Kafka, no ClickHouse client, no asyncio. The sink hands each record's bytes here and
gets columns ready for ``client.execute("INSERT INTO events (...) VALUES", columns, columnar=True)``.

Records written with the current event schema take the fast path (the compiled tuple reader in
``row_decoder``, about 2.5x cheaper than fastavro with logical types). Records from an older writer
schema in ``schemas/history/`` are resolved by ``EVENT_CODEC`` and brought into the same tuple shape, so
both paths fill the columns through one function.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from streams.serde import EVENT_CODEC, HEADER_LEN, MAGIC, AvroCodec, SerializationError
from streams.warehouse.row_decoder import CorruptRecord, TupleReader, compile_reader, read_body

EVENT_COLUMNS: tuple[str, ...] = (
    "message_id", "type", "channel", "source", "event", "name",
    "anonymous_id", "user_id", "previous_id", "group_id",
    "email", "phone", "esp_subscriber_id", "loyalty_card", "crm_id",
    "device_id", "advertising_id", "device_type",
    "ip", "user_agent", "locale", "timezone",
    "page_url", "page_path", "page_referrer",
    "campaign_name", "campaign_source", "campaign_medium",
    "store_id", "terminal_id", "transaction_id",
    "line_sku", "line_ean", "line_app_product_id", "line_quantity", "line_unit_price", "line_currency",
    "currency", "traits", "properties",
    "timestamp", "timestamp_ms", "sent_at_ms", "received_at",
    "kafka_partition", "kafka_offset",
)  # fmt: skip

INVALID_COLUMNS: tuple[str, ...] = (
    "stage", "reason", "field", "source", "position", "original", "received_at",
    "kafka_partition", "kafka_offset",
)  # fmt: skip


def _field_index(schema: dict[str, Any], name: str) -> int:
    for number, field in enumerate(schema["fields"]):
        if field["name"] == name:
            return number
    raise KeyError(f"{schema['name']} has no field {name!r}")


def _record_schema(field_type: Any) -> dict[str, Any]:
    """The record inside ``field_type`` (a record, or a ``["null", record]`` union)."""
    if isinstance(field_type, list):
        field_type = next(branch for branch in field_type if isinstance(branch, dict))
    if isinstance(field_type, dict) and field_type.get("type") == "array":
        return _record_schema(field_type["items"])
    assert isinstance(field_type, dict) and field_type["type"] == "record", field_type
    return field_type


def _to_tuple(schema: Any, value: Any) -> Any:
    """A fastavro-decoded value (dicts, datetimes) in the compiled reader's shape (tuples, ms longs)."""
    if value is None:
        return None
    if isinstance(schema, list):
        branches = [branch for branch in schema if branch != "null"]
        if len(branches) != 1:
            raise SerializationError("only [null, X] unions are supported in event records")
        return _to_tuple(branches[0], value)
    if isinstance(schema, dict):
        kind = schema["type"]
        if kind == "record":
            return tuple(_to_tuple(f["type"], value.get(f["name"])) for f in schema["fields"])
        if kind == "array":
            return [_to_tuple(schema["items"], item) for item in value]
        if isinstance(value, datetime):
            return int(value.timestamp() * 1000)
    return value


class EventDecoder:
    """Decodes Avro single-object event bytes into row tuples (current schema field order)."""

    def __init__(self, codec: AvroCodec = EVENT_CODEC) -> None:
        self._codec = codec
        self._schema: dict[str, Any] = codec.current.parsed
        self._fingerprint = codec.current.fingerprint
        self._reader: TupleReader = compile_reader(self._schema)

    @property
    def schema(self) -> dict[str, Any]:
        return self._schema

    def decode(self, data: bytes) -> tuple[Any, ...]:
        """One record as a tuple; raises ``SerializationError`` saying why it is not a valid event."""
        if len(data) < HEADER_LEN or data[:2] != MAGIC:
            raise SerializationError(
                f"not an Avro single-object record (expected header C3 01, got {data[:2].hex() or 'nothing'})"
            )
        if data[2:HEADER_LEN] == self._fingerprint:
            try:
                row: tuple[Any, ...] = read_body(self._reader, data, HEADER_LEN)
            except CorruptRecord as exc:
                raise SerializationError(f"corrupt {self._schema['name']} record: {exc}") from exc
            return row
        # An older writer schema (or an unknown fingerprint, which the codec reports clearly).
        resolved = self._codec.decode(data)
        converted: tuple[Any, ...] = _to_tuple(self._schema, resolved)
        return converted


def _layout(schema: dict[str, Any]) -> dict[str, int]:
    context = _record_schema(schema["fields"][_field_index(schema, "context")]["type"])
    identifiers = _record_schema(schema["fields"][_field_index(schema, "identifiers")]["type"])
    store = _record_schema(schema["fields"][_field_index(schema, "store")]["type"])
    line = _record_schema(schema["fields"][_field_index(schema, "lines")]["type"])
    device = _record_schema(context["fields"][_field_index(context, "device")]["type"])
    page = _record_schema(context["fields"][_field_index(context, "page")]["type"])
    campaign = _record_schema(context["fields"][_field_index(context, "campaign")]["type"])
    layout = {name: _field_index(schema, name) for name in (
        "messageId", "type", "event", "name", "anonymousId", "userId", "previousId", "groupId",
        "traits", "properties", "context", "identifiers", "store", "lines",
        "timestamp", "sentAt", "receivedAt",
    )}  # fmt: skip
    for prefix, record, names in (
        ("ctx.", context, ("channel", "source", "ip", "userAgent", "locale", "timezone",
                           "device", "page", "campaign")),
        ("ids.", identifiers, ("email", "phone", "espSubscriberId", "loyaltyCard", "crmId")),
        ("store.", store, ("storeId", "terminalId", "transactionId")),
        ("line.", line, ("sku", "ean", "appProductId", "quantity", "unitPrice", "currency")),
        ("device.", device, ("id", "advertisingId", "type")),
        ("page.", page, ("url", "path", "referrer")),
        ("campaign.", campaign, ("name", "source", "medium")),
    ):  # fmt: skip
        for name in names:
            layout[prefix + name] = _field_index(record, name)
    return layout


_L = _layout(EVENT_CODEC.current.parsed)


class EventColumns:
    """A growing batch of ``events`` rows, kept as one list per column (``EVENT_COLUMNS`` order)."""

    __slots__ = ("columns", "rows")

    def __init__(self) -> None:
        self.columns: list[list[Any]] = [[] for _ in EVENT_COLUMNS]
        self.rows = 0

    def __len__(self) -> int:
        return self.rows

    def append(self, row: tuple[Any, ...], partition: int, offset: int) -> None:
        """Add one decoded event (a tuple from :class:`EventDecoder`) read at ``partition``/``offset``."""
        L = _L
        ctx = row[L["context"]]
        ids = row[L["identifiers"]]
        store = row[L["store"]]
        device = ctx[L["ctx.device"]]
        page = ctx[L["ctx.page"]]
        campaign = ctx[L["ctx.campaign"]]
        lines = row[L["lines"]]
        timestamp_ms = row[L["timestamp"]]
        values = (
            row[L["messageId"]],
            row[L["type"]],
            ctx[L["ctx.channel"]],
            ctx[L["ctx.source"]] or "",
            row[L["event"]] or "",
            row[L["name"]] or "",
            row[L["anonymousId"]] or "",
            row[L["userId"]] or "",
            row[L["previousId"]] or "",
            row[L["groupId"]] or "",
            ids[L["ids.email"]] or "",
            ids[L["ids.phone"]] or "",
            ids[L["ids.espSubscriberId"]] or "",
            ids[L["ids.loyaltyCard"]] or "",
            ids[L["ids.crmId"]] or "",
            (device[L["device.id"]] or "") if device else "",
            (device[L["device.advertisingId"]] or "") if device else "",
            (device[L["device.type"]] or "") if device else "",
            ctx[L["ctx.ip"]] or "",
            ctx[L["ctx.userAgent"]] or "",
            ctx[L["ctx.locale"]] or "",
            ctx[L["ctx.timezone"]] or "",
            (page[L["page.url"]] or "") if page else "",
            (page[L["page.path"]] or "") if page else "",
            (page[L["page.referrer"]] or "") if page else "",
            (campaign[L["campaign.name"]] or "") if campaign else "",
            (campaign[L["campaign.source"]] or "") if campaign else "",
            (campaign[L["campaign.medium"]] or "") if campaign else "",
            store[L["store.storeId"]] if store else "",
            (store[L["store.terminalId"]] or "") if store else "",
            (store[L["store.transactionId"]] or "") if store else "",
        )
        columns = self.columns
        for column, value in zip(columns, values, strict=False):
            column.append(value)
        base = len(values)
        if lines:
            currencies = [line[L["line.currency"]] or "" for line in lines]
            columns[base].append([line[L["line.sku"]] or "" for line in lines])
            columns[base + 1].append([line[L["line.ean"]] or "" for line in lines])
            columns[base + 2].append([line[L["line.appProductId"]] or "" for line in lines])
            columns[base + 3].append([line[L["line.quantity"]] for line in lines])
            columns[base + 4].append([_finite_or_none(line[L["line.unitPrice"]]) for line in lines])
            columns[base + 5].append(currencies)
            columns[base + 6].append(next((c for c in currencies if c), ""))
        else:
            for number in range(6):
                columns[base + number].append([])
            columns[base + 6].append("")
        sent_at = row[L["sentAt"]]
        columns[base + 7].append(row[L["traits"]] or "")
        columns[base + 8].append(row[L["properties"]] or "")
        columns[base + 9].append(_seconds(timestamp_ms))
        columns[base + 10].append(max(timestamp_ms, 0))
        columns[base + 11].append(max(sent_at, 0) if sent_at is not None else 0)
        columns[base + 12].append(_seconds(row[L["receivedAt"]]))
        columns[base + 13].append(partition)
        columns[base + 14].append(offset)
        self.rows += 1


# ClickHouse DateTime is UInt32 seconds; clamp so an absurd client clock cannot fail the whole batch.
_MAX_DATETIME = 2**32 - 1


def _seconds(millis: int) -> int:
    return min(max(millis // 1000, 0), _MAX_DATETIME)


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


class InvalidColumns:
    """A growing batch of ``invalid_events`` rows (``INVALID_COLUMNS`` order)."""

    __slots__ = ("columns", "rows")

    def __init__(self) -> None:
        self.columns: list[list[Any]] = [[] for _ in INVALID_COLUMNS]
        self.rows = 0

    def __len__(self) -> int:
        return self.rows

    def append_record(self, record: dict[str, Any], partition: int, offset: int) -> None:
        """Add one decoded ``InvalidRecord`` (as ``INVALID_CODEC.decode`` returns it)."""
        received = record["receivedAt"]
        millis = int(received.timestamp() * 1000) if isinstance(received, datetime) else int(received)
        self.append(
            stage=record["stage"],
            reason=record["reason"],
            field=record.get("field") or "",
            source=record.get("source") or "",
            position=record.get("position") or "",
            original=record["original"],
            received_at_ms=millis,
            partition=partition,
            offset=offset,
        )

    def append(
        self,
        *,
        stage: str,
        reason: str,
        field: str,
        source: str,
        position: str,
        original: bytes,
        received_at_ms: int,
        partition: int,
        offset: int,
    ) -> None:
        values = (stage, reason, field, source, position, original, _seconds(received_at_ms))
        for column, value in zip(self.columns, (*values, partition, offset), strict=True):
            column.append(value)
        self.rows += 1
