"""Kafka plumbing shared by the identity resolver and the link writer: client configs, the Java-compatible
key partitioner, reading partitions to their end, and the writer's output-position headers."""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from streams.settings import Settings

log = logging.getLogger("streams.agents.identity")
_librdkafka_log = logging.getLogger("streams.agents.identity.librdkafka")

# Header on every record the link writer owns: (offset in identity.links, index among that event's
# writer-owned records), big endian. A restarted writer reads the newest one per partition and skips
# what it already published (see streams/agents/identity_writer.py).
POSITION_HEADER = "omniseg-link-pos"
_POSITION = struct.Struct(">qi")


def resolver_group(settings: Settings) -> str:
    return f"{settings.identity_group}.resolver"


def writer_group(settings: Settings) -> str:
    return f"{settings.identity_group}.links"


def writer_transactional_id(settings: Settings) -> str:
    return f"{settings.identity_group}.link-writer"


def consumer_config(settings: Settings, group: str, client_id: str, **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "group.id": group,
        "client.id": client_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "session.timeout.ms": settings.kafka_session_timeout_ms,
        "heartbeat.interval.ms": max(500, settings.kafka_session_timeout_ms // 3),
        "enable.partition.eof": False,
        "fetch.wait.max.ms": 20,
        "queued.max.messages.kbytes": 32 * 1024,
        "logger": _librdkafka_log,
    }
    config.update(extra)
    return config


def producer_config(settings: Settings, client_id: str, **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "client.id": client_id,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": settings.kafka_linger_ms,
        "compression.type": "lz4",
        # Same partition for a key as Java clients and Faust (murmur2); explicit partitions skip it.
        "partitioner": "murmur2_random",
        "message.timeout.ms": 30_000,
        "logger": _librdkafka_log,
    }
    config.update(extra)
    return config


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
    # out the last fraction of a millisecond would spin (seen as dozens of empty turns per send).
    messages = consumer.consume(1, max(wait_s, _SHORTEST_WAIT_S))
    if messages and limit > 1:
        messages += consumer.consume(limit - 1, 0)
    return messages


# A flush this short starts sending every lingering batch but does not wait for the acknowledgements.
_SEND_NOW_S = 0.001
# A drained stage sends at most this many times per interval (see Sender.drained).
DRAINED_GAP_DIVISOR = 5
# librdkafka's linger for a producer that only a Sender's ticks send for (a load generator on a schedule).
PACED_LINGER_MS = 1000


class Sender:
    """Sends a producer's waiting records sooner than librdkafka's linger would.

    A stage's producer (:func:`paced_producer_config`) lingers ``kafka_linger_ms``, librdkafka's own
    per-partition linger: under a backlog that alone paces its sends, one ProduceRequest per partition
    per interval (librdkafka never puts two partitions in one request: confluentinc/librdkafka#1700;
    counted with its statistics, 5 flushes to 4 partitions were 20 requests).

    A stage that reads another stage's output gets its input in bursts, one per upstream send. Holding
    its own output for a whole interval after each burst would add a second linger on every hop, so
    :meth:`drained` (called when a turn handled everything that had arrived) sends at once: a flush,
    during which librdkafka ignores ``linger.ms`` for every partition. It does so at most every
    ``interval / DRAINED_GAP_DIVISOR``: about one send per upstream burst, the same request rate; what
    a drained turn holds back goes when the gap is over (the stage waits for input at most that long,
    :meth:`drained_wait_s`, and a turn that found nothing has drained too).

    A stage under a backlog never drains, so it never flushes. A flush blocks for 2-3 ms (its 1 ms
    timeout, served in 1 ms steps, plus the delivery callbacks it runs), and sending every interval
    by flushing cost the segment stage about 5% of its wall time and more of its CPU (measured:
    BENCHMARKS.md). A record waits at most the interval plus one loop turn.

    :meth:`tick` sends on a schedule instead: for a producer with a long linger (``PACED_LINGER_MS``)
    that must send every interval whatever happens, like the bench's load generators.
    """

    __slots__ = ("_gap", "_interval", "_last", "_producer", "pending")

    def __init__(self, producer: Producer, interval_ms: int) -> None:
        self._producer = producer
        self._interval = interval_ms / 1000
        self._gap = self._interval / DRAINED_GAP_DIVISOR
        self._last = -self._interval  # monotonic time of the last send
        self.pending = False  # records produced since the last send

    def wait_s(self, longest: float) -> float:
        """How long the loop may wait for input before :meth:`tick` is due (``longest`` at most)."""
        if not self.pending:
            return longest
        return min(longest, max(0.0, self._last + self._interval - time.monotonic()))

    def drained_wait_s(self, longest: float) -> float:
        """How long a drained stage may wait for input before :meth:`drained` would send what it holds
        back (``longest`` at most): records a drained turn kept because a send was just made go once
        the gap has passed, not after librdkafka's whole linger."""
        if not self.pending:
            return longest
        return min(longest, max(0.0, self._last + self._gap - time.monotonic()))

    def tick(self) -> None:
        """Send what is waiting if the interval has passed since the last send."""
        if self.pending and (now := time.monotonic()) >= self._last + self._interval:
            self._send(now)

    def drained(self) -> None:
        """The stage handled all its input so far: send what is waiting unless a send was just made."""
        if self.pending and (now := time.monotonic()) >= self._last + self._gap:
            self._send(now)

    def _send(self, now: float) -> None:
        self.pending = False
        self._last = now
        self._producer.flush(_SEND_NOW_S)


def paced_producer_config(settings: Settings, client_id: str, **extra: Any) -> dict[str, Any]:
    """:func:`producer_config` for a stage's producer: librdkafka lingers ``kafka_linger_ms``, and the
    stage's :class:`Sender` sends sooner when the stage has drained its input."""
    return producer_config(settings, client_id, **{"linger.ms": settings.kafka_linger_ms, **extra})


def murmur2_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's Java default partitioner (and librdkafka's murmur2) picks for ``key``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def murmur2(key: bytes) -> int:
    """Kafka's murmur2 hash of ``key`` as a signed 32-bit int (``org.apache.kafka.common.utils.Utils``)."""
    m, r, mask = 0x5BD1E995, 24, 0xFFFFFFFF
    length = len(key)
    h = (0x9747B28C ^ length) & mask
    whole = length - length % 4
    for i in range(0, whole, 4):
        k = key[i] | (key[i + 1] << 8) | (key[i + 2] << 16) | (key[i + 3] << 24)
        k = (k * m) & mask
        k ^= k >> r
        k = (k * m) & mask
        h = (h * m) & mask
        h ^= k
    rest = length % 4
    if rest == 3:
        h ^= key[whole + 2] << 16
    if rest >= 2:
        h ^= key[whole + 1] << 8
    if rest >= 1:
        h ^= key[whole]
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def encode_position(offset: int, index: int) -> bytes:
    return _POSITION.pack(offset, index)


def position_of(msg: Message) -> tuple[int, int] | None:
    raw = msg.headers() or ()
    headers = list(raw.items()) if isinstance(raw, dict) else list(raw)
    for name, value in headers:
        if name == POSITION_HEADER and isinstance(value, bytes) and len(value) == _POSITION.size:
            offset, index = _POSITION.unpack(value)
            return offset, index
    return None


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

    ``consumer`` must have ``enable.partition.eof`` on. The end is the one the fetch reports: Tansu
    answers ListOffsets (``get_watermark_offsets``) with too low an offset after batched produces
    (measured: 1001 for 2000 records), so watermarks are never used. Raises ``TimeoutError`` naming
    the partitions that did not reach their end.
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
                log.warning("identity: Kafka reported while reading %s: %s", msg.topic(), error.str())
                continue
            on_message(msg)
            count += 1
            deadline = time.monotonic() + timeout_s  # progress: only stalls time out
    return count
