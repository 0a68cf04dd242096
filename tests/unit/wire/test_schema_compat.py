"""Schemas evolve BACKWARD compatibly: the current schema reads every record any earlier version wrote."""

from __future__ import annotations

import io
import json
from pathlib import Path

import fastavro
import pytest
from fastavro.schema import to_parsing_canonical_form
from fastavro.utils import generate_many

from streams.wire.codecs import MAGIC, SCHEMA_DIR, AvroCodec, SerializationError, load_schema

HISTORY = sorted((SCHEMA_DIR / "history").glob("*.avsc"))


def _name(path: Path) -> str:
    return path.name.split(".v")[0]


def test_every_schema_is_in_history() -> None:
    for current in SCHEMA_DIR.glob("*.avsc"):
        latest = sorted((SCHEMA_DIR / "history").glob(f"{current.stem}.v*.avsc"))
        assert latest, f"{current.name}: copy it to schemas/history/{current.stem}.v1.avsc"
        parsed_now = to_parsing_canonical_form(fastavro.parse_schema(json.loads(current.read_text())))
        parsed_last = to_parsing_canonical_form(fastavro.parse_schema(json.loads(latest[-1].read_text())))
        assert parsed_now == parsed_last, (
            f"{current.name} changed: add it as schemas/history/{current.stem}.v{len(latest) + 1}.avsc"
        )


@pytest.mark.parametrize("old", HISTORY, ids=lambda p: p.name)
def test_current_schema_reads_records_written_with_older_version(old: Path) -> None:
    writer = fastavro.parse_schema(json.loads(old.read_text()))
    codec = AvroCodec(_name(old))
    for record in generate_many(writer, 25):
        body = io.BytesIO()
        fastavro.schemaless_writer(body, writer, record)
        data = MAGIC + load_schema(old).fingerprint + body.getvalue()
        decoded = codec.decode(data)
        assert set(decoded) >= {f["name"] for f in writer["fields"]}


def test_garbage_is_a_clear_serialization_error() -> None:
    codec = AvroCodec("event")
    with pytest.raises(SerializationError, match="not an Avro single-object record"):
        codec.decode(b'{"json": true}')
    with pytest.raises(SerializationError, match="unknown writer schema fingerprint"):
        codec.decode(b"\xc3\x01" + b"\x00" * 8 + b"abc")
    good = codec.current.fingerprint
    with pytest.raises(SerializationError, match=r"corrupt .*Event record"):
        codec.decode(b"\xc3\x01" + good + b"\xff\xff\xff")
