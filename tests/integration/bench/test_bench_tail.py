"""The benches' latency reader on the real Tansu broker: it starts at the current end of a topic (records
already there are never passed on), then passes every later record with the time it was read."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from confluent_kafka import Producer

from streams.bench.tail import TailReader
from streams.settings import Settings
from streams.topics import SEGMENT_CHANGES_TOPIC

pytestmark = pytest.mark.integration


def test_the_reader_skips_what_was_there_and_passes_on_what_comes_later(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory()
    topic = settings.topic(SEGMENT_CHANGES_TOPIC.name)
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 5})
    for n in range(200):  # several batches per partition before the reader starts
        producer.produce(topic, f"old-{n}".encode(), f"k{n}".encode())
        if n % 50 == 0:
            producer.flush(10)
    producer.flush(10)

    seen: list[tuple[bytes, float]] = []
    reader = TailReader(settings, topic, lambda value, at: seen.append((value, at)), lambda: len(seen) >= 30)
    try:
        reader.start(timeout_s=60)
        assert reader.caught_up
        sent_at = time.time()
        for n in range(30):
            producer.produce(topic, f"new-{n}".encode(), f"k{n}".encode())
        producer.flush(10)
    finally:
        reader.finish(join_s=30)
    values = sorted(value.decode() for value, _ in seen)
    assert values == sorted(f"new-{n}" for n in range(30)), values[:5]
    assert all(at >= sent_at for _, at in seen)
