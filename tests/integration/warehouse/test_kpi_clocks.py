"""The demo's time-based KPIs count each figure on the clock it names: identity changes by the event
time of the triggering event (their own `at` is received time), on ClickHouse 18.16 and chDB."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from streams.dev.stack import clickhouse_client
from streams.settings import Settings
from streams.warehouse import kpi, migrations

pytestmark = pytest.mark.integration


def _at(day: int, hour: int = 12) -> datetime:
    return datetime(2026, 3, day, hour, tzinfo=UTC)


# A history imported on 10 March: the merges and the rejection were received then, but the shoppers
# linked their identifiers on 2 and 3 March. m3's event is not in event_persons: it counts at `at`.
_MERGES = [("m1", "e1", "web", _at(10)), ("m2", "e2", "app", _at(10)), ("m3", "e9", "web", _at(10))]
_REJECTIONS = [("r1", "e3", "store", _at(10), "limit")]
_EVENTS = [("e1", "web", _at(2)), ("e2", "app", _at(3)), ("e3", "store", _at(3)), ("e4", "web", _at(4))]


Table = tuple[str, tuple[str, ...], list[tuple[Any, ...]]]


def _tables() -> list[Table]:
    change = ("change_id", "person_id", "reason", "message_id", "channel", "at", "at_ms")
    return [
        (
            "identity_merges",
            (*change, "merged_person_id", "identifiers"),
            [(cid, "p1", "", mid, ch, at, 0, "p2", ["email:a@b.c"]) for cid, mid, ch, at in _MERGES],
        ),
        (
            "identity_rejections",
            (*change, "identifier"),
            [(cid, "p1", reason, mid, ch, at, 0, "email:x@y.z") for cid, mid, ch, at, reason in _REJECTIONS],
        ),
        (
            "event_persons",
            ("message_id", "channel", "type", "event", "person_id", "timestamp", "timestamp_ms"),
            [
                (mid, ch, "track", "Signed In", "p1", at, int(at.timestamp()) * 1000)
                for mid, ch, at in _EVENTS
            ],
        ),
    ]


def _literal(value: Any) -> str:
    if isinstance(value, datetime):
        return f"toDateTime({int(value.timestamp())})"
    if isinstance(value, list):
        return "[" + ", ".join(_literal(item) for item in value) + "]"
    if isinstance(value, str):
        return "'" + value + "'"
    return str(value)


def _check(run: Callable[[str], list[tuple[Any, ...]]]) -> None:
    rows = [tuple(str(value) for value in row) for row in run(kpi.sql("identity_changes_by_day"))]
    assert rows == [
        ("2026-03-02", "1", "1", "0", "0", "0"),
        ("2026-03-03", "1", "1", "1", "1", "0"),
        ("2026-03-10", "1", "1", "0", "0", "0"),
    ]


def test_identity_changes_count_on_the_triggering_events_day_on_clickhouse_18(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory()
    client = clickhouse_client(settings, settings.clickhouse_database)
    try:
        for table, columns, rows in _tables():
            client.execute(f"INSERT INTO {table} ({', '.join(columns)}) VALUES", rows)
        _check(lambda sql: [tuple(row) for row in client.execute(sql)])
    finally:
        client.disconnect()


def test_identity_changes_count_on_the_triggering_events_day_on_chdb(tmp_path: Path) -> None:
    backend = migrations.ChdbBackend(str(tmp_path / "chdb"), "kpi_clocks")
    try:
        migrations.apply(backend, "kpi_clocks")
        for table, columns, rows in _tables():
            values = ", ".join("(" + ", ".join(_literal(value) for value in row) + ")" for row in rows)
            backend.execute(f"INSERT INTO {table} ({', '.join(columns)}) VALUES {values}")
        _check(backend.rows)
    finally:
        backend.close()
