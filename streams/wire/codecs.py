"""Avro on the wire: the standard Avro *single-object encoding*.

Each record is ``C3 01`` + the 8-byte CRC-64-AVRO fingerprint of the writer schema (little endian) +
the schemaless Avro body. No schema registry is needed: every schema version ever written lives in
``schemas/`` (current) or ``schemas/history/`` (older), so a reader resolves old records to the current
schema. Schemas only evolve BACKWARD compatibly (``tests/unit/wire/test_schema_compat.py``).
"""

from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"
MAGIC = b"\xc3\x01"
HEADER_LEN = 10


class SerializationError(ValueError):
    """A record could not be encoded or decoded; the message says why."""


@dataclass(frozen=True)
class Schema:
    name: str
    parsed: Any
    fingerprint: bytes


def load_schema(path: Path) -> Schema:
    raw = json.loads(path.read_text())
    parsed: Any = fastavro.parse_schema(raw)
    canonical = to_parsing_canonical_form(parsed)
    fp = struct.pack("<Q", int(fingerprint(canonical, "CRC-64-AVRO"), 16))
    return Schema(name=parsed["name"], parsed=parsed, fingerprint=fp)


class AvroCodec:
    """Encodes with the current version of one schema; decodes any known version of it."""

    def __init__(self, schema_name: str, schema_dir: Path = SCHEMA_DIR) -> None:
        self.current = load_schema(schema_dir / f"{schema_name}.avsc")
        self._writers: dict[bytes, Schema] = {self.current.fingerprint: self.current}
        for old in sorted((schema_dir / "history").glob(f"{schema_name}.v*.avsc")):
            schema = load_schema(old)
            self._writers.setdefault(schema.fingerprint, schema)

    def encode(self, record: dict[str, Any]) -> bytes:
        out = io.BytesIO()
        out.write(MAGIC)
        out.write(self.current.fingerprint)
        try:
            fastavro.schemaless_writer(out, self.current.parsed, record)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise SerializationError(f"cannot encode {self.current.name}: {exc}") from exc
        return out.getvalue()

    def decode(self, data: bytes) -> dict[str, Any]:
        if len(data) < HEADER_LEN or data[:2] != MAGIC:
            raise SerializationError(
                f"not an Avro single-object record (expected header C3 01, got {data[:2].hex() or 'nothing'})"
            )
        writer = self._writers.get(data[2:HEADER_LEN])
        if writer is None:
            raise SerializationError(
                f"unknown writer schema fingerprint {data[2:HEADER_LEN].hex()} for {self.current.name}"
            )
        body = io.BytesIO(data)
        body.seek(HEADER_LEN)
        try:
            if writer is self.current:
                record = fastavro.schemaless_reader(body, writer.parsed, None)
            else:
                record = fastavro.schemaless_reader(body, writer.parsed, self.current.parsed)
        except Exception as exc:  # fastavro raises many types on corrupt input
            raise SerializationError(f"corrupt {self.current.name} record: {exc!r}") from exc
        if body.tell() != len(data):
            raise SerializationError(
                f"corrupt {self.current.name} record: {len(data) - body.tell()} trailing bytes"
            )
        if not isinstance(record, dict):
            raise SerializationError(f"corrupt {self.current.name} record")
        return record


EVENT_CODEC = AvroCodec("event")
INVALID_CODEC = AvroCodec("invalid_record")
RESOLVED_CODEC = AvroCodec("resolved_event")
IDENTITY_CHANGE_CODEC = AvroCodec("identity_change")
IDENTITY_ASSIGNMENT_CODEC = AvroCodec("identity_assignment")
IDENTITY_PERSON_CODEC = AvroCodec("identity_person")
SEGMENT_CHANGE_CODEC = AvroCodec("segment_change")
SEGMENT_DEFINITION_CODEC = AvroCodec("segment_definition")
SEGMENT_STATE_CODEC = AvroCodec("segment_state")
SEGMENT_FORWARD_CODEC = AvroCodec("segment_forward")
PRODUCT_CODEC = AvroCodec("product")
AUDIENCE_INPUT_CODEC = AvroCodec("audience_input")
AUDIENCE_DELTA_CODEC = AvroCodec("audience_delta")
ERASURE_REQUEST_CODEC = AvroCodec("erasure_request")
PRIVACY_SUPPRESSION_CODEC = AvroCodec("privacy_suppression")


def encode_invalid(
    stage: str,
    reason: str,
    *,
    source: str | None,
    position: str | None,
    original: bytes,
    field: str | None = None,
    received_at: datetime | None = None,
) -> bytes:
    """One ``events.invalid`` record (``schemas/invalid_record.avsc``): what failed where, and why."""
    return INVALID_CODEC.encode(
        {
            "stage": stage,
            "reason": reason,
            "field": field,
            "source": source,
            "position": position,
            "original": original,
            "receivedAt": received_at or datetime.now(UTC),
        }
    )
