"""Reading from Kafka: a batch of whatever has arrived, a topic's partitions, a partition to its end."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

log = logging.getLogger("streams.kafka.reading")

_SHORTEST_WAIT_S = 0.001


def consume_ready(consumer: Consumer, limit: int, wait_s: float) -> list[Message]:
    """Up to ``limit`` records that are already fetched; if none, wait up to ``wait_s`` for the first.

    ``Consumer.consume(n, timeout)`` returns only when it has ``n`` records or the timeout passed, so a
    lightly loaded stage would hold every record for the whole timeout. This returns as soon as anything
    is there; under load the batches grow by themselves (whatever arrived while the last one ran).
    """
    messages = consumer.consume(limit, 0)
    if messages or wait_s <= 0:
        return messages
    # librdkafka counts whole milliseconds: a shorter wait would return at once, and a loop waiting
    # out the last fraction of a millisecond would spin.
    messages = consumer.consume(1, max(wait_s, _SHORTEST_WAIT_S))
    if messages and limit > 1:
        messages += consumer.consume(limit - 1, 0)
    return messages


def partitions_of(consumer: Consumer, topic: str, timeout_s: float) -> list[int]:
    meta = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
    if meta is None or meta.error is not None or not meta.partitions:
        reason = meta.error if meta is not None and meta.error is not None else "no partitions"
        raise KafkaException(
            KafkaError(
                KafkaError.UNKNOWN_TOPIC_OR_PART,
                f"topic {topic} is not there ({reason}): create the pipeline's topics with "
                "`omniseg topics create` (same OMNISEG_TOPIC_PREFIX) before starting workers",
            )
        )
    return sorted(meta.partitions)


def read_to_end(
    consumer: Consumer,
    partitions: Iterable[TopicPartition],
    on_message: Callable[[Message], None],
    timeout_s: float,
    batch: int = 10_000,
) -> int:
    """Feed every record of ``partitions`` (from their given offsets) to ``on_message`` until each
    partition reached its end (the last stable offset under read_committed); returns the count.

    ``consumer`` must have ``enable.partition.eof`` on. The end is the one the fetch reports, never a
    watermark: Tansu's ListOffsets can answer too low
    (docs/decisions/0009-end-of-partition-from-the-fetch.md). Raises ``TimeoutError`` naming the
    partitions that did not reach their end.
    """
    wanted = list(partitions)
    pending = {(tp.topic, tp.partition) for tp in wanted}
    consumer.assign(wanted)
    count = 0
    deadline = time.monotonic() + timeout_s
    while pending:
        if time.monotonic() > deadline:
            raise TimeoutError(f"reading {sorted(pending)} to the end took longer than {timeout_s:.0f}s")
        for msg in consumer.consume(batch, 0.2):
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    pending.discard((msg.topic(), msg.partition()))
                    continue
                if error.fatal():
                    raise KafkaException(error)
                log.warning("Kafka reported while reading %s: %s", msg.topic(), error.str())
                continue
            on_message(msg)
            count += 1
            deadline = time.monotonic() + timeout_s  # progress: only stalls time out
    return count
