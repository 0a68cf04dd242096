"""The backfill's history query on ClickHouse 18.16 and on chDB: events within the window and before the
cut, of the wanted names, each under its canonical person (after merges), ordered by person; a page
holds every event of its persons."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from streams.dev.stack import clickhouse_client
from streams.settings import Settings
from streams.stages.segments.backfill import PAGE_SQL, history_event, persons_of, query_params
from streams.warehouse import migrations
from tests.integration.warehouse.chdb_client import ChdbClient

pytestmark = pytest.mark.integration

DAY_MS = 86_400_000
NOW_MS = 1_764_892_800_000  # 2025-12-05T00:00Z
# (message, resolved person, event name, days ago, events.resolved partition, offset)
ROWS = [
    ("m1", "survivor", "Product Viewed", 2, 0, 0),
    ("m2", "merged", "Product Viewed", 3, 1, 0),  # merged into survivor since
    ("m3", "other", "Product Viewed", 1, 1, 1),
    ("m4", "other", "Order Completed", 1, 1, 2),  # not a wanted name
    ("m5", "other", "Product Viewed", 40, 1, 3),  # before the window
    ("m6", "survivor", "Product Viewed", 1, 0, 5),  # at the cut: the live stream's
]


Insert = Callable[[str, tuple[str, ...], list[tuple[Any, ...]]], None]


def _load(insert: Insert) -> None:
    events, resolved = [], []
    for message, person, name, days, partition, offset in ROWS:
        ts = NOW_MS - days * DAY_MS
        at = datetime.fromtimestamp(ts // 1000, UTC).replace(tzinfo=None)
        events.append(
            (message, "track", "web", name, at, ts, '{"product_id": "p1"}', ["S1"], [""], [""], [2.0], [None])
        )
        resolved.append((message, "web", "track", name, person, at, ts, partition, offset))
    insert(
        "events",
        ("message_id", "type", "channel", "event", "timestamp", "timestamp_ms", "properties", "line_sku",
         "line_ean", "line_app_product_id", "line_quantity", "line_unit_price"),
        events,
    )  # fmt: skip
    insert(
        "event_persons",
        ("message_id", "channel", "type", "event", "person_id", "timestamp", "timestamp_ms",
         "kafka_partition", "kafka_offset"),
        resolved,
    )  # fmt: skip
    insert(
        "person_aliases",
        ("person_id", "canonical_person_id", "change_id", "version"),
        [("merged", "survivor", "c1", 1)],
    )


def _pages(execute: Callable[[str, dict[str, Any]], list[tuple[Any, ...]]], pages: int) -> dict[str, Any]:
    params = query_params(["Product Viewed"], NOW_MS - 30 * DAY_MS, [5, 10])
    found: dict[str, Any] = {}
    for page in range(pages):
        rows = execute(PAGE_SQL, {**params, "pages": pages, "page": page})
        for person, events in persons_of(rows):
            assert person not in found, "a person's events are in one page, together"
            found[person] = [history_event(row) for row in events]
    return found


def _check(found: dict[str, Any]) -> None:
    assert {p: [e.message_id for e in events] for p, events in found.items()} == {
        "survivor": ["m2", "m1"],
        "other": ["m3"],
    }
    event = found["other"][0]
    assert (event.name, event.channel, event.timestamp_ms) == ("Product Viewed", "web", NOW_MS - DAY_MS)
    assert event.properties == {"product_id": "p1"}
    assert [(line.sku, line.ean, line.quantity, line.unit_price) for line in event.lines] == [
        ("S1", None, 2.0, None)
    ]


def test_history_pages_on_clickhouse_18(settings_factory: Callable[..., Settings]) -> None:
    settings = settings_factory()
    client = clickhouse_client(settings, settings.clickhouse_database)
    try:
        _load(
            lambda table, columns, rows: client.execute(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES", rows
            )
        )
        for pages in (1, 3):
            _check(_pages(client.execute, pages))
    finally:
        client.disconnect()


def test_history_pages_on_chdb(tmp_path: Path) -> None:
    backend = migrations.ChdbBackend(str(tmp_path / "chdb"), "backfill_test")
    try:
        migrations.apply(backend, "backfill_test")
        client = ChdbClient(backend)

        def insert(table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
            for row in rows:
                values = ", ".join(f"%(v{i})s" for i in range(len(row)))
                params = {f"v{i}": value for i, value in enumerate(row)}
                client.execute(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({values})", params)

        _load(insert)
        for pages in (1, 3):
            _check(_pages(client.execute, pages))
    finally:
        backend.close()
