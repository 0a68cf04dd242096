"""Migrations and sink inserts on a real ClickHouse cluster: ZooKeeper and two ClickHouse 18.16 replicas
of one shard, started here (test_cluster_servers.py) and stopped by pid.

- Every migration runs ON CLUSTER: both replicas hold every table of a plain migration (checked
  against the same migrations applied plainly to chDB), each as a replicated ``_local`` table with a
  Distributed table in front, and every view.
- ``omniseg migrate`` against the other replica applies nothing (schema_migrations is replicated).
- The history sink's real insert path writes one block twice to replica 1 and once more to replica 2:
  one row on both replicas, without FINAL (insert deduplication), read through the Distributed table.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from streams.dev.stack import apply_migrations
from streams.domain.events import Event
from streams.kafka.stage import Outputs
from streams.settings import Settings
from streams.sinks.events import EventsSinkStep
from streams.warehouse import migrations
from streams.warehouse.writer import ClickHouseWriter
from streams.wire.codecs import EVENT_CODEC
from tests.integration.warehouse.test_cluster_servers import Cluster, running_cluster

pytestmark = pytest.mark.integration

DATABASE = "omniseg_cluster"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with running_cluster() as running:
        yield running


def _settings(cluster: Cluster, replica: int) -> Settings:
    return Settings(
        clickhouse_host="127.0.0.1",
        clickhouse_port=cluster.replicas[replica].port,
        clickhouse_database=DATABASE,
        clickhouse_cluster=cluster.name,
        clickhouse_zookeeper_path="/clickhouse/tables/{shard}",
        sink_retry_max_backoff_s=1.0,
    )


@pytest.fixture(scope="module")
def migrated(cluster: Cluster) -> Cluster:
    applied = apply_migrations(_settings(cluster, 0), report=lambda _msg: None)
    assert [m.version for m in applied] == [m.version for m in migrations.discover()]
    return cluster


def _plain_names() -> set[str]:
    """The tables and views the migrations make on one plain server (chDB, in process)."""
    folder = tempfile.mkdtemp(prefix="omniseg-chdb-plain-")
    backend = migrations.ChdbBackend(folder, "plain")
    try:
        migrations.apply(backend, "plain")
        return {name for (name,) in backend.rows("SELECT name FROM system.tables WHERE database = 'plain'")}
    finally:
        backend.close()


def test_every_migration_makes_every_table_on_both_replicas(migrated: Cluster) -> None:
    plain = _plain_names()
    seen = []
    for replica in migrated.replicas:
        client = replica.client()
        rows = client.execute(
            "SELECT name, engine FROM system.tables WHERE database = %(db)s", {"db": DATABASE}
        )
        client.disconnect()
        engines = dict(rows)
        fronts = {name for name, engine in engines.items() if engine in ("Distributed", "View")}
        assert fronts == plain, replica.name
        for name in plain:
            if engines[name] == "Distributed":
                assert engines[f"{name}_local"].startswith("Replicated"), (replica.name, name)
        assert set(engines) == fronts | {f"{n}_local" for n in fronts if engines[n] == "Distributed"}
        seen.append(engines)
    assert seen[0] == seen[1]


def test_migrate_on_the_other_replica_applies_nothing(migrated: Cluster) -> None:
    settings = _settings(migrated, 1)
    env = {
        **os.environ,
        "OMNISEG_ENV_FILE": "/nonexistent/omniseg.env",
        "OMNISEG_CLICKHOUSE_HOST": "127.0.0.1",
        "OMNISEG_CLICKHOUSE_PORT": str(settings.clickhouse_port),
        "OMNISEG_CLICKHOUSE_DATABASE": DATABASE,
        "OMNISEG_CLICKHOUSE_CLUSTER": migrated.name,
    }
    for _ in range(2):
        result = subprocess.run(
            [sys.executable, "-m", "streams.cli", "migrate"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        assert f"(cluster {migrated.name}): 0 migrations applied" in result.stdout


@dataclass
class _Record:
    """A consumed Kafka record as the sink step reads it."""

    _topic: str
    _value: bytes
    _offset: int

    def topic(self) -> str:
        return self._topic

    def value(self) -> bytes:
        return self._value

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset


def _event_record(settings: Settings, message_id: str) -> _Record:
    at = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
    event = Event.model_validate(
        {
            "messageId": message_id,
            "type": "track",
            "event": "Order Completed",
            "userId": "u1",
            "context": {"channel": "web"},
            "timestamp": at,
            "receivedAt": at,
        }
    )
    return _Record(settings.channel_topic("web"), EVENT_CODEC.encode(event.to_avro()), 7)


def _counts(cluster: Cluster, message_id: str) -> list[tuple[Any, ...]]:
    """Per replica: rows in events_local (no FINAL), rows through events, rows through events_dedup."""
    out = []
    for replica in cluster.replicas:
        client = replica.client(DATABASE)
        client.execute(f"SYSTEM SYNC REPLICA {DATABASE}.events_local")
        params = {"m": message_id}
        where = "WHERE message_id = %(m)s"
        out.append(
            (
                client.execute(f"SELECT count() FROM events_local {where}", params)[0][0],
                client.execute(f"SELECT count() FROM events {where}", params)[0][0],
                client.execute(f"SELECT count() FROM events_dedup {where}", params)[0][0],
            )
        )
        client.disconnect()
    return out


def _next_second() -> None:
    """Return once the wall clock is in the next second."""
    second = int(time.time())
    while int(time.time()) == second:
        time.sleep(0.01)


def _step(settings: Settings) -> EventsSinkStep:
    """The history sink's step; a failed insert raises at once instead of being retried for ever."""
    step = EventsSinkStep(settings)
    step.abandon = threading.Event()
    step.abandon.set()
    return step


def test_a_retried_block_is_stored_once_on_both_replicas(migrated: Cluster) -> None:
    first, second = _settings(migrated, 0), _settings(migrated, 1)
    message_id = f"m-{uuid.uuid4()}"
    step = _step(first)
    step.process([_event_record(first, message_id)], Outputs())
    write = step.checkpoint(Outputs())
    assert write is not None
    write()
    # Each retry in a later second: a server-side now() would make it another block.
    _next_second()
    write()  # the same block again on replica 1: a retry after a lost acknowledgement
    step.writer.close()
    step.writer = ClickHouseWriter(second)
    _next_second()
    write()  # and once more through replica 2
    step.writer.close()
    assert _counts(migrated, message_id) == [(1, 1, 1), (1, 1, 1)]


def test_a_replayed_record_in_another_block_collapses_on_read(migrated: Cluster) -> None:
    """The control: another batch (another stamp) is another block, so insert dedup keeps both copies;
    ReplacingMergeTree still reads one (events_dedup), as on one server."""
    settings = _settings(migrated, 0)
    message_id = f"m-{uuid.uuid4()}"
    for stamp in (1_700_000_000, 1_700_000_001):
        step = _step(settings)
        step.process([_event_record(settings, message_id)], Outputs())
        step._insert(step._batch, stamp)
        step.writer.close()
    assert _counts(migrated, message_id) == [(2, 2, 1), (2, 2, 1)]
