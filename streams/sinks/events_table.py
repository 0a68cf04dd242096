"""Raw Kafka record bytes -> ClickHouse column batches for ``events`` and ``invalid_events``.

Pure conversion: no Kafka, no ClickHouse client, no asyncio. The sink hands each record's bytes here and
gets columns ready for ``client.execute("INSERT INTO events (...) VALUES", columns, columnar=True)``.

Records arrive decoded into tuples (``streams.wire.row_decoder.EventDecoder``: the compiled reader for
the current schema, older writer schemas resolved into the same shape), so every record fills the
columns through one function.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import orjson

from streams.wire.codecs import EVENT_CODEC

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
    "currency", "traits", "properties", "consent_categories", "consent_granted",
    "timestamp", "timestamp_ms", "sent_at_ms", "original_timestamp_ms", "received_at",
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
        "timestamp", "sentAt", "receivedAt", "originalTimestamp",
    )}  # fmt: skip
    for prefix, record, names in (
        ("ctx.", context, ("channel", "source", "ip", "userAgent", "locale", "timezone",
                           "device", "page", "campaign", "consent")),
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


# ClickHouse DateTime is UInt32 seconds; clamp so an absurd client clock cannot fail the whole batch.
_MAX_DATETIME = 2**32 - 1


def _seconds(millis: int) -> int:
    return min(max(millis // 1000, 0), _MAX_DATETIME)


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


# The row -> columns step runs once per event, so it is generated with the schema's field indices as
# literals (no lookups by name on the hot path). One line per column, in EVENT_COLUMNS order.
_APPEND_TEMPLATE = """
def append(self, row, partition, offset):
    ctx = row[{context}]
    ids = row[{identifiers}]
    store = row[{store}]
    device = ctx[{ctx_device}]
    page = ctx[{ctx_page}]
    campaign = ctx[{ctx_campaign}]
    lines = row[{lines}]
    timestamp_ms = row[{timestamp}]
    sent_at = row[{sentAt}]
    (a_message_id, a_type, a_channel, a_source, a_event, a_name, a_anonymous_id, a_user_id,
     a_previous_id, a_group_id, a_email, a_phone, a_esp, a_loyalty, a_crm, a_device_id, a_ad_id,
     a_device_type, a_ip, a_ua, a_locale, a_tz, a_page_url, a_page_path, a_page_referrer,
     a_campaign_name, a_campaign_source, a_campaign_medium, a_store_id, a_terminal_id,
     a_transaction_id, a_sku, a_ean, a_app_id, a_qty, a_price, a_line_currency, a_currency,
     a_traits, a_properties, a_consent_categories, a_consent_granted, a_timestamp, a_timestamp_ms,
     a_sent_at_ms, a_original_ms, a_received_at, a_partition, a_offset) = self.appends
    a_message_id(row[{messageId}])
    a_type(row[{type}])
    a_channel(ctx[{ctx_channel}])
    a_source(ctx[{ctx_source}] or "")
    a_event(row[{event}] or "")
    a_name(row[{name}] or "")
    a_anonymous_id(row[{anonymousId}] or "")
    a_user_id(row[{userId}] or "")
    a_previous_id(row[{previousId}] or "")
    a_group_id(row[{groupId}] or "")
    a_email(ids[{ids_email}] or "")
    a_phone(ids[{ids_phone}] or "")
    a_esp(ids[{ids_espSubscriberId}] or "")
    a_loyalty(ids[{ids_loyaltyCard}] or "")
    a_crm(ids[{ids_crmId}] or "")
    if device is None:
        a_device_id("")
        a_ad_id("")
        a_device_type("")
    else:
        a_device_id(device[{device_id}] or "")
        a_ad_id(device[{device_advertisingId}] or "")
        a_device_type(device[{device_type}] or "")
    a_ip(ctx[{ctx_ip}] or "")
    a_ua(ctx[{ctx_userAgent}] or "")
    a_locale(ctx[{ctx_locale}] or "")
    a_tz(ctx[{ctx_timezone}] or "")
    if page is None:
        a_page_url("")
        a_page_path("")
        a_page_referrer("")
    else:
        a_page_url(page[{page_url}] or "")
        a_page_path(page[{page_path}] or "")
        a_page_referrer(page[{page_referrer}] or "")
    if campaign is None:
        a_campaign_name("")
        a_campaign_source("")
        a_campaign_medium("")
    else:
        a_campaign_name(campaign[{campaign_name}] or "")
        a_campaign_source(campaign[{campaign_source}] or "")
        a_campaign_medium(campaign[{campaign_medium}] or "")
    if store is None:
        a_store_id("")
        a_terminal_id("")
        a_transaction_id("")
    else:
        a_store_id(store[{store_storeId}])
        a_terminal_id(store[{store_terminalId}] or "")
        a_transaction_id(store[{store_transactionId}] or "")
    if lines:
        currencies = [line[{line_currency}] or "" for line in lines]
        a_sku([line[{line_sku}] or "" for line in lines])
        a_ean([line[{line_ean}] or "" for line in lines])
        a_app_id([line[{line_appProductId}] or "" for line in lines])
        a_qty([line[{line_quantity}] for line in lines])
        a_price([_finite_or_none(line[{line_unitPrice}]) for line in lines])
        a_line_currency(currencies)
        a_currency(next((c for c in currencies if c), ""))
    else:  # the one empty tuple: no new object per event for the collector to walk
        a_sku(())
        a_ean(())
        a_app_id(())
        a_qty(())
        a_price(())
        a_line_currency(())
        a_currency("")
    traits = row[{traits}] or ""
    a_traits(traits)
    a_properties(row[{properties}] or "")
    consent = ctx[{ctx_consent}]
    if consent is not None or '"consent"' in traits:
        categories, granted = _consent_columns(consent, traits)
        a_consent_categories(categories)
        a_consent_granted(granted)
    else:
        a_consent_categories(())
        a_consent_granted(())
    a_timestamp(_seconds(timestamp_ms))
    if timestamp_ms < 0:
        timestamp_ms = 0
    a_timestamp_ms(timestamp_ms)
    a_sent_at_ms(sent_at if sent_at is not None and sent_at > 0 else 0)
    # The client's reading before clock-skew correction; none sent (or an older record): the event time.
    original = row[{originalTimestamp}]
    a_original_ms(original if original is not None and original > 0 else timestamp_ms)
    a_received_at(_seconds(row[{receivedAt}]))
    a_partition(partition)
    a_offset(offset)
    self.rows += 1
"""


def _consent_columns(consent: Any, traits: str) -> tuple[list[str], list[int]]:
    """The categories an event stated (context.consent, then traits.consent) and 1/0 for each."""
    categories: list[str] = []
    granted: list[int] = []
    preferences = consent[0] if isinstance(consent, tuple) else (consent or {}).get("categoryPreferences")
    for category, value in (preferences or {}).items():
        categories.append(category)
        granted.append(1 if value else 0)
    if traits:
        try:
            stated = orjson.loads(traits).get("consent")
        except (orjson.JSONDecodeError, AttributeError):
            stated = None
        if isinstance(stated, dict):
            for purpose, value in stated.items():
                if isinstance(value, bool):
                    categories.append(str(purpose))
                    granted.append(1 if value else 0)
    return categories, granted


def _compile_append() -> Any:
    layout = {key.replace(".", "_"): value for key, value in _layout(EVENT_CODEC.current.parsed).items()}
    scope: dict[str, Any] = {
        "_seconds": _seconds,
        "_finite_or_none": _finite_or_none,
        "_consent_columns": _consent_columns,
    }
    exec(compile(_APPEND_TEMPLATE.format(**layout), "<EventColumns.append>", "exec"), scope)
    return scope["append"]


class EventColumns:
    """A growing batch of ``events`` rows, kept as one list per column (``EVENT_COLUMNS`` order)."""

    __slots__ = ("appends", "columns", "rows")

    def __init__(self) -> None:
        self.columns: list[list[Any]] = [[] for _ in EVENT_COLUMNS]
        self.appends = tuple(column.append for column in self.columns)
        self.rows = 0

    def __len__(self) -> int:
        return self.rows

    def append(self, row: tuple[Any, ...], partition: int, offset: int) -> None:
        """Add one decoded event (a tuple from :class:`EventDecoder`) read at ``partition``/``offset``."""
        raise NotImplementedError  # replaced below by the generated function


EventColumns.append = _compile_append()  # type: ignore[method-assign]


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
