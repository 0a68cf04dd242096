"""Which Kafka errors leave a client that only a new client can fix.

An idempotent producer keeps a producer id and epoch, and a sequence number per partition, that the
broker must remember too. A broker that restarts or loses its state answers with a fencing, epoch or
unknown-producer error, or stops acknowledging; librdkafka retries those forever, or raises a fatal
error, and the producer never works again. Such errors arrive in delivery reports as often as in the
error callback, so every callback asks :func:`needs_new_producer`.
"""

from __future__ import annotations

from confluent_kafka import KafkaError

# Producer-state errors: the broker no longer knows (or refuses) this producer's id, epoch or sequence.
_PRODUCER_STATE_CODES = frozenset(
    {
        KafkaError._FENCED,
        KafkaError._FATAL,
        KafkaError.PRODUCER_FENCED,
        KafkaError.INVALID_PRODUCER_EPOCH,
        KafkaError.UNKNOWN_PRODUCER_ID,
        KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER,
        KafkaError.INVALID_PRODUCER_ID_MAPPING,
    }
)


class StageFailed(RuntimeError):
    """A stage cannot go on with its current clients; the supervisor starts it again."""


def needs_new_producer(err: KafkaError) -> bool:
    """True for a fatal error or a producer-state error: this producer cannot deliver again."""
    return bool(err.fatal()) or err.code() in _PRODUCER_STATE_CODES


def is_delivery_timeout(err: KafkaError) -> bool:
    """A record the broker never acknowledged in ``message.timeout.ms`` (down, paused, or not taking
    this producer's records while answering metadata)."""
    return err.code() in (KafkaError._MSG_TIMED_OUT, KafkaError._TIMED_OUT)
