"""The segments sink on the real Tansu broker and ClickHouse 18.16: membership history, current
membership and spells, definitions, products, a replayed duplicate and a garbage record."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer

from streams.dev.stack import clickhouse_client
from streams.domain.catalog import Product
from streams.settings import Settings
from streams.sinks.segments import SegmentsSink
from streams.topics import INVALID_TOPIC, SEGMENT_CHANGES_TOPIC
from streams.wire.codecs import INVALID_CODEC, PRODUCT_CODEC, SEGMENT_CHANGE_CODEC, SEGMENT_DEFINITION_CODEC

pytestmark = pytest.mark.integration

T0 = 1_790_000_000_000


def _change(person: str, segment: str, seq: int, at: int, subject: str | None = None) -> dict[str, Any]:
    return {
        "changeId": f"{person}-{segment}-{subject}-{seq}",
        "personId": person,
        "segmentId": segment,
        "subject": subject,
        "change": "entered" if seq % 2 else "exited",
        "seq": seq,
        "at": at,
        "trigger": "event" if seq % 2 else "timer",
        "reason": "test",
        "messageId": f"m-{seq}" if seq % 2 else None,
        "definitionVersion": 1,
        "contacts": {
            "email": f"{person}@example.com",
            "phone": None,
            "espSubscriberId": None,
            "userId": None,
            "crmId": None,
            "loyaltyCard": None,
        },
        "emittedAt": at,
    }


def _wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.2)


def test_sink_writes_history_current_membership_and_spells(settings_factory: Callable[..., Settings]) -> None:
    settings = settings_factory()
    changes = [
        _change("p1", "vip", 1, T0),
        _change("p1", "vip", 2, T0 + 60_000),
        _change("p1", "vip", 3, T0 + 120_000),
        _change("p2", "vip", 1, T0 + 30_000),
        _change("p2", "bought", 1, T0, subject="product:P-1"),
    ]
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    topic = settings.topic("segments.changes")
    for record in [*changes, changes[2]]:  # the last one published twice, as after a crash
        producer.produce(topic, SEGMENT_CHANGE_CODEC.encode(record), record["personId"].encode())
    producer.produce(topic, b"not avro at all", b"p9")
    producer.produce(
        settings.topic("segments.definitions"),
        SEGMENT_DEFINITION_CODEC.encode(
            {
                "segmentId": "vip",
                "version": 1,
                "deleted": False,
                "definition": '{"id":"vip","kind":"segment","personalised":true}',
                "hash": "h",
                "source": "deploy/segments",
                "appliedAt": datetime.now(UTC),
            }
        ),
        b"vip",
    )
    product = Product("P-1", name="Runner", category="shoes", brand="Stride", price=80.0, web_skus=("SKU-1",))
    producer.produce(
        settings.topic("products.catalog"), PRODUCT_CODEC.encode(product.to_avro(datetime.now(UTC))), b"P-1"
    )
    assert producer.flush(30) == 0

    sink = SegmentsSink(settings)
    thread = threading.Thread(target=sink.run, daemon=True)
    thread.start()
    client = clickhouse_client(settings, settings.clickhouse_database)
    try:
        _wait_for(
            lambda: (
                client.execute("SELECT count() FROM segment_changes")[0][0] >= 6
                and client.execute("SELECT count() FROM products")[0][0] >= 1
                and sink.stats.rejected >= 1
            ),
            60,
            "the sink to write every table",
        )
        assert client.execute("SELECT count() FROM segment_changes FINAL")[0][0] == 5
        current = client.execute(
            "SELECT segment_id, subject, person_id, seq, email FROM segment_membership_current "
            "ORDER BY segment_id, person_id"
        )
        assert current == [
            ("bought", "product:P-1", "p2", 1, "p2@example.com"),
            ("vip", "", "p1", 3, "p1@example.com"),
            ("vip", "", "p2", 1, "p2@example.com"),
        ]
        spells = client.execute(
            "SELECT spell, toUnixTimestamp(entered_at), toUnixTimestamp(exited_at) "
            "FROM segment_membership_intervals WHERE person_id = 'p1' ORDER BY spell"
        )
        assert spells == [(1, T0 // 1000, T0 // 1000 + 60), (2, T0 // 1000 + 120, 0)]
        assert client.execute("SELECT segment_id, version, kind FROM segment_definitions") == [
            ("vip", 1, "segment")
        ]
        assert client.execute("SELECT product_id, category FROM products FINAL") == [("P-1", "shoes")]
    finally:
        sink.stop()
        thread.join(60)
        client.disconnect()
    assert not thread.is_alive()


def _run_until(settings: Settings, condition: Callable[[SegmentsSink], bool], what: str) -> SegmentsSink:
    """Run a sink until ``condition`` holds, then stop it (it flushes and commits) and join it."""
    sink = SegmentsSink(settings)
    thread = threading.Thread(target=sink.run, daemon=True)
    thread.start()
    try:
        _wait_for(lambda: condition(sink), 60, what)
    finally:
        sink.stop()
        thread.join(60)
    assert not thread.is_alive()
    return sink


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


def test_bad_records_reach_events_invalid_offsets_commit_and_a_full_replay_collapses(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory()
    topic = settings.topic(SEGMENT_CHANGES_TOPIC.name)
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    for seq in (1, 2, 3):
        producer.produce(
            topic, SEGMENT_CHANGE_CODEC.encode(_change("p1", "vip", seq, T0 + seq * 1000)), b"p1"
        )
    producer.produce(topic, b"\x00garbage", b"p1")
    producer.produce(topic, None, b"p1")  # no value at all
    assert producer.flush(30) == 0
    client = clickhouse_client(settings, settings.clickhouse_database)

    def rows() -> int:
        return int(client.execute("SELECT count() FROM segment_changes")[0][0])

    try:
        first = _run_until(settings, lambda s: rows() >= 3 and s.stats.rejected >= 2, "the first pass")
        assert first.stats.rejected == 2
        invalid = _invalid_records(settings, 2)
        assert [(r["stage"], r["source"]) for r in invalid] == [("segments-sink", topic)] * 2
        assert sorted(r["original"] for r in invalid) == [b"", b"\x00garbage"]
        assert all(re.fullmatch(r"\d+/\d+", r["position"]) for r in invalid)  # partition/offset
        assert "empty record" in " ".join(r["reason"] for r in invalid)

        # Offsets were committed after the insert: the same group resumes after what it wrote.
        producer.produce(topic, SEGMENT_CHANGE_CODEC.encode(_change("p1", "vip", 4, T0 + 4000)), b"p1")
        assert producer.flush(30) == 0
        again = _run_until(settings, lambda _s: rows() >= 4, "the new change")
        assert rows() == 4 and again.stats.rejected == 0

        # Another group reads the whole topic again, as after lost offsets: every row arrives twice and
        # collapses in FINAL and in the views.
        replay = settings.model_copy(update={"sink_group": f"{settings.sink_group}-replay"})
        _run_until(replay, lambda _s: rows() >= 8, "the replay")
        assert rows() == 8
        assert client.execute("SELECT count() FROM segment_changes FINAL")[0][0] == 4
        assert (
            client.execute("SELECT count() FROM segment_membership_current")[0][0] == 0
        )  # p1 exited (seq 4)
        spells = client.execute(
            "SELECT spell, toUnixTimestamp(entered_at), toUnixTimestamp(exited_at) "
            "FROM segment_membership_intervals ORDER BY spell"
        )
        assert spells == [(1, T0 // 1000 + 1, T0 // 1000 + 2), (2, T0 // 1000 + 3, T0 // 1000 + 4)]
    finally:
        client.disconnect()
