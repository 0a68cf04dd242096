"""The audiences sink on the real Tansu broker and ClickHouse 18.16: deltas land in both audience tables
with their offsets, records it cannot use reach events.invalid, and the frontier follows."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer

from streams.dev.stack import clickhouse_client
from streams.domain.audiences.deltas import Delta
from streams.domain.audiences.hashing import AudienceIdKind
from streams.settings import Settings
from streams.sinks.audiences import AudiencesSink
from streams.topics import AUDIENCE_DELTAS_TOPIC, INVALID_TOPIC
from streams.warehouse.audiences import Member, deltas, frontier, snapshot_page
from streams.wire.audiences import encode_delta
from streams.wire.codecs import AUDIENCE_DELTA_CODEC, INVALID_CODEC

pytestmark = pytest.mark.integration

AT = datetime(2026, 9, 1, 12, 0, 0, 250_000, tzinfo=UTC)


def h(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.2)


def _invalid_records(settings: Settings, count: int) -> list[dict[str, Any]]:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"{settings.sink_group}.probe",
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
        }
    )
    consumer.subscribe([settings.topic(INVALID_TOPIC.name)])
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + 30
    while len(found) < count and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            found.append(INVALID_CODEC.decode(msg.value() or b""))
    consumer.close()
    return found


def test_sink_writes_deltas_with_offsets_and_refuses_garbage(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory()
    topic = settings.topic(AUDIENCE_DELTAS_TOPIC.name)
    email, phone = AudienceIdKind.EMAIL, AudienceIdKind.PHONE
    bad_hash = AUDIENCE_DELTA_CODEC.encode(
        {
            "destinationId": "google",
            "audienceId": "vip",
            "kind": "email",
            "hash": "ABC",
            "added": True,
            "at": AT,
        }
    )
    records: list[bytes] = [
        encode_delta(Delta("google", "vip", email, h("ann"), True), AT),  # 0
        encode_delta(Delta("google", "vip", phone, h("bob"), True), AT),  # 1
        b"not avro at all",  # 2
        encode_delta(Delta("meta", "lapsed", email, h("ann"), True), AT),  # 3
        bad_hash,  # 4
        encode_delta(Delta("google", "vip", email, h("ann"), False), AT),  # 5
    ]
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    for value in records:
        producer.produce(topic, value, b"google")
    assert producer.flush(30) == 0

    sink = AudiencesSink(settings)
    thread = threading.Thread(target=sink.run, daemon=True)
    thread.start()
    client = clickhouse_client(settings, settings.clickhouse_database)
    try:
        _wait_for(
            lambda: (
                # The frontier is written after the batch's rows (migration 0015).
                frontier(client) == 6 and sink.stats.rejected >= 2
            ),
            60,
            "the sink to write the deltas",
        )
        rows = client.execute(
            "SELECT kafka_offset, destination_id, audience_id, kind, hash, added, toUnixTimestamp(at), at_ms "
            "FROM audience_deltas ORDER BY kafka_offset"
        )
        at_ms = int(AT.timestamp() * 1000)
        assert rows == [
            (0, "google", "vip", "email", h("ann"), 1, at_ms // 1000, at_ms),
            (1, "google", "vip", "phone", h("bob"), 1, at_ms // 1000, at_ms),
            (3, "meta", "lapsed", "email", h("ann"), 1, at_ms // 1000, at_ms),
            (5, "google", "vip", "email", h("ann"), 0, at_ms // 1000, at_ms),
        ]
        by_hash = client.execute("SELECT kafka_offset FROM audience_members ORDER BY kafka_offset")
        assert [row[0] for row in by_hash] == [0, 1, 3, 5]
        assert frontier(client) == 6
        assert snapshot_page(client, "google", "vip").members == (Member("phone", h("bob")),)
        assert deltas(client, "google", "vip", 1).removes == [Member("email", h("ann"))]
    finally:
        sink.stop()
        thread.join(60)
        client.disconnect()
    assert not thread.is_alive()
    invalid = _invalid_records(settings, 2)
    assert sorted(r["position"] for r in invalid) == ["0/2", "0/4"]
    assert {(r["stage"], r["source"]) for r in invalid} == {("audiences-sink", topic)}
    assert "64 lower-case hex" in " ".join(r["reason"] for r in invalid)

    # Another group reads the topic again, as after lost offsets: the rows collapse, reads are unchanged.
    replay = AudiencesSink(settings.model_copy(update={"sink_group": f"{settings.sink_group}-replay"}))
    thread = threading.Thread(target=replay.run, daemon=True)
    thread.start()
    client = clickhouse_client(settings, settings.clickhouse_database)
    try:
        _wait_for(lambda: client.execute("SELECT count() FROM audience_deltas")[0][0] >= 8, 60, "the replay")
        assert client.execute("SELECT count() FROM audience_deltas FINAL")[0][0] == 4
        assert client.execute("SELECT count() FROM audience_members FINAL")[0][0] == 4
        assert frontier(client) == 6
        assert snapshot_page(client, "google", "vip").members == (Member("phone", h("bob")),)
        page = deltas(client, "google", "vip", 0)
        assert (page.adds, page.removes) == ([Member("phone", h("bob"))], [])
    finally:
        replay.stop()
        thread.join(60)
        client.disconnect()
