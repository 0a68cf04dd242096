"""The Sender against the real Tansu broker: a stage's producer sends after librdkafka's linger with no
help; a drained stage sends at once, but not more often than a fraction of the interval; a producer
with a long linger sends when ticked, in one go for every partition, not before the interval."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from streams.kafka.config import paced_producer_config, producer_config
from streams.kafka.reading import consume_ready
from streams.kafka.sending import PACED_LINGER_MS, Sender
from streams.settings import Settings
from streams.topics import RESOLVED_TOPIC

pytestmark = pytest.mark.integration


def _reader(settings: Settings, topic: str) -> Consumer:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"sender-test-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
        }
    )
    consumer.assign([TopicPartition(topic, p, -2) for p in range(settings.kafka_partitions)])
    return consumer


def _arrived(consumer: Consumer, wanted: int, within_s: float) -> tuple[int, float]:
    """(records read, seconds until the last of them) within ``within_s``."""
    started, got, last = time.monotonic(), 0, 0.0
    while got < wanted and time.monotonic() - started < within_s:
        for msg in consumer.consume(100, 0.01):
            if msg.error() is None:
                got += 1
                last = time.monotonic() - started
    return got, last


def _ticked_producer(settings: Settings, client_id: str, **extra: object) -> Producer:
    """A producer that only ticks send for (librdkafka's linger is long), like the bench's load."""
    return Producer(producer_config(settings, client_id, **{"linger.ms": PACED_LINGER_MS, **extra}))


def test_a_wait_shorter_than_a_millisecond_still_waits_instead_of_spinning(
    settings_factory: Callable[..., Settings],
) -> None:
    """librdkafka rounds a consume timeout down to whole milliseconds: 0.4 ms would return at once, and
    a stage waiting out the rest of its send gap would spin through empty turns."""
    settings = settings_factory()
    consumer = _reader(settings, settings.topic(RESOLVED_TOPIC.name))
    try:
        _arrived(consumer, 1, 1)  # assigned and fetching: the topic is empty
        turns, started = 0, time.monotonic()
        while time.monotonic() - started < 0.05:
            assert consume_ready(consumer, 10, 0.0004) == []
            turns += 1
        assert turns <= 55, f"{turns} turns in 50 ms: the short waits did not wait"
    finally:
        consumer.close()


def test_a_stage_producer_sends_after_its_linger_without_a_flush(
    settings_factory: Callable[..., Settings],
) -> None:
    """Under a backlog a stage never drains and never calls the Sender: librdkafka's linger alone
    sends its records, every partition's."""
    settings = settings_factory(kafka_linger_ms=200)
    topic = settings.topic(RESOLVED_TOPIC.name)
    producer = Producer(paced_producer_config(settings, "sender-linger"))
    consumer = _reader(settings, topic)
    try:
        _arrived(consumer, 1, 3)  # joined: nothing there yet
        for n in range(8):
            producer.produce(topic, b"v", f"k{n}".encode())
        producer.poll(0)
        got, after = _arrived(consumer, 8, 3)
        assert got == 8 and after < 1.5, (got, after)
    finally:
        consumer.close()
        producer.flush(10)


def test_a_tick_sends_every_partition_at_once_and_waits_out_the_interval(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory(kafka_linger_ms=300)
    topic = settings.topic(RESOLVED_TOPIC.name)
    producer = _ticked_producer(settings, "sender-test")
    consumer = _reader(settings, topic)
    try:
        _arrived(consumer, 1, 3)  # joined: nothing there yet
        sender = Sender(producer, settings.kafka_linger_ms)
        # Without a tick, records linger for librdkafka's (long) linger.
        for n in range(8):
            producer.produce(topic, b"v", f"k{n}".encode())
        producer.poll(0)
        got, _ = _arrived(consumer, 8, PACED_LINGER_MS / 1000 / 4)
        assert got == 0, "a paced producer sent before it was told to"
        # The first tick sends at once, whatever the partitions.
        sender.pending = True
        sender.tick()
        got, after = _arrived(consumer, 8, 2)
        assert got == 8 and after < 0.2, (got, after)
        # The next records wait until the interval since that send has passed.
        for n in range(8):
            producer.produce(topic, b"v", f"k{n}".encode())
        sender.pending = True
        assert 0 < sender.wait_s(1.0) <= 0.3
        sender.tick()  # too early: nothing is sent
        got, _ = _arrived(consumer, 8, 0.1)
        assert got == 0
        time.sleep(max(0.0, sender.wait_s(1.0)))
        sender.tick()
        got, after = _arrived(consumer, 8, 2)
        assert got == 8 and after < 0.2, (got, after)
        assert not sender.pending and sender.wait_s(1.0) == 1.0
    finally:
        consumer.close()
        producer.flush(10)


def test_a_drained_stage_sends_at_once_but_not_more_often_than_the_gap(
    settings_factory: Callable[..., Settings],
) -> None:
    """A stage that handled all its input sends without waiting out the interval (a second linger per
    hop), but two drained turns in quick succession still share one send."""
    from streams.kafka.sending import DRAINED_GAP_DIVISOR

    settings = settings_factory(kafka_linger_ms=1000)
    gap_s = 1.0 / DRAINED_GAP_DIVISOR
    topic = settings.topic(RESOLVED_TOPIC.name)
    producer = Producer(paced_producer_config(settings, "sender-drained"))
    consumer = _reader(settings, topic)
    try:
        _arrived(consumer, 1, 3)
        sender = Sender(producer, settings.kafka_linger_ms)
        producer.produce(topic, b"v", b"k0")
        sender.pending = True
        sender.tick()  # the first send: the interval starts now
        assert _arrived(consumer, 1, 2)[0] == 1
        # Right after a send, a drained turn waits for the gap ...
        producer.produce(topic, b"v", b"k1")
        sender.pending = True
        sender.drained()
        assert 0 < sender.drained_wait_s(5.0) <= gap_s  # the loop wakes when the gap is over
        assert sender.pending and _arrived(consumer, 1, gap_s / 2)[0] == 0
        # ... and once the gap has passed it sends, long before the 1 s interval is over.
        time.sleep(gap_s)
        sender.drained()
        got, after = _arrived(consumer, 1, 0.5)
        assert got == 1 and after < 0.2, (got, after)
        assert not sender.pending
        # Nothing waiting: nothing to send, and tick keeps the interval from that send.
        assert sender.drained_wait_s(5.0) == 5.0
        sender.drained()
        producer.produce(topic, b"v", b"k2")
        sender.pending = True
        assert sender.wait_s(5.0) > 0.5
    finally:
        consumer.close()
        producer.flush(10)


def test_a_tick_sends_one_produce_request_per_partition(settings_factory: Callable[..., Settings]) -> None:
    """What the docs say a tick costs the broker: librdkafka never puts two partitions in one
    ProduceRequest (confluentinc/librdkafka#1700), so a stage writing N partitions pays N requests per
    interval. Counted from librdkafka's own statistics; if this starts failing because librdkafka
    combines partitions, the Sender's docs and BENCHMARKS.md need updating."""
    import json

    settings = settings_factory(kafka_linger_ms=50)
    topic = settings.topic(RESOLVED_TOPIC.name)
    stats: list[dict[str, object]] = []
    producer = _ticked_producer(
        settings,
        "sender-requests",
        **{"statistics.interval.ms": 100, "stats_cb": lambda s: stats.append(json.loads(s))},
    )

    def produce_requests() -> int:
        stats.clear()
        deadline = time.monotonic() + 5
        while not stats and time.monotonic() < deadline:
            producer.poll(0.05)
        assert stats, "librdkafka sent no statistics"
        brokers = stats[-1]["brokers"]
        assert isinstance(brokers, dict)
        return sum(int(b["req"].get("Produce", 0)) for b in brokers.values())

    try:
        producer.produce(topic, b"warm", partition=0)
        producer.flush(10)
        before = produce_requests()
        sender = Sender(producer, settings.kafka_linger_ms)
        ticks = 3
        for _ in range(ticks):
            for n in range(40):
                producer.produce(topic, b"v", partition=n % settings.kafka_partitions)
            sender.pending = True
            time.sleep(max(0.0, sender.wait_s(1.0)))
            sender.tick()
            producer.flush(10)
        assert produce_requests() - before == ticks * settings.kafka_partitions
    finally:
        producer.flush(10)


def test_a_missing_topic_is_reported_with_the_command_that_creates_it(
    settings_factory: Callable[..., Settings],
) -> None:
    from confluent_kafka import KafkaException

    from streams.stages.segments.catalog import CatalogReplica

    settings = settings_factory()
    replica = CatalogReplica(settings.model_copy(update={"topic_prefix": f"missing-{uuid.uuid4().hex[:6]}."}))
    try:
        with pytest.raises(KafkaException, match="omniseg topics create"):
            replica.load(timeout_s=5)
    finally:
        replica.close()
