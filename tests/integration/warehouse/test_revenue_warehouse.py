"""Revenue through the real identity sink (Tansu broker, ClickHouse 18.16): an Order Completed that
carries only properties.revenue gets that revenue in event_persons, and the warehouse's figures equal the
segment engine's for the same resolved records; migration 0007 brings rows written before it to the
same definition (on ClickHouse 18.16 and chDB)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from streams.dev.stack import clickhouse_client
from streams.domain.revenue import event_value, signed_revenue
from streams.domain.segments.engine import SegmentEngine
from streams.domain.segments.profile import Profile
from streams.settings import Settings
from streams.sinks.identity import IdentitySink
from streams.topics import RESOLVED_TOPIC
from streams.warehouse import kpi, migrations
from streams.wire.segments import decode_resolved
from tests.unit.domain.test_revenue import CALLS, EXPECTED, resolved_record

pytestmark = pytest.mark.integration


def test_identity_sink_writes_the_revenue_segments_count(settings_factory: Callable[..., Settings]) -> None:
    settings = settings_factory(sink_flush_interval_s=0.2)
    records = [resolved_record(number, name, properties) for number, (name, properties) in enumerate(CALLS)]
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "enable.idempotence": True})
    for record in records:
        producer.produce(settings.topic(RESOLVED_TOPIC.name), record, b"p1")
    assert producer.flush(30) == 0

    sink = IdentitySink(settings)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            sink.run()
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run, name="revenue-test-sink", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while sink.stats.rows.get("event_persons", 0) < len(records):
            assert time.monotonic() < deadline, "timed out waiting for the resolved events"
            assert not failure, failure
            time.sleep(0.1)
    finally:
        sink.stop()
        thread.join(60)
    assert not thread.is_alive() and not failure, failure

    client = clickhouse_client(settings, settings.clickhouse_database)
    rows = client.execute("SELECT message_id, revenue FROM events_by_person ORDER BY message_id")
    assert rows == [(f"m{number}", revenue) for number, revenue in enumerate(EXPECTED)]
    assert rows[0] == ("m0", 42.0)  # the order that carries only properties.revenue

    engine = SegmentEngine([], timezone="UTC")
    profile = Profile("p1")
    for record in records:
        _, event = decode_resolved(record)
        engine.apply(profile, event, event.timestamp_ms)
    (net,) = [row[5] for row in kpi.run(client, "revenue_by_channel").rows]
    assert net == pytest.approx(profile.revenue) == 92.0


# Rows written before migration 0007: event_persons held the lines' total of every event.
# message, event, properties as the events table holds them (None: no events row), old revenue.
BEFORE_0007: list[tuple[str, str, str | None, float]] = [
    ("o1", "Order Completed", '{"order_id":"o1","revenue":42.0,"currency":"EUR"}', 0.0),
    ("o2", "Order Completed", '{"total":55.5,"products":[{"sku":"S","price":20.0,"quantity":2}]}', 40.0),
    ("o3", "Order Completed", '{"products":[{"sku":"S","price":20.0,"quantity":2}]}', 40.0),
    ("o4", "Checkout Started", '{"products":[{"sku":"S","price":20.0,"quantity":2}]}', 40.0),
    ("o5", "Order Refunded", '{"order_id":"o2","total":55.5}', 0.0),
    ("o6", "Product Returned", "{}", 20.0),
    ("o7", "Order Completed", None, 15.0),
]


def _expected_after_0007() -> list[tuple[str, float]]:
    """The definition applied to what the shop sent (the old revenue stands for the lines' total)."""
    out = []
    for message, event, properties, old in BEFORE_0007:
        sent = json.loads(properties) if properties is not None else {}
        out.append((message, signed_revenue(event, event_value(sent, [(1.0, old)]))))
    return out


def _upgrade(backend: migrations.Backend, database: str) -> None:
    every = migrations.discover()
    migrations.apply(backend, database, [m for m in every if m.version < 7])
    for number, (message, event, properties, old) in enumerate(BEFORE_0007):
        ts = f"toDateTime({1_767_225_600 + 60 * number})"
        if properties is not None:
            backend.execute(
                "INSERT INTO events (message_id, type, channel, event, properties, timestamp, received_at) "
                f"SELECT '{message}', 'track', 'web', '{event}', '{properties}', {ts}, {ts}"
            )
        backend.execute(
            "INSERT INTO event_persons (message_id, type, channel, event, person_id, revenue, timestamp, "
            f"received_at, resolved_at) SELECT '{message}', 'track', 'web', '{event}', 'p1', {old}, {ts}, "
            f"{ts}, {ts}"
        )
    migrations.apply(backend, database, [m for m in every if m.version <= 7])


REVENUE_SQL = "SELECT message_id, revenue FROM events_by_person ORDER BY message_id"


def test_migration_0007_brings_old_rows_to_the_revenue_definition_on_clickhouse_18(stack: Any) -> None:
    database = f"test_rev0007_{int(time.time() * 1000)}"
    settings = stack.settings(clickhouse_database=database)

    def client(name: str) -> Any:
        return clickhouse_client(settings, name)

    try:
        _upgrade(migrations.ClickHouseBackend(client, database), database)
        rows = client(database).execute(REVENUE_SQL)
        assert [(m, round(v, 2)) for m, v in rows] == _expected_after_0007()
        assert _expected_after_0007()[:2] == [("o1", 42.0), ("o2", 55.5)]
    finally:
        client("default").execute(f"DROP DATABASE IF EXISTS {database}")


def test_migration_0007_brings_old_rows_to_the_revenue_definition_on_chdb(tmp_path: Path) -> None:
    backend = migrations.ChdbBackend(str(tmp_path / "chdb"), "rev_test")
    try:
        _upgrade(backend, "rev_test")
        rows = backend.rows(REVENUE_SQL)
        assert [(m, round(float(v), 2)) for m, v in rows] == _expected_after_0007()
    finally:
        backend.close()
