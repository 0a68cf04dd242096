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
- Dedup: ``events`` is keyed by (channel, messageId) (migration 0007), so a replayed record, and a
  retry of the event stamped on another day or in another month, collapse into the copy received
  first, and ``events_dedup`` (FINAL, which merges across partitions) never shows an event twice.
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
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as future_wait
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from streams.kafka.hosting import GC_YOUNG_THRESHOLD
from streams.settings import CHANNELS, Settings
from streams.sinks.events_table import (
    EVENT_COLUMNS,
    INVALID_COLUMNS,
    EventColumns,
    EventDecoder,
    InvalidColumns,
)
from streams.topics import INVALID_TOPIC
from streams.warehouse.writer import ClickHouseWriter, WriteAbandoned
from streams.wire.codecs import INVALID_CODEC, SerializationError, encode_invalid

log = logging.getLogger("streams.sinks.events")

_CONSUME_MAX = 10_000
_SHUTDOWN_GRACE_S = 15.0
_POLL_WHILE_WAITING_S = 0.25
_REVOKE_WAIT_S = 10.0


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
        # The broker may hold a fetch this long when there is little data: bounds visibility latency.
        # Every empty fetch costs the broker (Tansu: ~0.6 ms of CPU), and the sinks flush every
        # sink_flush_interval_s anyway.
        "fetch.wait.max.ms": 250,
        # Bounds the prefetch queue (the only buffer besides the batch being built).
        "queued.max.messages.kbytes": 32 * 1024,
        "fetch.max.bytes": 16 * 1024 * 1024,
        "max.partition.fetch.bytes": 4 * 1024 * 1024,
        "logger": logging.getLogger("streams.sinks.events.librdkafka"),
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
        "logger": logging.getLogger("streams.sinks.events.librdkafka"),
    }


@dataclass
class _Batch:
    """What one insert covers: its columns, the offsets it completes and the rejects it carries."""

    events: EventColumns = field(default_factory=EventColumns)
    invalid: InvalidColumns = field(default_factory=InvalidColumns)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    rejects: list[tuple[bytes, bytes]] = field(default_factory=list)  # (key, InvalidRecord bytes)

    def __len__(self) -> int:
        return len(self.events) + len(self.invalid) + len(self.rejects)


class HistorySink:
    """The consume -> decode -> insert -> commit loop. :meth:`run` blocks; :meth:`stop` ends it.

    Two threads: the caller's thread owns the Kafka consumer and builds batches; one writer thread
    inserts them. At most one batch is in flight, so the next one is built while ClickHouse writes the
    previous one (a part costs ClickHouse 18.16 ~50-250 ms of file creation here, whatever its size),
    and memory is bounded by two batches. A batch's offsets are committed after its insert returned
    and its rejects were acknowledged; batches complete in order.
    """

    def __init__(self, settings: Settings, writer: ClickHouseWriter | None = None) -> None:
        self.settings = settings
        self.stats = SinkStats()
        self.ready = threading.Event()  # set once partitions were first assigned
        self._stop = threading.Event()
        self._abandon = threading.Event()
        self._writer = writer or ClickHouseWriter(settings)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="history-sink-writer")
        self._decoder = EventDecoder()
        self._invalid_topic = settings.topic(INVALID_TOPIC.name)
        self._topics = [settings.channel_topic(c) for c in CHANNELS] + [self._invalid_topic]
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._batch = _Batch()
        self._inflight: tuple[_Batch, Future[None]] | None = None
        self._assigned: set[tuple[str, int]] = set()
        self._paused = False
        self._completing = False
        self._deferred: list[Message] = []
        self._batch_deadline = 0.0
        self._last_kafka_error = ""
        self._produce_errors: list[str] = []  # filled by delivery callbacks (in flush, this thread)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        """Ask :meth:`run` to flush the pending batch, commit and return (any thread)."""
        self._stop.set()

    def run(self) -> None:
        """Consume until :meth:`stop`; then flush and commit (giving up after a grace period)."""
        # The hot path allocates many small containers; default GC thresholds made the batch builder
        # ~30% slower in measurements (many young-generation passes over long-lived batch lists). Not
        # higher than this either: the sinks share a process (and its GIL) with the identity resolver,
        # and a pass over 50,000 young objects paused all of them for 25-45 ms of CPU (BENCHMARKS.md).
        gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)
        consumer = Consumer(consumer_config(self.settings))
        self._consumer = consumer
        self._producer = Producer(producer_config(self.settings))
        consumer.subscribe(self._topics, on_assign=self._on_assign, on_revoke=self._on_revoke)
        log.info("history sink: consuming %s as group %s", ", ".join(self._topics), self.settings.sink_group)
        try:
            self._loop(consumer)
            grace = threading.Timer(_SHUTDOWN_GRACE_S, self._abandon.set)
            grace.daemon = True
            grace.start()
            try:
                self._drain()
            except WriteAbandoned as exc:
                log.error(
                    "history sink: stopping with events not written (%s); their offsets were not "
                    "committed, so they are read again on the next start",
                    exc,
                )
            finally:
                grace.cancel()
        finally:
            self._abandon.set()
            self._pool.shutdown(wait=True)
            try:
                consumer.close()
            finally:
                self._producer.flush(5)
                self._writer.close()
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
        while not self._stop.is_set():
            inflight = self._inflight
            if inflight is not None and inflight[1].done():
                self._complete_inflight()  # commit promptly, also when no new records arrive
            batch = self._batch
            pending = len(batch)
            started = time.monotonic()
            if not pending:
                # consume() blocks until the timeout unless it fills up, so a batch's clock starts
                # before the call: no record waits longer than one interval (plus the insert).
                self._batch_deadline = started + interval
            timeout = max(0.0, self._batch_deadline - started)
            messages = self._deferred or consumer.consume(min(_CONSUME_MAX, batch_size - pending), timeout)
            self._deferred = []
            offsets = batch.offsets
            append = batch.events.append
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
                    self._take_invalid(batch, value, partition, offset)
                    continue
                try:
                    row = decode(value)
                except SerializationError as exc:
                    self._reject(batch, topic, partition, offset, value, str(exc))
                    continue
                append(row, partition, offset)
            if len(batch) >= batch_size or (offsets and time.monotonic() >= self._batch_deadline):
                self._submit()

    def _take_invalid(self, batch: _Batch, value: bytes, partition: int, offset: int) -> None:
        try:
            record = INVALID_CODEC.decode(value)
        except SerializationError as exc:
            # Garbage on events.invalid itself: keep it in the table, never send it back to the topic.
            batch.invalid.append(
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
        batch.invalid.append_record(record, partition, offset)

    def _reject(
        self, batch: _Batch, topic: str, partition: int, offset: int, value: bytes, reason: str
    ) -> None:
        position = f"{partition}/{offset}"
        record = encode_invalid("sink", reason, source=topic, position=position, original=value)
        batch.rejects.append((topic.encode(), record))
        self.stats.rejected += 1
        log.warning(
            "history sink: undecodable record at %s %s sent to %s: %s",
            topic,
            position,
            self._invalid_topic,
            reason[:200],
        )

    def _kafka_error(self, error: KafkaError) -> None:
        text = error.str()
        if text != self._last_kafka_error:
            self._last_kafka_error = text
            log.warning("history sink: Kafka reported: %s", text)
        if error.fatal():
            raise KafkaException(error)

    def _submit(self) -> None:
        """Hand the current batch to the writer thread (after the previous one completed)."""
        if not self._complete_inflight():
            raise RuntimeError("history sink: a batch was submitted while another was completing")
        batch, self._batch = self._batch, _Batch()
        if batch.rejects and self._producer is not None:
            for key, value in batch.rejects:  # acknowledged (and retried) before the commit
                self._producer.produce(self._invalid_topic, value, key, on_delivery=self._on_delivery)
        self._inflight = (batch, self._pool.submit(self._insert, batch))

    def _insert(self, batch: _Batch) -> None:
        """Writer thread: insert both tables, retrying until it works or we give up at shutdown."""
        events, invalid = batch.events, batch.invalid
        if len(events):
            self._writer.insert("events", EVENT_COLUMNS, events.columns, len(events), wait=self._sleep)
        if len(invalid):
            self._writer.insert(
                "invalid_events", INVALID_COLUMNS, invalid.columns, len(invalid), wait=self._sleep
            )

    def _sleep(self, seconds: float) -> bool:
        return not self._abandon.wait(seconds)

    def _complete_inflight(self, revoking_within_s: float | None = None) -> bool:
        """Wait for the batch in flight; then make sure its rejects are on the topic and commit it.

        While waiting, the consumer keeps polling (group membership). Once an insert has failed, its
        partitions are paused so nothing more is read until ClickHouse is back. Inside a rebalance
        callback (``revoking_within_s``) it neither polls nor waits longer than that; it returns False
        when the batch is still in flight then.
        """
        if self._inflight is None:
            return True
        if self._completing:
            return False
        self._completing = True
        try:
            batch, future = self._inflight
            consumer = self._consumer
            assert consumer is not None
            failures_before = self._writer.failed_attempts
            give_up = None if revoking_within_s is None else time.monotonic() + revoking_within_s
            while not future.done():
                if give_up is not None:
                    if time.monotonic() >= give_up:
                        return False
                    future_wait([future], timeout=0.1)
                    continue
                if not self._paused and self._writer.failed_attempts > failures_before:
                    consumer.pause(consumer.assignment())
                    self._paused = True
                if self._paused:
                    msg = consumer.poll(_POLL_WHILE_WAITING_S)
                    if msg is not None:  # only from partitions assigned while paused
                        self._deferred.append(msg)
                else:
                    future_wait([future], timeout=0.01)
            future.result()  # raises WriteAbandoned (or a bug) with nothing committed
            self._ack_rejects(batch)
            self._inflight = None
            self.stats.events_written += len(batch.events)
            self.stats.invalid_written += len(batch.invalid)
            self.stats.batches += 1
            self._commit(batch.offsets)
            if self._paused:
                consumer.resume(consumer.assignment())
                self._paused = False
            return True
        finally:
            self._completing = False

    def _ack_rejects(self, batch: _Batch) -> None:
        producer = self._producer
        assert producer is not None
        if not batch.rejects:
            return
        delay = 0.2
        while True:
            failures: list[str] = []
            if producer.flush(30) == 0 and not self._last_produce_failed(failures):
                return
            log.warning(
                "history sink: %d records for %s not acknowledged (%s); producing again in %.1fs",
                len(batch.rejects),
                self._invalid_topic,
                failures[0] if failures else "timeout",
                delay,
            )
            if self._abandon.wait(delay):
                raise WriteAbandoned(f"{len(batch.rejects)} invalid records not acknowledged")
            delay = min(delay * 2, self.settings.sink_retry_max_backoff_s)
            for key, value in batch.rejects:  # duplicates on events.invalid are harmless
                producer.produce(self._invalid_topic, value, key, on_delivery=self._on_delivery)

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self._produce_errors.append(err.str())

    def _last_produce_failed(self, out: list[str]) -> bool:
        errors, self._produce_errors = self._produce_errors, []
        out.extend(errors)
        return bool(errors)

    def _drain(self) -> None:
        """Write and commit everything read so far (shutdown)."""
        if len(self._batch) or self._batch.offsets:
            self._submit()
        self._complete_inflight()

    def _commit(self, offsets: dict[tuple[str, int], int]) -> None:
        consumer = self._consumer
        assert consumer is not None
        owned = [
            TopicPartition(topic, partition, offset + 1)
            for (topic, partition), offset in offsets.items()
            if (topic, partition) in self._assigned
        ]
        if not owned:
            return
        try:
            consumer.commit(offsets=owned, asynchronous=False)
        except KafkaException as exc:
            # The rows are in ClickHouse; a lost commit only means a replay, which dedup absorbs.
            self.stats.commits_failed += 1
            log.warning("history sink: offset commit failed (%s); those records will be re-read", exc)

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
        if not self._completing and self._complete_inflight(_REVOKE_WAIT_S) and self._batch.offsets:
            self._submit()
            self._complete_inflight(_REVOKE_WAIT_S)
        self._assigned.difference_update((tp.topic, tp.partition) for tp in partitions)
