"""The identity sink: ``identity.assignments``, ``identity.changes`` and ``events.resolved`` -> ClickHouse.

It fills the tables of migration 0003 (``identities``, ``identity_merges``, ``identity_rejections``,
``person_aliases``, ``event_persons``); the views of 0004 read them per canonical person. Like the history
sink it is a confluent-kafka consumer in a thread, hosted by a Faust service
(:class:`IdentitySinkService`), with its own consumer group ``<sink_group>.identity``.

Guarantees
----------
- At least once: offsets are committed only after every table of the batch was inserted and every
  undecodable record in it was acknowledged on ``events.invalid``.
- Dedup: each table's ReplacingMergeTree key is the record's natural key (identifier + version,
  change_id, alias pair, channel + message_id whatever the event's day), so a replayed record, a retried
  event or a batch inserted twice after a partial failure collapses, and the views read exactly.
- ClickHouse down: the insert is retried with backoff (:class:`ClickHouseWriter`); meanwhile the
  partitions are paused and the consumer only polls to keep its group membership.
- Undecodable bytes become an ``InvalidRecord`` (stage ``identity-sink``, source = topic, position =
  ``partition/offset``, original bytes) on ``events.invalid``; the good records around them are written.
  Tombstones on the compacted ``identity.assignments`` topic are skipped (an identifier, once known, is
  never deleted from the warehouse).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from functools import partial

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from streams.kafka.hosting import Loop, ThreadedLoops
from streams.settings import Settings
from streams.sinks.events import consumer_config, producer_config
from streams.sinks.identity_tables import IdentityBatch, ResolvedDecoder
from streams.topics import IDENTITY_ASSIGNMENTS_TOPIC, IDENTITY_CHANGES_TOPIC, INVALID_TOPIC, RESOLVED_TOPIC
from streams.warehouse.writer import ClickHouseWriter, Wait, WriteAbandoned
from streams.wire.codecs import (
    IDENTITY_ASSIGNMENT_CODEC,
    IDENTITY_CHANGE_CODEC,
    SerializationError,
    encode_invalid,
)

log = logging.getLogger("streams.sinks.identity")

_CONSUME_MAX = 10_000
_POLL_WHILE_WAITING_S = 0.25
_SHUTDOWN_GRACE_S = 15.0
_REVOKE_GRACE_S = 10.0
_STAGE = "identity-sink"
# Stopping waits for the sink to flush and commit; it gives up on ClickHouse after its own grace.
_SERVICE_STOP_TIMEOUT_S = 30.0


def _collect_failure(
    failed: list[tuple[bytes, bytes, str]], key: bytes, value: bytes, err: KafkaError | None, _msg: Message
) -> None:
    if err is not None:
        failed.append((key, value, err.str()))


def identity_sink_group(settings: Settings) -> str:
    """The sink's consumer group: derived from ``sink_group`` so test prefixes keep groups apart."""
    return f"{settings.sink_group}.identity"


@dataclass
class IdentitySinkStats:
    """Counters since start (single writer: the sink thread)."""

    rows: dict[str, int] = field(default_factory=dict)
    rejected: int = 0
    tombstones: int = 0
    batches: int = 0
    commits_failed: int = 0


class IdentitySink:
    """The consume -> decode -> insert -> commit loop. :meth:`run` blocks; :meth:`stop` ends it.

    :class:`streams.sinks.segments.SegmentsSink` reuses it with other topics and tables
    (``stage``, :meth:`group`, :meth:`new_batch`, :meth:`_skips_tombstones` and :meth:`_add`).
    """

    stage = _STAGE

    def __init__(self, settings: Settings, writer: ClickHouseWriter | None = None) -> None:
        self.settings = settings
        self.stats = IdentitySinkStats()
        self.ready = threading.Event()  # set once partitions were first assigned
        self._stop = threading.Event()
        self._stop_deadline: float | None = None
        self._writer = writer or ClickHouseWriter(settings)
        self._resolved = ResolvedDecoder()
        self._invalid_topic = settings.topic(INVALID_TOPIC.name)
        self._resolved_topic = settings.topic(RESOLVED_TOPIC.name)
        self._changes_topic = settings.topic(IDENTITY_CHANGES_TOPIC.name)
        self._assignments_topic = settings.topic(IDENTITY_ASSIGNMENTS_TOPIC.name)
        self.topics = [self._assignments_topic, self._changes_topic, self._resolved_topic]
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._batch = IdentityBatch()
        self._offsets: dict[tuple[str, int], int] = {}
        self._rejects: list[tuple[bytes, bytes]] = []  # (key, InvalidRecord bytes)
        self._deferred: list[Message] = []
        self._assigned: set[tuple[str, int]] = set()
        self._paused = False
        self._flushing = False
        self._last_kafka_error = ""

    def group(self) -> str:
        return identity_sink_group(self.settings)

    def new_batch(self) -> IdentityBatch:
        return IdentityBatch()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        """Ask :meth:`run` to write the pending batch, commit and return (any thread)."""
        self._stop.set()

    def run(self) -> None:
        """Consume until :meth:`stop`; then flush and commit (giving up on ClickHouse after a grace)."""
        config = consumer_config(self.settings)
        config.update({"group.id": self.group(), "client.id": f"omniseg-{self.stage}"})
        consumer = Consumer(config)
        producer_conf = producer_config(self.settings)
        producer_conf["client.id"] = f"omniseg-{self.stage}"
        self._consumer = consumer
        self._producer = Producer(producer_conf)
        consumer.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke)
        log.info("%s: consuming %s as group %s", self.stage, ", ".join(self.topics), config["group.id"])
        try:
            self._loop(consumer)
            self._flush(self._wait_polling)
        except WriteAbandoned as exc:
            log.error(
                "identity sink: stopping with records not written (%s); their offsets were not "
                "committed, so they are read again on the next start",
                exc,
            )
        finally:
            try:
                consumer.close()
            finally:
                self._producer.flush(5)
                self._writer.close()
        log.info("identity sink stopped: rows written %s", self.stats.rows)

    def _loop(self, consumer: Consumer) -> None:
        interval = self.settings.sink_flush_interval_s
        batch_size = self.settings.sink_batch_size
        deadline = time.monotonic() + interval
        while not self._stop.is_set():
            pending = len(self._batch) + len(self._rejects)
            if not pending:
                deadline = time.monotonic() + interval
            timeout = max(0.0, deadline - time.monotonic())
            messages = self._deferred or consumer.consume(min(_CONSUME_MAX, batch_size - pending), timeout)
            self._deferred = []
            for msg in messages:
                self._take(msg)
            if len(self._batch) + len(self._rejects) >= batch_size or (
                self._offsets and time.monotonic() >= deadline
            ):
                self._flush(self._wait_polling)

    def _take(self, msg: Message) -> None:
        error = msg.error()
        if error is not None:
            self._kafka_error(error)
            return
        topic: str = msg.topic()  # type: ignore[assignment]
        partition: int = msg.partition()  # type: ignore[assignment]
        offset: int = msg.offset()  # type: ignore[assignment]
        self._offsets[(topic, partition)] = offset
        value = msg.value()
        if value is None and self._skips_tombstones(topic):
            self.stats.tombstones += 1
            return
        try:
            if value is None:
                raise SerializationError("empty record (no value)")
            self._add(topic, partition, offset, value)
        except (SerializationError, KeyError, TypeError, ValueError, IndexError) as exc:
            reason = str(exc) if isinstance(exc, SerializationError) else f"unusable record: {exc!r}"
            self._reject(topic, partition, offset, value or b"", reason)

    def _skips_tombstones(self, topic: str) -> bool:
        """Whether an empty record on ``topic`` is a compacted-topic tombstone (skipped, not invalid)."""
        return topic == self._assignments_topic

    def _add(self, topic: str, partition: int, offset: int, value: bytes) -> None:
        """Decode one record into the batch (raises on bytes that are not a known record)."""
        if topic == self._resolved_topic:
            self._batch.add_resolved(self._resolved.decode(value), partition, offset)
        elif topic == self._changes_topic:
            self._batch.add_change(IDENTITY_CHANGE_CODEC.decode(value), partition, offset)
        else:
            self._batch.add_assignment(IDENTITY_ASSIGNMENT_CODEC.decode(value), partition, offset)

    def _reject(self, topic: str, partition: int, offset: int, value: bytes, reason: str) -> None:
        position = f"{partition}/{offset}"
        record = encode_invalid(self.stage, reason, source=topic, position=position, original=value)
        self._rejects.append((topic.encode(), record))
        self.stats.rejected += 1
        log.warning(
            "identity sink: undecodable record at %s %s sent to %s: %s",
            topic,
            position,
            self._invalid_topic,
            reason[:200],
        )

    def _kafka_error(self, error: KafkaError) -> None:
        text = error.str()
        if text != self._last_kafka_error:
            self._last_kafka_error = text
            log.warning("identity sink: Kafka reported: %s", text)
        if error.fatal():
            raise KafkaException(error)

    def _flush(self, wait: Wait) -> None:
        """Insert every table, get the rejects acknowledged, then commit; in this order, always.

        If it raises :class:`WriteAbandoned`, the batch is kept (the tables already inserted are
        inserted again next time, which dedup absorbs) and nothing is committed.
        """
        if self._flushing or not self._offsets:
            return
        self._flushing = True
        try:
            written: dict[str, int] = {}
            for table, columns in self._batch.tables():
                self._writer.insert(table, columns.names, columns.columns, len(columns), wait=wait)
                written[table] = len(columns)
            self._deliver_rejects(wait)
            self._commit(self._offsets)
            for table, rows in written.items():
                self.stats.rows[table] = self.stats.rows.get(table, 0) + rows
            self.stats.batches += 1
            self._batch, self._offsets, self._rejects = self.new_batch(), {}, []
            if self._paused and self._consumer is not None:
                self._consumer.resume(self._consumer.assignment())
                self._paused = False
        finally:
            self._flushing = False

    def _deliver_rejects(self, wait: Wait) -> None:
        producer = self._producer
        pending = list(self._rejects)
        delay = 0.2
        while pending and producer is not None:
            failed: list[tuple[bytes, bytes, str]] = []
            for key, value in pending:
                producer.produce(
                    self._invalid_topic, value, key, on_delivery=partial(_collect_failure, failed, key, value)
                )
            while producer.flush(1.0) > 0:
                if not wait(0.0):
                    raise WriteAbandoned(f"invalid records not acknowledged on {self._invalid_topic}")
            pending = [(key, value) for key, value, _error in failed]
            if failed:
                log.warning(
                    "identity sink: %d records could not be sent to %s (%s); retrying in %.1fs",
                    len(failed),
                    self._invalid_topic,
                    failed[0][2],
                    delay,
                )
                if not wait(delay):
                    raise WriteAbandoned(f"{len(failed)} invalid records not sent to {self._invalid_topic}")
                delay = min(delay * 2, self.settings.sink_retry_max_backoff_s)

    def _commit(self, offsets: dict[tuple[str, int], int]) -> None:
        consumer = self._consumer
        ours = [
            TopicPartition(topic, partition, offset + 1)
            for (topic, partition), offset in offsets.items()
            if (topic, partition) in self._assigned
        ]
        if consumer is None or not ours:
            return
        try:
            consumer.commit(offsets=ours, asynchronous=False)
        except KafkaException as exc:
            # Not fatal: the rows are in, so a re-read after a rebalance only produces duplicates.
            self.stats.commits_failed += 1
            log.warning("identity sink: offset commit failed (records may be read again): %s", exc)

    def _wait_polling(self, seconds: float) -> bool:
        """Between insert attempts: pause the partitions and keep polling (group membership)."""
        consumer = self._consumer
        end = time.monotonic() + seconds
        while True:
            if self._stop.is_set():
                if self._stop_deadline is None:
                    self._stop_deadline = time.monotonic() + _SHUTDOWN_GRACE_S
                if time.monotonic() >= self._stop_deadline:
                    return False
            if consumer is not None and not self._paused:
                consumer.pause(consumer.assignment())
                self._paused = True
            remaining = end - time.monotonic()
            if remaining <= 0:
                return True
            if consumer is None:
                time.sleep(min(remaining, _POLL_WHILE_WAITING_S))
                continue
            msg = consumer.poll(min(remaining, _POLL_WHILE_WAITING_S))
            if msg is not None:  # only from partitions assigned while paused
                self._deferred.append(msg)

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned.update((tp.topic, tp.partition) for tp in partitions)
        self.ready.set()

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Write and commit what we read from these partitions before another worker takes them. If
        # ClickHouse is down, keep the batch: the new owner re-reads those records and dedup absorbs
        # the duplicates when this batch is finally written.
        if not self._flushing and self._offsets:
            give_up = time.monotonic() + _REVOKE_GRACE_S

            def wait(seconds: float) -> bool:
                if time.monotonic() + seconds > give_up:
                    return False
                time.sleep(seconds)
                return True

            try:
                self._flush(wait)
            except WriteAbandoned as exc:
                log.warning("identity sink: partitions revoked before their rows were written: %s", exc)
        self._assigned.difference_update((tp.topic, tp.partition) for tp in partitions)


class IdentitySinkService(ThreadedLoops):
    """Runs :class:`IdentitySink` in a thread for the lifetime of the Faust worker."""

    def make_loops(self) -> list[tuple[str, Loop]]:
        return [("identity-sink", IdentitySink(self.settings))]


def identity_sink_service_for(settings: Settings) -> type[ThreadedLoops]:
    """The service class to register with ``app.service`` for these settings."""
    return IdentitySinkService.bound(settings)
