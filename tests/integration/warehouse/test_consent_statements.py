"""consent_statements (migration 0010) on ClickHouse 18.16: one row per category an event stated, with
the person its newest resolution names; events that stated nothing have no rows."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from streams.dev.stack import clickhouse_client
from streams.settings import Settings

pytestmark = pytest.mark.integration

AT = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def test_who_said_what_when(settings_factory: Callable[..., Settings]) -> None:
    settings = settings_factory()
    client = clickhouse_client(settings, settings.clickhouse_database)
    try:
        client.execute(
            "INSERT INTO events (message_id, type, channel, source, timestamp, timestamp_ms, received_at, "
            "consent_categories, consent_granted) VALUES",
            [
                ("m1", "page", "web", "shop", AT, 1, AT, ["Advertising", "Analytics"], [1, 0]),
                ("m2", "identify", "email", "cmp", AT, 2, AT, ["advertising"], [0]),
                ("m3", "track", "web", "shop", AT, 3, AT, [], []),
            ],
        )
        client.execute(
            "INSERT INTO event_persons (message_id, channel, type, person_id, timestamp, resolved_at_ms) "
            "VALUES",
            [
                ("m1", "web", "page", "p-old", AT, 1),
                ("m1", "web", "page", "p-new", AT, 2),  # resolved again: the newest wins
                ("m2", "email", "identify", "p-new", AT, 1),
            ],
        )
        rows = client.execute(
            "SELECT message_id, person_id, source, category, granted FROM consent_statements "
            "ORDER BY message_id, category"
        )
    finally:
        client.disconnect()
    assert rows == [
        ("m1", "p-new", "shop", "Advertising", 1),
        ("m1", "p-new", "shop", "Analytics", 0),
        ("m2", "p-new", "cmp", "advertising", 0),
    ]
