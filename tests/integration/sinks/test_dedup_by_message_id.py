"""A retried event is one event: the same messageId stamped on another day or in another month is one
row in events_dedup, event_persons and events_by_person (migration 0007), through the real sinks on the
real broker and ClickHouse 18.16, and on an upgraded database on ClickHouse 18.16 and chDB."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import pytest
from confluent_kafka import Producer

from streams.dev.stack import clickhouse_client
from streams.domain.events import Event
from streams.settings import Settings
from streams.sinks.events import HistorySink
from streams.sinks.identity import IdentitySink
from streams.topics import RESOLVED_TOPIC
from streams.warehouse import migrations
from streams.wire.codecs import EVENT_CODEC, RESOLVED_CODEC

pytestmark = pytest.mark.integration


def _at(month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


# message id, event time, received at: each retried copy is received after the first one.
COPIES = [
    ("across-month", _at(1, 31, 23, 30), _at(1, 31, 23, 31)),
    ("across-month", _at(2, 1, 0, 30), _at(2, 1, 0, 31)),  # the retry: another day and month
    ("across-day", _at(3, 10, 23, 50), _at(3, 10, 23, 51)),
    ("across-day", _at(3, 11, 0, 10), _at(3, 11, 0, 11)),  # the retry: another day
    ("across-day", _at(3, 11, 0, 10), _at(3, 11, 0, 11)),  # and the retry replayed
    ("single", _at(3, 12, 9), _at(3, 12, 9)),
]
# What every table keeps: the copy received first.
KEPT = [
    ("across-day", _at(3, 10, 23, 50)),
    ("across-month", _at(1, 31, 23, 30)),
    ("single", _at(3, 12, 9)),
]
PERSON = "p-ann"


def _event(message_id: str, when: datetime, received: datetime) -> Event:
    payload = {
        "type": "track",
        "event": "Order Completed",
        "messageId": message_id,
        "anonymousId": "web-ann",
        "timestamp": when.isoformat(),
        "properties": {"revenue": 20.0},
    }
    return Event.from_segment(
        payload, channel="web", source="web-src", received_at=received, call_type="track"
    )


def _naive(rows: list[tuple[Any, ...]]) -> list[tuple[str, datetime]]:
    return [(str(m), t.replace(tzinfo=UTC) if isinstance(t, datetime) else t) for m, t in rows]


class _Sink(Protocol):
    def run(self) -> None: ...

    def stop(self) -> None: ...


@contextmanager
def running_worker(sink: _Sink) -> Iterator[None]:
    failure: list[BaseException] = []

    def run() -> None:
        try:
            sink.run()
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run, name="dedup-test-sink", daemon=True)
    thread.start()
    try:
        yield
    finally:
        sink.stop()
        thread.join(60)
        assert not thread.is_alive(), "the sink did not stop"
    assert not failure, failure


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.1)


def test_a_retry_on_another_day_or_month_is_one_event_through_both_sinks(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory(sink_flush_interval_s=0.2)
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "enable.idempotence": True})
    for message_id, when, received in COPIES:
        event = _event(message_id, when, received)
        record = {"personId": PERSON, "identifiers": ["anonymous_id:web-ann"], "resolvedAt": received}
        record["event"] = event.to_avro()
        producer.produce(
            settings.channel_topic("web"), EVENT_CODEC.encode(event.to_avro()), event.partition_key()
        )
        producer.produce(settings.topic(RESOLVED_TOPIC.name), RESOLVED_CODEC.encode(record), PERSON.encode())
    assert producer.flush(30) == 0

    history = HistorySink(settings)
    identity = IdentitySink(settings)
    with running_worker(history), running_worker(identity):
        wait_for(lambda: history.stats.events_written == len(COPIES), 60, "every copy in events")
        wait_for(
            lambda: identity.stats.rows.get("event_persons", 0) == len(COPIES), 60, "every copy resolved"
        )

    client = clickhouse_client(settings, settings.clickhouse_database)
    order = "ORDER BY message_id"
    assert _naive(client.execute(f"SELECT message_id, timestamp FROM events_dedup {order}")) == KEPT
    assert _naive(client.execute(f"SELECT message_id, timestamp FROM event_persons FINAL {order}")) == KEPT
    assert _naive(client.execute(f"SELECT message_id, timestamp FROM events_by_person {order}")) == KEPT


class _Backend(Protocol):
    def execute(self, sql: str) -> None: ...

    def rows(self, sql: str) -> list[tuple[Any, ...]]: ...


def _upgrade_with_duplicates(backend: migrations.Backend, database: str) -> None:
    """Migrations up to 0006, rows with duplicates across days and months, then 0007."""
    every = migrations.discover()
    migrations.apply(backend, database, [m for m in every if m.version < 7])
    # INSERT ... SELECT: one statement form that both clients send as a plain query.
    for offset, (message_id, when, received) in enumerate(COPIES):
        ts, rc = when.strftime("%Y-%m-%d %H:%M:%S"), received.strftime("%Y-%m-%d %H:%M:%S")
        backend.execute(
            "INSERT INTO events (message_id, type, channel, event, timestamp, received_at, kafka_offset) "
            f"SELECT '{message_id}', 'track', 'web', 'Order Completed', toDateTime('{ts}'), "
            f"toDateTime('{rc}'), {offset}"
        )
        backend.execute(
            "INSERT INTO event_persons (message_id, type, channel, event, person_id, revenue, timestamp, "
            f"received_at, resolved_at) SELECT '{message_id}', 'track', 'web', 'Order Completed', "
            f"'{PERSON}', 20, toDateTime('{ts}'), toDateTime('{rc}'), toDateTime('{rc}')"
        )
    # Before 0007 the copies on other days are rows of their own.
    assert int(backend.rows("SELECT count() FROM events_dedup")[0][0]) == 5
    migrations.apply(backend, database, [m for m in every if m.version <= 7])


def _kept(backend: _Backend, table: str) -> list[tuple[str, str]]:
    rows = backend.rows(f"SELECT message_id, toString(timestamp) FROM {table} ORDER BY message_id")
    return [(str(m), str(t)) for m, t in rows]


KEPT_TEXT = [(m, t.strftime("%Y-%m-%d %H:%M:%S")) for m, t in KEPT]


def test_migration_0007_collapses_existing_retries_on_clickhouse_18(stack: Any) -> None:
    database = f"test_dedup_{int(time.time() * 1000)}"
    settings = stack.settings(clickhouse_database=database)

    def client(name: str) -> Any:
        return clickhouse_client(settings, name)

    backend = migrations.ClickHouseBackend(client, database)
    try:
        _upgrade_with_duplicates(backend, database)
        assert _kept(backend, "events_dedup") == KEPT_TEXT
        assert _kept(backend, "events_by_person") == KEPT_TEXT
        tables = {name for (name,) in backend.rows("SHOW TABLES")}
        assert not {t for t in tables if t.endswith("0007")}, tables
        # A new retry after the upgrade, in yet another month, collapses too.
        backend.execute(
            "INSERT INTO events (message_id, type, channel, timestamp, received_at) SELECT 'single', "
            "'track', 'web', toDateTime('2026-04-02 00:00:00'), toDateTime('2026-04-02 00:00:00')"
        )
        assert _kept(backend, "events_dedup") == KEPT_TEXT
    finally:
        client("default").execute(f"DROP DATABASE IF EXISTS {database}")


def test_migration_0007_collapses_existing_retries_on_chdb(tmp_path: Path) -> None:
    backend = migrations.ChdbBackend(str(tmp_path / "chdb"), "dedup_test")
    try:
        _upgrade_with_duplicates(backend, "dedup_test")
        assert _kept(backend, "events_dedup") == KEPT_TEXT
        assert _kept(backend, "events_by_person") == KEPT_TEXT
        backend.execute(
            "INSERT INTO events (message_id, type, channel, timestamp, received_at) SELECT 'single', "
            "'track', 'web', toDateTime('2026-04-02 00:00:00'), toDateTime('2026-04-02 00:00:00')"
        )
        assert _kept(backend, "events_dedup") == KEPT_TEXT
    finally:
        backend.close()
