"""The history sink in a real ``omniseg worker``: exact rows, replays, garbage and a ClickHouse restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from streams.api.producer import producer_config
from streams.dev.stack import clickhouse_client
from streams.domain.events import Event
from streams.domain.simulation import generate
from streams.settings import Settings
from streams.wire.codecs import EVENT_CODEC

pytestmark = pytest.mark.integration


def _records(settings: Settings, count: int, seed: int) -> list[tuple[str, bytes, bytes]]:
    now = datetime.now(UTC)
    out = []
    for channel, call in generate(
        seed=seed, customers=count, days=2, start=datetime(2026, 11, 1, tzinfo=UTC)
    ):
        event = Event.from_segment(call, channel=channel, source="it", received_at=now)
        out.append(
            (settings.channel_topic(channel), event.partition_key(), EVENT_CODEC.encode(event.to_avro()))
        )
    return out


def _produce(settings: Settings, records: list[tuple[str, bytes, bytes]]) -> None:
    producer = Producer(producer_config(settings, "it-sink"))
    for topic, key, value in records:
        producer.produce(topic, value=value, key=key)
        producer.poll(0)
    assert producer.flush(30) == 0


def _env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "OMNISEG_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "OMNISEG_TOPIC_PREFIX": settings.topic_prefix,
        "OMNISEG_CLICKHOUSE_HOST": settings.clickhouse_host,
        "OMNISEG_CLICKHOUSE_PORT": str(settings.clickhouse_port),
        "OMNISEG_CLICKHOUSE_DATABASE": settings.clickhouse_database,
        "OMNISEG_SINK_GROUP": settings.sink_group,
        "OMNISEG_SINK_RETRY_MAX_BACKOFF_S": "1",
        "OMNISEG_IDENTITY_ENABLED": "false",
    }


def _worker(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker", "--log-level", "warning"],
            env=_env(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _wait_for(query: Callable[[], int], expected: int, timeout_s: float = 90.0) -> int:
    deadline = time.monotonic() + timeout_s
    value = -1
    while time.monotonic() < deadline:
        try:
            value = query()
        except Exception:  # ClickHouse restarting
            value = -1
        if value == expected:
            return value
        time.sleep(0.5)
    return value


@pytest.fixture
def sink_settings(settings_factory: Callable[..., Settings]) -> Iterator[Settings]:
    yield settings_factory()


def test_events_land_once_despite_garbage_replay_and_clickhouse_restart(
    sink_settings: Settings, stack: Any, tmp_path: Path
) -> None:
    settings = sink_settings
    first = _records(settings, 40, seed=11)
    second = _records(settings, 40, seed=12)
    total = len({value for _, _, value in first + second})
    garbage = [(settings.channel_topic("web"), b"k", b"\x00not avro at all")]
    log = tmp_path / "worker.log"
    client = clickhouse_client(settings, settings.clickhouse_database)

    def rows() -> int:
        return int(client.execute("SELECT count() FROM events_dedup")[0][0])

    def invalid() -> int:
        return int(client.execute("SELECT count() FROM invalid_events WHERE stage = 'sink'")[0][0])

    worker = _worker(settings, log)
    try:
        _produce(settings, first[: len(first) // 2] + garbage + first[len(first) // 2 :])
        assert _wait_for(rows, len(first)) == len(first), log.read_text()[-2000:]
        assert _wait_for(invalid, 1) == 1, log.read_text()[-2000:]
        # ClickHouse goes away mid-stream; the worker must retry, not crash, and lose nothing.
        stack.stop_clickhouse()
        _produce(settings, second)
        time.sleep(3)
        assert worker.poll() is None, "the worker must survive a ClickHouse outage"
        stack.start_clickhouse()
        client = clickhouse_client(settings, settings.clickhouse_database)
        assert _wait_for(rows, total) == total, log.read_text()[-2000:]
        # A replay of everything (same messageIds) adds no rows to events_dedup.
        _produce(settings, first + second)
        time.sleep(4)
        assert rows() == total
        assert _wait_for(invalid, 1) == 1
    finally:
        _stop(worker)
    assert worker.returncode is not None
