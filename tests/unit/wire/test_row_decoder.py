"""The compiled tuple reader (streams/wire/row_decoder.py) against fastavro, on resolved events of
every kind the pipeline writes, and on broken bytes."""

from __future__ import annotations

import gc
import random
from datetime import UTC, datetime
from typing import Any

import pytest

from streams.dev.workload import shopper_events
from streams.sinks.events_table import EventColumns
from streams.wire.codecs import EVENT_CODEC, HEADER_LEN, RESOLVED_CODEC
from streams.wire.row_decoder import CorruptRecord, EventDecoder, as_tuple, compile_reader, read_body
from tests.integration.stages.identity import identity_scenario

SCHEMA: dict[str, Any] = RESOLVED_CODEC.current.parsed
AT = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def _records() -> list[dict[str, Any]]:
    """Resolved events of every kind the pipeline writes: the identity scenario's and the bench's mix."""
    records = identity_scenario.resolved_events()
    for n, event in enumerate(shopper_events(300, 50, random.Random(3), 0)):
        avro = event.to_avro()
        if n % 3 == 0:  # traits and a campaign as well
            avro["traits"] = '{"tier": "gold", "age": 41}'
            avro["context"]["campaign"] = {"name": "autumn", "source": "mail", "medium": "email"}
            avro["context"]["consent"] = {"categoryPreferences": {"Advertising": n % 2 == 0, "Email": True}}
        records.append(
            {"personId": f"P{n}", "identifiers": [f"email:u{n}@x.com"], "resolvedAt": AT, "event": avro}
        )
    return records


RECORDS = _records()


def test_the_full_reader_equals_fastavro() -> None:
    reader = compile_reader(SCHEMA)
    for record in RECORDS:
        data = RESOLVED_CODEC.encode(record)
        assert read_body(reader, data, HEADER_LEN) == as_tuple(SCHEMA, RESOLVED_CODEC.decode(data))


def test_broken_bytes_are_refused() -> None:
    reader = compile_reader(SCHEMA)
    data = RESOLVED_CODEC.encode(RECORDS[-1])
    for cut in (len(data) - 1, len(data) // 2, HEADER_LEN + 3):
        with pytest.raises(CorruptRecord):
            read_body(reader, data[:cut], HEADER_LEN)
    with pytest.raises(CorruptRecord, match="trailing"):
        read_body(reader, data + b"\x00", HEADER_LEN)


def test_an_event_without_line_items_adds_no_object_the_collector_tracks() -> None:
    """The history sink's batch holds its rows until the insert: per-event lists there were the young
    objects every GC pass of the identity + sinks process walked (BENCHMARKS.md, 29 Nov, afternoon)."""
    decoder = EventDecoder()
    columns = EventColumns()
    events = [e for e in shopper_events(200, 50, random.Random(5), 0) if not e.lines][:20]
    assert events
    for offset, event in enumerate(events):
        columns.append(decoder.decode(EVENT_CODEC.encode(event.to_avro())), 0, offset)
    assert len(columns) == len(events)
    tracked = [value for column in columns.columns for value in column if gc.is_tracked(value)]
    assert tracked == []
