"""Bytes in and out of identity resolution, without per-event dicts or pydantic.

- Events are read with the compiled tuple reader (``row_decoder.EventDecoder``), and only the
  identifier fields are looked at (:func:`raw_ids`).
- A ResolvedEvent is built by concatenation. An Avro record body is the concatenation of its fields'
  encodings, and ResolvedEvent's last field is the Event record, so its body is
  ``string(personId) + array<string>(identifiers) + long(resolvedAt) + <Event body>``: the Event body
  bytes are copied from the input when it was written with the current Event schema (else the event is
  decoded and re-encoded). ``tests/unit/wire/test_identity_stream.py`` proves the bytes equal fastavro's.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import fastavro

from streams.wire.codecs import (
    EVENT_CODEC,
    HEADER_LEN,
    IDENTITY_ASSIGNMENT_CODEC,
    IDENTITY_PERSON_CODEC,
    MAGIC,
    RESOLVED_CODEC,
    AvroCodec,
    SerializationError,
)
from streams.wire.row_decoder import CorruptRecord, EventDecoder, TupleReader, compile_reader, read_body

_EVENT_FIELDS = [f["name"] for f in EVENT_CODEC.current.parsed["fields"]]
_I_MESSAGE_ID = _EVENT_FIELDS.index("messageId")
_I_ANONYMOUS = _EVENT_FIELDS.index("anonymousId")
_I_USER = _EVENT_FIELDS.index("userId")
_I_PREVIOUS = _EVENT_FIELDS.index("previousId")
_I_CONTEXT = _EVENT_FIELDS.index("context")
_I_IDENTIFIERS = _EVENT_FIELDS.index("identifiers")
_I_RECEIVED_AT = _EVENT_FIELDS.index("receivedAt")


def _subfields(record: dict[str, Any], name: str) -> list[str]:
    kind = next(f["type"] for f in record["fields"] if f["name"] == name)
    if isinstance(kind, list):
        kind = next(branch for branch in kind if branch != "null")
    return [f["name"] for f in kind["fields"]]


CONTEXT_FIELDS = _subfields(EVENT_CODEC.current.parsed, "context")
_I_CHANNEL = CONTEXT_FIELDS.index("channel")
_I_DEVICE = CONTEXT_FIELDS.index("device")
_context_schema = next(f["type"] for f in EVENT_CODEC.current.parsed["fields"] if f["name"] == "context")
DEVICE_FIELDS = _subfields(_context_schema, "device")
_I_DEVICE_ID = DEVICE_FIELDS.index("id")
_I_ADVERTISING_ID = DEVICE_FIELDS.index("advertisingId")
_I_AD_TRACKING = DEVICE_FIELDS.index("adTrackingEnabled")
_IDS = _subfields(EVENT_CODEC.current.parsed, "identifiers")
_I_EMAIL, _I_PHONE, _I_ESP, _I_LOYALTY, _I_CRM = (
    _IDS.index(name) for name in ("email", "phone", "espSubscriberId", "loyaltyCard", "crmId")
)

EventRow = tuple[Any, ...]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


class EventView:
    """The few fields identity needs, read from one event row (current Event field order)."""

    __slots__ = ("channel", "message_id", "received_at_ms", "row")

    def __init__(self, row: EventRow) -> None:
        self.row = row
        self.message_id: str = row[_I_MESSAGE_ID]
        self.channel: str = row[_I_CONTEXT][_I_CHANNEL]
        self.received_at_ms: int = row[_I_RECEIVED_AT]


def raw_ids(row: EventRow) -> tuple[tuple[str | None, ...], bool | None]:
    """The raw identifier values in ``streams.domain.resolution.RAW_FIELDS`` order, and adTrackingEnabled."""
    ids = row[_I_IDENTIFIERS]
    device = row[_I_CONTEXT][_I_DEVICE]
    if device is None:
        device_id = advertising_id = tracking = None
    else:
        device_id, advertising_id, tracking = (
            device[_I_DEVICE_ID],
            device[_I_ADVERTISING_ID],
            device[_I_AD_TRACKING],
        )
    values = (
        row[_I_USER],
        ids[_I_CRM],
        ids[_I_EMAIL],
        ids[_I_LOYALTY],
        ids[_I_PHONE],
        ids[_I_ESP],
        device_id,
        advertising_id,
        row[_I_ANONYMOUS],
        row[_I_PREVIOUS],
    )
    return values, tracking


def avro_long(value: int) -> bytes:
    """Avro's zig-zag varint encoding of a long."""
    n = (value << 1) ^ (value >> 63)
    out = bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def avro_string(value: str) -> bytes:
    data = value.encode()
    return avro_long(len(data)) + data


def avro_string_array(values: list[str]) -> bytes:
    if not values:
        return b"\x00"
    return avro_long(len(values)) + b"".join(avro_string(v) for v in values) + b"\x00"


_RESOLVED_HEADER = MAGIC + RESOLVED_CODEC.current.fingerprint


def event_body(event_bytes: bytes, codec: AvroCodec = EVENT_CODEC) -> bytes:
    """The current-schema Avro body of an Event single-object record (copied when possible).

    Raises ``SerializationError`` for bytes that are not a known Event version.
    """
    if event_bytes[2:HEADER_LEN] == codec.current.fingerprint and event_bytes[:2] == MAGIC:
        return event_bytes[HEADER_LEN:]
    record = codec.decode(event_bytes)
    out = io.BytesIO()
    fastavro.schemaless_writer(out, codec.current.parsed, record)
    return out.getvalue()


def resolved_event(person_id: str, identifiers: list[str], resolved_at_ms: int, body: bytes) -> bytes:
    """A ResolvedEvent single-object record around an Event body (see the module docstring)."""
    return b"".join(
        (
            _RESOLVED_HEADER,
            avro_string(person_id),
            avro_string_array(identifiers),
            avro_long(resolved_at_ms),
            body,
        )
    )


class RecordReader:
    """Decodes one writer-owned record type to a tuple (current field order), any known version."""

    def __init__(self, codec: AvroCodec) -> None:
        self._codec = codec
        self._fields = [f["name"] for f in codec.current.parsed["fields"]]
        self._reader: TupleReader = compile_reader(codec.current.parsed)
        self._fp = codec.current.fingerprint

    def index(self, name: str) -> int:
        return self._fields.index(name)

    def decode(self, data: bytes) -> tuple[Any, ...]:
        if data[2:HEADER_LEN] == self._fp and data[:2] == MAGIC:
            try:
                row: tuple[Any, ...] = read_body(self._reader, data, HEADER_LEN)
            except CorruptRecord as exc:
                raise SerializationError(f"corrupt {self._codec.current.name} record: {exc}") from exc
            return row
        record = self._codec.decode(data)  # older version, or a clear error
        return tuple(_millis(record[name]) for name in self._fields)


def _millis(value: Any) -> Any:
    # fastavro turns timestamp-millis into datetimes; the tuple reader keeps longs.
    if isinstance(value, datetime):
        return (value - _EPOCH) // _MS
    return value


ASSIGNMENT_READER = RecordReader(IDENTITY_ASSIGNMENT_CODEC)
PERSON_READER = RecordReader(IDENTITY_PERSON_CODEC)
EVENT_DECODER = EventDecoder()
