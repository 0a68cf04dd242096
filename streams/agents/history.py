"""The history sink: channel topics and ``events.invalid`` -> ClickHouse ``events`` / ``invalid_events``.

Why a confluent-kafka consumer in a thread rather than a Faust ``@app.agent``
---------------------------------------------------------------------------
The target is 30,000 events/s per worker on a 2-core machine that also runs the broker and ClickHouse.
Faust delivers each record through its conductor, stream and acking machinery; on this machine that
costs tens of microseconds per event before any work is done (see BENCHMARKS.md, "History sink
ingest", where both paths are measured). That leaves no room for decoding (~7-14 µs per event with the
compiled reader) and the ClickHouse insert (~8 µs per row on the client side). So the sink runs a
confluent-kafka consumer (``consume(10000)`` batches, manual commits) in a thread owned by a Faust
service (:class:`HistorySinkService`): it starts and stops with the Faust worker, and a crash of the
thread crashes the worker.

Guarantees
----------
- At least once: offsets are committed only after the ClickHouse insert of every record up to them
  succeeded, and after every undecodable record among them was acknowledged on ``events.invalid``.
- Dedup: a replayed record has the same messageId, channel and timestamp, so ReplacingMergeTree's key
  collapses it and ``events_dedup`` (FINAL) never shows it twice.
- Backpressure: while an insert is retried (ClickHouse down), the consumer's partitions are paused and
  it only polls to keep its group membership; nothing more is read, so memory stays bounded by one
  batch plus librdkafka's prefetch queue (``queued.max.messages.kbytes``).
- Bad bytes on a channel topic become an ``InvalidRecord`` (stage "sink", source = topic, position =
  "partition/offset", original bytes) on ``events.invalid``; the good records around it are written.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from streams.serde import INVALID_CODEC, SerializationError
from streams.settings import CHANNELS, Settings
from streams.topics import INVALID_TOPIC
from streams.warehouse.events_table import (
    EVENT_COLUMNS,
    INVALID_COLUMNS,
    EventColumns,
    EventDecoder,
    InvalidColumns,
)
from streams.warehouse.writer import ClickHouseWriter, WriteAbandoned

log = logging.getLogger("streams.agents.history")

_CONSUME_MAX = 10_000
_SHUTDOWN_GRACE_S = 15.0
_POLL_WHILE_WAITING_S = 0.25


@dataclass
class SinkStats:
    """Counters since start; read from other threads (single writer, so no lock is needed)."""

    events_written: int = 0
    invalid_written: int = 0
    rejected: int = 0
    batches: int = 0
    commits_failed: int = 0
    started_at: float = field(default_factory=time.monotonic)


def consumer_config(settings: Settings) -> dict[str, Any]:
    return {
        "bootstrap.servers": settings.kafka_bootstrap,
        "group.id": settings.sink_group,
        "client.id": "omniseg-history-sink",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": settings.kafka_session_timeout_ms,
        "heartbeat.interval.ms": max(500, settings.kafka_session_timeout_ms // 3),
        "enable.partition.eof": False,
        # Bounds the prefetch queue (the only buffer besides the batch being built).
        "queued.max.messages.kbytes": 32 * 1024,
        "fetch.max.bytes": 16 * 1024 * 1024,
        "max.partition.fetch.bytes": 4 * 1024 * 1024,
        "logger": logging.getLogger("streams.agents.history.librdkafka"),
    }


def producer_config(settings: Settings) -> dict[str, Any]:
    return {
        "bootstrap.servers": settings.kafka_bootstrap,
        "client.id": "omniseg-history-sink",
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "partitioner": "murmur2_random",
        "message.timeout.ms": 30_000,
        "logger": logging.getLogger("streams.agents.history.librdkafka"),
    }


class HistorySink:
    """The consume -> decode -> insert -> commit loop. :meth:`run` blocks; :meth:`stop` ends it."""

    def __init__(self, settings: Settings, writer: ClickHouseWriter | None = None) -> None:
        self.settings = settings
        self.stats = SinkStats()
        self.ready = threading.Event()  # set once partitions were first assigned
        self._stop = threading.Event()
        self._writer = writer or ClickHouseWriter(settings)
        self._decoder = EventDecoder()
        self._invalid_topic = settings.topic(INVALID_TOPIC.name)
        self._topics = [settings.channel_topic(c) for c in CHANNELS] + [self._invalid_topic]
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._events = EventColumns()
        self._invalid = InvalidColumns()
        self._offsets: dict[tuple[str, int], int] = {}
        self._rejects: list[tuple[bytes, bytes]] = []  # (key, InvalidRecord bytes) not yet produced
        self._assigned: set[tuple[str, int]] = set()
        self._paused = False
        self._flushing = False
        self._deferred: list[Message] = []
        self._batch_deadline = 0.0
        self._give_up_at: float | None = None
        self._last_kafka_error = ""

    def stop(self) -> None:
        """Ask :meth:`run` to flush the pending batch, commit and return (any thread)."""
        self._stop.set()

    def run(self) -> None:
        """Consume until :meth:`stop`; then flush and commit (giving up after a grace period)."""
        # The hot path allocates many small containers; default GC thresholds made the batch builder
        # ~30% slower in measurements (many young-generation passes over long-lived batch lists).
        gc.set_threshold(50_000, 20, 20)
        consumer = Consumer(consumer_config(self.settings))
        self._consumer = consumer
        self._producer = Producer(producer_config(self.settings))
        consumer.subscribe(self._topics, on_assign=self._on_assign, on_revoke=self._on_revoke)
        log.info("history sink: consuming %s as group %s", ", ".join(self._topics), self.settings.sink_group)
        try:
            self._loop(consumer)
            self._give_up_at = time.monotonic() + _SHUTDOWN_GRACE_S
            try:
                self._flush()
            except WriteAbandoned as exc:
                log.error(
                    "history sink: stopping with %d events not written (%s); nothing was committed "
                    "for them, so they are read again on the next start",
                    len(self._events),
                    exc,
                )
        finally:
            try:
                consumer.close()
            finally:
                self._producer.flush(5)
        log.info(
            "history sink stopped: %d events and %d invalid records written in %d batches",
            self.stats.events_written,
            self.stats.invalid_written,
            self.stats.batches,
        )

    def _loop(self, consumer: Consumer) -> None:
        interval = self.settings.sink_flush_interval_s
        batch_size = self.settings.sink_batch_size
        invalid_topic = self._invalid_topic
        decode = self._decoder.decode
        offsets = self._offsets
        while not self._stop.is_set():
            pending = len(self._events) + len(self._invalid)
            timeout = max(0.0, self._batch_deadline - time.monotonic()) if pending else min(interval, 1.0)
            messages = self._deferred or consumer.consume(min(_CONSUME_MAX, batch_size - pending), timeout)
            self._deferred = []
            if messages and not pending:
                self._batch_deadline = time.monotonic() + interval
            append = self._events.append
            for msg in messages:
                error = msg.error()
                if error is not None:
                    self._kafka_error(error)
                    continue
                # A message without error always has topic, partition and offset.
                topic: str = msg.topic()  # type: ignore[assignment]
                partition: int = msg.partition()  # type: ignore[assignment]
                offset: int = msg.offset()  # type: ignore[assignment]
                offsets[(topic, partition)] = offset
                value = msg.value() or b""
                if topic == invalid_topic:
                    self._take_invalid(value, partition, offset)
                    continue
                try:
                    row = decode(value)
                except SerializationError as exc:
                    self._reject(msg, value, str(exc))
                    continue
                append(row, partition, offset)
            pending = len(self._events) + len(self._invalid) + len(self._rejects)
            if pending >= batch_size or ((pending or offsets) and time.monotonic() >= self._batch_deadline):
                self._flush()

    def _take_invalid(self, value: bytes, partition: int, offset: int) -> None:
        try:
            record = INVALID_CODEC.decode(value)
        except SerializationError as exc:
            # Garbage on events.invalid itself: keep it in the table, never send it back to the topic.
            self._invalid.append(
                stage="sink",
                reason=f"undecodable record on {self._invalid_topic}: {exc}",
                field="",
                source=self._invalid_topic,
                position=f"{partition}/{offset}",
                original=value,
                received_at_ms=int(time.time() * 1000),
                partition=partition,
                offset=offset,
            )
            return
        self._invalid.append_record(record, partition, offset)

    def _reject(self, msg: Message, value: bytes, reason: str) -> None:
        topic = msg.topic() or ""
        record = {
            "stage": "sink",
            "reason": reason,
            "field": None,
            "source": topic,
            "position": f"{msg.partition()}/{msg.offset()}",
            "original": value,
            "receivedAt": datetime.now(UTC),
        }
        self._rejects.append((topic.encode(), INVALID_CODEC.encode(record)))
        self.stats.rejected += 1
        log.warning(
            "history sink: undecodable record at %s %s sent to events.invalid: %s",
            topic,
            record["position"],
            reason[:200],
        )

    def _kafka_error(self, error: KafkaError) -> None:
        text = error.str()
        if text != self._last_kafka_error:
            self._last_kafka_error = text
            log.warning("history sink: Kafka reported: %s", text)
        if error.fatal():
            raise KafkaException(error)

    def _flush(self) -> None:
        """Write the batch, hand rejects to events.invalid, then commit; in this order, always."""
        if self._flushing:
            return
        self._flushing = True
        try:
            events, invalid = self._events, self._invalid
            if len(events):
                self._writer.insert("events", EVENT_COLUMNS, events.columns, len(events), wait=self._wait)
            if len(invalid):
                self._writer.insert(
                    "invalid_events", INVALID_COLUMNS, invalid.columns, len(invalid), wait=self._wait
                )
            self._send_rejects()
            self.stats.events_written += len(events)
            self.stats.invalid_written += len(invalid)
            if len(events) or len(invalid):
                self.stats.batches += 1
            self._events, self._invalid = EventColumns(), InvalidColumns()
            self._commit()
            if self._paused:
                self._resume()
        finally:
            self._flushing = False
        self._batch_deadline = time.monotonic() + self.settings.sink_flush_interval_s

    def _send_rejects(self) -> None:
        producer = self._producer
        assert producer is not None
        delay = 0.2
        failures: list[str] = []

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                failures.append(err.str())

        while self._rejects:
            failures.clear()
            for key, value in self._rejects:
                producer.produce(self._invalid_topic, value, key, on_delivery=delivered)
            remaining = producer.flush(30)
            if not failures and not remaining:
                self._rejects = []
                return
            log.warning(
                "history sink: %d records for %s not acknowledged (%s); retrying in %.1fs",
                len(self._rejects),
                self._invalid_topic,
                failures[0] if failures else "timeout",
                delay,
            )
            if not self._wait(delay):
                raise WriteAbandoned(f"{len(self._rejects)} invalid records not acknowledged")
            delay = min(delay * 2, self.settings.sink_retry_max_backoff_s)

    def _commit(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        owned = [
            TopicPartition(topic, partition, offset + 1)
            for (topic, partition), offset in self._offsets.items()
            if (topic, partition) in self._assigned
        ]
        self._offsets = {}
        if not owned:
            return
        try:
            consumer.commit(offsets=owned, asynchronous=False)
        except KafkaException as exc:
            # The rows are in ClickHouse; a lost commit only means a replay, which dedup absorbs.
            self.stats.commits_failed += 1
            log.warning("history sink: offset commit failed (%s); those records will be re-read", exc)

    def _wait(self, seconds: float) -> bool:
        """Between insert attempts: pause consumption but keep polling so the group keeps us."""
        consumer = self._consumer
        assert consumer is not None
        if not self._paused:
            consumer.pause(consumer.assignment())
            self._paused = True
        end = time.monotonic() + seconds
        while True:
            now = time.monotonic()
            if self._give_up_at is not None and now >= self._give_up_at:
                return False
            if now >= end:
                return True
            if self._stop.is_set() and self._give_up_at is None:
                self._give_up_at = now + _SHUTDOWN_GRACE_S
            msg = consumer.poll(min(_POLL_WHILE_WAITING_S, end - now))
            if msg is not None:
                # Only from partitions assigned while paused; processed once the insert succeeded.
                self._deferred.append(msg)

    def _resume(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        consumer.resume(consumer.assignment())
        self._paused = False

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned.update((tp.topic, tp.partition) for tp in partitions)
        if self._paused:
            consumer.pause(partitions)
        self.ready.set()
        log.info("history sink: assigned %d partitions", len(partitions))

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Write and commit what we read from these partitions before another worker takes them, so it
        # does not re-read them. Inside a retry (ClickHouse down) that cannot happen: the rows are
        # written later and the commit skips partitions no longer ours; the new owner re-reads them
        # and dedup absorbs the duplicates.
        if not self._flushing:
            self._flush()
        self._assigned.difference_update((tp.topic, tp.partition) for tp in partitions)
