"""Reading a one-partition topic of the test's settings whole, as the audience tests check it."""

from __future__ import annotations

import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from streams.settings import Settings


def topic_values(settings: Settings, name: str) -> list[bytes]:
    """Every value of partition 0 of topic ``name`` (logical), from the beginning to its end."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"it-{uuid.uuid4().hex}",
            "enable.partition.eof": True,
        }
    )
    consumer.assign([TopicPartition(settings.topic(name), 0, OFFSET_BEGINNING)])
    values: list[bytes] = []
    try:
        while True:
            msg = consumer.poll(5)
            if msg is None or msg.error() is not None:
                return values  # nothing more within 5 s, or the end of the partition
            values.append(msg.value() or b"")
    finally:
        consumer.close()
