"""The events table's consent columns: what each event stated, as sent (context.consent categories, then
traits.consent purposes), and nothing for events that state none or were written before consent."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

import fastavro

from streams.domain.events import Event
from streams.sinks.events_table import EVENT_COLUMNS, EventColumns
from streams.wire.codecs import EVENT_CODEC, MAGIC, SCHEMA_DIR, load_schema
from streams.wire.row_decoder import EventDecoder

AT = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)


def _event(**fields: Any) -> dict[str, Any]:
    base = {
        "messageId": "m-1",
        "type": "identify",
        "userId": "u1",
        "context": {"channel": "web"},
        "timestamp": AT,
        "receivedAt": AT,
    }
    return Event.model_validate(base | fields).to_avro()


def _consent_of(avro: dict[str, Any]) -> tuple[Any, Any]:
    columns = EventColumns()
    columns.append(EventDecoder().decode(EVENT_CODEC.encode(avro)), 0, 1)
    return (
        columns.columns[EVENT_COLUMNS.index("consent_categories")][0],
        columns.columns[EVENT_COLUMNS.index("consent_granted")][0],
    )


def test_both_sources_of_consent_are_kept_as_sent() -> None:
    avro = _event(
        context={"channel": "web", "consent": {"categoryPreferences": {"Advertising": False, "Email": True}}},
        traits={"consent": {"analytics": True}, "tier": "gold"},
    )
    assert _consent_of(avro) == (["Advertising", "Email", "analytics"], [0, 1, 1])


def test_an_event_that_states_no_consent_has_empty_columns() -> None:
    assert _consent_of(_event()) == ((), ())
    # "consent" as a value, not a key: read, nothing found
    assert _consent_of(_event(traits={"note": "consent"})) == ([], [])


def test_an_event_written_before_consent_existed_has_empty_columns() -> None:
    old = load_schema(SCHEMA_DIR / "history" / "event.v2.avsc")
    record = _event()
    record["context"].pop("consent")
    body = io.BytesIO()
    fastavro.schemaless_writer(body, old.parsed, record)
    columns = EventColumns()
    columns.append(EventDecoder().decode(MAGIC + old.fingerprint + body.getvalue()), 0, 1)
    assert columns.columns[EVENT_COLUMNS.index("consent_categories")][0] == ()
