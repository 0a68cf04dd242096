"""A stage's outgoing side: its outputs produced as records of their checkpoint, refused inputs to
``events.invalid`` with their reason, and records the broker did not take produced again."""

from __future__ import annotations

import logging
import threading
from typing import Any

from confluent_kafka import KafkaError, Producer

from streams.kafka.checkpoints import Checkpoint
from streams.kafka.errors import StageFailed, is_delivery_timeout, needs_new_producer
from streams.kafka.stage import Outputs, Refused
from streams.wire.codecs import encode_invalid

log = logging.getLogger("streams.kafka.outbox")

RETRY_MIN_S = 0.2
RETRY_MAX_S = 10.0
# Rounds of unacknowledged records in a row, all timed out, after which the producer is taken for
# one the broker no longer serves (it forgot the producer's id after a restart, say).
TIMED_OUT_ROUNDS = 3


class Outbox:
    """Produces for one stage (``stage`` names it in refused records and logs)."""

    def __init__(self, stage: str, invalid_topic: str, *, retry: bool, stop: threading.Event) -> None:
        self.stage = stage
        self.invalid_topic = invalid_topic
        self.producer: Producer | None = None
        self.failed: list[tuple[Checkpoint, Any, KafkaError]] = []  # filled by delivery reports
        self.retry_delay = RETRY_MIN_S
        self.resent = 0
        self._timed_out_rounds = 0
        self._retry = retry
        self._stop = stop

    def send(self, out: Outputs, target: Checkpoint, sealing: Checkpoint | None) -> int:
        """Produce ``out`` as outputs of ``target``, its ``sealing`` records as outputs of ``sealing``
        (or ``target``); empties ``out`` and returns how many records were produced."""
        producer = self.producer
        assert producer is not None
        produce = producer.produce
        for topic, key, value in out.sends:
            produce(topic, value, key, on_delivery=target)
        for topic, key, value, partition, headers in out.placed:
            produce(topic, value, key, partition=partition, headers=headers, on_delivery=target)
        for refused in out.refused:
            self._refuse(produce, refused, target)
        count = len(out.sends) + len(out.placed) + len(out.refused)
        target.outstanding += count
        if out.sealing:
            owner = sealing or target
            for topic, key, value in out.sealing:
                produce(topic, value, key, on_delivery=owner)
            owner.outstanding += len(out.sealing)
            count += len(out.sealing)
        out.clear()
        return count

    def _refuse(self, produce: Any, refused: Refused, target: Checkpoint) -> None:
        record = encode_invalid(
            self.stage,
            refused.reason,
            source=refused.source,
            position=f"{refused.partition}/{refused.offset}",
            original=refused.original,
            field=refused.field,
        )
        produce(self.invalid_topic, record, refused.source.encode(), on_delivery=target)
        log.warning(
            "%s: record at %s %d/%d sent to %s: %s",
            self.stage,
            refused.source,
            refused.partition,
            refused.offset,
            self.invalid_topic,
            refused.reason[:200],
        )

    def resend(self) -> int:
        """Produce the records the broker did not take again, after a backoff; returns how many.

        Without ``retry`` it raises instead: offsets stay uncommitted, and a restart replays and
        publishes again (same ids downstream). A producer that cannot deliver again (fenced, fatal,
        or only timeouts for ``TIMED_OUT_ROUNDS`` rounds) raises :class:`StageFailed`: the stage is
        restarted with a new producer.
        """
        failed = list(self.failed)
        self.failed.clear()
        if not failed:
            return 0
        reasons = "; ".join(sorted({err.str() for _, _, err in failed})[:3])
        if any(needs_new_producer(err) for _, _, err in failed):
            raise StageFailed(f"{self.stage}: its producer cannot deliver again: {reasons}")
        if all(is_delivery_timeout(err) for _, _, err in failed):
            self._timed_out_rounds += 1
            if self._timed_out_rounds >= TIMED_OUT_ROUNDS:
                rounds = self._timed_out_rounds
                raise StageFailed(
                    f"{self.stage}: {rounds} rounds of records not acknowledged in time: {reasons}"
                )
        else:
            self._timed_out_rounds = 0
        if not self._retry:
            raise RuntimeError(f"{self.stage}: outputs not acknowledged, not committing: {reasons}")
        log.warning(
            "%s: %d records not acknowledged (%s); producing again in %.1fs",
            self.stage,
            len(failed),
            reasons,
            self.retry_delay,
        )
        self._stop.wait(self.retry_delay)
        self.retry_delay = min(self.retry_delay * 2, RETRY_MAX_S)
        producer = self.producer
        assert producer is not None
        for checkpoint, msg, _reason in failed:
            partition = msg.partition()
            producer.produce(
                msg.topic() or "",
                msg.value(),
                msg.key(),
                partition=partition if partition is not None and partition >= 0 else -1,
                headers=msg.headers(),
                on_delivery=checkpoint,
            )
        self.resent += len(failed)
        return len(failed)

    def acknowledged(self) -> None:
        """Checkpoints completed: the next failure starts again from the shortest backoff."""
        self.retry_delay = RETRY_MIN_S
        self._timed_out_rounds = 0
